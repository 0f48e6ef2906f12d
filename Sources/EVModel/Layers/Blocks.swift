import EVCheckpoint
import EVTensor

/// Per-convolution settings of a multi-conv block: bias, BatchNorm and activation of each conv.
/// The official blocks take these as tuples (`use_bias`, `norm`, `act_func`).
public struct ConvSettings: Sendable, Equatable {
  public var useBias: Bool
  public var norm: Bool
  public var activation: Activation

  public init(useBias: Bool = false, norm: Bool = true, activation: Activation = .identity) {
    self.useBias = useBias
    self.norm = norm
    self.activation = activation
  }
}

/// Hidden width of an expanding block: Python's `round(in_channels * expand_ratio)`, which rounds
/// halves to even.
public func hiddenChannels(_ inChannels: Int, expandRatio: Double) -> Int {
  Int((Double(inChannels) * expandRatio).rounded(.toNearestOrEven))
}

/// efficientvit's `MBConv`: 1×1 expansion, depthwise 3×3 (strided), 1×1 projection.
/// Keys: `inverted_conv.*`, `depth_conv.*`, `point_conv.*`.
public struct MBConv: EncoderLayer {
  public let invertedConv: ConvLayer
  public let depthConv: ConvLayer
  public let pointConv: ConvLayer

  public init(
    _ scope: WeightScope, inChannels: Int, outChannels: Int, stride: Int = 1,
    expandRatio: Double, settings s: (ConvSettings, ConvSettings, ConvSettings)
  ) {
    let mid = hiddenChannels(inChannels, expandRatio: expandRatio)
    invertedConv = ConvLayer(
      scope["inverted_conv"], inChannels: inChannels, outChannels: mid, kernelSize: 1,
      useBias: s.0.useBias, norm: s.0.norm, activation: s.0.activation)
    depthConv = ConvLayer(
      scope["depth_conv"], inChannels: mid, outChannels: mid, kernelSize: 3, stride: stride,
      groups: mid, useBias: s.1.useBias, norm: s.1.norm, activation: s.1.activation)
    pointConv = ConvLayer(
      scope["point_conv"], inChannels: mid, outChannels: outChannels, kernelSize: 1,
      useBias: s.2.useBias, norm: s.2.norm, activation: s.2.activation)
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    pointConv(depthConv(invertedConv(x)))
  }

  public func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize) {
    sequenceMultiplyAccumulates([invertedConv, depthConv, pointConv], input: input)
  }
}

/// efficientvit's `FusedMBConv`: full 3×3 expansion (strided), 1×1 projection.
/// Keys: `spatial_conv.*`, `point_conv.*`.
public struct FusedMBConv: EncoderLayer {
  public let spatialConv: ConvLayer
  public let pointConv: ConvLayer

  public init(
    _ scope: WeightScope, inChannels: Int, outChannels: Int, stride: Int = 1,
    expandRatio: Double, settings s: (ConvSettings, ConvSettings)
  ) {
    let mid = hiddenChannels(inChannels, expandRatio: expandRatio)
    spatialConv = ConvLayer(
      scope["spatial_conv"], inChannels: inChannels, outChannels: mid, kernelSize: 3,
      stride: stride, useBias: s.0.useBias, norm: s.0.norm, activation: s.0.activation)
    pointConv = ConvLayer(
      scope["point_conv"], inChannels: mid, outChannels: outChannels, kernelSize: 1,
      useBias: s.1.useBias, norm: s.1.norm, activation: s.1.activation)
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    pointConv(spatialConv(x))
  }

  public func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize) {
    sequenceMultiplyAccumulates([spatialConv, pointConv], input: input)
  }
}

/// efficientvit's `ResBlock` (without its own shortcut): two 3×3 convs, the first strided.
/// Keys: `conv1.*`, `conv2.*`.
public struct ResBlock: EncoderLayer {
  public let conv1: ConvLayer
  public let conv2: ConvLayer

  public init(
    _ scope: WeightScope, inChannels: Int, outChannels: Int, stride: Int = 1,
    expandRatio: Double = 1, settings s: (ConvSettings, ConvSettings)
  ) {
    let mid = hiddenChannels(inChannels, expandRatio: expandRatio)
    conv1 = ConvLayer(
      scope["conv1"], inChannels: inChannels, outChannels: mid, kernelSize: 3, stride: stride,
      useBias: s.0.useBias, norm: s.0.norm, activation: s.0.activation)
    conv2 = ConvLayer(
      scope["conv2"], inChannels: mid, outChannels: outChannels, kernelSize: 3,
      useBias: s.1.useBias, norm: s.1.norm, activation: s.1.activation)
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    conv2(conv1(x))
  }

  public func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize) {
    sequenceMultiplyAccumulates([conv1, conv2], input: input)
  }
}

/// efficientvit's `ResidualBlock(main, shortcut)` with shortcut `IdentityLayer()` (adds the
/// input back) or `None` (just `main`, used by the strided first block of each stage). Either
/// way the main branch's keys sit under `main.`.
public struct ResidualBlock: EncoderLayer {
  public let main: any EncoderLayer
  public let identityShortcut: Bool

  public init(
    _ scope: WeightScope, identityShortcut: Bool, main: (WeightScope) -> any EncoderLayer
  ) {
    self.main = main(scope["main"])
    self.identityShortcut = identityShortcut
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    var y = main(x)
    if identityShortcut { addInPlace(&y, x) }
    return y
  }

  public func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize) {
    main.multiplyAccumulates(input: input)
  }
}
