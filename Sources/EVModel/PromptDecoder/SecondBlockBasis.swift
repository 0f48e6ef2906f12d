import EVTensor

/// The second block's attention projections of the image tokens, folded through the first
/// block's LayerNorm so that most of their work is done once per image (prompts without a mask
/// input only).
///
/// After the first block the image tokens are `K_1 = ρ_0·((K_0 + b_0 + P_0·U_0)·J·Γ_0) + β_0`
/// (notation: docs/DECODER.md). The second block projects them three times: keys
/// `(K_1 + pe)·Wkᵀ` and values `K_1·Wvᵀ` for the token→image attention, queries
/// `(K_1 + pe)·Wqᵀ + bq` for the image→token attention. Each is
///
///     ρ_0·(X̂·Wᵀ) + (pe + β_0)·Wᵀ (+ b) + (ρ_0·P_0)·(Û_0·Wᵀ),   X̂ = (K_0 + b_0)·J·Γ_0,
///     Û_0 = U_0·J·Γ_0,
///
/// whose first two terms are the same for every prompt (`base`, `offset`: N × 128 each) and
/// whose last is a product with 8T columns instead of 256. The attentions then only need
/// per-head dot products with the prompt side (N·8T·16 multiply-adds) and one N × 8T × 8T
/// product, instead of N·8T·256 multiply-adds each: for one point (T = 7) 16.5 M instead of
/// 59 M per projection. Exact in real arithmetic; in float it differs from the direct order by
/// rounding only, which the golden tests bound.
struct SecondBlockBasis: Sendable {
  /// Per projection (keys, values, queries): `X̂·Wᵀ`, N × 128, heads interleaved.
  let keys: DecoderBuffer
  let values: DecoderBuffer
  let queries: DecoderBuffer
  /// `(pe + β_0)·Wkᵀ` and `(pe + β_0)·Wqᵀ + bq`, N × 128, heads interleaved. The keys' bias
  /// adds a constant per prompt token to the scores, which the softmax over image tokens
  /// ignores; the values' offset `β_0·Wvᵀ + bv` is one vector (`valueOffset`).
  let keyOffset: DecoderBuffer
  let queryOffset: DecoderBuffer
  /// `β_0·Wvᵀ + bv`, 128 values, heads as column blocks.
  let valueOffset: DecoderBuffer
  /// The final token→image attention reads `K_2 = ρ_1·((K_1 + P_1·U_1 + b_1)·J·Γ_1) + β_1`:
  /// its keys and values are `ρ_1·ρ_0·(X̌·Wᵀ) + ρ_1·(ě·Wᵀ) + (pe + β_1)·Wᵀ (keys only)
  /// + ρ_1·[ρ_0·P_0, P_1]·([Û_0; U_1]·J·Γ_1·Wᵀ)` with `X̌ = X̂·J·Γ_1` and
  /// `ě = (β_0 + b_1)·J·Γ_1`. Here `X̌·Wkᵀ`, `X̌·Wvᵀ` and `(pe + β_1)·Wkᵀ` (N × 128,
  /// interleaved), `ě·Wkᵀ`, `ě·Wvᵀ` (128, interleaved) and `β_1·Wvᵀ + bv` (128, heads as
  /// column blocks).
  let finalKeys: DecoderBuffer
  let finalValues: DecoderBuffer
  let finalKeyOffset: DecoderBuffer
  let finalKeyShift: DecoderBuffer
  let finalValueShift: DecoderBuffer
  let finalValueOffset: DecoderBuffer
  /// The residual LayerNorms' statistics ρ_0 and ρ_1 on the same basis.
  let norms: NormStatisticsBasis

