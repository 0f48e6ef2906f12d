import EVTensor

/// The sliced transformer's schedule after the first block on the per-image basis
/// (`SecondBlockBasis`, prompts without a mask input): block 1's and the final attention's
/// projections of the image tokens come from the basis and the prompt's side of them from
/// `ValueMaps`; both LayerNorms' statistics come from quadratic forms
/// (`NormStatisticsBasis`), so the image tokens K_1 and K_2 are never formed.
struct BasisSlices: SliceSchedule {
  let pass: SlicedPass
  let image: DecoderImage.Shared
  let basis: SecondBlockBasis
  let maps: ValueMaps

  /// Phase 0: block 0's image→token attention (its probabilities and ρ_0), then block 1 up to
  /// its token→image attention, whose output is left in `pass.delta`.
  func secondBlock() {
    let (t, hT, ldP, w) = (pass.tokens, pass.hT, pass.ldP, pass.width)
    let (first, second) = (pass.transformer.layers[0], pass.transformer.layers[1])
    let trace = pass.trace
    // Token side: block 0's image→token keys (head by head against the cached queries) and
    // values, then block 1's self-attention, its token→image queries and the prompt's side
    // of its projections (`SecondBlockMix`), and ρ_0's quadratic forms (`FirstNormMix`).
    let i2t0 = first.imageToTokens
    let keys0 = pass.secondBlockTokens()
    let keys0Interleaved = i2t0.interleaveHeads(keys0.base, rows: t)
    let values0 = trace.headValues
    let t2i1 = second.tokensToImage
    let d0 = i2t0.headDim
    let mix1 = {
      let projected = DecoderBuffer(count: t * t2i1.internalDim)
      t2i1.q.apply(pass.withPE.base, rows: t, into: projected.base)
      let c = t2i1.internalDim
      let (mixed, mixedValues) = (DecoderBuffer(count: hT * c), DecoderBuffer(count: hT * c))
      ValueMaps.headTimes(
        values0, count: t, headDim: d0, maps.keys1, into: mixed.base, ldo: c)
      ValueMaps.headTimes(
        values0, count: t, headDim: d0, maps.values1, into: mixedValues.base, ldo: c)
      return SecondBlockMix(
        tokens: projected.base, count: t, mixed: mixed, rows: hT, values: mixedValues,
        attention: t2i1)
    }()
    // ρ_0 comes from quadratic forms (`NormStatisticsBasis`), not from K_1.
    let firstNorm = FirstNormMix(values: values0, count: t, maps: maps, attention: i2t0)
    let dim1 = t2i1.internalDim
    let lowPartial = pass.workspace.buffer("groupLow", count: pass.groups * hT * hT)
    let headPartial = pass.workspace.buffer("groupHeads", count: pass.groups * t * dim1)

    // Image side, slice by slice.
    let cachedQueries = UnsafePointer(image.q.base)
    pass.forEachSlice { local, g, p0, rows, isFirst in
      let p = trace.probabilities + p0 * ldP
      // Block 0's image→token attention: scores and softmax over the prompt tokens, ρ_0.
      HeadAttention.scores(
        cachedQueries + p0 * i2t0.internalDim, ldq: i2t0.internalDim, rows: rows,
        keys: keys0Interleaved.base, tokens: t, headDim: i2t0.headDim, into: p, ldo: ldP)
      HeadAttention.softmaxOverTokens(p, rows: rows, tokens: t, ld: ldP, scale: i2t0.scale)
      firstNorm.rstd(
        basis: basis.norms, probabilities: p, ldp: ldP, from: p0, rows: rows,
        attention: i2t0, scratch: local + 2 * w * pass.embedding, into: trace.rstd + p0)
      SlicedPass.scaleRows(p, rows: rows, cols: hT, ld: ldP, by: trace.rstd + p0)
      // Block 1's token→image attention over this slice.
      let scores = local + 3 * w * pass.embedding
      let sliceStats = scores + w * hT
      mix1.sliceScores(
        base: basis.keys.base + p0 * dim1, offset: basis.keyOffset.base + p0 * dim1,
        rstd: trace.rstd + p0, probabilities: p, ldp: ldP, rows: rows, attention: t2i1,
        scratch: local, into: scores, ldo: hT)
      SecondBlockBasis.scaledPlusOffset(
        basis.values.base + p0 * dim1, scale: trace.rstd + p0, offset: nil, rows: rows,
        width: dim1, into: local)
      Self.attend(
        scores: scores, rows: rows, tokens: t, values: local, attention: t2i1,
        probabilities: p, ldp: ldP, sliceStats: sliceStats, heads: local + w * pass.embedding,
        into: pass.group(g, columns: hT), low: lowPartial + g * hT * hT,
        headPartial: headPartial + g * t * dim1, first: isFirst)
    }
    Self.values(
      low: lowPartial, heads: headPartial, stats: pass.stats, statsStride: 2 * hT,
      sumOffset: hT, groups: pass.groups, mix: mix1, offset: basis.valueOffset.base, tokens: t,
      attention: t2i1, into: pass.delta.base)
  }

