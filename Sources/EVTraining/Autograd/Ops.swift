import EVTensor

// Differentiable ops: forwards through the inference library's general kernels (its GEMM,
// permutes, concatenation, activations; never the folded decoder schedules), backwards as
// tight loops over raw storage and products that add straight into the inputs' gradients.
// `PlainOps` keeps the first, element-by-element version of every op; `FastOpTests` holds each
// op here against it, and `OpGradientTests` against central differences.

extension Tape {
  /// `a + b`. The shapes agree, or differ only in the leading axis where one side has 1: that
  /// side is shared by every batch of the other (its gradient is the sum over the batch).
  package func add(_ a: Variable, _ b: Variable) -> Variable {
    if a.shape == b.shape {
      return record(a.value + b.value, inputs: [a, b]) { g in
        a.accumulate(g)
        b.accumulate(g)
      }
    }
    let (big, small) = a.dim(0) >= b.dim(0) ? (a, b) : (b, a)
    precondition(
      small.dim(0) == 1 && big.shape.dropFirst() == small.shape.dropFirst(),
      "add: \(a.shape) vs \(b.shape)")
    let (batch, count) = (big.dim(0), small.count)
    let y = Tensor(uninitializedShape: big.shape) { out in
      big.value.withUnsafeBufferPointer { pb in
        small.value.withUnsafeBufferPointer { ps in
          let (x, s, o) = (pb.baseAddress!, ps.baseAddress!, out.baseAddress!)
          Parallel.forRanges(count: count, costPerItem: batch) { r in
            for i in 0..<batch {
              let (xi, oi) = (x + i * count, o + i * count)
              for j in r { oi[j] = xi[j] + s[j] }
            }
          }
        }
      }
    }
    return record(y, inputs: [a, b]) { g in
      big.accumulate(g)
      g.withUnsafeBufferPointer { gp in
        small.addToGradient { dst, fresh in
          Loops.sumOverBatch(
            gp.baseAddress!, batch: batch, count: count, into: dst, accumulate: !fresh)
        }
      }
    }
  }

  /// `x · s` for a constant `s`.
  package func scale(_ x: Variable, _ s: Float) -> Variable {
    record(x.value * s, inputs: [x]) { g in
      g.withUnsafeBufferPointer { gp in
        x.addToGradient { dst, fresh in
          Loops.scale(gp.baseAddress!, by: s, into: dst, count: gp.count, accumulate: !fresh)
        }
      }
    }
  }

  /// An elementwise activation (ReLU, exact or tanh GELU).
  package func activation(_ x: Variable, _ kind: Activation) -> Variable {
    let y = Tensor(uninitializedShape: x.shape) { out in
      x.value.withUnsafeBufferPointer { px in
        if out.count > 0 {
          Loops.activate(kind, px.baseAddress!, into: out.baseAddress!, count: out.count)
        }
      }
    }
    return record(y, inputs: [x]) { g in
      x.value.withUnsafeBufferPointer { px in
        y.withUnsafeBufferPointer { py in
          g.withUnsafeBufferPointer { gp in
            x.addToGradient { dst, fresh in
              Loops.activationBackward(
                kind, x: px.baseAddress!, y: py.baseAddress!, g: gp.baseAddress!, into: dst,
                count: gp.count, accumulate: !fresh)
            }
          }
        }
      }
    }
  }

  /// A new view of the same values.
  package func reshape(_ x: Variable, _ shape: [Int]) -> Variable {
    let y = x.value.reshaped(shape)
    return record(y, inputs: [x]) { g in x.accumulate(g) }
  }

  /// Axes permuted (`torch.permute`).
  package func permute(_ x: Variable, _ perm: [Int]) -> Variable {
    let y = EVTensor.permute(x.value, perm)
    var inverse = [Int](repeating: 0, count: perm.count)
    for (d, p) in perm.enumerated() { inverse[p] = d }
    let outShape = y.shape
    return record(y, inputs: [x]) { g in
      x.accumulate(EVTensor.permute(Tensor(shape: outShape, storage: g), inverse).storage)
    }
  }

