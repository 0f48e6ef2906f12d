import Foundation

/// Builds PNG files of any colour type and bit depth for decoder tests, independently of the
/// code under test: scanlines with filter type 0 in a zlib stream of stored (uncompressed)
/// DEFLATE blocks, chunk CRCs and the Adler-32 computed here.
enum PNGBuilder {
  static func crc32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xffff_ffff
    for b in bytes {
      c ^= UInt32(b)
      for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    }
    return c ^ 0xffff_ffff
  }

  static func bigEndian(_ v: UInt32) -> [UInt8] {
    [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
  }

  static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    let body = Array(type.utf8) + data
    return bigEndian(UInt32(data.count)) + body + bigEndian(crc32(body))
  }

  static func zlibStored(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x78, 0x01]
    var offset = 0
    repeat {
      let n = min(65_535, data.count - offset)
      let final: UInt8 = offset + n == data.count ? 1 : 0
      out += [final, UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8((~n >> 8) & 0xff)]
      out += data[offset..<(offset + n)]
      offset += n
    } while offset < data.count
    var a: UInt32 = 1
    var b: UInt32 = 0
    for byte in data {
      a = (a + UInt32(byte)) % 65_521
      b = (b + a) % 65_521
    }
    return out + bigEndian(b << 16 | a)
  }

  /// A PNG from raw (unfiltered) scanlines; `interlaced` sets the IHDR flag only, the caller
  /// supplies the Adam7 pass scanlines in order.
  static func png(
    width: Int, height: Int, bitDepth: UInt8, colorType: UInt8, scanlines: [[UInt8]],
    interlaced: Bool = false, chunksBeforeData: [[UInt8]] = []
  ) -> [UInt8] {
    let ihdr: [UInt8] =
      bigEndian(UInt32(width)) + bigEndian(UInt32(height))
      + [bitDepth, colorType, 0, 0, interlaced ? 1 : 0]
    let raw: [UInt8] = scanlines.flatMap { [UInt8(0)] + $0 }
    let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    let extra: [UInt8] = chunksBeforeData.flatMap { $0 }
    return signature + chunk("IHDR", ihdr) + extra + chunk("IDAT", zlibStored(raw))
      + chunk("IEND", [])
  }

  /// 16-bit samples as big-endian bytes.
  static func samples16(_ values: [UInt16]) -> [UInt8] {
    values.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
  }
}
