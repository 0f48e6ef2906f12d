import EVImage
import Foundation
import TestSupport
import Testing

/// Decoded pixels as [r, g, b] triples, for compact expectations.
private func triples(_ image: RGBImage) -> [[UInt8]] {
  stride(from: 0, to: image.pixels.count, by: 3).map { Array(image.pixels[$0..<($0 + 3)]) }
}

private func decode(_ bytes: [UInt8]) throws -> RGBImage {
  try RGBImage(data: Data(bytes))
}

@Suite struct FixtureDecoding {
  @Test(arguments: [
    ("astronaut.png", 512, 512), ("coffee.png", 600, 400), ("chelsea.png", 451, 300),
    ("coffee.jpg", 600, 400),
  ])
  func decodesFixture(file: String, width: Int, height: Int) throws {
    let image = try RGBImage(contentsOf: Fixtures.url("images/\(file)"))
    #expect(image.width == width)
    #expect(image.height == height)
    #expect(image.pixels.count == width * height * 3)
    // Real photographs: far from constant.
    #expect(Set(image.pixels).count > 200)
  }

  /// TurboJPEG with default settings decodes exactly as PIL does. The checksums are those of
  /// `np.asarray(Image.open("coffee.jpg").convert("RGB"))` (Pillow 13.0): the plain sum and
  /// Σ value × (index mod 251 + 1) over the flattened HWC array.
  @Test func jpegMatchesPIL() throws {
    let image = try RGBImage(contentsOf: Fixtures.url("images/coffee.jpg"))
    var sum = 0
    var weighted = 0
    for (i, v) in image.pixels.enumerated() {
      sum += Int(v)
      weighted += Int(v) * (i % 251 + 1)
    }
    #expect(sum == 71_004_685)
    #expect(weighted == 8_947_069_324)

    // And it is the same photograph as coffee.png, up to JPEG loss.
    let png = try RGBImage(contentsOf: Fixtures.url("images/coffee.png"))
    let meanError =
      zip(image.pixels, png.pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) }
      / Double(png.pixels.count)
    #expect(meanError < 4)
  }
}

/// Each expectation is what PIL's `Image.open(f).convert("RGB")` gives for the same file
/// (checked with Pillow 13.0).
@Suite struct PNGColorTypes {
  @Test func gray8() throws {
    let image = try decode(
      PNGBuilder.png(width: 3, height: 1, bitDepth: 8, colorType: 0, scanlines: [[0, 128, 255]]))
    #expect(triples(image) == [[0, 0, 0], [128, 128, 128], [255, 255, 255]])
  }

  @Test func grayLowBitDepths() throws {
    let one = try decode(
      PNGBuilder.png(width: 4, height: 1, bitDepth: 1, colorType: 0, scanlines: [[0b1010_0000]]))
    #expect(triples(one) == [[255, 255, 255], [0, 0, 0], [255, 255, 255], [0, 0, 0]])
    let two = try decode(
      PNGBuilder.png(width: 4, height: 1, bitDepth: 2, colorType: 0, scanlines: [[0b0001_1011]]))
    #expect(triples(two) == [[0, 0, 0], [85, 85, 85], [170, 170, 170], [255, 255, 255]])
    let four = try decode(
      PNGBuilder.png(width: 3, height: 1, bitDepth: 4, colorType: 0, scanlines: [[0x0F, 0x70]]))
    #expect(triples(four) == [[0, 0, 0], [255, 255, 255], [119, 119, 119]])
  }

