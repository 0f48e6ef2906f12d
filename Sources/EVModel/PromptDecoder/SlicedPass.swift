import EVTensor
import Foundation

/// One prompt's pass through the sliced transformer (`TwoWayTransformer.sliced`): its sizes,
/// the slices of image tokens and their softmax groups, the buffers every schedule shares, and
/// the part of the pass that is the same for all of them — the first block up to its
/// image→token attention. The schedules (`FoldedSlices`, `BasisSlices`) run the rest.
struct SlicedPass {
  let transformer: TwoWayTransformer
  /// T×E tokens in; the processed tokens out.
  let queries: UnsafeMutablePointer<Float>
  /// T×E, the original tokens.
  let tokenPE: UnsafePointer<Float>
  /// Prompt tokens T and image tokens N.
  let tokens: Int
  let imageTokens: Int
  /// N×E, the image embedding plus the dense prompt embedding, and + positional encoding
  /// (nil with the per-image cache).
  let keys: UnsafePointer<Float>
  let keysPE: UnsafePointer<Float>?
  let imagePE: UnsafePointer<Float>
  let workspace: DecoderWorkspace
  let finalRows: [Int]
  /// T×E: the tokens plus their positional encoding, an attention's or MLP's output, and the
  /// MLP's hidden layer.
  let withPE: DecoderBuffer
  let delta: DecoderBuffer
  let hidden: DecoderBuffer
  let trace: FoldTrace
  let slices: Int
  /// The token→image softmaxes over all image tokens run in a fixed number of groups of
  /// consecutive slices (independent of the thread count, so the result is too); each group
  /// keeps a running maximum, sum and weighted sum (`SoftmaxGroup`), merged at the end.
  let groups: Int
  let slicesPerGroup: Int
  let partial: UnsafeMutablePointer<Float>
  let stats: UnsafeMutablePointer<Float>
  /// K_1 and K_2, the image tokens after each block (N×E; formed only without the cache).
  let keys1: UnsafeMutablePointer<Float>
  let keys2: UnsafeMutablePointer<Float>
  /// Chunks of groups the cores take, each with its own scratch.
  let chunks: Int
  let scratch: UnsafeMutablePointer<Float>
  let scratchSize: Int

  var embedding: Int { transformer.embedding }
  /// Columns of an attention's probabilities: 8 heads per prompt token.
  var hT: Int { 8 * tokens }
  /// Row stride of `trace.probabilities`: both blocks' 8T columns.
  var ldP: Int { 2 * hT }
  var width: Int { TwoWayTransformer.sliceWidth }

  init(
    transformer: TwoWayTransformer, queries: UnsafeMutablePointer<Float>,
    tokenPE: UnsafePointer<Float>, count t: Int, keys: UnsafePointer<Float>,
    keysPE: UnsafePointer<Float>?, imagePE: UnsafePointer<Float>, imageTokens n: Int,
    workspace: DecoderWorkspace, finalRows: [Int]
  ) {
    self.transformer = transformer
    self.queries = queries
    self.tokenPE = tokenPE
    tokens = t
    imageTokens = n
    self.keys = keys
    self.keysPE = keysPE
    self.imagePE = imagePE
    self.workspace = workspace
    self.finalRows = finalRows
    let e = transformer.embedding
    let hT = 8 * t
    let w = TwoWayTransformer.sliceWidth
    slices = (n + w - 1) / w
    withPE = DecoderBuffer(count: t * e)
    delta = DecoderBuffer(count: t * e)
    hidden = DecoderBuffer(count: t * TwoWayTransformer.mlpDim)
    let layers = transformer.layers
    trace = FoldTrace(
      probabilities: workspace.buffer("foldP", count: n * 2 * hT),
      values: workspace.buffer("foldU", count: 2 * hT * e),
      rstd: workspace.buffer("foldRstd", count: 2 * n),
      headValues: workspace.buffer(
        "foldV",
        count: t * (layers[0].imageToTokens.internalDim + layers[1].imageToTokens.internalDim)),
      tokens: t)
    groups = min(TwoWayTransformer.softmaxGroups, slices)
    slicesPerGroup = (slices + groups - 1) / groups
    partial = workspace.buffer("groupPartial", count: groups * hT * e)
    stats = workspace.buffer("groupStats", count: groups * 2 * hT)
    // Only without the cache are the image tokens formed: K_1 for the whole image (phase 1
    // reads it), K_2 too (the upscaling then reads it); K_1 + pe and K_2 + pe stay in
    // per-chunk scratch, in the core's cache. With the cache (and its basis) a prompt needs
    // neither: every projection and both LayerNorms' statistics come from the basis.
    (keys1, keys2) = workspace.keyBuffers(count: n * e)
    let groupCost = slicesPerGroup * w * e * 3 * hT
    chunks = Parallel.chunkCount(count: groups, costPerItem: groupCost)
    scratchSize = 3 * w * e + w * hT + 2 * hT
    scratch = workspace.buffer("sliceScratch", count: chunks * scratchSize)
  }

