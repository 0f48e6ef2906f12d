import EVImage
import EVModel
import EVTensor

/// The official `EfficientViTSamPredictor`: encode an image once, then predict masks for any
/// number of point / box / mask prompts given in original-image pixels.
///
/// Prompts are mapped into the 1024 prompt frame as the official `apply_coords` does (scaled by
/// `input_size / original_size` in double precision), and masks come back at the original size
/// through the official post-processing. All per-image decoder work (layout, positional
/// encoding, the first block's prompt-independent projections) is done once in `setImage`.
///
/// `predict` and `predictBatch` only read the per-image state (each call has its own scratch
/// memory), so they may run concurrently on several threads; `setImage`, `setEmbedding` and
/// `resetImage` must not overlap with them.
public final class SamPredictor {
  public let promptEncoder: PromptEncoder
  public let maskDecoder: MaskDecoder
  public let imageEncoder: (any ImageEncoding)?
  /// Side of the square the image encoder sees: 512 for L models, 1024 for XL and SAM's ViTs.
  public let encoderInputSize: Int
  /// How the image's pixels are normalised for the encoder (SAM's ViTs differ from EfficientViT).
  public let pixelNormalization: PixelNormalization

  public private(set) var originalSize: (height: Int, width: Int)?
  /// The image's extent in the 1024 prompt frame (the official `input_size`).
  public private(set) var inputSize: (height: Int, width: Int)?
  /// The current image embedding, 1×256×64×64.
  public private(set) var imageEmbedding: Tensor?
  private var prepared: DecoderImage?
  /// The post-processing taps for this image's sizes.
  private var postprocessing: MaskPostprocessing.Plan?

  public init(
    promptEncoder: PromptEncoder, maskDecoder: MaskDecoder,
    imageEncoder: (any ImageEncoding)? = nil, encoderInputSize: Int,
    pixelNormalization: PixelNormalization = .unitRange
  ) {
    self.promptEncoder = promptEncoder
    self.maskDecoder = maskDecoder
    self.imageEncoder = imageEncoder
    self.encoderInputSize = encoderInputSize
    self.pixelNormalization = pixelNormalization
  }

  public convenience init(model: SegmentAnythingModel) {
    self.init(
      promptEncoder: model.promptEncoder, maskDecoder: model.maskDecoder,
      imageEncoder: model.imageEncoder, encoderInputSize: model.imageEncoder.inputSize,
      pixelNormalization: model.architecture.pixelNormalization)
  }

  public convenience init(model: EfficientViTSAM) {
    self.init(model: SegmentAnythingModel(model))
  }

  public var isImageSet: Bool { prepared != nil }

  /// Preprocesses and encodes `image` (the slow step), then prepares the decoder for it.
  public func setImage(_ image: RGBImage) throws(PredictorError) {
    guard let imageEncoder else { throw .noImageEncoder }
    guard image.width > 0, image.height > 0 else {
      throw .emptyImage(height: image.height, width: image.width)
    }
    resetImage()
    let input = preprocess(
      image, targetSize: encoderInputSize, normalization: pixelNormalization
    ).tensor
    let embedding = imageEncoder(input)
    try setEmbedding(embedding, originalSize: (image.height, image.width))
  }

  /// Uses an embedding computed elsewhere (1×256×64×64) for an image of `originalSize`.
  public func setEmbedding(_ embedding: Tensor, originalSize: (height: Int, width: Int))
    throws(PredictorError)
  {
    let side = PromptEncoder.embeddingSide
    guard embedding.shape == [1, PromptEncoder.embedDim, side, side] else {
      throw .embeddingShape(embedding.shape)
    }
    guard originalSize.height > 0, originalSize.width > 0 else {
      throw .emptyImage(height: originalSize.height, width: originalSize.width)
    }
    // Broken weights give a NaN embedding, and every mask decoded from it would be empty under
    // finite-looking scores; one pass over 1M values is nothing next to encoding.
    let nonFinite = embedding.withUnsafeBufferPointer(nonFiniteCount)
    guard nonFinite == 0 else { throw .nonFiniteEmbedding(count: nonFinite) }
    let frameSize = promptFrameSize(
      originalHeight: originalSize.height, originalWidth: originalSize.width,
      longSide: PromptEncoder.promptFrameSide)
    self.originalSize = originalSize
    inputSize = frameSize
    imageEmbedding = embedding
    postprocessing = MaskPostprocessing.Plan(inputSize: frameSize, originalSize: originalSize)
    prepared = maskDecoder.prepare(
      imageEmbedding: embedding, imagePE: promptEncoder.densePE,
      noMaskEmbedding: promptEncoder.noMaskEmbedding)
  }

  public func resetImage() {
    originalSize = nil
    inputSize = nil
    imageEmbedding = nil
    prepared = nil
    postprocessing = nil
  }