  /// PIL opens 16-bit gray as "I;16" and its conversion to RGB saturates: values above 255
  /// become 255 (not the high byte).
  @Test func gray16Saturates() throws {
    let image = try decode(
      PNGBuilder.png(
        width: 6, height: 1, bitDepth: 16, colorType: 0,
        scanlines: [PNGBuilder.samples16([0, 255, 256, 300, 65_535, 0x1234])]))
    #expect(
      image.pixels.enumerated().filter { $0.offset % 3 == 0 }.map(\.element) == [
        0, 255, 255, 255, 255, 255,
      ])
    #expect(triples(image).allSatisfy { $0[0] == $0[1] && $0[1] == $0[2] })
  }

  @Test func grayAlphaDropsAlpha() throws {
    let image = try decode(
      PNGBuilder.png(
        width: 2, height: 1, bitDepth: 8, colorType: 4, scanlines: [[200, 0, 50, 128]]))
    #expect(triples(image) == [[200, 200, 200], [50, 50, 50]])
    let sixteen = try decode(
      PNGBuilder.png(
        width: 2, height: 1, bitDepth: 16, colorType: 4,
        scanlines: [PNGBuilder.samples16([0x1234, 0x5678, 0xFF01, 0])]))
    #expect(triples(sixteen) == [[0x12, 0x12, 0x12], [0xFF, 0xFF, 0xFF]])
  }

  @Test func rgbAndRGBA() throws {
    let rgb16 = try decode(
      PNGBuilder.png(
        width: 1, height: 1, bitDepth: 16, colorType: 2,
        scanlines: [PNGBuilder.samples16([0x1234, 0x5678, 0x9ABC])]))
    #expect(triples(rgb16) == [[0x12, 0x56, 0x9A]])
    // Fully transparent pixels keep their colour: alpha is dropped, not composited.
    let rgba = try decode(
      PNGBuilder.png(
        width: 2, height: 1, bitDepth: 8, colorType: 6,
        scanlines: [[10, 20, 30, 0, 40, 50, 60, 77]]))
    #expect(triples(rgba) == [[10, 20, 30], [40, 50, 60]])
    let rgba16 = try decode(
      PNGBuilder.png(
        width: 1, height: 1, bitDepth: 16, colorType: 6,
        scanlines: [PNGBuilder.samples16([0xA1FF, 0xB200, 0xC3AA, 0x0001])]))
    #expect(triples(rgba16) == [[0xA1, 0xB2, 0xC3]])
  }

  @Test func paletteWithTransparencyAndOutOfRangeIndices() throws {
    let palette = PNGBuilder.chunk("PLTE", [10, 20, 30, 40, 50, 60])
    let transparency = PNGBuilder.chunk("tRNS", [0, 128])
    let image = try decode(
      PNGBuilder.png(
        width: 5, height: 1, bitDepth: 8, colorType: 3, scanlines: [[0, 1, 2, 3, 255]],
        chunksBeforeData: [palette, transparency]))
    #expect(triples(image) == [[10, 20, 30], [40, 50, 60], [0, 0, 0], [0, 0, 0], [0, 0, 0]])

    let palette4 = PNGBuilder.chunk("PLTE", Array(0..<12))
    let packed = try decode(
      PNGBuilder.png(
        width: 4, height: 1, bitDepth: 2, colorType: 3, scanlines: [[0b0001_1011]],
        chunksBeforeData: [palette4]))
    #expect(triples(packed) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
  }

  @Test func colorKeyTransparencyAndGammaAreIgnored() throws {
    let key = PNGBuilder.chunk("tRNS", [0, 100, 0, 150, 0, 200])
    let gamma = PNGBuilder.chunk("gAMA", PNGBuilder.bigEndian(100_000))
    let image = try decode(
      PNGBuilder.png(
        width: 2, height: 1, bitDepth: 8, colorType: 2, scanlines: [[100, 150, 200, 1, 2, 3]],
        chunksBeforeData: [gamma, key]))
    #expect(triples(image) == [[100, 150, 200], [1, 2, 3]])
    let grayKey = PNGBuilder.chunk("tRNS", [0, 7])
    let gray = try decode(
      PNGBuilder.png(
        width: 2, height: 1, bitDepth: 8, colorType: 0, scanlines: [[7, 8]],
        chunksBeforeData: [grayKey]))
    #expect(triples(gray) == [[7, 7, 7], [8, 8, 8]])
  }

  @Test func adam7Interlaced() throws {
    // 10×10 RGB whose pixel (x, y) is (x, y, x ^ y); scanlines grouped by Adam7 pass.
    let w = 10
    let h = 10
    let passes = [
      (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
      (0, 1, 1, 2),
    ]
    var scanlines: [[UInt8]] = []
    for (x0, y0, dx, dy) in passes {
      for y in stride(from: y0, to: h, by: dy) {
        let row = stride(from: x0, to: w, by: dx).flatMap { x in [UInt8(x), UInt8(y), UInt8(x ^ y)]
        }
        if !row.isEmpty { scanlines.append(row) }
      }
    }
    let image = try decode(
      PNGBuilder.png(
        width: w, height: h, bitDepth: 8, colorType: 2, scanlines: scanlines, interlaced: true))
    for y in 0..<h {
      for x in 0..<w {
        #expect(image[x: x, y: y] == RGBColor(UInt8(x), UInt8(y), UInt8(x ^ y)))
      }
    }
  }
}

@Suite struct DecodingErrors {
  private func expectError(_ kind: ImageError.Kind, _ body: () throws(ImageError) -> RGBImage)
    -> ImageError?
  {
    do {
      let image = try body()
      Issue.record("decoded a \(image.width)×\(image.height) image, expected \(kind)")
      return nil
    } catch {
      #expect(error.kind == kind, "\(error)")
      #expect(!error.description.contains("\n"))
      return error
    }
  }

