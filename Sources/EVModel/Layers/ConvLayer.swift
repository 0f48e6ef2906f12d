import EVCheckpoint
import EVTensor

/// efficientvit's `ConvLayer`: a convolution with "same" padding, an optional bias, an optional
/// eval-mode BatchNorm and an optional activation. The BatchNorm is folded into the convolution
/// once, at load, so a forward pass is a single fused convolution.
public struct ConvLayer: EncoderLayer {
  /// The eps of every BatchNorm of EfficientViT-SAM: the official model calls
  /// `set_norm_eps(1e-6)`, so PyTorch's default 1e-5 would be wrong.
  public static let batchNormEps: Float = 1e-6

  public let inChannels: Int
  public let outChannels: Int
  public let kernelSize: Int
  public let stride: Int
  public let groups: Int
  public let activation: Activation
  /// `[out, in/groups, k, k]`, BatchNorm folded in.
  public let weight: Tensor
  /// Conv bias and/or the folded BatchNorm shift; nil when the layer has neither.
  public let bias: Tensor?
  /// The weights in the Winograd domain, prepared once at load, for the dense 3×3 stride-1
  /// convs that `conv2dWinograd` computes with 4× fewer multiplies.
  public let winograd: WinogradWeights?

  /// Reads `conv.weight`, `conv.bias` (when `useBias`) and `norm.*` (when `norm`) from `scope`.
  public init(
    _ scope: WeightScope, inChannels: Int, outChannels: Int, kernelSize: Int = 3,
    stride: Int = 1, groups: Int = 1, useBias: Bool = false, norm: Bool = true,
    activation: Activation = .identity
  ) {
    precondition(kernelSize % 2 == 1, "ConvLayer pads to 'same' and needs an odd kernel size")
    precondition(
      inChannels % groups == 0 && outChannels % groups == 0,
      "channels \(inChannels)→\(outChannels) do not divide into \(groups) groups")
    let conv = scope["conv"]
    var weight = conv.take(
      "weight", shape: [outChannels, inChannels / groups, kernelSize, kernelSize])
    var bias = useBias ? conv.take("bias", shape: [outChannels]) : nil
    if norm {
      let bn = scope["norm"]
      let gamma = bn.take("weight", shape: [outChannels])
      let beta = bn.take("bias", shape: [outChannels])
      let mean = bn.take("running_mean", shape: [outChannels], buffer: true)
      let variance = bn.take("running_var", shape: [outChannels], buffer: true)
      _ = bn.take("num_batches_tracked", shape: [], buffer: true, dtype: .int64)
      (weight, bias) = foldBatchNorm(
        weight: weight, bias: bias, gamma: gamma, beta: beta, mean: mean, variance: variance,
        eps: Self.batchNormEps)
    }
    // Declaring a model's keys (before a checkpoint is decoded) builds it on zeros that never
    // run; transforming them would double the cost of loading an XL model.
    self.init(
      weight: weight, bias: bias, stride: stride, groups: groups, activation: activation,
      prepareWinograd: !scope.reader.isDeclaringOnly)
  }

  /// A bare `nn.Conv2d` with "same" padding: keys `weight` and `bias` directly under `scope`.
  public static func plain(
    _ scope: WeightScope, inChannels: Int, outChannels: Int, kernelSize: Int, groups: Int = 1,
    useBias: Bool = false
  ) -> ConvLayer {
    let weight = scope.take(
      "weight", shape: [outChannels, inChannels / groups, kernelSize, kernelSize])
    let bias = useBias ? scope.take("bias", shape: [outChannels]) : nil
    return ConvLayer(weight: weight, bias: bias, stride: 1, groups: groups, activation: .identity)
  }

  /// A layer from prepared weights `[out, in/groups, k, k]`. Without `prepareWinograd` the
  /// layer always runs the direct convolution.
  public init(
    weight: Tensor, bias: Tensor?, stride: Int, groups: Int, activation: Activation,
    prepareWinograd: Bool = true
  ) {
    precondition(weight.rank == 4 && weight.dim(2) == weight.dim(3) && weight.dim(2) % 2 == 1)
    self.weight = weight
    self.bias = bias
    self.outChannels = weight.dim(0)
    self.inChannels = weight.dim(1) * groups
    self.kernelSize = weight.dim(2)
    self.stride = stride
    self.groups = groups
    self.activation = activation
    winograd =
      prepareWinograd
        && WinogradWeights.applies(
          kernelSize: weight.dim(2), stride: stride, padding: weight.dim(2) / 2, groups: groups,
          inChannels: weight.dim(1) * groups, outChannels: weight.dim(0))
      ? WinogradWeights(weight: weight) : nil
  }

  public var padding: Int { kernelSize / 2 }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    if let winograd {
      return conv2dWinograd(x, weights: winograd, bias: bias, activation: activation)
    }
    return conv2d(
      x, weight: weight, bias: bias, stride: stride, padding: padding, groups: groups,
      activation: activation)
  }

  public func outputSize(_ input: FeatureSize) -> FeatureSize {
    FeatureSize(
      height: (input.height + 2 * padding - kernelSize) / stride + 1,
      width: (input.width + 2 * padding - kernelSize) / stride + 1)
  }

  public func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize) {
    let out = outputSize(input)
    let perPixel = outChannels * (inChannels / groups) * kernelSize * kernelSize
    return (perPixel * out.pixels, out)
  }
}
