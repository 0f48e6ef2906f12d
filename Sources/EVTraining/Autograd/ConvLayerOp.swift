import EVTensor

/// A BatchNorm's learned scale and shift, its running statistics and settings.
package struct BatchNormParameters {
  package var weight: Variable
  package var bias: Variable
  package var running: BatchNormStatistics
  package var eps: Float
  package var momentum = 0.1

  package init(weight: Variable, bias: Variable, running: BatchNormStatistics, eps: Float) {
    self.weight = weight
    self.bias = bias
    self.running = running
    self.eps = eps
  }
}

extension Tape {
  /// efficientvit's `ConvLayer` — convolution (+ bias), BatchNorm, activation — as one op
  /// that keeps only the convolution's output and works channel by channel on all cores.
  /// It computes what `conv2d`, `batchNorm2d` and `activation` compute one after the other;
  /// the tests hold it against that composition.
  package func convLayer(
    _ x: Variable, weight: Variable, bias: Variable?, norm: BatchNormParameters?,
    activation: Activation, stride: Int = 1, padding: Int, groups: Int = 1, training: Bool
  ) -> Variable {
    let z = conv2d(x, weight: weight, bias: bias, stride: stride, padding: padding, groups: groups)
    if norm == nil && activation == .identity { return z }
    let (n, c, plane) = (z.shape[0], z.shape[1], z.shape[2] * z.shape[3])
    let count = n * plane
    // Per channel: u = z·scale + shift, with (mean, 1/σ) from the batch or the running stats.
    var mean = [Double](repeating: 0, count: c)
    var inverseStd = [Double](repeating: 1, count: c)
    var scale = [Float](repeating: 1, count: c)
    var shift = [Float](repeating: 0, count: c)
    if let norm {
      // (mean, biased variance) per channel: the batch's in training, else the running ones.
      var stats = [(mean: Double, variance: Double)](repeating: (0, 1), count: c)
      if training {
        z.value.storage.withUnsafeBufferPointer { pz in
          stats.withUnsafeMutableBufferPointer { ps in
            Parallel.forRanges(count: c, costPerItem: 2 * count) { channels in
              for ch in channels {
                ps[ch] = Self.channelStatistics(
                  pz.baseAddress!, channel: ch, channels: c, batch: n, plane: plane)
              }
            }
          }
        }
        for ch in 0..<c {
          norm.running.moveTowards(
            channel: ch, mean: stats[ch].mean, variance: stats[ch].variance, count: count,
            momentum: norm.momentum)
        }
        norm.running.countBatch()
      } else {
        for ch in 0..<c {
          stats[ch] = (
            Double(norm.running.mean.value.storage[ch]),
            Double(norm.running.variance.value.storage[ch])
          )
        }
      }
      for ch in 0..<c {
        mean[ch] = stats[ch].mean
        inverseStd[ch] = 1 / (stats[ch].variance + Double(norm.eps)).squareRoot()
      }
      for ch in 0..<c {
        let gamma = Double(norm.weight.value.storage[ch])
        scale[ch] = Float(inverseStd[ch] * gamma)
        shift[ch] = Float(Double(norm.bias.value.storage[ch]) - mean[ch] * inverseStd[ch] * gamma)
      }
    }
    let y = Tensor(uninitializedShape: z.shape) { out in
      z.value.storage.withUnsafeBufferPointer { pz in
        Parallel.forRanges(count: n * c, costPerItem: 16 * plane) { planes in
          for p in planes {
            let ch = p % c
            Activations.forward(
              pz.baseAddress! + p * plane, scale: scale[ch], shift: shift[ch],
              into: out.baseAddress! + p * plane, count: plane, activation)
          }
        }
      }
    }
    let inputs = [z] + (norm.map { [$0.weight, $0.bias] } ?? [])
    return record(y, inputs: inputs) { g in
      // ∂/∂u through the activation, u recomputed from z.
      var gu = [Float](repeating: 0, count: z.count)
      var dGamma = [Double](repeating: 0, count: c)
      var dBeta = [Double](repeating: 0, count: c)
      gu.withUnsafeMutableBufferPointer { pgu in
        g.withUnsafeBufferPointer { pg in
          z.value.storage.withUnsafeBufferPointer { pz in
            Parallel.forRanges(count: n * c, costPerItem: 20 * plane) { planes in
              for p in planes {
                let ch = p % c
                Activations.backward(
                  pg.baseAddress! + p * plane, pz.baseAddress! + p * plane, scale: scale[ch],
                  shift: shift[ch], into: pgu.baseAddress! + p * plane, count: plane, activation)
              }
            }
            guard norm != nil else { return }
            // Through the BatchNorm, channel by channel (sums in double: they cancel over
            // whole maps).
            dGamma.withUnsafeMutableBufferPointer { pdg in
              dBeta.withUnsafeMutableBufferPointer { pdb in
                Parallel.forRanges(count: c, costPerItem: 4 * count) { channels in
                  for ch in channels {
                    var sumG = 0.0
                    var sumGX = 0.0
                    for b in 0..<n {
                      let at = (b * c + ch) * plane
                      for i in 0..<plane {
                        let gi = Double(pgu[at + i])
                        sumG += gi
                        sumGX += gi * (Double(pz[at + i]) - mean[ch])
                      }
                    }
                    let inv = inverseStd[ch]
                    pdg[ch] = sumGX * inv
                    pdb[ch] = sumG
                    let a = Float(scale[ch])
                    let meanG = training ? Float(sumG / Double(count)) : 0
                    let k =
                      training ? Float(Double(scale[ch]) * sumGX * inv * inv / Double(count)) : 0
                    let mf = Float(mean[ch])
                    for b in 0..<n {
                      let at = (b * c + ch) * plane
                      for i in 0..<plane {
                        pgu[at + i] = a * (pgu[at + i] - meanG) - k * (pz[at + i] - mf)
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
      z.accumulate(gu)
      if let norm {
        norm.weight.accumulate(dGamma)
        norm.bias.accumulate(dBeta)
      }
    }
  }

  /// A channel's batch mean and (biased) variance, in double.
  private static func channelStatistics(
    _ z: UnsafePointer<Float>, channel ch: Int, channels c: Int, batch n: Int, plane: Int
  ) -> (mean: Double, variance: Double) {
    var sum = 0.0
    for b in 0..<n {
      let row = z + (b * c + ch) * plane
      for i in 0..<plane { sum += Double(row[i]) }
    }
    let mean = sum / Double(n * plane)
    var squares = 0.0
    for b in 0..<n {
      let row = z + (b * c + ch) * plane
      for i in 0..<plane {
        let d = Double(row[i]) - mean
        squares += d * d
      }
    }
    return (mean, squares / Double(n * plane))
  }
}

/// The encoder's activations on a run of values after an affine map, and their derivatives,
/// in plain loops the compiler vectorises (`fastExp` instead of libm's opaque calls).
enum Activations {
  /// `out[i] = act(z[i]·scale + shift)`.
  static func forward(
    _ z: UnsafePointer<Float>, scale: Float, shift: Float, into out: UnsafeMutablePointer<Float>,
    count: Int, _ act: Activation
  ) {
    switch act {
    case .identity:
      for i in 0..<count { out[i] = z[i] * scale + shift }
    case .relu:
      for i in 0..<count { out[i] = max(z[i] * scale + shift, 0) }
    case .geluTanh:
      for i in 0..<count {
        let u = z[i] * scale + shift
        out[i] = u / (1 + fastExp(-2 * u * (0.797_884_56 + 0.035_677_408 * (u * u))))
      }
    case .geluErf, .hardswish:
      for i in 0..<count { out[i] = Reference.activation(z[i] * scale + shift, act) }
    }
  }

  /// `gu[i] = g[i] · act′(z[i]·scale + shift)`.
  static func backward(
    _ g: UnsafePointer<Float>, _ z: UnsafePointer<Float>, scale: Float, shift: Float,
    into gu: UnsafeMutablePointer<Float>, count: Int, _ act: Activation
  ) {
    switch act {
    case .identity:
      for i in 0..<count { gu[i] = g[i] }
    case .relu:
      for i in 0..<count { gu[i] = z[i] * scale + shift > 0 ? g[i] : 0 }
    case .geluTanh:
      // gelu(u) = u·σ(2v), v = √(2/π)(u + 0.044715u³): gelu′ = σ + u·σ(1 − σ)·2v′.
      for i in 0..<count {
        let u = z[i] * scale + shift
        let u2 = u * u
        let s = 1 / (1 + fastExp(-2 * u * (0.797_884_56 + 0.035_677_408 * u2)))
        let dv = 0.797_884_56 + 0.107_032_224 * u2
        gu[i] = g[i] * (s + 2 * u * s * (1 - s) * dv)
      }
    case .geluErf, .hardswish:
      for i in 0..<count {
        gu[i] = g[i] * Float(activationSlope(Double(z[i] * scale + shift), act))
      }
    }
  }
}
