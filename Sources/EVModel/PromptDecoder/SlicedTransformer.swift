import EVTensor
import Foundation

/// The two-way transformer scheduled over slices of the image tokens, for the common case:
/// the first block's image projections cached per image and every attention folded (see
/// `DecoderAttention`).
///
/// Per block, the image→token attention, the LayerNorm after it and the next token→image
/// attention's scores and weighted sums only ever combine image tokens row by row, except for
/// the token→image softmax, which normalises over all of them. So each core takes slices of
/// 256 image tokens through all of those steps while the slice is in its cache, keeping a
/// per-slice softmax max and sum, and the slices' partial results are combined afterwards
/// (as flash attention does). Per prompt the cores meet once per block instead of once per
/// kernel. The arithmetic is that of `callAsFunction` up to the order of the softmax sums.
extension TwoWayTransformer {
  static let sliceWidth = 256

  /// Whether `sliced` can run: cached first-block projections, and folding for `t` tokens.
  func canRunSliced(image: ImageState, tokens t: Int, workspace: DecoderWorkspace) -> Bool {
    image.cached != nil && workspace.foldsImage(tokens: t, internalDim: finalAttention.internalDim)
      && layers.allSatisfy {
        workspace.foldsImage(tokens: t, internalDim: $0.tokensToImage.internalDim)
          && workspace.foldsImage(tokens: t, internalDim: $0.imageToTokens.internalDim)
      }
  }

