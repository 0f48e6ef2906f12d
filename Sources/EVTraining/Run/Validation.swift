import EVModel
import EVTensor

/// The official validation (`SAMTrainer._validate` with `compute_iou`), run on the inference
/// model: each validation image with its first two masks (`validationMasks`), no flip, resized
/// and padded as in training; the masks' boxes as prompts with multimask output; for each
/// mask the output with the highest predicted IoU, its low-res logits upsampled bilinearly to
/// the padded input size and thresholded at 0, against the resized soft target above 128/255
/// (`masks * 255 > 128`); IoU = intersection / (union + 1e-6), averaged over all masks.
package enum Validation {
  /// `OnlineDataset(train=False, num_masks=2)`.
  package static let masksPerImage = 2

  /// The mean IoU over the `items` of `dataset`.
  package static func meanIoU(model: EfficientViTSAM, dataset: TrainingDataset, items: [Int])
    throws(TrainingDataError) -> Double
  {
    precondition(!items.isEmpty, "Validation: no images")
    let side = model.config.imageSize
    let toPrompt = Float(EfficientViTSAM.promptFrameSize) / Float(side)
    var total = 0.0
    var count = 0
    for index in items {
      let sample = TrainingSample.validation(
        try dataset.load(index), masks: masksPerImage, side: side)
      let embedding = model.imageEncoder(
        Tensor(shape: [1, 3, side, side], storage: sample.image))
      let m = sample.maskCount
      let boxes = Tensor(
        shape: [m, 4],
        storage: sample.boxes.flatMap { b in
          [b[0], b[1], b[0] + b[2], b[1] + b[3]].map { $0 * toPrompt }
        })
      let prompts = model.promptEncoder(points: nil, boxes: boxes, masks: nil)
      let out = model.maskDecoder(
        imageEmbeddings: embedding, imagePE: model.promptEncoder.getDensePE(),
        sparsePromptEmbeddings: prompts.sparse, densePromptEmbeddings: prompts.dense,
        multimaskOutput: true)
      let k = out.masks.shape[1]
      let (h, w) = (out.masks.shape[2], out.masks.shape[3])
      let plane = side * side
      for mask in 0..<m {
        let scores = out.iouPredictions.storage[(mask * k)..<((mask + 1) * k)]
        // torch.argmax: the first of equal maxima.
        let best =
          scores.indices.reduce(scores.startIndex) { scores[$1] > scores[$0] ? $1 : $0 }
          - mask * k
        let low = Array(
          out.masks.storage[((mask * k + best) * h * w)..<((mask * k + best + 1) * h * w)])
        total += maskIoU(
          lowRes: low, height: h, width: w,
          target: sample.masks[(mask * plane)..<((mask + 1) * plane)], side: side)
        count += 1
      }
    }
    return total / Double(count)
  }

  /// `mask_iou` of one mask: `lowRes` logits (height × width) upsampled bilinearly
  /// (align_corners=False) to `side × side` and thresholded at 0, against `target` (soft,
  /// `side × side`) scaled by 255 and thresholded at 128.
  package static func maskIoU(
    lowRes: [Float], height: Int, width: Int, target: ArraySlice<Float>, side: Int
  ) -> Double {
    precondition(lowRes.count == height * width && target.count == side * side)
    let view = UpsampledLogits(inputHeight: height, inputWidth: width, side: side)
    var intersection = 0
    var union = 0
    let base = target.startIndex
    lowRes.withUnsafeBufferPointer { plane in
      for y in 0..<side {
        for x in 0..<side {
          let predicted = view.value(plane.baseAddress!, y: y, x: x) > 0
          let truth = target[base + y * side + x] * 255 > 128
          if predicted && truth { intersection += 1 }
          if predicted || truth { union += 1 }
        }
      }
    }
    return Double(intersection) / (Double(union) + 1e-6)
  }
}
