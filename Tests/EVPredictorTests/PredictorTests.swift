import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import EVTensor
import Foundation
import TestSupport
import Testing

/// Predictors over the fixture models' prompt encoder and mask decoder (no image encoder).
enum DecoderOnly {
  static func predictor(_ model: String) throws -> SamPredictor {
    let all =
      model == "tiny-l"
      ? try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
      : try Checkpoint.load(contentsOf: Fixtures.url("models/\(model).pt"))
    let reader = WeightReader(
      all.filter { $0.key.hasPrefix("prompt_encoder.") || $0.key.hasPrefix("mask_decoder.") },
      origin: model)
    let predictor = SamPredictor(
      promptEncoder: PromptEncoder(reader.root["prompt_encoder"]),
      maskDecoder: MaskDecoder(reader.root["mask_decoder"]),
      encoderInputSize: model == "tiny-l" ? 512 : 1024)
    try reader.finish()
    return predictor
  }
}

/// A golden file's prompt cases, in original-image pixels as the official predictor takes them.
struct GoldenCases {
  struct Case {
    let name: String
    let points: [Point]?
    let labels: [Int]?
    let boxes: [Box]?
    let multimask: Bool
    let maskInputFrom: String?
  }

  let tensors: [String: Tensor]
  let originalSize: (height: Int, width: Int)
  let image: String
  let cases: [Case]

  /// `folder`: `golden` for EfficientViT-SAM's files, `sam/golden` for SAM's ViT.
  init(_ file: String, folder: String = "golden") throws {
    tensors = try SafeTensors.read(contentsOf: Fixtures.url("\(folder)/\(file).safetensors"))
    let json = try #require(
      JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("\(folder)/\(file).json")))
        as? [String: Any])
    let size = try #require(json["original_size"] as? [Int])
    originalSize = (size[0], size[1])
    image = try #require(json["image"] as? String)
    cases = try #require(json["cases"] as? [[String: Any]]).map { c in
      var boxes = try (c["boxes"] as? [[Double]])?.map { try Box(values: $0) }
      if let box = c["box"] as? [Double] { boxes = [try Box(values: box)] }
      return Case(
        name: try #require(c["name"] as? String),
        points: (c["points"] as? [[Double]])?.map { Point(x: $0[0], y: $0[1]) },
        labels: c["labels"] as? [Int], boxes: boxes,
        multimask: try #require(c["multimask"] as? Bool),
        maskInputFrom: c["mask_input_from"] as? String)
    }
  }

  /// The official example's refinement input: low-res logits of the best-scoring mask.
  func maskInput(from source: String) throws -> Tensor {
    let iou = try #require(tensors["\(source).iou_predictions"]).storage
    let logits = try #require(tensors["\(source).low_res_logits"])
    let best = iou.indices.max { iou[$0] < iou[$1] }!
    return slice(logits, axis: 0, range: best..<(best + 1))
  }

  /// Runs every case through `predictor` and checks it against the goldens.
  func check(_ predictor: SamPredictor, label: String) throws {
    for c in cases {
      if c.name == "batch_boxes" {
        let out = try predictor.predictBatch(boxes: c.boxes, multimask: c.multimask)
        try compare(
          c.name, label: label, iou: out.iouPredictions, lowRes: out.lowResLogits,
          masks: out.maskLogits)
        continue
      }
      let out = try predictor.predict(
        points: c.points, labels: c.labels, box: c.boxes?.first,
        maskInput: try c.maskInputFrom.map { try maskInput(from: $0) }, multimask: c.multimask)
      #expect(out.masks == BinaryMasks(logits: out.maskLogits))
      #expect(
        out.masks.shape == [out.iouPredictions.count, originalSize.height, originalSize.width])
      try compare(
        c.name, label: label,
        iou: Tensor(shape: [out.iouPredictions.count], storage: out.iouPredictions),
        lowRes: out.lowResLogits, masks: out.maskLogits)
    }
  }

  private func compare(_ name: String, label: String, iou: Tensor, lowRes: Tensor, masks: Tensor?)
    throws
  {
    let expectedIoU = try #require(tensors["\(name).iou_predictions"])
    let expectedLowRes = try #require(tensors["\(name).low_res_logits"])
    try #require(iou.shape == expectedIoU.shape && lowRes.shape == expectedLowRes.shape)
    let iouError = maxAbsDifference(iou, expectedIoU)
    let lowResError = relativeL2Error(lowRes, expectedLowRes)
    var line = "predictor \(label) \(name): iou max |Δ| \(iouError), low-res rel L2 \(lowResError)"
    #expect(iouError <= 1e-3, "\(label) \(name): iou differs by \(iouError)")
    #expect(lowResError <= 1e-3, "\(label) \(name): low-res rel L2 \(lowResError)")
    if let expected = tensors["\(name).mask_logits"] {
      let actual = try #require(masks)
      try #require(
        actual.shape == expected.shape, "\(label) \(name): \(actual.shape) vs \(expected.shape)")
      let error = relativeL2Error(actual, expected)
      var same = 0
      for i in 0..<actual.count where (actual.storage[i] > 0) == (expected.storage[i] > 0) {
        same += 1
      }
      let agreement = Double(same) / Double(actual.count)
      line += ", mask rel L2 \(error), thresholded agreement \(agreement)"
      #expect(error <= 1e-3, "\(label) \(name): mask rel L2 \(error)")
      #expect(agreement >= 0.999, "\(label) \(name): thresholded masks agree on \(agreement)")
    }
    print(line)
  }
}

