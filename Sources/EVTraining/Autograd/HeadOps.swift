import EVTensor

// Per-head products between a few token rows and a weight: what folds an attention's
// image-side projection into its token side (docs/PERFORMANCE.md, "Training step"). With T
// tokens, 8 heads of d channels and D = 256 features, `q_h·(W_h x + b_h)` over the 4096 image
// tokens becomes `(q_h W_h)·x`, one 8T × 256 product with the image tokens instead of a
// 4096 × 256 × 128 projection first; these ops make the 8T × 256 side.

extension Tape {
  /// Row `h·T + t` of the result is `scale · x[t, h·d ..< (h+1)·d] · W[h·d ..< (h+1)·d, :]`:
  /// token t's head-h slice through head h's rows of the weight. `x` is `[B, T, C]` (C =
  /// heads·d), `weight` `[C, D]` (or `[D, C]` with `transposedWeight`, read as its
  /// transpose); the result is `[B, heads·T, D]`. `PlainOps.headProjection` is its twin.
  package func headProjection(
    _ x: Variable, weight: Variable, heads: Int, scale: Float = 1, transposedWeight: Bool = false
  ) -> Variable {
    let (b, t, c) = (x.dim(0), x.dim(1), x.dim(2))
    let d = c / heads
    let features = transposedWeight ? weight.dim(0) : weight.dim(1)
    precondition(
      c % heads == 0 && (transposedWeight ? weight.dim(1) : weight.dim(0)) == c,
      "headProjection: x \(x.shape), weight \(weight.shape), \(heads) heads")
    // Head h's rows of W: at W + h·d·D (row stride D), or, transposed, at W + h·d (stride C).
    let (headOffset, ld) = transposedWeight ? (d, c) : (d * features, features)
    let y = Tensor(uninitializedShape: [b, heads * t, features]) { out in
      x.value.withUnsafeBufferPointer { px in
        weight.value.withUnsafeBufferPointer { pw in
          for i in 0..<b {
            for h in 0..<heads {
              BLAS.sgemm(
                transA: false, transB: transposedWeight, m: t, n: features, k: d, alpha: scale,
                a: px.baseAddress! + i * t * c + h * d, lda: c,
                b: pw.baseAddress! + h * headOffset, ldb: ld, beta: 0,
                c: out.baseAddress! + (i * heads + h) * t * features, ldc: features)
            }
          }
        }
      }
    }
    return record(y, inputs: [x, weight]) { g in
      g.withUnsafeBufferPointer { gp in
        let g = gp.baseAddress!
        weight.value.withUnsafeBufferPointer { pw in
          x.addToZeroedGradient { dx in
            // dx[t, head h] += scale · dY_h · W_hᵀ
            for i in 0..<b {
              for h in 0..<heads {
                BLAS.sgemm(
                  transA: false, transB: !transposedWeight, m: t, n: d, k: features,
                  alpha: scale, a: g + (i * heads + h) * t * features, lda: features,
                  b: pw.baseAddress! + h * headOffset, ldb: ld, beta: 1,
                  c: dx + i * t * c + h * d, ldc: c)
              }
            }
          }
        }
        x.value.withUnsafeBufferPointer { px in
          weight.addToZeroedGradient { dw in
            // dW_h += scale · x_hᵀ · dY_h (or its transpose).
            for i in 0..<b {
              for h in 0..<heads {
                let (xh, gh) = (
                  px.baseAddress! + i * t * c + h * d, g + (i * heads + h) * t * features
                )
                if transposedWeight {
                  BLAS.sgemm(
                    transA: true, transB: false, m: features, n: d, k: t, alpha: scale, a: gh,
                    lda: features, b: xh, ldb: c, beta: 1, c: dw + h * d, ldc: c)
                } else {
                  BLAS.sgemm(
                    transA: true, transB: false, m: d, n: features, k: t, alpha: scale, a: xh,
                    lda: c, b: gh, ldb: features, beta: 1, c: dw + h * d * features,
                    ldc: features)
                }
              }
            }
          }
        }
      }
    }
  }

