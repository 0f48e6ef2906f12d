import EVCheckpoint
import EVTensor

/// efficientvit's `SamNeck`: each selected backbone stage goes through a 1×1 conv + BatchNorm
/// and a bicubic resize to 64×64; the maps are summed, refined by `head_depth` residual blocks
/// and projected to 256 channels by a 1×1 conv with bias.
/// Keys: `input_ops.<i>.op_list.0.*`, `middle.op_list.<i>.main.*`, `output_ops.0.op_list.0.conv.*`.
public struct SamNeck: Sendable {
  public let config: NeckConfig
  /// Backbone stage read by each input op.
  public let inputStages: [Int]
  public let inputs: [ConvLayer]
  public let middle: [any EncoderLayer]
  public let output: ConvLayer

  public static let gridSize = ModelConfig.embeddingSize

  /// `scope` is the neck's (`image_encoder.neck`).
  public init(config: NeckConfig, _ scope: WeightScope) {
    self.config = config
    let act = Backbone.activation
    inputStages = config.stageIndices.map { $0! }
    inputs = config.inChannelList.enumerated().map { i, channels in
      ConvLayer(
        scope["input_ops"][i]["op_list"][0], inChannels: channels, outChannels: config.headWidth,
        kernelSize: 1)
    }
    let width = config.headWidth
    let expand = config.expandRatio
    middle = (0..<config.headDepth).map { i in
      ResidualBlock(scope["middle"]["op_list"][i], identityShortcut: true) { main in
        let bn = ConvSettings(norm: true)
        let bnAct = ConvSettings(norm: true, activation: act)
        switch config.middleOp {
        case .mb:
          return MBConv(
            main, inChannels: width, outChannels: width, expandRatio: expand,
            settings: (bnAct, bnAct, bn))
        case .fmb:
          return FusedMBConv(
            main, inChannels: width, outChannels: width, expandRatio: expand,
            settings: (bnAct, bn))
        case .res:
          return ResBlock(
            main, inChannels: width, outChannels: width, expandRatio: expand,
            settings: (bnAct, bn))
        }
      }
    }
    output = ConvLayer(
      scope["output_ops"][0]["op_list"][0], inChannels: width,
      outChannels: ModelConfig.embeddingChannels, kernelSize: 1, useBias: true, norm: false)
  }

  /// The neck's output before the encoder's LayerNorm, from the backbone's stage outputs.
  public func callAsFunction(_ stageOutputs: [Tensor]) -> Tensor {
    let grid = Self.gridSize
    let projected = zip(inputStages, inputs).map { stage, conv -> Tensor in
      let y = conv(stageOutputs[stage])
      // `UpSampleLayer` returns its input untouched when it already has the target size.
      if y.dim(2) == grid && y.dim(3) == grid { return y }
      return resizeBicubic(y, height: grid, width: grid)
    }
    // `list_sum` adds right to left: x0 + (x1 + (x2 + …)).
    var sum = projected[projected.count - 1]
    for x in projected.dropLast().reversed() {
      var next = x
      addInPlace(&next, sum)
      sum = next
    }
    return output(runSequence(middle, sum))
  }

  /// MACs of the neck given each backbone stage's output size. The bicubic resizes and the sum
  /// are not counted.
  public func multiplyAccumulates(stageSizes: [FeatureSize]) -> Int {
    var total = 0
    for (stage, conv) in zip(inputStages, inputs) {
      total += conv.multiplyAccumulates(input: stageSizes[stage]).macs
    }
    let grid = FeatureSize(square: Self.gridSize)
    let refined = sequenceMultiplyAccumulates(middle, input: grid)
    total += refined.macs
    total += output.multiplyAccumulates(input: refined.output).macs
    return total
  }
}
