import CKernels

/// Attention kernels for the mask decoder's token-major layout (Sources/CKernels/avx2/decoder.c),
/// where the 8 heads of one (image token, prompt token) pair are 8 adjacent floats, so a
/// softmax over prompt tokens is elementwise across vectors.
///
/// Layouts, for head h and channel c of a head of `d` channels:
/// - scores and probabilities: row p (image token), column j·8 + h (prompt token j);
/// - head-interleaved projections: row p, column c·8 + h (an `nn.Linear` output row with its
///   columns permuted so that channel c of every head is one vector).
///
/// Each kernel runs in C at AVX2 and up; below, the plain loop beside its call runs instead (the
/// reference in the tests).
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
    if evk_head_scores(q, ldq, rows, k, t, d, out, ldo) != 0 { return }
    for p in 0..<rows {
      for j in 0..<t {
        for h in 0..<heads {
          var s: Float = 0
          for c in 0..<d { s += q[p * ldq + c * heads + h] * k[(j * d + c) * heads + h] }
          out[p * ldo + j * heads + h] = s
        }
      }
    }
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
    if evk_scale_rows(y, ldy, x, ldx, rows, width, inner, outer, shift, offset, ldo) != 0 {
      return
    }
    for r in 0..<rows {
      let a = inner?[r] ?? 1
      for i in 0..<width {
        var v = a * x[r * ldx + i]
        if let shift { v = v + shift[i] }
        if let outer { v = outer[r] * v }
        if let offset { v = v + offset[r * ldo + i] }
        y[r * ldy + i] = v
      }
    }
  }

  /// `out[r] = Σ_c a[r][c]·b[r][c]` for r < rows, c < cols (rows `lda` and `ldb` apart).
  @inline(__always)
  package static func rowDots(
    _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int, rows: Int,
    cols: Int, into out: UnsafeMutablePointer<Float>
  ) {
    if evk_row_dots(a, lda, b, ldb, rows, cols, out) != 0 { return }
    for r in 0..<rows {
      var s: Float = 0
      for c in 0..<cols { s += a[r * lda + c] * b[r * ldb + c] }
      out[r] = s
    }
  }

  /// In place, per row and head: softmax over the `t` prompt tokens of `scale·(x + bias)`
  /// (`bias`: t·8 values shared by every row, optional).
  @inline(__always)
  package static func softmaxOverTokens(
    _ s: UnsafeMutablePointer<Float>, rows: Int, tokens t: Int, ld: Int, scale: Float,
    bias: UnsafePointer<Float>? = nil
  ) {
    if evk_softmax_heads(s, rows, t, ld, scale, bias) != 0 { return }
    for p in 0..<rows {
      let row = s + p * ld
      for h in 0..<heads {
        var m = -Float.infinity
        for j in 0..<t {
          let v = row[j * heads + h] + (bias?[j * heads + h] ?? 0)
          m = v > m ? v : m
        }
        var sum: Float = 0
        for j in 0..<t {
          let e = fastExp((row[j * heads + h] + (bias?[j * heads + h] ?? 0) - m) * scale)
          row[j * heads + h] = e
          sum += e
        }
        let inv = 1 / sum
        for j in 0..<t { row[j * heads + h] *= inv }
      }
    }
  }

  /// One slice of a softmax down the columns of `s` (rows × cols, row stride `ld`),
  /// unnormalised: `s ← exp(scale·(s − m_c))` with m_c the column's maximum over these rows;
  /// `maxima` and `sums` receive m_c and the column sums.
  @inline(__always)
  package static func partialSoftmaxDownColumns(
    _ s: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ld: Int, scale: Float,
    maxima: UnsafeMutablePointer<Float>, sums: UnsafeMutablePointer<Float>
  ) {
    if evk_softmax_columns_partial(s, rows, cols, ld, scale, maxima, sums) != 0 { return }
    for c in 0..<cols {
      var m = -Float.infinity
      for p in 0..<rows { m = s[p * ld + c] > m ? s[p * ld + c] : m }
      var sum: Float = 0
      for p in 0..<rows {
        let e = fastExp((s[p * ld + c] - m) * scale)
        s[p * ld + c] = e
        sum += e
      }
      maxima[c] = m
      sums[c] = sum
    }
  }

  /// `acc[j][c·8 + h] = Σ_p weights[p][j·8 + h] · v[p][c·8 + h]` over p < rows (weights: dense
  /// rows of 8t; v: head-interleaved rows `ldv` apart; acc: t × 8d).
  @inline(__always)
  package static func weightedValues(
    _ weights: UnsafePointer<Float>, rows: Int, tokens t: Int, headDim d: Int,
    values v: UnsafePointer<Float>, ldv: Int, into acc: UnsafeMutablePointer<Float>
  ) {
    if evk_heads_attend(weights, rows, t, d, v, ldv, acc) != 0 { return }
    for j in 0..<t {
      for c in 0..<d {
        for h in 0..<heads {
          var a: Float = 0
          for p in 0..<rows { a += weights[(p * t + j) * heads + h] * v[p * ldv + c * heads + h] }
          acc[(j * d + c) * heads + h] = a
        }
      }
    }
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
    if evk_gelu_dot(z, rows, width, bias, h, count, out) != 0 { return }
    withUnsafeTemporaryAllocation(of: Float.self, capacity: width) { g in
      for r in 0..<rows {
        for c in 0..<width { g[c] = RowOps.gelu(z[r * width + c] + bias[c]) }
        for m in 0..<count {
          var s: Float = 0
          for c in 0..<width { s += g[c] * h[m * width + c] }
          out[r * count + m] = s
        }
      }
    }
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
    if evk_fold_layernorm64_gelu(y, base, tokens, a0, a1, u0, u1, u2, weight, bias, eps) != 0 {
      return
    }
    for p in 0..<tokens {
      let row = y + p * 256
      let br = base + p * 256
      for c in 0..<256 {
        let t = a0[p] * (br[c] + u0[c]) + u1[c]
        row[c] = a1[p] * (t + row[c]) + u2[c]
      }
      for s in 0..<4 {
        let v = row + 64 * s
        var mean: Float = 0
        for c in 0..<64 { mean += v[c] }
        mean /= 64
        var variance: Float = 0
        for c in 0..<64 { variance += (v[c] - mean) * (v[c] - mean) }
        let inv = 1 / (variance / 64 + eps).squareRoot()
        for c in 0..<64 { v[c] = RowOps.gelu((v[c] - mean) * inv * weight[c] + bias[c]) }
      }
    }
  }
}