  func addTokenPE() {
    RowOps.add(queries, tokenPE, into: withPE.base, count: tokens * embedding)
  }

  func mlp(_ layer: TwoWayAttentionBlock) {
    layer.mlpIn.apply(queries, rows: tokens, into: hidden.base, .relu)
    layer.mlpOut.apply(hidden.base, rows: tokens, into: delta.base)
    layer.norm3.residual(queries, plus: delta.base, rows: tokens)
  }

  /// Group `g`'s softmax state, for `columns` columns.
  func group(_ g: Int, columns: Int) -> SoftmaxGroup {
    SoftmaxGroup(
      maxima: stats + g * 2 * hT, sums: stats + g * 2 * hT + hT,
      partial: partial + g * hT * embedding,
      columns: columns)
  }

  func slicesOf(_ g: Int) -> Range<Int> {
    (g * slicesPerGroup)..<min(slices, (g + 1) * slicesPerGroup)
  }

  /// Runs `body` on every slice, the chunks of groups on the cores: the chunk's scratch,
  /// the slice's group, its first image token and rows, and whether it is its group's first.
  func forEachSlice(
    _ body: (
      _ scratch: UnsafeMutablePointer<Float>, _ group: Int, _ start: Int, _ rows: Int,
      _ first: Bool
    ) -> Void
  ) {
    Parallel.forChunks(count: groups, chunks: chunks) { chunk, range in
      let local = scratch + chunk * scratchSize
      for g in range {
        for s in slicesOf(g) {
          let p0 = s * width
          body(local, g, p0, min(width, imageTokens - p0), s == slicesOf(g).lowerBound)
        }
      }
    }
  }

  /// Block 0 up to its image→token attention: self-attention without positional encoding or
  /// residual, token→image attention (on the per-image projections of `image`, or folded over
  /// the slices), MLP.
  func firstBlock(image: DecoderImage.Shared?) {
    let (t, e) = (tokens, embedding)
    let first = transformer.layers[0]
    first.selfAttention.tokens(q: queries, k: queries, v: queries, count: t, into: delta.base)
    queries.update(from: delta.base, count: t * e)
    first.norm1(queries, rows: t)
    addTokenPE()
    let t2i0 = first.tokensToImage
    if let image {
      attendCached(t2i0, image: image, into: delta.base)
    } else {
      let folded = t2i0.foldedQueryColumns(withPE.base, count: t)
      let keysPE = keysPE!
      forEachSlice { local, g, p0, rows, isFirst in
        SoftmaxGroup.mergeFoldedSlice(
          keys: keys + p0 * e, keysPE: keysPE + p0 * e, rows: rows, embedding: e,
          foldedQueries: folded, scale: t2i0.scale, scores: local + 3 * width * e,
          sliceStats: local + 3 * width * e + width * hT, into: group(g, columns: hT),
          first: isFirst)
      }
      let attended = SoftmaxGroup.combine(
        partial, stats: stats, groups: groups, columns: hT, embedding: e, scale: t2i0.scale)
      t2i0.unfoldValues(attended.base, count: t, into: delta.base)
    }
    first.norm2.residual(queries, plus: delta.base, rows: t)
    mlp(first)
  }

