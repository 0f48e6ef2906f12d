import CWebP
import Foundation

// WebP (lossy, lossless, with or without alpha, which is dropped) through libwebp.
package enum WebPCodec {
  /// "RIFF", a size, "WEBP".
  static func isWebP(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 12 && bytes.starts(with: Array("RIFF".utf8))
      && Array(bytes[8..<12]) == Array("WEBP".utf8)
  }

  static func dimensions(_ bytes: [UInt8]) -> (width: Int, height: Int)? {
    var width: Int32 = 0
    var height: Int32 = 0
    let ok = bytes.withUnsafeBufferPointer {
      WebPGetInfo($0.baseAddress, $0.count, &width, &height)
    }
    return ok != 0 ? (Int(width), Int(height)) : nil
  }

  static func decode(_ bytes: [UInt8], name: String) throws(ImageError) -> RGBImage {
    guard let (width, height) = dimensions(bytes), width > 0, height > 0 else {
      throw ImageError(.corrupt, source: name, "corrupt WebP: no valid header")
    }
    guard width * height <= ImageLimits.maxPixels else {
      throw ImageError(
        .tooLarge, source: name,
        "image of \(width)×\(height) pixels exceeds the limit of \(ImageLimits.maxPixels) pixels")
    }
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    let decoded = bytes.withUnsafeBufferPointer { data in
      pixels.withUnsafeMutableBufferPointer { out in
        WebPDecodeRGBInto(
          data.baseAddress, data.count, out.baseAddress, out.count, Int32(width * 3))
      }
    }
    guard decoded != nil else {
      throw ImageError(.corrupt, source: name, "corrupt or truncated WebP")
    }
    return RGBImage(width: width, height: height, pixels: pixels)
  }

  /// Lossless WebP bytes of `image` (for tests and round trips).
  package static func encodeLossless(_ image: RGBImage) -> Data {
    var output: UnsafeMutablePointer<UInt8>? = nil
    let size = image.pixels.withUnsafeBufferPointer {
      WebPEncodeLosslessRGB(
        $0.baseAddress, Int32(image.width), Int32(image.height), Int32(image.width * 3), &output)
    }
    defer { WebPFree(output) }
    guard let output, size > 0 else { return Data() }
    return Data(bytes: output, count: size)
  }
}
