import EVImage
import EVTensor
import Foundation
import TestSupport
import Testing

private func goldenInfo(_ name: String) throws -> [String: Any] {
  let data = try Data(contentsOf: Fixtures.url("golden/\(name).json"))
  return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
}

@Suite struct Preprocessing {
  /// The golden files that keep the preprocessed `input`, with the encoder size of their model.
  @Test(arguments: [
    ("tiny-l__coffee", 512), ("tiny-l__chelsea", 512), ("tiny-l__astronaut", 512),
    ("tiny-xl__coffee", 1024),
  ])
  func matchesGoldenInput(name: String, targetSize: Int) throws {
    let info = try goldenInfo(name)
    let file = try #require(info["image"] as? String)
    let image = try RGBImage(contentsOf: Fixtures.url("images/\(file)"))
    let golden = try #require(try Fixtures.golden(name)["input"])

    let result = preprocess(image, targetSize: targetSize)
    #expect(result.tensor.shape == [1, 3, targetSize, targetSize])
    #expect(golden.shape == result.tensor.shape)
    let resized = try #require(info["resized_size"] as? [Int])
    #expect([result.resizedHeight, result.resizedWidth] == resized)

    let maxError = maxAbsDifference(result.tensor, golden)
    let mismatches = zip(result.tensor.storage, golden.storage).filter { $0 != $1 }.count
    print(
      "preprocess \(name): max |Δ| = \(maxError), \(mismatches) of \(golden.count) values differ")
    // One 8-bit grey level is ≈ 0.0175 after normalisation.
    #expect(maxError <= 0.018)
    // The goal: PIL's resize reproduced bit for bit.
    #expect(mismatches == 0)
  }

  @Test(arguments: [
    "tiny-l__coffee", "tiny-l__chelsea", "tiny-l__astronaut", "tiny-xl__coffee", "tiny-xl__chelsea",
    "tiny-xl__astronaut",
  ])
  func promptFrameMatchesGolden(name: String) throws {
    let info = try goldenInfo(name)
    let original = try #require(info["original_size"] as? [Int])
    let input = try #require(info["input_size"] as? [Int])
    let frame = promptFrameSize(originalHeight: original[0], originalWidth: original[1])
    #expect([frame.height, frame.width] == input)
  }

  @Test func promptFrameRoundsHalfUp() {
    // int(x + 0.5): 1.5 → 2 and 2.5 → 3 (Python's round() would give 2 for both).
    #expect(promptFrameSize(originalHeight: 3, originalWidth: 2048).height == 2)
    #expect(promptFrameSize(originalHeight: 5, originalWidth: 2048).height == 3)
    #expect(promptFrameSize(originalHeight: 100, originalWidth: 50, longSide: 512) == (512, 256))
  }

  @Test func paddingIsZeroAndValuesAreNormalised() {
    // A 4×2 image (long side 4) → 8×4 content in an 8×8 tensor.
    let image = RGBImage(width: 4, height: 2, color: RGBColor(255, 0, 128))
    let (tensor, h, w) = preprocess(image, targetSize: 8)
    #expect(h == 4 && w == 8)
    let mean: [Float] = [123.675, 116.28, 103.53].map { Float($0 / 255) }
    let std: [Float] = [58.395, 57.12, 57.375].map { Float($0 / 255) }
    let values: [Float] = [255, 0, 128]
    for c in 0..<3 {
      let expected = (values[c] / 255 - mean[c]) / std[c]
      for y in 0..<8 {
        for x in 0..<8 {
          #expect(tensor[0, c, y, x] == (y < 4 ? expected : 0))
        }
      }
    }
  }
}

/// A reference output of PIL: `np.asarray(Image.fromarray(source).resize((width, height),
/// Image.BILINEAR))`, from Pillow 13.0 (`.pillow13`) or Pillow 12.3 (`.horizontalFirst`).
struct ResizeCase: Sendable, CustomTestStringConvertible {
  enum Source: Sendable { case wide, tall }
  var source: Source
  var width: Int
  var height: Int
  var order: PILPassOrder
  var expected: [Int]
  var testDescription: String { "\(source) → \(width)×\(height), \(order)" }
}

private typealias Case = ResizeCase