  /// Phase 0's token side, the same in every schedule: block 0's image→token keys (returned,
  /// T × internalDim) and values (into `trace.headValues`), then block 1's self-attention;
  /// `withPE` is left holding the tokens + pe that block 1's token→image queries project.
  func secondBlockTokens() -> DecoderBuffer {
    let (t, second) = (tokens, transformer.layers[1])
    let i2t0 = transformer.layers[0].imageToTokens
    addTokenPE()
    let keys0 = DecoderBuffer(count: t * i2t0.internalDim)
    i2t0.k.apply(withPE.base, rows: t, into: keys0.base)
    i2t0.v.apply(queries, rows: t, into: trace.headValues)
    addTokenPE()
    second.selfAttention.tokens(
      q: withPE.base, k: withPE.base, v: queries, count: t, into: delta.base)
    second.norm1.residual(queries, plus: delta.base, rows: t)
    addTokenPE()
    return keys0
  }

  /// Phase 1's token side, the same in every schedule: block 1's image→token keys (T ×
  /// internalDim) and values (into `trace.headValues`, after block 0's), and the final
  /// attention's tokens + pe for the rows read afterwards.
  func finalAttentionTokens() -> (
    keys1: DecoderBuffer, values1: UnsafeMutablePointer<Float>, finalTokens: DecoderBuffer
  ) {
    let t = tokens
    let i2t1 = transformer.layers[1].imageToTokens
    addTokenPE()
    let keys1 = DecoderBuffer(count: t * i2t1.internalDim)
    i2t1.k.apply(withPE.base, rows: t, into: keys1.base)
    let values1 = trace.headValues + t * transformer.layers[0].imageToTokens.internalDim
    i2t1.v.apply(queries, rows: t, into: values1)
    return (keys1, values1, transformer.gatherWithPE(queries, tokenPE, rows: finalRows))
  }

  /// Block 0's token→image attention on the per-image head-interleaved projections `k`, `v`:
  /// scores and softmax over all image tokens in slices, combined, then the output projection.
  private func attendCached(
    _ attention: DecoderAttention, image: DecoderImage.Shared,
    into out: UnsafeMutablePointer<Float>
  ) {
    let (t, n) = (tokens, imageTokens)
    let (dim, d) = (attention.internalDim, attention.headDim)
    let projected = DecoderBuffer(count: t * dim)
    attention.q.apply(withPE.base, rows: t, into: projected.base)
    let q = attention.interleaveHeads(projected.base, rows: t)
    let w = width
    let scores = workspace.buffer("cachedScores", count: slices * w * hT)
    let stats = workspace.buffer("cachedStats", count: slices * 2 * hT)
    // Per slice: t × d·8 weighted sums of the values (head-interleaved).
    let partial = workspace.buffer("cachedPartial", count: slices * t * dim)
    let (k, v) = (UnsafePointer(image.k.base), UnsafePointer(image.v.base))
    let hT = hT
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
    let combined = SoftmaxGroup.combine(
      partial, stats: stats, groups: slices, columns: hT, embedding: d, scale: attention.scale,
      interleavedHeads: true)
    let heads = attention.deinterleaveHeads(combined.base, rows: t)
    attention.out.apply(heads.base, rows: t, into: out)
  }

  /// `x[p][c] *= scale[p]` for a rows × cols block with row stride `ld`.
  static func scaleRows(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int, by scale: UnsafePointer<Float>
  ) {
    HeadAttention.scaleRows(x, ldx: ld, rows: rows, width: cols, inner: scale, into: x, ldy: ld)
  }
}
