import EVEvaluation
import EVImage
import EVMask
import EVModel
import EVPredictor
import Foundation
import TestSupport
import Testing

/// The batched protocol on the fixture model against the plain one-prompt-at-a-time protocol of
/// the official script (`predictor.predict(…, multimask_output=True)`, `masks[argmax(iou)]`).
@Suite(.serialized) struct ModelProtocolTests {
  static func predictor() throws -> SamPredictor {
    let models = try Fixtures.url("models")
    let config = try ModelConfig.load(json: models.appendingPathComponent("tiny-l.json"))
    let model = try EfficientViTSAM.load(
      config: config, checkpoint: models.appendingPathComponent("tiny-l.pt"))
    return SamPredictor(model: model)
  }

  func image(_ data: SmallDataset, _ id: Int) throws -> RGBImage {
    let info = data.dataset.images.first { $0.id == id }!
    return try RGBImage(
      contentsOf: try data.imagesURL.appendingPathComponent(info.fileName!),
      applyEXIFOrientation: false)
  }

  func boolIoU(_ a: [Bool], _ b: RLE) throws -> Double {
    try officialIoU(RLE(rowMajor: a, height: b.height, width: b.width), b)
  }

  @Test func boxAndPointPromptsMatchTheOneByOneProtocol() throws {
    let data = try SmallDataset.make()
    let predictor = try Self.predictor()
    // Batches of 3 split each image's four objects across decoder calls.
    let segmenter = SamSegmenter(predictor: predictor, batchSize: 3)
    let box = try ZeroShotEvaluator(
      configuration: try data.configuration(.box), dataset: data.dataset,
      imagesDirectory: try data.imagesURL
    ).run(segmenter: segmenter, journal: nil)
    let point = try ZeroShotEvaluator(
      configuration: try data.configuration(.point, clicks: [1, 3]), dataset: data.dataset,
      imagesDirectory: try data.imagesURL
    ).run(segmenter: segmenter, journal: nil)

    var compared = 0
    for imageID in [2, 3] {
      try predictor.setImage(image(data, imageID))
      for gt in data.dataset.annotations where gt.imageID == imageID {
        let gtMask = try data.groundTruth(gt)
        let b = gt.bbox!
        let single = try predictor.predict(
          box: Box(x0: b.x, y0: b.y, x1: b.x + b.width, y1: b.y + b.height), multimask: true)
        let expectedBox = try boolIoU(single.masks.mask(single.bestIndex), gtMask)
        let ours = try #require(box.annotations?.first { $0.id == gt.id })
        #expect(abs(ours.iou[0] - expectedBox) < 0.05, "box, annotation \(gt.id)")

        var clicker = Clicker(
          groundTruth: gtMask.decodeRowMajorBool(), height: gtMask.height, width: gtMask.width)
        var prediction = [Bool](repeating: false, count: gtMask.height * gtMask.width)
        var expectedPoints: [Double] = []
        for round in 1...3 {
          clicker.nextClick(prediction: prediction)
          let result = try predictor.predict(
            points: clicker.clicks.map { Point(x: Double($0.x), y: Double($0.y)) },
            labels: clicker.clicks.map { $0.positive ? 1 : 0 }, multimask: true)
          prediction = result.masks.mask(result.bestIndex)
          if round != 2 { expectedPoints.append(try boolIoU(prediction, gtMask)) }
        }
        let oursPoint = try #require(point.annotations?.first { $0.id == gt.id })
        #expect(oursPoint.clicks == clicker.clicks, "clicks, annotation \(gt.id)")
        #expect(oursPoint.iou.count == 2)
        for (x, y) in zip(oursPoint.iou, expectedPoints) {
          #expect(abs(x - y) < 0.05, "points, annotation \(gt.id)")
        }
        compared += 1
      }
    }
    #expect(compared == SmallDataset.objectIDs.count)
    #expect(box.miou?.first?.counts.all == compared)
  }
}
