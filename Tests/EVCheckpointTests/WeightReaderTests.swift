import EVCheckpoint
import EVTensor
import Foundation
import TestSupport
import Testing

@Suite struct WeightReaderTests {
  /// A toy model: a conv with BatchNorm and a linear head, declared through scopes.
  static func build(_ reader: WeightReader) -> [Tensor] {
    let stage = reader.root["backbone"]["stages"][0]
    return [
      stage["conv"].take("weight", shape: [4, 3, 3, 3]),
      stage["norm"].take("weight", shape: [4]),
      stage["norm"].take("bias", shape: [4]),
      stage["norm"].take("running_mean", shape: [4], buffer: true),
      stage["norm"].take("running_var", shape: [4], buffer: true),
      stage["norm"].take("num_batches_tracked", shape: [], buffer: true, dtype: .int64),
      reader.root["head"].take("weight", shape: [10, 4]),
      reader.root["head"].take("bias", shape: [10]),
    ]
  }

  static func complete() -> [String: Tensor] {
    let declaring = WeightReader.declaringOnly()
    _ = build(declaring)
    var out: [String: Tensor] = [:]
    for (i, d) in declaring.declared.enumerated() {
      out[d.key] = Tensor(repeating: Float(i + 1), shape: d.shape)
    }
    return out
  }

  @Test func declaringOnlyListsKeysAndCountsParameters() throws {
    let reader = WeightReader.declaringOnly()
    let tensors = Self.build(reader)
    #expect(tensors.allSatisfy { $0.storage.allSatisfy { $0 == 0 } })
    #expect(
      reader.declared.map(\.key) == [
        "backbone.stages.0.conv.weight", "backbone.stages.0.norm.weight",
        "backbone.stages.0.norm.bias",
        "backbone.stages.0.norm.running_mean", "backbone.stages.0.norm.running_var",
        "backbone.stages.0.norm.num_batches_tracked", "head.weight", "head.bias",
      ])
    #expect(reader.declared.first { $0.key.hasSuffix("num_batches_tracked") }?.dtype == .int64)
    #expect(reader.parameterCount() == 108 + 4 + 4 + 40 + 10)
    #expect(reader.parameterCount(prefix: "head.") == 50)
    try reader.finish()
  }

  @Test func completeCheckpointPassesAndHandsOutItsTensors() throws {
    let weights = Self.complete()
    let reader = WeightReader(weights, origin: "toy.pt")
    let tensors = Self.build(reader)
    try reader.finish()
    #expect(tensors[0] == weights["backbone.stages.0.conv.weight"])
    #expect(tensors[7] == weights["head.bias"])
  }

  @Test func finishReportsEveryProblemAtOnce() throws {
    var weights = Self.complete()
    weights["head.bias"] = nil
    weights["backbone.stages.0.norm.running_var"] = nil
    weights["head.weight"] = Tensor(zeros: [4, 10])
    weights["backbone.stages.0.conv.weight"] = Tensor(zeros: [4, 3, 1, 1])
    weights["module.extra.weight"] = Tensor(zeros: [7])
    let reader = WeightReader(weights, origin: "/models/toy.pt")
    let tensors = Self.build(reader)
    // Problems do not stop construction: wrong or missing tensors come back as zeros.
    #expect(tensors[0] == Tensor(zeros: [4, 3, 3, 3]))
    #expect(tensors[6].shape == [10, 4])

    let error = #expect(throws: CheckpointError.self) { try reader.finish() }
    guard case .verificationFailed(let file, let problems)? = error else {
      Issue.record("expected verificationFailed, got \(String(describing: error))")
      return
    }
    #expect(file == "/models/toy.pt")
    #expect(
      Set(problems.map(\.description)) == [
        "missing key head.bias (expected shape 10)",
        "missing key backbone.stages.0.norm.running_var (expected shape 4)",
        "shape mismatch for head.weight: expected 10x4, found 4x10",
        "shape mismatch for backbone.stages.0.conv.weight: expected 4x3x3x3, found 4x3x1x1",
        "unexpected key module.extra.weight (shape 7)",
      ])
    let text = error?.description ?? ""
    #expect(
      text.hasPrefix(
        "/models/toy.pt: checkpoint does not match the model: 2 missing, 1 unexpected, 2 shape mismatches"
      ))
    for p in problems { #expect(text.contains(p.description)) }
  }

  @Test func readerFromFileLoadsAndVerifies() throws {
    let dir = try TemporaryDirectory()
    let url = dir.url.appendingPathComponent("toy.safetensors")
    var weights = Self.complete()
    try SafeTensors.write(weights, to: url)
    let reader = try WeightReader(contentsOf: url)
    _ = Self.build(reader)
    try reader.finish()

    weights["head.bias"] = nil
    try SafeTensors.write(weights, to: url)
    let incomplete = try WeightReader(contentsOf: url)
    _ = Self.build(incomplete)
    let error = #expect(throws: CheckpointError.self) { try incomplete.finish() }
    #expect(error?.description.contains(url.path) == true)
    #expect(error?.description.contains("missing key head.bias") == true)
  }

  /// The real L0 layout reads the fixture's decoder through scopes like a model would.
  @Test func fixtureDecoderKeysReadThroughScopes() throws {
    let weights = try Checkpoint.load(contentsOf: try Fixtures.url("models/tiny-l.pt"))
    let reader = WeightReader(weights, origin: "tiny-l.pt")
    let t = reader.root["mask_decoder"]["iou_prediction_head"]["layers"][0].take(
      "weight", shape: [256, 256])
    #expect(t == weights["mask_decoder.iou_prediction_head.layers.0.weight"])
    let error = #expect(throws: CheckpointError.self) { try reader.finish() }
    // Everything else is unexpected, each listed with its shape.
    guard case .verificationFailed(_, let problems)? = error else { return }
    #expect(problems.count == weights.count - 1)
    #expect(problems.allSatisfy { if case .unexpected = $0 { true } else { false } })
  }
}
