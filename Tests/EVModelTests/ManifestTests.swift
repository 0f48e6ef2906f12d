import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// One line of `fixtures/manifests/<model>.tsv`.
struct ManifestEntry: Hashable, CustomStringConvertible {
  let key: String
  let shape: [Int]
  let dtype: String

  var description: String { "\(key) \(formatShape(shape)) \(dtype)" }

  /// Every entry of the official state dict of `variant`, in PyTorch's order.
  static func load(_ variant: Variant) throws -> [ManifestEntry] {
    let text = try String(
      contentsOf: Fixtures.url("manifests/\(variant.modelName).tsv"), encoding: .utf8)
    return try text.split(separator: "\n").dropFirst().map { line in
      let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
      try #require(fields.count == 3, "bad manifest line: \(line)")
      let shape =
        fields[1].isEmpty ? [] : try fields[1].split(separator: "x").map { try #require(Int($0)) }
      return ManifestEntry(key: String(fields[0]), shape: shape, dtype: String(fields[2]))
    }
  }
}

extension DType {
  // DType.name is PyTorch's spelling, as the manifests print it.
  var manifestName: String { name }
}

/// The full-size encoders are large (XL1 holds 199 M parameters), so these run one at a time.
@Suite("Image encoder matches the official state dict", .serialized)
struct ManifestTests {
  @Test(arguments: Variant.allCases)
  func declaresExactlyTheOfficialKeys(_ variant: Variant) throws {
    let reader = WeightReader.declaringOnly()
    let encoder = ImageEncoder(config: .preset(variant), reader.root["image_encoder"])
    let declared = reader.declared.map {
      ManifestEntry(key: $0.key, shape: $0.shape, dtype: $0.dtype.manifestName)
    }
    let expected = try ManifestEntry.load(variant).filter { $0.key.hasPrefix("image_encoder.") }
    #expect(declared.count == Set(declared).count, "keys declared twice")
    let missing = Set(expected).subtracting(declared).sorted { $0.key < $1.key }
    let extra = Set(declared).subtracting(expected).sorted { $0.key < $1.key }
    #expect(missing.isEmpty, "\(variant): not declared: \(missing.prefix(10))")
    #expect(extra.isEmpty, "\(variant): declared but not official: \(extra.prefix(10))")
    #expect(declared.count == expected.count)

    let summary =
      try JSONSerialization.jsonObject(
        with: Data(contentsOf: Fixtures.url("manifests/summary.json"))) as? [String: [String: Int]]
    let official = try #require(summary?[variant.modelName])
    #expect(reader.parameterCount(prefix: "image_encoder") == official["params_image_encoder"])
    #expect(encoder.config.imageSize == official["image_size"])
  }

  @Test(arguments: Variant.allCases)
  func multiplyAccumulates(_ variant: Variant) {
    let encoder = ImageEncoder(config: .preset(variant), WeightReader.declaringOnly().root)
    let parts = encoder.multiplyAccumulatesByPart()
    let total = encoder.multiplyAccumulates
    let breakdown = parts.map { "\($0.part) \(Double($0.macs) / 1e9)" }.joined(separator: ", ")
    print(
      "MACs \(variant.modelName) at \(encoder.config.imageSize)²: \(Double(total) / 1e9) G (\(breakdown))"
    )
    #expect(total == parts.reduce(0) { $0 + $1.macs })
    // The EfficientViT-SAM paper (Table 1) quotes whole GMACs; a count that rounds differently
    // means a layer of the wrong shape or a miscounted one.
    let published: [Variant: Double] = [.l0: 35, .l1: 49, .l2: 69, .xl0: 185, .xl1: 322]
    let giga = Double(total) / 1e9
    #expect(abs(giga - published[variant]!) < 0.5, "\(variant): \(giga) GMACs")
  }

  @Test func strictLoadingNamesMissingAndUnexpectedKeys() throws {
    let all = try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
    var weights = all.filter { $0.key.hasPrefix("image_encoder.") }
    let dropped = "image_encoder.backbone.stages.4.op_list.1.context_module.main.aggreg.0.1.weight"
    try #require(weights.removeValue(forKey: dropped) != nil)
    weights["image_encoder.neck.extra.weight"] = Tensor(zeros: [2])
    let reader = WeightReader(weights, origin: "tiny-l")
    let config = try ModelConfig.load(json: Fixtures.url("models/tiny-l.json"))
    _ = ImageEncoder(config: config, reader.root["image_encoder"])
    do {
      try reader.finish()
      Issue.record("finish() accepted a checkpoint with a missing and an unexpected key")
    } catch {
      guard case .verificationFailed(_, let problems) = error else {
        Issue.record("unexpected error \(error)")
        return
      }
      #expect(
        problems == [
          .missing(key: dropped, expected: [192, 32, 1, 1]),
          .unexpected(key: "image_encoder.neck.extra.weight", found: [2]),
        ])
    }
  }
}
