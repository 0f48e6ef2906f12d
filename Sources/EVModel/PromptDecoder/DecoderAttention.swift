import EVTensor
import Foundation

/// The three ways the official `Attention` is used by the two-way transformer, on token-major
/// buffers: tokens among themselves, tokens attending to the 64×64 image, and the image
/// attending to the tokens.
///
/// Heads are column slices (`h·headDim ..< (h+1)·headDim`) of the projected buffers, so no
/// head is ever copied out. This is the general schedule, for prompts of many tokens; with
/// only a handful of prompt tokens T, the expensive projections of the 4096 image tokens are
/// folded into the token side instead (`TwoWayTransformer.sliced`): attention is linear in the
/// projected image, so `q·(W x + b)` becomes `(q W)·x` plus a per-query constant that softmax
/// ignores, and `P·(W x + b)` becomes `(P x) Wᵀ + b` because softmax rows sum to one. That
/// replaces 4096×256×128 projections by 4096×256×(8·T) products, cheaper while 8·T < 128.
extension DecoderAttention {
  /// The image side of a token→image attention.
  enum ImageKeys {
    /// Already projected: `k = Wk(keys + pe)` and `v = Wv(keys)`, each N×internalDim.
    case projected(k: UnsafePointer<Float>, v: UnsafePointer<Float>)
    /// Raw keys and keys + positional encoding, each N×embedding.
    case raw(keys: UnsafePointer<Float>, keysPE: UnsafePointer<Float>)
  }

  /// The image side of an image→token attention.
  enum ImageQueries {
    /// Already projected: `q = Wq(keys + pe)`, N×internalDim.
    case projected(UnsafePointer<Float>)
    /// Keys + positional encoding, N×embedding.
    case raw(UnsafePointer<Float>)
  }

  /// Self-attention of `tokens` rows: `out = Attention(q: qIn, k: kIn, v: vIn)`, all T×embedding.
  func tokens(
    q qIn: UnsafePointer<Float>, k kIn: UnsafePointer<Float>, v vIn: UnsafePointer<Float>,
    count t: Int, into out: UnsafeMutablePointer<Float>
  ) {
    let dim = internalDim
    let d = headDim
    let qp = DecoderBuffer(count: t * dim)
    let kp = DecoderBuffer(count: t * dim)
    let vp = DecoderBuffer(count: t * dim)
    let scores = DecoderBuffer(count: t * t)
    let heads = DecoderBuffer(count: t * dim)
    q.apply(qIn, rows: t, into: qp.base)
    k.apply(kIn, rows: t, into: kp.base)
    v.apply(vIn, rows: t, into: vp.base)
    for h in 0..<Self.heads {
      DecoderMath.gemm(
        t, t, d, qp.base + h * d, dim, kp.base + h * d, dim, transB: true, scores.base, t)
      RowOps.softmax(scores.base, rows: t, cols: t, stride: t, scale: scale)
      DecoderMath.gemm(t, d, t, scores.base, t, vp.base + h * d, dim, heads.base + h * d, dim)
    }
    self.out.apply(heads.base, rows: t, into: out)
  }

