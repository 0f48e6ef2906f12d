import Foundation

extension Reference {
  package static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
    let d = x.dim(-1)
    var y = x
    for r in 0..<(x.count / d) {
      let row = (0..<d).map { Double(x.storage[r * d + $0]) }
      let mean = row.reduce(0, +) / Double(d)
      let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(d)
      for i in 0..<d {
        let v = (row[i] - mean) / (variance + Double(eps)).squareRoot()
        y.storage[r * d + i] = Float(v * Double(weight.storage[i]) + Double(bias.storage[i]))
      }
    }
    return y
  }

  package static func layerNorm2d(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    var y = x
    let plane = h * w
    for b in 0..<n {
      for p in 0..<plane {
        // Channel ch of pixel p in image b.
        let v = (0..<c).map { Double(x.storage[(b * c + $0) * plane + p]) }
        let mean = v.reduce(0, +) / Double(c)
        let meanSquare = v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
        for ch in 0..<c {
          let normalised = (v[ch] - mean) / (meanSquare + Double(eps)).squareRoot()
          y.storage[(b * c + ch) * plane + p] = Float(
            normalised * Double(weight.storage[ch]) + Double(bias.storage[ch]))
        }
      }
    }
    return y
  }

  package static func softmax(_ x: Tensor) -> Tensor {
    let d = x.dim(-1)
    var y = x
    for r in 0..<(x.count / d) {
      let row = (0..<d).map { Double(x.storage[r * d + $0]) }
      let m = row.max()!
      let e = row.map { Foundation.exp($0 - m) }
      let s = e.reduce(0, +)
      for i in 0..<d { y.storage[r * d + i] = Float(e[i] / s) }
    }
    return y
  }

  /// PyTorch's upsample_bicubic2d (align_corners=False) pixel by pixel: source coordinate
  /// (dst + 0.5)·in/out − 0.5, its floor, cubic-convolution weights (A = −0.75) of the fraction,
  /// and the 4×4 neighbourhood read with indices clamped into the image.
  package static func resizeBicubic(_ x: Tensor, height: Int, width: Int) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let a = -0.75
    func near(_ t: Double) -> Double { ((a + 2) * t - (a + 3)) * t * t + 1 }
    func far(_ t: Double) -> Double { ((a * t - 5 * a) * t + 8 * a) * t - 4 * a }
    func taps(_ dst: Int, _ input: Int, _ output: Int) -> (index: [Int], weight: [Double]) {
      let scale = Float(input) / Float(output)
      let real = scale * (Float(dst) + 0.5) - 0.5
      let i0 = min(Int(real.rounded(.down)), input - 1)
      let t = Double(min(max(real - Float(i0), 0), 1))
      return (
        (-1...2).map { min(max(i0 + $0, 0), input - 1) },
        [far(t + 1), near(t), near(1 - t), far(2 - t)]
      )
    }
    var y = Tensor(zeros: [n, c, height, width])
    for oy in 0..<height {
      let ty = taps(oy, h, height)
      for ox in 0..<width {
        let tx = taps(ox, w, width)
        for b in 0..<n {
          for ch in 0..<c {
            var acc = 0.0
            for i in 0..<4 {
              for j in 0..<4 {
                acc += ty.weight[i] * tx.weight[j] * Double(x[b, ch, ty.index[i], tx.index[j]])
              }
            }
            y[b, ch, oy, ox] = Float(acc)
          }
        }
      }
    }
    return y
  }

  /// PyTorch's upsample_bilinear2d (align_corners=False, no antialias) pixel by pixel.
  package static func resizeBilinear(_ x: Tensor, height: Int, width: Int) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    func taps(_ dst: Int, _ input: Int, _ output: Int) -> (i0: Int, i1: Int, l1: Double) {
      let scale = Float(input) / Float(output)
      let real = max(scale * (Float(dst) + 0.5) - 0.5, 0)
      let i0 = min(Int(real.rounded(.down)), input - 1)
      return (i0, min(i0 + 1, input - 1), Double(real - Float(i0)))
    }
    var y = Tensor(zeros: [n, c, height, width])
    for oy in 0..<height {
      let ty = taps(oy, h, height)
      for ox in 0..<width {
        let tx = taps(ox, w, width)
        for b in 0..<n {
          for ch in 0..<c {
            let top =
              (1 - tx.l1) * Double(x[b, ch, ty.i0, tx.i0]) + tx.l1 * Double(x[b, ch, ty.i0, tx.i1])
            let bottom =
              (1 - tx.l1) * Double(x[b, ch, ty.i1, tx.i0]) + tx.l1 * Double(x[b, ch, ty.i1, tx.i1])
            y[b, ch, oy, ox] = Float((1 - ty.l1) * top + ty.l1 * bottom)
          }
        }
      }
    }
    return y
  }
}
