import CTurboJPEG
import Foundation

// JPEG through TurboJPEG with its default (accurate integer DCT, fancy upsampling) settings —
// the libjpeg-turbo defaults PIL and OpenCV decode with, so the pixels agree with theirs.
enum JPEGCodec {
  static func decode(_ bytes: [UInt8], name: String, applyOrientation: Bool) throws(ImageError)
    -> RGBImage
  {
    guard let handle = tjInitDecompress() else {
      throw ImageError(.unsupported, source: name, "cannot start the JPEG decoder")
    }
    defer { tjDestroy(handle) }
    func libraryMessage() -> String { String(cString: tjGetErrorStr2(handle)) }
    let complete = JPEGStructure.hasEndOfImage(bytes)

    var width: Int32 = 0
    var height: Int32 = 0
    var subsampling: Int32 = 0
    var colorspace: Int32 = 0
    let headerStatus = bytes.withUnsafeBufferPointer {
      tjDecompressHeader3(
        handle, $0.baseAddress, UInt($0.count), &width, &height, &subsampling, &colorspace)
    }
    guard headerStatus == 0 else {
      if !complete {
        throw ImageError(.truncated, source: name, "truncated JPEG: \(libraryMessage())")
      }
      throw ImageError(.corrupt, source: name, "corrupt JPEG: \(libraryMessage())")
    }
    guard width > 0, height > 0 else {
      throw ImageError(.corrupt, source: name, "corrupt JPEG: image size \(width)×\(height)")
    }
    guard Int(width) * Int(height) <= ImageLimits.maxPixels else {
      throw ImageError(
        .tooLarge, source: name,
        "image of \(width)×\(height) pixels exceeds the limit of \(ImageLimits.maxPixels) pixels")
    }
    if colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue) {
      throw ImageError(
        .unsupported, source: name, "CMYK JPEG images are not supported; convert the image to RGB")
    }

    var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * 3)
    let status = bytes.withUnsafeBufferPointer { source in
      pixels.withUnsafeMutableBufferPointer { out in
        tjDecompress2(
          handle, source.baseAddress, UInt(source.count), out.baseAddress, width, 0, height,
          Int32(TJPF_RGB.rawValue), TJFLAG_LIMITSCANS)
      }
    }
    if status != 0 {
      // Warnings (e.g. extraneous bytes between segments) still deliver the whole image;
      // PIL accepts such files, so only a missing end of image turns one into an error.
      let fatal = tjGetErrorCode(handle) != Int32(TJERR_WARNING.rawValue)
      if !complete {
        throw ImageError(.truncated, source: name, "truncated JPEG: \(libraryMessage())")
      }
      if fatal {
        throw ImageError(.corrupt, source: name, "corrupt JPEG: \(libraryMessage())")
      }
    }
    let image = RGBImage(width: Int(width), height: Int(height), pixels: pixels)
    guard applyOrientation, let orientation = JPEGStructure.exifOrientation(bytes) else {
      return image
    }
    return image.applyingEXIFOrientation(orientation)
  }

  static func encode(_ image: RGBImage, quality: Int, subsampling444: Bool) throws(ImageError)
    -> Data
  {
    func failure(_ message: String) -> ImageError {
      ImageError(.encodingFailed, source: "JPEG encoder", message)
    }
    guard (1...100).contains(quality) else {
      throw failure("JPEG quality \(quality) is not in 1…100")
    }
    guard image.width > 0, image.height > 0, image.width <= 65_535, image.height <= 65_535 else {
      throw failure("cannot encode a \(image.width)×\(image.height) image as JPEG")
    }
    guard let handle = tjInitCompress() else { throw failure("cannot start the JPEG encoder") }
    defer { tjDestroy(handle) }
    var buffer: UnsafeMutablePointer<UInt8>? = nil
    var size: UInt = 0
    let subsampling = subsampling444 ? TJSAMP_444 : TJSAMP_420
    let status = image.pixels.withUnsafeBufferPointer {
      tjCompress2(
        handle, $0.baseAddress, Int32(image.width), 0, Int32(image.height),
        Int32(TJPF_RGB.rawValue),
        &buffer, &size, Int32(subsampling.rawValue), Int32(quality), 0)
    }
    defer { if let buffer { tjFree(buffer) } }
    guard status == 0, let buffer else {
      throw failure(
        "TurboJPEG could not encode the image: \(String(cString: tjGetErrorStr2(handle)))")
    }
    return Data(bytes: buffer, count: Int(size))
  }
}

