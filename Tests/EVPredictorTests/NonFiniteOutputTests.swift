import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import EVTensor
import Foundation
import TestSupport
import Testing

/// Broken weights that slip past loading (built in memory, or overflowing at run time) must
/// make the predictor throw, not return empty masks under finite-looking scores.
@Suite struct NonFiniteOutputTests {
  /// The tiny-l decoder with `poison` applied to its weights, bypassing the load-time check as
  /// weights built in memory do.
  static func predictor(poison: (inout [String: Tensor]) -> Void) throws -> SamPredictor {
    var weights = try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
      .filter { $0.key.hasPrefix("prompt_encoder.") || $0.key.hasPrefix("mask_decoder.") }
    poison(&weights)
    let reader = WeightReader(weights, origin: "poisoned tiny-l")
    let predictor = SamPredictor(
      promptEncoder: PromptEncoder(reader.root["prompt_encoder"]),
      maskDecoder: MaskDecoder(reader.root["mask_decoder"]), encoderInputSize: 512)
    try reader.finish()
    return predictor
  }

  static func embedding() -> Tensor {
    Tensor(shape: [1, 256, 64, 64], storage: (0..<(256 * 64 * 64)).map { Float($0 % 7) * 0.1 })
  }

  @Test func nonFiniteEmbeddingIsRefused() throws {
    let predictor = try Self.predictor { _ in }
    var embedding = Self.embedding()
    embedding.storage[5] = .nan
    embedding.storage[70_000] = -.infinity
    let error = PredictorValidationTests.error {
      try predictor.setEmbedding(embedding, originalSize: (300, 400))
    }
    #expect(error == .nonFiniteEmbedding(count: 2))
    #expect(error?.description.contains("2 non-finite values (NaN/inf)") == true)
    #expect(!predictor.isImageSet)
  }

  /// NaN in the hypernetworks' last layers leaves the IoU head finite: the masks alone are
  /// garbage, which the scan of the low-res logits catches.
  @Test func nonFiniteMaskLogitsAreRefused() throws {
    let predictor = try Self.predictor { weights in
      for i in 0..<4 {
        weights["mask_decoder.output_hypernetworks_mlps.\(i).layers.2.bias"]?.storage[0] = .nan
      }
    }
    try predictor.setEmbedding(Self.embedding(), originalSize: (300, 400))
    let error = PredictorValidationTests.error {
      _ = try predictor.predict(points: [Point(x: 100, y: 100)], labels: [1])
    }
    guard case .nonFiniteOutput(let what, let count)? = error else {
      Issue.record("expected nonFiniteOutput, got \(String(describing: error))")
      return
    }
    #expect(what == "low-res mask logits")
    #expect(count > 0)
    #expect(error?.description.contains("non-finite low-res mask logits (NaN/inf)") == true)
  }

  @Test func nonFiniteIoUPredictionsAreRefused() throws {
    let predictor = try Self.predictor { weights in
      weights["mask_decoder.iou_prediction_head.layers.2.bias"]?.storage[1] = .infinity
    }
    try predictor.setEmbedding(Self.embedding(), originalSize: (300, 400))
    let error = PredictorValidationTests.error {
      _ = try predictor.predictBatch(
        boxes: [try Box(values: [10, 10, 200, 150])], multimask: true, upscale: false)
    }
    #expect(error == .nonFiniteOutput(what: "IoU predictions", count: 1))
  }

  /// Prompts the decoder skips below an IoU cut get -∞ logits by design (everything mode);
  /// those are not an error.
  @Test func skippedPromptsKeepTheirInfiniteLogits() throws {
    let predictor = try Self.predictor { _ in }
    try predictor.setEmbedding(Self.embedding(), originalSize: (300, 400))
    let batch = try predictor.predictBatch(
      pointSets: [[Point(x: 50, y: 60)], [Point(x: 250, y: 200)]], labelSets: [[1], [1]],
      multimask: true,
      upscale: false, skipMasksAtOrBelowIoU: .greatestFiniteMagnitude)
    #expect(batch.lowResLogits.storage.allSatisfy { $0 == -.infinity })
    #expect(batch.iouPredictions.storage.allSatisfy { $0.isFinite })
  }
}
