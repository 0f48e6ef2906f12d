import EVTensor
import Foundation

// The image encoder's differentiable ops: convolutions, BatchNorm in train and eval mode,
// the neck's bicubic resize and the two normalisations of LiteMLA's ReLU attention. The tests
// hold each backward against its float64 twin in `PlainGradients` and against central
// differences.

extension Tape {
  /// `nn.Conv2d` with symmetric `padding` on N × C × H × W; weight `[out, in/groups, k, k]`.
  package func conv2d(
    _ x: Variable, weight: Variable, bias: Variable?, stride: Int = 1, padding: Int,
    groups: Int = 1
  ) -> Variable {
    precondition(
      x.value.rank == 4 && weight.value.rank == 4, "conv2d: \(x.shape) * \(weight.shape)")
    let s = ConvGeometry(
      batch: x.shape[0], inChannels: x.shape[1], height: x.shape[2], width: x.shape[3],
      outChannels: weight.shape[0], kernel: weight.shape[2], stride: stride, padding: padding,
      groups: groups)
    precondition(
      weight.shape[1] * groups == s.inChannels && weight.shape[3] == s.kernel,
      "conv2d: input \(x.shape), weight \(weight.shape), groups \(groups)")
    // The forward pass is the inference engine's convolution (Winograd for the wide 3×3
    // ones); `Reference.conv2d` is its plain twin in the tests.
    let winograd = WinogradWeights.applies(
      kernelSize: s.kernel, stride: stride, padding: padding, groups: groups,
      inChannels: s.inChannels, outChannels: s.outChannels)
    let y =
      winograd
      ? conv2dWinograd(x.value, weights: WinogradWeights(weight: weight.value), bias: bias?.value)
      : EVTensor.conv2d(
        x.value, weight: weight.value, bias: bias?.value, stride: stride, padding: padding,
        groups: groups)
    return record(y, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
      g.withUnsafeBufferPointer { pg in
        if x.requiresGrad && winograd {
          // A 3×3 "same" convolution's input gradient is the 3×3 convolution of the output
          // gradient with the kernels flipped and their channels swapped.
          let dx = conv2dWinograd(
            Tensor(shape: y.shape, storage: g),
            weights: WinogradWeights(weight: Self.flippedTransposed(weight.value)), bias: nil)
          x.accumulate(dx.storage)
        } else if x.requiresGrad {
          var dx = [Float](repeating: 0, count: x.count)
          dx.withUnsafeMutableBufferPointer { pdx in
            weight.value.storage.withUnsafeBufferPointer { pw in
              ConvKernels.backwardInput(
                pg.baseAddress!, weight: pw.baseAddress!, s, into: pdx.baseAddress!)
            }
          }
          x.accumulate(dx)
        }
        let wantsBias = bias?.requiresGrad ?? false
        guard weight.requiresGrad || wantsBias else { return }
        var dw = [Float](repeating: 0, count: weight.count)
        var db = [Float](repeating: 0, count: s.outChannels)
        dw.withUnsafeMutableBufferPointer { pdw in
          db.withUnsafeMutableBufferPointer { pdb in
            x.value.storage.withUnsafeBufferPointer { px in
              ConvKernels.backwardWeight(
                pg.baseAddress!, px.baseAddress!, s, into: pdw.baseAddress!,
                bias: wantsBias ? pdb.baseAddress! : nil)
            }
          }
        }
        if weight.requiresGrad { weight.accumulate(dw) }
        if wantsBias { bias!.accumulate(db) }
      }
    }
  }

  /// `w[o, i, ky, kx]` → `w′[i, o, k−1−ky, k−1−kx]`.
  static func flippedTransposed(_ w: Tensor) -> Tensor {
    let (o, i, k) = (w.dim(0), w.dim(1), w.dim(2))
    var out = [Float](repeating: 0, count: w.count)
    for a in 0..<o {
      for b in 0..<i {
        for ky in 0..<k {
          for kx in 0..<k {
            out[((b * o + a) * k + (k - 1 - ky)) * k + (k - 1 - kx)] =
              w.storage[((a * i + b) * k + ky) * k + kx]
          }
        }
      }
    }
    return Tensor(shape: [i, o, k, k], storage: out)
  }

