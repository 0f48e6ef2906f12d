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
    var c = [Float](repeating: 0, count: m * n)
    guard m > 0, n > 0 else { return c }
    if k == 0 { return c }
    a.withUnsafeBufferPointer { pa in
      b.withUnsafeBufferPointer { pb in
        c.withUnsafeMutableBufferPointer { pc in
          BLAS.sgemm(
            transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1,
            a: pa.baseAddress! + aOffset, lda: transA ? m : k,
            b: pb.baseAddress! + bOffset, ldb: transB ? k : n,
            beta: 0, c: pc.baseAddress!, ldc: n)
        }
      }
    }
    return c
  }

  /// `x·Wᵀ + b` over the last axis of `x` (rows × in), W `[out, in]`.
  static func linear(_ x: [Float], rows: Int, weight: [Float], out: Int, bias: [Float]?) -> [Float]
  {
    let inF = weight.count / out
    var y = gemm(x, weight, m: rows, n: out, k: inF, transB: true)
    if let bias {
      for r in 0..<rows { for o in 0..<out { y[r * out + o] += bias[o] } }
    }
    return y
  }

  /// Batched `A·B` / `A·Bᵀ` / `Aᵀ·B` over equal leading axes.
  static func batched(
    _ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false
  ) -> Tensor {
    let m = transA ? a.dim(-1) : a.dim(-2)
    let k = transA ? a.dim(-2) : a.dim(-1)
    let n = transB ? b.dim(-2) : b.dim(-1)
    let batch = Array(a.shape.dropLast(2))
    let count = batch.reduce(1, *)
    var out = [Float]()
    out.reserveCapacity(count * m * n)
    for i in 0..<count {
      out += gemm(
        a.storage, b.storage, m: m, n: n, k: k, transA: transA, transB: transB,
        aOffset: i * m * k, bOffset: i * k * n)
    }
    return Tensor(shape: batch + [m, n], storage: out)
  }
}