  /// Same contract as `callAsFunction`; requires `canRunSliced`.
  func sliced(
    queries: UnsafeMutablePointer<Float>, tokenPE: UnsafePointer<Float>, count t: Int,
    image: ImageState, imagePE: UnsafePointer<Float>, imageTokens n: Int,
    workspace: DecoderWorkspace, trace: TransformerTrace?, finalRows: [Int]?
  ) -> (keys: UnsafeMutablePointer<Float>, traced: Bool) {
    let e = embedding
    let cached = image.cached!
    let withPE = DecoderBuffer(count: t * e)
    let delta = DecoderBuffer(count: t * e)
    let hidden = DecoderBuffer(count: t * Self.mlpDim)
    let keysPE = workspace.keysPE(count: n * e)
    var (next, spare) = workspace.keyBuffers(count: n * e)
    func addTokenPE() { RowOps.add(queries, tokenPE, into: withPE.base, count: t * e) }
    func mlp(_ layer: TwoWayAttentionBlock) {
      layer.mlpIn.apply(queries, rows: t, into: hidden.base, .relu)
      layer.mlpOut.apply(hidden.base, rows: t, into: delta.base)
      layer.norm3.residual(queries, plus: delta.base, rows: t)
    }

    // Block 0 up to its image→token attention: self-attention without positional encoding,
    // token→image attention on the cached projections, MLP.
    let first = layers[0]
    first.selfAttention.tokens(q: queries, k: queries, v: queries, count: t, into: delta.base)
    queries.update(from: delta.base, count: t * e)
    first.norm1(queries, rows: t)
    addTokenPE()
    first.tokensToImage.tokensToImage(
      q: withPE.base, count: t, image: .projected(k: cached.k, v: cached.v), imageTokens: n,
      workspace: workspace, into: delta.base)
    first.norm2.residual(queries, plus: delta.base, rows: t)
    mlp(first)

    var keysIn = image.keys
    for (l, layer) in layers.enumerated() {
      let i2t = layer.imageToTokens
      let hT = DecoderAttention.heads * t
      // Image→token attention, token side: keys, values folded through the output
      // projection, and (after the first block) the query projection folded into the keys.
      addTokenPE()
      let kp = DecoderBuffer(count: t * i2t.internalDim)
      let vp = DecoderBuffer(count: t * i2t.internalDim)
      i2t.k.apply(withPE.base, rows: t, into: kp.base)
      i2t.v.apply(queries, rows: t, into: vp.base)
      let probabilities =
        trace.map { $0.probabilities + l * hT * n } ?? workspace.buffer("slicedI2T", count: hT * n)
      let values =
        trace.map { $0.values + l * hT * e } ?? workspace.buffer("slicedU", count: hT * e)
      i2t.foldValues(vp.base, count: t, into: values)
      let foldedKeys = l == 0 ? nil : DecoderBuffer(count: hT * e)
      let rowBias = l == 0 ? nil : DecoderBuffer(count: hT)
      if let foldedKeys, let rowBias {
        i2t.foldQueries(kp.base, count: t, into: foldedKeys.base, rowBias: rowBias.base)
      }

      // The next token→image attention, token side (its queries only depend on the tokens).
      let last = l == layers.count - 1
      let attention = last ? finalAttention : layers[l + 1].tokensToImage
      let rows = last ? (finalRows ?? Array(0..<t)) : Array(0..<t)
      if !last {
        let nextLayer = layers[l + 1]
        addTokenPE()
        nextLayer.selfAttention.tokens(
          q: withPE.base, k: withPE.base, v: queries, count: t, into: delta.base)
        nextLayer.norm1.residual(queries, plus: delta.base, rows: t)
      }
      let t2 = rows.count
      let hT2 = DecoderAttention.heads * t2
      let q2 = gatherWithPE(queries, tokenPE, rows: rows)
      let qp = DecoderBuffer(count: t2 * attention.internalDim)
      attention.q.apply(q2.base, rows: t2, into: qp.base)
      let foldedQueries = DecoderBuffer(count: hT2 * e)
      attention.foldKeys(qp.base, count: t2, into: foldedQueries.base)

      // Both image sides, slice by slice.
      let slices = (n + Self.sliceWidth - 1) / Self.sliceWidth
      let partial = workspace.buffer("slicedPartial", count: slices * hT2 * e)
      let stats = workspace.buffer("slicedStats", count: slices * hT2 * 2)
      let sliceScores = workspace.buffer("slicedScores", count: slices * hT2 * Self.sliceWidth)
      let rstd = trace.map { $0.rstd + l * n }
      let (keysOut, keysRead) = (next, keysIn)
      let qImage = cached.q
      Parallel.forEach(count: slices, costPerItem: Self.sliceWidth * e * (2 * hT + 2 * hT2)) {
        s in
        let c0 = s * Self.sliceWidth
        let w = min(Self.sliceWidth, n - c0)
        // Image→token scores for these image tokens (keys-major: row h·T + j, column c).
        if let foldedKeys {
          BLAS.serialSgemm(
            transA: false, transB: true, m: hT, n: w, k: e, alpha: 1, a: foldedKeys.base, lda: e,
            b: keysPE + c0 * e, ldb: e, beta: 0, c: probabilities + c0, ldc: n)
        } else {
          for h in 0..<DecoderAttention.heads {
            i2t.headScores(
              head: h, keys: kp.base, count: t, projectedImage: qImage, columns: c0..<(c0 + w),
              into: probabilities, ldc: n)
          }
        }
        for h in 0..<DecoderAttention.heads {
          RowOps.softmaxColumnRange(
            probabilities + h * t * n, rows: t, cols: n, columns: c0..<(c0 + w), scale: i2t.scale,
            rowBias: rowBias.map { UnsafePointer($0.base + h * t) })
        }
        // Output projection (folded) and the block's LayerNorm, also forming keys + pe.
        BLAS.serialSgemm(
          transA: true, transB: false, m: w, n: e, k: hT, alpha: 1, a: probabilities + c0, lda: n,
          b: values, ldb: e, beta: 0, c: keysOut + c0 * e, ldc: e)
        layer.norm4.residual(
          keysOut + c0 * e, plus: keysRead + c0 * e, rows: w, addend: imagePE + c0 * e,
          sum: keysPE + c0 * e, rstd: rstd.map { $0 + c0 }, deltaBias: i2t.out.bias.base,
          serial: true)
        // The next token→image attention over these image tokens: scores, softmax within
        // the slice, weighted sum of the slice's keys.
        let scores = sliceScores + s * hT2 * Self.sliceWidth
        BLAS.serialSgemm(
          transA: false, transB: true, m: hT2, n: w, k: e, alpha: 1, a: foldedQueries.base,
          lda: e, b: keysPE + c0 * e, ldb: e, beta: 0, c: scores, ldc: w)
        RowOps.softmaxSlice(
          scores, rows: hT2, cols: w, stride: w, scale: attention.scale,
          rowMax: stats + s * hT2 * 2, rowSum: stats + s * hT2 * 2 + hT2)
        BLAS.serialSgemm(
          transA: false, transB: false, m: hT2, n: e, k: w, alpha: 1, a: scores, lda: w,
          b: keysOut + c0 * e, ldb: e, beta: 0, c: partial + s * hT2 * e, ldc: e)
      }

      // Combine the slices: P·keys over all image tokens, per row of the scores.
      let combined = DecoderBuffer(count: hT2 * e)
      for r in 0..<hT2 {
        var m = -Float.infinity
        for s in 0..<slices { m = max(m, stats[s * hT2 * 2 + r]) }
        var total: Float = 0
        let out = combined.base + r * e
        for c in 0..<e { out[c] = 0 }
        for s in 0..<slices {
          let weight = Foundation.exp((stats[s * hT2 * 2 + r] - m) * attention.scale)
          total += weight * stats[s * hT2 * 2 + hT2 + r]
          let p = partial + (s * hT2 + r) * e
          for c in 0..<e { out[c] += weight * p[c] }
        }
        let inv = 1 / total
        for c in 0..<e { out[c] *= inv }
      }
      let attended = DecoderBuffer(count: t2 * e)
      attention.unfoldValues(combined.base, count: t2, into: attended.base)

      if last {
        finalNorm(queries, rows: rows, plus: attended.base)
      } else {
        let nextLayer = layers[l + 1]
        nextLayer.norm2.residual(queries, plus: attended.base, rows: t)
        mlp(nextLayer)
      }
      keysIn = UnsafePointer(next)
      swap(&next, &spare)
    }
    return (spare, trace != nil)
  }
}
