import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// The prompt encoder and mask decoder of a small fixture model, loaded strictly.
struct DecoderModel {
  let promptEncoder: PromptEncoder
  let maskDecoder: MaskDecoder

  static func load(_ name: String, foldedTokenLimit: Int = 16) throws -> DecoderModel {
    // tiny-xl ships only as a PyTorch zip checkpoint.
    let all =
      name == "tiny-l"
      ? try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
      : try Checkpoint.load(contentsOf: Fixtures.url("models/\(name).pt"))
    let weights = all.filter {
      $0.key.hasPrefix("prompt_encoder.") || $0.key.hasPrefix("mask_decoder.")
    }
    let reader = WeightReader(weights, origin: "\(name) prompt_encoder + mask_decoder")
    let model = DecoderModel(
      promptEncoder: PromptEncoder(reader.root["prompt_encoder"]),
      maskDecoder: MaskDecoder(reader.root["mask_decoder"], foldedTokenLimit: foldedTokenLimit))
    try reader.finish()
    return model
  }

  /// The decoder's per-image state for `embedding`, with the no-mask cache (as the predictor
  /// prepares it).
  func prepare(_ embedding: Tensor) -> DecoderImage {
    maskDecoder.prepare(
      imageEmbedding: embedding, imagePE: promptEncoder.getDensePE(),
      noMaskEmbedding: promptEncoder.noMaskEmbedding)
  }

  /// Decodes `prompts` on `prepared` and through the official call (nothing cached, the
  /// direct order of the image-side work) and checks that they agree to float rounding:
  /// masks within 2e-5 relative L2, IoU predictions within 1e-5. Returns the masks' error.
  @discardableResult
  func expectCachedMatchesDirect(
    _ prepared: DecoderImage, embedding: Tensor, prompts: PromptEmbeddings, multimask: Bool,
    _ label: String
  ) -> Double {
    let cached = maskDecoder.decode(prepared, prompts: prompts, multimask: multimask)
    let direct = maskDecoder(
      imageEmbeddings: embedding, imagePE: promptEncoder.getDensePE(),
      sparsePromptEmbeddings: prompts.sparse, densePromptEmbeddings: prompts.dense,
      multimaskOutput: multimask)
    let error = relativeL2Error(cached.masks, direct.masks)
    #expect(error <= 2e-5, "\(label): differs by \(error)")
    #expect(maxAbsDifference(cached.iouPredictions, direct.iouPredictions) <= 1e-5, "\(label)")
    return error
  }
}

/// One prompt case of a golden `.json`, with coordinates mapped into the 1024 prompt frame the
/// way the official predictor's `apply_coords` does (float64 scaling, then float32).
struct GoldenPromptCase {
  let name: String
  let points: [[Double]]?
  let labels: [Int]?
  let boxes: [[Double]]?
  let multimask: Bool
  let maskInputFrom: String?

  static func load(_ json: [String: Any]) throws -> [GoldenPromptCase] {
    let cases = try #require(json["cases"] as? [[String: Any]])
    return try cases.map { c in
      let name = try #require(c["name"] as? String)
      var boxes = (c["boxes"] as? [[Double]])
      if let box = c["box"] as? [Double] { boxes = [box] }
      return GoldenPromptCase(
        name: name, points: c["points"] as? [[Double]], labels: c["labels"] as? [Int],
        boxes: boxes, multimask: try #require(c["multimask"] as? Bool),
        maskInputFrom: c["mask_input_from"] as? String)
    }
  }
}

struct GoldenImage {
  let golden: [String: Tensor]
  let originalSize: (height: Int, width: Int)
  let inputSize: (height: Int, width: Int)
  let cases: [GoldenPromptCase]

  init(_ name: String) throws {
    golden = try Fixtures.golden(name)
    let json = try #require(
      JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("golden/\(name).json")))
        as? [String: Any])
    let original = try #require(json["original_size"] as? [Int])
    let input = try #require(json["input_size"] as? [Int])
    originalSize = (original[0], original[1])
    inputSize = (input[0], input[1])
    cases = try GoldenPromptCase.load(json)
  }

  func frame(_ x: Double, _ y: Double) -> (Float, Float) {
    (
      Float(x * (Double(inputSize.width) / Double(originalSize.width))),
      Float(y * (Double(inputSize.height) / Double(originalSize.height)))
    )
  }

  /// The official prompt-encoder inputs of a case (batch = number of boxes, or 1).
  func prompts(_ c: GoldenPromptCase) throws -> (
    points: (coords: Tensor, labels: [Int])?, boxes: Tensor?, masks: Tensor?
  ) {
    var points: (coords: Tensor, labels: [Int])?
    if let p = c.points {
      let coords = p.flatMap { pt -> [Float] in
        let (x, y) = frame(pt[0], pt[1])
        return [x, y]
      }
      points = (Tensor(shape: [1, p.count, 2], storage: coords), try #require(c.labels))
    }
    var boxes: Tensor?
    if let b = c.boxes {
      let values = b.flatMap { box -> [Float] in
        let (x0, y0) = frame(box[0], box[1])
        let (x1, y1) = frame(box[2], box[3])
        return [x0, y0, x1, y1]
      }
      boxes = Tensor(shape: [b.count, 4], storage: values)
    }
    var masks: Tensor?
    if let source = c.maskInputFrom {
      // The official example feeds back the low-res logits of the best-scoring mask.
      let iou = try #require(golden["\(source).iou_predictions"])
      let logits = try #require(golden["\(source).low_res_logits"])
      let best = iou.storage.indices.max { iou.storage[$0] < iou.storage[$1] }!
      masks = slice(logits, axis: 0, range: best..<(best + 1)).reshaped([1, 1, 256, 256])
    }
    return (points, boxes, masks)
  }
}

