/// F.interpolate(align_corners=False) for NCHW, bit-for-bit in PyTorch's arithmetic: source
/// coordinates, tap indices and weights are formed in Float exactly as upsample_bicubic2d /
/// upsample_bilinear2d form them, and each output is Σ_y wy·(Σ_x wx·v) summed in tap order.
/// A horizontal pass produces the inner sums for every input row once, then a vertical pass
/// combines rows; this is the same arithmetic, done without recomputing the inner sums.

/// Per-output-position taps of a separable 1-D interpolation.
struct InterpolationTaps {
  let taps: Int
  var index: [Int]
  var weight: [Float]

  /// PyTorch's cubic convolution with A = −0.75; source index clamped into [0, input − 1].
  static func bicubic(input: Int, output: Int) -> InterpolationTaps {
    let a: Float = -0.75
    let scale = Float(input) / Float(output)
    var t = InterpolationTaps(taps: 4, index: [], weight: [])
    t.index.reserveCapacity(4 * output)
    t.weight.reserveCapacity(4 * output)
    for dst in 0..<output {
      let real = scale * (Float(dst) + 0.5) - 0.5
      let i0 = min(Int(real.rounded(.down)), input - 1)
      let lambda = min(max(real - Float(i0), 0), 1)
      let x1 = lambda
      let x2 = 1 - lambda
      t.weight += [
        cubicFar(x1 + 1, a), cubicNear(x1, a), cubicNear(x2, a), cubicFar(x2 + 1, a),
      ]
      for j in 0..<4 { t.index.append(max(min(i0 - 1 + j, input - 1), 0)) }
    }
    return t
  }

  /// Linear interpolation; negative source coordinates clamp to 0, and equal sizes copy.
  static func bilinear(input: Int, output: Int) -> InterpolationTaps {
    var t = InterpolationTaps(taps: 2, index: [], weight: [])
    t.index.reserveCapacity(2 * output)
    t.weight.reserveCapacity(2 * output)
    let scale = Float(input) / Float(output)
    for dst in 0..<output {
      if input == output {
        t.index += [dst, dst]
        t.weight += [1, 0]
        continue
      }
      let real = max(scale * (Float(dst) + 0.5) - 0.5, 0)
      let i0 = min(Int(real.rounded(.down)), input - 1)
      let lambda1 = min(max(real - Float(i0), 0), 1)
      let i1 = i0 + (i0 < input - 1 ? 1 : 0)
      t.index += [i0, i1]
      t.weight += [1 - lambda1, lambda1]
    }
    return t
  }
}

/// Weight of the two inner taps, |x| ≤ 1.
@inline(__always)
func cubicNear(_ x: Float, _ a: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }

/// Weight of the two outer taps, 1 ≤ |x| ≤ 2.
@inline(__always)
func cubicFar(_ x: Float, _ a: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }

public func resizeBicubic(_ x: Tensor, height: Int, width: Int) -> Tensor {
  precondition(
    x.rank == 4 && height > 0 && width > 0, "resizeBicubic: input \(x.shape) to \(height)×\(width)")
  precondition(x.shape[2] > 0 && x.shape[3] > 0, "resizeBicubic: empty input \(x.shape)")
  return separableResize(
    x, rows: .bicubic(input: x.shape[2], output: height),
    columns: .bicubic(input: x.shape[3], output: width))
}

public func resizeBilinear(_ x: Tensor, height: Int, width: Int) -> Tensor {
  precondition(
    x.rank == 4 && height > 0 && width > 0, "resizeBilinear: input \(x.shape) to \(height)×\(width)"
  )
  precondition(x.shape[2] > 0 && x.shape[3] > 0, "resizeBilinear: empty input \(x.shape)")
  return separableResize(
    x, rows: .bilinear(input: x.shape[2], output: height),
    columns: .bilinear(input: x.shape[3], output: width))
}

private func separableResize(_ x: Tensor, rows: InterpolationTaps, columns: InterpolationTaps)
  -> Tensor
{
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  let ho = rows.index.count / rows.taps
  let wo = columns.index.count / columns.taps
  let (tx, ty) = (columns.taps, rows.taps)
  let planes = n * c
  // Tasks are (plane, block of output rows), so a single large mask still uses every core.
  // A block only needs the horizontal sums of the input rows its taps touch.
  let blocksPerPlane = max(1, min(ho, (2 * Parallel.cores + planes - 1) / planes))
  let rowsPerBlock = (ho + blocksPerPlane - 1) / blocksPerPlane
  return Tensor(uninitializedShape: [n, c, ho, wo]) { out in
    guard out.count > 0 else { return }
    x.withUnsafeBufferPointer { px in
      rows.index.withUnsafeBufferPointer { ry in
        rows.weight.withUnsafeBufferPointer { wy in
          columns.index.withUnsafeBufferPointer { cx in
            columns.weight.withUnsafeBufferPointer { wx in
              let (src, dst) = (px.baseAddress!, out.baseAddress!)
              let (ry, wy, cx, wx) = (
                ry.baseAddress!, wy.baseAddress!, cx.baseAddress!, wx.baseAddress!
              )
              let work = (h * tx + ho * ty) * wo / blocksPerPlane
              Parallel.forEach(count: planes * blocksPerPlane, costPerItem: work) { task in
                let plane = task / blocksPerPlane
                let oy0 = (task % blocksPerPlane) * rowsPerBlock
                let oy1 = min(ho, oy0 + rowsPerBlock)
                guard oy0 < oy1 else { return }
                // Tap indices never decrease with the output row, so this is the rows' span.
                let firstRow = ry[oy0 * ty]
                let lastRow = ry[(oy1 - 1) * ty + ty - 1]
                let input = src + plane * h * w
                let output = dst + plane * ho * wo
                withUnsafeTemporaryAllocation(
                  of: Float.self, capacity: (lastRow - firstRow + 1) * wo
                ) { scratch in
                  // Horizontal pass: inner sums for the input rows this block reads.
                  let horizontal = scratch.baseAddress!
                  for y in firstRow...lastRow {
                    let s = input + y * w
                    let d = horizontal + (y - firstRow) * wo
                    for ox in 0..<wo {
                      let base = ox * tx
                      var acc = s[cx[base]] * wx[base]
                      for j in 1..<tx { acc += s[cx[base + j]] * wx[base + j] }
                      d[ox] = acc
                    }
                  }
                  // Vertical pass, in the same tap order as PyTorch's outer sum.
                  for oy in oy0..<oy1 {
                    let d = output + oy * wo
                    let base = oy * ty
                    let r0 = horizontal + (ry[base] - firstRow) * wo
                    let w0 = wy[base]
                    for ox in 0..<wo { d[ox] = r0[ox] * w0 }
                    for j in 1..<ty {
                      let r = horizontal + (ry[base + j] - firstRow) * wo
                      let wj = wy[base + j]
                      for ox in 0..<wo { d[ox] += r[ox] * wj }
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
