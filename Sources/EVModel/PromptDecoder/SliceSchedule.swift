/// What the sliced transformer runs after its first block (`SlicedPass.firstBlock`): the two
/// phases over the slices of image tokens, each leaving its token→image attention's output in
/// `pass.delta`. `FoldedSlices` forms the image tokens; `BasisSlices` reads them from the
/// per-image basis.
protocol SliceSchedule {
  var pass: SlicedPass { get }
  /// Phase 0: block 0's image→token attention and LayerNorm, then block 1 up to its
  /// token→image attention.
  func secondBlock()
  /// Phase 1: block 1's image→token attention and LayerNorm, then the final token→image
  /// attention for the rows read afterwards.
  func finalAttention()
}

extension SliceSchedule {
  /// Both phases with the token-side steps between and after them.
  func run() {
    let second = pass.transformer.layers[1]
    secondBlock()
    second.norm2.residual(pass.queries, plus: pass.delta.base, rows: pass.tokens)
    pass.mlp(second)
    finalAttention()
    pass.transformer.finalNorm(pass.queries, rows: pass.finalRows, plus: pass.delta.base)
  }
}
