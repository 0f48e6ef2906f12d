import EVCheckpoint
import EVTensor
import Foundation

/// What `--model` or `--config` names: an EfficientViT-SAM variant, or one of SAM's own ViT
/// image encoders. Both sit under the same prompt encoder and mask decoder.
public enum Architecture: Sendable, Equatable {
  case efficientViT(ModelConfig)
  case samViT(SamViTConfig)

  /// A published model by name: `l0` … `xl1` (or `efficientvit-sam-l0` …), `sam-vit-b|l|h`.
  public static func named(_ name: String) throws(ModelConfigError) -> (
    architecture: Architecture, modelName: String
  ) {
    if let sam = SamViTVariant(name: name) {
      return (.samViT(.preset(sam)), sam.modelName)
    }
    let variant = try Variant.parse(name)
    return (.efficientViT(.preset(variant)), variant.modelName)
  }

  /// Reads a JSON architecture: an EfficientViT-SAM config (`backbone`, `neck`, `image_size`)
  /// or the constructor arguments of SAM's `ImageEncoderViT` (`embed_dim`, `depth`, …),
  /// recognised by its keys.
  public static func load(json url: URL) throws(ModelConfigError) -> Architecture {
    let data: Data
    do {
      data = try Data(contentsOf: url)
    } catch {
      throw .unreadable(file: url.path, reason: error.localizedDescription)
    }
    let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    do {
      if let object, SamViTConfig.recognises(keys: Set(object.keys)) {
        return .samViT(try SamViTConfig.decode(data))
      }
      return .efficientViT(try ModelConfig.decode(data))
    } catch {
      throw error.naming(url.path)
    }
  }

  /// Side of the square image the encoder sees: 512 (L models), 1024 (XL, SAM).
  public var encoderInputSize: Int {
    switch self {
    case .efficientViT(let config): config.imageSize
    case .samViT(let config): config.imageSize
    }
  }
}

/// An image encoder the SAM decoder can sit on: a preprocessed `N×3×S×S` image in, the
/// `N×256×64×64` embedding out.
public protocol ImageEncoding: Sendable {
  /// S, the side of the square input.
  var inputSize: Int { get }
  func callAsFunction(_ x: Tensor) -> Tensor
  /// The embedding and every intermediate the golden files hold, for the first image.
  func forwardWithIntermediates(_ x: Tensor) -> [String: Tensor]
  /// Multiply-accumulates of one pass for one image.
  var multiplyAccumulates: Int { get }
  /// `multiplyAccumulates` by part of the encoder.
  func multiplyAccumulatesByPart() -> [(part: String, macs: Int)]
}

extension ImageEncoder: ImageEncoding {
  public var inputSize: Int { config.imageSize }
}

extension SamViTEncoder: ImageEncoding {
  public var inputSize: Int { config.imageSize }
}

/// A whole promptable model, whichever its image encoder: the official checkpoint keys
/// `image_encoder.*`, `prompt_encoder.*` and `mask_decoder.*`.
public struct SegmentAnythingModel: Sendable {
  public let architecture: Architecture
  public let imageEncoder: any ImageEncoding
  public let promptEncoder: PromptEncoder
  public let maskDecoder: MaskDecoder

  /// Builds the model from `reader`; call `reader.finish()` afterwards (or use `load`).
  public init(architecture: Architecture, reader: WeightReader) {
    switch architecture {
    case .efficientViT(let config):
      self.init(EfficientViTSAM(config: config, reader: reader))
    case .samViT(let config):
      let root = reader.root
      self.init(
        architecture: architecture,
        imageEncoder: SamViTEncoder(config: config, root["image_encoder"]),
        promptEncoder: PromptEncoder(root["prompt_encoder"]),
        maskDecoder: MaskDecoder(root["mask_decoder"]))
    }
  }

  private init(
    architecture: Architecture, imageEncoder: any ImageEncoding, promptEncoder: PromptEncoder,
    maskDecoder: MaskDecoder
  ) {
    self.architecture = architecture
    self.imageEncoder = imageEncoder
    self.promptEncoder = promptEncoder
    self.maskDecoder = maskDecoder
  }

  public init(_ model: EfficientViTSAM) {
    self.init(
      architecture: .efficientViT(model.config), imageEncoder: model.imageEncoder,
      promptEncoder: model.promptEncoder, maskDecoder: model.maskDecoder)
  }

  /// Loads a checkpoint strictly, as `EfficientViTSAM.load` does: keys and shapes are
  /// compared with the architecture's before any tensor is decoded.
  public static func load(architecture: Architecture, checkpoint url: URL) throws(CheckpointError)
    -> SegmentAnythingModel
  {
    try loadWithTensors(architecture: architecture, checkpoint: url).model
  }

  /// `load`, also returning the checkpoint's tensors by key (for training from them, or a
  /// fingerprint of the weights).
  public static func loadWithTensors(architecture: Architecture, checkpoint url: URL)
    throws(CheckpointError) -> (model: SegmentAnythingModel, tensors: [String: Tensor])
  {
    try loadStrictly(url, declared: declaredParameters(architecture: architecture).declared) {
      SegmentAnythingModel(architecture: architecture, reader: $0)
    }
  }

  /// Every key, shape and dtype the architecture declares, in declaration order.
  public static func declaredParameters(architecture: Architecture) -> WeightReader {
    let reader = WeightReader.declaringOnly()
    _ = SegmentAnythingModel(architecture: architecture, reader: reader)
    return reader
  }
}
