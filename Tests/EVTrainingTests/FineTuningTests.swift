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

/// Learning, end to end: `tiny-l` (random weights) fine-tuned on one object of coffee.png with
/// its box as the prompt (lr 1e-3, the official loss, AdamW, cosine schedule) goes from a low
/// IoU to at least 0.85 with that box; the `model.pt` it writes loads strictly and gives the
/// same masks as the trained weights.
@Suite struct FineTuningTests {
  @Test func tinyLLearnsOneMaskFromItsBox() throws {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    let original = try Checkpoint.load(contentsOf: Fixtures.url("models/tiny-l.pt"))
    let model = try EfficientViTSAM.load(
      config: config, checkpoint: Fixtures.url("models/tiny-l.pt"))
    let coco = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
    let annotation = try #require(coco.annotations.first { $0.id == 16 })
    let picture = try RGBImage(
      contentsOf: Fixtures.url("images/coffee.png"), applyEXIFOrientation: false)
    let (h, w) = (picture.height, picture.width)
    let truth = try #require(annotation.segmentation).rle(height: h, width: w)
      .decodeRowMajorBool()

    // The official transforms (no flip), then the frozen encoder.
    var image = [Float](repeating: 0, count: 3 * h * w)
    for p in 0..<(h * w) {
      for c in 0..<3 { image[c * h * w + p] = Float(picture.pixels[p * 3 + c]) }
    }
    let box = try #require(annotation.bbox)
    var sample = TrainingSample(
      image: image, masks: truth.map { $0 ? 1 : 0 }, points: [[0, 0]],
      boxes: [[Float(box.x), Float(box.y), Float(box.width), Float(box.height)]], height: h,
      width: w)
    let side = config.imageSize
    sample = SampleTransforms.resizeLongestSide(sample, target: side)
    sample = SampleTransforms.normalizeAndPad(sample, target: side)
    let embedding = model.imageEncoder(Tensor(shape: [1, 3, side, side], storage: sample.image))
    // XYWH in the encoder's frame → XYXY in the 1024 prompt frame, as the trainer does.
    let toPrompt = Float(1024) / Float(side)
    let b = sample.boxes[0].map { $0 * toPrompt }
    let boxes = Tensor(shape: [1, 4], storage: [b[0], b[1], b[0] + b[2], b[1] + b[3]])
    let targets = Tensor(shape: [1, side, side], storage: sample.masks)

    func iou(_ tensors: [String: Tensor]) throws -> (iou: Double, mask: [Bool]) {
      let reader = WeightReader(tensors, origin: "trained")
      let trained = EfficientViTSAM(config: config, reader: reader)
      try reader.finish()
      let predictor = SamPredictor(model: trained)
      try predictor.setImage(picture)
      let p = try predictor.predict(
        box: [box.x, box.y, box.x + box.width, box.y + box.height], multimask: false)
      let mask = p.masks.mask(0)
      let inter = zip(mask, truth).filter { $0 && $1 }.count
      let union = zip(mask, truth).filter { $0 || $1 }.count
      return (Double(inter) / Double(max(union, 1)), mask)
    }
    let before = try iou(original).iou

    var settings = DecoderFineTuner.Settings()
    settings.lr = 1e-3
    settings.steps = 200
    settings.seed = 1
    let tuner = DecoderFineTuner(tensors: original, settings: settings)
    var losses: [Double] = []
    var after = before
    var merged = original
    for step in 0..<settings.steps {
      losses.append(tuner.step(embedding: embedding, boxes: boxes, targets: targets).loss)
      if step % 25 == 24 || step == settings.steps - 1 {
        merged.merge(tuner.parameters.tensors) { _, new in new }
        after = try iou(merged).iou
        if after >= 0.9 { break }
      }
    }
    print(
      "fine-tuning tiny-l: IoU \(before) → \(after) in \(losses.count) steps; loss \(losses.first!) → \(losses.last!)"
    )
    #expect(before < 0.5)
    #expect(after >= 0.85, "IoU \(before) → \(after) after \(losses.count) steps")

    // model.pt as the official loader reads it: every key, in the official order.
    let declared = EfficientViTSAM.declaredParameters(config: config).declared
    let entries = try declared.map { d in
      TorchWriter.Entry(key: d.key, tensor: try #require(merged[d.key]), dtype: d.dtype)
    }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-finetune-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let url = folder.appendingPathComponent("model.pt")
    try TorchWriter.write(entries, to: url)
    let reloaded = try Checkpoint.load(contentsOf: url, expecting: declared)
    #expect(try iou(reloaded).mask == iou(merged).mask)

    // Point prompts drawn as the official trainer draws them train through the same step.
    var rng = SplitMix64(seed: 9)
    let points = TrainingPrompts.draw(
      masks: sample.masks, side: side, boxes: sample.boxes, kind: .points, using: &rng)
    guard case .points(let coords) = points else {
      Issue.record("a 29 161-pixel mask must give points")
      return
    }
    #expect(coords.shape[0] == 1)
    for _ in 0..<3 {
      let result = tuner.step(embedding: embedding, prompts: points, targets: targets)
      #expect(result.loss.isFinite)
    }
  }
}
