import EVTensor

// Softmax and the LayerNorms: forwards through the inference library's kernels, backwards
// row by row (or, for LayerNorm2d, over blocks of pixels, vectorised across them). The
// normalisations keep no normalised copy for the backward pass: it recomputes each row's
// statistics from the input, which the tape holds anyway.

extension Tape {
  /// Softmax over the last axis.
  package func softmax(_ x: Variable) -> Variable {
    let y = EVTensor.softmax(x.value)
    let d = x.shape.last!
    return record(y, inputs: [x]) { g in
      y.withUnsafeBufferPointer { py in
        g.withUnsafeBufferPointer { gp in
          x.addToGradient { dx, fresh in
            Loops.softmaxBackward(
              y: py.baseAddress!, g: gp.baseAddress!, into: dx, rows: y.count / d, cols: d,
              accumulate: !fresh)
          }
        }
      }
    }
  }

  /// LayerNorm over the last axis (`nn.LayerNorm`, biased variance).
  package func layerNorm(_ x: Variable, weight: Variable, bias: Variable, eps: Float) -> Variable {
    let y = EVTensor.layerNorm(x.value, weight: weight.value, bias: bias.value, eps: eps)
    let d = x.shape.last!
    let rows = x.count / d
    return record(y, inputs: [x, weight, bias]) { g in
      x.value.withUnsafeBufferPointer { px in
        weight.value.withUnsafeBufferPointer { pw in
          g.withUnsafeBufferPointer { gp in
            var dw = [Double](repeating: 0, count: d)
            var db = [Double](repeating: 0, count: d)
            let wantsAffine = weight.requiresGrad || bias.requiresGrad
            x.addToGradient { dx, fresh in
              Loops.layerNormBackward(
                x: px.baseAddress!, weight: pw.baseAddress!, g: gp.baseAddress!, eps: eps,
                rows: rows, size: d, dx: dx, accumulate: !fresh, dw: &dw, db: &db)
            }
            if !x.requiresGrad && wantsAffine {
              Loops.layerNormBackward(
                x: px.baseAddress!, weight: pw.baseAddress!, g: gp.baseAddress!, eps: eps,
                rows: rows, size: d, dx: nil, accumulate: false, dw: &dw, db: &db)
            }
            weight.accumulate(dw)
            bias.accumulate(db)
          }
        }
      }
    }
  }

  /// `LayerNorm2d` of SAM: over the channels of each pixel of N × C × H × W.
  package func layerNorm2d(_ x: Variable, weight: Variable, bias: Variable, eps: Float)
    -> Variable
  {
    let y = EVTensor.layerNorm2d(x.value, weight: weight.value, bias: bias.value, eps: eps)
    let (n, c, plane) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    return record(y, inputs: [x, weight, bias]) { g in
      x.value.withUnsafeBufferPointer { px in
        weight.value.withUnsafeBufferPointer { pw in
          g.withUnsafeBufferPointer { gp in
            var dw = [Double](repeating: 0, count: c)
            var db = [Double](repeating: 0, count: c)
            x.addToZeroedGradient { dx in
              Loops.layerNorm2dBackward(
                x: px.baseAddress!, weight: pw.baseAddress!, g: gp.baseAddress!, eps: eps,
                images: n, channels: c, plane: plane, dx: dx, dw: &dw, db: &db)
            }
            if !x.requiresGrad && (weight.requiresGrad || bias.requiresGrad) {
              Loops.layerNorm2dBackward(
                x: px.baseAddress!, weight: pw.baseAddress!, g: gp.baseAddress!, eps: eps,
                images: n, channels: c, plane: plane, dx: nil, dw: &dw, db: &db)
            }
            weight.accumulate(dw)
            bias.accumulate(db)
          }
        }
      }
    }
  }
}

