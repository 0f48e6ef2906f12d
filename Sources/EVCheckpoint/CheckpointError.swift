/// Everything that can go wrong while reading, writing or verifying a checkpoint. Every case
/// names the file, and the description is a complete sentence a user can act on.
public enum CheckpointError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The file cannot be opened or read.
  case unreadable(file: String, reason: String)
  /// The file is readable but is not a checkpoint in a format we know, or is damaged.
  case malformed(file: String, reason: String)
  /// The file is a valid checkpoint that uses something we do not support (opcode, dtype…).
  case unsupported(file: String, reason: String)
  /// The checkpoint's keys or shapes do not match the model.
  case verificationFailed(file: String, problems: [LoadProblem])
  /// A file cannot be written (SafeTensors.write); nothing is left at the destination.
  case unwritable(file: String, reason: String)
  /// A tensor holds NaN or infinite values (the first such tensor in the file's order, and how
  /// many of its elements are affected): a model built on it would run, yet every output would
  /// be garbage.
  case nonFiniteValues(file: String, key: String, count: Int)

  /// The file the error is about.
  public var file: String {
    switch self {
    case .unreadable(let file, _), .malformed(let file, _), .unsupported(let file, _),
      .verificationFailed(let file, _), .unwritable(let file, _), .nonFiniteValues(let file, _, _):
      return file
    }
  }

  public var description: String {
    switch self {
    case .unreadable(let file, let reason): return "\(file): cannot read: \(reason)"
    case .malformed(let file, let reason): return "\(file): not a valid checkpoint: \(reason)"
    case .unsupported(let file, let reason): return "\(file): unsupported: \(reason)"
    case .unwritable(let file, let reason): return "\(file): cannot write: \(reason)"
    case .nonFiniteValues(let file, let key, let count):
      return "\(file): checkpoint tensor '\(key)' has \(count) non-finite values (NaN/inf)"
    case .verificationFailed(let file, let problems):
      let missing = problems.filter { if case .missing = $0 { true } else { false } }.count
      let unexpected = problems.filter { if case .unexpected = $0 { true } else { false } }.count
      let mismatched = problems.count - missing - unexpected
      var lines = [
        "\(file): checkpoint does not match the model: \(missing) missing, \(unexpected) unexpected, \(mismatched) shape mismatches"
      ]
      lines += problems.map { "  " + $0.description }
      return lines.joined(separator: "\n")
    }
  }
}
