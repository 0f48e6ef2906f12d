import EVModel
import EVTensor

/// The EfficientViT-SAM image encoder on the tape: the same backbone, neck and LayerNorm as
/// `EVModel.ImageEncoder` (and the same checkpoint keys), but built from the plain ops with
/// BatchNorm unfolded, so it trains: in training mode every BatchNorm normalises with the
/// batch's statistics and updates its running statistics, as PyTorch's `model.train()` does;
/// in eval mode it computes what the inference encoder computes.
package struct EncoderGraph {
  package let config: ModelConfig
  let parameters: Parameters
  let stages: [[EncoderNode]]
  let neckInputs: [(stage: Int, conv: EncoderNode)]
  let neckMiddle: [EncoderNode]
  let neckOutput: EncoderNode

  /// The eps of EfficientViT-SAM's BatchNorms and LayerNorm2d (`set_norm_eps(1e-6)`).
  static let eps: Float = 1e-6
  static let activation = Activation.geluTanh

  /// `parameters` holds at least every `image_encoder.*` key of a `config` model.
  package init(config: ModelConfig, parameters: Parameters) {
    self.config = config
    self.parameters = parameters
    let b = config.backbone
    let act = Self.activation
    var stages: [[EncoderNode]] = []
    for s in 0..<b.stageCount {
      let ops = "image_encoder.backbone.stages.\(s).op_list"
      let (width, block) = (b.widthList[s], b.blockList[s])
      let fewerNorm = b.fewerNormList[s]
      var stage: [EncoderNode] = []
      if s == 0 {
        stage.append(.conv(ConvNode("\(ops).0", stride: 2, activation: act)))
        for i in 0..<b.depthList[0] {
          stage.append(
            .residual(
              Self.localBlock(block, "\(ops).\(1 + i).main", stride: 1, fewerNorm: fewerNorm),
              identity: true))
        }
      } else {
        let downsample: BlockType = block == .mb || block == .fmb ? block : .mb
        stage.append(
          .residual(
            Self.localBlock(downsample, "\(ops).0.main", stride: 2, fewerNorm: fewerNorm),
            identity: false))
        for i in 0..<b.depthList[s] {
          let prefix = "\(ops).\(1 + i)"
          if block.isAttention {
            let heads = width / b.qkvDim
            stage.append(
              .residual(
                .attention(
                  LiteMLANode(
                    prefix: "\(prefix).context_module.main", heads: heads, dim: b.qkvDim,
                    scales: [block.attentionScale])),
                identity: true))
            let local = "\(prefix).local_module.main"
            stage.append(
              .residual(
                .sequence([
                  .conv(
                    ConvNode("\(local).inverted_conv", norm: false, bias: true, activation: act)),
                  .conv(
                    ConvNode(
                      "\(local).depth_conv", depthwise: true, norm: false, bias: true,
                      activation: act)),
                  .conv(ConvNode("\(local).point_conv")),
                ]), identity: true))
          } else {
            stage.append(
              .residual(
                Self.localBlock(block, "\(prefix).main", stride: 1, fewerNorm: fewerNorm),
                identity: true))
          }
        }
      }
      stages.append(stage)
    }
    self.stages = stages

    let neck = config.neck
    neckInputs = neck.stageIndices.enumerated().map { i, stage in
      (stage!, .conv(ConvNode("image_encoder.neck.input_ops.\(i).op_list.0")))
    }
    neckMiddle = (0..<neck.headDepth).map { i in
      let main = "image_encoder.neck.middle.op_list.\(i).main"
      let body: EncoderNode
      switch neck.middleOp {
      case .mb:
        body = .sequence([
          .conv(ConvNode("\(main).inverted_conv", activation: act)),
          .conv(ConvNode("\(main).depth_conv", depthwise: true, activation: act)),
          .conv(ConvNode("\(main).point_conv")),
        ])
      case .fmb:
        body = .sequence([
          .conv(ConvNode("\(main).spatial_conv", activation: act)),
          .conv(ConvNode("\(main).point_conv")),
        ])
      case .res:
        body = .sequence([
          .conv(ConvNode("\(main).conv1", activation: act)), .conv(ConvNode("\(main).conv2")),
        ])
      }
      return .residual(body, identity: true)
    }
    neckOutput = .conv(
      ConvNode("image_encoder.neck.output_ops.0.op_list.0", norm: false, bias: true))
  }

  /// `EfficientViTLargeBackbone.build_local_block`: with `fewerNorm` only the last conv keeps
  /// its BatchNorm and the others have a bias instead.
  static func localBlock(_ block: BlockType, _ main: String, stride: Int, fewerNorm: Bool)
    -> EncoderNode
  {
    let act = activation
    func hidden(_ name: String, stride: Int = 1, depthwise: Bool = false) -> EncoderNode {
      .conv(
        ConvNode(
          "\(main).\(name)", stride: stride, depthwise: depthwise, norm: !fewerNorm,
          bias: fewerNorm, activation: act))
    }
    switch block {
    case .res:
      return .sequence([hidden("conv1", stride: stride), .conv(ConvNode("\(main).conv2"))])
    case .fmb:
      return .sequence([
        hidden("spatial_conv", stride: stride), .conv(ConvNode("\(main).point_conv")),
      ])
    case .mb, .att, .att3:
      return .sequence([
        hidden("inverted_conv"), hidden("depth_conv", stride: stride, depthwise: true),
        .conv(ConvNode("\(main).point_conv")),
      ])
    }
  }

  /// The stage outputs and the embedding `[B, 256, 64, 64]` of a batch of preprocessed images
  /// `[B, 3, S, S]`.
  package func callAsFunction(_ tape: Tape, _ images: Variable, training: Bool) -> Variable {
    let run = NodeRunner(tape: tape, parameters: parameters, training: training)
    var y = images
    var outputs: [Variable] = []
    for stage in stages {
      for node in stage { y = run(node, y) }
      outputs.append(y)
    }
    let grid = ModelConfig.embeddingSize
    let projected = neckInputs.map { input -> Variable in
      let p = run(input.conv, outputs[input.stage])
      if p.shape[2] == grid && p.shape[3] == grid { return p }
      return tape.resizeBicubic(p, height: grid, width: grid)
    }
    // `list_sum` adds right to left: x0 + (x1 + (x2 + …)).
    var sum = projected[projected.count - 1]
    for x in projected.dropLast().reversed() { sum = tape.add(x, sum) }
    for node in neckMiddle { sum = run(node, sum) }
    let neck = run(neckOutput, sum)
    return tape.layerNorm2d(
      neck, weight: parameters["image_encoder.norm.weight"],
      bias: parameters["image_encoder.norm.bias"], eps: Self.eps)
  }
}

