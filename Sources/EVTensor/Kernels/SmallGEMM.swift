import CKernels

/// Products of operands that already sit in cache, with a result that does not depend on how
/// the work is split (`evk_gemm`, Sources/CKernels/gemm.c).
///
/// Each element of C is one chain of multiply-adds over the inner dimension in order, so a
/// product computed in column panels on two threads equals the same product on one thread, bit
/// for bit. OpenBLAS's results change with its blocking, so per-prompt decoder results computed
/// through it would depend on the thread count; these do not. Nothing is packed and C is not
/// cleared in a separate pass, which is what OpenBLAS spends much of its time on at the mask
/// decoder's sizes.
public enum SmallGEMM {
  /// `C[m×n] = op(A)·B` (or `C + op(A)·B` with `accumulate`), on the calling thread. op(A) is
  /// `A` (m×k, row stride `lda`) or, with `transA`, the transpose of `A` stored k×m (row stride
  /// `lda`); `B` is k×n (row stride `ldb`).
  @inline(__always)
  public static func multiply(
    transA: Bool = false, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
    accumulate: Bool = false
  ) {
    precondition(m >= 0 && n >= 0 && k >= 0, "SmallGEMM: negative size m=\(m) n=\(n) k=\(k)")
    evk_gemm(transA ? 1 : 0, m, n, k, a, lda, b, ldb, c, ldc, accumulate ? 1 : 0)
  }

  /// `multiply` with B packed beforehand (`PackedMatrix`): for a B that many products share.
  @inline(__always)
  public static func multiply(
    transA: Bool = false, m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: PackedMatrix,
    c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false
  ) {
    precondition(k == b.rows, "SmallGEMM: inner dimension \(k) ≠ packed B's \(b.rows) rows")
    evk_gemm_prepacked(
      transA ? 1 : 0, m, b.columns, k, a, lda, b.storage, c, ldc, accumulate ? 1 : 0)
  }

  /// `multiply` with a packed B, split into column panels over the compute threads when it is
  /// large enough; the result is the same as on one thread.
  public static func parallelMultiply(
    transA: Bool = false, m: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: PackedMatrix,
    c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false
  ) {
    precondition(k == b.rows, "SmallGEMM: inner dimension \(k) ≠ packed B's \(b.rows) rows")
    let n = b.columns
    let panels = (n + 15) / 16
    Parallel.forRanges(count: panels, costPerItem: m * k * 16) { range in
      let j0 = range.lowerBound * 16
      let width = min(n, range.upperBound * 16) - j0
      // Panel p of the packing starts p·16·k floats in.
      evk_gemm_prepacked(
        transA ? 1 : 0, m, width, k, a, lda, b.storage + j0 * k, c + j0, ldc, accumulate ? 1 : 0)
    }
  }

  /// `multiply`, split into column panels over the compute threads when it is large enough;
  /// the result is the same as on one thread.
  public static func parallelMultiply(
    transA: Bool = false, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int,
    accumulate: Bool = false
  ) {
    // Panels of 16 columns: the kernel's register block.
    let panels = (n + 15) / 16
    Parallel.forRanges(count: panels, costPerItem: m * k * 16) { range in
      let j0 = range.lowerBound * 16
      let width = min(n, range.upperBound * 16) - j0
      multiply(
        transA: transA, m: m, n: width, k: k, a: a, lda: lda, b: b + j0, ldb: ldb, c: c + j0,
        ldc: ldc, accumulate: accumulate)
    }
  }
}

/// A matrix packed for `SmallGEMM` as its B operand: column panels of 16, each stored
/// contiguously, so that the product kernel reads it without cache conflicts.
public final class PackedMatrix: @unchecked Sendable {
  public let rows: Int
  public let columns: Int
  let storage: UnsafeMutablePointer<Float>

  /// Packs `b` (rows × columns, row stride `ld`).
  public init(_ b: UnsafePointer<Float>, rows: Int, columns: Int, ld: Int) {
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
public enum SIMDLevel: Int32, Sendable, CaseIterable, Comparable {
  case portable = 0
  case avx2 = 1
  case avx512 = 2

  /// The level in force on this thread: the best the CPU has, capped by `EVSAM_SIMD`
  /// (portable, avx2, avx512) and by `capped(at:_:)`.
  public static var current: SIMDLevel { SIMDLevel(rawValue: evk_simd_level()) ?? .portable }

  /// The levels this CPU can run, lowest first.
  public static var supported: [SIMDLevel] {
    let best = SIMDLevel(rawValue: evk_cpu_simd_level()) ?? .portable
    return allCases.filter { $0 <= best }
  }

  /// Runs `body` with the kernels it runs capped at `level`: on this thread and in the work it
  /// hands to `Parallel`; other threads are not affected. For tests comparing levels.
  public static func capped<R>(at level: SIMDLevel, _ body: () throws -> R) rethrows -> R {
    let previous = evk_set_thread_simd_cap(level.rawValue)
    defer { evk_set_thread_simd_cap(previous) }
    return try body()
  }

  public static func < (a: SIMDLevel, b: SIMDLevel) -> Bool { a.rawValue < b.rawValue }
}
