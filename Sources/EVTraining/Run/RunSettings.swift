import EVTensor

/// The parts of the model a run can keep fixed (`--freeze`).
package enum ModelPart: String, Sendable, Codable, CaseIterable, Comparable {
  case encoder
  case decoder
  case promptEncoder = "prompt-encoder"

  package static func < (a: ModelPart, b: ModelPart) -> Bool {
    allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
  }

  /// The checkpoint keys of the part start with this.
  package var keyPrefix: String {
    switch self {
    case .encoder: return "image_encoder."
    case .promptEncoder: return "prompt_encoder."
    case .decoder: return "mask_decoder."
    }
  }
}

extension TrainingPrompts.Kind: Codable {}

/// What a run is: the settings that shape its result. A run resumes only with the same ones
/// (`differences(from:)`); how often it validates, saves or prints may change.
package struct RunSettings: Sendable, Equatable, Codable {
  package var steps: Int
  /// Images per micro-batch (`--batch-size`): what each rank's BatchNorm normalises over.
  package var batchSize: Int
  /// Micro-batches per step over all ranks: ranks × `--grad-accum`.
  package var microBatches: Int
  /// The base learning rate (`--lr`); the run's peak is `DataParallelLayout.scaledLR`.
  package var lr: Double
  package var warmupSteps: Int
  package var masksPerImage: Int
  package var prompts: TrainingPrompts.Kind
  package var frozen: [ModelPart]
  /// SAM's MSE loss on the IoU head (`--iou-loss mse`).
  package var iouLoss: Bool
  /// The mask loss's per-point term (`--loss`).
  package var pointLoss: PointLoss
  package var seed: UInt64
  package var validationFraction: Double
  /// The side of the encoder's input.
  package var imageSize: Int
  /// `weightsFingerprint` of the checkpoint the run started from.
  package var weights: String
  /// `TrainingDataset.fingerprint` of its data.
  package var data: String

  package init(
    steps: Int, batchSize: Int, microBatches: Int = 1, lr: Double, warmupSteps: Int,
    masksPerImage: Int,
    prompts: TrainingPrompts.Kind, frozen: [ModelPart], iouLoss: Bool = false,
    pointLoss: PointLoss = .bce, seed: UInt64,
    validationFraction: Double, imageSize: Int, weights: String, data: String
  ) {
    self.steps = steps
    self.batchSize = batchSize
    self.microBatches = microBatches
    self.lr = lr
    self.warmupSteps = warmupSteps
    self.masksPerImage = masksPerImage
    self.prompts = prompts
    self.frozen = frozen
    self.iouLoss = iouLoss
    self.pointLoss = pointLoss
    self.seed = seed
    self.validationFraction = validationFraction
    self.imageSize = imageSize
    self.weights = weights
    self.data = data
  }

  /// One phrase per setting that differs from `saved`, named as on the command line.
  package func differences(from saved: RunSettings) -> SettingDifferences {
    var differences = SettingDifferences()
    func compare<T: Equatable>(_ name: String, _ now: T, _ then: T, _ show: (T) -> String) {
      differences.compare(name, now, then, show)
    }
    compare("--steps/--epochs", steps, saved.steps) { "\($0) steps" }
    compare("--batch-size", batchSize, saved.batchSize) { "\($0)" }
    compare(microBatchesName, microBatches, saved.microBatches) { "\($0)" }
    compare("--lr", lr, saved.lr) { "\($0)" }
    compare("--warmup-steps", warmupSteps, saved.warmupSteps) { "\($0)" }
    compare("--masks-per-image", masksPerImage, saved.masksPerImage) { "\($0)" }
    compare("--prompts", prompts, saved.prompts) { $0.rawValue }
    compare("--freeze", frozen, saved.frozen) { $0.map(\.rawValue).joined(separator: ",") }
    compare("--iou-loss", iouLoss, saved.iouLoss) { $0 ? "mse" : "none" }
    compare("--loss", pointLoss, saved.pointLoss) { $0.rawValue }
    compare("--seed", seed, saved.seed) { "\($0)" }
    compare("--val-fraction", validationFraction, saved.validationFraction) { "\($0)" }
    compare("the model's input size", imageSize, saved.imageSize) { "\($0)" }
    compare("--checkpoint", weights, saved.weights) { "weights \($0)" }
    compare("the training data", data, saved.data) { $0 }
    return differences
  }
}

/// How a changed number of micro-batches per step is named: a run resumes on another number
/// of ranks when `--grad-accum` makes up the difference.
let microBatchesName = "micro-batches per step, ranks × --grad-accum"

/// A run's settings against a saved run's, one phrase per setting that differs, named as on
/// the command line: `--lr (saved 0.001, now 0.0001)`.
package struct SettingDifferences {
  package private(set) var phrases: [String] = []

  package init() {}

  package mutating func compare<T: Equatable>(
    _ name: String, _ now: T, _ then: T, _ show: (T) -> String
  ) {
    if now != then { phrases.append("\(name) (saved \(show(then)), now \(show(now)))") }
  }

  /// Throws unless a saved state can continue this run: the same settings, and a position
  /// (`step` steps, `imagesSeen` images) that a run of `steps` steps of `batchSize` reaches.
  package func checkResumable(step: Int, imagesSeen: Int, batchSize: Int, steps: Int)
    throws(TrainingStateError)
  {
    guard phrases.isEmpty else {
      throw TrainingStateError(
        "the saved run has other settings: " + phrases.joined(separator: "; "))
    }
    guard imagesSeen == step * batchSize, step <= steps else {
      throw TrainingStateError(
        "the saved state is inconsistent (step \(step), \(imagesSeen) images)")
    }
  }
}
