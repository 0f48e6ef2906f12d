import EVCheckpoint
import EVTensor

/// efficientvit's `LiteMLA`: lightweight multi-scale ReLU linear attention.
///
/// A 1×1 conv makes q, k and v for every head; each aggregation branch (depthwise k×k, then a
/// 1×1 conv grouped per head and per q/k/v) makes another set of heads from them. Every head of
/// dim `d` then computes, in float32,
/// `out = ([v; 1] · relu(k)ᵀ) · relu(q)` and divides its first `d` rows by the last (+ 1e-15),
/// which is softmax-free attention normalised by the sum of the kernel similarities.
/// A 1×1 conv with BatchNorm projects the heads back. Keys: `qkv.conv.weight`,
/// `aggreg.<i>.0.weight`, `aggreg.<i>.1.weight`, `proj.conv.weight`, `proj.norm.*`.
public struct LiteMLA: EncoderLayer {
  public let heads: Int
  public let dim: Int
  public let scales: [Int]
  public let qkv: ConvLayer
  /// Per scale: depthwise k×k, then grouped 1×1 with `3·heads` groups.
  public let aggregation: [(depthwise: ConvLayer, pointwise: ConvLayer)]
  public let proj: ConvLayer

  static let eps: Float = 1e-15

  public init(
    _ scope: WeightScope, inChannels: Int, outChannels: Int, dim: Int, scales: [Int],
    headsRatio: Double = 1
  ) {
    // `int(in_channels // dim * heads_ratio)` in the official code.
    let heads = Int(Double(inChannels / dim) * headsRatio)
    precondition(heads > 0, "LiteMLA with \(inChannels) channels and head dim \(dim) has no heads")
    let total = heads * dim
    self.heads = heads
    self.dim = dim
    self.scales = scales
    qkv = ConvLayer(
      scope["qkv"], inChannels: inChannels, outChannels: 3 * total, kernelSize: 1, norm: false)
    aggregation = scales.enumerated().map { i, k in
      let branch = scope["aggreg"][i]
      return (
        ConvLayer.plain(
          branch[0], inChannels: 3 * total, outChannels: 3 * total, kernelSize: k,
          groups: 3 * total),
        ConvLayer.plain(
          branch[1], inChannels: 3 * total, outChannels: 3 * total, kernelSize: 1,
          groups: 3 * heads)
      )
    }
    proj = ConvLayer(
      scope["proj"], inChannels: total * (1 + scales.count), outChannels: outChannels,
      kernelSize: 1, norm: true)
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    // No other reference to the qkv maps may stay alive: the attention applies ReLU in place.
    var branches = [qkv(x)]
    for (depthwise, pointwise) in aggregation {
      branches.append(pointwise(depthwise(branches[0])))
    }
    return proj(attention(&branches))
  }

  /// Attention of every head of every branch; the heads' outputs are concatenated along
  /// channels in branch order, as the official concat-then-reshape does. Applies ReLU to q and k
  /// in place.
  func attention(_ branches: inout [Tensor]) -> Tensor {
    let batch = branches[0].dim(0)
    let height = branches[0].dim(2)
    let width = branches[0].dim(3)
    let n = height * width
    let d = dim
    let headsOut = heads * branches.count
    // Official: `if H * W > self.dim` linear attention, else the quadratic form.
    let linear = n > d
    var scratch = [Float](repeating: 0, count: linear ? (d + 1) * d + (d + 1) * n : n * n)
    // Both forms write every output element, so the output needs no zeroing.
    return Tensor(uninitializedShape: [batch, headsOut * d, height, width]) { outBuffer in
      scratch.withUnsafeMutableBufferPointer { scratchBuffer in
        let work = scratchBuffer.baseAddress!
        for branch in branches.indices {
          branches[branch].withUnsafeMutableBufferPointer { qkvBuffer in
            for b in 0..<batch {
              for h in 0..<heads {
                let q = qkvBuffer.baseAddress! + (b * heads + h) * 3 * d * n
                let k = q + d * n
                let v = q + 2 * d * n
                // The ReLU kernel on q and k (the first 2·d rows of the head).
                for i in 0..<(2 * d * n) { q[i] = max(q[i], 0) }
                let o = outBuffer.baseAddress! + (b * headsOut + branch * heads + h) * d * n
                if linear {
                  linearHead(q: q, k: k, v: v, out: o, n: n, scratch: work)
                } else {
                  quadraticHead(q: q, k: k, v: v, out: o, n: n, scratch: work)
                }
              }
            }
          }
        }
      }
    }
  }