@Suite("Predictor against the official golden outputs")
struct PredictorGoldenTests {
  @Test(arguments: ["tiny-l__coffee", "tiny-l__chelsea", "tiny-xl__astronaut", "tiny-xl__chelsea"])
  func fromGoldenEmbedding(file: String) throws {
    let golden = try GoldenCases(file)
    let predictor = try DecoderOnly.predictor(String(file.prefix { $0 != "_" }))
    try predictor.setEmbedding(
      try #require(golden.tensors["embedding"]), originalSize: golden.originalSize)
    try golden.check(predictor, label: file)
  }

  /// The whole pipeline: image file → preprocessing → image encoder → prompts → masks.
  @Test(arguments: ["tiny-l__coffee", "tiny-xl__chelsea"])
  func fromImageFile(file: String) throws {
    let model = String(file.prefix { $0 != "_" })
    let golden = try GoldenCases(file)
    let sam = try EfficientViTSAM.load(
      config: ModelConfig.load(json: Fixtures.url("models/\(model).json")),
      checkpoint: Fixtures.url(
        model == "tiny-l" ? "models/tiny-l.safetensors" : "models/\(model).pt"))
    let predictor = SamPredictor(model: sam)
    try predictor.setImage(RGBImage(contentsOf: Fixtures.url("images/\(golden.image)")))
    #expect(predictor.originalSize! == golden.originalSize)
    try golden.check(predictor, label: "\(file) end-to-end")
  }
}

@Suite("SAM ViT predictor against segment-anything's golden outputs")
struct SamViTPredictorGoldenTests {
  static func model() throws -> SegmentAnythingModel {
    let architecture = try Architecture.load(json: Fixtures.url("sam/models/tiny-sam-vit.json"))
    return try SegmentAnythingModel.load(
      architecture: architecture, checkpoint: Fixtures.url("sam/models/tiny-sam-vit.pth"))
  }

  /// Image file → SAM's preprocessing → ViT → prompts → masks, for every prompt case.
  @Test(arguments: ["tiny-sam-vit__astronaut", "tiny-sam-vit__coffee"])
  func fromImageFile(file: String) throws {
    let golden = try GoldenCases(file, folder: "sam/golden")
    let predictor = SamPredictor(model: try Self.model())
    #expect(predictor.pixelNormalization == .byteRange)
    #expect(predictor.encoderInputSize == 1024)
    try predictor.setImage(RGBImage(contentsOf: Fixtures.url("images/\(golden.image)")))
    let embeddingError = relativeL2Error(
      try #require(predictor.imageEmbedding), try #require(golden.tensors["embedding"]))
    #expect(embeddingError <= 1e-4, "\(file): embedding rel L2 \(embeddingError)")
    try golden.check(predictor, label: "\(file) end-to-end")
  }
}

@Suite("Predictor input validation")
struct PredictorValidationTests {
  static func ready() throws -> SamPredictor {
    let predictor = try DecoderOnly.predictor("tiny-l")
    try predictor.setEmbedding(Tensor(zeros: [1, 256, 64, 64]), originalSize: (300, 400))
    return predictor
  }