  /// The way back from `heads·T` rows to T tokens: `out[t, h·d ..< (h+1)·d] = c[h·T + t, :] ·
  /// W[h·d ..< (h+1)·d, :]ᵀ`, for `c` `[B, heads·T, D]` and `weight` `[C, D]` (an
  /// `nn.Linear` weight, C = heads·d outputs of D inputs); the result is `[B, T, C]`. The
  /// value projection of a folded attention: `P·(x Wᵀ)` per head is `(P·x)·W_hᵀ`.
  package func headMerge(_ c: Variable, weight: Variable, heads: Int) -> Variable {
    let (b, rows, features) = (c.dim(0), c.dim(1), c.dim(2))
    let channels = weight.dim(0)
    let (t, d) = (rows / heads, channels / heads)
    precondition(
      rows % heads == 0 && channels % heads == 0 && weight.dim(1) == features,
      "headMerge: c \(c.shape), weight \(weight.shape), \(heads) heads")
    let y = Tensor(uninitializedShape: [b, t, channels]) { out in
      c.value.withUnsafeBufferPointer { pc in
        weight.value.withUnsafeBufferPointer { pw in
          for i in 0..<b {
            for h in 0..<heads {
              BLAS.sgemm(
                transA: false, transB: true, m: t, n: d, k: features, alpha: 1,
                a: pc.baseAddress! + (i * heads + h) * t * features, lda: features,
                b: pw.baseAddress! + h * d * features, ldb: features, beta: 0,
                c: out.baseAddress! + i * t * channels + h * d, ldc: channels)
            }
          }
        }
      }
    }
    return record(y, inputs: [c, weight]) { g in
      g.withUnsafeBufferPointer { gp in
        let g = gp.baseAddress!
        weight.value.withUnsafeBufferPointer { pw in
          c.addToZeroedGradient { dc in
            // dC_h = dOut[:, head h] · W_h
            for i in 0..<b {
              for h in 0..<heads {
                BLAS.sgemm(
                  transA: false, transB: false, m: t, n: features, k: d, alpha: 1,
                  a: g + i * t * channels + h * d, lda: channels,
                  b: pw.baseAddress! + h * d * features, ldb: features, beta: 1,
                  c: dc + (i * heads + h) * t * features, ldc: features)
              }
            }
          }
        }
        c.value.withUnsafeBufferPointer { pc in
          weight.addToZeroedGradient { dw in
            // dW_h += dOut[:, head h]ᵀ · C_h
            for i in 0..<b {
              for h in 0..<heads {
                BLAS.sgemm(
                  transA: true, transB: false, m: d, n: features, k: t, alpha: 1,
                  a: g + i * t * channels + h * d, lda: channels,
                  b: pc.baseAddress! + (i * heads + h) * t * features, ldb: features, beta: 1,
                  c: dw + h * d * features, ldc: features)
              }
            }
          }
        }
      }
    }
  }

  /// `x + rows` for `x` `[B, N, C]` and `rows` `[B, 1, C]` (or `[1, 1, C]`, the same for
  /// every batch): each batch's row added to its N rows (a bias, or a per-prompt offset of
  /// the scores).
  package func addRows(_ x: Variable, _ rows: Variable) -> Variable {
    let (b, n, c) = (x.dim(0), x.dim(1), x.dim(2))
    let shared = rows.dim(0) == 1
    precondition(
      rows.dim(1) == 1 && rows.dim(2) == c && (shared || rows.dim(0) == b),
      "addRows: \(x.shape) + \(rows.shape)")
    let y = Tensor(uninitializedShape: x.shape) { out in
      x.value.withUnsafeBufferPointer { px in
        rows.value.withUnsafeBufferPointer { pr in
          Parallel.forRanges(count: b * n, costPerItem: c) { range in
            for r in range {
              let (src, dst) = (px.baseAddress! + r * c, out.baseAddress! + r * c)
              let row = pr.baseAddress! + (shared ? 0 : r / n) * c
              for j in 0..<c { dst[j] = src[j] + row[j] }
            }
          }
        }
      }
    }
    return record(y, inputs: [x, rows]) { g in
      x.accumulate(g)
      g.withUnsafeBufferPointer { gp in
        rows.addToZeroedGradient { dr in
          for i in 0..<b {
            Loops.addColumnSums(
              gp.baseAddress! + i * n * c, rows: n, cols: c, into: dr + (shared ? 0 : i * c))
          }
        }
      }
    }
  }

  /// `addend + a·b` (or `addend + a·bᵀ`): a batched product that starts from a copy of
  /// `addend` (the output's shape, or a batch of 1 for every batch), so a residual sum costs
  /// no tensor of its own.
  package func matmul(
    _ a: Variable, _ b: Variable, transposeB: Bool = false, adding addend: Variable
  ) -> Variable {
    product(a, b, transposeB: transposeB, adding: addend)
  }

