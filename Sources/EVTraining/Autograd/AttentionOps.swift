import EVTensor

extension Tape {
  /// Multi-head scaled dot-product attention between SAM's projections: head h owns channels
  /// h·d ..< (h+1)·d (d = C / heads) of q `[Bq, Nq, C]`, k and v `[Bk, Nk, C]`, and its output
  /// `softmax(q_h·k_hᵀ/√d)·v_h` goes to the same channels of `[B, Nq, C]`. A batch of 1 on
  /// either side is shared by every batch of the other (the first block's image side is the
  /// same for all prompts of an image, so it is projected once); its gradient is the sum over
  /// the batch. The products read and write each head in place through their leading
  /// dimensions, so no head is copied out, and only the probabilities are kept for the
  /// backward pass. `PlainOps.attention` is the twin built from reshapes, permutes, products
  /// and a softmax.
  package func attention(q: Variable, k: Variable, v: Variable, heads: Int) -> Variable {
    let (bq, nq, c) = (q.dim(0), q.dim(1), q.dim(2))
    let (bk, nk) = (k.dim(0), k.dim(1))
    precondition(
      v.shape == k.shape && k.dim(2) == c && c % heads == 0 && (bq == bk || bq == 1 || bk == 1),
      "attention: q \(q.shape), k \(k.shape), v \(v.shape), \(heads) heads")
    let batch = max(bq, bk)
    let d = c / heads
    let scale = 1 / Float(d).squareRoot()
    let (qStride, kStride) = (bq == 1 ? 0 : nq * c, bk == 1 ? 0 : nk * c)
    let plane = nq * nk
    let scores = Tensor(uninitializedShape: [batch, heads, nq, nk]) { s in
      q.value.withUnsafeBufferPointer { pq in
        k.value.withUnsafeBufferPointer { pk in
          Parallel.forRanges(count: batch * heads, costPerItem: plane * d) { items in
            for item in items {
              let (b, h) = (item / heads, item % heads)
              BLAS.serialSgemm(
                transA: false, transB: true, m: nq, n: nk, k: d, alpha: scale,
                a: pq.baseAddress! + b * qStride + h * d, lda: c,
                b: pk.baseAddress! + b * kStride + h * d, ldb: c,
                beta: 0, c: s.baseAddress! + item * plane, ldc: nk)
            }
          }
        }
      }
    }
    let probabilities = EVTensor.softmax(scores)
    let out = Tensor(uninitializedShape: [batch, nq, c]) { o in
      probabilities.withUnsafeBufferPointer { pp in
        v.value.withUnsafeBufferPointer { pv in
          Parallel.forRanges(count: batch * heads, costPerItem: plane * d) { items in
            for item in items {
              let (b, h) = (item / heads, item % heads)
              BLAS.serialSgemm(
                transA: false, transB: false, m: nq, n: d, k: nk, alpha: 1,
                a: pp.baseAddress! + item * plane, lda: nk,
                b: pv.baseAddress! + b * kStride + h * d, ldb: c,
                beta: 0, c: o.baseAddress! + b * nq * c + h * d, ldc: c)
            }
          }
        }
      }
    }
    return record(out, inputs: [q, k, v]) { g in
      var dq = q.takeZeroedGradient()
      var dk = k.takeZeroedGradient()
      var dv = v.takeZeroedGradient()
      withPointers(q.value, k.value, v.value, probabilities) { pq, pk, pv, pp in
        g.withUnsafeBufferPointer { gp in
          withMutablePointers(&dq, &dk, &dv) { dq, dk, dv in
            // Head by head in parallel (a head owns its channels in every gradient, so the
            // tasks never write the same place), the batch in order within a head: a shared
            // side's gradient sums over it.
            Parallel.forRanges(count: heads, costPerItem: batch * plane * d * 4) { hs in
              withUnsafeTemporaryAllocation(of: Float.self, capacity: plane) { scratch in
                let ds = scratch.baseAddress!
                for h in hs {
                  for b in 0..<batch {
                    let p = pp + (b * heads + h) * plane
                    let gh = gp.baseAddress! + b * nq * c + h * d
                    let (qh, kh, vh) = (
                      pq + b * qStride + h * d, pk + b * kStride + h * d, pv + b * kStride + h * d
                    )
                    // dP = G·Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)), the softmax's backward.
                    BLAS.serialSgemm(
                      transA: false, transB: true, m: nq, n: nk, k: d, alpha: 1, a: gh, lda: c,
                      b: vh, ldb: c, beta: 0, c: ds, ldc: nk)
                    Loops.softmaxBackwardRows(
                      y: p, g: ds, into: ds, rows: nq, cols: nk, accumulate: false)
                    if let dq {
                      // dQ += scale · dS·K
                      BLAS.serialSgemm(
                        transA: false, transB: false, m: nq, n: d, k: nk, alpha: scale, a: ds,
                        lda: nk, b: kh, ldb: c, beta: 1, c: dq + b * qStride + h * d, ldc: c)
                    }
                    if let dk {
                      // dK += scale · dSᵀ·Q
                      BLAS.serialSgemm(
                        transA: true, transB: false, m: nk, n: d, k: nq, alpha: scale, a: ds,
                        lda: nk, b: qh, ldb: c, beta: 1, c: dk + b * kStride + h * d, ldc: c)
                    }
                    if let dv {
                      // dV += Pᵀ·G
                      BLAS.serialSgemm(
                        transA: true, transB: false, m: nk, n: d, k: nq, alpha: 1, a: p, lda: nk,
                        b: gh, ldb: c, beta: 1, c: dv + b * kStride + h * d, ldc: c)
                    }
                  }
                }
              }
            }
          }
        }
      }
      q.restoreGradient(dq)
      k.restoreGradient(dk)
      v.restoreGradient(dv)
    }
  }
}

extension Variable {
  /// The gradient moved out of the variable (zeros when there was none), for an op that adds
  /// to it in parts from several threads; empty when no gradient is wanted. Give it back with
  /// `restoreGradient`. Moving it out leaves the array unshared, so writing it copies nothing.
  func takeZeroedGradient() -> [Float] {
    guard requiresGrad else { return [] }
    defer { grad = nil }
    return grad ?? [Float](repeating: 0, count: count)
  }

  func restoreGradient(_ g: [Float]) {
    if requiresGrad { grad = g }
  }
}

/// The base addresses of four tensors' storage.
func withPointers<R>(
  _ a: Tensor, _ b: Tensor, _ c: Tensor, _ d: Tensor,
  _ body: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>)
    -> R
) -> R {
  a.withUnsafeBufferPointer { pa in
    b.withUnsafeBufferPointer { pb in
      c.withUnsafeBufferPointer { pc in
        d.withUnsafeBufferPointer { pd in
          body(pa.baseAddress!, pb.baseAddress!, pc.baseAddress!, pd.baseAddress!)
        }
      }
    }
  }
}

/// The base addresses of three arrays, nil for an empty one (a gradient nobody wants).
private func withMutablePointers(
  _ a: inout [Float], _ b: inout [Float], _ c: inout [Float],
  _ body: (UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?, UnsafeMutablePointer<Float>?)
    -> Void
) {
  a.withUnsafeMutableBufferPointer { pa in
    b.withUnsafeMutableBufferPointer { pb in
      c.withUnsafeMutableBufferPointer { pc in
        body(
          pa.isEmpty ? nil : pa.baseAddress, pb.isEmpty ? nil : pb.baseAddress,
          pc.isEmpty ? nil : pc.baseAddress)
      }
    }
  }
}