extension Loops {
  /// `dx (+)= y ⊙ (g − Σ g·y)` per row of a softmax output y, rows split over the cores.
  static func softmaxBackward(
    y: UnsafePointer<Float>, g: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>,
    rows: Int, cols: Int, accumulate: Bool
  ) {
    Parallel.forRanges(count: rows, costPerItem: 3 * cols) { range in
      let offset = range.lowerBound * cols
      softmaxBackwardRows(
        y: y + offset, g: g + offset, into: dx + offset, rows: range.count, cols: cols,
        accumulate: accumulate)
    }
  }

  /// `softmaxBackward` on the calling thread; `dx` may be `g` itself.
  static func softmaxBackwardRows(
    y: UnsafePointer<Float>, g: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>,
    rows: Int, cols: Int, accumulate: Bool
  ) {
    for r in 0..<rows {
      let (yr, gr, dr) = (y + r * cols, g + r * cols, dx + r * cols)
      let dot = Loops.dot(gr, yr, cols)
      if accumulate {
        for i in 0..<cols { dr[i] += yr[i] * (gr[i] - dot) }
      } else {
        for i in 0..<cols { dr[i] = yr[i] * (gr[i] - dot) }
      }
    }
  }

  /// The backward pass of a LayerNorm over rows of `size`: with n the normalised input and
  /// ĝ = g·w, `dx = σ⁻¹·(ĝ − mean(ĝ) − n·mean(ĝ·n))` (into `dx` unless nil), and the affine
  /// gradients `dw += Σ g·n`, `db += Σ g` over the rows. Rows split over the cores.
  static func layerNormBackward(
    x: UnsafePointer<Float>, weight w: UnsafePointer<Float>, g: UnsafePointer<Float>, eps: Float,
    rows: Int, size d: Int, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
    dw: inout [Double], db: inout [Double]
  ) {
    let chunks = Parallel.chunkCount(count: rows, costPerItem: 8 * d)
    withChunkTotals(chunks: chunks, size: d, dw: &dw, db: &db) { tw, tb in
      Parallel.forChunks(count: rows, chunks: chunks) { chunk, range in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * d) { scratch in
          let offset = range.lowerBound * d
          layerNormBackwardRows(
            x: x + offset, weight: w, g: g + offset, eps: eps, rows: range.count, size: d,
            dx: dx.map { $0 + offset }, accumulate: accumulate, dw: tw + chunk * d,
            db: tb + chunk * d, scratch: scratch.baseAddress!)
        }
      }
    }
  }

  /// Per-chunk double totals of two gradients of `size` (zeroed, `chunks` of each), added to
  /// `dw` and `db` after `body` has filled them.
  static func withChunkTotals(
    chunks: Int, size: Int, dw: inout [Double], db: inout [Double],
    _ body: (UnsafeMutablePointer<Double>, UnsafeMutablePointer<Double>) -> Void
  ) {
    var totals = [Double](repeating: 0, count: chunks * 2 * size)
    totals.withUnsafeMutableBufferPointer { t in
      body(t.baseAddress!, t.baseAddress! + chunks * size)
    }
    for chunk in 0..<chunks {
      for i in 0..<size {
        dw[i] += totals[chunk * size + i]
        db[i] += totals[(chunks + chunk) * size + i]
      }
    }
  }

  /// `layerNormBackward` on the calling thread, its affine gradients added to `dw`, `db`
  /// (summed in float over blocks of 256 rows, in double across them); `scratch` holds 4·size.
  static func layerNormBackwardRows(
    x: UnsafePointer<Float>, weight w: UnsafePointer<Float>, g: UnsafePointer<Float>, eps: Float,
    rows: Int, size d: Int, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
    dw tw: UnsafeMutablePointer<Double>, db tb: UnsafeMutablePointer<Double>,
    scratch n: UnsafeMutablePointer<Float>
  ) {
    let (gh, sw, sb) = (n + d, n + 2 * d, n + 3 * d)
    sw.initialize(repeating: 0, count: 2 * d)
    for r in 0..<rows {
      let (xr, gr) = (x + r * d, g + r * d)
      let mean = sum(xr, d) / Float(d)
      let inv = 1 / (squaredDeviation(xr, d, from: mean) / Float(d) + eps).squareRoot()
      for i in 0..<d {
        n[i] = (xr[i] - mean) * inv
        gh[i] = gr[i] * w[i]
        sw[i] += gr[i] * n[i]
        sb[i] += gr[i]
      }
      if let dx {
        let (m1, m2) = (sum(gh, d) / Float(d), dot(gh, n, d) / Float(d))
        let dr = dx + r * d
        if accumulate {
          for i in 0..<d { dr[i] += inv * (gh[i] - m1 - n[i] * m2) }
        } else {
          for i in 0..<d { dr[i] = inv * (gh[i] - m1 - n[i] * m2) }
        }
      }
      if r % 256 == 255 || r == rows - 1 {
        for i in 0..<d {
          tw[i] += Double(sw[i])
          tb[i] += Double(sb[i])
        }
        sw.update(repeating: 0, count: 2 * d)
      }
    }
  }

  /// The backward pass of LayerNorm2d on N × C × plane, over blocks of 256 pixels of one
  /// image (their statistics vectorised across the pixels, as the forward kernel does); `dx`
  /// is added to (zero it first), skipped when nil.
  static func layerNorm2dBackward(
    x: UnsafePointer<Float>, weight w: UnsafePointer<Float>, g: UnsafePointer<Float>, eps: Float,
    images: Int, channels c: Int, plane: Int, dx: UnsafeMutablePointer<Float>?,
    dw: inout [Double], db: inout [Double]
  ) {
    let block = 256
    let blocksPerImage = (plane + block - 1) / block
    let tasks = images * blocksPerImage
    let chunks = Parallel.chunkCount(count: tasks, costPerItem: 10 * c * block)
    var totals = [Double](repeating: 0, count: chunks * 2 * c)
    totals.withUnsafeMutableBufferPointer { totals in
      let totals = totals.baseAddress!
      Parallel.forChunks(count: tasks, chunks: chunks) { chunk, range in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 5 * block) { scratch in
          let mean = scratch.baseAddress!
          let (inv, s1, s2) = (mean + block, mean + 2 * block, mean + 3 * block)
          let normalised = mean + 4 * block
          let (tw, tb) = (totals + chunk * 2 * c, totals + chunk * 2 * c + c)
          for task in range {
            let image = task / blocksPerImage
            let p0 = (task % blocksPerImage) * block
            let m = min(block, plane - p0)
            let (xs, gs) = (x + image * c * plane + p0, g + image * c * plane + p0)
            mean.initialize(repeating: 0, count: 4 * block)
            for ch in 0..<c {
              let row = xs + ch * plane
              for i in 0..<m { mean[i] += row[i] }
            }
            for i in 0..<m { mean[i] /= Float(c) }
            for ch in 0..<c {
              let row = xs + ch * plane
              for i in 0..<m {
                let v = row[i] - mean[i]
                inv[i] += v * v
              }
            }
            for i in 0..<m { inv[i] = 1 / (inv[i] / Float(c) + eps).squareRoot() }
            for ch in 0..<c {
              let (row, grow, wc) = (xs + ch * plane, gs + ch * plane, w[ch])
              for i in 0..<m {
                let ni = (row[i] - mean[i]) * inv[i]
                normalised[i] = ni
                s1[i] += grow[i] * wc
                s2[i] += grow[i] * wc * ni
              }
              tw[ch] += Double(dot(grow, normalised, m))
              tb[ch] += Double(sum(grow, m))
            }
            guard let dx else { continue }
            let ds = dx + image * c * plane + p0
            for ch in 0..<c {
              let (row, grow, drow, wc) = (xs + ch * plane, gs + ch * plane, ds + ch * plane, w[ch])
              for i in 0..<m {
                let ni = (row[i] - mean[i]) * inv[i]
                drow[i] += inv[i] * (grow[i] * wc - (s1[i] + ni * s2[i]) / Float(c))
              }
            }
          }
        }
      }
    }
    for chunk in 0..<chunks {
      for i in 0..<c {
        dw[i] += totals[chunk * 2 * c + i]
        db[i] += totals[chunk * 2 * c + c + i]
      }
    }
  }
}

