import EVCheckpoint
import EVTensor

/// LayerNorm over the channels of an NCHW map (efficientvit's and SAM's `LayerNorm2d`):
/// subtract the channel mean, divide by the root of the mean square plus eps, scale and shift
/// per channel. Keys: `weight`, `bias`.
public struct LayerNorm2d: Sendable {
  public let weight: Tensor
  public let bias: Tensor
  public let eps: Float

  /// `eps` is 1e-6 everywhere in EfficientViT-SAM (`set_norm_eps(1e-6)`).
  public init(_ scope: WeightScope, channels: Int, eps: Float = 1e-6) {
    weight = scope.take("weight", shape: [channels])
    bias = scope.take("bias", shape: [channels])
    self.eps = eps
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    layerNorm2d(x, weight: weight, bias: bias, eps: eps)
  }
}
