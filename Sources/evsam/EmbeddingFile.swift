import EVCheckpoint
import EVTensor
import EVTraining
import Foundation

/// The file `evsam embed IMAGE -o FILE` writes and `evsam segment --embedding FILE` reads: the
/// 1×256×64×64 image embedding (`image_embeddings`) with what makes it usable later — the
/// image's size, the model's name, a hash of its image encoder's weights and its preprocessing
/// — so that an embedding is never decoded by a model that did not make it.
struct EmbeddingFile {
  static let key = "image_embeddings"

  var embedding: Tensor
  var originalSize: (height: Int, width: Int)
  var encoder: TeacherIdentity

  var metadata: [String: String] {
    [
      "format": "evsam-embedding/1", "model": encoder.model,
      "original_size": "\(originalSize.height),\(originalSize.width)",
      "encoder_weights": encoder.weights, "preprocessing": encoder.preprocessing,
    ]
  }

  func write(to path: String) throws {
    do {
      try SafeTensors.write(
        [Self.key: embedding], metadata: metadata, to: URL(fileURLWithPath: path))
    } catch {
      throw CLIError("cannot write " + fileProblem(error, path: path))
    }
  }

  /// Reads `path`, refusing a file that is not an embedding or was made by another encoder
  /// (`expected`, compared by weights and preprocessing, not by name).
  static func read(_ path: String, expecting expected: TeacherIdentity) throws -> EmbeddingFile {
    let loaded: LoadedCheckpoint
    do {
      loaded = try LoadedCheckpoint(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw CLIError("cannot read the embedding \(path): \(error)")
    }
    let m = loaded.metadata
    guard let embedding = loaded.tensors[key], embedding.shape == [1, 256, 64, 64] else {
      throw CLIError(
        "\(path) holds no 1×256×64×64 tensor named \(key): write it with `evsam embed IMAGE -o FILE`"
      )
    }
    let size = (m["original_size"] ?? "").split(separator: ",").compactMap { Int($0) }
    guard size.count == 2, size[0] > 0, size[1] > 0, let weights = m["encoder_weights"],
      let preprocessing = m["preprocessing"]
    else {
      throw CLIError(
        "\(path) does not say which encoder made it or for which image size (written by an "
          + "older evsam?): embed the image again")
    }
    let encoder = TeacherIdentity(
      model: m["model"] ?? "unknown", weights: weights, preprocessing: preprocessing)
    guard encoder.givesTheSameEmbeddings(as: expected) else {
      throw CLIError(
        "\(path) was made by another image encoder (\(encoder)) than this model's "
          + "(\(expected)): embed the image again with this model")
    }
    return EmbeddingFile(
      embedding: embedding, originalSize: (size[0], size[1]), encoder: encoder)
  }
}
