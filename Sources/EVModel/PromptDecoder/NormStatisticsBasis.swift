import EVTensor

/// The two residual LayerNorms' per-token scales ρ_0 and ρ_1 (1/√(variance + eps) after the
/// first and the second block) from quadratic forms on the per-image basis, so that a prompt
/// never forms the image tokens K_1 and K_2 themselves.
///
/// With the basis (`SecondBlockBasis`) everything the prompt reads of K_1 and K_2 is a
/// per-image part, ρ_0, ρ_1 and the attention probabilities; the tokens were only still formed
/// for their LayerNorm statistics, each an N × 8T × 256 product (`P_l·U_l`) and a pass over
/// N × 256. The variances are squared norms of centred rows (J = I − 11ᵀ/E centres a row):
///
///     E·σ_0² = ‖X_0·J‖² + 2·P_0·(U_0·J·X_0ᵀ) + P_0·(U_0·J·U_0ᵀ)·P_0ᵀ,      X_0 = K_0 + b_0
///     E·σ_1² = ‖ρ_0·X̃ + d + M·Ṽ‖²,   X̃ = X̂·J, d = (β_0 + b_1)·J, M = [ρ_0·P_0, P_1],
///                                     Ṽ = [Û_0·J; U_1·J]
///
/// (row by row, p an image token). Every `U_l·J·yᵀ` against an image-side row `y` is, because
/// `U_l`'s row j·8 + h is `v_{j,h}·Wo_hᵀ`, a per-head dot product of the prompt's values with
/// `y·J·Wo_l` (N × 128, once per image); the Gram matrices `Ṽ·Ṽᵀ` are 8T × 8T per prompt. So a
/// prompt pays N·8T·16 per cross term and N × 8T × 8T (block 0) and N × 8T × 16T (block 1,
/// using the Gram matrix's symmetry) products: for one point 3.7 + 12.8 M and 7.3 + 38.5 M
/// multiply-adds instead of 2 × 59 M and two passes over the image tokens.
///
/// The terms are of the size of the variance itself (no large cancelling terms: a LayerNorm
/// input's rows are far from constant); against the direct order the results differ by float
/// rounding only (`basisMatchesTheDirectOrderForManyTokens`).
struct NormStatisticsBasis: Sendable {
  /// ‖X_0·J‖² per image token (N).
  let squares0: DecoderBuffer
  /// `X_0·J·Wo_0` (N × 128, heads interleaved as the first block's image→token attention's).
  let cross0: DecoderBuffer
  /// ‖X̃‖² and `X̃·d` per image token (N each), ‖d‖².
  let squares1: DecoderBuffer
  let shift1: DecoderBuffer
  let shiftSquare: Float
  /// `X̃·Γ_0·J·Wo_0` and `X̃·Wo_1` (N × 128 each, interleaved as the respective block's
  /// image→token attention): the cross terms with `Û_0·J = U_0·J·Γ_0·J` and `U_1·J`.
  let cross1a: DecoderBuffer
  let cross1b: DecoderBuffer

  /// - Parameters:
  ///   - centred: `X_0·J` (N × E); `hat`: X̂ = X_0·J·Γ_0 (N × E).
  init(
    transformer: TwoWayTransformer, centred: UnsafePointer<Float>, hat: UnsafePointer<Float>,
    imageTokens n: Int
  ) {
    let e = transformer.embedding
    let (first, second) = (transformer.layers[0], transformer.layers[1])
    let (i2t0, i2t1) = (first.imageToTokens, second.imageToTokens)
    squares0 = Self.squares(centred, rows: n, width: e)
    cross0 = i2t0.interleavedProjection(centred, rows: n, weight: i2t0.outTransposed.base)

    let tilde = DecoderBuffer(count: n * e)
    SecondBlockBasis.centredScaledRows(hat, rows: n, width: e, gamma: nil, into: tilde.base)
    squares1 = Self.squares(tilde.base, rows: n, width: e)
    let sum = (0..<e).map { first.norm4.bias.base[$0] + i2t1.out.bias.base[$0] }
    var d = [Float](repeating: 0, count: e)
    SecondBlockBasis.centredScaledRows(sum, rows: 1, width: e, gamma: nil, into: &d)
    shiftSquare = Float(d.reduce(0.0) { $0 + Double($1) * Double($1) })
    shift1 = DecoderBuffer(count: n)
    HeadAttention.rowDots(tilde.base, lda: e, d, ldb: 0, rows: n, cols: e, into: shift1.base)
    cross1b = i2t1.interleavedProjection(tilde.base, rows: n, weight: i2t1.outTransposed.base)
    // X̃·Γ_0·J in place of X̃.
    let gamma0 = first.norm4.weight.base
    for p in 0..<n {
      for a in 0..<e { tilde.base[p * e + a] *= gamma0[a] }
    }
    SecondBlockBasis.centredScaledRows(
      tilde.base, rows: n, width: e, gamma: nil, into: tilde.base)
    cross1a = i2t0.interleavedProjection(tilde.base, rows: n, weight: i2t0.outTransposed.base)
  }