  /// `x` itself, with `unused` recorded as an input that gets a zero gradient: for a
  /// parameter that cannot change the output (the keys' bias of a folded token→image
  /// attention shifts a whole row of scores, which the softmax ignores), so that it still has
  /// a gradient and the optimiser treats it as PyTorch does (whose gradient for it is
  /// rounding noise).
  package func ignoring(_ unused: Variable, _ x: Variable) -> Variable {
    record(x.value, inputs: [x, unused]) { g in
      x.accumulate(g)
      unused.addToZeroedGradient { _ in }
    }
  }
}

extension Tape {
  /// `softmax(a·bᵀ + r)` over groups of `group` consecutive columns (the whole row when
  /// `group` is its length): attention probabilities from a product, for `a` `[B, m, k]` and
  /// `b` `[B, n, k]` (either with a batch of 1 shared by all) and an optional per-batch row
  /// `r` `[B, 1, n]` added to every row. One op instead of a product, a sum and a softmax:
  /// only the probabilities are kept (the scores are overwritten by them), which for the
  /// decoder's 8·T × 4096 maps per prompt saves one or two tensors as large and their
  /// passes. The plain twin is `matmul`, `addRows` and `softmax` in a row.
  package func softmaxOfProduct(
    _ a: Variable, _ b: Variable, adding rowOffset: Variable? = nil, group: Int? = nil
  ) -> Variable {
    let (batchA, m, k) = (a.dim(0), a.dim(1), a.dim(2))
    let (batchB, n) = (b.dim(0), b.dim(1))
    let batch = max(batchA, batchB)
    let group = group ?? n
    precondition(
      b.dim(2) == k && (batchA == batchB || batchA == 1 || batchB == 1) && n % group == 0,
      "softmaxOfProduct: \(a.shape) · \(b.shape)ᵀ in groups of \(group)")
    if let rowOffset {
      precondition(rowOffset.shape == [batch, 1, n], "softmaxOfProduct: adding \(rowOffset.shape)")
    }
    let probabilities = Tensor(uninitializedShape: [batch, m, n]) { out in
      let out = out.baseAddress!
      a.value.withUnsafeBufferPointer { pa in
        b.value.withUnsafeBufferPointer { pb in
          for i in 0..<batch {
            let target = out + i * m * n
            if let rowOffset {
              rowOffset.value.withUnsafeBufferPointer { pr in
                for row in 0..<m {
                  (target + row * n).update(from: pr.baseAddress! + i * n, count: n)
                }
              }
            }
            Products.gemm(
              pa.baseAddress! + (batchA == 1 ? 0 : i) * m * k,
              pb.baseAddress! + (batchB == 1 ? 0 : i) * n * k, into: target, m: m, n: n, k: k,
              transB: true, accumulate: rowOffset != nil)
          }
        }
      }
      Loops.softmaxInPlace(out, rows: batch * m * n / group, cols: group)
    }
    let inputs = [a, b] + (rowOffset.map { [$0] } ?? [])
    return record(probabilities, inputs: inputs) { g in
      // dS = P ⊙ (dP − Σ_group dP·P), then the product's and the offset's gradients.
      let scores = [Float](unsafeUninitializedCapacity: batch * m * n) { ds, count in
        probabilities.withUnsafeBufferPointer { pp in
          g.withUnsafeBufferPointer { gp in
            Loops.softmaxBackward(
              y: pp.baseAddress!, g: gp.baseAddress!, into: ds.baseAddress!,
              rows: batch * m * n / group, cols: group, accumulate: false)
          }
        }
        count = batch * m * n
      }
      scores.withUnsafeBufferPointer { sp in
        let ds = sp.baseAddress!
        b.value.withUnsafeBufferPointer { pb in
          a.addToBatchedGradient(batch: batch, shared: batchA == 1) { i, da, accumulate in
            Products.gemm(
              ds + i * m * n, pb.baseAddress! + (batchB == 1 ? 0 : i) * n * k, into: da, m: m,
              n: k, k: n, accumulate: accumulate)
          }
        }
        a.value.withUnsafeBufferPointer { pa in
          b.addToBatchedGradient(batch: batch, shared: batchB == 1) { i, db, accumulate in
            Products.gemm(
              ds + i * m * n, pa.baseAddress! + (batchA == 1 ? 0 : i) * m * k, into: db, m: n,
              n: k, k: m, transA: true, accumulate: accumulate)
          }
        }
        rowOffset?.addToZeroedGradient { dr in
          for i in 0..<batch {
            Loops.addColumnSums(ds + i * m * n, rows: m, cols: n, into: dr + i * n)
          }
        }
      }
    }
  }
}
