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
    print("preprocess \(name): max |Δ| = \(maxError), \(mismatches) of \(golden.count) values differ")
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

@Suite struct PILResize {
  /// The 6×4 test image: pixel (x, y) channel c = ((y·6 + x)·37 + 91c + (x²y mod 23)) mod 256.
  static let source: RGBImage = {
    var pixels: [UInt8] = []
    for y in 0..<4 {
      for x in 0..<6 {
        for c in 0..<3 { pixels.append(UInt8(((y * 6 + x) * 37 + c * 91 + (x * x * y) % 23) % 256)) }
      }
    }
    return RGBImage(width: 6, height: 4, pixels: pixels)
  }()

  /// `np.asarray(Image.fromarray(source).resize(size, Image.BILINEAR))` from Pillow 13.0:
  /// shrinking both ways, enlarging both ways, one dimension only, to 1×1, and mixed.
  @Test(arguments: [
    (4, 3, [52, 95, 186, 57, 148, 111, 112, 203, 46, 163, 142, 89, 172, 55, 146, 63, 111, 188, 81, 172, 106, 127, 218, 53, 179, 126, 105, 166, 73, 164, 54, 125, 191, 84, 175, 78]),
    (9, 5, [0, 91, 182, 19, 110, 201, 43, 134, 182, 68, 159, 37, 93, 184, 19, 117, 208, 43, 142, 233, 68, 167, 130, 93, 185, 20, 111, 155, 67, 158, 85, 86, 177, 21, 112, 190, 46, 137, 164, 73, 164, 89, 100, 191, 26, 129, 220, 55, 149, 202, 75, 163, 177, 89, 205, 40, 131, 161, 60, 151, 101, 86, 177, 44, 113, 204, 52, 143, 170, 80, 171, 112, 104, 195, 51, 124, 215, 50, 137, 228, 63, 178, 90, 104, 198, 71, 124, 194, 59, 150, 105, 89, 180, 65, 117, 208, 52, 143, 204, 71, 162, 104, 94, 185, 59, 111, 202, 37, 154, 245, 80, 174, 137, 100, 202, 37, 128, 232, 67, 158, 127, 90, 181, 19, 110, 201, 42, 133, 224, 69, 160, 123, 89, 180, 15]),
    (6, 2, [122, 67, 158, 50, 104, 195, 53, 144, 125, 93, 184, 56, 132, 223, 58, 162, 143, 88, 178, 123, 104, 181, 53, 144, 115, 96, 187, 44, 135, 189, 77, 168, 113, 112, 203, 38]),
    (3, 4, [26, 117, 172, 93, 184, 51, 159, 140, 85, 103, 84, 175, 66, 157, 120, 134, 225, 60, 180, 51, 142, 68, 127, 186, 99, 190, 61, 183, 128, 109, 125, 88, 179, 61, 152, 133]),
    (1, 1, [105, 137, 124]),
    (13, 1, [152, 93, 131, 145, 90, 139, 128, 84, 157, 112, 84, 169, 96, 103, 163, 82, 122, 157, 76, 140, 141, 69, 158, 124, 84, 175, 107, 101, 192, 88, 116, 189, 77, 131, 179, 67, 137, 175, 63]),
  ])
  func matchesPillow(width: Int, height: Int, expected: [Int]) {
    let resized = resizeBilinearPIL(Self.source, width: width, height: height)
    #expect(resized.width == width && resized.height == height)
    #expect(resized.pixels.map(Int.init) == expected)
  }

  @Test func sameSizeIsACopy() {
    #expect(resizeBilinearPIL(Self.source, width: 6, height: 4) == Self.source)
  }

  @Test func grayMatchesEachRGBChannel() {
    // PIL resamples every channel independently with the same taps.
    let resized = resizeBilinearPIL(Self.source, width: 9, height: 3)
    for c in 0..<3 {
      let channel = GrayImage(
        width: 6, height: 4, pixels: stride(from: c, to: Self.source.pixels.count, by: 3).map { Self.source.pixels[$0] })
      let gray = resizeBilinearPIL(channel, width: 9, height: 3)
      #expect(gray.pixels == stride(from: c, to: resized.pixels.count, by: 3).map { resized.pixels[$0] })
    }
  }
}
