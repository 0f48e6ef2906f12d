import EVCheckpoint
import EVModel
import EVTensor
import Foundation

/// What made an image embedding: the model's name, a hash of its image encoder's weights and
/// its preprocessing. Two encoders with the same weights and preprocessing give the same
/// embeddings, whatever their names (a distillation teacher is identified the same way).
public struct EncoderIdentity: Codable, Sendable, Equatable, CustomStringConvertible {
  public var model: String
  public var weights: String
  public var preprocessing: String

  public init(model: String, weights: String, preprocessing: String) {
    self.model = model
    self.weights = weights
    self.preprocessing = preprocessing
  }

  /// The identity of `model`'s image encoder, from the tensors it was loaded from.
  public init(model: SegmentAnythingModel, name: String, tensors: [String: Tensor]) {
    let side = model.imageEncoder.inputSize
    let scale =
      model.architecture.pixelNormalization == .byteRange
      ? "(v − mean)/std on 0–255" : "v/255 then mean/std"
    self.init(
      model: name,
      weights: weightsFingerprint(tensors.filter { $0.key.hasPrefix("image_encoder.") }),
      preprocessing: "long side to \(side) (PIL bilinear), \(scale), zero pad to \(side)²")
  }

  public var description: String { "\(model) (weights \(weights); \(preprocessing))" }

  /// The same weights and preprocessing, whatever name each was given by.
  public func givesTheSameEmbeddings(as other: EncoderIdentity) -> Bool {
    weights == other.weights && preprocessing == other.preprocessing
  }
}

/// Why an embedding file cannot be used.
public struct EmbeddingFileError: Error, CustomStringConvertible, Equatable {
  public enum Kind: Sendable, Equatable {
    /// Not a safetensors file, or no 1×256×64×64 `image_embeddings`.
    case unreadable
    /// No record of its encoder or image size (an older evsam's file).
    case unidentified
    /// Made by another image encoder.
    case otherEncoder
  }

  public let kind: Kind
  public let description: String
}

/// The file `evsam embed IMAGE -o FILE` writes and `segment --embedding FILE` and the server's
/// `POST /v1/embeddings` read: the 1×256×64×64 image embedding (`image_embeddings`) with what
/// makes it usable later — the image's size and the encoder's identity — so that an embedding
/// is never decoded by a model that did not make it.
public struct EmbeddingFile: Sendable {
  public static let key = "image_embeddings"

  public var embedding: Tensor
  public var originalSize: (height: Int, width: Int)
  public var encoder: EncoderIdentity

  public init(embedding: Tensor, originalSize: (height: Int, width: Int), encoder: EncoderIdentity)
  {
    self.embedding = embedding
    self.originalSize = originalSize
    self.encoder = encoder
  }

  public var metadata: [String: String] {
    [
      "format": "evsam-embedding/1", "model": encoder.model,
      "original_size": "\(originalSize.height),\(originalSize.width)",
      "encoder_weights": encoder.weights, "preprocessing": encoder.preprocessing,
    ]
  }

  /// The file's bytes.
  public func encoded() throws -> Data {
    try SafeTensors.encode([Self.key: embedding], metadata: metadata)
  }

  /// Reads a file's bytes (`name` says which file in errors), refusing one that is not an
  /// embedding or was made by another encoder than `expected` (compared by weights and
  /// preprocessing, not by name).
  public static func read(_ data: Data, name: String, expecting expected: EncoderIdentity)
    throws(EmbeddingFileError) -> EmbeddingFile
  {
    let loaded: LoadedCheckpoint
    do {
      loaded = try SafeTensors.checkpoint(data, file: name)
    } catch {
      throw EmbeddingFileError(
        kind: .unreadable, description: "cannot read the embedding \(name): \(error)")
    }
    let m = loaded.metadata
    guard let embedding = loaded.tensors[key], embedding.shape == [1, 256, 64, 64] else {
      throw EmbeddingFileError(
        kind: .unreadable,
        description:
          "\(name) holds no 1×256×64×64 tensor named \(key): write it with `evsam embed IMAGE -o FILE`"
      )
    }
    let size = (m["original_size"] ?? "").split(separator: ",").compactMap { Int($0) }
    guard size.count == 2, size[0] > 0, size[1] > 0, let weights = m["encoder_weights"],
      let preprocessing = m["preprocessing"]
    else {
      throw EmbeddingFileError(
        kind: .unidentified,
        description:
          "\(name) does not say which encoder made it or for which image size (written by an "
          + "older evsam?): embed the image again")
    }
    let encoder = EncoderIdentity(
      model: m["model"] ?? "unknown", weights: weights, preprocessing: preprocessing)
    guard encoder.givesTheSameEmbeddings(as: expected) else {
      throw EmbeddingFileError(
        kind: .otherEncoder,
        description: "\(name) was made by another image encoder (\(encoder)) than this model's "
          + "(\(expected)): embed the image again with this model")
    }
    return EmbeddingFile(embedding: embedding, originalSize: (size[0], size[1]), encoder: encoder)
  }
}
