import EVImage
import EVModel
import EVPredictor
import EVTensor

/// What the zero-shot protocol needs from a model: encode an image, then for each prompt the
/// multimask output with the highest predicted IoU, thresholded at the original size.
public protocol PromptSegmenter: AnyObject {
  func setImage(_ image: RGBImage) throws
  /// Row-major `height × width` masks, one per box.
  func bestMasks(boxes: [Box]) throws -> [[Bool]]
  /// One per point set (all sets of equal length), labels 1 / 0.
  func bestMasks(pointSets: [[Point]], labels: [[Int]]) throws -> [[Bool]]
}

/// The official predictor's protocol on our `SamPredictor`: multimask output, keep the mask with
/// the highest predicted IoU (the first on ties, as `argmax`). Prompts are decoded in batches of
/// `batchSize`; only the kept low-res mask of each prompt is upscaled to the image size.
public final class SamSegmenter: PromptSegmenter {
  public let predictor: SamPredictor
  public let batchSize: Int

  public init(predictor: SamPredictor, batchSize: Int = 16) {
    precondition(batchSize >= 1)
    self.predictor = predictor
    self.batchSize = batchSize
  }

  public func setImage(_ image: RGBImage) throws {
    try predictor.setImage(image)
  }

  public func bestMasks(boxes: [Box]) throws -> [[Bool]] {
    var out: [[Bool]] = []
    out.reserveCapacity(boxes.count)
    var start = 0
    while start < boxes.count {
      let end = min(start + batchSize, boxes.count)
      let batch = try predictor.predictBatch(
        boxes: Array(boxes[start..<end]), multimask: true, upscale: false)
      out += try keepBest(batch)
      start = end
    }
    return out
  }

  public func bestMasks(pointSets: [[Point]], labels: [[Int]]) throws -> [[Bool]] {
    precondition(pointSets.count == labels.count)
    var out: [[Bool]] = []
    out.reserveCapacity(pointSets.count)
    var start = 0
    while start < pointSets.count {
      let end = min(start + batchSize, pointSets.count)
      let batch = try predictor.predictBatch(
        pointSets: Array(pointSets[start..<end]), labelSets: Array(labels[start..<end]),
        multimask: true,
        upscale: false)
      out += try keepBest(batch)
      start = end
    }
    return out
  }

  private func keepBest(_ batch: BatchPrediction) throws -> [[Bool]] {
    guard let inputSize = predictor.inputSize, let originalSize = predictor.originalSize else {
      throw PredictorError.noImageSet
    }
    let b = batch.batchSize
    let c = batch.masksPerPrompt
    let side = batch.lowResLogits.shape[2]
    let plane = side * batch.lowResLogits.shape[3]
    let iou = batch.iouPredictions.storage
    let low = batch.lowResLogits.storage
    var kept = [Float]()
    kept.reserveCapacity(b * plane)
    for i in 0..<b {
      var best = 0
      for j in 1..<c where iou[i * c + j] > iou[i * c + best] { best = j }
      let offset = (i * c + best) * plane
      kept.append(contentsOf: low[offset..<(offset + plane)])
    }
    let lowRes = Tensor(shape: [b, 1, side, batch.lowResLogits.shape[3]], storage: kept)
    let logits = MaskPostprocessing.upscale(
      lowRes, inputSize: inputSize, originalSize: originalSize)
    let pixels = originalSize.height * originalSize.width
    return logits.withUnsafeBufferPointer { values in
      (0..<b).map { i in
        let base = i * pixels
        return (0..<pixels).map { values[base + $0] > 0 }
      }
    }
  }
}
