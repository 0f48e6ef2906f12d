import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import EVTensor
import Foundation

/// What must match for a distillation run to be resumed.
package struct DistillationSettings: Codable, Sendable, Equatable {
  package var steps: Int
  /// Images per micro-batch (`--batch-size`).
  package var batchSize: Int
  /// Micro-batches per step over all ranks: ranks × `--grad-accum`.
  package var microBatches: Int
  /// The base learning rate; the run's peak is `DataParallelLayout.scaledLR`.
  package var lr: Double
  package var warmupSteps: Int
  package var seed: UInt64
  /// The student's input size.
  package var imageSize: Int
  package var teacher: EncoderIdentity
  /// `weightsFingerprint` of the starting weights.
  package var weights: String
  /// A hash of the image names, in order.
  package var data: String

  package init(
    steps: Int, batchSize: Int, microBatches: Int = 1, lr: Double, warmupSteps: Int,
    seed: UInt64, imageSize: Int, teacher: EncoderIdentity, weights: String, data: String
  ) {
    self.steps = steps
    self.batchSize = batchSize
    self.microBatches = microBatches
    self.lr = lr
    self.warmupSteps = warmupSteps
    self.seed = seed
    self.imageSize = imageSize
    self.teacher = teacher
    self.weights = weights
    self.data = data
  }

  /// One phrase per setting that differs from `saved`, named as on the command line.
  package func differences(from saved: DistillationSettings) -> SettingDifferences {
    var differences = SettingDifferences()
    differences.compare("--steps/--epochs", steps, saved.steps) { "\($0) steps" }
    differences.compare("--batch-size", batchSize, saved.batchSize) { "\($0)" }
    differences.compare(microBatchesName, microBatches, saved.microBatches) { "\($0)" }
    differences.compare("--lr", lr, saved.lr) { "\($0)" }
    differences.compare("--warmup-steps", warmupSteps, saved.warmupSteps) { "\($0)" }
    differences.compare("--seed", seed, saved.seed) { "\($0)" }
    differences.compare("the student's input size", imageSize, saved.imageSize) { "\($0)" }
    // The name a teacher was given by does not change its embeddings.
    differences.compare(
      "the teacher", teacher.givesTheSameEmbeddings(as: saved.teacher) ? saved.teacher : teacher,
      saved.teacher
    ) { $0.description }
    differences.compare("--checkpoint", weights, saved.weights) { "weights \($0)" }
    differences.compare("the images", data, saved.data) { $0 }
    return differences
  }

  /// The hash `data` holds for `images`.
  package static func fingerprint(_ images: [URL]) -> String {
    var hash = FNV1a()
    for image in images { hash.add(image.lastPathComponent + "\n") }
    return "\(images.count) images, names \(hash.hex)"
  }
}