  /// - Parameters:
  ///   - keys: K_0, N × E (embedding + no-mask embedding); `positional`: pe, N × E.
  init(
    transformer: TwoWayTransformer, keys k0: UnsafePointer<Float>,
    positional pe: UnsafePointer<Float>, imageTokens n: Int
  ) {
    let e = transformer.embedding
    let (first, second) = (transformer.layers[0], transformer.layers[1])
    let gamma = first.norm4.weight.base
    let beta = first.norm4.bias.base
    let b0 = first.imageToTokens.out.bias.base
    // X_0·J (the LayerNorm statistics read it too), then X̂ = X_0·J·Γ_0 from it.
    let plain = DecoderBuffer(count: n * e)
    Self.centredScaledRows(k0, bias: b0, rows: n, width: e, gamma: nil, into: plain.base)
    let centred = DecoderBuffer(count: n * e)
    for p in 0..<n {
      for a in 0..<e { centred.base[p * e + a] = plain.base[p * e + a] * gamma[a] }
    }
    norms = NormStatisticsBasis(
      transformer: transformer, centred: plain.base, hat: centred.base, imageTokens: n)
    let shifted = DecoderBuffer(count: n * e)
    Self.addRowVector(pe, beta, rows: n, width: e, into: shifted.base)
    let t2i = second.tokensToImage
    let i2t = second.imageToTokens
    func project(_ x: DecoderBuffer, _ linear: DecoderLinear, bias: Bool, _ a: DecoderAttention)
      -> DecoderBuffer
    {
      withExtendedLifetime(x) {
        a.interleavedProjection(x.base, rows: n, through: linear, bias: bias)
      }
    }
    keys = project(centred, t2i.k, bias: false, t2i)
    values = project(centred, t2i.v, bias: false, t2i)
    queries = project(centred, i2t.q, bias: false, i2t)
    keyOffset = project(shifted, t2i.k, bias: false, t2i)
    queryOffset = project(shifted, i2t.q, bias: true, i2t)
    valueOffset = Self.times(beta, t2i.v, bias: true, embedding: e)

    let final = transformer.finalAttention
    let gamma1 = second.norm4.weight.base
    let beta1 = second.norm4.bias.base
    // X̌ = X̂·J·Γ_1 in place of X̂, pe + β_1 in place of pe + β_0.
    Self.centredScaledRows(centred.base, rows: n, width: e, gamma: gamma1, into: centred.base)
    Self.addRowVector(pe, beta1, rows: n, width: e, into: shifted.base)
    finalKeys = project(centred, final.k, bias: false, final)
    finalValues = project(centred, final.v, bias: false, final)
    finalKeyOffset = project(shifted, final.k, bias: false, final)
    let b1 = second.imageToTokens.out.bias.base
    var shift = [Float](repeating: 0, count: e)
    Self.centredScaledRows(beta, bias: b1, rows: 1, width: e, gamma: gamma1, into: &shift)
    let (keyShift, valueShift) = (
      Self.times(shift, final.k, bias: false, embedding: e),
      Self.times(shift, final.v, bias: false, embedding: e)
    )
    // Bound to locals: a temporary's `.base` may be freed before the call reads it.
    finalKeyShift = withExtendedLifetime(keyShift) {
      final.interleaveHeads(keyShift.base, rows: 1)
    }
    finalValueShift = withExtendedLifetime(valueShift) {
      final.interleaveHeads(valueShift.base, rows: 1)
    }
    finalValueOffset = Self.times(beta1, final.v, bias: true, embedding: e)
  }

  /// `x·Wᵀ (+ b)` for one vector x of E values.
  private static func times(
    _ x: UnsafePointer<Float>, _ linear: DecoderLinear, bias: Bool, embedding e: Int
  ) -> DecoderBuffer {
    let out = DecoderBuffer(count: linear.outFeatures)
    for o in 0..<linear.outFeatures {
      var s = bias ? linear.bias.base[o] : 0
      for a in 0..<e { s += x[a] * linear.weight.base[o * e + a] }
      out.base[o] = s
    }
    return out
  }

  /// Whether the fold applies to `transformer` (two blocks, 8 heads interleavable in
  /// `HeadAttention`'s layout, equal internal widths in the second block).
  static func applies(to transformer: TwoWayTransformer) -> Bool {
    guard transformer.layers.count == 2 else { return false }
    let second = transformer.layers[1]
    return second.tokensToImage.internalDim == second.imageToTokens.internalDim
  }

  /// `out[r] = ((x[r] + bias) − mean(x[r] + bias))·γ` for `rows` rows of `width`: a row vector
  /// times J·Γ (`bias` and `gamma` optional, J alone without either; `out` may be `x`).
  static func centredScaledRows(
    _ x: UnsafePointer<Float>, bias: UnsafePointer<Float>? = nil, rows: Int, width: Int,
    gamma: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>
  ) {
    // Row sums as dot products with ones: a plain float sum does not vectorise.
    let ones = [Float](repeating: 1, count: width)
    let sums = DecoderBuffer(count: rows)
    HeadAttention.rowDots(x, lda: width, ones, ldb: 0, rows: rows, cols: width, into: sums.base)
    let biasSum = bias.map { b in (0..<width).reduce(Float(0)) { $0 + b[$1] } } ?? 0
    for r in 0..<rows {
      let (xr, o) = (x + r * width, out + r * width)
      let mean = (sums.base[r] + biasSum) / Float(width)
      switch (bias, gamma) {
      case (let b?, let g?): for a in 0..<width { o[a] = (xr[a] + b[a] - mean) * g[a] }
      case (let b?, nil): for a in 0..<width { o[a] = xr[a] + b[a] - mean }
      case (nil, let g?): for a in 0..<width { o[a] = (xr[a] - mean) * g[a] }
      case (nil, nil): for a in 0..<width { o[a] = xr[a] - mean }
      }
    }
  }

