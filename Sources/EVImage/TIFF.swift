import CImageCodecs
import Foundation

// TIFF through libtiff (Sources/CImageCodecs/tiff_codec.c): 8-bit and smaller samples as
// libtiff's RGBA interface reads them, 16-bit gray and RGB stretched from their smallest to
// their largest sample (microscopy and aerial images rarely use the full 16-bit range).
enum TIFFCodec {
  static func isTIFF(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 4
      && (bytes.starts(with: [0x49, 0x49, 0x2A, 0x00])
        || bytes.starts(with: [0x4D, 0x4D, 0x00, 0x2A])
        || bytes.starts(with: [0x49, 0x49, 0x2B, 0x00])
        || bytes.starts(with: [0x4D, 0x4D, 0x00, 0x2B]))
  }

  static func decode(_ bytes: [UInt8], name: String) throws(ImageError) -> RGBImage {
    try decodeRGB8(bytes, name: name, format: "TIFF", evsam_tiff_decode_rgb8)
  }

  /// The first image's size from the header; nil when it cannot be read.
  static func dimensions(_ bytes: [UInt8]) -> (width: Int, height: Int)? {
    var width: UInt32 = 0
    var height: UInt32 = 0
    var message = [CChar](repeating: 0, count: 256)
    let status = bytes.withUnsafeBufferPointer { data in
      message.withUnsafeMutableBufferPointer { message in
        evsam_tiff_dimensions(
          data.baseAddress, data.count, &width, &height, message.baseAddress, message.count)
      }
    }
    return status == EVSAM_OK ? (Int(width), Int(height)) : nil
  }
}