  /// Phase 1: block 1's image→token attention (its probabilities and ρ_1), then the final
  /// token→image attention for the rows read afterwards, its output left in `pass.delta`.
  func finalAttention() {
    let (t, e, hT, ldP, w) = (pass.tokens, pass.embedding, pass.hT, pass.ldP, pass.width)
    let (first, second) = (pass.transformer.layers[0], pass.transformer.layers[1])
    let final = pass.transformer.finalAttention
    let trace = pass.trace
    let i2t0 = first.imageToTokens
    let d0 = i2t0.headDim
    let values0 = trace.headValues
    // Token side: block 1's image→token keys and the prompt's side of its queries, its values,
    // the final attention's queries and the prompt's side of its keys and values
    // (`[Û_0; U_1]·J·Γ_1`, see `SecondBlockBasis`), and ρ_1's quadratic forms.
    let i2t1 = second.imageToTokens
    let (keys1Tokens, values1, finalTokens) = pass.finalAttentionTokens()
    let mixKeys1 = {
      let c = i2t1.internalDim
      let mixed = DecoderBuffer(count: hT * c)
      ValueMaps.headTimes(
        values0, count: t, headDim: d0, maps.queries1, into: mixed.base, ldo: c)
      return SecondBlockMix(
        tokens: keys1Tokens.base, count: t, mixed: mixed, rows: hT, values: nil, attention: i2t1)
    }()
    let t2 = pass.finalRows.count
    let hT2 = 8 * t2
    let finalMix = {
      let c = final.internalDim
      let (mixed, mixedValues) = (
        DecoderBuffer(count: 2 * hT * c), DecoderBuffer(count: 2 * hT * c)
      )
      let blocks = [
        (values0, d0, maps.finalKeys.0, maps.finalValues.0),
        (values1, i2t1.headDim, maps.finalKeys.1, maps.finalValues.1),
      ]
      for (l, (v, d, keys, values)) in blocks.enumerated() {
        ValueMaps.headTimes(
          v, count: t, headDim: d, keys, into: mixed.base + l * hT * c, ldo: c)
        ValueMaps.headTimes(
          v, count: t, headDim: d, values, into: mixedValues.base + l * hT * c, ldo: c)
      }
      let projected = DecoderBuffer(count: t2 * final.internalDim)
      final.q.apply(finalTokens.base, rows: t2, into: projected.base)
      return SecondBlockMix(
        tokens: projected.base, count: t2, mixed: mixed, rows: 2 * hT, values: mixedValues,
        attention: final)
    }()
    let secondNorm = SecondNormMix(
      values0: values0, values1: values1, count: t, maps: maps, attentions: (i2t0, i2t1))
    let dimF = final.internalDim
    let dim1 = i2t1.internalDim
    let finalLow = pass.workspace.buffer("finalLow", count: pass.groups * hT2 * 2 * hT)
    let finalHeads = pass.workspace.buffer("finalHeads", count: pass.groups * t2 * dimF)
    let n = pass.imageTokens

    // Image side.
    pass.forEachSlice { local, g, p0, rows, isFirst in
      let p = trace.probabilities + p0 * ldP + hT
      mixKeys1.sliceScores(
        base: basis.queries.base + p0 * dim1, offset: basis.queryOffset.base + p0 * dim1,
        rstd: trace.rstd + p0, probabilities: p - hT, ldp: ldP, rows: rows,
        attention: i2t1, scratch: local, into: p, ldo: ldP)
      HeadAttention.softmaxOverTokens(p, rows: rows, tokens: t, ld: ldP, scale: i2t1.scale)
      secondNorm.rstd(
        basis: basis.norms, mixing: p - hT, ldm: ldP, rstd0: trace.rstd + p0, from: p0,
        rows: rows, attentions: (i2t0, i2t1), scratch: local + 2 * w * e,
        into: trace.rstd + n + p0)
      // The final attention on the basis: scratch = ρ_1·[ρ_0·P_0, P_1] (rows × 2·8T), the
      // keys' and the values' image side (rows × 128 each), the slice's head sums.
      let scores = local + 3 * w * e
      let sliceStats = scores + w * hT
      let (rho0, rho1) = (trace.rstd + p0, trace.rstd + n + p0)
      let mixing = local
      SecondBlockBasis.scaledPlusOffset(
        trace.probabilities + p0 * ldP, scale: rho1, offset: nil, rows: rows, width: ldP,
        into: mixing)
      let (keySide, valueSide) = (local + w * e, local + w * e + w * dimF)
      SecondBlockBasis.finalRows(
        basis.finalKeys.base + p0 * dimF, inner: rho0, outer: rho1,
        shift: basis.finalKeyShift.base, offset: basis.finalKeyOffset.base + p0 * dimF,
        rows: rows, width: dimF, into: keySide)
      HeadAttention.scores(
        keySide, ldq: dimF, rows: rows, keys: finalMix.tokens.base, tokens: t2,
        headDim: final.headDim, into: scores, ldo: hT2)
      SmallGEMM.multiply(
        m: rows, k: ldP, a: mixing, lda: ldP, b: finalMix.scores, c: scores, ldc: hT2,
        accumulate: true)
      SecondBlockBasis.finalRows(
        basis.finalValues.base + p0 * dimF, inner: rho0, outer: rho1,
        shift: basis.finalValueShift.base, offset: nil, rows: rows, width: dimF,
        into: valueSide)
      Self.attend(
        scores: scores, rows: rows, tokens: t2, values: valueSide, attention: final,
        probabilities: mixing, ldp: ldP, lowWidth: ldP, sliceStats: sliceStats,
        heads: local + 2 * w * e, into: pass.group(g, columns: hT2),
        low: finalLow + g * hT2 * ldP, headPartial: finalHeads + g * t2 * dimF, first: isFirst)
    }
    Self.values(
      low: finalLow, heads: finalHeads, stats: pass.stats, statsStride: 2 * hT, sumOffset: hT,
      groups: pass.groups, mix: finalMix, offset: basis.finalValueOffset.base, tokens: t2,
      attention: final, into: pass.delta.base)
  }

