import EVCheckpoint
import EVTensor
import Foundation
import TestSupport
import Testing

/// `evsam train` under `mpirun -np 2` on localhost: the same update as one process
/// accumulating two micro-batches, a killed rank ending the job with the last state intact,
/// and that state resumed on one rank.
@Suite(.serialized) struct DataParallelTests {
  /// Open MPI's launcher, which `scripts/install-deps` installs.
  static func mpirun() throws -> URL {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
      let url = URL(fileURLWithPath: String(dir)).appendingPathComponent("mpirun")
      if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    throw CLIRunner.NotFound(searched: ["mpirun on PATH (Debian: openmpi-bin)"])
  }

  /// A started `mpirun -np 2 evsam …`, its output in a file.
  struct Job {
    let process: Process
    let log: URL

    init(_ arguments: [String]) throws {
      log = try temporaryDirectory().appendingPathComponent("mpirun.log")
      _ = FileManager.default.createFile(atPath: log.path, contents: nil)
      process = Process()
      process.executableURL = try DataParallelTests.mpirun()
      // Root in CI containers needs Open MPI's consent; 2 ranks on 2 cores need
      // oversubscription (which also makes idle ranks yield the CPU).
      process.arguments =
        [
          "-np", "2", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none",
          try CLIRunner.binary.path,
        ] + arguments
      var environment = ProcessInfo.processInfo.environment.filter {
        !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("SLURM_") && !$0.key.hasPrefix("PMI")
      }
      environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
      environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
      process.environment = environment
      let handle = try FileHandle(forWritingTo: log)
      process.standardOutput = handle
      process.standardError = handle
      try process.run()
    }

