import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// `--iou-loss mse`: the IoU each output actually has, the squared error and its gradient,
/// and a trainer that then trains the IoU head (the official one leaves it alone).
@Suite struct IoULossTests {
  @Test func measuresTheOutputsIoU() {
    // Two outputs on an 8×8 low-res map seen at 16×16: the left half, and everything.
    let (h, side) = (8, 16)
    var logits = [Float](repeating: 0, count: 2 * h * h)
    for y in 0..<h {
      for x in 0..<h {
        logits[y * h + x] = x < h / 2 ? 5 : -5
        logits[h * h + y * h + x] = 5
      }
    }
    // Target: the left half at full size.
    var target = [Float](repeating: 0, count: side * side)
    for y in 0..<side { for x in 0..<(side / 2) { target[y * side + x] = 1 } }
    let predictions = Tensor(shape: [1, 2], storage: [0.75, 0.5])
    let result = IoULoss.meanSquaredError(
      predictions: predictions, logits: Tensor(shape: [1, 2, h, h], storage: logits),
      targets: Tensor(shape: [1, side, side], storage: target))
    #expect(result.iou == [1, 0.5])
    #expect(abs(result.loss - (0.25 * 0.25 + 0) / 2) <= 1e-9)
    #expect(result.gradient.storage == [Float(2 * -0.25 / 2), 0])
  }

  @Test func theIoUHeadTrainsOnlyWhenAsked() throws {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    let tensors = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
    let side = config.imageSize
    var rng = Fuzz.Generator(seed: 3)
    var mask = [Float](repeating: 0, count: side * side)
    for y in 100..<300 { for x in 50..<250 { mask[y * side + x] = 1 } }
    let example = Trainer.Example(
      image: Tensor(
        shape: [3, side, side],
        storage: (0..<(3 * side * side)).map { _ in Float.random(in: -1...1, using: &rng) }),
      prompts: .boxes(Tensor(shape: [1, 4], storage: [100, 200, 500, 600])),
      targets: Tensor(shape: [1, side, side], storage: mask))
    for on in [false, true] {
      var settings = Trainer.Settings()
      settings.iouLoss = on
      settings.frozen = [.encoder]
      let trainer = Trainer(config: config, tensors: tensors, settings: settings)
      let result = trainer.step([example])
      #expect(result.loss.isFinite)
      let key = "mask_decoder.iou_prediction_head.layers.2.weight"
      #expect((trainer.parameters[key].value != tensors[key]) == on, "IoU loss \(on)")
    }
  }
}
