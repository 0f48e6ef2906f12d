import EVCheckpoint
import EVTensor
import Foundation

/// Locates `../shared/fixtures` (beside the project root). Under CI (`CI=true`) a missing folder
/// is a failure, never a skip: tests call `Fixtures.require()` and let the error fail them.
public enum Fixtures {
  public struct Missing: Error, CustomStringConvertible {
    public let path: String
    public var description: String {
      "golden fixtures not found at \(path); they live in ../shared/fixtures beside the project"
    }
  }

  /// The project root, found from this source file's location.
  public static let projectRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  public static var directory: URL {
    if let override = ProcessInfo.processInfo.environment["EVSAM_FIXTURES"] {
      return URL(fileURLWithPath: override)
    }
    return projectRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures")
  }

  public static var available: Bool {
    FileManager.default.fileExists(atPath: directory.appendingPathComponent("manifests").path)
  }

  /// The fixtures folder, or a thrown error. Tests must not skip when this throws.
  public static func require() throws -> URL {
    guard available else { throw Missing(path: directory.path) }
    return directory
  }

  public static func url(_ relative: String) throws -> URL {
    try require().appendingPathComponent(relative)
  }

  public static func golden(_ name: String) throws -> [String: Tensor] {
    try SafeTensors.read(contentsOf: url("golden/\(name).safetensors"))
  }
}

/// ‖a − b‖₂ / ‖b‖₂, the tolerance measure of `../shared/README.md`.
public func relativeL2Error(_ a: Tensor, _ b: Tensor) -> Double {
  precondition(a.shape == b.shape, "shapes differ: \(a.shape) vs \(b.shape)")
  var diff = 0.0
  var norm = 0.0
  for i in 0..<a.count {
    let d = Double(a.storage[i]) - Double(b.storage[i])
    diff += d * d
    norm += Double(b.storage[i]) * Double(b.storage[i])
  }
  return norm == 0 ? diff.squareRoot() : (diff / norm).squareRoot()
}

public func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float {
  precondition(a.shape == b.shape, "shapes differ: \(a.shape) vs \(b.shape)")
  var m: Float = 0
  for i in 0..<a.count { m = max(m, abs(a.storage[i] - b.storage[i])) }
  return m
}
