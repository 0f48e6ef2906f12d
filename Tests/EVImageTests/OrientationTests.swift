import EVImage
import Foundation
import Testing

/// EXIF orientation: a 32×16 JPEG with four solid quadrants (red, green / blue, white),
/// an APP1 Exif segment spliced in after SOI. The expected display layouts are those of
/// PIL's `ImageOps.exif_transpose` (checked with Pillow 13.0).
@Suite struct EXIFOrientation {
  static let red = RGBColor(255, 0, 0)
  static let green = RGBColor(0, 255, 0)
  static let blue = RGBColor(0, 0, 255)
  static let white = RGBColor(255, 255, 255)

  static func quadrantJPEG() throws -> [UInt8] {
    var image = RGBImage(width: 32, height: 16, color: white)
    for y in 0..<16 {
      for x in 0..<32 {
        let color = y < 8 ? (x < 16 ? red : green) : (x < 16 ? blue : white)
        let p = (y * 32 + x) * 3
        image.pixels[p] = color.r
        image.pixels[p + 1] = color.g
        image.pixels[p + 2] = color.b
      }
    }
    return [UInt8](try image.jpegData(quality: 95, subsampling444: true))
  }

  /// An APP1 segment whose IFD0 holds a few tags, orientation among them.
  static func exifSegment(orientation: UInt16, littleEndian: Bool) -> [UInt8] {
    func u16(_ v: UInt16) -> [UInt8] {
      littleEndian ? [UInt8(v & 0xff), UInt8(v >> 8)] : [UInt8(v >> 8), UInt8(v & 0xff)]
    }
    func u32(_ v: UInt32) -> [UInt8] {
      let bytes = [
        UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff),
      ]
      return littleEndian ? bytes.reversed() : bytes
    }
    var tiff: [UInt8] = littleEndian ? [0x49, 0x49] : [0x4D, 0x4D]
    tiff += u16(42) + u32(8) + u16(3)
    tiff += u16(0x010F) + u16(2) + u32(4) + [0x41, 0x42, 0x43, 0x00]  // Make "ABC"
    tiff += u16(0x0112) + u16(3) + u32(1) + u16(orientation) + [0, 0]
    tiff += u16(0x011A) + u16(5) + u32(1) + u32(0)  // XResolution (offset unused here)
    tiff += u32(0)
    let payload = Array("Exif\0\0".utf8) + tiff
    let length = payload.count + 2
    return [0xFF, 0xE1, UInt8(length >> 8), UInt8(length & 0xff)] + payload
  }

  static func quadrants(_ image: RGBImage) -> [RGBColor] {
    let w = image.width
    let h = image.height
    return [(w / 4, h / 4), (3 * w / 4, h / 4), (w / 4, 3 * h / 4), (3 * w / 4, 3 * h / 4)].map {
      let c = image[x: $0.0, y: $0.1]
      // JPEG is lossy: snap each channel to 0 / 255.
      return RGBColor(c.r > 127 ? 255 : 0, c.g > 127 ? 255 : 0, c.b > 127 ? 255 : 0)
    }
  }

  static let expected: [Int: (width: Int, height: Int, [RGBColor])] = [
    1: (32, 16, [red, green, blue, white]),
    2: (32, 16, [green, red, white, blue]),
    3: (32, 16, [white, blue, green, red]),
    4: (32, 16, [blue, white, red, green]),
    5: (16, 32, [red, blue, green, white]),
    6: (16, 32, [blue, red, white, green]),
    7: (16, 32, [white, green, blue, red]),
    8: (16, 32, [green, white, red, blue]),
  ]

  @Test(arguments: 1...8, [true, false])
  func orientation(_ orientation: Int, littleEndian: Bool) throws {
    let jpeg = try Self.quadrantJPEG()
    let spliced =
      Array(jpeg[0..<2])
      + Self.exifSegment(orientation: UInt16(orientation), littleEndian: littleEndian)
      + Array(jpeg[2...])
    let image = try RGBImage(data: Data(spliced))
    let (width, height, colors) = try #require(Self.expected[orientation])
    #expect(image.width == width)
    #expect(image.height == height)
    #expect(Self.quadrants(image) == colors)

    // Opting out keeps the stored layout, as PIL's plain Image.open does.
    let stored = try RGBImage(data: Data(spliced), applyEXIFOrientation: false)
    #expect(stored.width == 32 && stored.height == 16)
    #expect(Self.quadrants(stored) == [Self.red, Self.green, Self.blue, Self.white])
  }

  @Test func invalidOrientationValuesAreIgnored() throws {
    let jpeg = try Self.quadrantJPEG()
    for value: UInt16 in [0, 9, 300] {
      let spliced =
        Array(jpeg[0..<2]) + Self.exifSegment(orientation: value, littleEndian: true)
        + Array(jpeg[2...])
      let image = try RGBImage(data: Data(spliced))
      #expect(image.width == 32 && image.height == 16)
      #expect(Self.quadrants(image) == [Self.red, Self.green, Self.blue, Self.white])
    }
    // A malformed Exif segment (IFD offset past the end) is ignored, not fatal.
    var broken = Self.exifSegment(orientation: 6, littleEndian: true)
    broken[14] = 0xF0
    let image = try RGBImage(data: Data(Array(jpeg[0..<2]) + broken + Array(jpeg[2...])))
    #expect(image.width == 32 && image.height == 16)
  }
}
