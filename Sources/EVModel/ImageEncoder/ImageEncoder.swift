import EVCheckpoint
import EVTensor

/// The EfficientViT-SAM image encoder (`EfficientViTSamImageEncoder`): backbone, SAM neck and a
/// channel LayerNorm. Takes the preprocessed, padded image `1×3×S×S` (S = `config.imageSize`)
/// and returns the `1×256×64×64` image embedding the mask decoder attends to.
public struct ImageEncoder: Sendable {
  public let config: ModelConfig
  public let backbone: Backbone
  public let neck: SamNeck
  public let norm: LayerNorm2d

  /// Builds the encoder from `scope`, normally `reader.root["image_encoder"]`. Missing or
  /// misshapen weights are recorded by the reader and reported by its `finish()`.
  public init(config: ModelConfig, _ scope: WeightScope) {
    self.config = config
    backbone = Backbone(config: config.backbone, scope["backbone"])
    neck = SamNeck(config: config.neck, scope["neck"])
    norm = LayerNorm2d(scope["norm"], channels: ModelConfig.embeddingChannels)
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    checkInput(x)
    return norm(neck(backbone(x)))
  }

  /// Every tensor the golden files hold: `backbone.stage<N>`, `neck` (before the LayerNorm) and
  /// `embedding`.
  public func forwardWithIntermediates(_ x: Tensor) -> [String: Tensor] {
    checkInput(x)
    let stages = backbone(x)
    var result: [String: Tensor] = [:]
    for (i, t) in stages.enumerated() { result["backbone.stage\(i)"] = t }
    let beforeNorm = neck(stages)
    result["neck"] = beforeNorm
    result["embedding"] = norm(beforeNorm)
    return result
  }

  private func checkInput(_ x: Tensor) {
    precondition(
      x.rank == 4 && x.dim(1) == config.backbone.inChannels,
      "the image encoder takes N×\(config.backbone.inChannels)×H×W images, got \(x.shape)")
  }

  /// Multiply-accumulates of one encoder pass (batch 1) at `config.imageSize`: every
  /// convolution (`Cout·Cin/groups·kh·kw·Hout·Wout`) and the linear attention's two matrix
  /// products per head. Bicubic resizes, activations, normalisation, residual adds and the
  /// attention's division are elementwise and not counted.
  public var multiplyAccumulates: Int {
    multiplyAccumulatesByPart().reduce(0) { $0 + $1.macs }
  }

  /// `multiplyAccumulates` split into `backbone.stage<N>` and `neck`.
  public func multiplyAccumulatesByPart() -> [(part: String, macs: Int)] {
    let perStage = backbone.multiplyAccumulatesPerStage(
      input: FeatureSize(square: config.imageSize))
    var parts = perStage.enumerated().map {
      (part: "backbone.stage\($0.offset)", macs: $0.element.macs)
    }
    parts.append((part: "neck", macs: neck.multiplyAccumulates(stageSizes: perStage.map(\.output))))
    return parts
  }
}
