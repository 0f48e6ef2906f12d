import CKernels

/// Row-wise kernels on raw buffers for SAM's mask decoder.
///
/// The decoder works on token-major matrices (`rows × features`) whose attention heads are
/// column slices of wider buffers, so its hot loops take pointers with explicit strides instead
/// of whole `Tensor`s: that lets one buffer serve as a GEMM output and as the next op's input
/// without copies. Every function splits its rows across cores when the work is large enough;
/// none of them calls BLAS, so that is safe. Each inner loop is either a plain elementwise loop
/// (which LLVM vectorises) or uses the interleaved partial sums of `Norm.swift`.
package enum RowOps {
  /// In place, for each of `rows` runs of `cols` values whose starts are `stride` apart:
  /// `x ← softmax(scale · x)`, max-subtracted as PyTorch does. For long rows; see
  /// `softmaxColumns` for many short ones. `serial` keeps the work on the calling thread.
  package static func softmax(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, stride: Int, scale: Float,
    serial: Bool = false
  ) {
    precondition(rows >= 0 && cols > 0 && stride >= cols, "RowOps.softmax: bad geometry")
    Parallel.forRanges(count: rows, costPerItem: cols * 12, serial: serial) { range in
      if evk_softmax_rows(x + range.lowerBound * stride, range.count, cols, stride, scale) != 0 {
        return
      }
      for r in range {
        let p = x + r * stride
        let inv = 1 / exponentiateRow(p, cols: cols, scale: scale).sum
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
  package static func softmaxColumns(
    _ x: UnsafeMutablePointer<Float>, groups: Int, rows: Int, cols: Int, scale: Float,
    rowBias: UnsafePointer<Float>? = nil
  ) {
    precondition(groups >= 0 && rows > 0 && cols >= 0, "RowOps.softmaxColumns: bad geometry")
    let chunk = 256
    let chunks = (cols + chunk - 1) / chunk
    Parallel.forEach(count: groups * chunks, costPerItem: rows * chunk * 12) { item in
      let g = item / chunks
      let c0 = (item % chunks) * chunk
      softmaxColumnRange(
        x + g * rows * cols, rows: rows, cols: cols, columns: c0..<min(cols, c0 + chunk),
        scale: scale, rowBias: rowBias.map { $0 + g * rows })
    }
  }

  /// `softmaxColumns` restricted to `columns` of one block of `rows` × `cols` (row stride
  /// `cols`), on the calling thread.
  package static func softmaxColumnRange(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, columns: Range<Int>, scale: Float,
    rowBias: UnsafePointer<Float>?
  ) {
    precondition(
      rows > 0 && columns.lowerBound >= 0 && columns.upperBound <= cols,
      "RowOps.softmaxColumnRange: bad geometry")
    guard !columns.isEmpty else { return }
    if evk_softmax_columns(
      x, rows, cols, columns.lowerBound, columns.upperBound, scale, rowBias) != 0
    {
      return
    }
    // Running max and sum per column, updated row by row, so the loops run along the columns
    // and vectorise.
    let w = columns.count
    let block = x + columns.lowerBound
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * w) { scratch in
      let m = scratch.baseAddress!
      let s = m + w
      for c in 0..<w { m[c] = -.infinity }
      for r in 0..<rows {
        let p = block + r * cols
        let b = rowBias?[r] ?? 0
        for c in 0..<w {
          let v = p[c] + b
          m[c] = v > m[c] ? v : m[c]
        }
      }
      for c in 0..<w { s[c] = 0 }
      for r in 0..<rows {
        let p = block + r * cols
        let b = rowBias?[r] ?? 0
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

  /// One row in place, `p ← exp(scale·(p − max))`; returns the max and the sum of the
  /// exponentials. The portable half of the row softmaxes.
  @inline(__always)
  private static func exponentiateRow(
    _ p: UnsafeMutablePointer<Float>, cols: Int, scale: Float
  ) -> (max: Float, sum: Float) {
    let m = maximum(p, cols)
    for j in 0..<cols { p[j] = fastExp((p[j] - m) * scale) }
    return (m, sum(p, cols))
  }

  /// `out[r] = LayerNorm(x[r] + preBias) · weight + bias` over `rows` contiguous rows of `dim`
  /// values (biased variance), followed by `RowOps.gelu` when `gelu` is set. `out` may equal
  /// `x`; `preBias` (dim values) is optional. `serial` keeps the work on the calling thread
  /// (for callers that already run in parallel).
  package static func layerNorm(
    _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, rows: Int, dim: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float,
    preBias: UnsafePointer<Float>? = nil, gelu: Bool = false, serial: Bool = false
  ) {
    precondition(rows >= 0 && dim > 0, "RowOps.layerNorm: bad geometry")
    Parallel.forRanges(count: rows, costPerItem: dim * (gelu ? 16 : 6), serial: serial) { range in
      if dim == 64 && gelu {
        let r0 = range.lowerBound
        if x != UnsafePointer(out) {
          (out + r0 * dim).update(from: x + r0 * dim, count: range.count * dim)
        }
        if evk_layernorm64_gelu(out + r0 * dim, range.count, weight, bias, eps, preBias) != 0 {
          return
        }
      }
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

  /// `y[r] = a[r] · (x[r] + u) + v` for `rows` rows of `dim` values (x rows `ldx` apart, y
  /// dense; y may be x when `ldx == dim`); `a`, `u`, `v` default to 1, 0, 0. On the calling
  /// thread.
  package static func rowAffine(
    _ x: UnsafePointer<Float>, ldx: Int, rows: Int, dim: Int, scale a: UnsafePointer<Float>?,
    inner u: UnsafePointer<Float>?, outer v: UnsafePointer<Float>?,
    into y: UnsafeMutablePointer<Float>
  ) {
    if evk_row_affine(y, x, rows, dim, ldx, a, u, v) != 0 { return }
    for r in 0..<rows {
      let s = a?[r] ?? 1
      let xr = x + r * ldx
      let yr = y + r * dim
      for k in 0..<dim {
        var t = xr[k]
        if let u { t += u[k] }
        t *= s
        if let v { t += v[k] }
        yr[k] = t
      }
    }
  }

  /// The post-attention residual step: `x[r] ← LayerNorm(x[r] + delta[r])`, rows of `dim`.
  /// When `addend` and `sum` are given it also writes `sum[r] = x[r] + addend[r]` from the
  /// normalised row, which is the "keys + positional encoding" the next attention needs.
  /// `rstd`, when given, receives each row's `1/√(variance + eps)`; `deltaBias` (dim values), when
  /// given, is added to every `delta` row.
  package static func residualLayerNorm(
    _ x: UnsafeMutablePointer<Float>, delta: UnsafePointer<Float>, rows: Int, dim: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float,
    addend: UnsafePointer<Float>? = nil, sum: UnsafeMutablePointer<Float>? = nil,
    rstd: UnsafeMutablePointer<Float>? = nil, deltaBias: UnsafePointer<Float>? = nil,
    serial: Bool = false
  ) {
    precondition(rows >= 0 && dim > 0, "RowOps.residualLayerNorm: bad geometry")
    precondition((addend == nil) == (sum == nil), "RowOps.residualLayerNorm: addend needs sum")
    Parallel.forRanges(count: rows, costPerItem: dim * 8, serial: serial) { range in
      let r0 = range.lowerBound
      if evk_residual_layernorm(
        x + r0 * dim, delta + r0 * dim, deltaBias, range.count, dim, weight, bias, eps,
        addend.map { $0 + r0 * dim }, sum.map { $0 + r0 * dim }, rstd.map { $0 + r0 }) != 0
      {
        return
      }
      for r in range {
        let p = x + r * dim
        let d = delta + r * dim
        for j in 0..<dim { p[j] += d[j] }
        if let deltaBias { for j in 0..<dim { p[j] += deltaBias[j] } }
        let inv = normalizeRow(p, p, dim: dim, weight: weight, bias: bias, eps: eps)
        rstd?[r] = inv
        if let addend, let sum {
          let a = addend + r * dim
          let s = sum + r * dim
          for j in 0..<dim { s[j] = p[j] + a[j] }
        }
      }
    }
  }

  /// The most rows `linearFewRows` takes.
  package static let fewRows = Int(EVK_FEW_ROWS)

  /// A linear layer's `outFeatures × inFeatures` weight packed for `linearFewRows`: strips
  /// of 32 outputs, each `inFeatures × 32`, zero-padded.
  package static func packForFewRows(
    _ weight: UnsafePointer<Float>, outFeatures: Int, inFeatures: Int
  ) -> [Float] {
    let count = (outFeatures + 31) / 32 * 32 * inFeatures
    return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
      evk_linear_pack(weight, outFeatures, inFeatures, buffer.baseAddress!)
      initialized = count
    }
  }

  /// A linear layer on a few rows (at most `EVK_FEW_ROWS`), `y[r] = act(x[r]·Wᵀ + b)` with W
  /// packed by `packForFewRows`, streaming W once (a GEMM would first pack all of it, which
  /// dominates at this size). Returns false, having done nothing, when the CPU lacks AVX2,
  /// there are too many rows, or `act` is neither identity nor ReLU: the caller then uses a GEMM.
  package static func linearFewRows(
    _ x: UnsafePointer<Float>, ldx: Int, rows: Int, inFeatures: Int,
    packedWeight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, outFeatures: Int,
    into y: UnsafeMutablePointer<Float>, ldy: Int, _ act: Activation
  ) -> Bool {
    guard act == .identity || act == .relu, rows >= 1, rows <= Int(EVK_FEW_ROWS),
      evk_available() != 0
    else {
      return false
    }
    // Only wide layers (the MLP's 2048 outputs) split their 32-output strips across the
    // threads: waking a thread costs about as much as 1 M multiply-adds here.
    let strips = (outFeatures + 31) / 32
    let serial = rows * inFeatures * outFeatures < 1 << 21
    Parallel.forRanges(count: strips, costPerItem: rows * inFeatures * 32, serial: serial) {
      range in
      let o0 = range.lowerBound * 32
      let done = evk_linear_few_rows(
        x, ldx, rows, inFeatures, packedWeight + o0 * inFeatures, bias.map { $0 + o0 },
        min(outFeatures - o0, range.count * 32), y + o0, ldy, act == .relu ? 1 : 0)
      precondition(done != 0, "RowOps.linearFewRows: kernel refused \(rows) rows")
    }
    return true
  }

  /// In place: `x[r][c] = act(x[r][c] + bias[c])` for `rows` runs of `cols` values `stride` apart.
  package static func biasActivation(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, stride: Int,
    bias: UnsafePointer<Float>?, _ act: Activation, serial: Bool = false
  ) {
    precondition(rows >= 0 && cols >= 0 && stride >= cols, "RowOps.biasActivation: bad geometry")
    guard bias != nil || act != .identity, cols > 0 else { return }
    Parallel.forRanges(count: rows, costPerItem: cols * act.cost, serial: serial) { range in
      for r in range {
        applyBiasVectorActivation(x + r * stride, count: cols, bias: bias, act)
      }
    }
  }

  /// In place: `x[r][c] = gelu(x[r][c] + bias[c])` (`RowOps.gelu`), `rows` runs of `cols`
  /// values `stride` apart. `serial` keeps the work on the calling thread.
  package static func biasGELU(
    _ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int, stride: Int,
    bias: UnsafePointer<Float>, serial: Bool = false
  ) {
    precondition(rows >= 0 && cols >= 0 && stride >= cols, "RowOps.biasGELU: bad geometry")
    Parallel.forRanges(count: rows, costPerItem: cols * 12, serial: serial) { range in
      for r in range {
        let p = x + r * stride
        // The vector twin of `gelu` (the same operations, bit for bit) when the CPU has one.
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
  package static func gelu(_ x: Float) -> Float {
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
  package static func add(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
    count: Int, serial: Bool = false
  ) {
    Parallel.forRanges(count: count, serial: serial) { range in
      for i in range { out[i] = a[i] + b[i] }
    }
  }

  /// Returns the row's `1/√(variance + eps)`.
  @inline(__always) @discardableResult
  private static func normalizeRow(
    _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, dim: Int,
    weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float
  ) -> Float {
    let mean = sum(x, dim) / Float(dim)
    let variance = sumSquaredDeviation(x, dim, from: mean) / Float(dim)
    let inv = 1 / (variance + eps).squareRoot()
    for j in 0..<dim { out[j] = (x[j] - mean) * inv * weight[j] + bias[j] }
    return inv
  }

  /// Separable linear resampling of `planes` contiguous planes of `rows.inputCount` ×
  /// `cols.inputCount` values: `out[p] = R · x[p] · Cᵀ`, R and C given by their taps.
  ///
  /// The horizontal pass runs first, on only the input rows some output row reads (for mask
  /// post-processing, the rows inside the image: the crop drops the rest), and the vertical
  /// pass then combines whole rows, which vectorises; planes go in groups so the intermediate
  /// stays small for large batches.
  package static func resample(
    _ x: UnsafePointer<Float>, planes: Int, rows: ResampleAxis, cols: ResampleAxis,
    into out: UnsafeMutablePointer<Float>
  ) {
    let (inH, inW) = (rows.inputCount, cols.inputCount)
    let (outH, outW) = (rows.outputCount, cols.outputCount)
    guard planes > 0, outH > 0, outW > 0 else { return }
    let first = rows.start.min()!
    let used = rows.start.max()! + rows.taps - first
    let group = max(1, min(planes, (1 << 22) / max(1, used * outW)))
    let tmp = UnsafeMutablePointer<Float>.allocate(capacity: group * used * outW)
    defer { tmp.deallocate() }
    rows.start.withUnsafeBufferPointer { rs in
      rows.weight.withUnsafeBufferPointer { rw in
        cols.start.withUnsafeBufferPointer { cs in
          cols.weight.withUnsafeBufferPointer { cw in
            let (rs, rw, cs, cw) = (
              rs.baseAddress!, rw.baseAddress!, cs.baseAddress!, cw.baseAddress!
            )
            for p0 in stride(from: 0, to: planes, by: group) {
              let count = min(group, planes - p0)
              // Horizontal: tmp[plane][r] = x[plane][first + r] · Cᵀ.
              Parallel.forRanges(count: count * used, costPerItem: outW * cols.taps) { range in
                for item in range {
                  let (plane, r) = item.quotientAndRemainder(dividingBy: used)
                  let src = x + ((p0 + plane) * inH + first + r) * inW
                  let dst = tmp + item * outW
                  switch cols.taps {
                  case 1:
                    for j in 0..<outW { dst[j] = cw[j] * src[cs[j]] }
                  case 2:
                    for j in 0..<outW {
                      let s = src + cs[j]
                      dst[j] = cw[2 * j] * s[0] + cw[2 * j + 1] * s[1]
                    }
                  case 3:
                    for j in 0..<outW {
                      let s = src + cs[j]
                      let w = cw + 3 * j
                      dst[j] = w[0] * s[0] + w[1] * s[1] + w[2] * s[2]
                    }
                  default:
                    for j in 0..<outW {
                      var v: Float = 0
                      for k in 0..<cols.taps { v += cw[j * cols.taps + k] * src[cs[j] + k] }
                      dst[j] = v
                    }
                  }
                }
              }
              // Vertical: whole rows of tmp, weighted.
              Parallel.forRanges(count: count * outH, costPerItem: outW * rows.taps) { range in
                for item in range {
                  let (plane, i) = item.quotientAndRemainder(dividingBy: outH)
                  let o = out + ((p0 + plane) * outH + i) * outW
                  let src = tmp + (plane * used + rs[i] - first) * outW
                  let w = rw + i * rows.taps
                  // One pass per output row for the usual 2 and 3 taps (the composite mask
                  // resize has at most 3), accumulated passes otherwise.
                  switch rows.taps {
                  case 2:
                    let (a, b) = (src, src + outW)
                    for j in 0..<outW { o[j] = w[0] * a[j] + w[1] * b[j] }
                  case 3:
                    let (a, b, c) = (src, src + outW, src + 2 * outW)
                    for j in 0..<outW { o[j] = w[0] * a[j] + w[1] * b[j] + w[2] * c[j] }
                  default:
                    for j in 0..<outW { o[j] = w[0] * src[j] }
                    for k in 1..<max(rows.taps, 1) {
                      let row = src + k * outW
                      for j in 0..<outW { o[j] += w[k] * row[j] }
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
}

/// One axis of a separable linear resampling: output `i` is
/// `Σ_{k < taps} weight[i·taps + k] · input[start[i] + k]`, with every tap inside the input.
package struct ResampleAxis: Sendable, Equatable {
  package let inputCount: Int
  package let taps: Int
  package let start: [Int]
  package let weight: [Float]

  package init(inputCount: Int, taps: Int, start: [Int], weight: [Float]) {
    precondition(taps >= 1 && weight.count == start.count * taps, "ResampleAxis: inconsistent taps")
    precondition(
      start.allSatisfy { $0 >= 0 && $0 + taps <= inputCount }, "ResampleAxis: tap outside the input"
    )
    self.inputCount = inputCount
    self.taps = taps
    self.start = start
    self.weight = weight
  }

  package var outputCount: Int { start.count }
}
