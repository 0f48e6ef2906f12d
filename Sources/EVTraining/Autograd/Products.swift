import EVTensor

/// The products of the differentiable ops, through `BLAS.sgemm` (float32, the encoder's own
/// kernels). `Reference.linear` and `Reference.matmul` are the plain twins the tests hold
/// them against.
enum Products {
  /// Row-major `op(A)·op(B)`, `m × n`.
  static func gemm(
    _ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transA: Bool = false,
    transB: Bool = false, aOffset: Int = 0, bOffset: Int = 0
  ) -> [Float] {
    guard m > 0, n > 0 else { return [Float](repeating: 0, count: max(0, m * n)) }
    return [Float](unsafeUninitializedCapacity: m * n) { c, count in
      a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
          gemm(
            pa.baseAddress! + aOffset, pb.baseAddress! + bOffset, into: c.baseAddress!, m: m,
            n: n, k: k, transA: transA, transB: transB, accumulate: false)
        }
      }
      count = m * n
    }
  }

  /// `C = op(A)·op(B)`, or `C += op(A)·op(B)` when `accumulate`, on dense row-major operands
  /// (the leading dimensions follow from the shapes). Large products split over the cores.
  static func gemm(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into c: UnsafeMutablePointer<Float>,
    m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, accumulate: Bool,
    alpha: Float = 1
  ) {
    guard m > 0, n > 0 else { return }
    BLAS.sgemm(
      transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
      a: a, lda: transA ? m : k, b: b, ldb: transB ? k : n,
      beta: accumulate ? 1 : 0, c: c, ldc: n)
  }

  /// `x·Wᵀ + b` over the last axis of `x` (rows × in), W `[out, in]`.
  static func linear(_ x: [Float], rows: Int, weight: [Float], out: Int, bias: [Float]?) -> [Float]
  {
    let inF = weight.count / out
    var y = gemm(x, weight, m: rows, n: out, k: inF, transB: true)
    if let bias {
      y.withUnsafeMutableBufferPointer { py in
        bias.withUnsafeBufferPointer { pb in
          addRowVector(pb.baseAddress!, to: py.baseAddress!, rows: rows, cols: out)
        }
      }
    }
    return y
  }

  /// `y[r, c] += v[c]` for every row.
  static func addRowVector(
    _ v: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>, rows: Int, cols: Int
  ) {
    Parallel.forRanges(count: rows, costPerItem: cols) { range in
      for r in range {
        let row = y + r * cols
        for c in 0..<cols { row[c] += v[c] }
      }
    }
  }

  /// Batched `op(A)·op(B)` over the leading axes; a batch of 1 on either side is shared by
  /// every batch of the other (`torch.matmul` broadcasting).
  static func batched(
    _ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false
  ) -> Tensor {
    let m = transA ? a.dim(-1) : a.dim(-2)
    let k = transA ? a.dim(-2) : a.dim(-1)
    let n = transB ? b.dim(-2) : b.dim(-1)
    let (batchA, batchB) = (a.shape.dropLast(2).reduce(1, *), b.shape.dropLast(2).reduce(1, *))
    let batch = Array((batchA >= batchB ? a : b).shape.dropLast(2))
    let count = max(batchA, batchB)
    guard count * m * n > 0 else { return Tensor(zeros: batch + [m, n]) }
    return Tensor(uninitializedShape: batch + [m, n]) { out in
      a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
          for i in 0..<count {
            gemm(
              pa.baseAddress! + (batchA == 1 ? 0 : i) * m * k,
              pb.baseAddress! + (batchB == 1 ? 0 : i) * k * n, into: out.baseAddress! + i * m * n,
              m: m, n: n, k: k, transA: transA, transB: transB, accumulate: false)
          }
        }
      }
    }
  }
}