  @Test func missingFileAndDirectory() {
    let path = "/nonexistent/dir/picture.png"
    let error = expectError(.unreadable) { () throws(ImageError) in
      try RGBImage(contentsOf: URL(fileURLWithPath: path))
    }
    #expect(error?.description.contains(path) == true)
    _ = expectError(.unreadable) { () throws(ImageError) in
      try RGBImage(contentsOf: URL(fileURLWithPath: NSTemporaryDirectory()))
    }
  }

  @Test func unknownFormats() throws {
    _ = expectError(.unknownFormat) { () throws(ImageError) in try RGBImage(data: Data()) }
    let gif = expectError(.unknownFormat) { () throws(ImageError) in
      try RGBImage(data: Data("GIF89a.........".utf8))
    }
    #expect(gif?.description.contains("image data") == true)
    // A named file: the message names it.
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("evimage-\(UUID()).png")
    try Data("just some text".utf8).write(to: url)
    defer { try? FileManager.default.removeItem(at: url) }
    let named = expectError(.unknownFormat) { () throws(ImageError) in try RGBImage(contentsOf: url)
    }
    #expect(named?.description.hasPrefix(url.path) == true)
  }

  @Test func truncatedFiles() throws {
    for file in ["coffee.png", "coffee.jpg"] {
      let bytes = try [UInt8](Data(contentsOf: Fixtures.url("images/\(file)")))
      for fraction in [0.5, 0.9] {
        let cut = Array(bytes.prefix(Int(Double(bytes.count) * fraction)))
        _ = expectError(.truncated) { () throws(ImageError) in try RGBImage(data: Data(cut)) }
      }
    }
    // Cut inside the PNG header chunk.
    let png = PNGBuilder.png(
      width: 2, height: 2, bitDepth: 8, colorType: 0, scanlines: [[1, 2], [3, 4]])
    _ = expectError(.truncated) { () throws(ImageError) in try RGBImage(data: Data(png.prefix(20)))
    }
  }

  @Test func corruptPNG() throws {
    let good = PNGBuilder.png(
      width: 2, height: 2, bitDepth: 8, colorType: 0, scanlines: [[1, 2], [3, 4]])
    var badCRC = good
    badCRC[20] ^= 0x01  // a byte of the IHDR data
    _ = expectError(.corrupt) { () throws(ImageError) in try RGBImage(data: Data(badCRC)) }

    let badDepth = PNGBuilder.png(
      width: 2, height: 1, bitDepth: 3, colorType: 2, scanlines: [[1, 2]])
    _ = expectError(.corrupt) { () throws(ImageError) in try RGBImage(data: Data(badDepth)) }

    // Compressed data that is not a valid zlib stream.
    var ihdr = PNGBuilder.bigEndian(2) + PNGBuilder.bigEndian(1)
    ihdr += [8, 0, 0, 0, 0]
    let garbage: [UInt8] = [0x78, 0x9C, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    let bad =
      [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + PNGBuilder.chunk("IHDR", ihdr)
      + PNGBuilder.chunk("IDAT", garbage) + PNGBuilder.chunk("IEND", [])
    _ = expectError(.corrupt) { () throws(ImageError) in try RGBImage(data: Data(bad)) }

    let zeroWidth = PNGBuilder.png(width: 0, height: 1, bitDepth: 8, colorType: 0, scanlines: [[]])
    _ = expectError(.corrupt) { () throws(ImageError) in try RGBImage(data: Data(zeroWidth)) }
  }

  @Test func absurdDimensions() throws {
    // The header claims 100000×100000 pixels: refused before any allocation.
    let png = PNGBuilder.png(
      width: 100_000, height: 100_000, bitDepth: 8, colorType: 2, scanlines: [[0, 0, 0]])
    _ = expectError(.tooLarge) { () throws(ImageError) in try RGBImage(data: Data(png)) }

    var jpeg = try [UInt8](Data(contentsOf: Fixtures.url("images/coffee.jpg")))
    let sof = try #require(
      (0..<(jpeg.count - 1)).first { jpeg[$0] == 0xFF && (0xC0...0xC2).contains(jpeg[$0 + 1]) })
    // Height and width → 60000 (libjpeg itself refuses more than 65500).
    for i in [sof + 5, sof + 7] { jpeg[i] = 0xEA }
    for i in [sof + 6, sof + 8] { jpeg[i] = 0x60 }
    _ = expectError(.tooLarge) { () throws(ImageError) in try RGBImage(data: Data(jpeg)) }
  }

  @Test func corruptJPEG() {
    let bytes: [UInt8] = [
      0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x02, 0xFF, 0xC0, 0x00, 0x03, 0x00, 0xFF, 0xD9,
    ]
    _ = expectError(.corrupt) { () throws(ImageError) in try RGBImage(data: Data(bytes)) }
  }
}
