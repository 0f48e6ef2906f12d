/// Why an image could not be read, decoded, encoded or written. `description` is one line
/// naming the file (or "image data") and the problem.
public struct ImageError: Error, Sendable, Equatable, CustomStringConvertible {
  public enum Kind: Sendable, Equatable {
    /// The file could not be opened or read.
    case unreadable
    /// Neither PNG nor JPEG.
    case unknownFormat
    /// The data breaks the format's rules.
    case corrupt
    /// The data ends before the image does.
    case truncated
    /// A valid file this reader does not handle (e.g. CMYK JPEG).
    case unsupported
    /// Dimensions beyond `ImageLimits.maxPixels`.
    case tooLarge
    /// Encoding or writing failed.
    case encodingFailed
    case writeFailed
  }

  public let kind: Kind
  /// The file path, or "image data" for in-memory input.
  public let source: String
  public let message: String

  public init(_ kind: Kind, source: String, _ message: String) {
    self.kind = kind
    self.source = source
    self.message = message
  }

  public var description: String { "\(source): \(message)" }
}

public enum ImageLimits {
  /// Largest accepted image, in pixels: PIL's decompression-bomb error threshold
  /// (2 × `Image.MAX_IMAGE_PIXELS`), so anything PIL opens opens here too.
  public static let maxPixels = 2 * 89_478_485
}