/// One conv of the encoder: `nn.Conv2d` ("same" padding) with an optional bias, BatchNorm and
/// activation; keys `<prefix>.conv.weight|bias` and `<prefix>.norm.*`.
struct ConvNode {
  let prefix: String
  let stride: Int
  let depthwise: Bool
  let norm: Bool
  let bias: Bool
  let activation: Activation

  init(
    _ prefix: String, stride: Int = 1, depthwise: Bool = false, norm: Bool = true,
    bias: Bool = false, activation: Activation = .identity
  ) {
    self.prefix = prefix
    self.stride = stride
    self.depthwise = depthwise
    self.norm = norm
    self.bias = bias
    self.activation = activation
  }
}

/// LiteMLA with keys under `prefix`: `qkv.conv`, `aggreg.<i>.{0,1}`, `proj.conv`, `proj.norm`.
struct LiteMLANode {
  let prefix: String
  let heads: Int
  let dim: Int
  let scales: [Int]
}

indirect enum EncoderNode {
  case conv(ConvNode)
  case sequence([EncoderNode])
  /// `ResidualBlock(main, IdentityLayer())` or, without `identity`, `main` alone.
  case residual(EncoderNode, identity: Bool)
  case attention(LiteMLANode)
}

/// Runs encoder nodes on a tape, reading their parameters by key.
struct NodeRunner {
  let tape: Tape
  let parameters: Parameters
  let training: Bool

