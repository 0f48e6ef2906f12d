/// Row-wise kernels on raw buffers for SAM's mask decoder.
///
/// The decoder works on token-major matrices (`rows × features`) whose attention heads are
/// column slices of wider buffers, so its hot loops take pointers with explicit strides instead
/// of whole `Tensor`s: that lets one buffer serve as a GEMM output and as the next op's input
/// without copies. Every function splits its rows across cores when the work is large enough;
/// none of them calls BLAS, so that is safe. Each inner loop is either a plain elementwise loop
/// (which LLVM vectorises) or uses the interleaved partial sums of `Norm.swift`.
public enum RowOps {
  /// In place, for each of `rows` runs of `cols` values whose starts are `stride` apart:
  /// `x ← softmax(scale · x)`, max-subtracted as PyTorch does. For long rows; see
  /// `softmaxColumns` for many short ones.
  public static func softmax(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, stride: Int, scale: Float
  ) {
    precondition(rows >= 0 && cols > 0 && stride >= cols, "RowOps.softmax: bad geometry")
    Parallel.forRanges(count: rows, costPerItem: cols * 12) { range in
      for r in range {
        let p = x + r * stride
        let m = maximum(p, cols)
        for j in 0..<cols { p[j] = fastExp((p[j] - m) * scale) }
        let inv = 1 / sum(p, cols)
        for j in 0..<cols { p[j] *= inv }
      }
    }
  }

  /// Softmax down the columns of row blocks: `x` holds `groups` blocks of `rows` × `cols`
  /// (contiguous), and within each block every column `c` becomes
  /// `softmax over r of scale · (x[r][c] + rowBias[g·rows + r])`.
  ///
  /// This is attention of many queries over a few keys laid out keys-major, so the loops run
  /// along the long dimension and vectorise.
  public static func softmaxColumns(
    _ x: UnsafeMutablePointer<Float>, groups: Int, rows: Int, cols: Int, scale: Float,
    rowBias: UnsafePointer<Float>? = nil
  ) {
    precondition(groups >= 0 && rows > 0 && cols >= 0, "RowOps.softmaxColumns: bad geometry")
    let chunk = 256
    let chunks = (cols + chunk - 1) / chunk
    Parallel.forEach(count: groups * chunks, costPerItem: rows * chunk * 12) { item in
      let g = item / chunks
      let c0 = (item % chunks) * chunk
      let w = min(chunk, cols - c0)
      let block = x + g * rows * cols + c0
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * chunk) { scratch in
        let m = scratch.baseAddress!
        let s = m + chunk
        let b0 = rowBias?[g * rows] ?? 0
        for c in 0..<w { m[c] = block[c] + b0 }
        for r in 1..<rows {
          let p = block + r * cols
          let b = rowBias?[g * rows + r] ?? 0
          for c in 0..<w {
            let v = p[c] + b
            m[c] = v > m[c] ? v : m[c]
          }
        }
        for c in 0..<w { s[c] = 0 }
        for r in 0..<rows {
          let p = block + r * cols
          let b = rowBias?[g * rows + r] ?? 0
          for c in 0..<w {
            let e = fastExp((p[c] + b - m[c]) * scale)
            p[c] = e
            s[c] += e
          }
        }
        for c in 0..<w { s[c] = 1 / s[c] }
        for r in 0..<rows {
          let p = block + r * cols
          for c in 0..<w { p[c] *= s[c] }
        }
      }
    }
  }

  /// `out[r] = act(LayerNorm(x[r] + preBias) · weight + bias)` over `rows` contiguous rows of
  /// `dim` values (biased variance). `out` may equal `x`; `preBias` (dim values) is optional.
  public static func layerNorm(
    _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, rows: Int, dim: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float,
    preBias: UnsafePointer<Float>? = nil, activation: Activation = .identity
  ) {
    precondition(rows >= 0 && dim > 0, "RowOps.layerNorm: bad geometry")
    Parallel.forRanges(count: rows, costPerItem: dim * (6 + activation.cost)) { range in
      for r in range {
        let o = out + r * dim
        if let preBias {
          let i = x + r * dim
          for j in 0..<dim { o[j] = i[j] + preBias[j] }
          normalizeRow(o, o, dim: dim, weight: weight, bias: bias, eps: eps)
        } else {
          normalizeRow(x + r * dim, o, dim: dim, weight: weight, bias: bias, eps: eps)
        }
        if activation != .identity { applyBiasActivation(o, count: dim, bias: 0, activation) }
      }
    }
  }

  /// The post-attention residual step: `x[r] ← LayerNorm(x[r] + delta[r])`, rows of `dim`.
  /// When `addend` and `sum` are given it also writes `sum[r] = x[r] + addend[r]` from the
  /// normalised row, which is the "keys + positional encoding" the next attention needs.
  public static func residualLayerNorm(
    _ x: UnsafeMutablePointer<Float>, delta: UnsafePointer<Float>, rows: Int, dim: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float,
    addend: UnsafePointer<Float>? = nil, sum: UnsafeMutablePointer<Float>? = nil
  ) {
    precondition(rows >= 0 && dim > 0, "RowOps.residualLayerNorm: bad geometry")
    precondition((addend == nil) == (sum == nil), "RowOps.residualLayerNorm: addend needs sum")
    Parallel.forRanges(count: rows, costPerItem: dim * 8) { range in
      for r in range {
        let p = x + r * dim
        let d = delta + r * dim
        for j in 0..<dim { p[j] += d[j] }
        normalizeRow(p, p, dim: dim, weight: weight, bias: bias, eps: eps)
        if let addend, let sum {
          let a = addend + r * dim
          let s = sum + r * dim
          for j in 0..<dim { s[j] = p[j] + a[j] }
        }
      }
    }
  }

  /// In place: `x[r][c] = act(x[r][c] + bias[c])` for `rows` runs of `cols` values `stride` apart.
  public static func biasActivation(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, stride: Int,
    bias: UnsafePointer<Float>?, _ act: Activation
  ) {
    precondition(rows >= 0 && cols >= 0 && stride >= cols, "RowOps.biasActivation: bad geometry")
    guard bias != nil || act != .identity, cols > 0 else { return }
    Parallel.forRanges(count: rows, costPerItem: cols * act.cost) { range in
      for r in range {
        applyBiasVectorActivation(x + r * stride, count: cols, bias: bias, act)
      }
    }
  }

  /// `out[i] = a[i] + b[i]` for `count` contiguous values.
  public static func add(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
    count: Int
  ) {
    Parallel.forRanges(count: count) { range in
      for i in range { out[i] = a[i] + b[i] }
    }
  }

  @inline(__always)
  private static func normalizeRow(
    _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, dim: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float
  ) {
    let mean = sum(x, dim) / Float(dim)
    let variance = sumSquaredDeviation(x, dim, from: mean) / Float(dim)
    let inv = 1 / (variance + eps).squareRoot()
    for j in 0..<dim { out[j] = (x[j] - mean) * inv * weight[j] + bias[j] }
  }
}
