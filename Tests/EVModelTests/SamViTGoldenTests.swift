import EVCheckpoint
import EVImage
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

@Suite("SAM ViT image encoder against segment-anything's golden outputs")
struct SamViTGoldenTests {
  static func encoder() throws -> SamViTEncoder {
    let architecture = try Architecture.load(json: Fixtures.url("sam/models/tiny-sam-vit.json"))
    guard case .samViT(let config) = architecture else {
      Issue.record("tiny-sam-vit.json was not recognised as a SAM ViT config")
      throw CancellationError()
    }
    let model = try SegmentAnythingModel.load(
      architecture: architecture, checkpoint: Fixtures.url("sam/models/tiny-sam-vit.pth"))
    let encoder = try #require(model.imageEncoder as? SamViTEncoder)
    #expect(encoder.config == config)
    return encoder
  }

  @Test(arguments: ["astronaut", "coffee"])
  func everyIntermediateMatches(image: String) throws {
    let encoder = try Self.encoder()
    let golden = try SafeTensors.read(
      contentsOf: Fixtures.url("sam/golden/tiny-sam-vit__\(image).safetensors"))
    let picture = try RGBImage(contentsOf: Fixtures.url("images/\(image).png"))
    let input = preprocess(picture, targetSize: 1024, normalization: .byteRange).tensor

    // The preprocessed input, every 16th row and column.
    let expectedInput = try #require(golden["input_every16"])
    let every16 = Tensor(uninitializedShape: [1, 3, 64, 64]) { out in
      input.withUnsafeBufferPointer { src in
        for c in 0..<3 {
          for y in 0..<64 {
            for x in 0..<64 {
              out[(c * 64 + y) * 64 + x] = src[(c * 1024 + y * 16) * 1024 + x * 16]
            }
          }
        }
      }
    }
    let inputError = maxAbsDifference(every16, expectedInput)
    #expect(inputError <= 1e-5, "\(image): preprocessed input differs by \(inputError)")

    let outputs = encoder.forwardWithIntermediates(input)
    let compared = golden.keys.filter {
      $0 == "patch_embed" || $0.hasPrefix("block.") || $0 == "embedding"
    }
    #expect(compared.count == 2 + encoder.config.depth)
    for key in compared.sorted() {
      let expected = golden[key]!
      let actual = try #require(outputs[key], "the encoder does not produce \(key)")
      try #require(actual.shape == expected.shape, "\(key): \(actual.shape) vs \(expected.shape)")
      let error = relativeL2Error(actual, expected)
      print("golden tiny-sam-vit__\(image) \(key): relative L2 error \(error)")
      #expect(error <= 1e-4, "tiny-sam-vit__\(image) \(key): relative L2 error \(error)")
    }
    #expect(encoder(input) == outputs["embedding"])
  }

  /// `--model sam-vit-b|l|h` declares exactly the keys and shapes of the released checkpoints,
  /// and their parameter counts.
  @Test(arguments: SamViTVariant.allCases)
  func presetsDeclareTheManifests(variant: SamViTVariant) throws {
    let manifest = try String(
      contentsOf: Fixtures.url("sam/manifests/\(variant.modelName).tsv"), encoding: .utf8)
    let rows = manifest.split(separator: "\n").dropFirst().map { $0.split(separator: "\t") }
    let expected = rows.map { row in
      (key: String(row[0]), shape: row[1].split(separator: "x").map { Int($0)! })
    }
    let (architecture, name) = try Architecture.named(variant.modelName)
    #expect(name == variant.modelName)
    let reader = SegmentAnythingModel.declaredParameters(architecture: architecture)
    let declared = reader.declared.map { (key: $0.key, shape: $0.shape) }
    #expect(declared.map(\.key).sorted() == expected.map(\.key).sorted())
    let expectedShapes = Dictionary(uniqueKeysWithValues: expected.map { ($0.key, $0.shape) })
    for d in declared {
      #expect(expectedShapes[d.key] == d.shape, "\(d.key): \(d.shape)")
    }
    let summary = try #require(
      JSONSerialization.jsonObject(
        with: Data(contentsOf: Fixtures.url("sam/manifests/summary.json"))) as? [String: Any])
    let counts = try #require(summary[variant.modelName] as? [String: Int])
    #expect(reader.parameterCount() == counts["params_total"])
    #expect(reader.parameterCount(prefix: "image_encoder") == counts["params_image_encoder"])
  }

  @Test func configJSONIsRecognisedAndChecked() throws {
    let vit = try SamViTConfig.decode(Data(#"{"embed_dim": 64, "depth": 2, "num_heads": 4}"#.utf8))
    #expect(vit.windowSize == 0 && !vit.useRelativePositions && vit.imageSize == 1024)
    #expect(throws: ModelConfigError.self) {
      try SamViTConfig.decode(Data(#"{"embed_dim": 64, "num_heads": 5}"#.utf8))
    }
    #expect(throws: ModelConfigError.self) {
      try SamViTConfig.decode(Data(#"{"embed_dim": 64, "depth": 2, "window": 14}"#.utf8))
    }
    #expect(throws: ModelConfigError.self) {
      try SamViTConfig.decode(Data(#"{"embed_dim": 64, "img_size": 512}"#.utf8))
    }
    #expect(SamViTVariant(name: "vit_h") == .h)
    #expect(SamViTVariant(name: "SAM-ViT-L") == .l)
    #expect(SamViTVariant(name: "l0") == nil)
  }
}

@Suite("SAM ViT relative positions")
struct RelativePositionResizeTests {
  /// `F.interpolate(mode="linear", align_corners=False)` from 3 to 5 rows: sources at
  /// max(0.6·(i + 0.5) − 0.5, 0) = 0, 0.4, 1, 1.6, 2.2 (clamped to the last row).
  @Test func resizesLikeTorchLinearInterpolation() {
    let table = Tensor(shape: [3, 2], storage: [0, 10, 1, 20, 3, 40])
    let resized = resizedRelativePositions(table, length: 5)
    let expected: [Float] = [0, 10, 0.4, 14, 1, 20, 2.2, 32, 3, 40]
    #expect(resized.shape == [5, 2])
    for (a, b) in zip(resized.storage, expected) { #expect(abs(a - b) <= 1e-6 * max(1, abs(b))) }
    #expect(resizedRelativePositions(table, length: 3) == table)
  }
}