  /// `vk = [v; 1]·kᵀ` ((d+1)×d), `o = vk·q` ((d+1)×n), `out = o[:d] / (o[d] + eps)`.
  private func linearHead(
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    out: UnsafeMutablePointer<Float>, n: Int, scratch: UnsafeMutablePointer<Float>
  ) {
    let d = dim
    let vk = scratch
    let o = scratch + (d + 1) * d
    BLAS.sgemm(
      transA: false, transB: true, m: d, n: d, k: n, alpha: 1, a: v, lda: n, b: k, ldb: n,
      beta: 0, c: vk, ldc: d)
    // The padded row of ones times kᵀ: the sum of each k row.
    for j in 0..<d {
      var s: Float = 0
      let row = k + j * n
      for t in 0..<n { s += row[t] }
      vk[d * d + j] = s
    }
    BLAS.sgemm(
      transA: false, transB: false, m: d + 1, n: n, k: d, alpha: 1, a: vk, lda: d, b: q, ldb: n,
      beta: 0, c: o, ldc: n)
    let denominator = o + d * n
    for i in 0..<d {
      let src = o + i * n
      let dst = out + i * n
      for t in 0..<n { dst[t] = src[t] / (denominator[t] + Self.eps) }
    }
  }

  /// The official `relu_quadratic_att` for maps of at most `dim` pixels:
  /// `a = kᵀ·q` (n×n), normalised over keys, `out = v·a`.
  private func quadraticHead(
    q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
    out: UnsafeMutablePointer<Float>, n: Int, scratch: UnsafeMutablePointer<Float>
  ) {
    let d = dim
    let a = scratch
    BLAS.sgemm(
      transA: true, transB: false, m: n, n: n, k: d, alpha: 1, a: k, lda: n, b: q, ldb: n,
      beta: 0, c: a, ldc: n)
    for col in 0..<n {
      var s: Float = 0
      for row in 0..<n { s += a[row * n + col] }
      let denominator = s + Self.eps
      for row in 0..<n { a[row * n + col] /= denominator }
    }
    BLAS.sgemm(
      transA: false, transB: false, m: d, n: n, k: n, alpha: 1, a: v, lda: n, b: a, ldb: n,
      beta: 0, c: out, ldc: n)
  }

  public func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize) {
    var total = qkv.multiplyAccumulates(input: input).macs
    for (depthwise, pointwise) in aggregation {
      total += depthwise.multiplyAccumulates(input: input).macs
      total += pointwise.multiplyAccumulates(input: input).macs
    }
    let n = input.pixels
    let d = dim
    let headCount = heads * (1 + scales.count)
    if n > d {
      // [v; 1]·kᵀ and vk·q, the padded row included.
      total += headCount * 2 * (d + 1) * d * n
    } else {
      total += headCount * 2 * n * n * d
    }
    let projected = proj.multiplyAccumulates(input: input)
    return (total + projected.macs, projected.output)
  }
}

/// efficientvit's `EfficientViTBlock`: residual LiteMLA (context), then a residual MBConv
/// (local) with biases on its first two convs and BatchNorm only on the last.
/// Keys: `context_module.main.*`, `local_module.main.*`.
public struct EfficientViTBlock: EncoderLayer {
  public let context: ResidualBlock
  public let local: ResidualBlock

  public init(
    _ scope: WeightScope, channels: Int, dim: Int, expandRatio: Double, scales: [Int],
    activation: Activation
  ) {
    context = ResidualBlock(scope["context_module"], identityShortcut: true) {
      LiteMLA($0, inChannels: channels, outChannels: channels, dim: dim, scales: scales)
    }
    local = ResidualBlock(scope["local_module"], identityShortcut: true) {
      MBConv(
        $0, inChannels: channels, outChannels: channels, expandRatio: expandRatio,
        settings: (
          ConvSettings(useBias: true, norm: false, activation: activation),
          ConvSettings(useBias: true, norm: false, activation: activation),
          ConvSettings(useBias: false, norm: true)
        ))
    }
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    local(context(x))
  }

  public func multiplyAccumulates(input: FeatureSize) -> (macs: Int, output: FeatureSize) {
    sequenceMultiplyAccumulates([context, local], input: input)
  }
}
