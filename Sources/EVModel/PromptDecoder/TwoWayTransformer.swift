import EVCheckpoint
import EVTensor

/// One official `TwoWayAttentionBlock`: token self-attention, tokens→image cross-attention, MLP
/// (ReLU) on the tokens, image→tokens cross-attention, each followed by a LayerNorm.
struct TwoWayAttentionBlock: Sendable {
  let selfAttention: DecoderAttention
  let norm1: DecoderLayerNorm
  let tokensToImage: DecoderAttention
  let norm2: DecoderLayerNorm
  let mlpIn: DecoderLinear
  let mlpOut: DecoderLinear
  let norm3: DecoderLayerNorm
  let norm4: DecoderLayerNorm
  let imageToTokens: DecoderAttention
  /// The first block's self-attention sees the bare tokens and has no residual connection.
  let skipFirstLayerPE: Bool

  init(_ scope: WeightScope, embedding e: Int, mlpDim: Int, downsample: Int, skipFirstLayerPE: Bool)
  {
    selfAttention = DecoderAttention(scope["self_attn"], embedding: e, downsample: 1)
    norm1 = DecoderLayerNorm(scope["norm1"], dim: e)
    tokensToImage = DecoderAttention(
      scope["cross_attn_token_to_image"], embedding: e, downsample: downsample)
    norm2 = DecoderLayerNorm(scope["norm2"], dim: e)
    mlpIn = DecoderLinear(scope["mlp"]["lin1"], in: e, out: mlpDim)
    mlpOut = DecoderLinear(scope["mlp"]["lin2"], in: mlpDim, out: e)
    norm3 = DecoderLayerNorm(scope["norm3"], dim: e)
    norm4 = DecoderLayerNorm(scope["norm4"], dim: e)
    imageToTokens = DecoderAttention(
      scope["cross_attn_image_to_token"], embedding: e, downsample: downsample)
    self.skipFirstLayerPE = skipFirstLayerPE
  }
}

/// The official `TwoWayTransformer` (depth 2, 8 heads, MLP 2048, attention downsampling 2).
struct TwoWayTransformer: Sendable {
  static let depth = 2
  static let mlpDim = 2048
  static let downsample = 2
  let embedding: Int
  let layers: [TwoWayAttentionBlock]
  let finalAttention: DecoderAttention
  let finalNorm: DecoderLayerNorm

  init(_ scope: WeightScope, embedding e: Int) {
    embedding = e
    layers = (0..<Self.depth).map {
      TwoWayAttentionBlock(
        scope["layers"][$0], embedding: e, mlpDim: Self.mlpDim, downsample: Self.downsample,
        skipFirstLayerPE: $0 == 0)
    }
    finalAttention = DecoderAttention(
      scope["final_attn_token_to_image"], embedding: e, downsample: Self.downsample)
    finalNorm = DecoderLayerNorm(scope["norm_final_attn"], dim: e)
  }

