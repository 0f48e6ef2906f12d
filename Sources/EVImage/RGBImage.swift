import Foundation

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC), as
/// `np.array(Image.open(f).convert("RGB"))` holds it.
public struct RGBImage: Sendable, Equatable {
  public let width: Int
  public let height: Int
  /// `height * width * 3` bytes.
  public var pixels: [UInt8]

  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(width >= 0 && height >= 0, "negative image size \(width)×\(height)")
    precondition(
      pixels.count == width * height * 3,
      "\(width)×\(height) RGB needs \(width * height * 3) bytes, got \(pixels.count)")
    self.width = width
    self.height = height
    self.pixels = pixels
  }

  /// A uniformly coloured image.
  public init(width: Int, height: Int, color: RGBColor) {
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for i in 0..<(width * height) {
      pixels[3 * i] = color.r
      pixels[3 * i + 1] = color.g
      pixels[3 * i + 2] = color.b
    }
    self.init(width: width, height: height, pixels: pixels)
  }

  /// Decodes a PNG, JPEG, TIFF or WebP file (format from its first bytes, not its name).
  ///
  /// `applyEXIFOrientation` rotates/flips JPEGs to their display orientation (EXIF tag
  /// 0x0112), as viewers and `cv2.imread` do. The official evaluation reads images with
  /// `PIL.Image.open(...).convert("RGB")`, which does not, and datasets annotate stored
  /// pixels: pass `false` when prompts or annotations refer to the stored layout.
  public init(contentsOf url: URL, applyEXIFOrientation: Bool = true) throws(ImageError) {
    let name = url.isFileURL ? url.path : url.absoluteString
    let data = try readFile(url, name: name)
    try self.init(bytes: data, name: name, applyEXIFOrientation: applyEXIFOrientation)
  }

  /// Decodes PNG, JPEG, TIFF or WebP bytes; errors name the source as "image data".
  public init(data: Data, applyEXIFOrientation: Bool = true) throws(ImageError) {
    try self.init(
      bytes: [UInt8](data), name: "image data", applyEXIFOrientation: applyEXIFOrientation)
  }

  init(bytes: [UInt8], name: String, applyEXIFOrientation: Bool) throws(ImageError) {
    switch ImageFormat.detect(bytes) {
    case .png:
      self = try PNGCodec.decode(bytes, name: name)
    case .jpeg:
      self = try JPEGCodec.decode(bytes, name: name, applyOrientation: applyEXIFOrientation)
    case .tiff:
      self = try TIFFCodec.decode(bytes, name: name)
    case .webp:
      self = try WebPCodec.decode(bytes, name: name)
    case nil:
      if bytes.isEmpty { throw ImageError(.unknownFormat, source: name, "the file is empty") }
      let head = bytes.prefix(8).map { String(format: "%02X", $0) }.joined(separator: " ")
      throw ImageError(
        .unknownFormat, source: name,
        "not a PNG, JPEG, TIFF or WebP image (it starts with bytes \(head))")
    }
  }

  /// The RGB value at column `x`, row `y`.
  public subscript(x x: Int, y y: Int) -> RGBColor {
    let i = (y * width + x) * 3
    return RGBColor(pixels[i], pixels[i + 1], pixels[i + 2])
  }

  /// PNG bytes (8-bit RGB, no interlace).
  public func pngData() throws(ImageError) -> Data {
    try PNGCodec.encode(pixels, width: width, height: height, channels: 3)
  }

  /// JPEG bytes (4:2:0 unless `subsampling444`), quality 1…100.
  public func jpegData(quality: Int = 90, subsampling444: Bool = false) throws(ImageError) -> Data {
    try JPEGCodec.encode(self, quality: quality, subsampling444: subsampling444)
  }

  /// Writes the image atomically, as JPEG when the extension is .jpg/.jpeg, otherwise PNG.
  public func write(to url: URL) throws(ImageError) {
    let ext = url.pathExtension.lowercased()
    let data = ext == "jpg" || ext == "jpeg" ? try jpegData() : try pngData()
    try writeAtomically(data, to: url)
  }
}