  /// Σ_a x[r][a]² per row.
  private static func squares(_ x: UnsafePointer<Float>, rows: Int, width: Int) -> DecoderBuffer {
    let out = DecoderBuffer(count: rows)
    HeadAttention.rowDots(x, lda: width, x, ldb: width, rows: rows, cols: width, into: out.base)
    return out
  }

  /// In place: `E·σ²` → `1/√(σ² + eps)` (σ² clamped at 0 against rounding).
  fileprivate static func rstd(_ x: UnsafeMutablePointer<Float>, rows: Int, embedding e: Int) {
    let inv = 1 / Float(e)
    for r in 0..<rows { x[r] = 1 / (max(x[r] * inv, 0) + DecoderLayerNorm.eps).squareRoot() }
  }
}

/// One prompt's side of ρ_0 (`NormStatisticsBasis`): the first block's image→token values and
/// half the Gram matrix `U_0·J·U_0ᵀ`.
struct FirstNormMix {
  /// T × 128, heads interleaved.
  let values: DecoderBuffer
  let halfGram: PackedMatrix
  let tokens: Int

  /// - Parameters:
  ///   - values: v (T × 128, heads as column blocks), the first block's image→token values.
  init(values v: UnsafePointer<Float>, count t: Int, maps: ValueMaps, attention: DecoderAttention) {
    let hT = 8 * t
    tokens = t
    values = attention.interleaveHeads(v, rows: t)
    let gram = DecoderBuffer(count: hT * hT)
    ValueMaps.gram(
      v, count: t, maps.gram0, v, count: t, headDim: attention.headDim, scale: 0.5,
      into: gram.base, ldo: hT)
    halfGram = PackedMatrix(gram.base, rows: hT, columns: hT, ld: hT)
  }

  /// ρ_0 of one slice of image tokens starting at `p0`, from its attention probabilities P_0
  /// (rows × 8T, row stride `ldp`); `scratch` holds rows × 8T floats.
  func rstd(
    basis: NormStatisticsBasis, probabilities p: UnsafePointer<Float>, ldp: Int, from p0: Int,
    rows: Int, attention: DecoderAttention, scratch: UnsafeMutablePointer<Float>,
    into rstd: UnsafeMutablePointer<Float>
  ) {
    let (hT, dim) = (8 * tokens, attention.internalDim)
    // scratch = U_0·J·X_0ᵀ + (U_0·J·U_0ᵀ/2)·P_0ᵀ, row by row; E·σ² = ‖X_0·J‖² + 2·P_0·scratch.
    HeadAttention.scores(
      basis.cross0.base + p0 * dim, ldq: dim, rows: rows, keys: values.base, tokens: tokens,
      headDim: attention.headDim, into: scratch, ldo: hT)
    SmallGEMM.multiply(
      m: rows, k: hT, a: p, lda: ldp, b: halfGram, c: scratch, ldc: hT, accumulate: true)
    HeadAttention.rowDots(p, lda: ldp, scratch, ldb: hT, rows: rows, cols: hT, into: rstd)
    let squares = basis.squares0.base + p0
    for r in 0..<rows { rstd[r] = squares[r] + 2 * rstd[r] }
    NormStatisticsBasis.rstd(rstd, rows: rows, embedding: attention.embedding)
  }
}

/// One prompt's side of ρ_1 (`NormStatisticsBasis`): both blocks' image→token values, the
/// Gram matrix of `Ṽ = [Û_0·J; U_1·J]` as `[G_aa/2 | G_ab]` and `G_bb/2` (the halves are
/// exact), and `Ṽ·dᵀ`.
struct SecondNormMix {
  let values0: DecoderBuffer
  let values1: DecoderBuffer
  let gramA: PackedMatrix
  let gramB: PackedMatrix
  let linear: DecoderBuffer
  let tokens: Int