    /// Waits at most `seconds` for the job to end; nil when it did not.
    func wait(seconds: Double) -> Int32? {
      let deadline = Date().addingTimeInterval(seconds)
      while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
      guard !process.isRunning else {
        process.terminate()
        return nil
      }
      return process.terminationStatus
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// The PID of the job's rank `rank` (a child of mpirun on localhost).
    func pid(ofRank rank: Int) -> Int32? {
      let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
      for entry in entries {
        guard let pid = Int32(entry),
          let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")")
        else { continue }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 1, Int32(fields[1]) == process.processIdentifier,
          let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ")
        else { continue }
        let variables = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return pid }
      }
      return nil
    }
  }

  static func trainArguments(steps: Int) throws -> [String] {
    try TrainCommandTests.cocoArguments() + [
      "--steps", "\(steps)", "--batch-size", "1", "--masks-per-image", "2", "--lr", "1e-3",
      "--seed", "5", "--quiet",
    ]
  }

  /// The trained tensors of a run's model, BatchNorm statistics aside (they stay per rank, as
  /// in the official trainer).
  static func parameters(_ folder: URL) throws -> [String: Tensor] {
    try Checkpoint.load(contentsOf: folder.appendingPathComponent("model.safetensors")).filter {
      !$0.key.contains("running_") && !$0.key.contains("num_batches_tracked")
    }
  }

  static func expectEqual(_ a: [String: Tensor], _ b: [String: Tensor], _ what: String) {
    #expect(a.keys.sorted() == b.keys.sorted())
    var worst = (key: "", difference: Float(0))
    for (key, x) in a {
      guard let y = b[key] else { continue }
      for (u, v) in zip(x.storage, y.storage) {
        let d = abs(u - v) / max(1e-3, abs(u))
        if d > worst.difference { worst = (key, d) }
      }
    }
    // Equal up to float summation order: the ranks' and the micro-batches' gradients are
    // summed in the same order, so in practice bit for bit.
    #expect(worst.difference <= 1e-5, "\(what): \(worst.key) differs by \(worst.difference)")
  }

  @Test func twoRanksTakeTheStepOfOneProcessAccumulatingTwoMicroBatches() throws {
    let ranks = try temporaryDirectory().appendingPathComponent("ranks")
    let job = try Job(try Self.trainArguments(steps: 3) + ["-o", ranks.path])
    let status = job.wait(seconds: 300)
    #expect(status == 0, "\(job.output)")

    let accumulated = try temporaryDirectory().appendingPathComponent("accumulated")
    let one = try CLIRunner.run(
      try Self.trainArguments(steps: 3) + ["--grad-accum", "2", "-o", accumulated.path])
    #expect(one.status == 0, "\(one.stderr)")
    Self.expectEqual(
      try Self.parameters(ranks), try Self.parameters(accumulated), "2 ranks vs --grad-accum 2")
    // The log holds the mean loss over both ranks' micro-batches; the peak learning rate is
    // doubled as the official trainer scales by its GPUs.
    let a = try TrainCommandTests.records(ranks)
    let b = try TrainCommandTests.records(accumulated)
    #expect(a.count == 3 && b.count == 3)
    for (x, y) in zip(a, b) {
      let (lx, ly) = (x["loss"] as? Double ?? .nan, y["loss"] as? Double ?? .nan)
      #expect(abs(lx - ly) <= 1e-6 * abs(ly), "loss \(lx) vs \(ly)")
    }
    #expect(a.first?["lr"] as? Double == 2e-3)
  }

  @Test func distillationOnTwoRanksEqualsAccumulation() throws {
    let models = try Fixtures.url("models")
    let arguments = [
      "distill", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--teacher-config", try Fixtures.url("sam/models/tiny-sam-vit.json").path,
      "--teacher-checkpoint", try Fixtures.url("sam/models/tiny-sam-vit.pth").path,
      "--images", try Fixtures.url("images").path, "--steps", "2", "--lr", "3e-3", "--quiet",
    ]
    let ranks = try temporaryDirectory().appendingPathComponent("ranks")
    let job = try Job(arguments + ["-o", ranks.path])
    #expect(job.wait(seconds: 300) == 0, "\(job.output)")
    let accumulated = try temporaryDirectory().appendingPathComponent("accumulated")
    let one = try CLIRunner.run(arguments + ["--grad-accum", "2", "-o", accumulated.path])
    #expect(one.status == 0, "\(one.stderr)")
    Self.expectEqual(
      try Self.parameters(ranks), try Self.parameters(accumulated), "distill: 2 ranks vs 2 micro")
  }

  @Test func aKilledRankEndsTheJobAndItsLastStateResumesOnOneRank() throws {
    let steps = 8
    let folder = try temporaryDirectory().appendingPathComponent("killed")
    let job = try Job(
      try Self.trainArguments(steps: steps) + ["--save-every", "1", "-o", folder.path])
    let state = folder.appendingPathComponent("state.json")
    let deadline = Date().addingTimeInterval(300)
    while !FileManager.default.fileExists(atPath: state.path) && Date() < deadline
      && job.process.isRunning
    {
      Thread.sleep(forTimeInterval: 0.05)
    }
    let victim = try #require(job.pid(ofRank: 1), "rank 1 not found: \(job.output)")
    kill(victim, SIGKILL)
    let status = job.wait(seconds: 60)
    #expect(status != nil, "the job still runs a minute after rank 1 was killed")
    #expect(status != 0)
    #expect(job.output.contains("rank 1"), "the job's output names the dead rank: \(job.output)")
    let saved = try TrainCommandTests.records(folder).count
    #expect(saved >= 1 && saved < steps, "killed after step \(saved)")

    // One rank alone is another number of micro-batches per step: refused by name…
    let refused = try CLIRunner.run(
      try Self.trainArguments(steps: steps) + ["--resume", folder.path])
    #expect(refused.status != 0)
    #expect(refused.stderr.contains("ranks × --grad-accum (saved 2, now 1)"), "\(refused.stderr)")
    // …and with --grad-accum 2 it continues the run exactly.
    let resumed = try CLIRunner.run(
      try Self.trainArguments(steps: steps) + ["--grad-accum", "2", "--resume", folder.path])
    #expect(resumed.status == 0, "\(resumed.stderr)")
    let straight = try temporaryDirectory().appendingPathComponent("straight")
    let one = try CLIRunner.run(
      try Self.trainArguments(steps: steps) + ["--grad-accum", "2", "-o", straight.path])
    #expect(one.status == 0, "\(one.stderr)")
    Self.expectEqual(
      try Self.parameters(folder), try Self.parameters(straight),
      "killed after step \(saved), resumed on one rank")
    #expect(try TrainCommandTests.records(folder).count == steps)
  }
}
