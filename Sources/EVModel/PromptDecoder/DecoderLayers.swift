import EVCheckpoint
import EVTensor

#if os(Linux)
  import Glibc
#endif

/// The decoder's general products, row-major in BLAS's argument order.
enum DecoderMath {
  /// Row-major `C = alpha·op(A)·op(B) + beta·C`; argument order follows BLAS.
  @inline(__always)
  static func gemm(
    _ m: Int, _ n: Int, _ k: Int,
    _ a: UnsafePointer<Float>, _ lda: Int, transA: Bool = false,
    _ b: UnsafePointer<Float>, _ ldb: Int, transB: Bool = false,
    _ c: UnsafeMutablePointer<Float>, _ ldc: Int, alpha: Float = 1, beta: Float = 0
  ) {
    BLAS.sgemm(
      transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
      a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
  }
}

/// `nn.Linear` (weight out×in, bias out) applied to pointer-addressed rows.
struct DecoderLinear: Sendable {
  let inFeatures: Int
  let outFeatures: Int
  let weight: DecoderBuffer
  let bias: DecoderBuffer
  /// The weight packed for `RowOps.linearFewRows`, which serves the token-side calls.
  let packed: DecoderBuffer

  init(_ scope: WeightScope, in inFeatures: Int, out outFeatures: Int) {
    self.inFeatures = inFeatures
    self.outFeatures = outFeatures
    weight = DecoderBuffer(scope.take("weight", shape: [outFeatures, inFeatures]))
    bias = DecoderBuffer(scope.take("bias", shape: [outFeatures]))
    packed = DecoderBuffer(
      RowOps.packForFewRows(weight.base, outFeatures: outFeatures, inFeatures: inFeatures))
  }

  /// `y[r] = act(x[r]·Wᵀ + b)` for `rows` rows; `ldx`/`ldy` are the row strides.
  func apply(
    _ x: UnsafePointer<Float>, ldx: Int, rows: Int, into y: UnsafeMutablePointer<Float>, ldy: Int,
    _ act: Activation = .identity
  ) {
    guard rows > 0 else { return }
    // A handful of token rows: stream the weight once (a GEMM would pack all of it first).
    if RowOps.linearFewRows(
      x, ldx: ldx, rows: rows, inFeatures: inFeatures, packedWeight: packed.base,
      bias: bias.base, outFeatures: outFeatures, into: y, ldy: ldy, act)
    {
      return
    }
    if rows <= RowOps.fewRows {
      // On one thread, unsplit: a prompt's tokens then give the same result on any number of
      // threads (BLAS's results depend on how a product is split).
      BLAS.serialSgemm(
        transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures, alpha: 1, a: x,
        lda: ldx, b: weight.base, ldb: inFeatures, beta: 0, c: y, ldc: ldy)
    } else {
      DecoderMath.gemm(
        rows, outFeatures, inFeatures, x, ldx, weight.base, inFeatures, transB: true, y, ldy)
    }
    RowOps.biasActivation(
      y, rows: rows, cols: outFeatures, stride: ldy, bias: bias.base, act,
      serial: rows <= RowOps.fewRows)
  }

  /// Dense rows (`ldx == inFeatures`, `ldy == outFeatures`).
  func apply(
    _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>,
    _ act: Activation = .identity
  ) {
    apply(x, ldx: inFeatures, rows: rows, into: y, ldy: outFeatures, act)
  }
}

/// The official `MLP` of the mask decoder (hypernetworks, IoU head): ReLU between layers, none
/// after the last.
struct DecoderMLP: Sendable {
  let layers: [DecoderLinear]

  init(_ scope: WeightScope, input: Int, hidden: Int, output: Int, depth: Int) {
    let dims = [input] + Array(repeating: hidden, count: depth - 1) + [output]
    layers = (0..<depth).map {
      DecoderLinear(scope["layers"][$0], in: dims[$0], out: dims[$0 + 1])
    }
  }

  var outFeatures: Int { layers.last!.outFeatures }