  /// - Parameters:
  ///   - values0, values1: each block's image→token values v (T × 128, heads as column
  ///     blocks).
  init(
    values0 v0: UnsafePointer<Float>, values1 v1: UnsafePointer<Float>, count t: Int,
    maps: ValueMaps, attentions: (DecoderAttention, DecoderAttention)
  ) {
    let hT = 8 * t
    let d = attentions.0.headDim
    tokens = t
    values0 = attentions.0.interleaveHeads(v0, rows: t)
    values1 = attentions.1.interleaveHeads(v1, rows: t)
    // [G_aa/2 | G_ab] (hT × 2hT) and G_bb/2 (hT × hT).
    let a = DecoderBuffer(count: hT * 2 * hT)
    ValueMaps.gram(
      v0, count: t, maps.gramAA, v0, count: t, headDim: d, scale: 0.5, into: a.base,
      ldo: 2 * hT)
    ValueMaps.gram(
      v0, count: t, maps.gramAB, v1, count: t, headDim: d, into: a.base + hT, ldo: 2 * hT)
    let b = DecoderBuffer(count: hT * hT)
    ValueMaps.gram(
      v1, count: t, maps.gramBB, v1, count: t, headDim: d, scale: 0.5, into: b.base, ldo: hT)
    gramA = PackedMatrix(a.base, rows: hT, columns: 2 * hT, ld: 2 * hT)
    gramB = PackedMatrix(b.base, rows: hT, columns: hT, ld: hT)
    // Ṽ·dᵀ: row j·8 + h of each half is v_{j,h}·(R_l·dᵀ)_h.
    linear = DecoderBuffer(count: 2 * hT)
    for (l, (v, shift)) in [(v0, maps.shift0), (v1, maps.shift1)].enumerated() {
      for j in 0..<t {
        for h in 0..<8 {
          var s: Float = 0
          for c in 0..<d { s += v[j * 8 * d + h * d + c] * shift.base[h * d + c] }
          linear.base[l * hT + j * 8 + h] = s
        }
      }
    }
  }

  /// ρ_1 of one slice starting at `p0`, from `M = [ρ_0·P_0, P_1]` (rows × 16T, row stride
  /// `ldm`) and ρ_0; `scratch` holds rows × 16T floats.
  func rstd(
    basis: NormStatisticsBasis, mixing m: UnsafePointer<Float>, ldm: Int,
    rstd0: UnsafePointer<Float>, from p0: Int, rows: Int,
    attentions: (DecoderAttention, DecoderAttention), scratch: UnsafeMutablePointer<Float>,
    into rstd: UnsafeMutablePointer<Float>
  ) {
    let hT = 8 * tokens
    let ld = 2 * hT
    let (a0, a1) = attentions
    // scratch = [ρ_0·Û_0·J·X̃ᵀ, ρ_0·U_1·J·X̃ᵀ] + Ṽ·dᵀ + Ṽ·Ṽᵀ·Mᵀ/2 (the symmetric form:
    // M_a·G_aa/2 in the left half, M_a·G_ab + M_b·G_bb/2 in the right), and then
    // E·σ_1² = ρ_0²·‖X̃‖² + 2ρ_0·X̃·d + ‖d‖² + 2·M·scratch.
    HeadAttention.scores(
      basis.cross1a.base + p0 * a0.internalDim, ldq: a0.internalDim, rows: rows,
      keys: values0.base, tokens: tokens, headDim: a0.headDim, into: scratch, ldo: ld)
    HeadAttention.scores(
      basis.cross1b.base + p0 * a1.internalDim, ldq: a1.internalDim, rows: rows,
      keys: values1.base, tokens: tokens, headDim: a1.headDim, into: scratch + hT, ldo: ld)
    HeadAttention.scaleRows(
      scratch, ldx: ld, rows: rows, width: ld, inner: rstd0, shift: linear.base, into: scratch,
      ldy: ld)
    SmallGEMM.multiply(
      m: rows, k: hT, a: m, lda: ldm, b: gramA, c: scratch, ldc: ld, accumulate: true)
    SmallGEMM.multiply(
      m: rows, k: hT, a: m + hT, lda: ldm, b: gramB, c: scratch + hT, ldc: ld, accumulate: true)
    HeadAttention.rowDots(m, lda: ldm, scratch, ldb: ld, rows: rows, cols: ld, into: rstd)
    let (squares, shifts, c) = (basis.squares1.base + p0, basis.shift1.base + p0, basis.shiftSquare)
    for r in 0..<rows {
      let rho = rstd0[r]
      rstd[r] = 2 * rstd[r] + (rho * rho * squares[r] + 2 * rho * shifts[r] + c)
    }
    NormStatisticsBasis.rstd(rstd, rows: rows, embedding: a0.embedding)
  }
}
