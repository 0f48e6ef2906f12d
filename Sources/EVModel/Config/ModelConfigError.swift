import Foundation

/// Why a model configuration could not be read or does not describe a buildable encoder.
/// Every description is a complete sentence that names the file (when there is one) and the field.
public enum ModelConfigError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The file cannot be opened or read.
  case unreadable(file: String, reason: String)
  /// The file is not JSON, or a field has the wrong type or is missing.
  case malformed(file: String?, reason: String)
  /// The JSON is well-formed but the architecture it describes is inconsistent.
  case invalid(file: String?, reason: String)
  /// A variant name that is none of l0, l1, l2, xl0, xl1.
  case unknownVariant(String)

  public var description: String {
    switch self {
    case .unreadable(let file, let reason):
      return "\(file): cannot read model config: \(reason)"
    case .malformed(let file, let reason):
      return "\(file ?? "model config"): not a valid model config: \(reason)"
    case .invalid(let file, let reason):
      return "\(file ?? "model config"): inconsistent architecture: \(reason)"
    case .unknownVariant(let name):
      let known = Variant.allCases.map(\.rawValue).joined(separator: ", ")
      return
        "unknown model variant \"\(name)\"; expected one of \(known) (optionally prefixed by efficientvit-sam-), or SAM's sam-vit-b, sam-vit-l, sam-vit-h"
    }
  }

  /// The same error, naming `file`.
  func naming(_ file: String) -> ModelConfigError {
    switch self {
    case .malformed(nil, let reason): return .malformed(file: file, reason: reason)
    case .invalid(nil, let reason): return .invalid(file: file, reason: reason)
    default: return self
    }
  }
}

/// Turns Foundation's decoding errors into one readable sentence with the JSON path of the field.
func describe(_ error: DecodingError) -> String {
  func path(_ codingPath: [any CodingKey]) -> String {
    let parts = codingPath.map { key in key.intValue.map { "[\($0)]" } ?? key.stringValue }
    let joined = parts.reduce("") { acc, part in
      part.hasPrefix("[") || acc.isEmpty ? acc + part : acc + "." + part
    }
    return joined.isEmpty ? "the top level" : joined
  }
  switch error {
  case .typeMismatch(let type, let context):
    return "\(path(context.codingPath)) should be \(typeName(type)) (\(context.debugDescription))"
  case .valueNotFound(let type, let context):
    return "\(path(context.codingPath)) should be \(typeName(type)) but is null"
  case .keyNotFound(let key, let context):
    return "required field \(path(context.codingPath + [key])) is missing"
  case .dataCorrupted(let context):
    let underlying = (context.underlyingError as NSError?)?.localizedDescription
    return "\(path(context.codingPath)): \(context.debugDescription)"
      + (underlying.map { " (\($0))" } ?? "")
  @unknown default:
    return String(describing: error)
  }
}

private func typeName(_ type: Any.Type) -> String {
  switch type {
  case is Int.Type: return "an integer"
  case is Double.Type: return "a number"
  case is Bool.Type: return "true or false"
  case is String.Type: return "a string"
  default:
    let name = String(describing: type)
    return name.hasPrefix("Array") ? "an array" : name.hasPrefix("Dictionary") ? "an object" : name
  }
}