  /// Runs `rows` rows (row stride `ldx`) through the MLP into dense `y` (rows × outFeatures).
  func apply(
    _ x: UnsafePointer<Float>, ldx: Int, rows: Int, into y: UnsafeMutablePointer<Float>
  ) {
    var input = x
    var ld = ldx
    // Hidden activations live until the last layer has read them.
    var hidden: [DecoderBuffer] = []
    for (i, layer) in layers.enumerated() {
      let last = i == layers.count - 1
      let out: UnsafeMutablePointer<Float>
      if last {
        out = y
      } else {
        hidden.append(DecoderBuffer(count: rows * layer.outFeatures))
        out = hidden[hidden.count - 1].base
      }
      layer.apply(
        input, ldx: ld, rows: rows, into: out, ldy: layer.outFeatures, last ? .identity : .relu)
      input = UnsafePointer(out)
      ld = layer.outFeatures
    }
    withExtendedLifetime(hidden) {}
  }
}

/// The weights of one official `Attention` (q/k/v projections to `internalDim`, 8 heads, output
/// projection back to the embedding width).
struct DecoderAttention: Sendable {
  static let heads = 8
  let embedding: Int
  let internalDim: Int
  let q: DecoderLinear
  let k: DecoderLinear
  let v: DecoderLinear
  let out: DecoderLinear
  /// `v.weight` transposed (embedding × internalDim) and `out.weight` transposed (internalDim ×
  /// embedding): the folded attentions multiply by a head's slice of them.
  let vTransposed: DecoderBuffer
  let outTransposed: DecoderBuffer

  init(_ scope: WeightScope, embedding: Int, downsample: Int) {
    self.embedding = embedding
    internalDim = embedding / downsample
    q = DecoderLinear(scope["q_proj"], in: embedding, out: internalDim)
    k = DecoderLinear(scope["k_proj"], in: embedding, out: internalDim)
    v = DecoderLinear(scope["v_proj"], in: embedding, out: internalDim)
    out = DecoderLinear(scope["out_proj"], in: internalDim, out: embedding)
    vTransposed = Self.transposed(v.weight, rows: internalDim, cols: embedding)
    outTransposed = Self.transposed(out.weight, rows: embedding, cols: internalDim)
  }

  private static func transposed(_ w: DecoderBuffer, rows: Int, cols: Int) -> DecoderBuffer {
    let t = DecoderBuffer(count: rows * cols)
    for r in 0..<rows {
      for c in 0..<cols { t.base[c * rows + r] = w.base[r * cols + c] }
    }
    return t
  }

  var headDim: Int { internalDim / Self.heads }
  /// PyTorch divides the scores by √(head dim) before the softmax.
  var scale: Float { 1 / Float(headDim).squareRoot() }
}

/// `nn.LayerNorm(256)` with the model-wide eps of 1e-6.
struct DecoderLayerNorm: Sendable {
  static let eps: Float = 1e-6
  let weight: DecoderBuffer
  let bias: DecoderBuffer
  let dim: Int

  init(_ scope: WeightScope, dim: Int) {
    self.dim = dim
    weight = DecoderBuffer(scope.take("weight", shape: [dim]))
    bias = DecoderBuffer(scope.take("bias", shape: [dim]))
  }

  /// `x[r] ← LayerNorm(x[r] + delta[r] (+ deltaBias))`, optionally also
  /// `sum[r] = x[r] + addend[r]` and each row's `1/√(variance + eps)` in `rstd`.
  func residual(
    _ x: UnsafeMutablePointer<Float>, plus delta: UnsafePointer<Float>, rows: Int,
    addend: UnsafePointer<Float>? = nil, sum: UnsafeMutablePointer<Float>? = nil,
    rstd: UnsafeMutablePointer<Float>? = nil, deltaBias: UnsafePointer<Float>? = nil,
    serial: Bool = false
  ) {
    RowOps.residualLayerNorm(
      x, delta: delta, rows: rows, dim: dim, weight: weight.base, bias: bias.base,
      eps: Self.eps, addend: addend, sum: sum, rstd: rstd, deltaBias: deltaBias, serial: serial)
  }

  func callAsFunction(_ x: UnsafeMutablePointer<Float>, rows: Int) {
    RowOps.layerNorm(
      x, x, rows: rows, dim: dim, weight: weight.base, bias: bias.base, eps: Self.eps)
  }
}
