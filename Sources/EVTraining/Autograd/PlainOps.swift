import EVTensor
import Foundation

/// The first implementations of the differentiable ops, kept as they were written: each
/// forward the textbook definition (plain loops with double accumulation as in `Reference`, or
/// `BLAS.sgemm` for the products), each backward its derivative, element by element. The fast
/// ops in `Ops.swift` and beside it are held against these (`tape.plain.layerNorm(…)` records
/// the plain op on the same tape) in `FastOpTests`; nothing else should call them.
package struct PlainOps {
  let tape: Tape

  /// `a + b`, same shapes.
  package func add(_ a: Variable, _ b: Variable) -> Variable {
    precondition(a.shape == b.shape, "add: \(a.shape) vs \(b.shape)")
    var y = a.value
    for i in y.storage.indices { y.storage[i] += b.value.storage[i] }
    return tape.record(y, inputs: [a, b]) { g in
      a.accumulate(g)
      b.accumulate(g)
    }
  }

  /// `x · s` for a constant `s`.
  package func scale(_ x: Variable, _ s: Float) -> Variable {
    var y = x.value
    for i in y.storage.indices { y.storage[i] *= s }
    return tape.record(y, inputs: [x]) { g in x.accumulate(g.map { $0 * s }) }
  }

  /// An elementwise activation (ReLU, exact or tanh GELU).
  package func activation(_ x: Variable, _ kind: Activation) -> Variable {
    let y = Reference.activate(x.value, kind)
    return tape.record(y, inputs: [x]) { g in
      let input = x.value.storage
      x.accumulate(input.indices.map { Double(g[$0]) * activationSlope(Double(input[$0]), kind) })
    }
  }

  /// A new view of the same values.
  package func reshape(_ x: Variable, _ shape: [Int]) -> Variable {
    let y = x.value.reshaped(shape)
    return tape.record(y, inputs: [x]) { g in x.accumulate(g) }
  }

  /// Axes permuted (`torch.permute`).
  package func permute(_ x: Variable, _ perm: [Int]) -> Variable {
    let y = Reference.permute(x.value, perm)
    var inverse = [Int](repeating: 0, count: perm.count)
    for (d, p) in perm.enumerated() { inverse[p] = d }
    let outShape = y.shape
    return tape.record(y, inputs: [x]) { g in
      x.accumulate(Reference.permute(Tensor(shape: outShape, storage: g), inverse).storage)
    }
  }

  package func concat(_ xs: [Variable], axis: Int) -> Variable {
    let y = Reference.concat(xs.map(\.value), axis: axis)
    let a = axis < 0 ? axis + y.rank : axis
    let outShape = y.shape
    return tape.record(y, inputs: xs) { g in
      let grad = Tensor(shape: outShape, storage: g)
      var start = 0
      for x in xs {
        let size = x.shape[a]
        if x.requiresGrad {
          x.accumulate(Reference.slice(grad, axis: a, range: start..<(start + size)).storage)
        }
        start += size
      }
    }
  }

  package func slice(_ x: Variable, axis: Int, range: Range<Int>) -> Variable {
    let y = Reference.slice(x.value, axis: axis, range: range)
    let a = axis < 0 ? axis + x.value.rank : axis
    let inShape = x.shape
    let outShape = y.shape
    return tape.record(y, inputs: [x]) { g in
      // Zeros around the slice, by concatenation.
      var parts: [Tensor] = []
      if range.lowerBound > 0 {
        var s = inShape
        s[a] = range.lowerBound
        parts.append(Tensor(zeros: s))
      }
      parts.append(Tensor(shape: outShape, storage: g))
      if range.upperBound < inShape[a] {
        var s = inShape
        s[a] = inShape[a] - range.upperBound
        parts.append(Tensor(zeros: s))
      }
      x.accumulate(Reference.concat(parts, axis: a).storage)
    }
  }

  /// `nn.Linear`: `x·Wᵀ + b` over the last axis (W is `[out, in]`).
  package func linear(_ x: Variable, weight: Variable, bias: Variable?) -> Variable {
    let inF = x.shape.last!
    let outF = weight.shape[0]
    let rows = x.count / inF
    let y = Products.linear(
      x.value.storage, rows: rows, weight: weight.value.storage, out: outF,
      bias: bias?.value.storage)
    let value = Tensor(shape: Array(x.shape.dropLast()) + [outF], storage: y)
    return tape.record(value, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
      // dx = g·W, dW = gᵀ·x, db = Σ rows of g.
      if x.requiresGrad {
        x.accumulate(Products.gemm(g, weight.value.storage, m: rows, n: inF, k: outF))
      }
      if weight.requiresGrad {
        weight.accumulate(
          Products.gemm(g, x.value.storage, m: outF, n: inF, k: rows, transA: true))
      }
      if let bias, bias.requiresGrad {
        var db = [Double](repeating: 0, count: outF)
        for r in 0..<rows { for o in 0..<outF { db[o] += Double(g[r * outF + o]) } }
        bias.accumulate(db)
      }
    }
  }

  /// Batched `a · b` (or `a · bᵀ`) over the last two axes; the leading axes must agree.
  package func matmul(_ a: Variable, _ b: Variable, transposeB: Bool = false) -> Variable {
    precondition(a.shape.dropLast(2) == b.shape.dropLast(2), "matmul: \(a.shape) · \(b.shape)")
    let y = Products.batched(a.value, b.value, transB: transposeB)
    let outShape = y.shape
    return tape.record(y, inputs: [a, b]) { g in
      let grad = Tensor(shape: outShape, storage: g)
      // dA = dY·Bᵀ (or dY·B); dB = Aᵀ·dY (or dYᵀ·A).
      if a.requiresGrad {
        a.accumulate(Products.batched(grad, b.value, transB: !transposeB).storage)
      }
      if b.requiresGrad {
        let db =
          transposeB
          ? Products.batched(grad, a.value, transA: true)
          : Products.batched(a.value, grad, transA: true)
        b.accumulate(db.storage)
      }
    }
  }

  /// Softmax over the last axis.
  package func softmax(_ x: Variable) -> Variable {
    let y = Reference.softmax(x.value)
    let d = x.shape.last!
    return tape.record(y, inputs: [x]) { g in
      var dx = [Double](repeating: 0, count: y.count)
      for r in 0..<(y.count / d) {
        var dot = 0.0
        for i in 0..<d { dot += Double(g[r * d + i]) * Double(y.storage[r * d + i]) }
        for i in 0..<d {
          dx[r * d + i] = Double(y.storage[r * d + i]) * (Double(g[r * d + i]) - dot)
        }
      }
      x.accumulate(dx)
    }
  }

  /// LayerNorm over the last axis (`nn.LayerNorm`, biased variance).
  package func layerNorm(_ x: Variable, weight: Variable, bias: Variable, eps: Float) -> Variable {
    let d = x.shape.last!
    return normalize(
      x, weight: weight, bias: bias, eps: eps, groups: x.count / d, size: d,
      index: { group, i in group * d + i }, channel: { _, i in i })
  }

  /// `LayerNorm2d` of SAM: over the channels of each pixel of N × C × H × W.
  package func layerNorm2d(_ x: Variable, weight: Variable, bias: Variable, eps: Float)
    -> Variable
  {
    let (c, plane) = (x.shape[1], x.shape[2] * x.shape[3])
    return normalize(
      x, weight: weight, bias: bias, eps: eps, groups: x.count / c, size: c,
      index: { group, i in ((group / plane) * c + i) * plane + group % plane },
      channel: { _, i in i })
  }

  /// Normalisation of `groups` groups of `size` values (`index(group, i)` locates them),
  /// then an affine map by channel.
  private func normalize(
    _ x: Variable, weight: Variable, bias: Variable, eps: Float, groups: Int, size: Int,
    index: @escaping (Int, Int) -> Int, channel: @escaping (Int, Int) -> Int
  ) -> Variable {
    var y = x.value
    var normalised = [Double](repeating: 0, count: x.count)
    var inverseStd = [Double](repeating: 0, count: groups)
    let xs = x.value.storage
    for group in 0..<groups {
      var mean = 0.0
      for i in 0..<size { mean += Double(xs[index(group, i)]) }
      mean /= Double(size)
      var variance = 0.0
      for i in 0..<size {
        let d = Double(xs[index(group, i)]) - mean
        variance += d * d
      }
      variance /= Double(size)
      let inv = 1 / (variance + Double(eps)).squareRoot()
      inverseStd[group] = inv
      for i in 0..<size {
        let at = index(group, i)
        let n = (Double(xs[at]) - mean) * inv
        normalised[at] = n
        let c = channel(group, i)
        y.storage[at] = Float(n * Double(weight.value.storage[c]) + Double(bias.value.storage[c]))
      }
    }
    return tape.record(y, inputs: [x, weight, bias]) { g in
      let w = weight.value.storage
      var dw = [Double](repeating: 0, count: w.count)
      var db = [Double](repeating: 0, count: w.count)
      var dx = [Double](repeating: 0, count: xs.count)
      for group in 0..<groups {
        // dx = inv·(ĝ − mean(ĝ) − n·mean(ĝ·n)) with ĝ = g·w.
        var sum = 0.0
        var sumN = 0.0
        for i in 0..<size {
          let at = index(group, i)
          let c = channel(group, i)
          let gi = Double(g[at])
          dw[c] += gi * normalised[at]
          db[c] += gi
          let gh = gi * Double(w[c])
          sum += gh
          sumN += gh * normalised[at]
        }
        let m = Double(size)
        for i in 0..<size {
          let at = index(group, i)
          let gh = Double(g[at]) * Double(w[channel(group, i)])
          dx[at] = inverseStd[group] * (gh - sum / m - normalised[at] * sumN / m)
        }
      }
      x.accumulate(dx)
      weight.accumulate(dw)
      bias.accumulate(db)
    }
  }

  /// `nn.ConvTranspose2d(kernel 2, stride 2)`: weight `[in, out, 2, 2]`. Each of the four
  /// kernel taps is a product `W_tᵀ·X` (out × pixels) written to every other row and column
  /// of the output; `Reference.convTranspose2x2` is its plain twin.
  package func convTranspose2x2(_ x: Variable, weight: Variable, bias: Variable) -> Variable {
    let (n, cin, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let cout = weight.shape[1]
    let hw = h * w
    // W_t as cin × cout matrices, one per tap (dy·2 + dx).
    func taps(_ ws: [Float]) -> [[Float]] {
      (0..<4).map { t in
        var m = [Float](repeating: 0, count: cin * cout)
        for ci in 0..<cin {
          for co in 0..<cout { m[ci * cout + co] = ws[(ci * cout + co) * 4 + t] }
        }
        return m
      }
    }
    let wt = taps(weight.value.storage)
    let xs = x.value.storage
    var y = [Float](repeating: 0, count: n * cout * 4 * hw)
    for b in 0..<n {
      for t in 0..<4 {
        let (dy, dx) = (t / 2, t % 2)
        let yt = Products.gemm(
          wt[t], xs, m: cout, n: hw, k: cin, transA: true, bOffset: b * cin * hw)
        for co in 0..<cout {
          let bias = bias.value.storage[co]
          for py in 0..<h {
            for px in 0..<w {
              y[((b * cout + co) * 2 * h + 2 * py + dy) * 2 * w + 2 * px + dx] =
                yt[co * hw + py * w + px] + bias
            }
          }
        }
      }
    }
    let value = Tensor(shape: [n, cout, 2 * h, 2 * w], storage: y)
    return tape.record(value, inputs: [x, weight, bias]) { g in
      var dx = [Float](repeating: 0, count: xs.count)
      var dw = [Double](repeating: 0, count: weight.count)
      var db = [Double](repeating: 0, count: cout)
      for b in 0..<n {
        for t in 0..<4 {
          let (dy, dxTap) = (t / 2, t % 2)
          // The output gradient at this tap's positions, cout × pixels.
          var gt = [Float](repeating: 0, count: cout * hw)
          for co in 0..<cout {
            for py in 0..<h {
              for px in 0..<w {
                let v = g[((b * cout + co) * 2 * h + 2 * py + dy) * 2 * w + 2 * px + dxTap]
                gt[co * hw + py * w + px] = v
                db[co] += Double(v)
              }
            }
          }
          if x.requiresGrad {
            let part = Products.gemm(wt[t], gt, m: cin, n: hw, k: cout)
            for i in 0..<(cin * hw) { dx[b * cin * hw + i] += part[i] }
          }
          if weight.requiresGrad {
            let part = Products.gemm(
              xs, gt, m: cin, n: cout, k: hw, transB: true, aOffset: b * cin * hw)
            for ci in 0..<cin {
              for co in 0..<cout { dw[(ci * cout + co) * 4 + t] += Double(part[ci * cout + co]) }
            }
          }
        }
      }
      x.accumulate(dx)
      weight.accumulate(dw)
      bias.accumulate(db)
    }
  }

  /// `a + b` where one of them may have a batch (leading axis) of 1 that is shared by every
  /// batch of the other: the shared one is copied out first.
  package func addBroadcasting(_ a: Variable, _ b: Variable) -> Variable {
    if a.shape == b.shape { return add(a, b) }
    let batch = max(a.dim(0), b.dim(0))
    func expanded(_ x: Variable) -> Variable {
      x.dim(0) == batch ? x : concat(Array(repeating: x, count: batch), axis: 0)
    }
    return add(expanded(a), expanded(b))
  }

  /// Multi-head attention from its parts: heads split by reshape and permute, `q·kᵀ` scaled,
  /// softmax, `·v`, heads merged. A batch of 1 on either side is copied out first.
  package func attention(q: Variable, k: Variable, v: Variable, heads: Int) -> Variable {
    let batch = max(q.dim(0), k.dim(0))
    func expanded(_ x: Variable) -> Variable {
      x.dim(0) == batch ? x : concat(Array(repeating: x, count: batch), axis: 0)
    }
    func split(_ x: Variable) -> Variable {
      let (b, n, c) = (x.dim(0), x.dim(1), x.dim(2))
      return permute(reshape(x, [b, n, heads, c / heads]), [0, 2, 1, 3])
    }
    let (qh, kh, vh) = (split(expanded(q)), split(expanded(k)), split(expanded(v)))
    let scores = scale(matmul(qh, kh, transposeB: true), 1 / Float(qh.dim(3)).squareRoot())
    let out = matmul(softmax(scores), vh)
    let (b, h, n, c) = (out.dim(0), out.dim(1), out.dim(2), out.dim(3))
    return reshape(permute(out, [0, 2, 1, 3]), [b, n, h * c])
  }

  /// `convTranspose2x2ChannelsLast` through the NCHW op: the pixels (row-major, `height ×
  /// width` of them) to channels first, the convolution, then each output pixel back to the
  /// channels-last order of its input pixel and tap.
  package func convTranspose2x2ChannelsLast(
    _ x: Variable, height: Int, width: Int, weight: Variable, bias: Variable
  ) -> Variable {
    let (b, cin) = (x.dim(0), x.dim(2))
    let image = reshape(permute(x, [0, 2, 1]), [b, cin, height, width])
    let y = convTranspose2x2(image, weight: weight, bias: bias)
    let cout = y.dim(1)
    let split = reshape(y, [b, cout, height, 2, width, 2])
    return reshape(permute(split, [0, 2, 4, 3, 5, 1]), [b, 4 * height * width, cout])
  }
}

extension PlainOps {
  /// `n` copies of `x` along a new leading axis.
  private func copies(_ x: Variable, _ n: Int) -> Variable {
    concat(Array(repeating: reshape(x, [1] + x.shape), count: n), axis: 0)
  }

  /// `Tape.headProjection` through reshapes, permutes and a batched product.
  package func headProjection(
    _ x: Variable, weight: Variable, heads: Int, scale: Float = 1, transposedWeight: Bool = false
  ) -> Variable {
    let (b, t, c) = (x.dim(0), x.dim(1), x.dim(2))
    let d = c / heads
    let w = transposedWeight ? permute(weight, [1, 0]) : weight
    let features = w.dim(1)
    let xh = permute(reshape(x, [b, t, heads, d]), [0, 2, 1, 3])
    let wh = copies(reshape(w, [heads, d, features]), b)
    return reshape(self.scale(matmul(xh, wh), scale), [b, heads * t, features])
  }

  /// `Tape.headMerge` through reshapes, permutes and a batched product.
  package func headMerge(_ c: Variable, weight: Variable, heads: Int) -> Variable {
    let (b, rows, features) = (c.dim(0), c.dim(1), c.dim(2))
    let channels = weight.dim(0)
    let ch = reshape(c, [b, heads, rows / heads, features])
    let wh = copies(reshape(weight, [heads, channels / heads, features]), b)
    return reshape(
      permute(matmul(ch, wh, transposeB: true), [0, 2, 1, 3]), [b, rows / heads, channels])
  }

  /// `Tape.softmaxOfProduct` as a product (shared sides copied out), a sum and a softmax.
  package func softmaxOfProduct(
    _ a: Variable, _ b: Variable, adding rowOffset: Variable? = nil, group: Int? = nil
  ) -> Variable {
    let batch = max(a.dim(0), b.dim(0))
    func expanded(_ x: Variable) -> Variable {
      x.dim(0) == batch ? x : concat(Array(repeating: x, count: batch), axis: 0)
    }
    var scores = matmul(expanded(a), expanded(b), transposeB: true)
    if let rowOffset { scores = addRows(scores, rowOffset) }
    let (m, n) = (scores.dim(1), scores.dim(2))
    let g = group ?? n
    return reshape(softmax(reshape(scores, [batch, m, n / g, g])), [batch, m, n])
  }

  /// `Tape.layerNorm(_:weight:bias:eps:then:)` as two ops.
  package func layerNorm(
    _ x: Variable, weight: Variable, bias: Variable, eps: Float, then kind: Activation
  ) -> Variable {
    activation(layerNorm(x, weight: weight, bias: bias, eps: eps), kind)
  }

  /// `Tape.addRows` by copying the rows out.
  package func addRows(_ x: Variable, _ rows: Variable) -> Variable {
    let (b, n) = (x.dim(0), x.dim(1))
    let perBatch = rows.dim(0) == b ? rows : concat(Array(repeating: rows, count: b), axis: 0)
    return add(x, concat(Array(repeating: perBatch, count: n), axis: 1))
  }

  /// `Tape.matmul(_:_:transposeB:adding:)` as a product and a sum.
  package func matmul(
    _ a: Variable, _ b: Variable, transposeB: Bool = false, adding addend: Variable
  ) -> Variable {
    addBroadcasting(addend, matmul(a, b, transposeB: transposeB))
  }
}

extension Tape {
  /// The plain implementations, recording on this tape.
  package var plain: PlainOps { PlainOps(tape: self) }
}

/// d activation / dx at x.
func activationSlope(_ x: Double, _ kind: Activation) -> Double {
  switch kind {
  case .identity: return 1
  case .relu: return x > 0 ? 1 : 0
  case .geluErf:
    let cdf = 0.5 * erfc(-x / 2.0.squareRoot())
    let pdf = exp(-0.5 * x * x) / (2 * Double.pi).squareRoot()
    return cdf + x * pdf
  case .geluTanh:
    let k = (2 / Double.pi).squareRoot()
    let u = k * (x + 0.044715 * x * x * x)
    let t = tanh(u)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
  case .hardswish:
    return x < -3 ? 0 : x > 3 ? 1 : (2 * x + 3) / 6
  }
}
