import ArgumentParser
import EVTensor
import EVTraining
import Foundation

/// The options `train` and `distill` share: how long, how fast, where the run goes and how it
/// continues.
struct RunOptions: ParsableArguments {
  @Option(help: "Optimiser steps (default 1000); or give --epochs.")
  var steps: Int?

  @Option(help: "Passes over the training images, instead of --steps.")
  var epochs: Int?

  @Option(
    help:
      "Images per micro-batch: per step and rank without --grad-accum (a step takes ranks × --grad-accum micro-batches)."
  )
  var batchSize = 1

  @Option(
    help: ArgumentHelp(
      "Micro-batches of --batch-size images per rank and step, their gradients averaged: K gives the update of K ranks.",
      valueName: "K"))
  var gradAccum = 1

  @Option(
    help:
      "Base learning rate; the peak (cosine decay to 0) is this times the micro-batches per step (ranks × --grad-accum), as the official trainer scales by its GPUs."
  )
  var lr = 1e-4

  @Option(help: "Linear warm-up steps before the cosine decay.")
  var warmupSteps = 0

  @Option(
    help:
      "Seed of every random draw (the images' order; in train also the split, flips, masks, prompts and points; in distill the initial weights)."
  )
  var seed: UInt64 = 0

  @Option(help: "Save the model, the state, the log and loss.png every N steps (and at the end).")
  var saveEvery = 500

  @Option(help: ArgumentHelp("Continue the run saved in this folder.", valueName: "dir"))
  var resume: String?

  @Option(
    name: .shortAndLong,
    help: ArgumentHelp("Output folder (default: the --resume folder).", valueName: "dir"))
  var output: String?

  static let defaultSteps = 1000

  func validate() throws {
    if steps != nil && epochs != nil {
      throw CLIError("give either --steps or --epochs, not both")
    }
    if let steps, steps < 1 { throw CLIError("--steps must be at least 1") }
    if let epochs, epochs < 1 { throw CLIError("--epochs must be at least 1") }
    guard batchSize >= 1 else { throw CLIError("--batch-size must be at least 1") }
    guard gradAccum >= 1 else { throw CLIError("--grad-accum must be at least 1") }
    guard lr > 0, lr.isFinite else { throw CLIError("--lr must be a positive number") }
    guard warmupSteps >= 0 else { throw CLIError("--warmup-steps must be 0 or more") }
    guard saveEvery >= 1 else { throw CLIError("--save-every must be at least 1") }
    guard output != nil || resume != nil else {
      throw CLIError("give the output folder with -o DIR")
    }
  }

  /// Micro-batches per step over the job's `ranks`.
  func microBatches(ranks: Int) -> Int { ranks * gradAccum }

  /// The run's steps for `images` training images, `globalBatch` images per step.
  func totalSteps(images: Int, globalBatch: Int) -> Int {
    epochs.map { ($0 * images + globalBatch - 1) / globalBatch } ?? steps ?? Self.defaultSteps
  }

  var outputURL: URL { URL(fileURLWithPath: output ?? resume!) }
  var resumeURL: URL? { resume.map { URL(fileURLWithPath: $0).standardizedFileURL } }

  /// Refuses to start a new run over another one's files.
  func checkOutput() throws {
    if outputURL.standardizedFileURL != resumeURL { try TrainOutput.checkFresh(outputURL) }
  }

  /// The log of the run being resumed, up to its saved `step`.
  func resumedRecords(through step: Int) throws(TrainingStateError) -> [TrainingLogRecord] {
    guard let folder = resumeURL else { return [] }
    let log = folder.appendingPathComponent(TrainOutput.logFile)
    guard let text = try? String(contentsOf: log, encoding: .utf8) else { return [] }
    return try TrainingLogRecord.parse(text, through: step, file: log.path)
  }
}

/// The loop `train` and `distill` share: one step at a time up to the run's end, a log record
/// per step, the files saved every `--save-every` steps, at the end and on Ctrl-C (which then
/// exits with status 130), and a progress line with the rate and the ETA.
struct StepLoop {
  let total: Int
  /// Images per step, over every rank.
  let batchSize: Int
  let saveEvery: Int
  let quiet: Bool
  /// Whether this process speaks for the job (rank 0); the other ranks print nothing.
  let isLeader: Bool
  let folder: URL

  init(
    options: RunOptions, total: Int, globalBatch: Int, quiet: Bool, isLeader: Bool = true,
    folder: URL
  ) {
    self.total = total
    self.isLeader = isLeader
    batchSize = globalBatch
    saveEvery = options.saveEvery
    self.quiet = quiet
    self.folder = folder
  }

  /// Runs from `currentStep()` to `total`. `step(stop)` takes one optimiser step, `stop`
  /// being this process's wish to end after it (Ctrl-C), and says whether the job stops
  /// (any rank's wish); `complete` adds
  /// what else the record holds (a validation) and returns its part of the progress line;
  /// `save` writes every file. Returns the progress line for the caller's summary, or nil
  /// when the run was complete already (its files are then written again, and it says so).
  func run(
    records: inout [TrainingLogRecord], currentStep: () -> Int,
    step: (_ stop: Bool) throws -> (loss: Double, lr: Double, stop: Bool),
    complete: (inout TrainingLogRecord) throws -> String,
    save: ([TrainingLogRecord]) throws -> Void
  ) throws -> ProgressLine? {
    guard currentStep() < total else {
      try save(records)
      if isLeader { printErr("the run in \(folder.path) is already complete (\(total) steps)") }
      return nil
    }
    let interrupt = InterruptFlag.install(
      firstNotice: isLeader
        ? "stopping after this step and saving (Ctrl-C again to quit without saving)" : nil)
    defer { interrupt.uninstall() }
    let progress = ProgressLine(enabled: !quiet && isLeader)
    let clock = ContinuousClock()
    let start = clock.now
    let firstStep = currentStep()
    while currentStep() < total {
      let result = try step(interrupt.isRaised)
      let now = currentStep()
      let elapsed = clock.now - start
      let seconds = elapsed.seconds
      let rate = Double((now - firstStep) * batchSize) / max(seconds, 1e-9)
      var record = TrainingLogRecord(
        step: now, loss: result.loss, lr: result.lr, imagesPerSecond: rate)
      let detail = try complete(&record)
      records.append(record)
      let interrupted = result.stop
      if now % saveEvery == 0 || now == total || interrupted { try save(records) }
      if interrupted {
        guard isLeader else { throw ExitCode(130) }
        progress.finish(
          "interrupted at step \(now)/\(total); model and training state saved in "
            + "\(folder.path) (continue with --resume \(folder.path))",
          isError: true)
        throw ExitCode(130)
      }
      let eta = Double((total - now) * batchSize) / max(rate, 1e-9)
      progress.update(
        String(format: "step %d/%d  ", now, total) + detail
          + String(format: "  lr %.3g  %.2f images/s  ETA %.0f s", result.lr, rate, eta))
    }
    return progress
  }
}
