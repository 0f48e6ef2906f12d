import EVCheckpoint
import EVModel
import EVTensor

/// A training run, step by step: the stream of training images (`EpochOrder`), each made
/// into a sample and prompts as the official data provider and trainer do, the `Trainer`
/// (the whole model, or with the parts in `settings.frozen` fixed), validation, and the state
/// that lets another process continue the run bit for bit. Whoever drives it (the `evsam train` command)
/// decides when to validate and save and shows the progress.
package final class TrainingRun {
  package let settings: RunSettings
  package let dataset: TrainingDataset
  package let split: DataSplit
  let config: ModelConfig
  /// The starting checkpoint's tensors, which the trained ones replace in the output.
  let original: [String: Tensor]
  let trainer: Trainer
  private var order: EpochOrder
  private var dataRNG: SplitMix64
  /// Images taken from the stream so far.
  package private(set) var imagesSeen: Int

  /// - Parameters:
  ///   - tensors: the starting checkpoint, every key of a `config` model.
  ///   - state: a saved state to continue from; its settings must be `settings`.
  package init(
    settings: RunSettings, config: ModelConfig, tensors: [String: Tensor],
    dataset: TrainingDataset, split: DataSplit, resuming state: TrainingState? = nil
  ) throws(TrainingStateError) {
    self.settings = settings
    self.config = config
    self.dataset = dataset
    self.split = split
    original = tensors
    var trainerSettings = Trainer.Settings()
    trainerSettings.lr = settings.lr
    trainerSettings.steps = settings.steps
    trainerSettings.warmupSteps = settings.warmupSteps
    trainerSettings.seed = settings.seed
    trainerSettings.frozen = Set(settings.frozen)
    trainerSettings.iouLoss = settings.iouLoss
    trainerSettings.loss.pointLoss = settings.pointLoss
    order = EpochOrder(count: split.train.count, seed: settings.seed)
    if let state {
      try settings.differences(from: state.settings).checkResumable(
        step: state.trainer.step, imagesSeen: state.imagesSeen, batchSize: settings.batchSize,
        steps: settings.steps)
      trainer = Trainer(
        config: config, tensors: tensors, settings: trainerSettings, resuming: state.trainer)
      dataRNG = state.dataRNG
      imagesSeen = state.imagesSeen
    } else {
      trainer = Trainer(config: config, tensors: tensors, settings: trainerSettings)
      dataRNG = SplitMix64(seed: settings.seed ^ 0xDA7A)
      imagesSeen = 0
    }
  }

  /// Steps taken so far (including those of the runs this one resumes).
  package var step: Int { trainer.step }

  /// One optimiser step on the next `batchSize` images of the stream.
  package func trainStep() throws(TrainingDataError) -> (loss: Double, lr: Double) {
    let side = config.imageSize
    var batch: [Trainer.Example] = []
    for _ in 0..<settings.batchSize {
      let index = split.train[order.image(at: imagesSeen)]
      let sample = TrainingSample.training(
        try dataset.load(index), masksPerImage: settings.masksPerImage, side: side,
        using: &dataRNG)
      let prompts = TrainingPrompts.draw(
        masks: sample.masks, side: side, boxes: sample.boxes, kind: settings.prompts,
        using: &dataRNG)
      batch.append(
        Trainer.Example(
          image: Tensor(shape: [3, side, side], storage: sample.image), prompts: prompts,
          targets: Tensor(shape: [sample.maskCount, side, side], storage: sample.masks)))
      imagesSeen += 1
    }
    let result = trainer.step(batch)
    return (result.loss, result.lr)
  }

  /// The official validation mIoU of the current weights, or nil when the run has no
  /// validation images.
  package func validate() throws(TrainingDataError) -> Double? {
    guard !split.validation.isEmpty else { return nil }
    let reader = WeightReader(trainedTensors, origin: "the trained weights")
    let current = EfficientViTSAM(config: config, reader: reader)
    do {
      try reader.finish()
    } catch {
      preconditionFailure("the trained weights no longer build the model: \(error)")
    }
    return try Validation.meanIoU(model: current, dataset: dataset, items: split.validation)
  }

  /// The whole model's tensors: the starting checkpoint with the trained ones in place.
  package var trainedTensors: [String: Tensor] {
    original.merging(trainer.parameters.tensors) { _, trained in trained }
  }

  package var state: TrainingState {
    TrainingState(
      settings: settings, trainer: trainer.state, dataRNG: dataRNG, imagesSeen: imagesSeen)
  }
}
