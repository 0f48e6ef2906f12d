import EVTensor
import Foundation

/// What the sliced transformer leaves for the folded upscaling (`UpscaleFold`, two blocks).
struct FoldTrace {
  /// N × 2·8T, row p = [ρ_0[p]·P_0[p, ·], P_1[p, ·]]: each block's image→token attention
  /// probabilities (column j·8 + h for prompt token j, head h), the first block's scaled by
  /// that block's LayerNorm 1/σ.
  let probabilities: UnsafeMutablePointer<Float>
  /// 2·8T × E: U_0 then U_1, each block's image→token values folded through the output
  /// projection (row j·8 + h is `v_{j,h}·Wo_hᵀ`), so that the attention output is `P_l·U_l`;
  /// only filled without the per-image basis.
  let values: UnsafeMutablePointer<Float>
  /// 2 × N: ρ_0 then ρ_1, each image token's LayerNorm 1/σ after each block.
  let rstd: UnsafeMutablePointer<Float>
  /// 2 × T × internalDim: each block's image→token values v (heads as column blocks), from
  /// which `ValueMaps` rebuilds what `values` holds. With the per-image basis `values` is not
  /// filled: only these are.
  let headValues: UnsafeMutablePointer<Float>
  /// Prompt tokens T.
  let tokens: Int
}

/// The running state of a softmax over slices of image tokens, for `columns` columns: each
/// column's maximum score so far, sum of exponentials relative to it, and weighted sum of the
/// keys (a row of `partial`, E values; on the per-image basis the weighted sums are kept in two
/// parts instead, see `attendOnBasis`).
struct SoftmaxGroup {
  let maxima: UnsafeMutablePointer<Float>
  let sums: UnsafeMutablePointer<Float>
  let partial: UnsafeMutablePointer<Float>
  let columns: Int
}

/// The two-way transformer for prompts of few tokens (at most `foldedTokenLimit`, 16 by
/// default: every attention then folds its image side into the token side, see
/// `DecoderAttention`), with or without a mask input. Without one (the usual case), the first
/// block's image projections come from the per-image cache, and the second block's and the
/// final attention's from the per-image basis (`SecondBlockBasis`).
///
/// Layout: the image side is token-major and the 8 heads of each (image token, prompt token)
/// pair are adjacent, so the softmaxes over prompt tokens run across whole vectors, and every
/// product has its large operand in natural row order (`SmallGEMM`: no packing, no transposes).
///
/// Schedule: per block, the image→token attention, the LayerNorm after it and the next
/// token→image attention's scores and weighted sums only combine image tokens row by row,
/// except the token→image softmax, which normalises over all of them. So each core takes
/// slices of image tokens through all of those steps while the slice is in its cache, keeping
/// per-slice softmax maxima and sums, and the slices are combined afterwards (as flash
/// attention does): per prompt the cores meet once per block. The slices are fixed, and every
/// product is split-invariant, so the result does not depend on the number of threads.
extension TwoWayTransformer {
  /// Image tokens per slice: a slice's intermediates (≈ 250 KB) stay in the core's L2.
  static let sliceWidth = 64
  /// Groups of slices whose softmax states are merged at the end.
  static let softmaxGroups = 16

  /// Whether `sliced` can run a prompt of `t` tokens.
  func canRunSliced(tokens t: Int, foldLimit: Int) -> Bool {
    let attentions = layers.flatMap { [$0.tokensToImage, $0.imageToTokens] } + [finalAttention]
    return layers.count == 2 && DecoderAttention.heads == 8 && t <= foldLimit
      && attentions.allSatisfy { 8 * t <= $0.internalDim && $0.headDim * 8 == $0.internalDim }
  }

