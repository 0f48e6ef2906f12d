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
/// input's rows are far from constant), and the per-image squares are summed in Double.
struct NormStatisticsBasis: Sendable {
  /// ‖X_0·J‖² per image token (N).
  let squares0: DecoderBuffer
  /// `X_0·J·Wo_0` (N × 128, heads interleaved as the first block's image→token attention's).
  let cross0: DecoderBuffer
  /// ‖X̃‖² and `X̃·d` per image token (N each), ‖d‖².
  let squares1: DecoderBuffer
  let shift1: DecoderBuffer
  let shiftSquare: Float
  /// d = (β_0 + b_1)·J (E).
  let shift: DecoderBuffer
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
    Self.centre(hat, rows: n, width: e, into: tilde.base)
    squares1 = Self.squares(tilde.base, rows: n, width: e)
    let sum = (0..<e).map { first.norm4.bias.base[$0] + i2t1.out.bias.base[$0] }
    var d = [Float](repeating: 0, count: e)
    Self.centre(sum, rows: 1, width: e, into: &d)
    shift = DecoderBuffer(d)
    shiftSquare = Float(d.reduce(0.0) { $0 + Double($1) * Double($1) })
    shift1 = DecoderBuffer(count: n)
    for p in 0..<n {
      var s: Float = 0
      for a in 0..<e { s += tilde.base[p * e + a] * d[a] }
      shift1.base[p] = s
    }
    cross1b = i2t1.interleavedProjection(tilde.base, rows: n, weight: i2t1.outTransposed.base)
    // X̃·Γ_0·J in place of X̃.
    let gamma0 = first.norm4.weight.base
    for p in 0..<n {
      for a in 0..<e { tilde.base[p * e + a] *= gamma0[a] }
    }
    Self.centre(tilde.base, rows: n, width: e, into: tilde.base)
    cross1a = i2t0.interleavedProjection(tilde.base, rows: n, weight: i2t0.outTransposed.base)
  }

  /// Σ_a x[r][a]² per row, summed in Double.
  private static func squares(_ x: UnsafePointer<Float>, rows: Int, width: Int) -> DecoderBuffer {
    let out = DecoderBuffer(count: rows)
    for r in 0..<rows {
      var s: Double = 0
      for a in 0..<width { s += Double(x[r * width + a]) * Double(x[r * width + a]) }
      out.base[r] = Float(s)
    }
    return out
  }

  /// `out[r] = x[r] − mean(x[r])` (`out` may be `x`).
  static func centre(
    _ x: UnsafePointer<Float>, rows: Int, width: Int, into out: UnsafeMutablePointer<Float>
  ) {
    for r in 0..<rows {
      var mean: Float = 0
      for a in 0..<width { mean += x[r * width + a] }
      mean /= Float(width)
      for a in 0..<width { out[r * width + a] = x[r * width + a] - mean }
    }
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
  ///   - values: v (T × 128, heads as column blocks); `folded`: U_0 (8T × E).
  init(
    values v: UnsafePointer<Float>, folded u: UnsafePointer<Float>, count t: Int,
    attention: DecoderAttention
  ) {
    let e = attention.embedding
    let hT = 8 * t
    tokens = t
    values = attention.interleaveHeads(v, rows: t)
    let centred = DecoderBuffer(count: hT * e)
    NormStatisticsBasis.centre(u, rows: hT, width: e, into: centred.base)
    let gram = DecoderBuffer(count: hT * hT)
    BLAS.serialSgemm(
      transA: false, transB: true, m: hT, n: hT, k: e, alpha: 0.5, a: centred.base, lda: e,
      b: centred.base, ldb: e, beta: 0, c: gram.base, ldc: hT)
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
/// Gram matrix of `Ṽ = [Û_0·J; U_1·J]` as `[G_aa | 2·G_ab]` and `G_bb`, and `2·Ṽ·dᵀ`.
struct SecondNormMix {
  let values0: DecoderBuffer
  let values1: DecoderBuffer
  let gramA: PackedMatrix
  let gramB: PackedMatrix
  let linear: DecoderBuffer
  let tokens: Int

  /// - Parameters:
  ///   - values0, values1: each block's v (T × 128, heads as column blocks).
  ///   - centred0: Û_0 = U_0·J·Γ_0 (8T × E); `folded1`: U_1 (8T × E).
  init(
    values0 v0: UnsafePointer<Float>, values1 v1: UnsafePointer<Float>,
    centred0: UnsafePointer<Float>, folded1: UnsafePointer<Float>, count t: Int,
    basis: NormStatisticsBasis, attentions: (DecoderAttention, DecoderAttention)
  ) {
    let e = attentions.0.embedding
    let hT = 8 * t
    tokens = t
    values0 = attentions.0.interleaveHeads(v0, rows: t)
    values1 = attentions.1.interleaveHeads(v1, rows: t)
    let tilde = DecoderBuffer(count: 2 * hT * e)
    NormStatisticsBasis.centre(centred0, rows: hT, width: e, into: tilde.base)
    NormStatisticsBasis.centre(folded1, rows: hT, width: e, into: tilde.base + hT * e)
    let gram = DecoderBuffer(count: 2 * hT * 2 * hT)
    BLAS.serialSgemm(
      transA: false, transB: true, m: 2 * hT, n: 2 * hT, k: e, alpha: 1, a: tilde.base, lda: e,
      b: tilde.base, ldb: e, beta: 0, c: gram.base, ldc: 2 * hT)
    // [G_aa | 2·G_ab]: the first hT rows of the Gram matrix, right half doubled.
    for r in 0..<hT {
      for c in hT..<(2 * hT) { gram.base[r * 2 * hT + c] *= 2 }
    }
    gramA = PackedMatrix(gram.base, rows: hT, columns: 2 * hT, ld: 2 * hT)
    gramB = PackedMatrix(gram.base + hT * 2 * hT + hT, rows: hT, columns: hT, ld: 2 * hT)
    linear = DecoderBuffer(count: 2 * hT)
    for r in 0..<(2 * hT) {
      var s: Float = 0
      for a in 0..<e { s += tilde.base[r * e + a] * basis.shift.base[a] }
      linear.base[r] = 2 * s
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
    // scratch = [2ρ_0·Û_0·J·X̃ᵀ, 2ρ_0·U_1·J·X̃ᵀ] + 2·Ṽ·dᵀ + Ṽ·Ṽᵀ·Mᵀ (the symmetric form:
    // M_a·G_aa in the left half, 2·M_a·G_ab + M_b·G_bb in the right).
    HeadAttention.scores(
      basis.cross1a.base + p0 * a0.internalDim, ldq: a0.internalDim, rows: rows,
      keys: values0.base, tokens: tokens, headDim: a0.headDim, into: scratch, ldo: ld)
    HeadAttention.scores(
      basis.cross1b.base + p0 * a1.internalDim, ldq: a1.internalDim, rows: rows,
      keys: values1.base, tokens: tokens, headDim: a1.headDim, into: scratch + hT, ldo: ld)
    let lin = UnsafePointer(linear.base)
    for r in 0..<rows {
      let (s, sr) = (2 * rstd0[r], scratch + r * ld)
      for c in 0..<ld { sr[c] = s * sr[c] + lin[c] }
    }
    SmallGEMM.multiply(
      m: rows, k: hT, a: m, lda: ldm, b: gramA, c: scratch, ldc: ld, accumulate: true)
    SmallGEMM.multiply(
      m: rows, k: hT, a: m + hT, lda: ldm, b: gramB, c: scratch + hT, ldc: ld, accumulate: true)
    HeadAttention.rowDots(m, lda: ldm, scratch, ldb: ld, rows: rows, cols: ld, into: rstd)
    let (squares, shifts, c) = (basis.squares1.base + p0, basis.shift1.base + p0, basis.shiftSquare)
    for r in 0..<rows {
      let rho = rstd0[r]
      rstd[r] += rho * rho * squares[r] + 2 * rho * shifts[r] + c
    }
    NormStatisticsBasis.rstd(rstd, rows: rows, embedding: a0.embedding)
  }
}
