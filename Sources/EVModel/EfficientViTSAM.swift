import EVCheckpoint
import EVTensor
import Foundation

/// The whole EfficientViT-SAM model: the EfficientViT image encoder with SAM's prompt encoder
/// and mask decoder, under the official checkpoint keys `image_encoder.*`, `prompt_encoder.*`
/// and `mask_decoder.*`.
public struct EfficientViTSAM: Sendable {
  public let config: ModelConfig
  public let imageEncoder: ImageEncoder
  public let promptEncoder: PromptEncoder
  public let maskDecoder: MaskDecoder

  /// Prompts, the prompt encoder's positional encoding and mask post-processing work in this
  /// frame for every variant, whatever size the encoder sees (`image_size[0]` upstream).
  public static let promptFrameSize = 1024

  /// Builds the model from `reader`. Problems with the weights are recorded by the reader:
  /// call `reader.finish()` afterwards (or use `load(config:checkpoint:)`).
  public init(config: ModelConfig, reader: WeightReader) {
    self.config = config
    let root = reader.root
    imageEncoder = ImageEncoder(config: config, root["image_encoder"])
    promptEncoder = PromptEncoder(root["prompt_encoder"])
    maskDecoder = MaskDecoder(root["mask_decoder"])
  }

  /// Loads an official `.pt` checkpoint (optionally wrapped in `{"state_dict": …}`) or a
  /// safetensors file, verifying strictly that it holds exactly this architecture's keys and
  /// shapes, and only finite values.
  ///
  /// The keys and shapes are compared with what the architecture declares before any tensor
  /// is decoded, so a checkpoint of another variant, or a small hostile file describing huge
  /// tensors, fails at once without allocating them.
  public static func load(config: ModelConfig, checkpoint url: URL) throws(CheckpointError)
    -> EfficientViTSAM
  {
    try loadStrictly(url, declared: declaredParameters(config: config).declared) {
      EfficientViTSAM(config: config, reader: $0)
    }.model
  }

  /// Every key, shape and dtype the architecture declares, in declaration order, without
  /// weights (the model is built on zeros and discarded).
  public static func declaredParameters(config: ModelConfig) -> WeightReader {
    let reader = WeightReader.declaringOnly()
    _ = EfficientViTSAM(config: config, reader: reader)
    return reader
  }
}

/// Reads the checkpoint at `url`, which must hold exactly `declared`, and builds a model from
/// it with `build`; every problem is one error listing all of them. Returns the model and the
/// checkpoint's tensors by key.
func loadStrictly<Model>(
  _ url: URL, declared: [WeightReader.Declared], build: (WeightReader) -> Model
) throws(CheckpointError) -> (model: Model, tensors: [String: Tensor]) {
  let tensors = try Checkpoint.load(contentsOf: url, expecting: declared)
  let reader = WeightReader(tensors, origin: url.path)
  let model = build(reader)
  try reader.finish()
  return (model, tensors)
}
