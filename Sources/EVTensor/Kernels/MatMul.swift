/// Batched matrix product on the last two dimensions; see the API notes for broadcasting rules.
public func matmul(
  _ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false
) -> Tensor {
  precondition(
    a.rank >= 2 && b.rank >= 2, "matmul: operands need rank ≥ 2, got \(a.shape) and \(b.shape)")
  let m = transposeA ? a.dim(-1) : a.dim(-2)
  let k = transposeA ? a.dim(-2) : a.dim(-1)
  let kb = transposeB ? b.dim(-1) : b.dim(-2)
  let n = transposeB ? b.dim(-2) : b.dim(-1)
  precondition(
    k == kb,
    "matmul: inner dimensions differ (\(k) vs \(kb)) for \(a.shape)\(transposeA ? "ᵀ" : "") × \(b.shape)\(transposeB ? "ᵀ" : "")"
  )
  let aBatch = Array(a.shape.dropLast(2))
  let bBatch = Array(b.shape.dropLast(2))
  let batch: [Int]
  if aBatch == bBatch || b.rank == 2 {
    batch = aBatch
  } else if a.rank == 2 {
    batch = bBatch
  } else {
    preconditionFailure(
      "matmul: batch dimensions \(aBatch) and \(bBatch) differ and neither operand is rank 2")
  }
  let count = batch.reduce(1, *)
  let lda = a.dim(-1)
  let ldb = b.dim(-1)
  let aStride = a.rank == 2 ? 0 : m * k
  let bStride = b.rank == 2 ? 0 : k * n
  return Tensor(uninitializedShape: batch + [m, n]) { out in
    guard out.count > 0 else { return }
    a.withUnsafeBufferPointer { pa in
      b.withUnsafeBufferPointer { pb in
        let c = out.baseAddress!
        guard k > 0 else {
          c.initialize(repeating: 0, count: out.count)
          return
        }
        let (pa, pb) = (pa.baseAddress!, pb.baseAddress!)
        if b.rank == 2 && !transposeA && a.rank > 2 {
          // A shared right operand: the batch folds into M, giving one large GEMM.
          BLAS.sgemm(
            transA: false, transB: transposeB, m: count * m, n: n, k: k, alpha: 1,
            a: pa, lda: lda, b: pb, ldb: ldb, beta: 0, c: c, ldc: n)
          return
        }
        for i in 0..<count {
          BLAS.sgemm(
            transA: transposeA, transB: transposeB, m: m, n: n, k: k, alpha: 1,
            a: pa + i * aStride, lda: lda, b: pb + i * bStride, ldb: ldb,
            beta: 0, c: c + i * m * n, ldc: n)
        }
      }
    }
  }
}

/// nn.Linear: y = x·Wᵀ + b, then the activation, fused into one pass over the output.
public func linear(
  _ x: Tensor, weight: Tensor, bias: Tensor?, activation: Activation = .identity
) -> Tensor {
  precondition(x.rank >= 1 && weight.rank == 2, "linear: input \(x.shape), weight \(weight.shape)")
  let inFeatures = x.dim(-1)
  let outFeatures = weight.shape[0]
  precondition(
    weight.shape[1] == inFeatures,
    "linear: weight \(weight.shape) does not take \(inFeatures) input features (input \(x.shape))")
  if let bias {
    precondition(
      bias.count == outFeatures, "linear: bias has \(bias.count) values for \(outFeatures) outputs")
  }
  let rows = x.shape.dropLast().reduce(1, *)
  let shape = Array(x.shape.dropLast()) + [outFeatures]
  return Tensor(uninitializedShape: shape) { out in
    guard out.count > 0 else { return }
    let c = out.baseAddress!
    x.withUnsafeBufferPointer { px in
      weight.withUnsafeBufferPointer { pw in
        if inFeatures == 0 {
          c.initialize(repeating: 0, count: out.count)
        } else {
          BLAS.sgemm(
            transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures, alpha: 1,
            a: px.baseAddress!, lda: inFeatures, b: pw.baseAddress!, ldb: inFeatures,
            beta: 0, c: c, ldc: outFeatures)
        }
      }
    }
    guard bias != nil || activation != .identity else { return }
    withOptionalPointer(bias) { pb in
      Parallel.forEach(count: rows, costPerItem: outFeatures * activation.cost) { r in
        applyBiasVectorActivation(c + r * outFeatures, count: outFeatures, bias: pb, activation)
      }
    }
  }
}

/// Runs `body` with the tensor's base pointer, or nil for a missing or empty tensor.
@inline(__always)
func withOptionalPointer<R>(_ t: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
  guard let t, t.count > 0 else { return body(nil) }
  return t.withUnsafeBufferPointer { body($0.baseAddress!) }
}