/// Fraction of pixels where `a > 0` and `b > 0` agree.
func thresholdAgreement(_ a: Tensor, _ b: Tensor) -> Double {
  precondition(a.shape == b.shape)
  var same = 0
  for i in 0..<a.count where (a.storage[i] > 0) == (b.storage[i] > 0) { same += 1 }
  return Double(same) / Double(a.count)
}

@Suite("Prompt encoder and mask decoder against the official golden outputs")
struct DecoderGoldenTests {
  static let iouTolerance: Float = 1e-3
  static let logitTolerance = 1e-3
  static let agreement = 0.999

  static let files = ["tiny-l", "tiny-xl"].flatMap { m in
    ["astronaut", "coffee", "chelsea"].map { "\(m)__\($0)" }
  }

  @Test(arguments: files)
  func everyPromptCaseMatches(file: String) throws {
    let model = try DecoderModel.load(String(file.prefix { $0 != "_" }))
    let image = try GoldenImage(file)
    let embedding = try #require(image.golden["embedding"])
    if let densePE = image.golden["dense_pe"] {
      let error = maxAbsDifference(model.promptEncoder.getDensePE(), densePE)
      print("golden \(file) dense_pe: max |Δ| \(error)")
      #expect(error <= 1e-5, "\(file) dense PE differs by up to \(error)")
    }
    let prepared = model.prepare(embedding)
    #expect(image.cases.count == 6)
    for c in image.cases {
      let inputs = try image.prompts(c)
      let prompts = model.promptEncoder(
        points: inputs.points, boxes: inputs.boxes, masks: inputs.masks)
      let out = model.maskDecoder.decode(prepared, prompts: prompts, multimask: c.multimask)
      try compare(out, case: c, image: image, file: file, label: "cached")
    }
  }

  /// A prompt's results do not depend on the number of threads, bit for bit: the decoder's
  /// per-prompt products are split-invariant (`SmallGEMM`) and its slices of image tokens and
  /// softmax groups are fixed. Everything mode relies on this when it decodes prompts side by
  /// side on single-threaded cores.
  @Test(arguments: ["tiny-l__coffee", "tiny-xl__chelsea"])
  func resultsDoNotDependOnTheThreadCount(file: String) throws {
    let model = try DecoderModel.load(String(file.prefix { $0 != "_" }))
    let image = try GoldenImage(file)
    let embedding = try #require(image.golden["embedding"])
    let prepared = model.prepare(embedding)
    for c in image.cases {
      let inputs = try image.prompts(c)
      let prompts = model.promptEncoder(
        points: inputs.points, boxes: inputs.boxes, masks: inputs.masks)
      let threaded = model.maskDecoder.decode(prepared, prompts: prompts, multimask: c.multimask)
      let single = ComputeThreads.limited(to: 1) {
        model.maskDecoder.decode(prepared, prompts: prompts, multimask: c.multimask)
      }
      #expect(threaded.masks.storage == single.masks.storage, "\(file) \(c.name): masks differ")
      #expect(threaded.iouPredictions.storage == single.iouPredictions.storage)
    }
  }

  /// The official call with nothing cached per image and no folded projections: the plain
  /// operation order, checked against the same goldens.
  @Test(arguments: ["tiny-l__coffee", "tiny-xl__chelsea"])
  func unfoldedUncachedPathMatches(file: String) throws {
    let model = try DecoderModel.load(String(file.prefix { $0 != "_" }), foldedTokenLimit: 0)
    let image = try GoldenImage(file)
    let embedding = try #require(image.golden["embedding"])
    for c in image.cases {
      let inputs = try image.prompts(c)
      let prompts = model.promptEncoder(
        points: inputs.points, boxes: inputs.boxes, masks: inputs.masks)
      let out = model.maskDecoder(
        imageEmbeddings: embedding, imagePE: model.promptEncoder.getDensePE(),
        sparsePromptEmbeddings: prompts.sparse, densePromptEmbeddings: prompts.dense,
        multimaskOutput: c.multimask)
      try compare(out, case: c, image: image, file: file, label: "unfolded")
    }
  }