  /// Runs the transformer for one prompt; requires `canRunSliced`.
  ///
  /// - Parameters:
  ///   - queries: T×E tokens in; the processed tokens out (rows outside `finalRows` keep their
  ///     values from the last block: the final attention updates only the rows read later).
  ///   - tokenPE: T×E, the original tokens.
  ///   - keys: N×E, the image embedding plus the dense prompt embedding.
  ///   - keysPE: N×E, `keys` + positional encoding; not needed (nil) with `cached`.
  ///   - cached: the per-image cache, when `keys` are its keys (no mask input).
  ///   - imagePE: N×E positional encoding.
  ///   - maps: the model's `ValueMaps` (required with the per-image basis).
  /// - Returns: the trace for the folded upscaling, and the image tokens leaving the
  ///   transformer (N×E, in a workspace buffer).
  func sliced(
    queries: UnsafeMutablePointer<Float>, tokenPE: UnsafePointer<Float>, count t: Int,
    keys: UnsafePointer<Float>, keysPE: UnsafePointer<Float>?, cached: DecoderImage.Shared?,
    imagePE: UnsafePointer<Float>, imageTokens n: Int, workspace: DecoderWorkspace,
    finalRows: [Int], maps: ValueMaps?
  ) -> (trace: FoldTrace, keys: UnsafeMutablePointer<Float>) {
    precondition(cached != nil || keysPE != nil, "sliced: keys + pe needed without the cache")
    precondition(
      cached?.secondBlock == nil || maps != nil, "sliced: the per-image basis needs ValueMaps")
    let e = embedding
    let hT = 8 * t
    let w = Self.sliceWidth
    let slices = (n + w - 1) / w
    let withPE = DecoderBuffer(count: t * e)
    let delta = DecoderBuffer(count: t * e)
    let hidden = DecoderBuffer(count: t * Self.mlpDim)
    func addTokenPE() { RowOps.add(queries, tokenPE, into: withPE.base, count: t * e) }
    func mlp(_ layer: TwoWayAttentionBlock) {
      layer.mlpIn.apply(queries, rows: t, into: hidden.base, .relu)
      layer.mlpOut.apply(hidden.base, rows: t, into: delta.base)
      layer.norm3.residual(queries, plus: delta.base, rows: t)
    }

    let trace = FoldTrace(
      probabilities: workspace.buffer("foldP", count: n * 2 * hT),
      values: workspace.buffer("foldU", count: 2 * hT * e),
      rstd: workspace.buffer("foldRstd", count: 2 * n),
      headValues: workspace.buffer(
        "foldV",
        count: t * (layers[0].imageToTokens.internalDim + layers[1].imageToTokens.internalDim)),
      tokens: t)
    let ldP = 2 * hT
    // The token→image softmaxes over all image tokens run in a fixed number of groups of
    // consecutive slices (independent of the thread count, so the result is too); each group
    // keeps a running maximum, sum and weighted sum (`SoftmaxGroup`), merged at the end.
    let groups = min(Self.softmaxGroups, slices)
    let slicesPerGroup = (slices + groups - 1) / groups
    let partial = workspace.buffer("groupPartial", count: groups * hT * e)
    let stats = workspace.buffer("groupStats", count: groups * 2 * hT)
    func group(_ g: Int, columns: Int) -> SoftmaxGroup {
      SoftmaxGroup(
        maxima: stats + g * 2 * hT, sums: stats + g * 2 * hT + hT, partial: partial + g * hT * e,
        columns: columns)
    }
    func slicesOf(_ g: Int) -> Range<Int> {
      (g * slicesPerGroup)..<min(slices, (g + 1) * slicesPerGroup)
    }
    // Only without the cache are the image tokens formed: K_1 for the whole image (phase 1
    // reads it), K_2 too (the upscaling then reads it); K_1 + pe and K_2 + pe stay in
    // per-chunk scratch, in the core's cache. With the cache (and its basis) a prompt needs
    // neither: every projection and both LayerNorms' statistics come from the basis.
    let (keys1, keys2) = workspace.keyBuffers(count: n * e)
    let groupCost = slicesPerGroup * w * e * 3 * hT
    let chunks = Parallel.chunkCount(count: groups, costPerItem: groupCost)
    let scratchSize = 3 * w * e + w * hT + 2 * hT
    let scratch = workspace.buffer("sliceScratch", count: chunks * scratchSize)

    // Block 0 up to its image→token attention: self-attention without positional encoding or
    // residual, token→image attention, MLP.
    let first = layers[0]
    let second = layers[1]
    first.selfAttention.tokens(q: queries, k: queries, v: queries, count: t, into: delta.base)
    queries.update(from: delta.base, count: t * e)
    first.norm1(queries, rows: t)
    addTokenPE()
    let t2i0 = first.tokensToImage
    if let cached {
      attendCached(
        t2i0, queries: withPE.base, count: t, image: cached, imageTokens: n,
        workspace: workspace, into: delta.base)
    } else {
      let folded = t2i0.foldedQueryColumns(withPE.base, count: t)
      Parallel.forChunks(count: groups, chunks: chunks) { chunk, range in
        let local = scratch + chunk * scratchSize
        for g in range {
          for s in slicesOf(g) {
            let p0 = s * w
            Self.tokensToImageSlice(
              keys: keys + p0 * e, keysPE: keysPE! + p0 * e, rows: min(w, n - p0), embedding: e,
              foldedQueries: folded, scale: t2i0.scale, scores: local + 3 * w * e,
              sliceStats: local + 3 * w * e + w * hT, into: group(g, columns: hT),
              first: s == slicesOf(g).lowerBound)
          }
        }
      }
      let attended = Self.combineGroups(
        partial, stats: stats, groups: groups, columns: hT, embedding: e, scale: t2i0.scale)
      t2i0.unfoldValues(attended.base, count: t, into: delta.base)
    }
    first.norm2.residual(queries, plus: delta.base, rows: t)
    mlp(first)

    // Phase 0, token side: block 0's image→token keys and folded values, then block 1's
    // self-attention and its token→image queries folded through the key projection.
    let i2t0 = first.imageToTokens
    addTokenPE()
    let keys0 = DecoderBuffer(count: t * i2t0.internalDim)
    i2t0.k.apply(withPE.base, rows: t, into: keys0.base)
    // With the cache the keys meet the cached image queries head by head; without, folded.
    let keys0Interleaved = cached.map { _ in i2t0.interleaveHeads(keys0.base, rows: t) }
    let keys0Folded = cached == nil ? i2t0.foldedKeyColumns(keys0.base, count: t) : nil
    let values0 = trace.headValues
    i2t0.v.apply(queries, rows: t, into: values0)
    // With the cache, block 1's projections of the image tokens come from the per-image basis
    // (`SecondBlockBasis`) and the prompt's side of them from `ValueMaps`; without, its
    // queries are folded into the keys' side and the block-0 output is formed (`P_0·U_0`).
    let basis = cached?.secondBlock
    let basisMaps = basis == nil ? nil : maps
    let values0Packed =
      basis == nil ? i2t0.foldedValues(values0, count: t, into: trace.values) : nil

    addTokenPE()
    second.selfAttention.tokens(
      q: withPE.base, k: withPE.base, v: queries, count: t, into: delta.base)
    second.norm1.residual(queries, plus: delta.base, rows: t)
    let t2i1 = second.tokensToImage
    addTokenPE()
    let d0 = i2t0.headDim
    let mix1 = basisMaps.map { maps in
      let projected = DecoderBuffer(count: t * t2i1.internalDim)
      t2i1.q.apply(withPE.base, rows: t, into: projected.base)
      let c = t2i1.internalDim
      let (mixed, mixedValues) = (DecoderBuffer(count: hT * c), DecoderBuffer(count: hT * c))
      ValueMaps.headTimes(
        values0, count: t, headDim: d0, maps.keys1, into: mixed.base, ldo: c)
      ValueMaps.headTimes(
        values0, count: t, headDim: d0, maps.values1, into: mixedValues.base, ldo: c)
      return SecondBlockMix(
        tokens: projected.base, count: t, mixed: mixed, rows: hT, values: mixedValues,
        attention: t2i1)
    }
    let foldedQueries1 = basis == nil ? t2i1.foldedQueryColumns(withPE.base, count: t) : nil
    // With the basis, ρ_0 comes from quadratic forms (`NormStatisticsBasis`), not from K_1.
    let firstNorm = basisMaps.map {
      FirstNormMix(values: values0, count: t, maps: $0, attention: i2t0)
    }
    let dim1 = t2i1.internalDim
    let lowPartial = workspace.buffer("groupLow", count: groups * hT * hT)
    let headPartial = workspace.buffer("groupHeads", count: groups * t * dim1)

    // Phase 0, image side, slice by slice.
    let cachedQueries = cached.map { UnsafePointer($0.q.base) }
    Parallel.forChunks(count: groups, chunks: chunks) { chunk, range in
      let local = scratch + chunk * scratchSize
      for g in range {
        for s in slicesOf(g) {
          let p0 = s * w
          let rows = min(w, n - p0)
          let p = trace.probabilities + p0 * ldP
          let keysPE1 = local
          // Block 0's image→token attention: scores, softmax over the prompt tokens, output
          // P·U_0, LayerNorm with the residual (→ K_1, K_1 + pe, ρ_0).
          if let cachedQueries, let keys0Interleaved {
            HeadAttention.scores(
              cachedQueries + p0 * i2t0.internalDim, ldq: i2t0.internalDim, rows: rows,
              keys: keys0Interleaved.base, tokens: t, headDim: i2t0.headDim, into: p, ldo: ldP)
            HeadAttention.softmaxOverTokens(p, rows: rows, tokens: t, ld: ldP, scale: i2t0.scale)
          } else if let keys0Folded {
            SmallGEMM.multiply(
              m: rows, k: e, a: keysPE! + p0 * e, lda: e, b: keys0Folded.columns, c: p, ldc: ldP)
            HeadAttention.softmaxOverTokens(
              p, rows: rows, tokens: t, ld: ldP, scale: i2t0.scale, bias: keys0Folded.bias.base)
          }
          let k1 = keys1 + p0 * e
          if let basis, let firstNorm {
            firstNorm.rstd(
              basis: basis.norms, probabilities: p, ldp: ldP, from: p0, rows: rows,
              attention: i2t0, scratch: local + 2 * w * e, into: trace.rstd + p0)
          } else {
            SmallGEMM.multiply(m: rows, k: hT, a: p, lda: ldP, b: values0Packed!, c: k1, ldc: e)
            first.norm4.residual(
              k1, plus: keys + p0 * e, rows: rows, addend: imagePE + p0 * e, sum: keysPE1,
              rstd: trace.rstd + p0, deltaBias: i2t0.out.bias.base, serial: true)
          }
          Self.scaleRows(p, rows: rows, cols: hT, ld: ldP, by: trace.rstd + p0)
          // Block 1's token→image attention over this slice.
          let scores = local + 3 * w * e
          let sliceStats = local + 3 * w * e + w * hT
          let isFirst = s == slicesOf(g).lowerBound
          if let basis, let mix1 {
            mix1.sliceScores(
              base: basis.keys.base + p0 * dim1, offset: basis.keyOffset.base + p0 * dim1,
              rstd: trace.rstd + p0, probabilities: p, ldp: ldP, rows: rows, attention: t2i1,
              scratch: local, into: scores, ldo: hT)
            SecondBlockBasis.scaledPlusOffset(
              basis.values.base + p0 * dim1, scale: trace.rstd + p0, offset: nil, rows: rows,
              width: dim1, into: local)
            Self.attendOnBasis(
              scores: scores, rows: rows, tokens: t, values: local, attention: t2i1,
              probabilities: p, ldp: ldP, sliceStats: sliceStats, heads: local + w * e,
              into: group(g, columns: hT), low: lowPartial + g * hT * hT,
              headPartial: headPartial + g * t * dim1, first: isFirst)
          } else {
            Self.tokensToImageSlice(
              keys: k1, keysPE: keysPE1, rows: rows, embedding: e, foldedQueries: foldedQueries1!,
              scale: t2i1.scale, scores: scores, sliceStats: sliceStats,
              into: group(g, columns: hT), first: isFirst)
          }
        }
      }
    }
    if let basis, let mix1 {
      Self.valuesOnBasis(
        low: lowPartial, heads: headPartial, stats: stats, statsStride: 2 * hT, sumOffset: hT,
        groups: groups, mix: mix1, offset: basis.valueOffset.base, tokens: t, attention: t2i1,
        into: delta.base)
    } else {
      let attended1 = Self.combineGroups(
        partial, stats: stats, groups: groups, columns: hT, embedding: e, scale: t2i1.scale)
      t2i1.unfoldValues(attended1.base, count: t, into: delta.base)
    }
    second.norm2.residual(queries, plus: delta.base, rows: t)
    mlp(second)

    // Phase 1, token side: block 1's image→token keys folded through the query projection
    // (with the per-key bias term), its folded values, and the final attention's queries for
    // the rows that are read afterwards.
    let i2t1 = second.imageToTokens
    addTokenPE()
    let keys1Tokens = DecoderBuffer(count: t * i2t1.internalDim)
    i2t1.k.apply(withPE.base, rows: t, into: keys1Tokens.base)
    let folded1 = basis == nil ? i2t1.foldedKeyColumns(keys1Tokens.base, count: t) : nil
    let mixKeys1 = basisMaps.map { maps in
      let c = i2t1.internalDim
      let mixed = DecoderBuffer(count: hT * c)
      ValueMaps.headTimes(
        values0, count: t, headDim: d0, maps.queries1, into: mixed.base, ldo: c)
      return SecondBlockMix(
        tokens: keys1Tokens.base, count: t, mixed: mixed, rows: hT, values: nil, attention: i2t1)
    }
    let values1 = trace.headValues + t * i2t0.internalDim
    i2t1.v.apply(queries, rows: t, into: values1)
    let values1Packed =
      basis == nil ? i2t1.foldedValues(values1, count: t, into: trace.values + hT * e) : nil
    let t2 = finalRows.count
    let hT2 = 8 * t2
    let finalTokens = gatherWithPE(queries, tokenPE, rows: finalRows)
    // The final attention on the basis reads `[Û_0; U_1]·J·Γ_1` (see `SecondBlockBasis`).
    let finalMix = basisMaps.map { maps -> SecondBlockMix in
      let c = finalAttention.internalDim
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
      let projected = DecoderBuffer(count: t2 * finalAttention.internalDim)
      finalAttention.q.apply(finalTokens.base, rows: t2, into: projected.base)
      return SecondBlockMix(
        tokens: projected.base, count: t2, mixed: mixed, rows: 2 * hT, values: mixedValues,
        attention: finalAttention)
    }
    let secondNorm = basisMaps.map {
      SecondNormMix(
        values0: values0, values1: values1, count: t, maps: $0, attentions: (i2t0, i2t1))
    }
    let finalQueries =
      basis == nil ? finalAttention.foldedQueryColumns(finalTokens.base, count: t2) : nil
    let dimF = finalAttention.internalDim
    let finalLow = workspace.buffer("finalLow", count: groups * hT2 * 2 * hT)
    let finalHeads = workspace.buffer("finalHeads", count: groups * t2 * dimF)

    // Phase 1, image side.
    let keepKeys2 = cached == nil
    Parallel.forChunks(count: groups, chunks: chunks) { chunk, range in
      let local = scratch + chunk * scratchSize
      for g in range {
        for s in slicesOf(g) {
          let p0 = s * w
          let rows = min(w, n - p0)
          let p = trace.probabilities + p0 * ldP + hT
          let (keysPE1, keysPE2) = (local, local + w * e)
          let k2 = keepKeys2 ? keys2 + p0 * e : local + 2 * w * e
          if let basis, let mixKeys1 {
            mixKeys1.sliceScores(
              base: basis.queries.base + p0 * dim1, offset: basis.queryOffset.base + p0 * dim1,
              rstd: trace.rstd + p0, probabilities: p - hT, ldp: ldP, rows: rows,
              attention: i2t1, scratch: keysPE1, into: p, ldo: ldP)
            HeadAttention.softmaxOverTokens(p, rows: rows, tokens: t, ld: ldP, scale: i2t1.scale)
          } else if let folded1 {
            RowOps.add(
              keys1 + p0 * e, imagePE + p0 * e, into: keysPE1, count: rows * e, serial: true)
            SmallGEMM.multiply(
              m: rows, k: e, a: keysPE1, lda: e, b: folded1.columns, c: p, ldc: ldP)
            HeadAttention.softmaxOverTokens(
              p, rows: rows, tokens: t, ld: ldP, scale: i2t1.scale, bias: folded1.bias.base)
          }
          if let basis, let secondNorm {
            secondNorm.rstd(
              basis: basis.norms, mixing: p - hT, ldm: ldP, rstd0: trace.rstd + p0, from: p0,
              rows: rows, attentions: (i2t0, i2t1), scratch: local + 2 * w * e,
              into: trace.rstd + n + p0)
          } else {
            SmallGEMM.multiply(m: rows, k: hT, a: p, lda: ldP, b: values1Packed!, c: k2, ldc: e)
            second.norm4.residual(
              k2, plus: keys1 + p0 * e, rows: rows, addend: imagePE + p0 * e, sum: keysPE2,
              rstd: trace.rstd + n + p0, deltaBias: i2t1.out.bias.base, serial: true)
          }
          let isFirst = s == slicesOf(g).lowerBound
          let scores = local + 3 * w * e
          let sliceStats = local + 3 * w * e + w * hT
          if let basis, let finalMix {
            // The final attention on the basis: scratch = ρ_1·[ρ_0·P_0, P_1] (rows × 2·8T),
            // the keys' and the values' image side (rows × 128 each), the slice's head sums.
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
              headDim: finalAttention.headDim, into: scores, ldo: hT2)
            SmallGEMM.multiply(
              m: rows, k: ldP, a: mixing, lda: ldP, b: finalMix.scores, c: scores, ldc: hT2,
              accumulate: true)
            SecondBlockBasis.finalRows(
              basis.finalValues.base + p0 * dimF, inner: rho0, outer: rho1,
              shift: basis.finalValueShift.base, offset: nil, rows: rows, width: dimF,
              into: valueSide)
            Self.attendOnBasis(
              scores: scores, rows: rows, tokens: t2, values: valueSide,
              attention: finalAttention, probabilities: mixing, ldp: ldP, lowWidth: ldP,
              sliceStats: sliceStats, heads: local + 2 * w * e, into: group(g, columns: hT2),
              low: finalLow + g * hT2 * ldP, headPartial: finalHeads + g * t2 * dimF,
              first: isFirst)
          } else {
            Self.tokensToImageSlice(
              keys: k2, keysPE: keysPE2, rows: rows, embedding: e, foldedQueries: finalQueries!,
              scale: finalAttention.scale, scores: scores, sliceStats: sliceStats,
              into: group(g, columns: hT2), first: isFirst)
          }
        }
      }
    }
    if let basis, let finalMix {
      Self.valuesOnBasis(
        low: finalLow, heads: finalHeads, stats: stats, statsStride: 2 * hT, sumOffset: hT,
        groups: groups, mix: finalMix, offset: basis.finalValueOffset.base, tokens: t2,
        attention: finalAttention, into: delta.base)
    } else {
      let attendedFinal = Self.combineGroups(
        partial, stats: stats, groups: groups, columns: hT2, embedding: e,
        scale: finalAttention.scale, statsStride: 2 * hT, sumOffset: hT, partialStride: hT * e)
      finalAttention.unfoldValues(attendedFinal.base, count: t2, into: delta.base)
    }
    finalNorm(queries, rows: finalRows, plus: delta.base)
    return (trace, keys2)
  }

  /// Block 0's token→image attention on the per-image head-interleaved projections `k`, `v`:
  /// scores and softmax over all image tokens in slices, combined, then the output projection.
  private func attendCached(
    _ attention: DecoderAttention, queries: UnsafePointer<Float>, count t: Int,
    image: DecoderImage.Shared, imageTokens n: Int, workspace: DecoderWorkspace,
    into out: UnsafeMutablePointer<Float>
  ) {
    let (dim, d) = (attention.internalDim, attention.headDim)
    let hT = 8 * t
    let projected = DecoderBuffer(count: t * dim)
    attention.q.apply(queries, rows: t, into: projected.base)
    let q = attention.interleaveHeads(projected.base, rows: t)
    let w = Self.sliceWidth
    let slices = (n + w - 1) / w
    let scores = workspace.buffer("cachedScores", count: slices * w * hT)
    let stats = workspace.buffer("cachedStats", count: slices * 2 * hT)
    // Per slice: t × d·8 weighted sums of the values (head-interleaved).
    let partial = workspace.buffer("cachedPartial", count: slices * t * dim)
    let (k, v) = (UnsafePointer(image.k.base), UnsafePointer(image.v.base))
    Parallel.forEach(count: slices, costPerItem: w * hT * d * 2) { s in
      let p0 = s * w
      let rows = min(w, n - p0)
      let sc = scores + s * w * hT
      HeadAttention.scores(
        k + p0 * dim, ldq: dim, rows: rows, keys: q.base, tokens: t, headDim: d, into: sc,
        ldo: hT)
      HeadAttention.partialSoftmaxDownColumns(
        sc, rows: rows, cols: hT, ld: hT, scale: attention.scale, maxima: stats + s * 2 * hT,
        sums: stats + s * 2 * hT + hT)
      HeadAttention.weightedValues(
        sc, rows: rows, tokens: t, headDim: d, values: v + p0 * dim, ldv: dim,
        into: partial + s * t * dim)
    }
    // Combined: t × d·8 (head-interleaved), each column (j, c, h) weighted by its head's slice
    // statistics.
    let combined = Self.combineGroups(
      partial, stats: stats, groups: slices, columns: hT, embedding: d, scale: attention.scale,
      interleavedHeads: true)
    let heads = attention.deinterleaveHeads(combined.base, rows: t)
    attention.out.apply(heads.base, rows: t, into: out)
  }

  /// One slice of a folded token→image attention, merged into its group's running softmax:
  /// scores (slice rows × columns) = (keys + pe)·foldedQueries, an unnormalised softmax down
  /// the columns, and the group's weighted sum += scoresᵀ·keys, all rescaled to the running
  /// maximum (as flash attention does). `scores` holds rows × columns floats, `sliceStats`
  /// 2·columns.
  private static func tokensToImageSlice(
    keys: UnsafePointer<Float>, keysPE: UnsafePointer<Float>, rows: Int, embedding e: Int,
    foldedQueries: PackedMatrix, scale: Float, scores: UnsafeMutablePointer<Float>,
    sliceStats: UnsafeMutablePointer<Float>, into group: SoftmaxGroup, first: Bool
  ) {
    let columns = foldedQueries.columns
    SmallGEMM.multiply(
      m: rows, k: e, a: keysPE, lda: e, b: foldedQueries, c: scores, ldc: columns)
    mergeSoftmax(
      scores, rows: rows, columns: columns, scale: scale, into: group, sliceStats: sliceStats,
      first: first
    ) { c, f in
      let row = group.partial + c * e
      for k in 0..<e { row[k] *= f }
    }
    SmallGEMM.multiply(
      transA: true, m: columns, n: e, k: rows, a: scores, lda: columns, b: keys, ldb: e,
      c: group.partial, ldc: e, accumulate: !first)
  }

  /// The slice's unnormalised softmax down the columns of `scores` (rows × columns, dense),
  /// merged into `group`'s running maxima and sums (as flash attention does). The first slice
  /// of a group starts them; later ones rescale whichever side has the smaller maximum, column
  /// by column: the group's running weighted sums (`rescaleGroup(column, factor)`) or the
  /// slice's exponentials (a column of `scores`). The caller then adds the slice's weighted
  /// sums to the group's (or, for the first slice, writes them).
  private static func mergeSoftmax(
    _ scores: UnsafeMutablePointer<Float>, rows: Int, columns: Int, scale: Float,
    into group: SoftmaxGroup, sliceStats: UnsafeMutablePointer<Float>, first: Bool,
    rescaleGroup: (_ column: Int, _ factor: Float) -> Void
  ) {
    if first {
      HeadAttention.partialSoftmaxDownColumns(
        scores, rows: rows, cols: columns, ld: columns, scale: scale, maxima: group.maxima,
        sums: group.sums)
      return
    }
    let (maxima, sums) = (sliceStats, sliceStats + columns)
    HeadAttention.partialSoftmaxDownColumns(
      scores, rows: rows, cols: columns, ld: columns, scale: scale, maxima: maxima, sums: sums)
    for c in 0..<columns {
      let (old, new) = (group.maxima[c], maxima[c])
      if new > old {
        let f = Foundation.exp((old - new) * scale)
        rescaleGroup(c, f)
        group.sums[c] = group.sums[c] * f + sums[c]
        group.maxima[c] = new
      } else {
        let f = Foundation.exp((new - old) * scale)
        for p in 0..<rows { scores[p * columns + c] *= f }
        group.sums[c] += sums[c] * f
      }
    }
  }

  /// One slice of block 1's token→image attention on the per-image basis
  /// (`SecondBlockBasis`), merged into its group's running softmax like `tokensToImageSlice`.
  /// The weighted sum of the values `ρ_0·X̂·Wvᵀ + (ρ_0·P_0)·Û_0·Wvᵀ + const` is kept in two
  /// parts: per column c = j·8 + h, head h's 16 channels of `Σ e·ρ_0·X̂·Wvᵀ` (`headPartial`,
  /// T × 128 interleaved) and the 8T-vector `Σ e·ρ_0·P_0` (`low`, a row of 8T × 8T).
  /// `scores` hold the slice's raw scores (rows × 8T), `values` ρ_0·X̂·Wvᵀ for the slice
  /// (rows × 128, interleaved), `heads` room for T × 128.
  private static func attendOnBasis(
    scores: UnsafeMutablePointer<Float>, rows: Int, tokens t: Int, values: UnsafePointer<Float>,
    attention: DecoderAttention, probabilities: UnsafePointer<Float>, ldp: Int,
    lowWidth: Int? = nil, sliceStats: UnsafeMutablePointer<Float>,
    heads: UnsafeMutablePointer<Float>, into group: SoftmaxGroup, low: UnsafeMutablePointer<Float>,
    headPartial: UnsafeMutablePointer<Float>, first: Bool
  ) {
    let columns = 8 * t
    let width = lowWidth ?? columns
    let (d, dim, scale) = (attention.headDim, attention.internalDim, attention.scale)
    mergeSoftmax(
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
  /// `attendOnBasis` combined (`low`: per group 8T rows of `mix.scores.rows`; `heads`: per
  /// group T × 128 interleaved), then per token j and head h the value
  /// `heads_{j,h} + low_{j·8+h}·M_h + offset_h` and the output projection. For block 1,
  /// M = `Û_0·Wvᵀ` and the offset `β_0·Wvᵀ + bv`; for the final attention,
  /// M = `[Û_0; U_1]·J·Γ_1·Wvᵀ` and `β_1·Wvᵀ + bv`.
  private static func valuesOnBasis(
    low lowPartial: UnsafePointer<Float>, heads headPartial: UnsafePointer<Float>,
    stats: UnsafePointer<Float>, statsStride: Int, sumOffset: Int, groups: Int,
    mix: SecondBlockMix, offset: UnsafePointer<Float>, tokens t: Int,
    attention: DecoderAttention, into out: UnsafeMutablePointer<Float>
  ) {
    let (d, dim) = (attention.headDim, attention.internalDim)
    let mixed = mix.values!.base
    let columns = mix.scores.rows
    let combinedLow = combineGroups(
      lowPartial, stats: stats, groups: groups, columns: 8 * t, embedding: columns,
      scale: attention.scale, statsStride: statsStride, sumOffset: sumOffset)
    let combinedHeads = combineGroups(
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

  /// Combines per-group softmax partials: for each column r, the groups' weighted sums
  /// (`embedding` values, or with `interleavedHeads` t·d·8 values grouped by head) rescaled to
  /// the overall maximum and divided by the overall sum of exponentials.
  private static func combineGroups(
    _ partial: UnsafePointer<Float>, stats: UnsafePointer<Float>, groups: Int, columns: Int,
    embedding e: Int, scale: Float, statsStride: Int? = nil, sumOffset: Int? = nil,
    partialStride: Int? = nil, interleavedHeads: Bool = false
  ) -> DecoderBuffer {
    let stride = statsStride ?? 2 * columns
    let sumAt = sumOffset ?? columns
    let perGroup = partialStride ?? columns * e
    let out = DecoderBuffer(count: columns * e)
    let weights = DecoderBuffer(count: groups)
    for r in 0..<columns {
      var m = -Float.infinity
      for g in 0..<groups { m = max(m, stats[g * stride + r]) }
      var total: Float = 0
      for g in 0..<groups {
        let wgt = Foundation.exp((stats[g * stride + r] - m) * scale)
        weights.base[g] = wgt
        total += wgt * stats[g * stride + sumAt + r]
      }
      let inv = 1 / total
      if interleavedHeads {
        // Column r = j·8 + h; its values are partial[(j·d + c)·8 + h] for c < d.
        let (j, h) = r.quotientAndRemainder(dividingBy: 8)
        for c in 0..<e {
          let index = (j * e + c) * 8 + h
          var acc: Float = 0
          for g in 0..<groups { acc += weights.base[g] * partial[g * perGroup + index] }
          out.base[index] = acc * inv
        }
      } else {
        let o = out.base + r * e
        for c in 0..<e { o[c] = 0 }
        for g in 0..<groups {
          let wgt = weights.base[g]
          let p = partial + g * perGroup + r * e
          for c in 0..<e { o[c] += wgt * p[c] }
        }
        for c in 0..<e { o[c] *= inv }
      }
    }
    return out
  }

  /// `x[p][c] *= scale[p]` for a rows × cols block with row stride `ld`.
  private static func scaleRows(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int, by scale: UnsafePointer<Float>
  ) {
    HeadAttention.scaleRows(x, ldx: ld, rows: rows, width: cols, inner: scale, into: x, ldy: ld)
  }
}

extension DecoderAttention {
  /// `x·Wᵀ (+ b)` for N rows of `x` (N × E), heads interleaved (column c·8 + h): one product
  /// with W's rows permuted, so the per-image projections need no separate interleaving pass.
  /// `linear` is one of this attention's image-side projections (internalDim outputs).
  func interleavedProjection(
    _ x: UnsafePointer<Float>, rows n: Int, through linear: DecoderLinear, bias: Bool
  ) -> DecoderBuffer {
    precondition(
      linear.outFeatures == internalDim,
      "interleavedProjection: \(linear.outFeatures) ≠ \(internalDim)")
    return interleavedProjection(
      x, rows: n, weight: linear.weight.base, bias: bias ? linear.bias.base : nil)
  }

  /// `x·Wᵀ (+ b)` for N rows of `x` (N × E) and W internalDim × E whose rows h·d ..< (h+1)·d
  /// belong to head h (an `nn.Linear` weight, or `outTransposed`), heads interleaved.
  func interleavedProjection(
    _ x: UnsafePointer<Float>, rows n: Int, weight w: UnsafePointer<Float>,
    bias: UnsafePointer<Float>? = nil
  ) -> DecoderBuffer {
    let (d, dim, e) = (headDim, internalDim, embedding)
    let weight = DecoderBuffer(count: dim * e)
    let b = DecoderBuffer(count: dim)
    for h in 0..<Self.heads {
      for c in 0..<d {
        (weight.base + (c * Self.heads + h) * e).update(from: w + (h * d + c) * e, count: e)
        b.base[c * Self.heads + h] = bias?[h * d + c] ?? 0
      }
    }
    let y = DecoderBuffer(count: n * dim)
    withExtendedLifetime((weight, b)) {
      DecoderMath.gemm(n, dim, e, x, e, weight.base, e, transB: true, y.base, dim)
      if bias != nil {
        RowOps.biasActivation(y.base, rows: n, cols: dim, stride: dim, bias: b.base, .identity)
      }
    }
    return y
  }

  /// Rows of `x` (T × internalDim, heads as column blocks) with the heads interleaved: column
  /// h·d + c becomes c·8 + h.
  func interleaveHeads(_ x: UnsafePointer<Float>, rows: Int) -> DecoderBuffer {
    let (d, dim) = (headDim, internalDim)
    let out = DecoderBuffer(count: rows * dim)
    for r in 0..<rows {
      for h in 0..<Self.heads {
        for c in 0..<d { out.base[r * dim + c * Self.heads + h] = x[r * dim + h * d + c] }
      }
    }
    return out
  }

  /// The inverse of `interleaveHeads`.
  func deinterleaveHeads(_ x: UnsafePointer<Float>, rows: Int) -> DecoderBuffer {
    let (d, dim) = (headDim, internalDim)
    let out = DecoderBuffer(count: rows * dim)
    for r in 0..<rows {
      for h in 0..<Self.heads {
        for c in 0..<d { out.base[r * dim + h * d + c] = x[r * dim + c * Self.heads + h] }
      }
    }
    return out
  }

  /// E × 8T: column j·8 + h is the token→image query `q_{j,h}` (from `tokens`, T × E, through
  /// `q`) folded through head h's key projection, `(q_{j,h}·Wk_h)ᵀ`, so that the scores of the
  /// image tokens are `(keys + pe)·columns` (the `q_{j,h}·bk_h` term is constant per column,
  /// which the softmax over image tokens ignores).
  func foldedQueryColumns(_ tokens: UnsafePointer<Float>, count t: Int) -> PackedMatrix {
    let projected = DecoderBuffer(count: t * internalDim)
    q.apply(tokens, rows: t, into: projected.base)
    return foldedColumns(projected.base, count: t, through: k.weight.base)
  }

  /// E × 8T columns `(k_{j,h}·Wq_h)ᵀ` of the image→token keys `kp` (T × internalDim, already
  /// projected) folded through head h's query projection, and the per-column bias
  /// `k_{j,h}·bq_h` that the scores of every image token share (8T values, index j·8 + h).
  func foldedKeyColumns(_ kp: UnsafePointer<Float>, count t: Int) -> (
    columns: PackedMatrix, bias: DecoderBuffer
  ) {
    let d = headDim
    let bias = DecoderBuffer(count: 8 * t)
    for j in 0..<t {
      for h in 0..<Self.heads {
        var s: Float = 0
        for c in 0..<d { s += kp[j * internalDim + h * d + c] * q.bias.base[h * d + c] }
        bias.base[j * 8 + h] = s
      }
    }
    return (foldedColumns(kp, count: t, through: q.weight.base), bias)
  }

  /// E × 8T, packed: column j·8 + h = (x_{j,h}·W_h)ᵀ for `x` (T × internalDim) and W an
  /// nn.Linear weight (internalDim × E) whose rows h·d ..< (h+1)·d are head h's.
  private func foldedColumns(
    _ x: UnsafePointer<Float>, count t: Int, through weight: UnsafePointer<Float>
  ) -> PackedMatrix {
    let (d, e, dim) = (headDim, embedding, internalDim)
    let rows = DecoderBuffer(count: 8 * t * e)
    for h in 0..<Self.heads {
      // Rows j·8 + h of the 8T × E product.
      SmallGEMM.multiply(
        m: t, n: e, k: d, a: x + h * d, lda: dim, b: weight + h * d * e, ldb: e,
        c: rows.base + h * e, ldc: 8 * e)
    }
    let columns = DecoderBuffer(count: e * 8 * t)
    for r in 0..<(8 * t) {
      for c in 0..<e { columns.base[c * 8 * t + r] = rows.base[r * e + c] }
    }
    return PackedMatrix(columns.base, rows: e, columns: 8 * t, ld: 8 * t)
  }

  /// Rows j·8 + h of `out` (8T × E): token j's value `vp` (T × internalDim) folded through head
  /// h's slice of the output projection, `v_{j,h}·Wo_hᵀ`.
  func foldValues(_ vp: UnsafePointer<Float>, count t: Int, into out: UnsafeMutablePointer<Float>) {
    let (d, e, dim) = (headDim, embedding, internalDim)
    for h in 0..<Self.heads {
      SmallGEMM.multiply(
        m: t, n: e, k: d, a: vp + h * d, lda: dim, b: outTransposed.base + h * d * e, ldb: e,
        c: out + h * e, ldc: 8 * e)
    }
  }

  /// `foldValues` into `out`, packed as the B of the products with the probabilities.
  func foldedValues(_ vp: UnsafePointer<Float>, count t: Int, into out: UnsafeMutablePointer<Float>)
    -> PackedMatrix
  {
    foldValues(vp, count: t, into: out)
    return PackedMatrix(out, rows: 8 * t, columns: embedding, ld: embedding)
  }

  /// A token→image attention's output from `P·x` (row j·8 + h of `weighted`, 8T × E): per
  /// head `(P_h·x)·Wv_hᵀ + bv_h`, then the output projection.
  func unfoldValues(
    _ weighted: UnsafePointer<Float>, count t: Int, into out: UnsafeMutablePointer<Float>
  ) {
    let (d, e, dim) = (headDim, embedding, internalDim)
    let heads = DecoderBuffer(count: t * dim)
    for h in 0..<Self.heads {
      SmallGEMM.multiply(
        m: t, n: d, k: e, a: weighted + h * e, lda: 8 * e, b: vTransposed.base + h * d, ldb: dim,
        c: heads.base + h * d, ldc: dim)
    }
    RowOps.biasActivation(heads.base, rows: t, cols: dim, stride: dim, bias: v.bias.base, .identity)
    self.out.apply(heads.base, rows: t, into: out)
  }
}
