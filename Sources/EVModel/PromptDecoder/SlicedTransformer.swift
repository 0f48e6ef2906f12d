import EVTensor

/// The two-way transformer for prompts of few tokens (at most `foldedTokenLimit`, 16 by
/// default: every attention then folds its image side into the token side, see
/// `DecoderAttention`), with or without a mask input. Without one (the usual case), the first
/// block's image projections come from the per-image cache, and the second block's and the
/// final attention's from the per-image basis (`SecondBlockBasis`, run by `BasisSlices`);
/// otherwise every attention is folded (`FoldedSlices`). `SlicedPass` holds what both share
/// and runs the first block. The derivation is in docs/DECODER.md.
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
    let pass = SlicedPass(
      transformer: self, queries: queries, tokenPE: tokenPE, count: t, keys: keys,
      keysPE: keysPE, imagePE: imagePE, imageTokens: n, workspace: workspace,
      finalRows: finalRows)
    pass.firstBlock(image: cached)
    if let cached, let basis = cached.secondBlock, let maps {
      BasisSlices(pass: pass, image: cached, basis: basis, maps: maps).run()
    } else {
      FoldedSlices(pass: pass, image: cached).run()
    }
    return (pass.trace, pass.keys2)
  }
}
