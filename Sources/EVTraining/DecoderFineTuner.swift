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
  package private(set) var step: Int
  var rng: SplitMix64

  /// `tensors`: at least every `prompt_encoder.*` and `mask_decoder.*` key of a model.
  package convenience init(tensors: [String: Tensor], settings: Settings) {
    self.init(
      tensors: tensors, settings: settings, optimizer: AdamW(settings: settings.optimizer),
      step: 0, rng: SplitMix64(seed: settings.seed))
  }

  /// Continues from a saved `state`: its parameters replace those of `tensors`, and the
  /// optimiser, the step count and the random stream go on where they were.
  package convenience init(tensors: [String: Tensor], settings: Settings, resuming state: State) {
    self.init(
      tensors: tensors.merging(state.parameters) { _, saved in saved }, settings: settings,
      optimizer: AdamW(
        settings: settings.optimizer, step: state.optimizerStep,
        firstMoment: state.firstMoment, secondMoment: state.secondMoment),
      step: state.step, rng: state.rng)
  }

  private init(
    tensors: [String: Tensor], settings: Settings, optimizer: AdamW, step: Int, rng: SplitMix64
  ) {
    self.settings = settings
    parameters = Parameters(
      tensors.filter { $0.key.hasPrefix("prompt_encoder.") || $0.key.hasPrefix("mask_decoder.") }
    ) { key in
      !key.contains("iou_prediction_head") && !key.contains("pe_layer")
        && !key.contains("mask_downscaling")
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
    /// The prompt encoder's and mask decoder's tensors (trained or not), by checkpoint key.
    package var parameters: [String: Tensor]
    package var step: Int
    package var rng: SplitMix64
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

  package struct StepResult {
    package var loss: Double
    package var lr: Double
    /// The low-res logits of the step's forward pass, `[N, C, 256, 256]` for the N masks of
    /// the batch.
    package var logits: Tensor
  }

  /// One optimiser step on one image with box prompts `[B, 4]` (XYXY, 1024 prompt frame).
  @discardableResult
  package func step(embedding: Tensor, boxes: Tensor, targets: Tensor) -> StepResult {
    step(embedding: embedding, prompts: .boxes(boxes), targets: targets)
  }

  /// One image of a step: `embedding` `[1, 256, 64, 64]` from the frozen encoder, M prompts
  /// (boxes or positive points) and M soft target masks `[M, S, S]` at the encoder's padded
  /// input size.
  package struct Example {
    package var embedding: Tensor
    package var prompts: TrainingPrompts
    package var targets: Tensor

    package init(embedding: Tensor, prompts: TrainingPrompts, targets: Tensor) {
      self.embedding = embedding
      self.prompts = prompts
      self.targets = targets
    }
  }

  /// One optimiser step on one image; see `step(_:)`.
  @discardableResult
  package func step(embedding: Tensor, prompts input: TrainingPrompts, targets: Tensor)
    -> StepResult
  {
    step([Example(embedding: embedding, prompts: input, targets: targets)])
  }

  /// One optimiser step on a batch of images. Multimask output is chosen by one coin flip for
  /// the batch and each image is decoded with its own prompts, as the official trainer does;
  /// the loss is the mean over all masks of the batch.
  @discardableResult
  package func step(_ batch: [Example]) -> StepResult {
    precondition(!batch.isEmpty, "DecoderFineTuner: an empty batch")
    let multimask = Double.random(in: 0..<1, using: &rng) >= 0.5
    let prompts = PromptEncoderGraph(parameters: parameters)
    let decoder = MaskDecoderGraph(parameters: parameters)
    let tape = Tape()
    let outputs = batch.map { example in
      let sparse: Variable
      switch example.prompts {
      case .boxes(let boxes):
        sparse = prompts.sparse(tape, points: nil, boxes: boxes)
      case .points(let coords):
        let labels = [Int](repeating: 1, count: coords.shape[0] * coords.shape[1])
        sparse = prompts.sparse(tape, points: (coords, labels), boxes: nil)
      }
      let dense = prompts.noMaskDense(tape, batch: sparse.shape[0])
      return decoder(
        tape, imageEmbedding: Variable(example.embedding),
        imagePE: prompts.encoder.getDensePE(), sparse: sparse, dense: dense, multimask: multimask
      ).masks
    }
    let masks = outputs.count == 1 ? outputs[0] : tape.concat(outputs, axis: 0)
    let (n, k) = (masks.shape[0], masks.shape[1])
    let draws = (0..<k).map { _ in
      MaskLoss.Draws(masks: n, settings: settings.loss, using: &rng)
    }
    let targets = batch.flatMap(\.targets.storage)
    let side = batch[0].targets.dim(-1)
    let result = lossFunction(
      logits: masks.value.reshaped([n, 1, k, 256, 256]),
      targets: Tensor(shape: [n, 1, side, side], storage: targets), draws: draws)
    parameters.zeroGradients()
    tape.backward(from: masks, gradient: result.gradient.storage)
    var gradients = parameters.gradients
    clipGradientValues(&gradients, limit: settings.gradientClip)
    let lr = schedule.lr(at: step)
    var values = parameters.tensors
    optimizer.update(&values, gradients: gradients, lr: lr)
    parameters.assign(values)
    step += 1
    return StepResult(loss: result.loss, lr: lr, logits: masks.value)
  }
}
