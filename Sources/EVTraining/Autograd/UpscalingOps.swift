import EVTensor

// `nn.ConvTranspose2d(kernel 2, stride 2)`, SAM's upscaling: every input pixel makes its own
// 2×2 block of output pixels, out[co, 2y+dy, 2x+dx] = Σ_ci x[ci, y, x]·W[ci, co, dy, dx] + b[co],
// so with the weight laid out as one `cin × 4·cout` matrix (columns tap-major, tap = dy·2+dx)
// the whole convolution is one product per image.

extension Tape {
  /// The convolution on N × C × H × W: per image one product `W_rᵀ·X` (4·cout × pixels), its
  /// rows spread to every other row and column of the output.
  package func convTranspose2x2(_ x: Variable, weight: Variable, bias: Variable) -> Variable {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let cout = weight.shape[1]
    let hw = h * w
    let taps = Upscaling.packTaps(weight.value, cin: cin, cout: cout)
    let y = Tensor(uninitializedShape: [n, cout, 2 * h, 2 * w]) { out in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * cout * hw) { scratch in
        let sums = scratch.baseAddress!
        x.value.withUnsafeBufferPointer { px in
          bias.value.withUnsafeBufferPointer { pb in
            for b in 0..<n {
              Products.gemm(
                taps, px.baseAddress! + b * cin * hw, into: sums, m: 4 * cout, n: hw, k: cin,
                transA: true, accumulate: false)
              Upscaling.interleave(
                sums, into: out.baseAddress! + b * cout * 4 * hw, cout: cout, h: h, w: w,
                bias: pb.baseAddress!)
            }
          }
        }
      }
    }
    return record(y, inputs: [x, weight, bias]) { g in
      var dTaps = [Float](repeating: 0, count: cin * 4 * cout)
      var db = [Double](repeating: 0, count: cout)
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * cout * hw) { scratch in
        let gathered = scratch.baseAddress!
        g.withUnsafeBufferPointer { gp in
          x.value.withUnsafeBufferPointer { px in
            dTaps.withUnsafeMutableBufferPointer { dt in
              x.addToGradient { dx, fresh in
                if fresh { dx.initialize(repeating: 0, count: n * cin * hw) }
              }
              for b in 0..<n {
                // The output gradient at each tap's positions, (tap, cout) × pixels.
                Upscaling.deinterleave(
                  gp.baseAddress! + b * cout * 4 * hw, into: gathered, cout: cout, h: h, w: w)
                for co in 0..<cout {
                  for t in 0..<4 {
                    db[co] += Double(Loops.sum(gathered + (t * cout + co) * hw, hw))
                  }
                }
                x.addToGradient { dx, _ in
                  Products.gemm(
                    taps, gathered, into: dx + b * cin * hw, m: cin, n: hw, k: 4 * cout,
                    accumulate: true)
                }
                if weight.requiresGrad {
                  Products.gemm(
                    px.baseAddress! + b * cin * hw, gathered, into: dt.baseAddress!, m: cin,
                    n: 4 * cout, k: hw, transB: true, accumulate: true)
                }
              }
            }
          }
        }
      }
      weight.accumulate(Upscaling.unpackTaps(dTaps, cin: cin, cout: cout))
      bias.accumulate(db)
    }
  }

  /// The same convolution on channels-last pixels: `x` is `[B, P, cin]` (P pixels in any
  /// order), the output `[B, 4·P, cout]` holds each input pixel's 2×2 block as four
  /// consecutive rows (tap dy·2 + dx). Every output pixel depends on one input pixel only, so
  /// a chain of these convolutions (SAM's two) needs no reordering in between; the pixels are
  /// put in image order once at the end. One product for the whole batch, no scatter; the
  /// LayerNorm between SAM's two convolutions then runs over contiguous channels.
  package func convTranspose2x2ChannelsLast(_ x: Variable, weight: Variable, bias: Variable)
    -> Variable
  {
    let (b, p, cin) = (x.dim(0), x.dim(1), x.dim(2))
    let cout = weight.shape[1]
    precondition(weight.shape == [cin, cout, 2, 2], "convTranspose2x2: weight \(weight.shape)")
    let rows = b * p
    let taps = Upscaling.packTaps(weight.value, cin: cin, cout: cout)
    let tiledBias = Array(repeatElement(bias.value.storage, count: 4).joined())
    let y = Tensor(uninitializedShape: [b, 4 * p, cout]) { out in
      x.value.withUnsafeBufferPointer { px in
        Products.gemm(
          px.baseAddress!, taps, into: out.baseAddress!, m: rows, n: 4 * cout, k: cin,
          accumulate: false)
      }
      Products.addRowVector(tiledBias, to: out.baseAddress!, rows: rows, cols: 4 * cout)
    }
    return record(y, inputs: [x, weight, bias]) { g in
      g.withUnsafeBufferPointer { gp in
        let g = gp.baseAddress!
        // dX = G·W_rᵀ; dW_r = Xᵀ·G; db = Σ over rows and taps.
        x.addToGradient { dx, fresh in
          Products.gemm(
            g, taps, into: dx, m: rows, n: cin, k: 4 * cout, transB: true, accumulate: !fresh)
        }
        if weight.requiresGrad {
          let dTaps = x.value.withUnsafeBufferPointer { px in
            [Float](unsafeUninitializedCapacity: cin * 4 * cout) { buffer, count in
              Products.gemm(
                px.baseAddress!, g, into: buffer.baseAddress!, m: cin, n: 4 * cout, k: rows,
                transA: true, accumulate: false)
              count = cin * 4 * cout
            }
          }
          weight.accumulate(Upscaling.unpackTaps(dTaps, cin: cin, cout: cout))
        }
        bias.addToZeroedGradient { db in
          var tapSums = [Float](repeating: 0, count: 4 * cout)
          tapSums.withUnsafeMutableBufferPointer { sums in
            Loops.addColumnSums(g, rows: rows, cols: 4 * cout, into: sums.baseAddress!)
          }
          for t in 0..<4 {
            for co in 0..<cout { db[co] += tapSums[t * cout + co] }
          }
        }
      }
    }
  }
}

