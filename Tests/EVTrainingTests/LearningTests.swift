import EVCheckpoint
import EVEvaluation
import EVImage
import EVModel
import EVPredictor
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// Learning, end to end through `Trainer`: `tiny-l` (random weights) trained on one object of
/// coffee.png with its box as the prompt (lr 1e-3, the official loss, AdamW, cosine
/// schedule) goes from a low IoU to at least 0.85 with that box within 200 steps — the whole
/// model (encoder in train mode) and with the encoder frozen; the `model.pt` it writes loads
/// strictly and gives the same masks as the trained weights.
@Suite struct LearningTests {
  struct Case {
    let config: ModelConfig
    let original: [String: Tensor]
    let picture: RGBImage
    let truth: [Bool]
    let box: [Double]
    let example: Trainer.Example
    let sample: TrainingSample

    init() throws {
      config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
      original = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
      let coco = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
      let annotation = try #require(coco.annotations.first { $0.id == 16 })
      picture = try RGBImage(
        contentsOf: Fixtures.url("images/coffee.png"), applyEXIFOrientation: false)
      let (h, w) = (picture.height, picture.width)
      truth = try #require(annotation.segmentation).rle(height: h, width: w)
        .decodeRowMajorBool()
      var image = [Float](repeating: 0, count: 3 * h * w)
      for p in 0..<(h * w) {
        for c in 0..<3 { image[c * h * w + p] = Float(picture.pixels[p * 3 + c]) }
      }
      let bbox = try #require(annotation.bbox)
      box = [bbox.x, bbox.y, bbox.x + bbox.width, bbox.y + bbox.height]
      // The official transforms without the flip.
      var sample = TrainingSample(
        image: image, masks: truth.map { $0 ? 1 : 0 }, points: [[0, 0]],
        boxes: [[Float(bbox.x), Float(bbox.y), Float(bbox.width), Float(bbox.height)]],
        height: h, width: w)
      let side = config.imageSize
      sample = SampleTransforms.resizeLongestSide(sample, target: side)
      sample = SampleTransforms.normalizeAndPad(sample, target: side)
      self.sample = sample
      // XYWH in the encoder's frame → XYXY in the 1024 prompt frame, as the trainer does.
      let toPrompt = Float(1024) / Float(side)
      let b = sample.boxes[0].map { $0 * toPrompt }
      example = Trainer.Example(
        image: Tensor(shape: [3, side, side], storage: sample.image),
        prompts: .boxes(Tensor(shape: [1, 4], storage: [b[0], b[1], b[0] + b[2], b[1] + b[3]])),
        targets: Tensor(shape: [1, side, side], storage: sample.masks))
    }

    /// The IoU with the box prompt of the model `tensors` hold, through the inference path.
    func iou(_ tensors: [String: Tensor]) throws -> (iou: Double, mask: [Bool]) {
      let reader = WeightReader(tensors, origin: "trained")
      let trained = EfficientViTSAM(config: config, reader: reader)
      try reader.finish()
      let predictor = SamPredictor(model: trained)
      try predictor.setImage(picture)
      let mask = try predictor.predict(box: try Box(values: box), multimask: false).masks.mask(0)
      let inter = zip(mask, truth).filter { $0 && $1 }.count
      let union = zip(mask, truth).filter { $0 || $1 }.count
      return (Double(inter) / Double(max(union, 1)), mask)
    }
  }

  @Test(arguments: [[], [ModelPart.encoder]])
  func tinyLLearnsOneMaskFromItsBox(_ frozen: [ModelPart]) throws {
    let c = try Case()
    let before = try c.iou(c.original).iou
    var settings = Trainer.Settings()
    settings.lr = 1e-3
    settings.steps = 200
    settings.seed = 1
    settings.frozen = Set(frozen)
    let trainer = Trainer(config: c.config, tensors: c.original, settings: settings)
    var losses: [Double] = []
    var after = before
    for step in 0..<settings.steps {
      losses.append(trainer.step([c.example]).loss)
      if step % 25 == 24 || step == settings.steps - 1 {
        after = try c.iou(trainer.parameters.tensors).iou
        if after >= 0.9 { break }
      }
    }
    print(
      "training tiny-l (frozen: \(frozen)): IoU \(before) → \(after) in \(losses.count) steps; loss \(losses.first!) → \(losses.last!)"
    )
    #expect(before < 0.5)
    #expect(after >= 0.85, "IoU \(before) → \(after) after \(losses.count) steps")

    // model.pt as the official loader reads it: every key, in the official order.
    let trained = trainer.parameters.tensors
    let declared = EfficientViTSAM.declaredParameters(config: c.config).declared
    let entries = try declared.map { d in
      TorchWriter.Entry(key: d.key, tensor: try #require(trained[d.key]), dtype: d.dtype)
    }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-learning-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let url = folder.appendingPathComponent("model.pt")
    try TorchWriter.write(entries, to: url)
    let reloaded = try Checkpoint.load(contentsOf: url, expecting: declared)
    #expect(try c.iou(reloaded).mask == c.iou(trained).mask)

    // Point prompts drawn as the official trainer draws them train through the same step.
    var rng = SplitMix64(seed: 9)
    let points = TrainingPrompts.draw(
      masks: c.sample.masks, side: c.config.imageSize, boxes: c.sample.boxes, kind: .points,
      using: &rng)
    guard case .points(let coords) = points else {
      Issue.record("a 29 161-pixel mask must give points")
      return
    }
    #expect(coords.shape[0] == 1)
    var example = c.example
    example.prompts = points
    #expect(trainer.step([example]).loss.isFinite)
  }
}
