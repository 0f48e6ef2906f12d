/// nn.Conv2d on NCHW with symmetric zero padding and a fused bias + activation epilogue.
///
/// Three strategies, chosen by shape:
/// - few input channels per group (depthwise and near-depthwise): direct loops, one output plane
///   per task, spread over the cores;
/// - 1×1, stride 1, no padding: the input already is the GEMM operand, weight[O, C] × x[C, HW];
/// - everything else: im2col in row chunks (bounded memory) followed by one GEMM per chunk.
public func conv2d(
  _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, groups: Int = 1,
  activation: Activation = .identity
) -> Tensor {
  let g = ConvGeometry(x: x, weight: weight, stride: stride, padding: padding, groups: groups)
  if let bias {
    precondition(
      bias.count == g.outChannels,
      "conv2d: bias has \(bias.count) values for \(g.outChannels) output channels")
  }
  return Tensor(uninitializedShape: [g.batch, g.outChannels, g.outHeight, g.outWidth]) { out in
    guard out.count > 0 else { return }
    let dst = out.baseAddress!
    x.withUnsafeBufferPointer { px in
      weight.withUnsafeBufferPointer { pw in
        withOptionalPointer(bias) { pb in
          guard let src = px.baseAddress, let w = pw.baseAddress, g.reduction > 0 else {
            // Nothing to sum over: the output is bias (or zero) through the activation.
            for plane in 0..<(g.batch * g.outChannels) {
              let p = dst + plane * g.outPlane
              p.initialize(repeating: 0, count: g.outPlane)
              applyBiasActivation(
                p, count: g.outPlane, bias: pb?[plane % g.outChannels] ?? 0, activation)
            }
            return
          }
          if g.groups > 1 && g.inPerGroup <= 4 {
            convDirect(g, src, w, pb, dst, activation)
          } else {
            convGEMM(g, src, w, pb, activation, dst)
          }
        }
      }
    }
  }
}

/// Sizes of one conv2d call, validated once.
struct ConvGeometry {
  let batch, inChannels, height, width: Int
  let outChannels, inPerGroup, kernelH, kernelW: Int
  let stride, padding, groups: Int
  let outHeight, outWidth: Int

  var outPerGroup: Int { outChannels / groups }
  var reduction: Int { inPerGroup * kernelH * kernelW }
  var inPlane: Int { height * width }
  var outPlane: Int { outHeight * outWidth }

  init(x: Tensor, weight: Tensor, stride: Int, padding: Int, groups: Int) {
    precondition(x.rank == 4, "conv2d: input must be NCHW, got \(x.shape)")
    precondition(
      weight.rank == 4, "conv2d: weight must be [O, C/groups, kh, kw], got \(weight.shape)")
    precondition(
      stride >= 1 && padding >= 0 && groups >= 1,
      "conv2d: stride \(stride), padding \(padding), groups \(groups)")
    (batch, inChannels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    (outChannels, inPerGroup, kernelH, kernelW) = (
      weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3]
    )
    precondition(
      inChannels == inPerGroup * groups && outChannels % groups == 0,
      "conv2d: input \(x.shape) and weight \(weight.shape) do not fit groups=\(groups)")
    (self.stride, self.padding, self.groups) = (stride, padding, groups)
    let spanH = height + 2 * padding - kernelH
    let spanW = width + 2 * padding - kernelW
    precondition(
      spanH >= 0 && spanW >= 0,
      "conv2d: kernel \(kernelH)×\(kernelW) larger than padded input \(x.shape) (padding \(padding))"
    )
    outHeight = spanH / stride + 1
    outWidth = spanW / stride + 1
  }

  /// Output columns `ox` whose input column `ox·stride − padding + kx` lies inside the image.
  @inline(__always)
  func validColumns(kx: Int) -> Range<Int> {
    let lo = max(0, ceilDiv(padding - kx, stride))
    let hi = min(
      outWidth, (width - 1 + padding - kx) >= 0 ? (width - 1 + padding - kx) / stride + 1 : 0)
    return lo..<max(lo, hi)
  }
}

@inline(__always)
func ceilDiv(_ a: Int, _ b: Int) -> Int {
  a <= 0 ? -((-a) / b) : (a + b - 1) / b
}

