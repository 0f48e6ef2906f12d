import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

@Suite("Prompt encoder and mask decoder declare the official state dict")
struct DecoderManifestTests {
  /// `(key, shape)` of the official entries under `prefix`, in PyTorch's order.
  static func official(_ variant: Variant, prefix: String) throws -> [String] {
    let text = try String(
      contentsOf: Fixtures.url("manifests/\(variant.modelName).tsv"), encoding: .utf8)
    return text.split(separator: "\n").dropFirst().compactMap { line in
      let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
      guard fields.count == 3, fields[0].hasPrefix(prefix) else { return nil }
      return "\(fields[0]) \(fields[1]) \(fields[2])"
    }
  }

  static func summary(_ variant: Variant) throws -> [String: Int] {
    let json =
      try JSONSerialization.jsonObject(
        with: Data(contentsOf: Fixtures.url("manifests/summary.json"))) as? [String: [String: Int]]
    return try #require(json?[variant.modelName])
  }

  static func declared(_ reader: WeightReader) -> [String] {
    reader.declared.map {
      "\($0.key) \(formatShape($0.shape)) \($0.dtype == .float32 ? "float32" : "\($0.dtype)")"
    }
  }

  @Test(arguments: Variant.allCases)
  func promptEncoderKeysShapesAndCount(_ variant: Variant) throws {
    let reader = WeightReader.declaringOnly()
    _ = PromptEncoder(reader.root["prompt_encoder"])
    #expect(Self.declared(reader) == (try Self.official(variant, prefix: "prompt_encoder.")))
    #expect(reader.parameterCount() == (try Self.summary(variant))["params_prompt_encoder"])
    // The Gaussian matrix is a buffer: stored, but not a parameter.
    let buffers = reader.declared.filter(\.isBuffer).map(\.key)
    #expect(buffers == ["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])
  }

  @Test(arguments: Variant.allCases)
  func maskDecoderKeysShapesAndCount(_ variant: Variant) throws {
    let reader = WeightReader.declaringOnly()
    _ = MaskDecoder(reader.root["mask_decoder"])
    #expect(Self.declared(reader) == (try Self.official(variant, prefix: "mask_decoder.")))
    #expect(reader.parameterCount() == (try Self.summary(variant))["params_mask_decoder"])
    #expect(reader.declared.allSatisfy { !$0.isBuffer })
  }

  @Test func strictLoadingReportsEveryDecoderProblem() throws {
    var weights = try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
      .filter { $0.key.hasPrefix("mask_decoder.") }
    let dropped = "mask_decoder.transformer.layers.1.norm4.bias"
    try #require(weights.removeValue(forKey: dropped) != nil)
    weights["mask_decoder.iou_token.weight"] = Tensor(zeros: [2, 256])
    weights["mask_decoder.extra"] = Tensor(zeros: [1])
    let reader = WeightReader(weights, origin: "tiny-l")
    _ = MaskDecoder(reader.root["mask_decoder"])
    do {
      try reader.finish()
      Issue.record("finish() accepted a decoder checkpoint with three problems")
    } catch {
      guard case .verificationFailed(_, let problems) = error else {
        Issue.record("unexpected error \(error)")
        return
      }
      let expected: [LoadProblem] = [
        .missing(key: dropped, expected: [256]),
        .shapeMismatch(key: "mask_decoder.iou_token.weight", expected: [1, 256], found: [2, 256]),
        .unexpected(key: "mask_decoder.extra", found: [1]),
      ]
      #expect(problems.map(\.description).sorted() == expected.map(\.description).sorted())
    }
  }
}
