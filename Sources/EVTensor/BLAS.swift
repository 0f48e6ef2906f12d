#if canImport(Accelerate)
  import Accelerate
#elseif canImport(CBLAS)
  import CBLAS
#endif

/// The single seam between the kernels and the platform BLAS.
///
/// Everything that multiplies matrices goes through here, so swapping the BLAS (or counting its
/// calls) touches one function. OpenBLAS brings its own threads; callers must not wrap this in
/// `concurrentPerform`, or the two thread pools fight over the same two cores.
public enum BLAS {
  /// Row-major `C[m×n] = alpha·op(A)·op(B) + beta·C`, where `op(A)` is `m×k` and `op(B)` is `k×n`.
  /// With `beta == 0`, `C` is write-only (it may hold garbage or NaN on entry).
  public static func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m=\(m) n=\(n) k=\(k)")
    guard m > 0, n > 0 else { return }
    if k == 0 {
      // BLAS implementations disagree on whether k == 0 touches C; define it as C = beta·C.
      for i in 0..<m {
        let row = c + i * ldc
        if beta == 0 {
          for j in 0..<n { row[j] = 0 }
        } else {
          for j in 0..<n { row[j] *= beta }
        }
      }
      return
    }
    #if canImport(Accelerate) || canImport(CBLAS)
      cblas_sgemm(
        CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        .init(m), .init(n), .init(k), alpha, a, .init(lda), b, .init(ldb), beta, c, .init(ldc))
    #else
      portableSgemm(
        transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
        a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    #endif
  }

  /// Plain-loop GEMM for platforms without a BLAS; correct, not fast.
  static func portableSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    for i in 0..<m {
      let row = c + i * ldc
      for j in 0..<n { row[j] = beta == 0 ? 0 : row[j] * beta }
      for p in 0..<k {
        let av = alpha * (transA ? a[p * lda + i] : a[i * lda + p])
        if transB {
          for j in 0..<n { row[j] += av * b[j * ldb + p] }
        } else {
          let brow = b + p * ldb
          for j in 0..<n { row[j] += av * brow[j] }
        }
      }
    }
  }
}
