import EVPredictor
import Foundation

/// Embedding files on disk, with the command line's one-line errors.
extension EmbeddingFile {
  func write(to path: String) throws {
    let data: Data
    do {
      data = try encoded()
    } catch {
      throw CLIError("cannot write " + fileProblem(error, path: path))
    }
    try writeFile(data, to: URL(fileURLWithPath: path))
  }

  static func read(_ path: String, expecting expected: EncoderIdentity) throws -> EmbeddingFile {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    } catch {
      throw CLIError("cannot read the embedding " + fileProblem(error, path: path))
    }
    do {
      return try EmbeddingFile.read(data, name: path, expecting: expected)
    } catch {
      throw CLIError(error.description)
    }
  }
}
