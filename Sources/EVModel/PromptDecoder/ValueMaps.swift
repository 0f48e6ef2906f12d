import EVTensor

/// Products of the two image→token attentions' output projections with every linear map the
/// folded decoder applies to their folded values, computed once per model.
///
/// A prompt's folded values are `U_l = V_l·O_l` in disguise: row j·8 + h of U_l is
/// `v_{j,h}·Wo_hᵀ`, i.e. block-diagonal per-head values (8T × 128) times `O_l = Wo_lᵀ`
/// (128 × E, `DecoderAttention.outTransposed`). Everything the basis path does with U_l
/// afterwards is linear (centring J, LayerNorm scales Γ, projections W, Gram matrices), so
/// `U_l·M = V_l·(O_l·M)`: with `O_l·M` (128 × C) prepared here, a prompt pays T·8·16·C
/// multiply-adds (`headTimes`) instead of first forming U_l (8T × 256) and then 8T·256·C, and
/// for the Gram matrices 128-wide instead of 256-wide products. For one point this takes the
/// token side's mixing products from ≈ 24 M multiply-adds (17 M of them on one core) to ≈ 2 M.
///
/// Notation as in `SecondBlockBasis` and `NormStatisticsBasis`: Ô_0 = O_0·J·Γ_0 (so
/// `Û_0 = V_0·Ô_0`), rows of O·J centred.
struct ValueMaps: Sendable {
  /// `Ô_0·Wᵀ` for the second block's token→image keys and values and image→token queries.
  let keys1: HeadMaps
  let values1: HeadMaps
  let queries1: HeadMaps
  /// The final attention's keys and values: `Ô_0·J·Γ_1·Wᵀ` and `O_1·J·Γ_1·Wᵀ`.
  let finalKeys: (HeadMaps, HeadMaps)
  let finalValues: (HeadMaps, HeadMaps)
  /// Gram matrices (128 × 128): `(O_0·J)(O_0·J)ᵀ` for ρ_0; for ρ_1, with R_0 = Ô_0·J and
  /// R_1 = O_1·J, `R_0·R_0ᵀ`, `R_0·R_1ᵀ` and `R_1·R_1ᵀ`.
  let gram0: HeadMaps
  let gramAA: HeadMaps
  let gramAB: HeadMaps
  let gramBB: HeadMaps
  /// `R_0·dᵀ` and `R_1·dᵀ` (128 each), d = (β_0 + b_1)·J.
  let shift0: DecoderBuffer
  let shift1: DecoderBuffer
  /// The folded upscaling's mixing maps `O_l·W_l` (128 × 256 each, `UpscaleFold.maps`).
  let upscale: (HeadMaps, HeadMaps)

