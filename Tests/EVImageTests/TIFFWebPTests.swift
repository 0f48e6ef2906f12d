import EVImage
import Foundation
import Testing

/// TIFF (libtiff) and WebP (libwebp) decoding: files written here from the formats'
/// specifications (baseline TIFF, uncompressed; lossless WebP through libwebp's encoder), read
/// back to the pixels they were written from.
@Suite struct TIFFWebPTests {
  /// A baseline uncompressed TIFF, one strip: `samples` per pixel of `bits` (8, 16 or 32),
  /// little- or big-endian, with `sampleFormat` 1 (unsigned) or 3 (floating point).
  static func tiff(
    width: Int, height: Int, samples: Int, bits: Int, values: [UInt32], bigEndian: Bool = false,
    sampleFormat: UInt16 = 1
  ) -> Data {
    var out: [UInt8] = []
    func u16(_ v: UInt16) {
      out += bigEndian ? [UInt8(v >> 8), UInt8(v & 0xFF)] : [UInt8(v & 0xFF), UInt8(v >> 8)]
    }
    func u32(_ v: UInt32) {
      let bytes = (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) }
      out += bigEndian ? bytes.reversed() : bytes
    }
    out += bigEndian ? Array("MM".utf8) : Array("II".utf8)
    u16(42)
    u32(8)
    let entries: [(tag: UInt16, type: UInt16, count: UInt32, value: UInt32)] = [
      (256, 4, 1, UInt32(width)), (257, 4, 1, UInt32(height)), (258, 3, 1, UInt32(bits)),
      (259, 3, 1, 1), (262, 3, 1, samples == 3 ? 2 : 1), (273, 4, 1, 0),
      (277, 3, 1, UInt32(samples)), (278, 4, 1, UInt32(height)),
      (279, 4, 1, UInt32(width * height * samples * bits / 8)), (339, 3, 1, UInt32(sampleFormat)),
    ]
    let dataOffset = UInt32(8 + 2 + entries.count * 12 + 4)
    u16(UInt16(entries.count))
    for e in entries {
      u16(e.tag)
      u16(e.type)
      u32(e.count)
      let value = e.tag == 273 ? dataOffset : e.value
      // A SHORT value sits in the field's first two bytes.
      if e.type == 3 {
        u16(UInt16(value))
        u16(0)
      } else {
        u32(value)
      }
    }
    u32(0)
    for v in values {
      switch bits {
      case 8: out.append(UInt8(v))
      case 16: u16(UInt16(v))
      default: u32(v)
      }
    }
    return Data(out)
  }

  @Test func eightBitRGBInBothByteOrders() throws {
    let (w, h) = (5, 3)
    let values = (0..<(w * h * 3)).map { UInt32(($0 * 37) % 256) }
    for bigEndian in [false, true] {
      let image = try RGBImage(
        data: Self.tiff(
          width: w, height: h, samples: 3, bits: 8, values: values, bigEndian: bigEndian))
      #expect(image.width == w && image.height == h)
      #expect(image.pixels == values.map { UInt8($0) })
    }
  }

  @Test func sixteenBitGrayIsStretchedFromItsRange() throws {
    // Microscopy-like: 12-bit values in a 16-bit file.
    let values: [UInt32] = [100, 4000, 2050, 100, 4000, 1075]
    let image = try RGBImage(
      data: Self.tiff(width: 3, height: 2, samples: 1, bits: 16, values: values))
    let gray = stride(from: 0, to: image.pixels.count, by: 3).map { image.pixels[$0] }
    #expect(gray == [0, 255, 128, 0, 255, 64])
    #expect(image.pixels[3] == image.pixels[4] && image.pixels[4] == image.pixels[5])
  }

  @Test func unsupportedAndBrokenFilesAreNamed() throws {
    let float = Self.tiff(
      width: 2, height: 2, samples: 1, bits: 32, values: [0, 0, 0, 0], sampleFormat: 3)
    #expect {
      try RGBImage(data: float)
    } throws: {
      ($0 as? ImageError)?.kind == .unsupported
        && "\($0)".contains("floating-point")
    }
    let whole = Self.tiff(
      width: 4, height: 4, samples: 3, bits: 8, values: .init(repeating: 9, count: 48))
    #expect(throws: ImageError.self) { try RGBImage(data: whole.prefix(20)) }
  }

  @Test func webPLosslessRoundTrip() throws {
    let (w, h) = (7, 5)
    let pixels = (0..<(w * h * 3)).map { UInt8(($0 * 53) % 256) }
    let original = RGBImage(width: w, height: h, pixels: pixels)
    let bytes = WebPCodec.encodeLossless(original)
    #expect(!bytes.isEmpty)
    #expect(try RGBImage(data: bytes) == original)
    #expect(throws: ImageError.self) { try RGBImage(data: bytes.prefix(bytes.count / 2)) }
  }

  @Test func headersGiveTheSizeBeforeDecoding() {
    let tiff = Self.tiff(
      width: 9, height: 4, samples: 1, bits: 8, values: .init(repeating: 1, count: 36))
    #expect(ImageFormat.detect([UInt8](tiff)) == .tiff)
    #expect(ImageFormat.dimensions([UInt8](tiff)).map { [$0.width, $0.height] } == [9, 4])
    let webp = WebPCodec.encodeLossless(
      RGBImage(width: 6, height: 2, pixels: .init(repeating: 200, count: 36)))
    #expect(ImageFormat.detect([UInt8](webp)) == .webp)
    #expect(ImageFormat.dimensions([UInt8](webp)).map { [$0.width, $0.height] } == [6, 2])
  }
}