  /// `out[r][a] = x[r][a] + v[a]` for `rows` rows of `width`.
  private static func addRowVector(
    _ x: UnsafePointer<Float>, _ v: UnsafePointer<Float>, rows: Int, width: Int,
    into out: UnsafeMutablePointer<Float>
  ) {
    for r in 0..<rows {
      for a in 0..<width { out[r * width + a] = x[r * width + a] + v[a] }
    }
  }

  /// `out[p][i] = outer[p]·(inner[p]·base[p][i] + shift[i]) + offset[p][i]` for `rows` rows
  /// of `width` (offset optional): the final attention's image side on the basis.
  static func finalRows(
    _ base: UnsafePointer<Float>, inner: UnsafePointer<Float>, outer: UnsafePointer<Float>,
    shift: UnsafePointer<Float>, offset: UnsafePointer<Float>?, rows: Int, width: Int,
    into out: UnsafeMutablePointer<Float>
  ) {
    HeadAttention.scaleRows(
      base, ldx: width, rows: rows, width: width, inner: inner, outer: outer, shift: shift,
      offset: offset, ldo: width, into: out, ldy: width)
  }

  /// `out[p][i] = scale[p]·base[p][i] (+ offset[p][i])` for `rows` rows of `width`.
  static func scaledPlusOffset(
    _ base: UnsafePointer<Float>, scale: UnsafePointer<Float>, offset: UnsafePointer<Float>?,
    rows: Int, width: Int, into out: UnsafeMutablePointer<Float>
  ) {
    HeadAttention.scaleRows(
      base, ldx: width, rows: rows, width: width, inner: scale, offset: offset, ldo: width,
      into: out, ldy: width)
  }
}

/// One prompt's side of a folded second-block attention: its prompt tokens' vectors and the
/// 8T × 8T scores that `ρ_0·P_0` meets (row c' = j'·8 + h' of `Û_0`, column c = j·8 + h:
/// `(Û_0·Wᵀ)_{c', h}·x_{j,h}`, `x` the prompt side's per-head vectors).
struct SecondBlockMix {
  /// T × 128, heads interleaved: the token→image queries or the image→token keys.
  let tokens: DecoderBuffer
  let scores: PackedMatrix
  /// For the token→image attention: `Û_0·Wvᵀ`, 8T × 128, heads as column blocks.
  let values: DecoderBuffer?

  /// - Parameters:
  ///   - tokens: T × 128 (heads as column blocks), the prompt side already projected.
  ///   - mixed: `Û_0·Wᵀ` (rows × 128, heads as column blocks; the final attention's
  ///     `[Û_0; U_1]·J·Γ_1·Wᵀ`), W the projection the image tokens go through (`Wk` or `Wq`),
  ///     from `ValueMaps`.
  ///   - values: the same rows through the token→image attention's value projection, if this
  ///     is that attention.
  init(
    tokens projected: UnsafePointer<Float>, count t: Int, mixed: DecoderBuffer, rows r: Int,
    values: DecoderBuffer?, attention: DecoderAttention
  ) {
    let hT = 8 * t
    tokens = attention.interleaveHeads(projected, rows: t)
    let interleaved = attention.interleaveHeads(mixed.base, rows: r)
    let s = DecoderBuffer(count: r * hT)
    HeadAttention.scores(
      interleaved.base, ldq: attention.internalDim, rows: r, keys: tokens.base, tokens: t,
      headDim: attention.headDim, into: s.base, ldo: hT)
    scores = PackedMatrix(s.base, rows: r, columns: hT, ld: hT)
    self.values = values
  }

  /// Scores of one slice of image tokens (rows × 8T, row stride `ldo`):
  /// `(ρ_0·base + offset)·tokens` per head, plus `(ρ_0·P_0)·scores`.
  func sliceScores(
    base: UnsafePointer<Float>, offset: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
    probabilities: UnsafePointer<Float>, ldp: Int, rows: Int, attention: DecoderAttention,
    scratch: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>, ldo: Int
  ) {
    let dim = attention.internalDim
    let t = scores.columns / 8
    SecondBlockBasis.scaledPlusOffset(
      base, scale: rstd, offset: offset, rows: rows, width: dim, into: scratch)
    HeadAttention.scores(
      scratch, ldq: dim, rows: rows, keys: tokens.base, tokens: t, headDim: attention.headDim,
      into: out, ldo: ldo)
    SmallGEMM.multiply(
      m: rows, k: scores.rows, a: probabilities, lda: ldp, b: scores, c: out, ldc: ldo,
      accumulate: true)
  }
}
