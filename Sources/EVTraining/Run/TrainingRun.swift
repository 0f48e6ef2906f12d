import EVCheckpoint
import EVModel
import EVTensor

/// A training run, step by step: the stream of training images (`EpochOrder`), each made
/// into a sample and prompts as the official data provider and trainer do, the `Trainer`
/// (the whole model, or with the parts in `settings.frozen` fixed), validation, and the state
/// that lets another process continue the run bit for bit. Whoever drives it (the `evsam train` command)
/// decides when to validate and save and shows the progress.
///
/// Data-parallel: each of the `group`'s ranks takes its micro-batches of every step's global
/// batch (`DataParallelLayout`) and the gradients are averaged over all of them. Every image's
/// randomness comes from its position in the stream and every step's coin from the step, so
/// the run draws the same whatever the number of ranks.
package final class TrainingRun {
  package let settings: RunSettings
  package let dataset: TrainingDataset
  package let split: DataSplit
  let config: ModelConfig
  /// The starting checkpoint's tensors, which the trained ones replace in the output.
  let original: [String: Tensor]
  let trainer: Trainer
  let layout: DataParallelLayout
  let group: any ProcessGroup
  private var order: EpochOrder
  /// Images taken from the stream so far, by every rank.
  package private(set) var imagesSeen: Int

  /// - Parameters:
  ///   - tensors: the starting checkpoint, every key of a `config` model.
  ///   - state: a saved state to continue from; its settings must be `settings`.
  ///   - group: the ranks of a data-parallel run; their number times
  ///     `settings.accumulation` must be `settings.microBatches`.
  package init(
    settings: RunSettings, config: ModelConfig, tensors: [String: Tensor],
    dataset: TrainingDataset, split: DataSplit, resuming state: TrainingState? = nil,
    group: any ProcessGroup = SingleProcess()
  ) throws(TrainingStateError) {
    self.settings = settings
    self.config = config
    self.dataset = dataset
    self.split = split
    original = tensors
    self.group = group
    layout = DataParallelLayout(
      ranks: group.size, microBatches: settings.microBatches, microBatch: settings.batchSize)
    var trainerSettings = Trainer.Settings()
    trainerSettings.lr = layout.scaledLR(settings.lr)
    trainerSettings.steps = settings.steps
    trainerSettings.warmupSteps = settings.warmupSteps
    trainerSettings.seed = settings.seed
    trainerSettings.frozen = Set(settings.frozen)
    trainerSettings.iouLoss = settings.iouLoss
    trainerSettings.loss.pointLoss = settings.pointLoss
    order = EpochOrder(count: split.train.count, seed: settings.seed)
    if let state {
      try settings.differences(from: state.settings).checkResumable(
        step: state.trainer.step, imagesSeen: state.imagesSeen, batchSize: layout.globalBatch,
        steps: settings.steps)
      trainer = Trainer(
        config: config, tensors: tensors, settings: trainerSettings, resuming: state.trainer)
      imagesSeen = state.imagesSeen
    } else {
      trainer = Trainer(config: config, tensors: tensors, settings: trainerSettings)
      imagesSeen = 0
    }
  }

  /// Steps taken so far (including those of the runs this one resumes).
  package var step: Int { trainer.step }

  /// One optimiser step on the next global batch of the stream, this rank's micro-batches
  /// of it here. `stop`: this rank's wish to end the run after the step; the result says
  /// whether any rank had it.
  package func trainStep(stop: Bool = false) throws -> (loss: Double, lr: Double, stop: Bool) {
    let step = trainer.step
    var coin = SplitMix64(seed: settings.seed, stream: RandomStream.multimask, index: step)
    let multimask = Double.random(in: 0..<1, using: &coin) >= 0.5
    let result = try averageGradients(
      trainer.parameters, layout: layout, group: group, stop: stop
    ) { micro in
      let slot = layout.slot(rank: group.rank, micro: micro)
      let (batch, randomness) = try microBatch(
        layout.positions(step: step, slot: slot), multimask: multimask)
      return trainer.computeGradients(batch, randomness: randomness).loss
    }
    let lr = trainer.applyGradients()
    imagesSeen += layout.globalBatch
    return (result.loss, lr, result.stop)
  }

  /// The examples at `positions` of the stream and their loss draws, each image's from its
  /// own generators.
  private func microBatch(_ positions: Range<Int>, multimask: Bool) throws(TrainingDataError)
    -> ([Trainer.Example], Trainer.Randomness)
  {
    let side = config.imageSize
    let outputs = multimask ? 3 : 1
    var batch: [Trainer.Example] = []
    var draws = [MaskLoss.Draws](
      repeating: MaskLoss.Draws(oversampled: [], extra: []), count: outputs)
    for position in positions {
      var rng = SplitMix64(seed: settings.seed, stream: RandomStream.sample, index: position)
      let index = split.train[order.image(at: position)]
      let sample = TrainingSample.training(
        try dataset.load(index), masksPerImage: settings.masksPerImage, side: side,
        using: &rng)
      let prompts = TrainingPrompts.draw(
        masks: sample.masks, side: side, boxes: sample.boxes, kind: settings.prompts,
        using: &rng)
      batch.append(
        Trainer.Example(
          image: Tensor(shape: [3, side, side], storage: sample.image), prompts: prompts,
          targets: Tensor(shape: [sample.maskCount, side, side], storage: sample.masks)))
      var points = SplitMix64(
        seed: settings.seed, stream: RandomStream.lossPoints, index: position)
      for k in 0..<outputs {
        let d = MaskLoss.Draws(
          masks: sample.maskCount, settings: trainer.lossFunction.settings, using: &points)
        draws[k].oversampled += d.oversampled
        draws[k].extra += d.extra
      }
    }
    return (batch, Trainer.Randomness(multimask: multimask, draws: draws))
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
      settings: settings, trainer: trainer.state, imagesSeen: imagesSeen)
  }
}