/// A distillation run, step by step: each step takes the next global batch of a seeded
/// shuffled stream (a new order every epoch), preprocesses the images for the student as its
/// official pipeline does, asks the teacher for their embeddings (1024 input), and takes one
/// `Distiller` step (the student's encoder in train mode, MSE, AdamW, cosine schedule). Under
/// data parallelism each rank takes its micro-batches of the global batch and the gradients
/// are averaged, as in `TrainingRun`.
package final class DistillationRun {
  package let settings: DistillationSettings
  package let images: [URL]
  let teacher: any EmbeddingTeacher
  let config: ModelConfig
  /// The starting checkpoint's tensors; the encoder's are replaced by the trained ones.
  let original: [String: Tensor]
  let distiller: Distiller
  let layout: DataParallelLayout
  let group: any ProcessGroup
  private var order: EpochOrder
  package private(set) var imagesSeen: Int

  package init(
    settings: DistillationSettings, config: ModelConfig, tensors: [String: Tensor],
    images: [URL], teacher: any EmbeddingTeacher, resuming state: DistillationState? = nil,
    group: any ProcessGroup = SingleProcess()
  ) throws(TrainingStateError) {
    precondition(!images.isEmpty, "a distillation needs images")
    self.settings = settings
    self.config = config
    self.images = images
    self.teacher = teacher
    original = tensors
    self.group = group
    layout = DataParallelLayout(
      ranks: group.size, microBatches: settings.microBatches, microBatch: settings.batchSize)
    var distillerSettings = Distiller.Settings()
    distillerSettings.lr = layout.scaledLR(settings.lr)
    distillerSettings.steps = settings.steps
    distillerSettings.warmupSteps = settings.warmupSteps
    order = EpochOrder(count: images.count, seed: settings.seed)
    if let state {
      try settings.differences(from: state.settings).checkResumable(
        step: state.trainer.step, imagesSeen: state.imagesSeen, batchSize: layout.globalBatch,
        steps: settings.steps)
      distiller = Distiller(
        config: config, tensors: tensors, settings: distillerSettings, resuming: state.trainer)
      imagesSeen = state.imagesSeen
    } else {
      distiller = Distiller(config: config, tensors: tensors, settings: distillerSettings)
      imagesSeen = 0
    }
  }

  package var step: Int { distiller.step }

  /// One optimiser step on the next global batch, this rank's micro-batches of it here.
  /// Returns the MSE (the mean over the micro-batches), the learning rate, and whether any
  /// rank wished to `stop` after this step.
  package func distillStep(stop: Bool = false) throws -> (loss: Double, lr: Double, stop: Bool) {
    let side = config.imageSize
    let step = distiller.step
    let result = try averageGradients(
      distiller.parameters, layout: layout, group: group, stop: stop
    ) { micro in
      let positions = layout.positions(
        step: step, slot: layout.slot(rank: group.rank, micro: micro))
      var inputs: [Float] = []
      var targets: [Float] = []
      inputs.reserveCapacity(positions.count * 3 * side * side)
      for position in positions {
        let image = images[order.image(at: position)]
        let picture = try readImage(image)
        inputs += preprocess(picture, targetSize: side, normalization: .unitRange).tensor.storage
        targets += try teacher.embedding(for: image).storage
      }
      let b = positions.count
      return distiller.computeGradients(
        images: Tensor(shape: [b, 3, side, side], storage: inputs),
        targets: Tensor(shape: [b, 256, 64, 64], storage: targets))
    }
    let lr = distiller.applyGradients()
    imagesSeen += layout.globalBatch
    return (result.loss, lr, result.stop)
  }

  /// The whole model's tensors: the starting ones with the distilled encoder in place.
  package var trainedTensors: [String: Tensor] {
    original.merging(distiller.parameters.tensors) { _, trained in trained }
  }

  package var state: DistillationState {
    DistillationState(settings: settings, trainer: distiller.state, imagesSeen: imagesSeen)
  }
}

/// Starting weights for a model trained from scratch, as PyTorch initialises its layers:
/// convolution and linear weights and biases uniform in ±1/√fan_in (`kaiming_uniform_` with
/// a = √5), normalisation weights 1 and biases 0, BatchNorm statistics 0 and 1, and SAM's
/// Fourier matrix and embeddings standard normal. Seeded.
package func initialWeights(declared: [WeightReader.Declared], seed: UInt64) -> [String: Tensor] {
  var rng = SplitMix64(seed: seed)
  var tensors: [String: Tensor] = [:]
  for d in declared {
    let count = d.shape.reduce(1, *)
    let name = d.key.split(separator: ".").last.map(String.init) ?? d.key
    let stem = d.key.dropLast(name.count)
    // A rank-1 weight is a normalisation's scale (convolutions and linears have rank ≥ 2).
    let weight = declared.first { $0.key == stem + "weight" }
    let isNorm = weight?.shape.count == 1
    let fill: (inout SplitMix64) -> Float
    switch name {
    case "num_batches_tracked", "running_mean": fill = { _ in 0 }
    case "running_var": fill = { _ in 1 }
    case "weight" where isNorm: fill = { _ in 1 }
    case "bias" where isNorm: fill = { _ in 0 }
    case "positional_encoding_gaussian_matrix":
      fill = { rng in standardNormal(&rng) }
    case "weight" where d.shape.count == 2 && d.shape[0] == 1:
      // nn.Embedding rows (SAM's point and mask embeddings).
      fill = { rng in standardNormal(&rng) }
    default:
      let shape = name == "bias" ? weight?.shape ?? d.shape : d.shape
      let fanIn = shape.count >= 2 ? shape.dropFirst().reduce(1, *) : count
      let bound = 1 / Float(max(1, fanIn)).squareRoot()
      fill = { rng in bound * (2 * Float(rng.next() >> 40) / Float(1 << 24) - 1) }
    }
    let storage = [Float](unsafeUninitializedCapacity: count) { buffer, initialised in
      for i in 0..<count { buffer[i] = fill(&rng) }
      initialised = count
    }
    tensors[d.key] = Tensor(shape: d.shape, storage: storage)
  }
  return tensors
}

/// One standard normal sample (Box–Muller).
private func standardNormal(_ rng: inout SplitMix64) -> Float {
  let u1 = max(Double(rng.next() >> 11) / Double(1 << 53), 1e-300)
  let u2 = Double(rng.next() >> 11) / Double(1 << 53)
  return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
}