  func callAsFunction(_ node: EncoderNode, _ x: Variable) -> Variable {
    switch node {
    case .conv(let c): return conv(c, x)
    case .sequence(let nodes): return nodes.reduce(x) { self($1, $0) }
    case .residual(let main, let identity):
      let y = self(main, x)
      return identity ? tape.add(y, x) : y
    case .attention(let a): return attention(a, x)
    }
  }

  func conv(_ c: ConvNode, _ x: Variable) -> Variable {
    let weight = parameters["\(c.prefix).conv.weight"]
    let norm = "\(c.prefix).norm"
    return tape.convLayer(
      x, weight: weight, bias: c.bias ? parameters["\(c.prefix).conv.bias"] : nil,
      norm: c.norm
        ? BatchNormParameters(
          weight: parameters["\(norm).weight"], bias: parameters["\(norm).bias"],
          running: BatchNormStatistics(
            mean: parameters["\(norm).running_mean"],
            variance: parameters["\(norm).running_var"],
            batchesTracked: parameters.variables["\(norm).num_batches_tracked"]),
          eps: EncoderGraph.eps) : nil,
      activation: c.activation, stride: c.stride, padding: weight.shape[2] / 2,
      groups: c.depthwise ? x.shape[1] : 1, training: training)
  }

  /// `LiteMLA.forward`: q, k, v for every head from a 1×1 conv, more heads from each
  /// aggregation branch (depthwise k×k, then 1×1 grouped per head and per q/k/v), ReLU linear
  /// attention per head (the quadratic form when the map has at most `dim` pixels), and a 1×1
  /// conv with BatchNorm projecting the heads back.
  func attention(_ a: LiteMLANode, _ x: Variable) -> Variable {
    let (batch, height, width) = (x.shape[0], x.shape[2], x.shape[3])
    let qkv = tape.conv2d(
      x, weight: parameters["\(a.prefix).qkv.conv.weight"], bias: nil, padding: 0)
    var branches = [qkv]
    for (i, k) in a.scales.enumerated() {
      let spatial = tape.conv2d(
        qkv, weight: parameters["\(a.prefix).aggreg.\(i).0.weight"], bias: nil, padding: k / 2,
        groups: qkv.shape[1])
      branches.append(
        tape.conv2d(
          spatial, weight: parameters["\(a.prefix).aggreg.\(i).1.weight"], bias: nil, padding: 0,
          groups: 3 * a.heads))
    }
    let all = branches.count == 1 ? qkv : tape.concat(branches, axis: 1)
    let n = height * width
    let d = a.dim
    let heads = all.shape[1] / (3 * d)
    let grouped = tape.reshape(all, [batch, heads, 3 * d, n])
    let q = tape.activation(tape.slice(grouped, axis: 2, range: 0..<d), .relu)
    let k = tape.activation(tape.slice(grouped, axis: 2, range: d..<(2 * d)), .relu)
    let v = tape.slice(grouped, axis: 2, range: (2 * d)..<(3 * d))
    let out: Variable
    if n > d {
      let ones = Variable(Tensor(repeating: 1, shape: [batch, heads, 1, n]))
      let padded = tape.concat([v, ones], axis: 2)
      let vk = tape.matmul(padded, k, transposeB: true)
      out = tape.divideByLastRow(tape.matmul(vk, q), eps: 1e-15)
    } else {
      let scores = tape.matmul(tape.permute(k, [0, 1, 3, 2]), q)
      out = tape.matmul(v, tape.normalizeColumns(scores, eps: 1e-15))
    }
    let merged = tape.reshape(out, [batch, heads * d, height, width])
    return conv(ConvNode("\(a.prefix).proj"), merged)
  }
}