/// An 8-bit single-channel image: masks (0 / 255), scores, grey pictures.
public struct GrayImage: Sendable, Equatable {
  public let width: Int
  public let height: Int
  /// `height * width` bytes, row-major.
  public var pixels: [UInt8]

  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(width >= 0 && height >= 0, "negative image size \(width)×\(height)")
    precondition(
      pixels.count == width * height,
      "\(width)×\(height) gray needs \(width * height) bytes, got \(pixels.count)")
    self.width = width
    self.height = height
    self.pixels = pixels
  }

  /// A binary mask as black (false) / white (true); `mask` is row-major.
  public init(mask: [Bool], width: Int, height: Int) {
    self.init(width: width, height: height, pixels: mask.map { $0 ? 255 : 0 })
  }

  public subscript(x x: Int, y y: Int) -> UInt8 { pixels[y * width + x] }

  /// PNG bytes (8-bit greyscale).
  public func pngData() throws(ImageError) -> Data {
    try PNGCodec.encode(pixels, width: width, height: height, channels: 1)
  }

  /// Writes a greyscale PNG atomically.
  public func write(to url: URL) throws(ImageError) {
    try writeAtomically(try pngData(), to: url)
  }
}

public struct RGBColor: Sendable, Equatable, Hashable {
  public var r: UInt8
  public var g: UInt8
  public var b: UInt8

  public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
    self.r = r
    self.g = g
    self.b = b
  }
}

/// The image formats `RGBImage` decodes, told from their first bytes.
package enum ImageFormat: String, Sendable {
  case png, jpeg, tiff, webp

  /// File name extensions of the formats, lower case (for listing a folder's images).
  package static let fileExtensions: Set<String> = ["png", "jpg", "jpeg", "tif", "tiff", "webp"]

  package static func detect(_ bytes: [UInt8]) -> ImageFormat? {
    if bytes.count >= 8 && Array(bytes[0..<8]) == PNGCodec.signature { return .png }
    if bytes.count >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF { return .jpeg }
    if TIFFCodec.isTIFF(bytes) { return .tiff }
    if WebPCodec.isWebP(bytes) { return .webp }
    return nil
  }

  /// Width and height as stored (before any EXIF rotation), read from the header only, so that
  /// an oversized image is refused before any pixel is decoded (a small file can claim
  /// gigapixels); nil when the header is cut short or malformed (the decoder then says why).
  package static func dimensions(_ bytes: [UInt8]) -> (width: Int, height: Int)? {
    switch detect(bytes) {
    case .png:
      guard bytes.count >= 24, Array(bytes[12..<16]) == Array("IHDR".utf8) else { return nil }
      return (be32(bytes, 16), be32(bytes, 20))
    case .jpeg: return jpegDimensions(bytes)
    case .tiff: return TIFFCodec.dimensions(bytes)
    case .webp: return WebPCodec.dimensions(bytes)
    case nil: return nil
    }
  }

  private static func be32(_ b: [UInt8], _ at: Int) -> Int {
    Int(b[at]) << 24 | Int(b[at + 1]) << 16 | Int(b[at + 2]) << 8 | Int(b[at + 3])
  }

  private static func be16(_ b: [UInt8], _ at: Int) -> Int { Int(b[at]) << 8 | Int(b[at + 1]) }

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

private func readFile(_ url: URL, name: String) throws(ImageError) -> [UInt8] {
  var isDirectory: ObjCBool = false
  guard url.isFileURL else {
    throw ImageError(.unreadable, source: name, "not a file URL")
  }
  guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
    throw ImageError(.unreadable, source: name, "no such file")
  }
  guard !isDirectory.boolValue else {
    throw ImageError(.unreadable, source: name, "is a directory, not an image file")
  }
  do {
    return [UInt8](try Data(contentsOf: url))
  } catch {
    throw ImageError(
      .unreadable, source: name, "cannot read the file (\(error.localizedDescription))")
  }
}

func writeAtomically(_ data: Data, to url: URL) throws(ImageError) {
  do {
    try data.write(to: url, options: .atomic)
  } catch {
    let name = url.isFileURL ? url.path : url.absoluteString
    throw ImageError(
      .writeFailed, source: name, "cannot write the file (\(error.localizedDescription))")
  }
}