/// The weight layouts and pixel orders of the 2×2 transposed convolution.
enum Upscaling {
  /// `[cin, cout, 2, 2]` → `cin × 4·cout`, column `tap·cout + co`.
  static func packTaps(_ weight: Tensor, cin: Int, cout: Int) -> [Float] {
    var packed = [Float](repeating: 0, count: cin * 4 * cout)
    for ci in 0..<cin {
      for co in 0..<cout {
        for t in 0..<4 {
          packed[ci * 4 * cout + t * cout + co] = weight.storage[(ci * cout + co) * 4 + t]
        }
      }
    }
    return packed
  }

  /// The inverse of `packTaps`.
  static func unpackTaps(_ packed: [Float], cin: Int, cout: Int) -> [Float] {
    var weight = [Float](repeating: 0, count: cin * 4 * cout)
    for ci in 0..<cin {
      for co in 0..<cout {
        for t in 0..<4 { weight[(ci * cout + co) * 4 + t] = packed[ci * 4 * cout + t * cout + co] }
      }
    }
    return weight
  }

  /// Rows (tap, co) of `sums` (each h·w pixels) to the NCHW output of one image, plus bias.
  static func interleave(
    _ sums: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, cout: Int, h: Int, w: Int,
    bias: UnsafePointer<Float>
  ) {
    Parallel.forRanges(count: cout, costPerItem: 4 * h * w) { channels in
      for co in channels {
        for t in 0..<4 {
          let (dy, dx) = (t / 2, t % 2)
          let src = sums + (t * cout + co) * h * w
          let b = bias[co]
          for y in 0..<h {
            let row = out + (co * 2 * h + 2 * y + dy) * 2 * w + dx
            let s = src + y * w
            for x in 0..<w { row[2 * x] = s[x] + b }
          }
        }
      }
    }
  }

  /// The inverse gather: the NCHW gradient of one image to rows (tap, co) of h·w pixels.
  static func deinterleave(
    _ grad: UnsafePointer<Float>, into gathered: UnsafeMutablePointer<Float>, cout: Int, h: Int,
    w: Int
  ) {
    Parallel.forRanges(count: cout, costPerItem: 4 * h * w) { channels in
      for co in channels {
        for t in 0..<4 {
          let (dy, dx) = (t / 2, t % 2)
          let dst = gathered + (t * cout + co) * h * w
          for y in 0..<h {
            let row = grad + (co * 2 * h + 2 * y + dy) * 2 * w + dx
            let d = dst + y * w
            for x in 0..<w { d[x] = row[2 * x] }
          }
        }
      }
    }
  }
}