  /// Masks for one prompt.
  ///
  /// - Parameters:
  ///   - points: clicks in original-image pixels; `labels` gives 1 (foreground) or 0
  ///     (background) for each.
  ///   - box: a box in original-image pixels.
  ///   - maskInput: 1×256×256 low-res logits from an earlier prediction.
  ///   - multimask: three masks (for ambiguous prompts) instead of one.
  public func predict(
    points: [Point]? = nil, labels: [Int]? = nil, box: Box? = nil,
    maskInput: Tensor? = nil, multimask: Bool = true
  ) throws(PredictorError) -> Prediction {
    let side = PromptEncoder.maskInputSide
    var masks: Tensor?
    if let maskInput {
      guard maskInput.shape == [1, side, side] else {
        throw .maskInputShape(found: maskInput.shape, expected: [1, side, side])
      }
      masks = maskInput.reshaped([1, 1, side, side])
    }
    let batch = try predictBatch(
      boxes: box.map { [$0] }, pointSets: points.map { [$0] }, labelSets: labels.map { [$0] },
      maskInputs: masks, multimask: multimask, upscale: true)
    let logits = batch.maskLogits!
    let perPrompt = Array(logits.shape.dropFirst())
    return Prediction(
      maskLogits: logits.reshaped(perPrompt),
      masks: batch.masks!.reshaped(perPrompt),
      iouPredictions: batch.iouPredictions.storage,
      lowResLogits: batch.lowResLogits.reshaped(Array(batch.lowResLogits.shape.dropFirst())))
  }

  /// The rule the command line and the server apply to prompts (the predictor itself, like
  /// SAM, accepts points off the image): every point and box corner lies on the image,
  /// 0…width × 0…height in pixels, edges included.
  public static func checkInsideImage(
    points: [Point], boxes: [Box], width: Int, height: Int
  ) throws(PredictorError) {
    let w = Double(width)
    let h = Double(height)
    func inside(_ x: Double, _ y: Double) -> Bool { (0...w).contains(x) && (0...h).contains(y) }
    for (i, p) in points.enumerated() where !inside(p.x, p.y) {
      guard p.x.isFinite, p.y.isFinite else { throw .nonFiniteCoordinate(what: "point \(i)") }
      throw .outsideImage(what: "point \(i) (\(p.x), \(p.y))", width: width, height: height)
    }
    for (i, b) in boxes.enumerated() {
      guard inside(b.x0, b.y0), inside(b.x1, b.y1) else {
        guard b.values.allSatisfy(\.isFinite) else {
          throw .nonFiniteCoordinate(what: "box \(i)")
        }
        throw .outsideImage(what: "box \(i) \(b.values)", width: width, height: height)
      }
    }
  }

  /// Masks for B prompts decoded together: B boxes, or B point sets of equal length, or both
  /// (paired one to one), optionally with B×1×256×256 mask inputs.
  ///
  /// - Parameters:
  ///   - upscale: also produce B×C×H×W logits and masks at the original size (large for big
  ///     batches; the automatic mask generator works from the low-res logits).
  ///   - skipMasksAtOrBelowIoU: prompts whose masks all have a predicted IoU at or below this
  ///     get -∞ logits without the decoder's upscaling work (see `MaskDecoder.decode`).
  public func predictBatch(
    boxes: [Box]? = nil, pointSets: [[Point]]? = nil,
    labelSets: [[Int]]? = nil, maskInputs: Tensor? = nil, multimask: Bool = true,
    upscale: Bool = true, skipMasksAtOrBelowIoU: Float? = nil
  ) throws(PredictorError) -> BatchPrediction {
    guard let prepared, let postprocessing, let originalSize, let inputSize else {
      throw .noImageSet
    }
    let prompts = try encodePrompts(
      boxes: boxes, pointSets: pointSets, labelSets: labelSets, maskInputs: maskInputs,
      originalSize: originalSize, inputSize: inputSize)
    let out = maskDecoder.decode(
      prepared, prompts: prompts, multimask: multimask,
      skipMasksAtOrBelowIoU: skipMasksAtOrBelowIoU)
    try Self.checkFinite(out, skippedAtOrBelow: skipMasksAtOrBelowIoU)
    guard upscale else {
      return BatchPrediction(
        maskLogits: nil, masks: nil, iouPredictions: out.iouPredictions, lowResLogits: out.masks)
    }
    let logits = postprocessing.upscale(out.masks)
    return BatchPrediction(
      maskLogits: logits, masks: BinaryMasks(logits: logits),
      iouPredictions: out.iouPredictions, lowResLogits: out.masks)
  }

  /// Refuses NaN or infinite decoder outputs instead of returning them as empty masks. One scan
  /// of the low-res logits (far cheaper than decoding them); a prompt the decoder skipped
  /// because every IoU was at or below `cut` has -∞ logits by design, so only its IoU
  /// predictions are checked.
  private static func checkFinite(_ out: MaskDecoderOutput, skippedAtOrBelow cut: Float?)
    throws(PredictorError)
  {
    let iou = out.iouPredictions
    let badScores = iou.withUnsafeBufferPointer(nonFiniteCount)
    guard badScores == 0 else { throw .nonFiniteOutput(what: "IoU predictions", count: badScores) }
    let (batch, outputs) = (iou.dim(0), iou.dim(1))
    let perPrompt = batch > 0 ? out.masks.count / batch : 0
    var badLogits = 0
    out.masks.withUnsafeBufferPointer { logits in
      for b in 0..<batch {
        if let cut, iou.storage[(b * outputs)..<((b + 1) * outputs)].allSatisfy({ !($0 > cut) }) {
          continue
        }
        badLogits += nonFiniteCount(
          UnsafeBufferPointer(rebasing: logits[(b * perPrompt)..<((b + 1) * perPrompt)]))
      }
    }
    guard badLogits == 0 else {
      throw .nonFiniteOutput(what: "low-res mask logits", count: badLogits)
    }
  }