/// Direct convolution for grouped convs with few input channels per group (depthwise above all),
/// where im2col + GEMM would spend its time packing tiny matrices. One output plane per task.
///
/// Each input plane is first rewritten as zero-padded "phase planes": for stride s, phase (a, b)
/// holds padded pixels (i·s + a, j·s + b). Every tap (ky, kx) then reads one phase plane at a
/// constant offset from the output position, so a tap is a single long contiguous loop over the
/// whole output grid (rows laid out with the phase width; the few extra columns are discarded).
/// Long branch-free loops vectorise well, where per-row loops over 16–64 pixels would not.
private func convDirect(
  _ g: ConvGeometry, _ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
  _ bias: UnsafePointer<Float>?, _ dst: UnsafeMutablePointer<Float>, _ act: Activation
) {
  let s = g.stride
  let phaseH = (g.height + 2 * g.padding + s - 1) / s
  let phaseW = (g.width + 2 * g.padding + s - 1) / s
  // Taps may read up to (kw − 1)/s elements past the last phase row; that slack stays zero.
  let phaseSize = phaseH * phaseW + g.kernelW
  let phasesPerInput = s * s
  let gridCount = g.outHeight * phaseW
  let tapCount = g.reduction
  Parallel.forRanges(
    count: g.batch * g.outChannels, costPerItem: g.outPlane * g.reduction + g.inPlane * g.inPerGroup
  ) { planes in
    let phases = UnsafeMutablePointer<Float>.allocate(
      capacity: g.inPerGroup * phasesPerInput * phaseSize)
    let grid = UnsafeMutablePointer<Float>.allocate(capacity: gridCount)
    let tapSource = UnsafeMutablePointer<UnsafePointer<Float>>.allocate(capacity: tapCount)
    defer {
      phases.deallocate()
      grid.deallocate()
      tapSource.deallocate()
    }
    for plane in planes {
      let n = plane / g.outChannels
      let oc = plane % g.outChannels
      let firstIn = (oc / g.outPerGroup) * g.inPerGroup
      for ci in 0..<g.inPerGroup {
        let input = src + (n * g.inChannels + firstIn + ci) * g.inPlane
        for a in 0..<s {
          for b in 0..<s {
            let phase = phases + (ci * phasesPerInput + a * s + b) * phaseSize
            fillPhase(g, input, a: a, b: b, phaseH: phaseH, phaseW: phaseW, phase)
            (phase + phaseH * phaseW).initialize(repeating: 0, count: g.kernelW)
          }
        }
      }
      var t = 0
      for ci in 0..<g.inPerGroup {
        for ky in 0..<g.kernelH {
          for kx in 0..<g.kernelW {
            let phase = phases + (ci * phasesPerInput + (ky % s) * s + kx % s) * phaseSize
            tapSource[t] = UnsafePointer(phase + (ky / s) * phaseW + kx / s)
            t += 1
          }
        }
      }
      accumulateTaps(
        grid, count: gridCount, sources: tapSource, weights: w + oc * tapCount, taps: tapCount)
      let out = dst + plane * g.outPlane
      let beta = bias?[oc] ?? 0
      for oy in 0..<g.outHeight {
        storeBiasActivation(
          out + oy * g.outWidth, from: grid + oy * phaseW, count: g.outWidth, bias: beta, act)
      }
    }
  }
}

/// Phase (a, b) of the zero-padded input plane: phase[i, j] = padded[i·s + a, j·s + b].
@inline(__always)
private func fillPhase(
  _ g: ConvGeometry, _ input: UnsafePointer<Float>, a: Int, b: Int, phaseH: Int, phaseW: Int,
  _ phase: UnsafeMutablePointer<Float>
) {
  let s = g.stride
  // Columns j with 0 ≤ j·s + b − padding < width.
  let lo = min(phaseW, max(0, ceilDiv(g.padding - b, s)))
  let hiRaw = g.width - 1 + g.padding - b
  let hi = max(lo, min(phaseW, hiRaw >= 0 ? hiRaw / s + 1 : 0))
  for i in 0..<phaseH {
    let row = phase + i * phaseW
    let y = i * s + a - g.padding
    guard y >= 0 && y < g.height else {
      row.initialize(repeating: 0, count: phaseW)
      continue
    }
    let inRow = input + y * g.width + b - g.padding
    for j in 0..<lo { row[j] = 0 }
    if s == 1 {
      (row + lo).initialize(from: inRow + lo, count: hi - lo)
    } else {
      for j in lo..<hi { row[j] = inRow[j * s] }
    }
    for j in hi..<phaseW { row[j] = 0 }
  }
}

