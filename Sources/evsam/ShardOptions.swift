import ArgumentParser
import EVEvaluation
import Foundation

/// `--shard I/N | auto` and `--shard-count N`: which share of a folder (or of a dataset's
/// images) this process takes, the I-th of every N, 0-based. `auto` reads the index and count
/// from the job scheduler, so one command line serves every task of an array job.
struct ShardOptions: ParsableArguments {
  @Option(
    help: ArgumentHelp(
      "This process's share: I/N (every N-th item from the I-th, 0-based), or auto (from Slurm, a Kubernetes Indexed Job or MPI).",
      valueName: "I/N|auto"))
  var shard: String?

  @Option(
    help: ArgumentHelp(
      "With --shard auto: the number of shards, for schedulers that give only the index (a Kubernetes Indexed Job's completions).",
      valueName: "N"))
  var shardCount: Int?

  /// The shard `--shard` names (the whole list without it), and where an automatic one came from.
  func resolve(environment: [String: String] = ProcessInfo.processInfo.environment) throws
    -> (shard: Shard, source: String?)
  {
    guard let shard else {
      if shardCount != nil { throw CLIError("--shard-count goes with --shard auto") }
      return (.whole, nil)
    }
    guard shard == "auto" else {
      if shardCount != nil { throw CLIError("--shard-count goes with --shard auto") }
      do {
        return (try Shard(parsing: shard), nil)
      } catch {
        throw CLIError(error.description)
      }
    }
    return try Self.fromScheduler(environment, count: shardCount)
  }

  /// The index and count a scheduler gives its tasks, in this order: a Slurm array job
  /// (`SLURM_ARRAY_TASK_ID` from `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT`), the tasks of
  /// a Slurm step (`SLURM_PROCID`, `SLURM_NTASKS`), a Kubernetes Indexed Job
  /// (`JOB_COMPLETION_INDEX`, the count from `--shard-count` or `EVSAM_SHARD_COUNT`), Open MPI
  /// (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`).
  static func fromScheduler(_ env: [String: String], count override: Int?) throws
    -> (shard: Shard, source: String)
  {
    func number(_ name: String) throws -> Int? {
      guard let text = env[name] else { return nil }
      guard let value = Int(text.trimmingCharacters(in: .whitespaces)) else {
        throw CLIError("--shard auto: \(name) is \"\(text)\", not a whole number")
      }
      return value
    }
    func make(_ index: Int, _ count: Int, _ source: String) throws -> (Shard, String) {
      guard count >= 1, index >= 0, index < count else {
        throw CLIError(
          "--shard auto: \(source) gives shard \(index) of \(count); it needs 0 ≤ index < count")
      }
      if let override, override != count {
        throw CLIError("--shard auto: \(source) gives \(count) shards, --shard-count \(override)")
      }
      return (Shard(index: index, count: count), source)
    }
    if let id = try number("SLURM_ARRAY_TASK_ID"), let count = try number("SLURM_ARRAY_TASK_COUNT")
    {
      // `--array=1-8` numbers tasks from 1: the index counts from the array's first task.
      let first = try number("SLURM_ARRAY_TASK_MIN") ?? 0
      return try make(id - first, count, "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")
    }
    if let rank = try number("SLURM_PROCID"), let count = try number("SLURM_NTASKS") {
      return try make(rank, count, "SLURM_PROCID/SLURM_NTASKS")
    }
    if let index = try number("JOB_COMPLETION_INDEX") {
      guard let count = try override ?? number("EVSAM_SHARD_COUNT") else {
        throw CLIError(
          "--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but not the number of shards; give --shard-count N or set EVSAM_SHARD_COUNT to the Job's completions"
        )
      }
      return try make(index, count, "JOB_COMPLETION_INDEX")
    }
    if let rank = try number("OMPI_COMM_WORLD_RANK"), let count = try number("OMPI_COMM_WORLD_SIZE")
    {
      return try make(rank, count, "OMPI_COMM_WORLD_RANK/OMPI_COMM_WORLD_SIZE")
    }
    throw CLIError(
      "--shard auto: no scheduler variables found; expected SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (Slurm array), SLURM_PROCID and SLURM_NTASKS (Slurm tasks), JOB_COMPLETION_INDEX (Kubernetes Indexed Job, with --shard-count), or OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE (mpirun); or give --shard I/N"
    )
  }
}

extension Shard {
  /// The items of `list` this shard takes.
  func take<T>(_ list: [T]) -> [T] {
    list.enumerated().filter { $0.offset % count == index }.map(\.element)
  }
}
