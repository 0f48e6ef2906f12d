import EVModel
import EVTensor

/// One step of the first training stage of EfficientViT-SAM: the image encoder alone, in train
/// mode, pulled towards a teacher's image embeddings (SAM-ViT-H's in the paper) by the mean
/// squared error, then value clipping, AdamW and the cosine schedule as in `Trainer`.
package final class Distiller {
  package struct Settings: Sendable {
    package var lr = 1e-4
    package var steps = 1000
    package var warmupSteps = 0
    package var gradientClip: Float = 2.0
    package var optimizer = AdamW.Settings()

    package init() {}
  }

  package let config: ModelConfig
  package let settings: Settings
  /// The model's tensors by key; only the encoder's trainable ones collect gradients.
  package let parameters: Parameters
  let optimizer: AdamW
  let schedule: CosineSchedule
  package private(set) var step = 0

  /// `tensors`: at least every `image_encoder.*` key of a `config` model.
  package convenience init(config: ModelConfig, tensors: [String: Tensor], settings: Settings) {
    self.init(
      config: config, tensors: tensors, settings: settings,
      optimizer: AdamW(settings: settings.optimizer), step: 0)
  }

  /// Continues from a saved `state` (its `rng` is unused: a distillation step draws nothing).
  package convenience init(
    config: ModelConfig, tensors: [String: Tensor], settings: Settings,
    resuming state: Trainer.State
  ) {
    self.init(
      config: config, tensors: tensors.merging(state.parameters) { _, saved in saved },
      settings: settings,
      optimizer: AdamW(
        settings: settings.optimizer, step: state.optimizerStep,
        firstMoment: state.firstMoment, secondMoment: state.secondMoment),
      step: state.step)
  }

  private init(
    config: ModelConfig, tensors: [String: Tensor], settings: Settings, optimizer: AdamW,
    step: Int
  ) {
    self.config = config
    self.settings = settings
    parameters = Parameters(tensors.filter { $0.key.hasPrefix("image_encoder.") }) {
      Trainer.isTrainable($0)
    }
    self.optimizer = optimizer
    schedule = CosineSchedule(
      baseLR: settings.lr, decaySteps: settings.steps, warmupSteps: settings.warmupSteps)
    self.step = step
  }

  /// Everything a later run needs to continue this one exactly: the encoder's tensors,
  /// AdamW's moments and the step.
  package var state: Trainer.State {
    Trainer.State(
      parameters: parameters.tensors, step: step, rng: SplitMix64(seed: 0),
      optimizerStep: optimizer.step, firstMoment: optimizer.firstMoment,
      secondMoment: optimizer.secondMoment)
  }

  /// Forward and backward on preprocessed `images` `[B, 3, S, S]` against the teacher's
  /// `targets` `[B, 256, 64, 64]`: leaves the gradients in `parameters` and updates the
  /// BatchNorm statistics. Returns the loss.
  package func computeGradients(images: Tensor, targets: Tensor) -> Double {
    let tape = Tape()
    let embedding = EncoderGraph(config: config, parameters: parameters)(
      tape, Variable(images), training: true)
    let result = DistillationLoss.meanSquaredError(embedding.value, target: targets)
    parameters.zeroGradients()
    tape.backward(from: embedding, gradient: result.gradient.storage)
    return result.loss
  }

  /// One optimiser step. Returns the loss and the learning rate used.
  @discardableResult
  package func step(images: Tensor, targets: Tensor) -> (loss: Double, lr: Double) {
    let loss = computeGradients(images: images, targets: targets)
    return (loss, applyGradients())
  }

  /// Clips the gradients in `parameters`, takes the AdamW step at this step's learning rate
  /// and advances the schedule. Returns the learning rate used.
  @discardableResult
  package func applyGradients() -> Double {
    let lr = schedule.lr(at: step)
    parameters.applyAdamW(optimizer, lr: lr, clip: settings.gradientClip)
    step += 1
    return lr
  }
}
