/// Reads an image's dimensions from its header, so that an oversized image is refused before
/// any pixel is decoded (a small PNG can claim gigapixels).
enum ImageProbe {
  enum Format: String { case png, jpeg }

  static func format(_ bytes: [UInt8]) -> Format? {
    if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
    if bytes.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
    return nil
  }

  /// Width and height as stored (before any EXIF rotation); nil when the header is cut short
  /// or malformed, which the decoder then reports in detail.
  static func dimensions(_ bytes: [UInt8]) -> (width: Int, height: Int)? {
    switch format(bytes) {
    case .png: return pngDimensions(bytes)
    case .jpeg: return jpegDimensions(bytes)
    case nil: return nil
    }
  }

  private static func be32(_ b: [UInt8], _ at: Int) -> Int {
    Int(b[at]) << 24 | Int(b[at + 1]) << 16 | Int(b[at + 2]) << 8 | Int(b[at + 3])
  }

  private static func be16(_ b: [UInt8], _ at: Int) -> Int {
    Int(b[at]) << 8 | Int(b[at + 1])
  }

  /// The IHDR chunk must come first: length, "IHDR", width, height.
  private static func pngDimensions(_ b: [UInt8]) -> (width: Int, height: Int)? {
    guard b.count >= 24, Array(b[12..<16]) == Array("IHDR".utf8) else { return nil }
    return (be32(b, 16), be32(b, 20))
  }

  /// Walks the marker segments up to the first start-of-frame.
  private static func jpegDimensions(_ b: [UInt8]) -> (width: Int, height: Int)? {
    var i = 2
    while i + 3 < b.count {
      guard b[i] == 0xFF else { return nil }
      let marker = b[i + 1]
      if marker == 0xFF {  // fill byte
        i += 1
        continue
      }
      if marker == 0x01 || (0xD0...0xD7).contains(marker) {  // no length field
        i += 2
        continue
      }
      let length = be16(b, i + 2)
      guard length >= 2 else { return nil }
      // SOF0…SOF15 except DHT (C4), JPG (C8) and DAC (CC).
      if (0xC0...0xCF).contains(marker) && ![0xC4, 0xC8, 0xCC].contains(marker) {
        guard i + 9 <= b.count else { return nil }
        return (width: be16(b, i + 7), height: be16(b, i + 5))
      }
      if marker == 0xDA { return nil }  // scan data before any frame header
      i += 2 + length
    }
    return nil
  }
}