  /// `nn.BatchNorm2d`. In training it normalises with the batch's statistics (biased variance)
  /// and moves the running statistics towards them by `momentum`, the variance unbiased, as
  /// PyTorch does; in eval mode it uses the running statistics.
  package func batchNorm2d(
    _ x: Variable, weight: Variable, bias: Variable, running: BatchNormStatistics, eps: Float,
    momentum: Double = 0.1, training: Bool
  ) -> Variable {
    let (n, c, plane) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    let count = n * plane
    var mean = [Double](repeating: 0, count: c)
    var inverseStd = [Double](repeating: 0, count: c)
    x.value.storage.withUnsafeBufferPointer { px in
      for ch in 0..<c {
        if training {
          var sum = 0.0
          for b in 0..<n {
            let row = px.baseAddress! + (b * c + ch) * plane
            for i in 0..<plane { sum += Double(row[i]) }
          }
          let m = sum / Double(count)
          var squares = 0.0
          for b in 0..<n {
            let row = px.baseAddress! + (b * c + ch) * plane
            var partial = 0.0
            for i in 0..<plane {
              let d = Double(row[i]) - m
              partial += d * d
            }
            squares += partial
          }
          let variance = squares / Double(count)
          mean[ch] = m
          inverseStd[ch] = 1 / (variance + Double(eps)).squareRoot()
          running.moveTowards(
            channel: ch, mean: m, variance: variance, count: count, momentum: momentum)
        } else {
          mean[ch] = Double(running.mean.value.storage[ch])
          inverseStd[ch] =
            1 / (Double(running.variance.value.storage[ch]) + Double(eps)).squareRoot()
        }
      }
    }
    if training { running.countBatch() }
    let gamma = weight.value.storage
    let beta = bias.value.storage
    let y = Tensor(uninitializedShape: x.shape) { out in
      x.value.storage.withUnsafeBufferPointer { px in
        for b in 0..<n {
          for ch in 0..<c {
            let scale = Float(inverseStd[ch] * Double(gamma[ch]))
            let shift = Float(Double(beta[ch]) - mean[ch] * inverseStd[ch] * Double(gamma[ch]))
            let offset = (b * c + ch) * plane
            for i in 0..<plane { out[offset + i] = px[offset + i] * scale + shift }
          }
        }
      }
    }
    return record(y, inputs: [x, weight, bias]) { g in
      var dGamma = [Double](repeating: 0, count: c)
      var dBeta = [Double](repeating: 0, count: c)
      var dx = [Float](repeating: 0, count: x.count)
      x.value.storage.withUnsafeBufferPointer { px in
        g.withUnsafeBufferPointer { pg in
          for ch in 0..<c {
            let (m, inv) = (mean[ch], inverseStd[ch])
            var sumG = 0.0
            var sumGX = 0.0
            for b in 0..<n {
              let offset = (b * c + ch) * plane
              // In double, as PyTorch accumulates: these sums cancel over whole maps.
              for i in 0..<plane {
                let gi = Double(pg[offset + i])
                sumG += gi
                sumGX += gi * (Double(px[offset + i]) - m)
              }
            }
            // Σ g·x̂ = inv · Σ g·(x − mean)
            let sumGHat = sumGX * inv
            dGamma[ch] = sumGHat
            dBeta[ch] = sumG
            let scale = Double(gamma[ch]) * inv
            if training {
              // dx = γ·inv/M · (M·g − Σg − x̂·Σ g·x̂)
              let a = Float(scale)
              let meanG = Float(sumG / Double(count))
              let k = Float(scale * sumGHat * inv / Double(count))
              let mf = Float(m)
              for b in 0..<n {
                let offset = (b * c + ch) * plane
                for i in 0..<plane {
                  dx[offset + i] = a * (pg[offset + i] - meanG) - k * (px[offset + i] - mf)
                }
              }
            } else {
              let a = Float(scale)
              for b in 0..<n {
                let offset = (b * c + ch) * plane
                for i in 0..<plane { dx[offset + i] = a * pg[offset + i] }
              }
            }
          }
        }
      }
      x.accumulate(dx)
      weight.accumulate(dGamma)
      bias.accumulate(dBeta)
    }
  }