  /// Validates the prompts and runs the prompt encoder on them.
  private func encodePrompts(
    boxes: [Box]?, pointSets: [[Point]]?, labelSets: [[Int]]?,
    maskInputs: Tensor?, originalSize: (height: Int, width: Int),
    inputSize: (height: Int, width: Int)
  ) throws(PredictorError) -> PromptEmbeddings {
    let sx = Double(inputSize.width) / Double(originalSize.width)
    let sy = Double(inputSize.height) / Double(originalSize.height)
    func check(_ x: Double, _ y: Double, _ what: @autoclosure () -> String) throws(PredictorError) {
      // Finite in the float32 prompt frame too: 1e39 would become infinity there.
      guard x.isFinite, y.isFinite, Float(x * sx).isFinite, Float(y * sy).isFinite else {
        throw .nonFiniteCoordinate(what: what())
      }
    }

    var batch: Int?
    var points: (coords: Tensor, labels: [Int])?
    switch (pointSets, labelSets) {
    case (nil, nil): break
    case (.some, nil): throw .pointsWithoutLabels
    case (nil, .some): throw .labelsWithoutPoints
    case (let sets?, let labels?):
      guard labels.count == sets.count else {
        throw .labelCountMismatch(
          points: sets.reduce(0) { $0 + $1.count }, labels: labels.reduce(0) { $0 + $1.count })
      }
      guard let first = sets.first else { throw .emptyBatch }
      var coords: [Float] = []
      var flatLabels: [Int] = []
      for (b, set) in sets.enumerated() {
        guard set.count == first.count else {
          throw .unequalPointCounts(first: first.count, index: b, count: set.count)
        }
        guard labels[b].count == set.count else {
          throw .labelCountMismatch(points: set.count, labels: labels[b].count)
        }
        for (i, p) in set.enumerated() {
          let index = b * first.count + i
          try check(p.x, p.y, "point \(index)")
          let label = labels[b][i]
          guard label == 0 || label == 1 else { throw .invalidLabel(index: index, label: label) }
          coords += [Float(p.x * sx), Float(p.y * sy)]
          flatLabels.append(label)
        }
      }
      points = (Tensor(shape: [sets.count, first.count, 2], storage: coords), flatLabels)
      batch = sets.count
    }

    var boxTensor: Tensor?
    if let boxes {
      guard !boxes.isEmpty else { throw .emptyBatch }
      if let batch, batch != boxes.count {
        throw .batchSizeMismatch(boxes: boxes.count, pointSets: batch)
      }
      var values: [Float] = []
      for (b, prompt) in boxes.enumerated() {
        let box = prompt.values
        try check(box[0], box[1], "box \(b)")
        try check(box[2], box[3], "box \(b)")
        guard box[2] >= box[0], box[3] >= box[1] else { throw .invertedBox(index: b, box: box) }
        values += [Float(box[0] * sx), Float(box[1] * sy), Float(box[2] * sx), Float(box[3] * sy)]
      }
      boxTensor = Tensor(shape: [boxes.count, 4], storage: values)
      batch = boxes.count
    }

    if let maskInputs {
      guard maskInputs.shape.first != 0 else { throw .emptyBatch }
      let side = PromptEncoder.maskInputSide
      let expected = [batch ?? maskInputs.shape.first ?? 1, 1, side, side]
      guard maskInputs.shape == expected else {
        throw .maskInputShape(found: maskInputs.shape, expected: expected)
      }
      guard maskInputs.storage.allSatisfy(\.isFinite) else { throw .nonFiniteMaskInput }
    }
    return promptEncoder(points: points, boxes: boxTensor, masks: maskInputs)
  }
}

/// How many of `values` are NaN or infinite; integer tests on the exponent bits vectorise.
private func nonFiniteCount(_ values: UnsafeBufferPointer<Float>) -> Int {
  var count = 0
  for v in values { count &+= v.bitPattern & 0x7F80_0000 == 0x7F80_0000 ? 1 : 0 }
  return count
}

extension SegmentAnythingModel {
  /// `picture` as this model's image encoder takes it: its official preprocessing at its
  /// input size.
  public func encoderInput(_ picture: RGBImage) -> Tensor {
    preprocess(
      picture, targetSize: imageEncoder.inputSize,
      normalization: architecture.pixelNormalization
    ).tensor
  }
}

extension Architecture {
  /// The normalisation the architecture's official preprocessing applies.
  public var pixelNormalization: PixelNormalization {
    switch self {
    case .efficientViT: .unitRange
    case .samViT: .byteRange
    }
  }
}