@Suite struct PILResize {
  /// Test image of `width`×`height`: pixel (x, y) channel c is
  /// ((y·width + x)·37 + 91c + (x²y mod 23)) mod 256.
  static func pattern(width: Int, height: Int) -> RGBImage {
    var pixels: [UInt8] = []
    for y in 0..<height {
      for x in 0..<width {
        for c in 0..<3 {
          pixels.append(UInt8(((y * width + x) * 37 + c * 91 + (x * x * y) % 23) % 256))
        }
      }
    }
    return RGBImage(width: width, height: height, pixels: pixels)
  }

  /// Shrinking both ways, enlarging both ways, one dimension only, to 1×1, width up while
  /// height shrinks (where Pillow 13's pass order differs from Pillow 12's), and a tall image
  /// shrunk the way SAM's resize would (height 20 → 10, width 7 → 4: Pillow 13 runs the
  /// vertical pass first).
  static let cases: [ResizeCase] = [
    Case(
      source: .wide, width: 4, height: 3, order: .pillow13,
      expected: [
        52, 95, 186, 57, 148, 111, 112, 203, 46, 163, 142, 89, 172, 55, 146, 63, 111, 188, 81, 172,
        106, 127, 218, 53, 179, 126, 105, 166, 73, 164, 54, 125, 191, 84, 175, 78,
      ]),
    Case(
      source: .wide, width: 9, height: 5, order: .pillow13,
      expected: [
        0, 91, 182, 19, 110, 201, 43, 134, 182, 68, 159, 37, 93, 184, 19, 117, 208, 43, 142, 233,
        68, 167, 130, 93, 185, 20, 111, 155, 67, 158, 85, 86, 177, 21, 112, 190, 46, 137, 164, 73,
        164, 89, 100, 191, 26, 129, 220, 55, 149, 202, 75, 163, 177, 89, 205, 40, 131, 161, 60, 151,
        101, 86, 177, 44, 113, 204, 52, 143, 170, 80, 171, 112, 104, 195, 51, 124, 215, 50, 137,
        228, 63, 178, 90, 104, 198, 71, 124, 194, 59, 150, 105, 89, 180, 65, 117, 208, 52, 143, 204,
        71, 162, 104, 94, 185, 59, 111, 202, 37, 154, 245, 80, 174, 137, 100, 202, 37, 128, 232, 67,
        158, 127, 90, 181, 19, 110, 201, 42, 133, 224, 69, 160, 123, 89, 180, 15,
      ]),
    Case(
      source: .wide, width: 6, height: 2, order: .pillow13,
      expected: [
        122, 67, 158, 50, 104, 195, 53, 144, 125, 93, 184, 56, 132, 223, 58, 162, 143, 88, 178, 123,
        104, 181, 53, 144, 115, 96, 187, 44, 135, 189, 77, 168, 113, 112, 203, 38,
      ]),
    Case(
      source: .wide, width: 3, height: 4, order: .pillow13,
      expected: [
        26, 117, 172, 93, 184, 51, 159, 140, 85, 103, 84, 175, 66, 157, 120, 134, 225, 60, 180, 51,
        142, 68, 127, 186, 99, 190, 61, 183, 128, 109, 125, 88, 179, 61, 152, 133,
      ]),
    Case(source: .wide, width: 1, height: 1, order: .pillow13, expected: [105, 137, 124]),
    Case(
      source: .wide, width: 13, height: 1, order: .pillow13,
      expected: [
        152, 93, 131, 145, 90, 139, 128, 84, 157, 112, 84, 169, 96, 103, 163, 82, 122, 157, 76, 140,
        141, 69, 158, 124, 84, 175, 107, 101, 192, 88, 116, 189, 77, 131, 179, 67, 137, 175, 63,
      ]),
    Case(
      source: .wide, width: 8, height: 3, order: .pillow13,
      expected: [
        67, 81, 172, 42, 104, 195, 41, 132, 156, 70, 161, 63, 99, 190, 35, 128, 219, 54, 155, 179,
        81, 175, 87, 101, 205, 40, 131, 149, 64, 155, 83, 94, 185, 35, 126, 201, 68, 159, 138, 97,
        188, 71, 120, 211, 46, 137, 228, 63, 164, 178, 90, 189, 91, 115, 192, 56, 147, 154, 88, 179,
        45, 114, 205, 48, 139, 182, 75, 166, 113, 99, 190, 25,
      ]),
    Case(
      source: .wide, width: 13, height: 1, order: .horizontalFirst,
      expected: [
        152, 93, 131, 145, 90, 139, 128, 84, 156, 112, 83, 168, 96, 103, 163, 82, 122, 156, 76, 140,
        141, 69, 158, 124, 84, 175, 107, 101, 192, 88, 116, 188, 77, 131, 179, 67, 137, 175, 63,
      ]),
    Case(
      source: .wide, width: 8, height: 3, order: .horizontalFirst,
      expected: [
        67, 81, 172, 42, 104, 195, 41, 132, 156, 70, 161, 63, 99, 190, 34, 128, 219, 54, 155, 179,
        81, 175, 87, 101, 205, 40, 131, 149, 64, 155, 83, 94, 185, 35, 126, 201, 68, 159, 138, 97,
        188, 71, 120, 211, 46, 137, 228, 63, 164, 178, 90, 189, 91, 115, 192, 56, 147, 154, 89, 180,
        45, 114, 205, 48, 139, 182, 74, 165, 112, 99, 190, 25,
      ]),
    Case(
      source: .tall, width: 4, height: 10, order: .pillow13,
      expected: [
        22, 113, 192, 83, 174, 60, 154, 137, 80, 209, 51, 135, 29, 120, 199, 94, 185, 71, 161, 168,
        87, 218, 62, 144, 36, 127, 206, 103, 194, 81, 170, 94, 96, 177, 64, 153, 42, 133, 212, 104,
        195, 81, 177, 84, 103, 153, 72, 163, 49, 140, 205, 113, 204, 84, 183, 90, 109, 157, 76, 167,
        56, 147, 130, 123, 214, 56, 192, 99, 118, 131, 83, 174, 63, 154, 123, 123, 214, 49, 190, 97,
        116, 115, 84, 175, 70, 161, 130, 133, 189, 59, 199, 70, 125, 122, 91, 182, 77, 168, 137,
        142, 161, 68, 206, 41, 132, 127, 96, 187, 82, 173, 143, 141, 160, 67, 188, 45, 136, 89, 104,
        195,
      ]),
    Case(
      source: .tall, width: 4, height: 10, order: .horizontalFirst,
      expected: [
        22, 113, 192, 83, 174, 60, 153, 136, 79, 209, 51, 135, 29, 120, 198, 94, 185, 71, 161, 167,
        87, 218, 62, 144, 35, 126, 205, 104, 195, 81, 171, 94, 97, 177, 64, 153, 42, 133, 212, 105,
        196, 82, 177, 84, 103, 153, 71, 162, 49, 140, 205, 113, 204, 84, 183, 90, 109, 157, 76, 167,
        56, 147, 130, 123, 214, 55, 192, 99, 118, 131, 83, 174, 63, 154, 123, 123, 214, 49, 190, 97,
        116, 115, 84, 175, 70, 161, 130, 133, 188, 59, 199, 70, 125, 122, 91, 182, 77, 168, 137,
        142, 161, 68, 205, 40, 131, 127, 96, 187, 82, 173, 142, 141, 161, 67, 188, 44, 135, 88, 105,
        196,
      ]),
  ]

