import EVTensor

/// Float64 textbook twins of the encoder ops' backward passes, loop by loop from the
/// definitions, for the tests to hold the fast ones against (as `Reference` is for the
/// inference kernels).
package enum PlainGradients {
  /// The gradients of `conv2d(x, w) + b` for the output gradient `g`: (dx, dw, db).
  package static func conv2d(
    _ x: Tensor, weight: Tensor, outputGradient g: Tensor, stride: Int, padding: Int, groups: Int
  ) -> (input: [Double], weight: [Double], bias: [Double]) {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, cg, k) = (weight.shape[0], weight.shape[1], weight.shape[2])
    let (ho, wo) = (g.shape[2], g.shape[3])
    let og = o / groups
    var dx = [Double](repeating: 0, count: x.count)
    var dw = [Double](repeating: 0, count: weight.count)
    var db = [Double](repeating: 0, count: o)
    for b in 0..<n {
      for oc in 0..<o {
        let group = oc / og
        for oy in 0..<ho {
          for ox in 0..<wo {
            let gv = Double(g.storage[((b * o + oc) * ho + oy) * wo + ox])
            db[oc] += gv
            for ci in 0..<cg {
              for ky in 0..<k {
                for kx in 0..<k {
                  let iy = oy * stride - padding + ky
                  let ix = ox * stride - padding + kx
                  guard iy >= 0 && iy < h && ix >= 0 && ix < w else { continue }
                  let xi = ((b * c + group * cg + ci) * h + iy) * w + ix
                  let wi = ((oc * cg + ci) * k + ky) * k + kx
                  dx[xi] += gv * Double(weight.storage[wi])
                  dw[wi] += gv * Double(x.storage[xi])
                }
              }
            }
          }
        }
      }
    }
    return (dx, dw, db)
  }

  /// The gradients of a training-mode BatchNorm (batch statistics, biased variance) for `g`:
  /// (dx, dγ, dβ).
  package static func batchNorm2dTraining(
    _ x: Tensor, weight: Tensor, outputGradient g: Tensor, eps: Double
  ) -> (input: [Double], weight: [Double], bias: [Double]) {
    let (n, c, plane) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    let m = Double(n * plane)
    var dx = [Double](repeating: 0, count: x.count)
    var dGamma = [Double](repeating: 0, count: c)
    var dBeta = [Double](repeating: 0, count: c)
    func at(_ b: Int, _ ch: Int, _ i: Int) -> Int { (b * c + ch) * plane + i }
    for ch in 0..<c {
      var mean = 0.0
      for b in 0..<n { for i in 0..<plane { mean += Double(x.storage[at(b, ch, i)]) } }
      mean /= m
      var variance = 0.0
      for b in 0..<n {
        for i in 0..<plane {
          let d = Double(x.storage[at(b, ch, i)]) - mean
          variance += d * d
        }
      }
      variance /= m
      let inv = 1 / (variance + eps).squareRoot()
      var sumG = 0.0
      var sumGHat = 0.0
      for b in 0..<n {
        for i in 0..<plane {
          let gv = Double(g.storage[at(b, ch, i)])
          let hat = (Double(x.storage[at(b, ch, i)]) - mean) * inv
          sumG += gv
          sumGHat += gv * hat
        }
      }
      dGamma[ch] = sumGHat
      dBeta[ch] = sumG
      let gamma = Double(weight.storage[ch])
      for b in 0..<n {
        for i in 0..<plane {
          let hat = (Double(x.storage[at(b, ch, i)]) - mean) * inv
          let gv = Double(g.storage[at(b, ch, i)])
          dx[at(b, ch, i)] = gamma * inv / m * (m * gv - sumG - hat * sumGHat)
        }
      }
    }
    return (dx, dGamma, dBeta)
  }

  /// The gradient of `Reference.resizeBicubic(x)` for `g`: every output pixel's 4 × 4 taps
  /// handed back their share.
  package static func resizeBicubic(inputShape: [Int], outputGradient g: Tensor) -> [Double] {
    let (n, c, h, w) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
    let (height, width) = (g.shape[2], g.shape[3])
    let rows = BicubicTaps(input: h, output: height)
    let columns = BicubicTaps(input: w, output: width)
    var dx = [Double](repeating: 0, count: n * c * h * w)
    for p in 0..<(n * c) {
      for oy in 0..<height {
        for ox in 0..<width {
          let gv = Double(g.storage[(p * height + oy) * width + ox])
          for i in 0..<4 {
            for j in 0..<4 {
              let at = (p * h + rows.taps[oy].index[i]) * w + columns.taps[ox].index[j]
              dx[at] += rows.taps[oy].weight[i] * columns.taps[ox].weight[j] * gv
            }
          }
        }
      }
    }
    return dx
  }
}
