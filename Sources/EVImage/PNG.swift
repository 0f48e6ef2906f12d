import CImageCodecs
import Foundation

// PNG through libpng's low-level API, wrapped in C (Sources/CImageCodecs) because libpng
// reports errors by longjmp, which must not cross Swift frames.
enum PNGCodec {
  static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

  /// PNG bytes → RGB with the pixel values of PIL's `Image.open(f).convert("RGB")`.
  static func decode(_ bytes: [UInt8], name: String) throws(ImageError) -> RGBImage {
    try decodeRGB8(bytes, name: name, format: "PNG", evsam_png_decode_rgb8)
  }

  /// 8-bit gray (1 channel), RGB (3) or RGBA (4) → PNG bytes.
  static func encode(_ pixels: [UInt8], width: Int, height: Int, channels: Int) throws(ImageError)
    -> Data
  {
    guard width > 0, height > 0, width <= Int(Int32.max) / channels, height <= Int(Int32.max) else {
      throw ImageError(
        .encodingFailed, source: "PNG encoder", "cannot encode a \(width)×\(height) image as PNG")
    }
    precondition(pixels.count == width * height * channels)
    var png: UnsafeMutablePointer<UInt8>? = nil
    var size = 0
    var message = [CChar](repeating: 0, count: 256)
    let status: Int = pixels.withUnsafeBufferPointer { input in
      message.withUnsafeMutableBufferPointer { message in
        Int(
          evsam_png_encode(
            input.baseAddress, UInt32(width), UInt32(height), Int32(channels), &png, &size,
            message.baseAddress, message.count))
      }
    }
    defer { evsam_free(png) }
    guard status == EVSAM_OK, let png else {
      let text = String(
        decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      throw ImageError(
        .encodingFailed, source: "PNG encoder", "libpng could not encode the image: \(text)")
    }
    return Data(bytes: png, count: size)
  }
}

/// The C layer's decoders (`evsam_*_decode_rgb8`): their call, and their result codes as
/// `ImageError`s naming `format` and the source.
func decodeRGB8(
  _ bytes: [UInt8], name: String, format: String,
  _ decode: (
    UnsafePointer<UInt8>?, Int, Int, UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<UInt32>?, UnsafeMutablePointer<CChar>?,
    Int
  ) -> Int32
) throws(ImageError) -> RGBImage {
  var pixels: UnsafeMutablePointer<UInt8>? = nil
  var width: UInt32 = 0
  var height: UInt32 = 0
  var message = [CChar](repeating: 0, count: 512)
  let status: Int = bytes.withUnsafeBufferPointer { data in
    message.withUnsafeMutableBufferPointer { message in
      Int(
        decode(
          data.baseAddress, data.count, ImageLimits.maxPixels, &pixels, &width, &height,
          message.baseAddress, message.count))
    }
  }
  defer { evsam_free(pixels) }
  guard status == EVSAM_OK, let pixels else {
    let text = String(
      decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    switch status {
    case EVSAM_TRUNCATED: throw ImageError(.truncated, source: name, "truncated \(format): \(text)")
    case EVSAM_TOO_LARGE: throw ImageError(.tooLarge, source: name, text)
    case EVSAM_OUT_OF_MEMORY:
      throw ImageError(.tooLarge, source: name, "out of memory decoding the \(format)")
    case EVSAM_UNSUPPORTED: throw ImageError(.unsupported, source: name, text)
    default:
      throw ImageError(
        .corrupt, source: name, text.hasPrefix("corrupt") ? text : "corrupt \(format): \(text)")
    }
  }
  return RGBImage(
    width: Int(width), height: Int(height),
    pixels: [UInt8](UnsafeBufferPointer(start: pixels, count: Int(width) * Int(height) * 3)))
}
