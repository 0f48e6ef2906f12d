import EVTensor

/// Tight loops over raw pointers for the ops' backward passes: no closures per element, no
/// bounds checks, no Double conversions, so LLVM vectorises them. Large runs are split over
/// the cores with the kernels' own pool.
enum Loops {
  /// Elements per parallel chunk below which the work stays on the calling thread.
  static let grain = 1 << 15

  /// Σ p[i], in 16 lanes (a plain loop would be one serial chain of additions: LLVM may not
  /// reorder float sums by itself).
  @inline(__always)
  static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD8<Float>()
    var acc1 = SIMD8<Float>()
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 16 <= n {
      acc0 += raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
      acc1 += raw.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
      i += 16
    }
    var total = (acc0 + acc1).sum()
    while i < n {
      total += p[i]
      i += 1
    }
    return total
  }

  /// Σ a[i]·b[i], in 16 lanes.
  @inline(__always)
  static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc0 = SIMD8<Float>()
    var acc1 = SIMD8<Float>()
    var i = 0
    let (ra, rb) = (UnsafeRawPointer(a), UnsafeRawPointer(b))
    while i + 16 <= n {
      acc0 +=
        ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
        * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
      acc1 +=
        ra.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
        * rb.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
      i += 16
    }
    var total = (acc0 + acc1).sum()
    while i < n {
      total += a[i] * b[i]
      i += 1
    }
    return total
  }

  /// Σ (p[i] − mean)², in 16 lanes.
  @inline(__always)
  static func squaredDeviation(_ p: UnsafePointer<Float>, _ n: Int, from mean: Float) -> Float {
    var acc0 = SIMD8<Float>()
    var acc1 = SIMD8<Float>()
    var i = 0
    let raw = UnsafeRawPointer(p)
    let m = SIMD8<Float>(repeating: mean)
    while i + 16 <= n {
      let v0 = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - m
      let v1 = raw.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self) - m
      acc0 += v0 * v0
      acc1 += v1 * v1
      i += 16
    }
    var total = (acc0 + acc1).sum()
    while i < n {
      total += (p[i] - mean) * (p[i] - mean)
      i += 1
    }
    return total
  }

  /// max p[i], in 16 lanes.
  @inline(__always)
  static func maximum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var best = -Float.infinity
    var i = 0
    if n >= 16 {
      let raw = UnsafeRawPointer(p)
      var acc = raw.loadUnaligned(as: SIMD16<Float>.self)
      i = 16
      while i + 16 <= n {
        acc = pointwiseMax(acc, raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
        i += 16
      }
      best = acc.max()
    }
    while i < n {
      best = max(best, p[i])
      i += 1
    }
    return best
  }

  /// Softmax of every row of `cols` values, in place, rows split over the cores. Short rows
  /// (an image→token attention's 7 tokens per head) go in blocks: each row's maximum taken
  /// out first, then one e^x pass over the whole block, which vectorises where a loop of 7
  /// would not, then the rows' sums.
  static func softmaxInPlace(_ p: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    guard cols < 32 else {
      Parallel.forRanges(count: rows, costPerItem: 12 * cols) { range in
        for r in range {
          let row = p + r * cols
          let top = maximum(row, cols)
          for i in 0..<cols { row[i] = exp(row[i] - top) }
          let scale = 1 / sum(row, cols)
          for i in 0..<cols { row[i] *= scale }
        }
      }
      return
    }
    let block = max(1, 2048 / max(cols, 1))
    let blocks = (rows + block - 1) / block
    Parallel.forRanges(count: blocks, costPerItem: 12 * cols * block) { range in
      for b in range {
        let first = b * block
        let count = min(block, rows - first)
        let start = p + first * cols
        for r in 0..<count {
          let row = start + r * cols
          var top = row[0]
          for i in 1..<cols { top = max(top, row[i]) }
          for i in 0..<cols { row[i] -= top }
        }
        for i in 0..<(count * cols) { start[i] = exp(start[i]) }
        for r in 0..<count {
          let row = start + r * cols
          var total: Float = 0
          for i in 0..<cols { total += row[i] }
          let scale = 1 / total
          for i in 0..<cols { row[i] *= scale }
        }
      }
    }
  }

  /// `dst[i] += src[i]`.
  static func add(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int) {
    Parallel.forRanges(count: count) { r in
      for i in r { dst[i] += src[i] }
    }
  }

  /// `dst[i] = src[i] · s`, or `dst[i] += src[i] · s` when `accumulate`.
  static func scale(
    _ src: UnsafePointer<Float>, by s: Float, into dst: UnsafeMutablePointer<Float>, count: Int,
    accumulate: Bool
  ) {
    Parallel.forRanges(count: count) { r in
      if accumulate {
        for i in r { dst[i] += src[i] * s }
      } else {
        for i in r { dst[i] = src[i] * s }
      }
    }
  }

  /// `dst[j] (+)= Σ_b src[b·count + j]`: the gradient of a value broadcast over `batch` copies.
  static func sumOverBatch(
    _ src: UnsafePointer<Float>, batch: Int, count: Int, into dst: UnsafeMutablePointer<Float>,
    accumulate: Bool
  ) {
    Parallel.forRanges(count: count, costPerItem: batch) { r in
      if !accumulate {
        for j in r { dst[j] = 0 }
      }
      for b in 0..<batch {
        let row = src + b * count
        for j in r { dst[j] += row[j] }
      }
    }
  }

  /// `dst[c] += Σ_r src[r·cols + c]` over `rows` rows, summed in float within blocks of 256
  /// rows and in double across blocks (a bias gradient over 65 536 rows keeps 7 digits).
  static func addColumnSums(
    _ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>
  ) {
    let block = 256
    let blocks = (rows + block - 1) / block
    let chunks = Parallel.chunkCount(count: blocks, costPerItem: block * cols)
    var partial = [Double](repeating: 0, count: chunks * cols)
    partial.withUnsafeMutableBufferPointer { totals in
      let totals = totals.baseAddress!
      Parallel.forChunks(count: blocks, chunks: chunks) { chunk, range in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { scratch in
          let sums = scratch.baseAddress!
          let mine = totals + chunk * cols
          for b in range {
            sums.initialize(repeating: 0, count: cols)
            for r in (b * block)..<min(rows, (b + 1) * block) {
              let row = src + r * cols
              for c in 0..<cols { sums[c] += row[c] }
            }
            for c in 0..<cols { mine[c] += Double(sums[c]) }
          }
        }
      }
    }
    for c in 0..<cols {
      var total = 0.0
      for chunk in 0..<chunks { total += partial[chunk * cols + c] }
      dst[c] += Float(total)
    }
  }

  /// e^x to a few ulp for x in [−87, 88] (clamped outside), without a branch or a checked
  /// float-to-integer conversion, so that it vectorises: x·log2(e) = n + f with n an integer
  /// and |f| ≤ ½; 2^f from its Taylor series in z = f·ln 2 (degree 7: error below 1e-8
  /// relative); 2^n straight into the exponent bits. The polynomial goes by Estrin's scheme
  /// (pairs of terms, then pairs of pairs): without FMA, Horner's chain of 7 dependent
  /// multiply-adds is what bounds a loop of these, not the number of operations.
  @inline(__always)
  static func exp(_ x: Float) -> Float {
    let t = min(max(x, -87), 88) * 1.442_695_04
    // t + 1.5·2²³ rounds t to an integer n in the low mantissa bits; with the exponent bias
    // (127) added as well, those bits are n + 127 (1…254), which a shift by 23 moves into
    // the exponent field of 2ⁿ (the bits above fall off the top).
    let shifted = t + (12_582_912 + 127)
    let n = shifted - (12_582_912 + 127)
    let z = (t - n) * 0.693_147_18
    let z2 = z * z
    let low = (1 + z) + z2 * (0.5 + z * (1.0 / 6))
    let high = (1.0 / 24 + z * (1.0 / 120)) + z2 * (1.0 / 720 + z * (1.0 / 5040))
    return (low + (z2 * z2) * high) * Float(bitPattern: shifted.bitPattern &<< 23)
  }

  /// erfc(z) for z ≥ 0 as t·e^(P(t) − z²), t = 1/(1 + z/2), with the Chebyshev fit P of
  /// Numerical Recipes' `erfcc` (fractional error below 1.2e-7 everywhere); P by Estrin's
  /// scheme, as in `exp`.
  @inline(__always)
  static func erfcNonNegative(_ z: Float) -> Float {
    let t = 1 / (1 + 0.5 * z)
    let t2 = t * t
    let t4 = t2 * t2
    let c01: Float = -1.265_512_23 + t * 1.000_023_68
    let c23: Float = 0.374_091_96 + t * 0.096_784_18
    let c45: Float = -0.186_288_06 + t * 0.278_868_07
    let c67: Float = -1.135_203_98 + t * 1.488_515_87
    let c89: Float = -0.822_152_23 + t * 0.170_872_77
    let p = (c01 + t2 * c23) + t4 * ((c45 + t2 * c67) + t4 * c89)
    return t * exp(p - z * z)
  }

  /// `y[i] = act(x[i])`, written straight to `y` (the library's `activate` copies first and
  /// then works in place: one more pass over the data).
  static func activate(
    _ kind: Activation, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>,
    count: Int
  ) {
    Parallel.forRanges(count: count, costPerItem: kind == .relu ? 1 : 16) { r in
      switch kind {
      case .identity:
        for i in r { y[i] = x[i] }
      case .relu:
        for i in r { y[i] = x[i] > 0 ? x[i] : 0 }
      case .geluErf:
        // x·Φ(x) = ½·x·erfc(−x/√2), through erfc(|z|) and erfc(−|z|) = 2 − erfc(|z|): no
        // cancellation for negative x, where the result is tiny.
        for i in r {
          let v = x[i]
          let e = erfcNonNegative(abs(v) * 0.707_106_78)
          y[i] = 0.5 * v * (v < 0 ? e : 2 - e)
        }
      case .geluTanh:
        // ½·x·(1 + tanh u) = x·σ(2u), u = √(2/π)·(x + 0.044715x³).
        for i in r {
          let v = x[i]
          let u = 0.797_884_56 * (v + 0.044_715 * v * v * v)
          y[i] = v / (1 + exp(-2 * u))
        }
      case .hardswish:
        for i in r {
          let v = x[i]
          y[i] = v * min(max(v + 3, 0), 6) / 6
        }
      }
    }
  }

  /// `dx[i] (+)= g[i] · act'(x[i])`, given the forward's input x and output y (the GELU
  /// slopes are formed from y, which saves their transcendental functions but one).
  static func activationBackward(
    _ kind: Activation, x: UnsafePointer<Float>, y: UnsafePointer<Float>,
    g: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>, count: Int, accumulate: Bool
  ) {
    Parallel.forRanges(count: count, costPerItem: kind == .relu ? 1 : 8) { r in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: min(r.count, 1024)) { scratch in
        let slope = scratch.baseAddress!
        var start = r.lowerBound
        while start < r.upperBound {
          let n = min(1024, r.upperBound - start)
          activationSlopes(
            kind, x: x + start, y: y + start, into: slope, count: n)
          let (gp, dp) = (g + start, dx + start)
          if accumulate {
            for i in 0..<n { dp[i] += gp[i] * slope[i] }
          } else {
            for i in 0..<n { dp[i] = gp[i] * slope[i] }
          }
          start += n
        }
      }
    }
  }

  /// act'(x) for `count` values.
  ///
  /// - GELU (erf): Φ(x) + x·φ(x), with Φ(x) = y/x (y = x·Φ(x) is the forward's output; Φ(0)
  ///   = ½) and φ(x) = e^(−x²/2)/√(2π).
  /// - GELU (tanh): y = x·σ(2u), u = √(2/π)·(x + 0.044715x³), so with s = y/x (½ at 0) the
  ///   slope is s + 2x·s·(1 − s)·u′(x), no transcendental function at all.
  static func activationSlopes(
    _ kind: Activation, x: UnsafePointer<Float>, y: UnsafePointer<Float>,
    into slope: UnsafeMutablePointer<Float>, count n: Int
  ) {
    switch kind {
    case .identity:
      for i in 0..<n { slope[i] = 1 }
    case .relu:
      for i in 0..<n { slope[i] = x[i] > 0 ? 1 : 0 }
    case .geluErf:
      let inverseRoot2Pi: Float = 0.398_942_28
      for i in 0..<n {
        // Both loads unconditional: a load inside the select would keep the loop scalar.
        let (v, ratio) = (x[i], y[i] / x[i])
        let cdf = v == 0 ? 0.5 : ratio
        slope[i] = cdf + v * inverseRoot2Pi * exp(-0.5 * v * v)
      }
    case .geluTanh:
      let k: Float = 0.797_884_56
      for i in 0..<n {
        let (v, ratio) = (x[i], y[i] / x[i])
        let s = v == 0 ? 0.5 : ratio
        let du = k * (1 + 3 * 0.044_715 * v * v)
        slope[i] = s + 2 * v * s * (1 - s) * du
      }
    case .hardswish:
      for i in 0..<n {
        let v = x[i]
        slope[i] = v < -3 ? 0 : (v > 3 ? 1 : (2 * v + 3) / 6)
      }
    }
  }
}