  /// `F.interpolate(mode="bicubic", align_corners=False)` (PyTorch's `upsample_bicubic2d`).
  package func resizeBicubic(_ x: Variable, height: Int, width: Int) -> Variable {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let rows = BicubicTaps(input: h, output: height)
    let columns = BicubicTaps(input: w, output: width)
    let planes = n * c
    let y = Tensor(uninitializedShape: [n, c, height, width]) { out in
      var across = [Float](repeating: 0, count: h * width)
      x.value.storage.withUnsafeBufferPointer { px in
        for p in 0..<planes {
          let src = px.baseAddress! + p * h * w
          for r in 0..<h { columns.apply(src + r * w, stride: 1, into: &across, at: r * width) }
          for ox in 0..<width {
            across.withUnsafeBufferPointer { a in
              rows.apply(
                a.baseAddress! + ox, stride: width, into: out, at: p * height * width + ox,
                step: width)
            }
          }
        }
      }
    }
    return record(y, inputs: [x]) { g in
      var dx = [Float](repeating: 0, count: x.count)
      var across = [Float](repeating: 0, count: h * width)
      for p in 0..<planes {
        for i in across.indices { across[i] = 0 }
        // Transposed: the gradient of each output row goes back to its four input rows, then
        // each column's to its four input columns.
        for oy in 0..<height {
          let (index, weight) = rows.taps[oy]
          for t in 0..<4 {
            let wt = Float(weight[t])
            let dst = index[t] * width
            let src = (p * height + oy) * width
            for ox in 0..<width { across[dst + ox] += wt * g[src + ox] }
          }
        }
        for r in 0..<h {
          for ox in 0..<width {
            let v = across[r * width + ox]
            let (index, weight) = columns.taps[ox]
            for t in 0..<4 { dx[(p * h + r) * w + index[t]] += Float(weight[t]) * v }
          }
        }
      }
      x.accumulate(dx)
    }
  }

  /// LiteMLA's linear-attention normalisation on `[…, d + 1, n]`: the first `d` rows divided
  /// by the last row (+ eps), `[…, d, n]`.
  package func divideByLastRow(_ x: Variable, eps: Float) -> Variable {
    let rows = x.shape[x.shape.count - 2]
    let n = x.shape.last!
    let d = rows - 1
    let groups = x.count / (rows * n)
    let xs = x.value.storage
    var y = [Float](repeating: 0, count: groups * d * n)
    for grp in 0..<groups {
      let base = grp * rows * n
      for r in 0..<d {
        for t in 0..<n {
          y[(grp * d + r) * n + t] = xs[base + r * n + t] / (xs[base + d * n + t] + eps)
        }
      }
    }
    let value = Tensor(shape: Array(x.shape.dropLast(2)) + [d, n], storage: y)
    return record(value, inputs: [x]) { g in
      var dx = [Float](repeating: 0, count: xs.count)
      for grp in 0..<groups {
        let base = grp * rows * n
        for t in 0..<n {
          let den = xs[base + d * n + t] + eps
          var dDen: Float = 0
          for r in 0..<d {
            let gi = g[(grp * d + r) * n + t]
            dx[base + r * n + t] = gi / den
            dDen -= gi * xs[base + r * n + t]
          }
          dx[base + d * n + t] = dDen / (den * den)
        }
      }
      x.accumulate(dx)
    }
  }