/// grid[i] = Σ_t weights[t]·sources[t][i], four taps per pass to cut load/store traffic on grid.
@inline(__always)
private func accumulateTaps(
  _ grid: UnsafeMutablePointer<Float>, count: Int,
  sources: UnsafeMutablePointer<UnsafePointer<Float>>,
  weights: UnsafePointer<Float>, taps: Int
) {
  grid.initialize(repeating: 0, count: count)
  var t = 0
  while t + 4 <= taps {
    let (p0, p1, p2, p3) = (sources[t], sources[t + 1], sources[t + 2], sources[t + 3])
    let (w0, w1, w2, w3) = (weights[t], weights[t + 1], weights[t + 2], weights[t + 3])
    for i in 0..<count { grid[i] += (w0 * p0[i] + w1 * p1[i]) + (w2 * p2[i] + w3 * p3[i]) }
    t += 4
  }
  while t < taps {
    let (p0, w0) = (sources[t], weights[t])
    for i in 0..<count { grid[i] += w0 * p0[i] }
    t += 1
  }
}

/// Convolution as GEMM: out[og, pixels] = W_g[og, C_g·kh·kw] × columns[C_g·kh·kw, pixels],
/// with bias and activation applied by the product to each chunk of rows as it is finished
/// (fused into the AVX-512 kernel; a pass per chunk, while it is in cache, elsewhere).
private func convGEMM(
  _ g: ConvGeometry, _ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
  _ bias: UnsafePointer<Float>?, _ activation: Activation, _ dst: UnsafeMutablePointer<Float>
) {
  let k = g.reduction
  let og = g.outPerGroup
  let pointwise = g.kernelH == 1 && g.kernelW == 1 && g.stride == 1 && g.padding == 0
  if pointwise {
    for n in 0..<g.batch {
      for grp in 0..<g.groups {
        BLAS.sgemm(
          transA: false, transB: false, m: og, n: g.outPlane, k: k, alpha: 1,
          a: w + grp * og * k, lda: k,
          b: src + (n * g.inChannels + grp * g.inPerGroup) * g.inPlane, ldb: g.inPlane,
          beta: 0, c: dst + (n * g.outChannels + grp * og) * g.outPlane, ldc: g.outPlane,
          rowBias: bias.map { $0 + grp * og }, activation: activation)
      }
    }
    return
  }
  // The column buffer holds whole output rows; cap it near 16 MB so large images stay cheap.
  let budget = 4 << 20
  let maxRows = max(1, min(g.outHeight, budget / max(1, k * g.outWidth)))
  // Equal chunks: a small leftover chunk would make a narrow GEMM that runs far below peak.
  let chunks = (g.outHeight + maxRows - 1) / maxRows
  let rowsPerChunk = (g.outHeight + chunks - 1) / chunks
  let columns = UnsafeMutablePointer<Float>.allocate(capacity: k * rowsPerChunk * g.outWidth)
  defer { columns.deallocate() }
  let validCols = (0..<g.kernelW).map { g.validColumns(kx: $0) }
  for n in 0..<g.batch {
    for grp in 0..<g.groups {
      let input = src + (n * g.inChannels + grp * g.inPerGroup) * g.inPlane
      var r0 = 0
      while r0 < g.outHeight {
        let rows = min(rowsPerChunk, g.outHeight - r0)
        let pixels = rows * g.outWidth
        im2col(g, input, rows: r0..<(r0 + rows), validCols, columns)
        BLAS.sgemm(
          transA: false, transB: false, m: og, n: pixels, k: k, alpha: 1,
          a: w + grp * og * k, lda: k, b: columns, ldb: pixels,
          beta: 0, c: dst + (n * g.outChannels + grp * og) * g.outPlane + r0 * g.outWidth,
          ldc: g.outPlane, rowBias: bias.map { $0 + grp * og }, activation: activation)
        r0 += rows
      }
    }
  }
}

/// Fills columns[(ci·kh + ky)·kw + kx, (oy − rows.start)·Wo + ox] with the input pixel that tap
/// (ky, kx) of output (oy, ox) reads, or 0 in the padding.
private func im2col(
  _ g: ConvGeometry, _ input: UnsafePointer<Float>, rows: Range<Int>, _ validCols: [Range<Int>],
  _ columns: UnsafeMutablePointer<Float>
) {
  let pixels = rows.count * g.outWidth
  let taps = g.kernelH * g.kernelW
  Parallel.forEach(count: g.reduction, costPerItem: pixels) { q in
    let ci = q / taps
    let ky = (q % taps) / g.kernelW
    let kx = q % g.kernelW
    let plane = input + ci * g.inPlane
    let cols = validCols[kx]
    let shift = kx - g.padding
    var d = columns + q * pixels
    for oy in rows {
      let iy = oy * g.stride - g.padding + ky
      if iy < 0 || iy >= g.height || cols.isEmpty {
        d.initialize(repeating: 0, count: g.outWidth)
      } else {
        let inRow = plane + iy * g.width
        for ox in 0..<cols.lowerBound { d[ox] = 0 }
        if g.stride == 1 {
          (d + cols.lowerBound).initialize(from: inRow + cols.lowerBound + shift, count: cols.count)
        } else {
          for ox in cols { d[ox] = inRow[ox * g.stride + shift] }
        }
        for ox in cols.upperBound..<g.outWidth { d[ox] = 0 }
      }
      d += g.outWidth
    }
  }
}

