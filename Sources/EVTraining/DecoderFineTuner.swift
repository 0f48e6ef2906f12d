import EVModel
import EVTensor

/// Fine-tuning of the prompt encoder's learned rows and the mask decoder with the image
/// encoder frozen (its embeddings computed once by the inference path), as users adapt SAM
/// to their own images: the official loss, value clipping, AdamW and the cosine schedule. The
/// IoU head is not trained (the official loss does not use it).
package final class DecoderFineTuner {
  package struct Settings: Sendable {
    package var lr = 1e-4
    package var steps = 1000
    package var warmupSteps = 0
    package var gradientClip: Float = 2.0
    package var optimizer = AdamW.Settings()
    package var loss = MaskLoss.Settings()
    package var seed: UInt64 = 0

    package init() {}
  }

  package let parameters: Parameters
  package let settings: Settings
  let optimizer: AdamW
  let schedule: CosineSchedule
  let lossFunction: MaskLoss
  package private(set) var step = 0
  var rng: SplitMix64

  /// `tensors`: at least every `prompt_encoder.*` and `mask_decoder.*` key of a model.
  package init(tensors: [String: Tensor], settings: Settings) {
    self.settings = settings
    parameters = Parameters(
      tensors.filter { $0.key.hasPrefix("prompt_encoder.") || $0.key.hasPrefix("mask_decoder.") }
    ) { key in
      !key.contains("iou_prediction_head") && !key.contains("pe_layer")
        && !key.contains("mask_downscaling")
    }
    optimizer = AdamW(settings: settings.optimizer)
    schedule = CosineSchedule(
      baseLR: settings.lr, decaySteps: settings.steps, warmupSteps: settings.warmupSteps)
    lossFunction = MaskLoss(settings: settings.loss)
    rng = SplitMix64(seed: settings.seed)
  }

  package struct StepResult {
    package var loss: Double
    package var lr: Double
    /// The low-res logits of the step's forward pass, `[B, C, 256, 256]`.
    package var logits: Tensor
  }

  /// One optimiser step on one image with box prompts `[B, 4]` (XYXY, 1024 prompt frame).
  @discardableResult
  package func step(embedding: Tensor, boxes: Tensor, targets: Tensor) -> StepResult {
    step(embedding: embedding, prompts: .boxes(boxes), targets: targets)
  }

  /// One optimiser step on one image: `embedding` `[1, 256, 64, 64]` from the frozen encoder,
  /// B prompts (boxes or positive points), B soft target masks `[B, S, S]` at the encoder's
  /// padded input size. Multimask output is chosen by a coin flip, as the official trainer
  /// does.
  @discardableResult
  package func step(embedding: Tensor, prompts input: TrainingPrompts, targets: Tensor)
    -> StepResult
  {
    let multimask = Double.random(in: 0..<1, using: &rng) >= 0.5
    let prompts = PromptEncoderGraph(parameters: parameters)
    let tape = Tape()
    let sparse: Variable
    switch input {
    case .boxes(let boxes):
      sparse = prompts.sparse(tape, points: nil, boxes: boxes)
    case .points(let coords):
      let labels = [Int](repeating: 1, count: coords.shape[0] * coords.shape[1])
      sparse = prompts.sparse(tape, points: (coords, labels), boxes: nil)
    }
    let b = sparse.shape[0]
    let dense = prompts.noMaskDense(tape, batch: b)
    let out = MaskDecoderGraph(parameters: parameters)(
      tape, imageEmbedding: Variable(embedding), imagePE: prompts.encoder.getDensePE(),
      sparse: sparse,
      dense: dense, multimask: multimask)
    let k = out.masks.shape[1]
    let draws = (0..<k).map { _ in
      MaskLoss.Draws(masks: b, settings: settings.loss, using: &rng)
    }
    let result = lossFunction(
      logits: out.masks.value.reshaped([b, 1, k, 256, 256]),
      targets: targets.reshaped([b, 1, targets.dim(-2), targets.dim(-1)]), draws: draws)
    parameters.zeroGradients()
    tape.backward(from: out.masks, gradient: result.gradient.storage)
    var gradients = parameters.gradients
    clipGradientValues(&gradients, limit: settings.gradientClip)
    let lr = schedule.lr(at: step)
    var values = parameters.tensors
    optimizer.update(&values, gradients: gradients, lr: lr)
    parameters.assign(values)
    step += 1
    return StepResult(loss: result.loss, lr: lr, logits: out.masks.value)
  }
}