  /// The per-image fold of the first upscaling convolution (`UpscaleFold`, used by every
  /// prompt without a mask input) against the direct convolution of the transformer's output,
  /// on the same model and prompts: equal up to float rounding, far inside the golden tolerance.
  @Test(arguments: ["tiny-l__coffee", "tiny-xl__astronaut"])
  func foldedUpscalingMatchesTheDirectConvolution(file: String) throws {
    let model = try DecoderModel.load(String(file.prefix { $0 != "_" }))
    let image = try GoldenImage(file)
    let embedding = try #require(image.golden["embedding"])
    let prepared = model.prepare(embedding)
    #expect(prepared.cachesNoMaskProjections)
    var compared = 0
    for c in image.cases where c.maskInputFrom == nil {
      let inputs = try image.prompts(c)
      let prompts = model.promptEncoder(
        points: inputs.points, boxes: inputs.boxes, masks: inputs.masks)
      let error = model.expectCachedMatchesDirect(
        prepared, embedding: embedding, prompts: prompts, multimask: c.multimask,
        "\(file) \(c.name): folded upscaling")
      print("fold \(file) \(c.name): low-res rel L2 folded vs direct \(error)")
      compared += 1
    }
    #expect(compared >= 4)
  }

  /// The per-image basis (`SecondBlockBasis`) against the direct order for prompts of up to
  /// the 16 tokens the folded path takes (the golden cases stop at 9): seeded points with
  /// mixed labels, with and without a box, in the 1024-pixel input frame.
  @Test(arguments: ["tiny-l__astronaut", "tiny-xl__coffee"])
  func basisMatchesTheDirectOrderForManyTokens(file: String) throws {
    let model = try DecoderModel.load(String(file.prefix { $0 != "_" }))
    let image = try GoldenImage(file)
    let embedding = try #require(image.golden["embedding"])
    let prepared = model.prepare(embedding)
    // (points, box): 5 output tokens + points + (box corners or one padding point) ≤ 16.
    for (count, withBox) in [(1, true), (4, false), (7, true), (9, true), (10, false)] {
      // Spread over the frame (a fixed scramble, no generator needed).
      let coords = (0..<(2 * count)).map { Float(($0 * 389 + 97 * count) % 1021) + 0.5 }
      let labels = (0..<count).map { $0 % 3 == 2 ? 0 : 1 }
      let box = withBox ? Tensor(shape: [1, 4], storage: [100, 150, 700, 900]) : nil
      let prompts = model.promptEncoder(
        points: (Tensor(shape: [1, count, 2], storage: coords), labels), boxes: box, masks: nil)
      for multimask in [true, false] {
        model.expectCachedMatchesDirect(
          prepared, embedding: embedding, prompts: prompts, multimask: multimask,
          "\(file) \(count) points, box \(withBox)")
      }
    }
  }

  private func compare(
    _ out: MaskDecoderOutput, case c: GoldenPromptCase, image: GoldenImage, file: String,
    label: String
  ) throws {
    let g = image.golden
    // Single-prompt goldens drop the batch dimension.
    let batched = c.name == "batch_boxes"
    let expectedIoU = try #require(g["\(c.name).iou_predictions"])
    let expectedLowRes = try #require(g["\(c.name).low_res_logits"])
    let iou = batched ? out.iouPredictions : out.iouPredictions.reshaped([-1])
    let lowRes = batched ? out.masks : out.masks.reshaped(Array(out.masks.shape.dropFirst()))
    try #require(
      iou.shape == expectedIoU.shape, "\(file) \(c.name): iou \(iou.shape) vs \(expectedIoU.shape)")
    try #require(
      lowRes.shape == expectedLowRes.shape,
      "\(file) \(c.name): logits \(lowRes.shape) vs \(expectedLowRes.shape)")
    let iouError = maxAbsDifference(iou, expectedIoU)
    let lowResError = relativeL2Error(lowRes, expectedLowRes)
    var line =
      "golden \(file) \(c.name) [\(label)]: iou max |Δ| \(iouError), low-res rel L2 \(lowResError)"
    #expect(
      iouError <= Self.iouTolerance, "\(file) \(c.name) [\(label)]: iou differs by \(iouError)")
    #expect(
      lowResError <= Self.logitTolerance,
      "\(file) \(c.name) [\(label)]: low-res rel L2 \(lowResError)")
    if let expectedMasks = g["\(c.name).mask_logits"] {
      let masks = MaskPostprocessing.upscale(
        out.masks, inputSize: image.inputSize, originalSize: image.originalSize)
      let actual = masks.reshaped(Array(masks.shape.dropFirst()))
      try #require(
        actual.shape == expectedMasks.shape,
        "\(file) \(c.name): masks \(actual.shape) vs \(expectedMasks.shape)")
      let error = relativeL2Error(actual, expectedMasks)
      let agree = thresholdAgreement(actual, expectedMasks)
      line += ", mask rel L2 \(error), thresholded agreement \(agree)"
      #expect(error <= Self.logitTolerance, "\(file) \(c.name) [\(label)]: mask rel L2 \(error)")
      #expect(agree >= Self.agreement, "\(file) \(c.name) [\(label)]: masks agree on \(agree)")
    }
    print(line)
  }
}
