import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// A run on the fixtures' COCO set with tiny-l: batches of several images, the state that
/// continues it bit for bit, and refusals to resume with other settings.
@Suite struct TrainingRunTests {
  struct Setup {
    let config: ModelConfig
    let tensors: [String: Tensor]
    let dataset: TrainingDataset

    init() throws {
      config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
      tensors = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
      dataset = try TrainingDataset.coco(
        annotations: Fixtures.url("coco/gt.json"), images: Fixtures.url("images"))
    }

    func settings(steps: Int = 6, lr: Double = 1e-3, valFraction: Double = 0.34) -> RunSettings {
      RunSettings(
        steps: steps, batchSize: 2, lr: lr, warmupSteps: 1, masksPerImage: 2, prompts: .mixed,
        frozen: [], seed: 5, validationFraction: valFraction,
        imageSize: config.imageSize, weights: weightsFingerprint(tensors),
        data: dataset.fingerprint)
    }

    func run(_ settings: RunSettings, resuming state: TrainingState? = nil) throws -> TrainingRun {
      try TrainingRun(
        settings: settings, config: config, tensors: tensors, dataset: dataset,
        split: DataSplit(
          count: dataset.items.count, validationFraction: settings.validationFraction,
          seed: settings.seed), resuming: state)
    }
  }

  /// Six steps straight, and three, a save through the state files, and three more in a new
  /// run: the same weights, moments and generators, bit for bit.
  @Test func aResumedRunEqualsAnUninterruptedOne() throws {
    let setup = try Setup()
    let settings = setup.settings()
    let clock = ContinuousClock()
    let start = clock.now
    let straight = try setup.run(settings)
    var straightLosses: [Double] = []
    for _ in 0..<6 { straightLosses.append(try straight.trainStep().loss) }
    let straightTime = clock.now - start

    let first = try setup.run(settings)
    var losses: [Double] = []
    for _ in 0..<3 { losses.append(try first.trainStep().loss) }
    let miou = try #require(try first.validate())
    #expect(miou >= 0 && miou <= 1)
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-state-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    try first.state.write(to: folder, saveID: "3-test")

    let second = try setup.run(settings, resuming: TrainingState.read(from: folder))
    #expect(second.step == 3 && second.imagesSeen == 6)
    for _ in 0..<3 { losses.append(try second.trainStep().loss) }
    #expect(losses == straightLosses)
    let a = straight.trainedTensors
    let b = second.trainedTensors
    #expect(a.keys.sorted() == b.keys.sorted())
    let differing = a.keys.filter { a[$0]!.storage != b[$0]!.storage }
    #expect(differing.isEmpty, "\(differing.sorted().prefix(5))")
    // The whole state (moments, step, generators) as its files hold it.
    let x = try straight.state.encoded(saveID: "same")
    let y = try second.state.encoded(saveID: "same")
    #expect(x.tensors == y.tensors)
    #expect(x.scalars == y.scalars)
    #expect(try straight.validate() == second.validate())
    print("6 steps of tiny-l (2 images × 2 masks): \(straightTime); losses \(straightLosses)")
  }

  @Test func resumingWithOtherSettingsIsRefusedByName() throws {
    let setup = try Setup()
    let run = try setup.run(setup.settings(steps: 2))
    _ = try run.trainStep()
    let state = run.state
    let error = #expect(throws: TrainingStateError.self) {
      try setup.run(setup.settings(steps: 4, lr: 1e-4), resuming: state)
    }
    #expect(error?.description.contains("--steps/--epochs (saved 2 steps, now 4 steps)") == true)
    #expect(error?.description.contains("--lr (saved 0.001, now 0.0001)") == true)
  }

  /// In a batch every image is decoded with its own embedding and prompts (its logits are
  /// those it gets alone), and the loss is the official mean over all the batch's masks.
  @Test func aBatchDecodesEachImageAndAveragesOverAllMasks() throws {
    let setup = try Setup()
    let side = setup.config.imageSize
    var rng = SplitMix64(seed: 11)
    let examples = try (0..<2).map { index in
      let sample = TrainingSample.training(
        try setup.dataset.load(index), masksPerImage: 3 - index, side: side, using: &rng)
      return Trainer.Example(
        image: Tensor(shape: [3, side, side], storage: sample.image),
        prompts: TrainingPrompts.draw(
          masks: sample.masks, side: side, boxes: sample.boxes, kind: .boxes, using: &rng),
        targets: Tensor(shape: [sample.maskCount, side, side], storage: sample.masks))
    }
    var settings = Trainer.Settings()
    settings.seed = 2
    settings.frozen = [.encoder]
    let batch = Trainer(config: setup.config, tensors: setup.tensors, settings: settings)
      .step(examples)
    let alone = Trainer(config: setup.config, tensors: setup.tensors, settings: settings)
      .step([examples[0]])
    let k = batch.logits.shape[1]
    #expect(batch.logits.shape == [5, k, 256, 256])
    #expect(Array(batch.logits.storage.prefix(alone.logits.count)) == alone.logits.storage)

    // The same loss from MaskLoss on the concatenated logits and targets, with the draws the
    // trainer makes after its multimask coin flip.
    var stream = SplitMix64(seed: 2)
    _ = Double.random(in: 0..<1, using: &stream)
    let draws = (0..<k).map { _ in
      MaskLoss.Draws(masks: 5, settings: MaskLoss.Settings(), using: &stream)
    }
    let targets = examples.flatMap(\.targets.storage)
    let loss = MaskLoss()(
      logits: batch.logits.reshaped([5, 1, k, 256, 256]),
      targets: Tensor(shape: [5, 1, side, side], storage: targets), draws: draws)
    // Equal up to the order of the sum (the trainer adds the masks' losses part by part).
    #expect(abs(loss.loss - batch.loss) <= 1e-12 * abs(loss.loss))
  }
}