  /// One slice of block 1's token→image attention on the per-image basis
  /// (`SecondBlockBasis`), merged into its group's running softmax like `SoftmaxGroup.mergeFoldedSlice`.
  /// The weighted sum of the values `ρ_0·X̂·Wvᵀ + (ρ_0·P_0)·Û_0·Wvᵀ + const` is kept in two
  /// parts: per column c = j·8 + h, head h's 16 channels of `Σ e·ρ_0·X̂·Wvᵀ` (`headPartial`,
  /// T × 128 interleaved) and the 8T-vector `Σ e·ρ_0·P_0` (`low`, a row of 8T × 8T).
  /// `scores` hold the slice's raw scores (rows × 8T), `values` ρ_0·X̂·Wvᵀ for the slice
  /// (rows × 128, interleaved), `heads` room for T × 128.
  private static func attend(
    scores: UnsafeMutablePointer<Float>, rows: Int, tokens t: Int, values: UnsafePointer<Float>,
    attention: DecoderAttention, probabilities: UnsafePointer<Float>, ldp: Int,
    lowWidth: Int? = nil, sliceStats: UnsafeMutablePointer<Float>,
    heads: UnsafeMutablePointer<Float>, into group: SoftmaxGroup, low: UnsafeMutablePointer<Float>,
    headPartial: UnsafeMutablePointer<Float>, first: Bool
  ) {
    let columns = 8 * t
    let width = lowWidth ?? columns
    let (d, dim, scale) = (attention.headDim, attention.internalDim, attention.scale)
    SoftmaxGroup.merge(
      scores, rows: rows, columns: columns, scale: scale, into: group, sliceStats: sliceStats,
      first: first
    ) { c, f in
      let row = low + c * width
      for k in 0..<width { row[k] *= f }
      let (j, h) = c.quotientAndRemainder(dividingBy: 8)
      for k in 0..<d { headPartial[(j * d + k) * 8 + h] *= f }
    }
    HeadAttention.weightedValues(
      scores, rows: rows, tokens: t, headDim: d, values: values, ldv: dim,
      into: first ? headPartial : heads)
    if !first {
      for i in 0..<(t * dim) { headPartial[i] += heads[i] }
    }
    SmallGEMM.multiply(
      transA: true, m: columns, n: width, k: rows, a: scores, lda: columns, b: probabilities,
      ldb: ldp, c: low, ldc: width, accumulate: !first)
  }