  init(transformer: TwoWayTransformer, upscaleFold: UpscaleFold) {
    let e = transformer.embedding
    let (first, second) = (transformer.layers[0], transformer.layers[1])
    let (i2t0, i2t1) = (first.imageToTokens, second.imageToTokens)
    let final = transformer.finalAttention
    let rows = i2t0.internalDim
    func matrix(_ p: UnsafePointer<Float>, rows: Int, cols: Int) -> [[Double]] {
      (0..<rows).map { r in (0..<cols).map { Double(p[r * cols + $0]) } }
    }
    func centred(_ m: [[Double]], scale gamma: UnsafePointer<Float>? = nil) -> [[Double]] {
      m.map { row in
        let mean = row.reduce(0, +) / Double(row.count)
        return row.indices.map { a in (row[a] - mean) * (gamma.map { Double($0[a]) } ?? 1) }
      }
    }
    // a · bᵀ for row-major a (r × E) and b (c × E): as an nn.Linear applies b to a's rows.
    func timesTransposed(_ a: [[Double]], _ b: [[Double]]) -> DecoderBuffer {
      let out = DecoderBuffer(count: a.count * b.count)
      for (i, ra) in a.enumerated() {
        for (j, rb) in b.enumerated() {
          var s = 0.0
          for k in 0..<ra.count { s += ra[k] * rb[k] }
          out.base[i * b.count + j] = Float(s)
        }
      }
      return out
    }
    func weight(_ linear: DecoderLinear) -> [[Double]] {
      matrix(linear.weight.base, rows: linear.outFeatures, cols: linear.inFeatures)
    }
    let o0 = matrix(i2t0.outTransposed.base, rows: rows, cols: e)
    let o1 = matrix(i2t1.outTransposed.base, rows: i2t1.internalDim, cols: e)
    let gamma0 = first.norm4.weight.base
    let gamma1 = second.norm4.weight.base
    let hat0 = centred(o0, scale: gamma0)
    let d = i2t0.headDim
    func maps(_ m: DecoderBuffer) -> HeadMaps { HeadMaps(m, headDim: d) }
    keys1 = maps(timesTransposed(hat0, weight(second.tokensToImage.k)))
    values1 = maps(timesTransposed(hat0, weight(second.tokensToImage.v)))
    queries1 = maps(timesTransposed(hat0, weight(i2t1.q)))
    let (final0, final1) = (centred(hat0, scale: gamma1), centred(o1, scale: gamma1))
    finalKeys = (
      maps(timesTransposed(final0, weight(final.k))), maps(timesTransposed(final1, weight(final.k)))
    )
    finalValues = (
      maps(timesTransposed(final0, weight(final.v))), maps(timesTransposed(final1, weight(final.v)))
    )
    let plain0 = centred(o0)
    gram0 = maps(timesTransposed(plain0, plain0))
    let (r0, r1) = (centred(hat0), centred(o1))
    gramAA = maps(timesTransposed(r0, r0))
    gramAB = maps(timesTransposed(r0, r1))
    gramBB = maps(timesTransposed(r1, r1))
    let sum = (0..<e).map { Double(first.norm4.bias.base[$0]) + Double(i2t1.out.bias.base[$0]) }
    let shift = centred([sum])
    shift0 = timesTransposed(r0, shift)
    shift1 = timesTransposed(r1, shift)
    // O_l·W_l: W_l is E × 256 (row-major), so O_l·W_l = O_l·(W_lᵀ)ᵀ.
    func transposedMap(_ l: Int) -> [[Double]] {
      let w = upscaleFold.maps[l].base
      let cols = upscaleFold.maps[l].count / e
      return (0..<cols).map { c in (0..<e).map { Double(w[$0 * cols + c]) } }
    }
    upscale = (
      maps(timesTransposed(o0, transposedMap(0))), maps(timesTransposed(o1, transposedMap(1)))
    )
  }

  /// `V·M` for a prompt's per-head values `v` (T × 128, heads as column blocks of `d`) and a
  /// 128 × C matrix `m`: row j·8 + h is `v_{j,h}·M[h·d ..< (h+1)·d]` (8T × C, written at row
  /// stride `ldo`).
  static func headTimes(
    _ v: UnsafePointer<Float>, count t: Int, headDim d: Int, _ m: HeadMaps,
    into out: UnsafeMutablePointer<Float>, ldo: Int
  ) {
    precondition(d == m.headDim, "ValueMaps: head dimension \(d) ≠ the maps' \(m.headDim)")
    let heads = DecoderAttention.heads
    for h in 0..<heads {
      SmallGEMM.multiply(
        m: t, k: d, a: v + h * d, lda: heads * d, b: m.heads[h], c: out + h * ldo,
        ldc: heads * ldo)
    }
  }

  /// `V_a·G·V_bᵀ` (8T_a × 8T_b, row stride `ldo`) for per-head values `a`, `b` (T × 128, heads
  /// as column blocks of `d`) and a 128 × 128 Gram matrix G, times `scale`.
  static func gram(
    _ a: UnsafePointer<Float>, count ta: Int, _ g: HeadMaps, _ b: UnsafePointer<Float>,
    count tb: Int, headDim d: Int, scale: Float = 1, into out: UnsafeMutablePointer<Float>,
    ldo: Int
  ) {
    let heads = DecoderAttention.heads
    let dim = heads * d
    let left = DecoderBuffer(count: heads * ta * dim)
    headTimes(a, count: ta, headDim: d, g, into: left.base, ldo: dim)
    for r in 0..<(heads * ta) {
      let row = left.base + r * dim
      for j in 0..<tb {
        for h in 0..<heads {
          var s: Float = 0
          for c in 0..<d { s += row[h * d + c] * b[j * dim + h * d + c] }
          out[r * ldo + j * heads + h] = scale * s
        }
      }
    }
  }
}

/// A 128 × C map of `ValueMaps` as the products use it: one packed d × C block per head (the
/// rows a head's values multiply), packed once per model.
struct HeadMaps: Sendable {
  let heads: [PackedMatrix]
  let headDim: Int

  init(_ m: DecoderBuffer, headDim d: Int) {
    let rows = DecoderAttention.heads * d
    precondition(m.count % rows == 0, "HeadMaps: \(m.count) values are not \(rows) rows")
    let c = m.count / rows
    heads = (0..<DecoderAttention.heads).map {
      PackedMatrix(m.base + $0 * d * c, rows: d, columns: c, ld: c)
    }
    headDim = d
  }
}