  package func concat(_ xs: [Variable], axis: Int) -> Variable {
    let y = EVTensor.concat(xs.map(\.value), axis: axis)
    let a = axis < 0 ? axis + y.rank : axis
    let outer = y.shape[..<a].reduce(1, *)
    let inner = y.shape[(a + 1)...].reduce(1, *)
    let rowLength = y.shape[a] * inner
    return record(y, inputs: xs) { g in
      // Each input's blocks straight out of the output's gradient rows.
      g.withUnsafeBufferPointer { gp in
        var offset = 0
        for x in xs {
          let block = x.shape[a] * inner
          let source = gp.baseAddress! + offset
          x.addToGradient { dst, fresh in
            for o in 0..<outer {
              let (d, s) = (dst + o * block, source + o * rowLength)
              if fresh {
                d.update(from: s, count: block)
              } else {
                for i in 0..<block { d[i] += s[i] }
              }
            }
          }
          offset += block
        }
      }
    }
  }

  package func slice(_ x: Variable, axis: Int, range: Range<Int>) -> Variable {
    let y = EVTensor.slice(x.value, axis: axis, range: range)
    let a = axis < 0 ? axis + x.value.rank : axis
    let outer = x.shape[..<a].reduce(1, *)
    let inner = x.shape[(a + 1)...].reduce(1, *)
    let (block, stride) = (range.count * inner, x.shape[a] * inner)
    return record(y, inputs: [x]) { g in
      // The slice's gradient back in its place, zeros around it.
      g.withUnsafeBufferPointer { gp in
        x.addToZeroedGradient { dst in
          let base = dst + range.lowerBound * inner
          Parallel.forRanges(count: outer, costPerItem: block) { rows in
            for o in rows {
              let (d, s) = (base + o * stride, gp.baseAddress! + o * block)
              for i in 0..<block { d[i] += s[i] }
            }
          }
        }
      }
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
    return record(value, inputs: [x, weight] + (bias.map { [$0] } ?? [])) { g in
      g.withUnsafeBufferPointer { gp in
        let g = gp.baseAddress!
        // dx = g·W, dW = gᵀ·x, db = Σ rows of g.
        weight.value.withUnsafeBufferPointer { pw in
          x.addToGradient { dx, fresh in
            Products.gemm(
              g, pw.baseAddress!, into: dx, m: rows, n: inF, k: outF, accumulate: !fresh)
          }
        }
        x.value.withUnsafeBufferPointer { px in
          weight.addToGradient { dw, fresh in
            Products.gemm(
              g, px.baseAddress!, into: dw, m: outF, n: inF, k: rows, transA: true,
              accumulate: !fresh)
          }
        }
        bias?.addToZeroedGradient { db in
          Loops.addColumnSums(g, rows: rows, cols: outF, into: db)
        }
      }
    }
  }

  /// Batched `a · b` (or `a · bᵀ`) over the last two axes; the leading axes must agree, or one
  /// side has a batch of 1 that every batch of the other shares.
  package func matmul(_ a: Variable, _ b: Variable, transposeB: Bool = false) -> Variable {
    product(a, b, transposeB: transposeB, adding: nil)
  }

  /// `matmul`, started from a copy of `addend` when there is one (same shape as the product,
  /// or a batch of 1 for every batch).
  func product(_ a: Variable, _ b: Variable, transposeB: Bool, adding addend: Variable?)
    -> Variable
  {
    let (batchA, batchB) = (a.shape.dropLast(2).reduce(1, *), b.shape.dropLast(2).reduce(1, *))
    precondition(
      a.shape.dropLast(2) == b.shape.dropLast(2) || batchA == 1 || batchB == 1,
      "matmul: \(a.shape) · \(b.shape)")
    let (m, k) = (a.dim(-2), a.dim(-1))
    let n = transposeB ? b.dim(-2) : b.dim(-1)
    let batch = max(batchA, batchB)
    let shape = Array((batchA >= batchB ? a : b).shape.dropLast(2)) + [m, n]
    let sharedAddend = addend.map { $0.count == m * n && batch > 1 } ?? false
    if let addend {
      precondition(
        addend.shape == shape || (sharedAddend && addend.dim(0) == 1),
        "matmul: adding \(addend.shape) to \(shape)")
    }
    let y: Tensor
    if let addend, batch * m * n > 0 {
      y = Tensor(uninitializedShape: shape) { out in
        addend.value.withUnsafeBufferPointer { pc in
          for i in 0..<(sharedAddend ? batch : 1) {
            (out.baseAddress! + i * m * n).update(
              from: pc.baseAddress!, count: sharedAddend ? m * n : out.count)
          }
        }
        a.value.withUnsafeBufferPointer { pa in
          b.value.withUnsafeBufferPointer { pb in
            for i in 0..<batch {
              Products.gemm(
                pa.baseAddress! + (batchA == 1 ? 0 : i) * m * k,
                pb.baseAddress! + (batchB == 1 ? 0 : i) * k * n, into: out.baseAddress! + i * m * n,
                m: m, n: n, k: k, transB: transposeB, accumulate: true)
            }
          }
        }
      }
    } else {
      y = Products.batched(a.value, b.value, transB: transposeB)
    }
    return record(y, inputs: [a, b] + (addend.map { [$0] } ?? []), name: "matmul") { g in
      g.withUnsafeBufferPointer { gp in
        let g = gp.baseAddress!
        if let addend {
          addend.addToGradient { dc, fresh in
            if sharedAddend {
              Loops.sumOverBatch(g, batch: batch, count: m * n, into: dc, accumulate: !fresh)
            } else if fresh {
              dc.update(from: g, count: batch * m * n)
            } else {
              Loops.add(g, into: dc, count: batch * m * n)
            }
          }
        }
        // dA = dY·Bᵀ (or dY·B); dB = Aᵀ·dY (or dYᵀ·A). A shared side sums over the batch.
        b.value.withUnsafeBufferPointer { pb in
          a.addToBatchedGradient(batch: batch, shared: batchA == 1) { i, da, accumulate in
            Products.gemm(
              g + i * m * n, pb.baseAddress! + (batchB == 1 ? 0 : i) * k * n, into: da, m: m,
              n: k, k: n, transB: !transposeB, accumulate: accumulate)
          }
        }
        a.value.withUnsafeBufferPointer { pa in
          b.addToBatchedGradient(batch: batch, shared: batchB == 1) { i, db, accumulate in
            let ai = pa.baseAddress! + (batchA == 1 ? 0 : i) * m * k
            if transposeB {
              Products.gemm(
                g + i * m * n, ai, into: db, m: n, n: k, k: m, transA: true,
                accumulate: accumulate)
            } else {
              Products.gemm(
                ai, g + i * m * n, into: db, m: k, n: n, k: m, transA: true,
                accumulate: accumulate)
            }
          }
        }
      }
    }
  }
}

extension Variable {
  /// Adds a batched product's contribution to this operand's gradient, batch item by batch
  /// item (`body(i, target, accumulate)` writes item i's part to `target`): into item i's
  /// own block, or, when this operand is `shared` by the whole batch, every item into the
  /// one block.
  func addToBatchedGradient(
    batch: Int, shared: Bool,
    _ body: (_ item: Int, _ target: UnsafeMutablePointer<Float>, _ accumulate: Bool) -> Void
  ) {
    addToGradient { g, fresh in
      let block = shared ? 0 : count / batch
      for i in 0..<batch {
        body(i, g + i * block, !fresh || (shared && i > 0))
      }
    }
  }
}