/// nn.ConvTranspose2d with kernel 2 and stride 2: each input pixel spreads to a 2×2 output block,
/// so it is one GEMM, Wᵀ[Cout·4, Cin] × x[Cin, HW], then a scatter into the interleaved output.
public func convTranspose2x2(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
  precondition(x.rank == 4, "convTranspose2x2: input must be NCHW, got \(x.shape)")
  let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  precondition(
    weight.rank == 4 && weight.shape[0] == cin && weight.shape[2] == 2 && weight.shape[3] == 2,
    "convTranspose2x2: weight must be [\(cin), Cout, 2, 2], got \(weight.shape)")
  let cout = weight.shape[1]
  if let bias {
    precondition(
      bias.count == cout, "convTranspose2x2: bias has \(bias.count) values for \(cout) channels")
  }
  let hw = h * w
  return Tensor(uninitializedShape: [n, cout, 2 * h, 2 * w]) { out in
    guard out.count > 0 else { return }
    let dst = out.baseAddress!
    let blocks = UnsafeMutablePointer<Float>.allocate(capacity: cout * 4 * hw)
    defer { blocks.deallocate() }
    x.withUnsafeBufferPointer { px in
      weight.withUnsafeBufferPointer { pw in
        withOptionalPointer(bias) { pb in
          for b in 0..<n {
            if cin == 0 {
              blocks.initialize(repeating: 0, count: cout * 4 * hw)
            } else {
              BLAS.sgemm(
                transA: true, transB: false, m: cout * 4, n: hw, k: cin, alpha: 1,
                a: pw.baseAddress!, lda: cout * 4, b: px.baseAddress! + b * cin * hw, ldb: hw,
                beta: 0, c: blocks, ldc: hw)
            }
            Parallel.forEach(count: cout, costPerItem: 4 * hw) { co in
              let beta = pb?[co] ?? 0
              let plane = dst + (b * cout + co) * 4 * hw
              for dy in 0..<2 {
                for dx in 0..<2 {
                  let s = blocks + (co * 4 + dy * 2 + dx) * hw
                  for y in 0..<h {
                    let row = plane + (2 * y + dy) * 2 * w + dx
                    let sr = s + y * w
                    for xx in 0..<w { row[2 * xx] = sr[xx] + beta }
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

/// Folds eval-mode BatchNorm into the conv before it. The scale is formed in Double so the folded
/// weights are the correctly rounded values of the exact product.
public func foldBatchNorm(
  weight: Tensor, bias: Tensor?, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor,
  eps: Float
) -> (weight: Tensor, bias: Tensor) {
  precondition(
    weight.rank >= 1, "foldBatchNorm: weight needs an output dimension, got \(weight.shape)")
  let o = weight.shape[0]
  for (name, t) in [("gamma", gamma), ("beta", beta), ("mean", mean), ("variance", variance)] {
    precondition(
      t.count == o, "foldBatchNorm: \(name) has \(t.count) values for \(o) output channels")
  }
  if let bias {
    precondition(
      bias.count == o, "foldBatchNorm: bias has \(bias.count) values for \(o) output channels")
  }
  let per = weight.count / max(o, 1)
  var w = weight
  var b = [Float](repeating: 0, count: o)
  for c in 0..<o {
    let scale = Double(gamma.storage[c]) / (Double(variance.storage[c]) + Double(eps)).squareRoot()
    for i in (c * per)..<((c + 1) * per) {
      w.storage[i] = Float(Double(weight.storage[i]) * scale)
    }
    let b0 = Double(bias?.storage[c] ?? 0)
    b[c] = Float((b0 - Double(mean.storage[c])) * scale + Double(beta.storage[c]))
  }
  return (w, Tensor(shape: [o], storage: b))
}
