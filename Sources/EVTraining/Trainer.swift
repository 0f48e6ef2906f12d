import EVCheckpoint
import EVModel
import EVTensor

/// The parts of the model a run can keep fixed (`--freeze`).
package enum ModelPart: String, CaseIterable, Sendable, Codable {
  case encoder
  case promptEncoder = "prompt-encoder"
  case decoder

  /// The checkpoint keys of the part start with this.
  package var keyPrefix: String {
    switch self {
    case .encoder: return "image_encoder."
    case .promptEncoder: return "prompt_encoder."
    case .decoder: return "mask_decoder."
    }
  }
}

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

    package init() {}
  }

  /// One image of a batch: preprocessed `[3, S, S]` (normalised, padded), its prompts and
  /// its soft target masks `[M, S, S]`. Every image of a batch has the same M.
  package struct Example {
    package var image: Tensor
    package var prompts: TrainingPrompts
    package var targets: Tensor

    package init(image: Tensor, prompts: TrainingPrompts, targets: Tensor) {
      self.image = image
      self.prompts = prompts
      self.targets = targets
    }
  }

  /// What a step draws: the multimask coin and each output's sampling points.
  package struct Randomness {
    package var multimask: Bool
    package var draws: [MaskLoss.Draws]
    /// Logits `[B, M, K, 256, 256]` whose uncertainty picks the loss's points instead of the
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
    /// Low-res logits `[B, M, K, 256, 256]`.
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
  package var rng: SplitMix64

  /// `tensors`: every key of a `config` model (as `EfficientViTSAM.declaredParameters` lists).
  package init(config: ModelConfig, tensors: [String: Tensor], settings: Settings) {
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
    optimizer = AdamW(settings: settings.optimizer)
    schedule = CosineSchedule(
      baseLR: settings.lr, decaySteps: settings.steps, warmupSteps: settings.warmupSteps)
    lossFunction = MaskLoss(settings: settings.loss)
    rng = SplitMix64(seed: settings.seed)
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
    let masks = batch.count * (batch.first?.targets.dim(0) ?? 0)
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
  /// updates the BatchNorm running statistics. Returns the loss and the low-res logits.
  package func computeGradients(_ batch: [Example], randomness: Randomness) -> (
    loss: Double, logits: Tensor
  ) {
    precondition(!batch.isEmpty, "a training step needs at least one image")
    let masks = batch[0].targets.dim(0)
    precondition(
      batch.allSatisfy { $0.targets.dim(0) == masks }, "every image of a batch needs as many masks")
    let tape = Tape()
    let side = config.imageSize
    let images = Tensor(
      shape: [batch.count, 3, side, side], storage: batch.flatMap(\.image.storage))
    let embedding: Variable
    if let frozenEncoder {
      embedding = Variable(
        Reference.concat(
          batch.map { frozenEncoder($0.image.reshaped([1, 3, side, side])) }, axis: 0))
    } else {
      embedding = EncoderGraph(config: config, parameters: parameters)(
        tape, Variable(images), training: true)
    }
    let prompts = PromptEncoderGraph(parameters: parameters)
    let decoder = MaskDecoderGraph(parameters: parameters)
    let imagePE = prompts.encoder.getDensePE()
    var outputs: [Variable] = []
    var predictedIoU: [Variable] = []
    for (b, example) in batch.enumerated() {
      let sparse: Variable
      switch example.prompts {
      case .boxes(let boxes):
        sparse = prompts.sparse(tape, points: nil, boxes: boxes)
      case .points(let coords):
        let labels = [Int](repeating: 1, count: coords.shape[0] * coords.shape[1])
        sparse = prompts.sparse(tape, points: (coords, labels), boxes: nil)
      }
      precondition(
        sparse.shape[0] == masks, "image \(b): \(sparse.shape[0]) prompts, \(masks) masks")
      let own =
        batch.count == 1 ? embedding : tape.slice(embedding, axis: 0, range: b..<(b + 1))
      let out = decoder(
        tape, imageEmbedding: own, imagePE: imagePE, sparse: sparse,
        dense: prompts.noMaskDense(tape, batch: masks), multimask: randomness.multimask)
      outputs.append(out.masks)
      predictedIoU.append(out.iouPredictions)
    }
    let logits = outputs.count == 1 ? outputs[0] : tape.concat(outputs, axis: 0)
    let k = logits.shape[1]
    let (lh, lw) = (logits.shape[2], logits.shape[3])
    let targets = Tensor(
      shape: [batch.count, masks, side, side], storage: batch.flatMap(\.targets.storage))
    let ownLogits = logits.value.reshaped([batch.count, masks, k, lh, lw])
    let points = lossFunction.selectPoints(
      logits: randomness.selectionLogits ?? ownLogits, targetSide: side, draws: randomness.draws)
    let result = lossFunction.evaluate(logits: ownLogits, targets: targets, points: points)
    parameters.zeroGradients()
    var loss = result.loss
    if settings.iouLoss {
      let predictions =
        predictedIoU.count == 1 ? predictedIoU[0] : tape.concat(predictedIoU, axis: 0)
      let iou = IoULoss.meanSquaredError(
        predictions: predictions.value, logits: logits.value,
        targets: targets.reshaped([batch.count * masks, side, side]))
      loss += iou.loss
      predictions.accumulate(iou.gradient.storage)
    }
    tape.backward(from: logits, gradient: result.gradient.storage)
    return (loss, ownLogits)
  }

  /// Clips the gradients `computeGradients` left, takes the AdamW step at this step's
  /// learning rate and advances the schedule. Returns the learning rate used.
  @discardableResult
  package func applyGradients() -> Double {
    var gradients = parameters.gradients
    clipGradientValues(&gradients, limit: settings.gradientClip)
    let lr = schedule.lr(at: step)
    var values = parameters.tensors
    optimizer.update(&values, gradients: gradients, lr: lr)
    parameters.assign(values)
    step += 1
    return lr
  }
}
