import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// The two small models of the fixtures, their image-encoder weights loaded strictly.
enum TinyEncoders {
  static func load(_ name: String) throws -> ImageEncoder {
    let config = try ModelConfig.load(json: Fixtures.url("models/\(name).json"))
    // tiny-xl ships only as a PyTorch zip checkpoint.
    let all =
      name == "tiny-l"
      ? try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
      : try Checkpoint.load(contentsOf: Fixtures.url("models/\(name).pt"))
    let weights = all.filter { $0.key.hasPrefix("image_encoder.") }
    let reader = WeightReader(weights, origin: "\(name) image_encoder")
    let encoder = ImageEncoder(config: config, reader.root["image_encoder"])
    try reader.finish()
    return encoder
  }
}

@Suite("Image encoder against the official golden outputs")
struct ImageEncoderGoldenTests {
  static let tolerance = 1e-4

  /// Golden files that keep the preprocessed `input` (the others need EVImage's preprocessing).
  static let cases: [(model: String, image: String)] = [
    ("tiny-l", "astronaut"), ("tiny-l", "chelsea"), ("tiny-l", "coffee"), ("tiny-xl", "coffee"),
  ]

  @Test(arguments: cases)
  func everyIntermediateMatches(model: String, image: String) throws {
    let encoder = try TinyEncoders.load(model)
    let golden = try Fixtures.golden("\(model)__\(image)")
    let input = try #require(golden["input"], "\(model)__\(image) has no input tensor")
    let outputs = encoder.forwardWithIntermediates(input)
    let compared = golden.keys.filter {
      $0.hasPrefix("backbone.") || $0 == "neck" || $0 == "embedding"
    }
    #expect(compared.contains("embedding"))
    for key in compared.sorted() {
      let expected = golden[key]!
      let actual = try #require(outputs[key], "the encoder does not produce \(key)")
      try #require(actual.shape == expected.shape, "\(key): \(actual.shape) vs \(expected.shape)")
      let error = relativeL2Error(actual, expected)
      print("golden \(model)__\(image) \(key): relative L2 error \(error)")
      #expect(error <= Self.tolerance, "\(model)__\(image) \(key): relative L2 error \(error)")
    }
    #expect(encoder(input) == outputs["embedding"])
  }

  @Test func batchedImagesAreEncodedIndependently() throws {
    let encoder = try TinyEncoders.load("tiny-l")
    let first = try #require(try Fixtures.golden("tiny-l__astronaut")["input"])
    let second = try #require(try Fixtures.golden("tiny-l__coffee")["input"])
    let batched = encoder(concat([first, second], axis: 0))
    #expect(batched.shape == [2, 256, 64, 64])
    for (i, single) in [first, second].enumerated() {
      let alone = encoder(single)
      let row = slice(batched, axis: 0, range: i..<(i + 1))
      #expect(relativeL2Error(row, alone) < 1e-6)
    }
  }
}
