import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation

/// The files of a training run's folder, all rewritten at every save, each one whole (written
/// under a temporary name and renamed into place): the model (`model.pt`,
/// `model.safetensors`), the training state `--resume` reads, `log.jsonl` and `loss.png`.
struct TrainOutput {
  static let logFile = "log.jsonl"
  static let plotFile = "loss.png"
  /// Files a run writes; a folder holding any of them already holds a run.
  static let runFiles = [
    "model.pt", "model.safetensors", TrainingState.scalarsFile, logFile, plotFile,
  ]

  let folder: URL
  let config: ModelConfig
  let modelName: String

  /// Refuses to start a new run over the files of another.
  static func checkFresh(_ folder: URL) throws {
    let present = runFiles.filter {
      FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path)
    }
    guard present.isEmpty else {
      throw CLIError(
        "\(folder.path) already holds a training run (\(present.joined(separator: ", "))); "
          + "continue it with --resume \(folder.path), or give a new folder with -o")
    }
  }

  /// Writes everything. The state replaces the previous one only once it is complete
  /// (`RunState.write`), so a process killed mid-save leaves the last state to resume from.
  func save(_ run: TrainingRun, records: [TrainingLogRecord]) throws {
    try save(
      trained: run.trainedTensors, step: run.step, records: records,
      totalSteps: run.settings.steps
    ) { saveID throws(TrainingStateError) in try run.state.write(to: folder, saveID: saveID) }
  }

  /// `save` for a distillation run.
  func save(_ run: DistillationRun, records: [TrainingLogRecord]) throws {
    try save(
      trained: run.trainedTensors, step: run.step, records: records,
      totalSteps: run.settings.steps
    ) { saveID throws(TrainingStateError) in try run.state.write(to: folder, saveID: saveID) }
  }

  private func save(
    trained: [String: Tensor], step: Int, records: [TrainingLogRecord], totalSteps: Int,
    state writeState: (String) throws(TrainingStateError) -> Void
  ) throws {
    let declared = EfficientViTSAM.declaredParameters(config: config).declared
    let entries = declared.map {
      TorchWriter.Entry(key: $0.key, tensor: trained[$0.key]!, dtype: $0.dtype)
    }
    let keys = Set(declared.map(\.key))
    let saveID = "\(step)-\(UInt64.random(in: 0...UInt64.max))"
    let model: Data
    do throws(CheckpointError) {
      model = try SafeTensors.encode(
        trained.filter { key, _ in keys.contains(key) },
        metadata: ["model": modelName, "trained_steps": "\(step)"])
    } catch {
      throw CLIError("cannot encode the model: \(error.description)")
    }
    try writeFile(TorchWriter.archive(entries), to: url("model.pt"))
    try writeFile(model, to: url("model.safetensors"))
    // The log before the state: a resumed run reads the log up to the state's step, so a save
    // cut short between the two loses no record.
    try writeFile(Data(records.map(\.jsonLine).joined().utf8), to: url(Self.logFile))
    let plot = LossPlot(
      losses: records.map { ($0.step, $0.loss) },
      validations: records.compactMap { r in r.validationMIoU.map { (r.step, $0) } },
      totalSteps: totalSteps)
    let png: Data
    do {
      png = try plot.render().pngData()
    } catch {
      throw CLIError("cannot draw \(Self.plotFile): \(error.description)")
    }
    try writeFile(png, to: url(Self.plotFile))
    do throws(TrainingStateError) {
      try writeState(saveID)
    } catch {
      throw CLIError(error.description)
    }
  }

  private func url(_ name: String) -> URL { folder.appendingPathComponent(name) }
}
