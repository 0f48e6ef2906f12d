import EVTensor
import Foundation

/// The folds of an attention's image side into its token side that the sliced transformer
/// runs on (see `DecoderAttention` and `SlicedPass`).
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