/// Marker-level reading of a JPEG stream, bounds-checked throughout.
enum JPEGStructure {
  /// Whether the stream reaches an EOI marker: walks the segments and skips entropy-coded
  /// data (where 0xFF is followed by 0x00 stuffing or an RSTn marker).
  static func hasEndOfImage(_ bytes: [UInt8]) -> Bool {
    var i = 2
    while i + 1 < bytes.count {
      guard bytes[i] == 0xFF else {
        i += 1  // entropy-coded data or garbage between segments
        continue
      }
      let marker = bytes[i + 1]
      switch marker {
      case 0xD9:
        return true
      case 0xFF, 0x00, 0x01, 0xD0...0xD7:
        i += marker == 0xFF ? 1 : 2  // fill byte, stuffing, TEM or RSTn: no length field
      default:
        guard i + 3 < bytes.count else { return false }
        let length = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
        i += 2 + length
      }
    }
    return false
  }

  /// The EXIF orientation (1…8) of the first APP1 Exif segment, if there is a valid one.
  static func exifOrientation(_ bytes: [UInt8]) -> Int? {
    var i = 2
    while i + 3 < bytes.count, bytes[i] == 0xFF {
      let marker = bytes[i + 1]
      if marker == 0xFF {
        i += 1
        continue
      }
      if marker == 0xDA || marker == 0xD9 { return nil }  // image data starts: no EXIF before it
      if (0xD0...0xD7).contains(marker) || marker == 0x01 {
        i += 2
        continue
      }
      let length = Int(bytes[i + 2]) << 8 | Int(bytes[i + 3])
      guard length >= 2, i + 2 + length <= bytes.count else { return nil }
      let start = i + 4
      let end = i + 2 + length
      if marker == 0xE1, end - start >= 6,
        Array(bytes[start..<(start + 6)]) == Array("Exif\0\0".utf8)
      {
        return orientation(inTIFF: Array(bytes[(start + 6)..<end]))
      }
      i = end
    }
    return nil
  }

  private static func orientation(inTIFF tiff: [UInt8]) -> Int? {
    guard tiff.count >= 8 else { return nil }
    let little: Bool
    switch (tiff[0], tiff[1]) {
    case (0x49, 0x49): little = true
    case (0x4D, 0x4D): little = false
    default: return nil
    }
    func u16(_ at: Int) -> Int? {
      guard at >= 0, at + 2 <= tiff.count else { return nil }
      return little
        ? Int(tiff[at]) | Int(tiff[at + 1]) << 8
        : Int(tiff[at]) << 8 | Int(tiff[at + 1])
    }
    func u32(_ at: Int) -> Int? {
      guard let a = u16(at), let b = u16(at + 2) else { return nil }
      return little ? a | b << 16 : a << 16 | b
    }
    guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
    for entry in 0..<count {
      let at = ifd + 2 + entry * 12
      guard let tag = u16(at), let type = u16(at + 2) else { return nil }
      guard tag == 0x0112 else { continue }
      // SHORT as the standard says; some writers use LONG.
      let value = type == 3 ? u16(at + 8) : type == 4 ? u32(at + 8) : nil
      guard let value, (1...8).contains(value) else { return nil }
      return value
    }
    return nil
  }
}

extension RGBImage {
  /// The image as it is displayed for an EXIF orientation (1…8): 2 mirrors, 3 rotates 180°,
  /// 4 flips vertically, 5 transposes, 6 rotates 90° clockwise, 7 transverses, 8 rotates 90°
  /// anticlockwise — the transforms of PIL's `ImageOps.exif_transpose`. Other values return
  /// the image unchanged.
  public func applyingEXIFOrientation(_ orientation: Int) -> RGBImage {
    guard (2...8).contains(orientation) else { return self }
    let w = width
    let h = height
    let swapsAxes = orientation >= 5
    let outWidth = swapsAxes ? h : w
    let outHeight = swapsAxes ? w : h
    var out = [UInt8](repeating: 0, count: pixels.count)
    pixels.withUnsafeBufferPointer { src in
      out.withUnsafeMutableBufferPointer { dst in
        for r in 0..<outHeight {
          for c in 0..<outWidth {
            // Source (row, column) of display pixel (r, c).
            let (sr, sc): (Int, Int) =
              switch orientation {
              case 2: (r, w - 1 - c)
              case 3: (h - 1 - r, w - 1 - c)
              case 4: (h - 1 - r, c)
              case 5: (c, r)
              case 6: (h - 1 - c, r)
              case 7: (h - 1 - c, w - 1 - r)
              default: (c, w - 1 - r)  // 8
              }
            let s = (sr * w + sc) * 3
            let d = (r * outWidth + c) * 3
            dst[d] = src[s]
            dst[d + 1] = src[s + 1]
            dst[d + 2] = src[s + 2]
          }
        }
      }
    }
    return RGBImage(width: outWidth, height: outHeight, pixels: out)
  }
}
