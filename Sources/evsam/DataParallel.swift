import ArgumentParser
import EVTensor
import EVTraining
import Foundation

/// One rank of a `train` or `distill` job. Started by `mpirun -np N` (or `srun`), the command
/// joins the MPI job and takes its share of every step; started alone, it is the whole job.
/// Rank 0 alone writes files and shows progress.
struct DataParallelJob {
  let group: any ProcessGroup

  var isLeader: Bool { group.rank == 0 }

  /// Runs `body` as this process's rank. An error on any rank is printed with the rank's
  /// number and ends the whole job at once (MPI_Abort), so no peer waits for it forever.
  static func run(_ body: (DataParallelJob) throws -> Void) throws {
    let group: any ProcessGroup
    do {
      group = try MPIProcessGroup.join()
    } catch {
      throw CLIError(error.description)
    }
    guard let mpi = group as? MPIProcessGroup else {
      return try body(DataParallelJob(group: group))
    }
    do {
      try body(DataParallelJob(group: group))
      mpi.finish()
    } catch let code as ExitCode {
      // Every rank ends at the same step on an interrupt (the ranks vote at each step).
      mpi.finish()
      throw code
    } catch {
      let text = "\(error)"
      printErr("evsam: error on rank \(mpi.rank) of \(mpi.size): \(text); ending the job")
      mpi.abort(code: 1)
    }
  }

  /// Throws unless every rank runs the same job: the same `fingerprint` (settings, weights,
  /// data), so that a rank with another checkpoint or dataset is caught before the first step.
  func checkSameRun(_ fingerprint: String) throws {
    var hash = FNV1a()
    hash.add(fingerprint)
    let all = try group.allGather(hash.value)
    if let other = all.firstIndex(where: { $0 != all[0] }) {
      throw CLIError(
        "rank \(other) was started with other settings, weights or data than rank 0 "
          + "(every rank needs the same command line and the same files)")
    }
  }

  /// Once the run is built (its saved state read on every rank, at `step` after
  /// `imagesSeen` images): checks that every rank read the same state before rank 0 may save
  /// over it; on rank 0 creates the run's folder and says how a step's batch is spread
  /// (unless `quiet` or the run is a plain one). Returns the loop that runs the steps.
  func startLoop(
    _ options: RunOptions, total: Int, quiet: Bool, resumedAt step: Int, imagesSeen: Int
  ) throws -> StepLoop {
    try checkSameRun("resumed at step \(step), \(imagesSeen) images")
    if isLeader {
      try createFolder(options.outputURL)
      if !quiet,
        let notice = layoutNotice(
          batchSize: options.batchSize, accumulation: options.gradAccum, lr: options.lr)
      {
        printErr(notice)
      }
    }
    return StepLoop(
      options: options, total: total,
      globalBatch: options.microBatches(ranks: group.size) * options.batchSize, quiet: quiet,
      isLeader: isLeader, folder: options.outputURL)
  }

  /// The line that says how a step's batch is spread (nil for a plain run).
  func layoutNotice(batchSize: Int, accumulation: Int, lr: Double) -> String? {
    let layout = DataParallelLayout(
      ranks: group.size, accumulation: accumulation, microBatch: batchSize)
    guard layout.slots > 1 else { return nil }
    var parts: [String] = []
    if group.size > 1 { parts.append("\(group.size) ranks") }
    parts.append(
      "\(accumulation) micro-batch\(accumulation == 1 ? "" : "es") of \(batchSize) image"
        + (batchSize == 1 ? "" : "s"))
    return parts.joined(separator: " × ") + " = \(layout.globalBatch) images per step; "
      + "learning rate \(lr) × \(layout.slots) = \(layout.scaledLR(lr))"
  }
}