  @Test(arguments: cases)
  func matchesPillow(_ test: ResizeCase) {
    let source =
      test.source == .wide ? Self.pattern(width: 6, height: 4) : Self.pattern(width: 7, height: 20)
    let resized = resizeBilinearPIL(
      source, width: test.width, height: test.height, order: test.order)
    #expect(resized.width == test.width && resized.height == test.height)
    #expect(resized.pixels.map(Int.init) == test.expected)
  }

  @Test func sameSizeIsACopy() {
    let source = Self.pattern(width: 6, height: 4)
    #expect(resizeBilinearPIL(source, width: 6, height: 4) == source)
  }

  @Test func grayMatchesEachRGBChannel() {
    // PIL resamples every channel independently with the same taps.
    let source = Self.pattern(width: 6, height: 4)
    for (width, height) in [(9, 3), (13, 1), (2, 2)] {
      let resized = resizeBilinearPIL(source, width: width, height: height)
      for c in 0..<3 {
        let channel = GrayImage(
          width: 6, height: 4,
          pixels: stride(from: c, to: source.pixels.count, by: 3).map { source.pixels[$0] })
        let gray = resizeBilinearPIL(channel, width: width, height: height)
        #expect(
          gray.pixels == stride(from: c, to: resized.pixels.count, by: 3).map { resized.pixels[$0] }
        )
      }
    }
  }
}
