import EVTensor
import Foundation

/// The running state of a softmax over slices of image tokens, for `columns` columns: each
/// column's maximum score so far, sum of exponentials relative to it, and weighted sum of the
/// keys (a row of `partial`, E values; on the per-image basis the weighted sums are kept in two
/// parts instead, see `BasisSlices`).
struct SoftmaxGroup {
  let maxima: UnsafeMutablePointer<Float>
  let sums: UnsafeMutablePointer<Float>
  let partial: UnsafeMutablePointer<Float>
  let columns: Int

  /// One slice of a folded token→image attention, merged into its group's running softmax:
  /// scores (slice rows × columns) = (keys + pe)·foldedQueries, an unnormalised softmax down
  /// the columns, and the group's weighted sum += scoresᵀ·keys, all rescaled to the running
  /// maximum (as flash attention does). `scores` holds rows × columns floats, `sliceStats`
  /// 2·columns.
  static func mergeFoldedSlice(
    keys: UnsafePointer<Float>, keysPE: UnsafePointer<Float>, rows: Int, embedding e: Int,
    foldedQueries: PackedMatrix, scale: Float, scores: UnsafeMutablePointer<Float>,
    sliceStats: UnsafeMutablePointer<Float>, into group: SoftmaxGroup, first: Bool
  ) {
    let columns = foldedQueries.columns
    SmallGEMM.multiply(
      m: rows, k: e, a: keysPE, lda: e, b: foldedQueries, c: scores, ldc: columns)
    merge(
      scores, rows: rows, columns: columns, scale: scale, into: group, sliceStats: sliceStats,
      first: first
    ) { c, f in
      let row = group.partial + c * e
      for k in 0..<e { row[k] *= f }
    }
    SmallGEMM.multiply(
      transA: true, m: columns, n: e, k: rows, a: scores, lda: columns, b: keys, ldb: e,
      c: group.partial, ldc: e, accumulate: !first)
  }

  /// The slice's unnormalised softmax down the columns of `scores` (rows × columns, dense),
  /// merged into `group`'s running maxima and sums (as flash attention does). The first slice
  /// of a group starts them; later ones rescale whichever side has the smaller maximum, column
  /// by column: the group's running weighted sums (`rescaleGroup(column, factor)`) or the
  /// slice's exponentials (a column of `scores`). The caller then adds the slice's weighted
  /// sums to the group's (or, for the first slice, writes them).
  static func merge(
    _ scores: UnsafeMutablePointer<Float>, rows: Int, columns: Int, scale: Float,
    into group: SoftmaxGroup, sliceStats: UnsafeMutablePointer<Float>, first: Bool,
    rescaleGroup: (_ column: Int, _ factor: Float) -> Void
  ) {
    if first {
      HeadAttention.partialSoftmaxDownColumns(
        scores, rows: rows, cols: columns, ld: columns, scale: scale, maxima: group.maxima,
        sums: group.sums)
      return
    }
    let (maxima, sums) = (sliceStats, sliceStats + columns)
    HeadAttention.partialSoftmaxDownColumns(
      scores, rows: rows, cols: columns, ld: columns, scale: scale, maxima: maxima, sums: sums)
    for c in 0..<columns {
      let (old, new) = (group.maxima[c], maxima[c])
      if new > old {
        let f = Foundation.exp((old - new) * scale)
        rescaleGroup(c, f)
        group.sums[c] = group.sums[c] * f + sums[c]
        group.maxima[c] = new
      } else {
        let f = Foundation.exp((new - old) * scale)
        for p in 0..<rows { scores[p * columns + c] *= f }
        group.sums[c] += sums[c] * f
      }
    }
  }

  /// Combines per-group softmax partials: for each column r, the groups' weighted sums
  /// (`embedding` values, or with `interleavedHeads` t·d·8 values grouped by head) rescaled to
  /// the overall maximum and divided by the overall sum of exponentials.
  static func combine(
    _ partial: UnsafePointer<Float>, stats: UnsafePointer<Float>, groups: Int, columns: Int,
    embedding e: Int, scale: Float, statsStride: Int? = nil, sumOffset: Int? = nil,
    partialStride: Int? = nil, interleavedHeads: Bool = false
  ) -> DecoderBuffer {
    let stride = statsStride ?? 2 * columns
    let sumAt = sumOffset ?? columns
    let perGroup = partialStride ?? columns * e
    let out = DecoderBuffer(count: columns * e)
    let weights = DecoderBuffer(count: groups)
    for r in 0..<columns {
      var m = -Float.infinity
      for g in 0..<groups { m = max(m, stats[g * stride + r]) }
      var total: Float = 0
      for g in 0..<groups {
        let wgt = Foundation.exp((stats[g * stride + r] - m) * scale)
        weights.base[g] = wgt
        total += wgt * stats[g * stride + sumAt + r]
      }
      let inv = 1 / total
      if interleavedHeads {
        // Column r = j·8 + h; its values are partial[(j·d + c)·8 + h] for c < d.
        let (j, h) = r.quotientAndRemainder(dividingBy: 8)
        for c in 0..<e {
          let index = (j * e + c) * 8 + h
          var acc: Float = 0
          for g in 0..<groups { acc += weights.base[g] * partial[g * perGroup + index] }
          out.base[index] = acc * inv
        }
      } else {
        let o = out.base + r * e
        for c in 0..<e { o[c] = 0 }
        for g in 0..<groups {
          let wgt = weights.base[g]
          let p = partial + g * perGroup + r * e
          for c in 0..<e { o[c] += wgt * p[c] }
        }
        for c in 0..<e { o[c] *= inv }
      }
    }
    return out
  }
}
