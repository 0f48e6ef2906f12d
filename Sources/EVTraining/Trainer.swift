import EVCheckpoint
import EVModel
import EVTensor

/// One training step as the official `SAMTrainer.run_step` takes it: a batch of images
/// through the image encoder in train mode (BatchNorm on the batch's statistics), each
/// image's prompts through the prompt encoder and the mask decoder (multimask by a coin flip
/// per step), the point-sampled loss, backward, `clip_grad_value_`, AdamW and the cosine
/// schedule. Every parameter trains except the IoU head (the official loss does not use it)
/// and the parts in `Settings.frozen`; a frozen encoder runs the fast inference path in eval
/// mode.
package final class Trainer {
  package struct Settings: Sendable {
    package var lr = 1e-4
    package var steps = 1000
    package var warmupSteps = 0
    package var gradientClip: Float = 2.0
    package var optimizer = AdamW.Settings()
    package var loss = MaskLoss.Settings()
    package var frozen: Set<ModelPart> = []
    /// Train the IoU head as SAM does (`--iou-loss mse`): the mean squared error between its
    /// predictions and the outputs' actual IoU, added to the mask loss. Off in the official
    /// recipe.
    package var iouLoss = false
    package var seed: UInt64 = 0
    /// Masks per forward and backward pass of the decoder: the tape holds one part at a time
    /// (the result is the same up to float summation order).
    package var masksPerPass = 8

    package init() {}
  }

  /// One image of a batch: preprocessed `[3, S, S]` (normalised, padded), its prompts and
  /// its soft target masks `[M, S, S]`, one per prompt.
  package struct Example {
    package var image: Tensor
    package var prompts: TrainingPrompts
    package var targets: Tensor
    /// The image's embedding `[1, 256, 64, 64]` when it is known; used (instead of the
    /// image) only when the encoder is frozen.
    package var embedding: Tensor?

    package init(
      image: Tensor, prompts: TrainingPrompts, targets: Tensor, embedding: Tensor? = nil
    ) {
      self.image = image
      self.prompts = prompts
      self.targets = targets
      self.embedding = embedding
    }
  }

  /// What a step draws: the multimask coin and each output's sampling points.
  package struct Randomness {
    package var multimask: Bool
    package var draws: [MaskLoss.Draws]
    /// Logits `[N, K, 256, 256]` (the batch's N masks in order) whose uncertainty picks the loss's points instead of the
    /// step's own. The points nearest the top-k boundary are a coin toss between two
    /// implementations whose logits differ by float rounding; replaying another's step
    /// exactly needs its choice.
    package var selectionLogits: Tensor?

    package init(multimask: Bool, draws: [MaskLoss.Draws], selectionLogits: Tensor? = nil) {
      self.multimask = multimask
      self.draws = draws
      self.selectionLogits = selectionLogits
    }
  }

  package struct StepResult {
    /// The mask loss (plus the IoU loss when it is on).
    package var loss: Double
    package var lr: Double
    /// Low-res logits `[N, K, 256, 256]` of the batch's N masks, image by image.
    package var logits: Tensor
  }

  package let config: ModelConfig
  package let settings: Settings
  /// Every tensor of the model by checkpoint key; trainable ones collect gradients.
  package let parameters: Parameters
  package private(set) var optimizer: AdamW
  let schedule: CosineSchedule
  let lossFunction: MaskLoss
  /// The inference encoder, when the encoder is frozen.
  let frozenEncoder: ImageEncoder?
  package private(set) var step = 0
  package private(set) var rng: SplitMix64

  /// `tensors`: every key of a `config` model (as `EfficientViTSAM.declaredParameters` lists).
  package convenience init(config: ModelConfig, tensors: [String: Tensor], settings: Settings) {
    self.init(
      config: config, tensors: tensors, settings: settings,
      optimizer: AdamW(settings: settings.optimizer), step: 0,
      rng: SplitMix64(seed: settings.seed))
  }

  /// Continues from a saved `state`: its tensors replace those of `tensors`, and the
  /// optimiser, the step count and the random stream go on where they were.
  package convenience init(
    config: ModelConfig, tensors: [String: Tensor], settings: Settings, resuming state: State
  ) {
    self.init(
      config: config, tensors: tensors.merging(state.parameters) { _, saved in saved },
      settings: settings,
      optimizer: AdamW(
        settings: settings.optimizer, step: state.optimizerStep,
        firstMoment: state.firstMoment, secondMoment: state.secondMoment),
      step: state.step, rng: state.rng)
  }

  private init(
    config: ModelConfig, tensors: [String: Tensor], settings: Settings, optimizer: AdamW,
    step: Int, rng: SplitMix64
  ) {
    self.config = config
    self.settings = settings
    let frozen = settings.frozen
    let iouHead = settings.iouLoss
    parameters = Parameters(tensors) { key in
      Self.isTrainable(key, iouHead: iouHead) && !frozen.contains { key.hasPrefix($0.keyPrefix) }
    }
    if frozen.contains(.encoder) {
      let reader = WeightReader(
        tensors.filter { $0.key.hasPrefix("image_encoder.") }, origin: "trainer")
      frozenEncoder = ImageEncoder(config: config, reader.root["image_encoder"])
    } else {
      frozenEncoder = nil
    }
    self.optimizer = optimizer
    schedule = CosineSchedule(
      baseLR: settings.lr, decaySteps: settings.steps, warmupSteps: settings.warmupSteps)
    lossFunction = MaskLoss(settings: settings.loss)
    self.step = step
    self.rng = rng
  }

  /// Everything a later run needs to continue this one exactly.
  package struct State: Sendable {
    /// Every tensor of the model (trained ones, BatchNorm statistics, frozen ones), by key.
    package var parameters: [String: Tensor]
    package var step: Int
    package private(set) var rng: SplitMix64
    package var optimizerStep: Int
    package var firstMoment: [String: [Float]]
    package var secondMoment: [String: [Float]]

    package init(
      parameters: [String: Tensor], step: Int, rng: SplitMix64, optimizerStep: Int,
      firstMoment: [String: [Float]], secondMoment: [String: [Float]]
    ) {
      self.parameters = parameters
      self.step = step
      self.rng = rng
      self.optimizerStep = optimizerStep
      self.firstMoment = firstMoment
      self.secondMoment = secondMoment
    }
  }

  package var state: State {
    State(
      parameters: parameters.tensors, step: step, rng: rng, optimizerStep: optimizer.step,
      firstMoment: optimizer.firstMoment, secondMoment: optimizer.secondMoment)
  }

  /// Whether the official recipe trains `key`: not the IoU head (unless `iouHead`), not
  /// buffers (BatchNorm statistics, the prompt encoder's random Fourier matrix).
  package static func isTrainable(_ key: String, iouHead: Bool = false) -> Bool {
    (iouHead || !key.contains("iou_prediction_head")) && !key.hasSuffix("running_mean")
      && !key.hasSuffix("running_var") && !key.hasSuffix("num_batches_tracked")
      && !key.contains("positional_encoding_gaussian_matrix")
  }

  /// One optimiser step on `batch`, its randomness drawn from the trainer's stream.
  @discardableResult
  package func step(_ batch: [Example]) -> StepResult {
    let multimask = Double.random(in: 0..<1, using: &rng) >= 0.5
    let masks = batch.reduce(0) { $0 + $1.targets.dim(0) }
    let draws = (0..<(multimask ? 3 : 1)).map { _ in
      MaskLoss.Draws(masks: masks, settings: settings.loss, using: &rng)
    }
    return step(batch, randomness: Randomness(multimask: multimask, draws: draws))
  }

  /// One optimiser step with the given randomness (the golden step replays PyTorch's).
  @discardableResult
  package func step(_ batch: [Example], randomness: Randomness) -> StepResult {
    let forward = computeGradients(batch, randomness: randomness)
    let lr = applyGradients()
    return StepResult(loss: forward.loss, lr: lr, logits: forward.logits)
  }

  /// Forward and backward: leaves ∂loss/∂parameter in `parameters` (before clipping) and
  /// updates the BatchNorm running statistics. Returns the loss and the low-res logits
  /// `[N, K, 256, 256]`; the loss is the official mean over all N masks of the batch.
  package func computeGradients(_ batch: [Example], randomness: Randomness) -> (
    loss: Double, logits: Tensor
  ) {
    precondition(!batch.isEmpty, "a training step needs at least one image")
    parameters.zeroGradients()
    let tape = Tape()
    let side = config.imageSize
    // The image embeddings: on the tape in train mode, or from the frozen inference encoder
    // (or given).
    var embeddings: [Variable]
    var encoderOutput: Variable?
    if let frozenEncoder {
      embeddings = batch.map { example in
        Variable(example.embedding ?? frozenEncoder(example.image.reshaped([1, 3, side, side])))
      }
    } else {
      let images = Tensor(
        shape: [batch.count, 3, side, side], storage: batch.flatMap(\.image.storage))
      let embedding = EncoderGraph(config: config, parameters: parameters)(
        tape, Variable(images), training: true)
      encoderOutput = embedding
      embeddings =
        batch.count == 1
        ? [embedding]
        : (0..<batch.count).map { tape.slice(embedding, axis: 0, range: $0..<($0 + 1)) }
    }
    // Each image's masks through the decoder and the loss, in parts (each mask's loss is its
    // own), the gradients flowing into the parameters and the embeddings.
    var pass = DecoderPass(
      multimask: randomness.multimask, loss: lossFunction, partSize: settings.masksPerPass)
    pass.iouLoss = settings.iouLoss
    let total = batch.reduce(0) { $0 + $1.targets.dim(0) }
    var loss = 0.0
    var logits: [Tensor] = []
    var offset = 0
    for (b, example) in batch.enumerated() {
      let first = offset
      let result = pass.run(
        parameters: parameters, embedding: embeddings[b], prompts: example.prompts,
        targets: example.targets, meanOver: total,
        draws: { rows, outputs in
          precondition(outputs == randomness.draws.count, "draws for \(outputs) outputs")
          return randomness.draws.map {
            $0.masks(
              (first + rows.lowerBound)..<(first + rows.upperBound),
              settings: self.lossFunction.settings)
          }
        },
        selectionLogits: randomness.selectionLogits.map {
          let k = $0.count / ($0.dim(-1) * $0.dim(-2) * total)
          return Reference.slice(
            $0.reshaped([total, k, $0.dim(-2), $0.dim(-1)]), axis: 0,
            range: first..<(first + example.targets.dim(0)))
        })
      loss += result.loss
      logits.append(result.logits)
      offset += example.targets.dim(0)
    }
    if let encoderOutput {
      // The embeddings' gradients are in place; the encoder's backward pass runs from them.
      tape.backward(
        from: encoderOutput, gradient: [Float](repeating: 0, count: encoderOutput.count))
    }
    return (loss, Reference.concat(logits, axis: 0))
  }

  /// Clips the gradients `computeGradients` left, takes the AdamW step at this step's
  /// learning rate and advances the schedule. Returns the learning rate used.
  @discardableResult
  package func applyGradients() -> Double {
    let lr = schedule.lr(at: step)
    parameters.applyAdamW(optimizer, lr: lr, clip: settings.gradientClip)
    step += 1
    return lr
  }
}
