import CKernels

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

  /// `out[r] = LayerNorm(x[r] + preBias) · weight + bias` over `rows` contiguous rows of `dim`
  /// values (biased variance), followed by `RowOps.gelu` when `gelu` is set. `out` may equal
  /// `x`; `preBias` (dim values) is optional.
  public static func layerNorm(
    _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, rows: Int, dim: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float,
    preBias: UnsafePointer<Float>? = nil, gelu: Bool = false
  ) {
    precondition(rows >= 0 && dim > 0, "RowOps.layerNorm: bad geometry")
    Parallel.forRanges(count: rows, costPerItem: dim * (gelu ? 16 : 6)) { range in
      for r in range {
        let o = out + r * dim
        if let preBias {
          let i = x + r * dim
          for j in 0..<dim { o[j] = i[j] + preBias[j] }
          normalizeRow(o, o, dim: dim, weight: weight, bias: bias, eps: eps)
        } else {
          normalizeRow(x + r * dim, o, dim: dim, weight: weight, bias: bias, eps: eps)
        }
        if gelu && evk_gelu_erf_rational(o, dim, nil) == 0 {
          for j in 0..<dim { o[j] = RowOps.gelu(o[j]) }
        }
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

  /// In place: `x[r][c] = gelu(x[r][c] + bias[c])` (`RowOps.gelu`), `rows` runs of `cols`
  /// values `stride` apart.
  public static func biasGELU(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, stride: Int, bias: UnsafePointer<Float>
  ) {
    precondition(rows >= 0 && cols >= 0 && stride >= cols, "RowOps.biasGELU: bad geometry")
    Parallel.forRanges(count: rows, costPerItem: cols * 12) { range in
      for r in range {
        let p = x + r * stride
        // The AVX-512 twin of `gelu` (same formula, FMA rounding) when the CPU has it.
        if evk_gelu_erf_rational(p, cols, bias) != 0 { continue }
        for c in 0..<cols { p[c] = gelu(p[c] + bias[c]) }
      }
    }
  }

  /// Exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, with erf from the odd/even rational
  /// approximation Eigen and TensorFlow use (argument clamped to ±4, where erf is ±1 in float):
  /// absolute error below 4e-7 for erf, 1.4e-6 for GELU at large |x|. Half the work of the
  /// erfc form in `FastMath.swift`, which matters in the mask decoder's upscaling (3 M GELUs
  /// per prompt); its relative accuracy for very negative x is not needed there.
  @inline(__always)
  public static func gelu(_ x: Float) -> Float {
    let u = x * 0.707_106_78
    let z: Float = u < -4 ? -4 : (u > 4 ? 4 : u)
    let z2 = z * z
    var p: Float = -2.726_142_3e-10
    p = p * z2 + 2.770_681_4e-08
    p = p * z2 - 2.101_024e-06
    p = p * z2 - 5.692_506_4e-05
    p = p * z2 - 7.349_906_3e-04
    p = p * z2 - 2.954_600_0e-03
    p = p * z2 - 1.609_603_3e-02
    var q: Float = -1.456_607_2e-05
    q = q * z2 - 2.133_740_6e-04
    q = q * z2 - 1.682_827e-03
    q = q * z2 - 7.373_329_2e-03
    q = q * z2 - 1.426_473_9e-02
    return 0.5 * x * (1 + z * p / q)
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

  /// Separable linear resampling of `planes` contiguous planes of `rows.inputCount` ×
  /// `cols.inputCount` values: `out[p] = R · x[p] · Cᵀ`, R and C given by their taps.
  /// Vertical pass first (vectorised along the input row), then the horizontal taps.
  public static func resample(
    _ x: UnsafePointer<Float>, planes: Int, rows: ResampleAxis, cols: ResampleAxis,
    into out: UnsafeMutablePointer<Float>
  ) {
    let (inH, inW) = (rows.inputCount, cols.inputCount)
    let (outH, outW) = (rows.outputCount, cols.outputCount)
    rows.start.withUnsafeBufferPointer { rs in
      rows.weight.withUnsafeBufferPointer { rw in
        cols.start.withUnsafeBufferPointer { cs in
          cols.weight.withUnsafeBufferPointer { cw in
            Parallel.forRanges(
              count: planes * outH, costPerItem: inW * rows.taps + outW * cols.taps
            ) { range in
              withUnsafeTemporaryAllocation(of: Float.self, capacity: inW) { tmp in
                let t = tmp.baseAddress!
                for item in range {
                  let (plane, i) = item.quotientAndRemainder(dividingBy: outH)
                  let src = x + plane * inH * inW + rs[i] * inW
                  let w0 = rw[i * rows.taps]
                  for c in 0..<inW { t[c] = w0 * src[c] }
                  for k in 1..<max(rows.taps, 1) {
                    let wk = rw[i * rows.taps + k]
                    let row = src + k * inW
                    for c in 0..<inW { t[c] += wk * row[c] }
                  }
                  let o = out + (plane * outH + i) * outW
                  for j in 0..<outW {
                    var v: Float = 0
                    let base = cs[j]
                    for k in 0..<cols.taps { v += cw[j * cols.taps + k] * t[base + k] }
                    o[j] = v
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

/// One axis of a separable linear resampling: output `i` is
/// `Σ_{k < taps} weight[i·taps + k] · input[start[i] + k]`, with every tap inside the input.
public struct ResampleAxis: Sendable, Equatable {
  public let inputCount: Int
  public let taps: Int
  public let start: [Int]
  public let weight: [Float]

  public init(inputCount: Int, taps: Int, start: [Int], weight: [Float]) {
    precondition(taps >= 1 && weight.count == start.count * taps, "ResampleAxis: inconsistent taps")
    precondition(
      start.allSatisfy { $0 >= 0 && $0 + taps <= inputCount }, "ResampleAxis: tap outside the input"
    )
    self.inputCount = inputCount
    self.taps = taps
    self.start = start
    self.weight = weight
  }

  public var outputCount: Int { start.count }
}