extension Tape {
  /// `activation(layerNorm(x))` in one op: the normalised values are not kept (the backward
  /// pass recomputes them block by block from `x`, which the op holds anyway), which saves a
  /// tensor the size of `x`; in SAM's upscaling that is 4 MB per prompt.
  package func layerNorm(
    _ x: Variable, weight: Variable, bias: Variable, eps: Float, then kind: Activation
  ) -> Variable {
    let d = x.shape.last!
    let rows = x.count / d
    let y = Tensor(uninitializedShape: x.shape) { out in
      let normalised = EVTensor.layerNorm(x.value, weight: weight.value, bias: bias.value, eps: eps)
      normalised.withUnsafeBufferPointer { pn in
        Loops.activate(kind, pn.baseAddress!, into: out.baseAddress!, count: out.count)
      }
    }
    return record(y, inputs: [x, weight, bias], name: "layerNorm+activation") { g in
      var dw = [Double](repeating: 0, count: d)
      var db = [Double](repeating: 0, count: d)
      // Blocks of rows in parallel; in each, the normalised values again, the activation's
      // slope, then the LayerNorm's backward pass, all in cache.
      let block = 512
      let blocks = (rows + block - 1) / block
      let chunks = Parallel.chunkCount(count: blocks, costPerItem: 40 * block * d)
      withPointers(x.value, y, weight.value, bias.value) { px, py, pw, pb in
        g.withUnsafeBufferPointer { gp in
          func run(_ dx: UnsafeMutablePointer<Float>?, fresh: Bool) {
            Loops.withChunkTotals(chunks: chunks, size: d, dw: &dw, db: &db) { tw, tb in
              Parallel.forChunks(count: blocks, chunks: chunks) { chunk, range in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * block * d + 4 * d) {
                  scratch in
                  let (u, du) = (scratch.baseAddress!, scratch.baseAddress! + block * d)
                  for index in range {
                    let n = min(block, rows - index * block)
                    let offset = index * block * d
                    Loops.layerNormRows(
                      px + offset, weight: pw, bias: pb, eps: eps, rows: n, size: d, into: u)
                    Loops.activationSlopes(kind, x: u, y: py + offset, into: du, count: n * d)
                    for i in 0..<(n * d) { du[i] *= gp[offset + i] }
                    Loops.layerNormBackwardRows(
                      x: px + offset, weight: pw, g: du, eps: eps, rows: n, size: d,
                      dx: dx.map { $0 + offset }, accumulate: !fresh, dw: tw + chunk * d,
                      db: tb + chunk * d, scratch: du + block * d)
                  }
                }
              }
            }
          }
          if x.requiresGrad {
            x.addToGradient { dx, fresh in run(dx, fresh: fresh) }
          } else {
            run(nil, fresh: false)
          }
        }
      }
      weight.accumulate(dw)
      bias.accumulate(db)
    }
  }
}

extension Loops {
  /// `nn.LayerNorm` of `rows` rows of `size` into `out`, on the calling thread.
  static func layerNormRows(
    _ x: UnsafePointer<Float>, weight w: UnsafePointer<Float>, bias b: UnsafePointer<Float>,
    eps: Float, rows: Int, size d: Int, into out: UnsafeMutablePointer<Float>
  ) {
    for r in 0..<rows {
      let (xr, o) = (x + r * d, out + r * d)
      let mean = sum(xr, d) / Float(d)
      let inv = 1 / (squaredDeviation(xr, d, from: mean) / Float(d) + eps).squareRoot()
      for i in 0..<d { o[i] = (xr[i] - mean) * inv * w[i] + b[i] }
    }
  }
}
