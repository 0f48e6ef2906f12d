/// Why an evaluation was refused. Each case reads as one line a user can act on.
public enum EvaluationError: Error, Sendable, Equatable, CustomStringConvertible {
  case unreadableFile(String, detail: String)
  case malformedJSON(file: String, detail: String)
  case invalidAnnotation(String)
  case invalidResults(String)
  case emptyResults(String)
  case unknownImages(what: String, ids: [Int])
  case missingImages(count: Int, examples: [String])
  case imageSizeMismatch(imageID: Int, file: String, annotated: [Int], decoded: [Int])
  case imageDecoding(String)
  case prediction(String)
  case invalidParameters(String)
  case journalMismatch(path: String, detail: String)
  case mergeMismatch(String)
  case writeFailed(path: String, detail: String)

  public var description: String {
    switch self {
    case .unreadableFile(let path, let detail):
      return "cannot read \(path): \(detail)"
    case .malformedJSON(let file, let detail):
      return "\(file) is not a valid annotation/results file: \(detail)"
    case .invalidAnnotation(let message):
      return "invalid annotation data: \(message)"
    case .invalidResults(let message):
      return "invalid results: \(message)"
    case .emptyResults(let message):
      return "nothing to evaluate: \(message)"
    case .unknownImages(let what, let ids):
      let shown = ids.prefix(5).map(String.init).joined(separator: ", ")
      return "\(what) refer to \(ids.count) image id(s) not in the annotation file (e.g. \(shown))"
    case .missingImages(let count, let examples):
      return
        "\(count) image file(s) not found, e.g. \(examples.prefix(3).joined(separator: ", ")); "
        + "check --images, or pass --skip-missing-images to evaluate the rest (they are then counted and reported)"
    case .imageSizeMismatch(let id, let file, let annotated, let decoded):
      return
        "image \(id) (\(file)) is \(decoded[1])×\(decoded[0]) pixels but the annotation file says "
        + "\(annotated[1])×\(annotated[0]); the annotations do not belong to this image file"
    case .imageDecoding(let message):
      return message
    case .prediction(let message):
      return "prediction failed: \(message)"
    case .invalidParameters(let message):
      return message
    case .journalMismatch(let path, let detail):
      return
        "\(path) belongs to a different run (\(detail)); delete it to start over, or use another output path"
    case .mergeMismatch(let message):
      return "cannot merge: \(message)"
    case .writeFailed(let path, let detail):
      return "cannot write \(path): \(detail)"
    }
  }
}
