import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// `EfficientViTSAM.load` compares the checkpoint with the architecture before decoding it and
/// refuses non-finite weights.
@Suite struct CheckpointLoadingTests {
  /// The check made from the file's index finds exactly what a full load followed by
  /// `WeightReader.finish()` finds, in the same order.
  @Test func earlyCheckReportsWhatAFullLoadWould() throws {
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    let other = try Fixtures.url("models/tiny-xl.pt")
    let early = #expect(throws: CheckpointError.self) {
      try EfficientViTSAM.load(config: config, checkpoint: other)
    }
    let reader = WeightReader(try Checkpoint.load(contentsOf: other), origin: other.path)
    _ = EfficientViTSAM(config: config, reader: reader)
    let full = #expect(throws: CheckpointError.self) { try reader.finish() }
    guard case .verificationFailed(let file, let problems)? = early else {
      Issue.record("expected verificationFailed, got \(String(describing: early))")
      return
    }
    #expect(file == other.path)
    #expect(!problems.isEmpty)
    #expect(early == full)
  }

  @Test func nonFiniteWeightsAreRefusedByName() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evmodel-nonfinite-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    var weights = try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
    let key = "mask_decoder.iou_token.weight"
    try #require(weights[key] != nil)
    weights[key]?.storage[0] = .nan
    weights[key]?.storage[10] = .infinity
    weights[key]?.storage[20] = -.infinity
    let url = dir.appendingPathComponent("nan.safetensors")
    try SafeTensors.write(weights, to: url)

    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    let error = #expect(throws: CheckpointError.self) {
      try EfficientViTSAM.load(config: config, checkpoint: url)
    }
    #expect(error == .nonFiniteValues(file: url.path, key: key, count: 3))
    #expect(
      error?.description
        == "\(url.path): checkpoint tensor 'mask_decoder.iou_token.weight' has 3 non-finite values (NaN/inf)"
    )
  }
}