  /// LiteMLA's quadratic-attention normalisation on `[…, n, m]`: each column divided by its
  /// sum (+ eps).
  package func normalizeColumns(_ x: Variable, eps: Float) -> Variable {
    let rows = x.shape[x.shape.count - 2]
    let m = x.shape.last!
    let groups = x.count / (rows * m)
    let xs = x.value.storage
    var y = xs
    var sums = [Float](repeating: 0, count: groups * m)
    for grp in 0..<groups {
      let base = grp * rows * m
      for j in 0..<m {
        var s: Float = 0
        for i in 0..<rows { s += xs[base + i * m + j] }
        sums[grp * m + j] = s + eps
        for i in 0..<rows { y[base + i * m + j] /= s + eps }
      }
    }
    return record(Tensor(shape: x.shape, storage: y), inputs: [x]) { g in
      var dx = [Float](repeating: 0, count: xs.count)
      for grp in 0..<groups {
        let base = grp * rows * m
        for j in 0..<m {
          let s = sums[grp * m + j]
          var dot: Float = 0
          for i in 0..<rows { dot += g[base + i * m + j] * xs[base + i * m + j] }
          for i in 0..<rows { dx[base + i * m + j] = g[base + i * m + j] / s - dot / (s * s) }
        }
      }
      x.accumulate(dx)
    }
  }
}

/// The running statistics a BatchNorm reads in eval mode and updates in training: buffers,
/// never trained (`num_batches_tracked` counts the training passes, as PyTorch saves it).
package struct BatchNormStatistics {
  package var mean: Variable
  package var variance: Variable
  package var batchesTracked: Variable?

  package init(mean: Variable, variance: Variable, batchesTracked: Variable? = nil) {
    self.mean = mean
    self.variance = variance
    self.batchesTracked = batchesTracked
  }

  /// Moves channel `ch`'s statistics towards a batch's (`count` values, biased `variance`) by
  /// `momentum`, the variance made unbiased, as PyTorch's training pass does.
  func moveTowards(channel ch: Int, mean m: Double, variance: Double, count: Int, momentum: Double)
  {
    let unbiased = count > 1 ? variance * Double(count) / Double(count - 1) : variance
    let rm = Double(mean.value.storage[ch])
    let rv = Double(self.variance.value.storage[ch])
    mean.value.storage[ch] = Float(momentum * m + (1 - momentum) * rm)
    self.variance.value.storage[ch] = Float(momentum * unbiased + (1 - momentum) * rv)
  }

  /// One more training pass (`num_batches_tracked`).
  func countBatch() { batchesTracked?.value.storage[0] += 1 }
}

/// The four source indices (clamped into the input) and cubic-convolution weights (A = −0.75)
/// of every output index of PyTorch's `upsample_bicubic2d` with `align_corners=False`, as
/// `Reference.resizeBicubic` computes them.
struct BicubicTaps {
  let taps: [(index: [Int], weight: [Double])]

  init(input: Int, output: Int) {
    let a = -0.75
    func near(_ t: Double) -> Double { ((a + 2) * t - (a + 3)) * t * t + 1 }
    func far(_ t: Double) -> Double { ((a * t - 5 * a) * t + 8 * a) * t - 4 * a }
    let scale = Float(input) / Float(output)
    taps = (0..<output).map { dst in
      let real = scale * (Float(dst) + 0.5) - 0.5
      let i0 = min(Int(real.rounded(.down)), input - 1)
      let t = Double(min(max(real - Float(i0), 0), 1))
      return (
        (-1...2).map { min(max(i0 + $0, 0), input - 1) },
        [far(t + 1), near(t), near(1 - t), far(2 - t)]
      )
    }
  }

  /// Interpolates one line: `out[at + o·step] = Σ_t w_t · src[index_t · stride]`.
  func apply(
    _ src: UnsafePointer<Float>, stride: Int, into out: UnsafeMutableBufferPointer<Float>,
    at: Int, step: Int = 1
  ) {
    for (o, tap) in taps.enumerated() {
      var acc = 0.0
      for t in 0..<4 { acc += tap.weight[t] * Double(src[tap.index[t] * stride]) }
      out[at + o * step] = Float(acc)
    }
  }

  func apply(
    _ src: UnsafePointer<Float>, stride: Int, into out: inout [Float], at: Int, step: Int = 1
  ) {
    out.withUnsafeMutableBufferPointer { apply(src, stride: stride, into: $0, at: at, step: step) }
  }
}
