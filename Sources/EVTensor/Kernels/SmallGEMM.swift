import CKernels

/// Products of operands that already sit in cache, with a result that does not depend on how
/// the work is split between threads (`evk_gemm`, Sources/CKernels/smallgemm.c).
///
/// With AVX2 (or AVX-512) each element of C is one chain of fused multiply-adds over the inner
/// dimension in order, so a product computed in column panels on two threads equals the same
/// product on one thread, bit for bit; nothing is packed except B's panels, and C is not
/// cleared in a separate pass, which is what OpenBLAS spends much of its time on at the mask
/// decoder's sizes. Below AVX2 (`SIMDLevel.portable`: other CPUs, or `EVSAM_SIMD=portable`)
/// the products go to the platform BLAS, whose results depend on the shapes it is given;
/// products here are only ever split at fixed points, so the results still do not depend on
/// the number of threads.
package enum SmallGEMM {
  /// `C[m×n] = op(A)·B` (or `C + op(A)·B` with `accumulate`), on the calling thread. op(A) is
  /// `A` (m×k, row stride `lda`) or, with `transA`, the transpose of `A` stored k×m (row stride
  /// `lda`); `B` is k×n (row stride `ldb`).
  @inline(__always)
  package static func multiply(
    transA: Bool = false, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
    accumulate: Bool = false
  ) {
    precondition(m >= 0 && n >= 0 && k >= 0, "SmallGEMM: negative size m=\(m) n=\(n) k=\(k)")
    if evk_gemm(transA ? 1 : 0, m, n, k, a, lda, b, ldb, c, ldc, accumulate ? 1 : 0) != 0 {
      return
    }
    BLAS.serialSgemm(
      transA: transA, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: lda, b: b,
      ldb: ldb, beta: accumulate ? 1 : 0, c: c, ldc: ldc)
  }

  /// `multiply` with B packed beforehand (`PackedMatrix`): for a B that many products share.
  @inline(__always)
  package static func multiply(
    transA: Bool = false, m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: PackedMatrix,
    c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false
  ) {
    multiply(
      transA: transA, m: m, k: k, a: a, lda: lda, b: b, columns: 0..<b.columns, c: c, ldc: ldc,
      accumulate: accumulate)
  }

  /// Columns `columns` (starting at a multiple of 16) of `multiply` with a packed B.
  private static func multiply(
    transA: Bool, m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: PackedMatrix,
    columns: Range<Int>, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool
  ) {
    precondition(k == b.rows, "SmallGEMM: inner dimension \(k) ≠ packed B's \(b.rows) rows")
    precondition(columns.lowerBound % 16 == 0 && columns.upperBound <= b.columns)
    let j0 = columns.lowerBound
    // Panel p of the packing is k rows of 16 floats, p·16·k floats in.
    if evk_gemm_prepacked(
      transA ? 1 : 0, m, columns.count, k, a, lda, b.storage + j0 * k, c + j0, ldc,
      accumulate ? 1 : 0) != 0
    {
      return
    }
    for p0 in stride(from: j0, to: columns.upperBound, by: 16) {
      BLAS.serialSgemm(
        transA: transA, transB: false, m: m, n: min(16, columns.upperBound - p0), k: k,
        alpha: 1, a: a, lda: lda, b: b.storage + p0 * k, ldb: 16, beta: accumulate ? 1 : 0,
        c: c + p0, ldc: ldc)
    }
  }

  /// Column blocks of a parallel product: fixed, whatever the thread count (see above).
  static let parallelBlocks = 8

  /// `multiply` with a packed B, split into column blocks over the compute threads; the result
  /// is the same as on one thread.
  package static func parallelMultiply(
    transA: Bool = false, m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: PackedMatrix,
    c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false
  ) {
    let panels = (b.columns + 15) / 16
    let blocks = min(panels, parallelBlocks)
    Parallel.forEach(count: blocks, costPerItem: m * k * 16 * panels / max(1, blocks)) { i in
      let columns = (16 * (panels * i / blocks))..<min(b.columns, 16 * (panels * (i + 1) / blocks))
      multiply(
        transA: transA, m: m, k: k, a: a, lda: lda, b: b, columns: columns, c: c, ldc: ldc,
        accumulate: accumulate)
    }
  }

  /// `multiply`, split into column blocks over the compute threads; the result is the same as
  /// on one thread.
  package static func parallelMultiply(
    transA: Bool = false, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
    accumulate: Bool = false
  ) {
    let panels = (n + 15) / 16
    let blocks = min(panels, parallelBlocks)
    Parallel.forEach(count: blocks, costPerItem: m * k * 16 * panels / max(1, blocks)) { i in
      let j0 = 16 * (panels * i / blocks)
      let j1 = min(n, 16 * (panels * (i + 1) / blocks))
      multiply(
        transA: transA, m: m, n: j1 - j0, k: k, a: a, lda: lda, b: b + j0, ldb: ldb, c: c + j0,
        ldc: ldc, accumulate: accumulate)
    }
  }
}

/// A matrix packed for `SmallGEMM` as its B operand: column panels of 16, each stored
/// contiguously, so that the product kernel reads it without cache conflicts.
package final class PackedMatrix: @unchecked Sendable {
  package let rows: Int
  package let columns: Int
  let storage: UnsafeMutablePointer<Float>

  /// Packs `b` (rows × columns, row stride `ld`).
  package init(_ b: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int) {
    precondition(rows >= 0 && columns >= 0 && ld >= columns, "PackedMatrix: bad geometry")
    self.rows = rows
    self.columns = columns
    let count = evk_gemm_packed_count(rows, columns)
    storage = .allocate(capacity: max(1, count))
    evk_gemm_pack(rows, columns, b, ld, storage)
  }

  deinit { storage.deallocate() }
}

/// The instruction-set level of the vector kernels in `CKernels`.
package enum SIMDLevel: Int32, Sendable, CaseIterable, Comparable {
  case portable = 0
  case avx2 = 1
  case avx512 = 2

  /// The level in force on this thread: the best the CPU has, capped by `EVSAM_SIMD`
  /// (portable, avx2, avx512) and by `capped(at:_:)`.
  package static var current: SIMDLevel { SIMDLevel(rawValue: evk_simd_level()) ?? .portable }

  /// The levels this process can run, lowest first: the CPU's, capped by `EVSAM_SIMD`.
  package static var supported: [SIMDLevel] {
    let best = SIMDLevel(rawValue: evk_available_simd_level()) ?? .portable
    return allCases.filter { $0 <= best }
  }

  /// Runs `body` with the kernels it runs capped at `level`: on this thread and in the work it
  /// hands to `Parallel`; other threads are not affected. For tests comparing levels.
  package static func capped<R>(at level: SIMDLevel, _ body: () throws -> R) rethrows -> R {
    let previous = evk_set_thread_simd_cap(level.rawValue)
    defer { evk_set_thread_simd_cap(previous) }
    return try body()
  }

  package static func < (a: SIMDLevel, b: SIMDLevel) -> Bool { a.rawValue < b.rawValue }
}