  /// Runs the transformer for one prompt on the general schedule: any number of tokens, every
  /// attention on projected image tokens, one kernel after another. Prompts of few tokens take
  /// `sliced` instead.
  ///
  /// - Parameters:
  ///   - queries: T×E tokens in; the processed tokens out.
  ///   - tokenPE: T×E, the original tokens (the official `point_embedding` / `query_pe`).
  ///   - keys: N×E, the image embedding plus the dense prompt embedding.
  ///   - keysPE: N×E, `keys` + positional encoding, in the workspace's `keysPE` buffer (which
  ///     the blocks overwrite).
  ///   - imagePE: N×E positional encoding of the image tokens.
  ///   - finalRows: the token rows the caller will read (default all); the final attention
  ///     skips the others.
  /// - Returns: the processed image tokens, N×E, in one of the workspace's key buffers.
  func callAsFunction(
    queries: UnsafeMutablePointer<Float>, tokenPE: UnsafePointer<Float>, count t: Int,
    keys: UnsafePointer<Float>, keysPE: UnsafePointer<Float>, imagePE: UnsafePointer<Float>,
    imageTokens n: Int, workspace: DecoderWorkspace, finalRows: [Int]? = nil
  ) -> UnsafeMutablePointer<Float> {
    let e = embedding
    let withPE = DecoderBuffer(count: t * e)
    let delta = DecoderBuffer(count: t * e)
    let hidden = DecoderBuffer(count: t * Self.mlpDim)
    let keysPEOut = workspace.keysPE(count: n * e)
    precondition(keysPE == UnsafePointer(keysPEOut), "keys + pe must be the workspace's buffer")
    // The image tokens alternate between two buffers: each block writes its output into the
    // one it is not reading (the first block reads the caller's keys).
    var (next, spare) = workspace.keyBuffers(count: n * e)
    func addTokenPE() { RowOps.add(queries, tokenPE, into: withPE.base, count: t * e) }

    var current = keys
    for layer in layers {
      // Self-attention.
      if layer.skipFirstLayerPE {
        layer.selfAttention.tokens(q: queries, k: queries, v: queries, count: t, into: delta.base)
        queries.update(from: delta.base, count: t * e)
        layer.norm1(queries, rows: t)
      } else {
        addTokenPE()
        layer.selfAttention.tokens(
          q: withPE.base, k: withPE.base, v: queries, count: t, into: delta.base)
        layer.norm1.residual(queries, plus: delta.base, rows: t)
      }

      // Tokens attend to the image.
      addTokenPE()
      layer.tokensToImage.tokensToImage(
        q: withPE.base, count: t, image: .raw(keys: current, keysPE: keysPE), imageTokens: n,
        workspace: workspace, into: delta.base)
      layer.norm2.residual(queries, plus: delta.base, rows: t)

      // MLP.
      layer.mlpIn.apply(queries, rows: t, into: hidden.base, .relu)
      layer.mlpOut.apply(hidden.base, rows: t, into: delta.base)
      layer.norm3.residual(queries, plus: delta.base, rows: t)

      // The image attends to the tokens.
      addTokenPE()
      layer.imageToTokens.imageToTokens(
        image: .raw(keysPE), imageTokens: n, k: withPE.base, v: queries, count: t,
        workspace: workspace, addingBias: false, into: next)
      // keys ← LN(attention + keys), formed in place in the output buffer (the sum commutes).
      layer.norm4.residual(
        next, plus: current, rows: n, addend: imagePE, sum: keysPEOut,
        deltaBias: layer.imageToTokens.out.bias.base)
      current = UnsafePointer(next)
      swap(&next, &spare)
    }

    // The final attention updates each token on its own, so only the rows the caller reads
    // are computed (the other rows keep their values from the last block).
    let rows = finalRows ?? Array(0..<t)
    let selected = gatherWithPE(queries, tokenPE, rows: rows)
    finalAttention.tokensToImage(
      q: selected.base, count: rows.count, image: .raw(keys: current, keysPE: keysPE),
      imageTokens: n, workspace: workspace, into: delta.base)
    finalNorm(queries, rows: rows, plus: delta.base)
    return spare
  }

  /// Rows `rows` of `queries + tokenPE`, packed.
  func gatherWithPE(
    _ queries: UnsafePointer<Float>, _ tokenPE: UnsafePointer<Float>, rows: [Int]
  ) -> DecoderBuffer {
    let e = embedding
    let out = DecoderBuffer(count: rows.count * e)
    for (i, r) in rows.enumerated() {
      for c in 0..<e { out.base[i * e + c] = queries[r * e + c] + tokenPE[r * e + c] }
    }
    return out
  }

  /// `queries[r] ← norm_final_attn(queries[r] + attended[i])` for the i-th of `rows`.
  func finalNorm(
    _ queries: UnsafeMutablePointer<Float>, rows: [Int], plus attended: UnsafePointer<Float>
  ) {
    let e = embedding
    let kept = DecoderBuffer(count: rows.count * e)
    for (i, r) in rows.enumerated() {
      (kept.base + i * e).update(from: queries + r * e, count: e)
    }
    finalNorm.residual(kept.base, plus: attended, rows: rows.count)
    for (i, r) in rows.enumerated() {
      (queries + r * e).update(from: kept.base + i * e, count: e)
    }
  }
}
