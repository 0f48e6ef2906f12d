import CKernels

/// Attention kernels for the mask decoder's token-major layout (Sources/CKernels/decoder.c),
/// where the 8 heads of one (image token, prompt token) pair are 8 adjacent floats, so a
/// softmax over prompt tokens is elementwise across vectors.
///
/// Layouts, for head h and channel c of a head of `d` channels:
/// - scores and probabilities: row p (image token), column j·8 + h (prompt token j);
/// - head-interleaved projections: row p, column c·8 + h (an `nn.Linear` output row with its
///   columns permuted so that channel c of every head is one vector).
///
/// Each has a plain-loop version in C for CPUs without AVX2 (the reference in the tests).
package enum HeadAttention {
  /// The number of heads the kernels are written for: one 8-float vector.
  package static let heads = 8

  /// `out[p][j·8 + h] = Σ_c q[p][c·8 + h] · k[j][c·8 + h]` for p < rows, j < t: per-head dot
  /// products of head-interleaved rows (q rows `ldq` apart; k dense, t × 8d; out rows `ldo`
  /// apart).
  @inline(__always)
  package static func scores(
    _ q: UnsafePointer<Float>, ldq: Int, rows: Int, keys k: UnsafePointer<Float>, tokens t: Int,
    headDim d: Int, into out: UnsafeMutablePointer<Float>, ldo: Int
  ) {
    evk_head_scores(q, ldq, rows, k, t, d, out, ldo)
  }

  /// `y[r][i] = outer[r]·(inner[r]·x[r][i] + shift[i]) + offset[r][i]` for r < rows,
  /// i < width (rows `ldy`, `ldx`, `ldo` apart; nil scales are 1, nil offsets 0; `y` may be
  /// `x`).
  @inline(__always)
  package static func scaleRows(
    _ x: UnsafePointer<Float>, ldx: Int, rows: Int, width: Int,
    inner: UnsafePointer<Float>?, outer: UnsafePointer<Float>? = nil,
    shift: UnsafePointer<Float>? = nil, offset: UnsafePointer<Float>? = nil, ldo: Int = 0,
    into y: UnsafeMutablePointer<Float>, ldy: Int
  ) {
    evk_scale_rows(y, ldy, x, ldx, rows, width, inner, outer, shift, offset, ldo)
  }

  /// `out[r] = Σ_c a[r][c]·b[r][c]` for r < rows, c < cols (rows `lda` and `ldb` apart).
  @inline(__always)
  package static func rowDots(
    _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int, rows: Int,
    cols: Int, into out: UnsafeMutablePointer<Float>
  ) {
    evk_row_dots(a, lda, b, ldb, rows, cols, out)
  }

  /// In place, per row and head: softmax over the `t` prompt tokens of `scale·(x + bias)`
  /// (`bias`: t·8 values shared by every row, optional).
  @inline(__always)
  package static func softmaxOverTokens(
    _ s: UnsafeMutablePointer<Float>, rows: Int, tokens t: Int, ld: Int, scale: Float,
    bias: UnsafePointer<Float>? = nil
  ) {
    evk_softmax_heads(s, rows, t, ld, scale, bias)
  }

  /// One slice of a softmax down the columns of `s` (rows × cols, row stride `ld`),
  /// unnormalised: `s ← exp(scale·(s − m_c))` with m_c the column's maximum over these rows;
  /// `maxima` and `sums` receive m_c and the column sums.
  @inline(__always)
  package static func partialSoftmaxDownColumns(
    _ s: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int, scale: Float,
    maxima: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>
  ) {
    evk_softmax_columns_partial(s, rows, cols, ld, scale, maxima, sums)
  }

  /// `acc[j][c·8 + h] = Σ_p weights[p][j·8 + h] · v[p][c·8 + h]` over p < rows (weights: dense
  /// rows of 8t; v: head-interleaved rows `ldv` apart; acc: t × 8d).
  @inline(__always)
  package static func weightedValues(
    _ weights: UnsafePointer<Float>, rows: Int, tokens t: Int, headDim d: Int,
    values v: UnsafePointer<Float>, ldv: Int, into acc: UnsafeMutablePointer<Float>
  ) {
    evk_heads_attend(weights, rows, t, d, v, ldv, acc)
  }

  /// `out[r·count + m] = Σ_c h[m·width + c] · gelu(z[r·width + c] + bias[c])`, with
  /// `RowOps.gelu` bit for bit; width ≤ 256. The mask decoder's last step: the second
  /// upscaling convolution's GELU and every mask's hypernetwork product.
  @inline(__always)
  package static func geluDot(
    _ z: UnsafePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>,
    vectors h: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>
  ) {
    precondition(width <= 256, "HeadAttention.geluDot: width \(width) > 256")
    evk_gelu_dot(z, rows, width, bias, h, count, out)
  }

  /// The folded first upscaling convolution's epilogue, in place on `y` (`tokens` rows of 4
  /// sub-pixels × 64 channels holding the folded product): per row p,
  /// `v = a1[p]·(a0[p]·(base[p] + u0) + u1 + y[p]) + u2`, then each sub-pixel's LayerNorm over
  /// its 64 channels (`weight`, `bias`, `eps`) and the erf GELU (`RowOps.gelu`, bit for bit).
  @inline(__always)
  package static func foldedLayerNormGELU(
    _ y: UnsafeMutablePointer<Float>, base: UnsafePointer<Float>, tokens: Int,
    innerScale a0: UnsafePointer<Float>, outerScale a1: UnsafePointer<Float>,
    innerOffset u0: UnsafePointer<Float>, middleOffset u1: UnsafePointer<Float>,
    outerOffset u2: UnsafePointer<Float>, weight: UnsafePointer<Float>,
    bias: UnsafePointer<Float>, eps: Float
  ) {
    evk_fold_layernorm64_gelu(y, base, tokens, a0, a1, u0, u1, u2, weight, bias, eps)
  }
}
