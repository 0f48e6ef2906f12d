import Foundation

extension Reference {
  package static func matmul(
    _ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false
  ) -> Tensor {
    let m = transposeA ? a.dim(-1) : a.dim(-2)
    let k = transposeA ? a.dim(-2) : a.dim(-1)
    let n = transposeB ? b.dim(-2) : b.dim(-1)
    let batch = a.rank >= b.rank ? Array(a.shape.dropLast(2)) : Array(b.shape.dropLast(2))
    let count = batch.reduce(1, *)
    var y = Tensor(zeros: batch + [m, n])
    for bi in 0..<count {
      let aBase = a.rank == 2 ? 0 : bi * m * k
      let bBase = b.rank == 2 ? 0 : bi * k * n
      for i in 0..<m {
        for j in 0..<n {
          var acc = 0.0
          for p in 0..<k {
            let av = transposeA ? a.storage[aBase + p * m + i] : a.storage[aBase + i * k + p]
            let bv = transposeB ? b.storage[bBase + j * k + p] : b.storage[bBase + p * n + j]
            acc += Double(av) * Double(bv)
          }
          y.storage[(bi * m + i) * n + j] = Float(acc)
        }
      }
    }
    return y
  }

  package static func linear(
    _ x: Tensor, weight: Tensor, bias: Tensor?, activation: Activation = .identity
  ) -> Tensor {
    let inF = x.dim(-1)
    let outF = weight.shape[0]
    let rows = x.count / inF
    var y = Tensor(zeros: Array(x.shape.dropLast()) + [outF])
    x.storage.withUnsafeBufferPointer { xs in
      weight.storage.withUnsafeBufferPointer { ws in
        for r in 0..<rows {
          for o in 0..<outF {
            var acc = Double(bias?.storage[o] ?? 0)
            for i in 0..<inF { acc += Double(xs[r * inF + i]) * Double(ws[o * inF + i]) }
            y.storage[r * outF + o] = Reference.activation(Float(acc), activation)
          }
        }
      }
    }
    return y
  }

  package static func conv2d(
    _ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0,
    groups: Int = 1, activation: Activation = .identity
  ) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (o, cg, kh, kw) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
    precondition(c == cg * groups)
    let og = o / groups
    let ho = (h + 2 * padding - kh) / stride + 1
    let wo = (w + 2 * padding - kw) / stride + 1
    var y = Tensor(zeros: [n, o, ho, wo])
    for b in 0..<n {
      for oc in 0..<o {
        let group = oc / og
        for oy in 0..<ho {
          for ox in 0..<wo {
            var acc = Double(bias?.storage[oc] ?? 0)
            for ci in 0..<cg {
              for ky in 0..<kh {
                for kx in 0..<kw {
                  let iy = oy * stride - padding + ky
                  let ix = ox * stride - padding + kx
                  guard iy >= 0 && iy < h && ix >= 0 && ix < w else { continue }
                  acc += Double(x[b, group * cg + ci, iy, ix]) * Double(weight[oc, ci, ky, kx])
                }
              }
            }
            y[b, oc, oy, ox] = Reference.activation(Float(acc), activation)
          }
        }
      }
    }
    return y
  }

  package static func convTranspose2x2(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let cout = weight.shape[1]
    var y = Tensor(zeros: [n, cout, 2 * h, 2 * w])
    // Straight from the definition of a stride-2, 2×2 transposed convolution: output pixel
    // (oy, ox) reads input pixel (oy / 2, ox / 2) through kernel tap (oy % 2, ox % 2).
    let xs = x.storage
    let ws = weight.storage
    for b in 0..<n {
      for co in 0..<cout {
        for oy in 0..<(2 * h) {
          for ox in 0..<(2 * w) {
            var acc = Double(bias?.storage[co] ?? 0)
            let pixel = (oy / 2) * w + ox / 2
            let tap = (oy % 2) * 2 + ox % 2
            for ci in 0..<cin {
              acc +=
                Double(xs[(b * cin + ci) * h * w + pixel]) * Double(ws[(ci * cout + co) * 4 + tap])
            }
            y.storage[((b * cout + co) * 2 * h + oy) * 2 * w + ox] = Float(acc)
          }
        }
      }
    }
    return y
  }

  package static func foldBatchNorm(
    weight: Tensor, bias: Tensor?, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor,
    eps: Float
  ) -> (weight: Tensor, bias: Tensor) {
    let o = weight.shape[0]
    let per = weight.count / o
    var w = weight
    var b = Tensor(zeros: [o])
    for c in 0..<o {
      let inv = 1 / (Double(variance.storage[c]) + Double(eps)).squareRoot()
      for i in 0..<per {
        w.storage[c * per + i] = Float(
          Double(weight.storage[c * per + i]) * Double(gamma.storage[c]) * inv)
      }
      let b0 = Double(bias?.storage[c] ?? 0)
      b.storage[c] = Float(
        (b0 - Double(mean.storage[c])) * inv * Double(gamma.storage[c]) + Double(beta.storage[c]))
    }
    return (w, b)
  }
}

extension Reference {
  /// `gridAttention` from its definition: for each group, head and query, the scores
  /// `scale·q·k + q·Rh[y − ky + side − 1] + q·Rw[x − kx + side − 1]` over every key, softmax,
  /// and the weighted sum of the values, in Double.
  package static func gridAttention(
    qkv: Tensor, groups: Int, side: Int, heads: Int, relH: Tensor?, relW: Tensor?, scale: Float
  ) -> Tensor {
    let tokens = side * side
    let width = qkv.dim(1)
    let channels = width / 3
    let d = channels / heads
    let x = qkv.storage
    var out = [Float](repeating: 0, count: groups * tokens * channels)
    for g in 0..<groups {
      for h in 0..<heads {
        for i in 0..<tokens {
          let qRow = (g * tokens + i) * width + h * d
          var scores = [Double](repeating: 0, count: tokens)
          for j in 0..<tokens {
            let kRow = (g * tokens + j) * width + channels + h * d
            var dot = 0.0
            for c in 0..<d { dot += Double(x[qRow + c]) * Double(x[kRow + c]) }
            var s = Double(scale) * dot
            if let relH, let relW {
              let (y, xq, ky, kx) = (i / side, i % side, j / side, j % side)
              let rh = (y - ky + side - 1) * d
              let rw = (xq - kx + side - 1) * d
              for c in 0..<d {
                s +=
                  Double(x[qRow + c])
                  * (Double(relH.storage[rh + c]) + Double(relW.storage[rw + c]))
              }
            }
            scores[j] = s
          }
          let m = scores.max() ?? 0
          let e = scores.map { Foundation.exp($0 - m) }
          let total = e.reduce(0, +)
          for c in 0..<d {
            var acc = 0.0
            for j in 0..<tokens {
              acc += e[j] * Double(x[(g * tokens + j) * width + 2 * channels + h * d + c])
            }
            out[(g * tokens + i) * channels + h * d + c] = Float(acc / total)
          }
        }
      }
    }
    return Tensor(shape: [groups * tokens, channels], storage: out)
  }
}
