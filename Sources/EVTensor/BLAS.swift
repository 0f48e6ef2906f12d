import CKernels

#if canImport(Accelerate)
  import Accelerate
#elseif canImport(CBLAS)
  import CBLAS
#endif

/// The single seam between the kernels and the platform BLAS.
///
/// Everything that multiplies matrices goes through here, so swapping the BLAS (or counting its
/// calls) touches one function.
///
/// OpenBLAS runs single-threaded and large products are split here, over the same
/// `concurrentPerform` workers the other kernels use. With OpenBLAS's own pool, its idle workers
/// spin (sched_yield) for a while after every call and fight our workers for the two cores;
/// measured on L0 that spinning was ~8 % of all CPU time. One pool for everything avoids it.
///
/// On CPUs with AVX-512 the larger products go to our own kernel (`evk_sgemm_large`) instead:
/// OpenBLAS chooses its kernels from `OPENBLAS_CORETYPE` when that is set, and machines of this
/// project's kind set it to Haswell, which halves its speed there (docs/PERFORMANCE.md).
public enum BLAS {
  /// Below this many multiply-adds a product runs on the calling thread.
  static let splitThreshold = 1 << 21

  /// From this many multiply-adds on, a product on an AVX-512 CPU runs in `evk_sgemm_large`;
  /// below it, packing costs more than the wider kernel saves.
  static let ownKernelThreshold = 1 << 18

  /// OpenBLAS's thread count is process-wide; set it once, before the first call.
  private static let singleThreaded: Void = {
    #if canImport(CBLAS) && !canImport(Accelerate)
      openblas_set_num_threads(1)
    #endif
  }()

  /// Row-major `C[m×n] = alpha·op(A)·op(B) + beta·C`, where `op(A)` is `m×k` and `op(B)` is `k×n`.
  /// With `beta == 0`, `C` is write-only (it may hold garbage or NaN on entry).
  ///
  /// Then each row `i` of C becomes `activation(C[i, :] + rowBias[i])` (a convolution's bias
  /// and activation, one output channel per row), fused into the product where the kernel
  /// allows it, so those rows are finished while they are still in cache.
  public static func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
    rowBias: UnsafePointer<Float>? = nil, activation: Activation = .identity
  ) {
    precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m=\(m) n=\(n) k=\(k)")
    guard m > 0, n > 0 else { return }
    let threads = Parallel.cores
    if threads > 1 && m &* n &* k >= splitThreshold && max(m, n) >= 32 {
      // Split the larger output dimension into panels, one per thread, in multiples of 16
      // (the kernels' register-block width) so no panel gets a ragged edge in the middle.
      let splitN = n >= m
      let extent = splitN ? n : m
      let parts = min(threads, max(1, extent / 16))
      let step = ((extent + parts - 1) / parts + 15) / 16 * 16
      Parallel.forRanges(count: parts, costPerItem: Parallel.minimumWork) { range in
        for p in range {
          let lo = p * step
          let hi = min(extent, lo + step)
          guard lo < hi else { continue }
          if splitN {
            serialSgemm(
              transA: transA, transB: transB, m: m, n: hi - lo, k: k, alpha: alpha,
              a: a, lda: lda, b: transB ? b + lo * ldb : b + lo, ldb: ldb,
              beta: beta, c: c + lo, ldc: ldc, rowBias: rowBias, activation: activation)
          } else {
            serialSgemm(
              transA: transA, transB: transB, m: hi - lo, n: n, k: k, alpha: alpha,
              a: transA ? a + lo : a + lo * lda, lda: lda, b: b, ldb: ldb,
              beta: beta, c: c + lo * ldc, ldc: ldc, rowBias: rowBias.map { $0 + lo },
              activation: activation)
          }
        }
      }
      return
    }
    serialSgemm(
      transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
      a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc, rowBias: rowBias,
      activation: activation)
  }

  /// `sgemm` on the calling thread only: for kernels that already run in parallel (each of
  /// their workers multiplies its own matrices).
  public static func serialSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
    rowBias: UnsafePointer<Float>? = nil, activation: Activation = .identity
  ) {
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
      applyRowEpilogue(m: m, n: n, c: c, ldc: ldc, rowBias: rowBias, activation: activation)
      return
    }
    if m &* n &* k >= ownKernelThreshold {
      let fused = activation.epilogueCode
      if evk_sgemm_large(
        transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
        fused == nil ? nil : rowBias, fused ?? Int32(EVK_EPILOGUE_NONE)) != 0
      {
        if fused == nil {
          applyRowEpilogue(m: m, n: n, c: c, ldc: ldc, rowBias: rowBias, activation: activation)
        }
        return
      }
    }
    platformSgemm(
      transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
      a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    applyRowEpilogue(m: m, n: n, c: c, ldc: ldc, rowBias: rowBias, activation: activation)
  }

  /// `C[i, :] = activation(C[i, :] + rowBias[i])` for every row, as a separate pass.
  static func applyRowEpilogue(
    m: Int, n: Int, c: UnsafeMutablePointer<Float>, ldc: Int, rowBias: UnsafePointer<Float>?,
    activation: Activation
  ) {
    guard rowBias != nil || activation != .identity else { return }
    for i in 0..<m {
      applyBiasActivation(c + i * ldc, count: n, bias: rowBias?[i] ?? 0, activation)
    }
  }

  /// The platform BLAS (or the portable loops), on the calling thread.
  static func platformSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
  ) {
    _ = singleThreaded
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
