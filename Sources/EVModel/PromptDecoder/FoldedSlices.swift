import EVTensor

/// The sliced transformer's schedule after the first block when there is no per-image basis:
/// every attention folds its image side into the token side (`DecoderAttention`'s folded
/// columns), and the image tokens K_1 and K_2 are formed slice by slice. With the per-image
/// cache (no mask input) the first block's image→token scores come from its projections.
struct FoldedSlices: SliceSchedule {
  let pass: SlicedPass
  /// The per-image cache, when the keys are its keys.
  let image: DecoderImage.Shared?

  /// Phase 0: block 0's image→token attention and LayerNorm (→ K_1, ρ_0), then block 1 up to
  /// its token→image attention, whose output is left in `pass.delta`.
  func secondBlock() {
    let (t, e, hT, ldP) = (pass.tokens, pass.embedding, pass.hT, pass.ldP)
    let (first, second) = (pass.transformer.layers[0], pass.transformer.layers[1])
    let trace = pass.trace
    // Token side: block 0's image→token keys (head by head against the cached queries, or
    // folded through the query projection) and folded values, then block 1's self-attention
    // and its token→image queries folded through the key projection.
    let i2t0 = first.imageToTokens
    let keys0 = pass.secondBlockTokens()
    let keys0Interleaved = image.map { _ in i2t0.interleaveHeads(keys0.base, rows: t) }
    let keys0Folded = image == nil ? i2t0.foldedKeyColumns(keys0.base, count: t) : nil
    let values0Packed = i2t0.foldedValues(trace.headValues, count: t, into: trace.values)
    let t2i1 = second.tokensToImage
    let foldedQueries1 = t2i1.foldedQueryColumns(pass.withPE.base, count: t)

    // Image side, slice by slice.
    let cachedQueries = image.map { UnsafePointer($0.q.base) }
    let (keys, keysPE, imagePE, w) = (pass.keys, pass.keysPE, pass.imagePE, pass.width)
    pass.forEachSlice { local, g, p0, rows, isFirst in
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
      let k1 = pass.keys1 + p0 * e
      SmallGEMM.multiply(m: rows, k: hT, a: p, lda: ldP, b: values0Packed, c: k1, ldc: e)
      first.norm4.residual(
        k1, plus: keys + p0 * e, rows: rows, addend: imagePE + p0 * e, sum: keysPE1,
        rstd: trace.rstd + p0, deltaBias: i2t0.out.bias.base, serial: true)
      SlicedPass.scaleRows(p, rows: rows, cols: hT, ld: ldP, by: trace.rstd + p0)
      // Block 1's token→image attention over this slice.
      SoftmaxGroup.mergeFoldedSlice(
        keys: k1, keysPE: keysPE1, rows: rows, embedding: e, foldedQueries: foldedQueries1,
        scale: t2i1.scale, scores: local + 3 * w * e, sliceStats: local + 3 * w * e + w * hT,
        into: pass.group(g, columns: hT), first: isFirst)
    }
    let attended1 = SoftmaxGroup.combine(
      pass.partial, stats: pass.stats, groups: pass.groups, columns: hT, embedding: e,
      scale: t2i1.scale)
    t2i1.unfoldValues(attended1.base, count: t, into: pass.delta.base)
  }

  /// Phase 1: block 1's image→token attention and LayerNorm (→ K_2, ρ_1), then the final
  /// token→image attention for the rows read afterwards, its output left in `pass.delta`.
  func finalAttention() {
    let (t, e, hT, ldP) = (pass.tokens, pass.embedding, pass.hT, pass.ldP)
    let second = pass.transformer.layers[1]
    let final = pass.transformer.finalAttention
    let trace = pass.trace
    // Token side: block 1's image→token keys folded through the query projection (with the
    // per-key bias term), its folded values, and the final attention's queries.
    let i2t1 = second.imageToTokens
    let (keys1Tokens, values1, finalTokens) = pass.finalAttentionTokens()
    let folded1 = i2t1.foldedKeyColumns(keys1Tokens.base, count: t)
    let values1Packed = i2t1.foldedValues(values1, count: t, into: trace.values + hT * e)
    let t2 = pass.finalRows.count
    let hT2 = 8 * t2
    let finalQueries = final.foldedQueryColumns(finalTokens.base, count: t2)

    // Image side. Without the cache K_2 is kept for the upscaling; with it, only per slice.
    let keepKeys2 = image == nil
    let (imagePE, w) = (pass.imagePE, pass.width)
    pass.forEachSlice { local, g, p0, rows, isFirst in
      let p = trace.probabilities + p0 * ldP + hT
      let (keysPE1, keysPE2) = (local, local + w * e)
      let k2 = keepKeys2 ? pass.keys2 + p0 * e : local + 2 * w * e
      RowOps.add(
        pass.keys1 + p0 * e, imagePE + p0 * e, into: keysPE1, count: rows * e, serial: true)
      SmallGEMM.multiply(
        m: rows, k: e, a: keysPE1, lda: e, b: folded1.columns, c: p, ldc: ldP)
      HeadAttention.softmaxOverTokens(
        p, rows: rows, tokens: t, ld: ldP, scale: i2t1.scale, bias: folded1.bias.base)
      SmallGEMM.multiply(m: rows, k: hT, a: p, lda: ldP, b: values1Packed, c: k2, ldc: e)
      second.norm4.residual(
        k2, plus: pass.keys1 + p0 * e, rows: rows, addend: imagePE + p0 * e, sum: keysPE2,
        rstd: trace.rstd + pass.imageTokens + p0, deltaBias: i2t1.out.bias.base, serial: true)
      SoftmaxGroup.mergeFoldedSlice(
        keys: k2, keysPE: keysPE2, rows: rows, embedding: e, foldedQueries: finalQueries,
        scale: final.scale, scores: local + 3 * w * e, sliceStats: local + 3 * w * e + w * hT,
        into: pass.group(g, columns: hT2), first: isFirst)
    }
    let attendedFinal = SoftmaxGroup.combine(
      pass.partial, stats: pass.stats, groups: pass.groups, columns: hT2, embedding: e,
      scale: final.scale, statsStride: 2 * hT, sumOffset: hT, partialStride: hT * e)
    final.unfoldValues(attendedFinal.base, count: t2, into: pass.delta.base)
  }
}