  /// A token→image attention's output on the basis: the groups' two parts of
  /// `attend` combined (`low`: per group 8T rows of `mix.scores.rows`; `heads`: per
  /// group T × 128 interleaved), then per token j and head h the value
  /// `heads_{j,h} + low_{j·8+h}·M_h + offset_h` and the output projection. For block 1,
  /// M = `Û_0·Wvᵀ` and the offset `β_0·Wvᵀ + bv`; for the final attention,
  /// M = `[Û_0; U_1]·J·Γ_1·Wvᵀ` and `β_1·Wvᵀ + bv`.
  private static func values(
    low lowPartial: UnsafePointer<Float>, heads headPartial: UnsafePointer<Float>,
    stats: UnsafePointer<Float>, statsStride: Int, sumOffset: Int, groups: Int,
    mix: SecondBlockMix, offset: UnsafePointer<Float>, tokens t: Int,
    attention: DecoderAttention, into out: UnsafeMutablePointer<Float>
  ) {
    let (d, dim) = (attention.headDim, attention.internalDim)
    let mixed = mix.values!.base
    let columns = mix.scores.rows
    let combinedLow = SoftmaxGroup.combine(
      lowPartial, stats: stats, groups: groups, columns: 8 * t, embedding: columns,
      scale: attention.scale, statsStride: statsStride, sumOffset: sumOffset)
    let combinedHeads = SoftmaxGroup.combine(
      headPartial, stats: stats, groups: groups, columns: 8 * t, embedding: d,
      scale: attention.scale, statsStride: statsStride, sumOffset: sumOffset,
      interleavedHeads: true)
    let v = DecoderBuffer(count: t * dim)
    // The combined buffers are read through pointers: keep them alive to the end.
    withExtendedLifetime((combinedLow, combinedHeads, mix)) {
      let (low, heads) = (combinedLow.base, combinedHeads.base)
      for j in 0..<t {
        for h in 0..<8 {
          let weights = low + (j * 8 + h) * columns
          for k in 0..<d {
            var acc = heads[(j * d + k) * 8 + h] + offset[h * d + k]
            for c in 0..<columns { acc += weights[c] * mixed[c * dim + h * d + k] }
            v.base[j * dim + h * d + k] = acc
          }
        }
      }
    }
    attention.out.apply(v.base, rows: t, into: out)
  }
}
