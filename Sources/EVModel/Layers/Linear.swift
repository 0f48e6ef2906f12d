import EVCheckpoint
import EVTensor

/// nn.Linear over the last dimension. Keys: `weight` (`out × in`), `bias`.
public struct Linear: Sendable {
  public let weight: Tensor
  public let bias: Tensor?
  public let inFeatures: Int
  public let outFeatures: Int

  public init(_ scope: WeightScope, inFeatures: Int, outFeatures: Int, bias: Bool = true) {
    self.inFeatures = inFeatures
    self.outFeatures = outFeatures
    weight = scope.take("weight", shape: [outFeatures, inFeatures])
    self.bias = bias ? scope.take("bias", shape: [outFeatures]) : nil
  }

  public func callAsFunction(_ x: Tensor, activation: Activation = .identity) -> Tensor {
    linear(x, weight: weight, bias: bias, activation: activation)
  }
}

/// nn.LayerNorm over the last dimension. Keys: `weight`, `bias`.
public struct LayerNorm: Sendable {
  public let weight: Tensor
  public let bias: Tensor
  public let eps: Float

  /// `eps` is 1e-6 in SAM's image encoder (`partial(nn.LayerNorm, eps=1e-6)`).
  public init(_ scope: WeightScope, features: Int, eps: Float = 1e-6) {
    weight = scope.take("weight", shape: [features])
    bias = scope.take("bias", shape: [features])
    self.eps = eps
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    layerNorm(x, weight: weight, bias: bias, eps: eps)
  }
}