  /// Token→image attention: `out (T×embedding) = Attention(q: qIn, k: keys + pe, v: keys)`.
  /// `workspace` must hold 8·T·N floats (the scores).
  func tokensToImage(
    q qIn: UnsafePointer<Float>, count t: Int, image: ImageKeys, imageTokens n: Int,
    workspace: DecoderWorkspace, into out: UnsafeMutablePointer<Float>
  ) {
    let dim = internalDim
    let d = headDim
    let hT = Self.heads * t
    let qp = DecoderBuffer(count: t * dim)
    let heads = DecoderBuffer(count: t * dim)
    q.apply(qIn, rows: t, into: qp.base)
    let scores = workspace.scores(count: hT * n)
    switch image {
    case .projected(let kImg, let vImg):
      // Each head's products are small (T×N×16): the heads, not the products, go in parallel.
      let (q, out) = (UnsafePointer(qp.base), heads.base)
      let scale = scale
      Parallel.forEach(count: Self.heads, costPerItem: t * n * d * 4) { h in
        let s = scores + h * t * n
        BLAS.serialSgemm(
          transA: false, transB: true, m: t, n: n, k: d, alpha: 1, a: q + h * d, lda: dim,
          b: kImg + h * d, ldb: dim, beta: 0, c: s, ldc: n)
        RowOps.softmax(s, rows: t, cols: n, stride: n, scale: scale, serial: true)
        BLAS.serialSgemm(
          transA: false, transB: false, m: t, n: d, k: n, alpha: 1, a: s, lda: n,
          b: vImg + h * d, ldb: dim, beta: 0, c: out + h * d, ldc: dim)
      }
    case .raw(let keys, let keysPE):
      let (kImg, vImg) = workspace.imageProjections(internalDim: dim, imageTokens: n)
      k.apply(keysPE, rows: n, into: kImg)
      v.apply(keys, rows: n, into: vImg)
      tokensToImage(
        q: qIn, count: t, image: .projected(k: kImg, v: vImg), imageTokens: n,
        workspace: workspace, into: out)
      return
    }
    self.out.apply(heads.base, rows: t, into: out)
  }

  /// Image→token attention: `out (N×embedding) = Attention(q: image, k: kIn, v: vIn)` with
  /// `kIn` (tokens + pe) and `vIn` (tokens) T×embedding. `workspace` must hold N·8·T scores.
  /// Without `addingBias` the output projection's bias is left for the caller to add.
  func imageToTokens(
    image: ImageQueries, imageTokens n: Int, k kIn: UnsafePointer<Float>,
    v vIn: UnsafePointer<Float>, count t: Int, workspace: DecoderWorkspace,
    addingBias: Bool = true, into out: UnsafeMutablePointer<Float>
  ) {
    let dim = internalDim
    let e = embedding
    let d = headDim
    let hT = Self.heads * t
    let kp = DecoderBuffer(count: t * dim)
    let vp = DecoderBuffer(count: t * dim)
    k.apply(kIn, rows: t, into: kp.base)
    v.apply(vIn, rows: t, into: vp.base)
    // Scores stored keys-major, (8·T)×N: row h·T + j holds every image token's score for token
    // j in head h, so the softmax over the T tokens runs down columns, along the long axis.
    let scores = workspace.scores(count: hT * n)
    let qImage: UnsafePointer<Float>
    switch image {
    case .projected(let q): qImage = q
    case .raw(let keysPE):
      let projected = workspace.imageProjections(internalDim: dim, imageTokens: n).0
      q.apply(keysPE, rows: n, into: projected)
      qImage = UnsafePointer(projected)
    }
    let keys = UnsafePointer(kp.base)
    Parallel.forEach(count: Self.heads, costPerItem: t * n * d * 2) { h in
      BLAS.serialSgemm(
        transA: false, transB: true, m: t, n: n, k: d, alpha: 1, a: keys + h * d, lda: dim,
        b: qImage + h * d, ldb: dim, beta: 0, c: scores + h * t * n, ldc: n)
    }
    RowOps.softmaxColumns(scores, groups: Self.heads, rows: t, cols: n, scale: scale)
    let heads = workspace.imageProjections(internalDim: dim, imageTokens: n).1
    for h in 0..<Self.heads {
      DecoderMath.gemm(
        n, d, t, scores + h * t * n, n, transA: true, vp.base + h * d, dim, heads + h * d, dim)
    }
    DecoderMath.gemm(n, e, dim, heads, dim, self.out.weight.base, dim, transB: true, out, e)
    if addingBias {
      RowOps.biasActivation(out, rows: n, cols: e, stride: e, bias: self.out.bias.base, .identity)
    }
  }
}