  /// Runs `body` and returns the predictor error it throws (nil if it does not throw).
  static func error(_ body: () throws -> Void) -> PredictorError? {
    do {
      try body()
      return nil
    } catch let error as PredictorError {
      return error
    } catch {
      Issue.record("not a PredictorError: \(error)")
      return nil
    }
  }

  @Test func refusesToPredictWithoutAnImage() throws {
    let predictor = try DecoderOnly.predictor("tiny-l")
    #expect(!predictor.isImageSet)
    #expect(
      Self.error { _ = try predictor.predict(points: [Point(x: 1, y: 1)], labels: [1]) }
        == .noImageSet)
    try predictor.setEmbedding(Tensor(zeros: [1, 256, 64, 64]), originalSize: (10, 10))
    #expect(predictor.isImageSet)
    predictor.resetImage()
    #expect(
      Self.error { _ = try predictor.predictBatch(boxes: [try Box(values: [0, 0, 1, 1])]) }
        == .noImageSet)
  }

  @Test func refusesImagesWithoutAnEncoderAndBadEmbeddings() throws {
    let predictor = try DecoderOnly.predictor("tiny-l")
    let image = RGBImage(width: 4, height: 3, color: RGBColor(1, 2, 3))
    #expect(Self.error { try predictor.setImage(image) } == .noImageEncoder)
    #expect(
      Self.error {
        try predictor.setEmbedding(Tensor(zeros: [1, 256, 32, 32]), originalSize: (8, 8))
      }
        == .embeddingShape([1, 256, 32, 32]))
    #expect(
      Self.error {
        try predictor.setEmbedding(Tensor(zeros: [1, 256, 64, 64]), originalSize: (0, 8))
      }
        == .emptyImage(height: 0, width: 8))
    #expect(!predictor.isImageSet)
  }

  @Test func refusesNonFiniteCoordinates() throws {
    let p = try Self.ready()
    #expect(
      Self.error {
        _ = try p.predict(points: [Point(x: 1, y: 1), Point(x: .nan, y: 2)], labels: [1, 1])
      }
        == .nonFiniteCoordinate(what: "point 1"))
    #expect(
      Self.error { _ = try p.predict(box: try Box(values: [0, 0, .infinity, 5])) }
        == .nonFiniteCoordinate(what: "box 0"))
    #expect(
      Self.error {
        _ = try p.predictBatch(boxes: [
          try Box(values: [0, 0, 5, 5]), try Box(values: [0, -.infinity, 5, 5]),
        ])
      }
        == .nonFiniteCoordinate(what: "box 1"))
  }

  @Test func refusesInvertedAndMalformedBoxes() throws {
    let p = try Self.ready()
    #expect(
      Self.error { _ = try p.predict(box: try Box(values: [10, 0, 5, 5])) }
        == .invertedBox(index: 0, box: [10, 0, 5, 5]))
    #expect(
      Self.error { _ = try p.predict(box: try Box(values: [0, 10, 5, 5])) }
        == .invertedBox(index: 0, box: [0, 10, 5, 5]))
    #expect(
      Self.error { _ = try p.predict(box: try Box(values: [0, 0, 5])) }
        == .boxValueCount(index: 0, count: 3))
    // A degenerate (zero-area) box is valid, as in the official code.
    #expect(
      Self.error { _ = try p.predict(box: try Box(values: [5, 5, 5, 5]), multimask: false) } == nil)
  }

  @Test func refusesBadLabels() throws {
    let p = try Self.ready()
    #expect(
      Self.error {
        _ = try p.predict(points: [Point(x: 1, y: 1), Point(x: 2, y: 2)], labels: [1, 2])
      }
        == .invalidLabel(index: 1, label: 2))
    #expect(
      Self.error { _ = try p.predict(points: [Point(x: 1, y: 1)], labels: [-1]) }
        == .invalidLabel(index: 0, label: -1))
    #expect(
      Self.error { _ = try p.predict(points: [Point(x: 1, y: 1), Point(x: 2, y: 2)], labels: [1]) }
        == .labelCountMismatch(points: 2, labels: 1))
    #expect(Self.error { _ = try p.predict(points: [Point(x: 1, y: 1)]) } == .pointsWithoutLabels)
    #expect(Self.error { _ = try p.predict(labels: [1]) } == .labelsWithoutPoints)
  }

  @Test func refusesBadMaskInputs() throws {
    let p = try Self.ready()
    #expect(
      Self.error {
        _ = try p.predict(
          points: [Point(x: 1, y: 1)], labels: [1], maskInput: Tensor(zeros: [1, 128, 128]))
      }
        == .maskInputShape(found: [1, 128, 128], expected: [1, 256, 256]))
    var bad = Tensor(zeros: [1, 256, 256])
    bad[0, 3, 4] = .nan
    #expect(
      Self.error { _ = try p.predict(points: [Point(x: 1, y: 1)], labels: [1], maskInput: bad) }
        == .nonFiniteMaskInput)
    #expect(
      Self.error {
        _ = try p.predictBatch(
          boxes: [try Box(values: [0, 0, 1, 1]), try Box(values: [0, 0, 2, 2])],
          maskInputs: Tensor(zeros: [1, 1, 256, 256]))
      }
        == .maskInputShape(found: [1, 1, 256, 256], expected: [2, 1, 256, 256]))
  }

  @Test func refusesInconsistentBatches() throws {
    let p = try Self.ready()
    #expect(Self.error { _ = try p.predictBatch(boxes: []) } == .emptyBatch)
    #expect(Self.error { _ = try p.predictBatch(pointSets: [], labelSets: []) } == .emptyBatch)
    #expect(
      Self.error {
        _ = try p.predictBatch(
          pointSets: [[Point(x: 1, y: 1)], [Point(x: 2, y: 2), Point(x: 3, y: 3)]],
          labelSets: [[1], [1, 0]])
      }
        == .unequalPointCounts(first: 1, index: 1, count: 2))
    #expect(
      Self.error {
        _ = try p.predictBatch(
          boxes: [try Box(values: [0, 0, 1, 1])],
          pointSets: [[Point(x: 1, y: 1)], [Point(x: 2, y: 2)]], labelSets: [[1], [1]])
      }
        == .batchSizeMismatch(boxes: 1, pointSets: 2))
  }

  @Test func errorMessagesAreOneLine() {
    let errors: [PredictorError] = [
      .noImageSet, .noImageEncoder, .embeddingShape([1, 2]), .emptyImage(height: 0, width: 1),
      .nonFiniteCoordinate(what: "point 0"), .boxValueCount(index: 0, count: 3),
      .invertedBox(index: 0, box: [2, 0, 1, 1]), .invalidLabel(index: 0, label: 5),
      .pointsWithoutLabels, .labelsWithoutPoints, .labelCountMismatch(points: 2, labels: 1),
      .maskInputShape(found: [2], expected: [1, 256, 256]), .nonFiniteMaskInput, .emptyBatch,
      .batchSizeMismatch(boxes: 1, pointSets: 2), .unequalPointCounts(first: 1, index: 1, count: 2),
      .nonFiniteEmbedding(count: 3), .nonFiniteOutput(what: "IoU predictions", count: 1),
    ]
    for e in errors {
      #expect(!e.description.isEmpty && !e.description.contains("\n"), "\(e)")
    }
  }

  /// Batched prompts give the same masks as the same prompts one at a time.
  @Test func batchesMatchSinglePrompts() throws {
    let golden = try GoldenCases("tiny-l__astronaut")
    let p = try DecoderOnly.predictor("tiny-l")
    try p.setEmbedding(try #require(golden.tensors["embedding"]), originalSize: golden.originalSize)
    let sets: [[Point]] = [
      [Point(x: 100, y: 120), Point(x: 300, y: 310)], [Point(x: 50, y: 400), Point(x: 420, y: 90)],
      [Point(x: 256, y: 256), Point(x: 10, y: 10)],
    ]
    let labels = [[1, 0], [1, 1], [0, 1]]
    let batch = try p.predictBatch(pointSets: sets, labelSets: labels, multimask: false)
    #expect(batch.maskLogits!.shape == [3, 1, 512, 512])
    for b in 0..<3 {
      let single = try p.predict(points: sets[b], labels: labels[b], multimask: false)
      let lowRes = slice(batch.lowResLogits, axis: 0, range: b..<(b + 1)).reshaped([1, 256, 256])
      #expect(relativeL2Error(lowRes, single.lowResLogits) <= 1e-6)
      #expect(abs(batch.iouPredictions[b, 0] - single.iouPredictions[0]) <= 1e-6)
    }
  }
}
