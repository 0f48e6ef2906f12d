import EVCheckpoint
import EVTensor

/// efficientvit's `EfficientViTLargeBackbone` (used by all five SAM variants): stage 0 is a
/// strided 3×3 conv and `depth_list[0]` residual local blocks; every later stage opens with a
/// strided local block without shortcut (4× the stage's expansion; an MBConv unless the stage
/// is MBConv or FusedMBConv) followed by `depth_list[s]` residual blocks or EfficientViT blocks.
/// Keys: `stages.<s>.op_list.<i>.…`, indices without gaps (`OpSequential` drops `None` ops).
public struct Backbone: Sendable {
  public let config: BackboneConfig
  /// The ops of each stage, in order.
  public let stages: [[any EncoderLayer]]

  /// The official encoder activation: GELU with the tanh approximation.
  static let activation = Activation.geluTanh

  /// `scope` is the backbone's (`image_encoder.backbone`).
  public init(config: BackboneConfig, _ scope: WeightScope) {
    self.config = config
    let act = Self.activation
    var stages: [[any EncoderLayer]] = []
    for s in 0..<config.stageCount {
      let ops = scope["stages"][s]["op_list"]
      let width = config.widthList[s]
      let block = config.blockList[s]
      let expand = config.expandList[s]
      let fewerNorm = config.fewerNormList[s]
      var stage: [any EncoderLayer] = []
      if s == 0 {
        stage.append(
          ConvLayer(
            ops[0], inChannels: config.inChannels, outChannels: width, kernelSize: 3, stride: 2,
            activation: act))
        for i in 0..<config.depthList[0] {
          stage.append(
            ResidualBlock(ops[1 + i], identityShortcut: true) {
              Self.localBlock(
                block, $0, inChannels: width, outChannels: width, stride: 1, expandRatio: expand,
                fewerNorm: fewerNorm)
            })
        }
      } else {
        let downsample: BlockType = block == .mb || block == .fmb ? block : .mb
        stage.append(
          ResidualBlock(ops[0], identityShortcut: false) {
            Self.localBlock(
              downsample, $0, inChannels: config.widthList[s - 1], outChannels: width, stride: 2,
              expandRatio: expand * 4, fewerNorm: fewerNorm)
          })
        for i in 0..<config.depthList[s] {
          if block.isAttention {
            stage.append(
              EfficientViTBlock(
                ops[1 + i], channels: width, dim: config.qkvDim, expandRatio: expand,
                scales: [block.attentionScale], activation: act))
          } else {
            stage.append(
              ResidualBlock(ops[1 + i], identityShortcut: true) {
                Self.localBlock(
                  block, $0, inChannels: width, outChannels: width, stride: 1,
                  expandRatio: expand, fewerNorm: fewerNorm)
              })
          }
        }
      }
      stages.append(stage)
    }
    self.stages = stages
  }

  /// `EfficientViTLargeBackbone.build_local_block`: with `fewerNorm`, only the last conv keeps
  /// its BatchNorm and the others get a bias instead.
  static func localBlock(
    _ block: BlockType, _ scope: WeightScope, inChannels: Int, outChannels: Int, stride: Int,
    expandRatio: Double, fewerNorm: Bool
  ) -> any EncoderLayer {
    let act = activation
    let hidden = ConvSettings(useBias: fewerNorm, norm: !fewerNorm, activation: act)
    let last = ConvSettings(useBias: false, norm: true)
    switch block {
    case .res:
      return ResBlock(
        scope, inChannels: inChannels, outChannels: outChannels, stride: stride,
        expandRatio: expandRatio, settings: (hidden, last))
    case .fmb:
      return FusedMBConv(
        scope, inChannels: inChannels, outChannels: outChannels, stride: stride,
        expandRatio: expandRatio, settings: (hidden, last))
    case .mb:
      return MBConv(
        scope, inChannels: inChannels, outChannels: outChannels, stride: stride,
        expandRatio: expandRatio, settings: (hidden, hidden, last))
    case .att, .att3:
      preconditionFailure("attention is not a local block (ModelConfig.validate rejects this)")
    }
  }

  /// The output of every stage (`stage0`, `stage1`, …).
  public func callAsFunction(_ x: Tensor) -> [Tensor] {
    var outputs: [Tensor] = []
    outputs.reserveCapacity(stages.count)
    var y = x
    for stage in stages {
      y = runSequence(stage, y)
      outputs.append(y)
    }
    return outputs
  }

  /// MACs of each stage for an `input`-sized image, and each stage's output size.
  public func multiplyAccumulatesPerStage(input: FeatureSize) -> [(macs: Int, output: FeatureSize)]
  {
    var size = input
    return stages.map { stage in
      let r = sequenceMultiplyAccumulates(stage, input: size)
      size = r.output
      return r
    }
  }
}
