import EVTensor

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
