import CKernels
import Foundation
import Synchronization

/// Splits independent work across the machine's cores with `concurrentPerform`.
///
/// This is the process's only compute pool: OpenBLAS runs single-threaded and `BLAS.sgemm`
/// splits large products over these same workers. Inside a parallel body, multiply with
/// `BLAS.serialSgemm`.
public enum Parallel {
  static let available = max(1, ProcessInfo.processInfo.activeProcessorCount)
  static let threadLimit = Atomic<Int>(max(1, ProcessInfo.processInfo.activeProcessorCount))

  /// Threads the kernels spread work over: all cores unless `ComputeThreads.set` said fewer
  /// for the process, or `ComputeThreads.limited(to:_:)` for the calling thread.
  static var cores: Int {
    let process = threadLimit.load(ordering: .relaxed)
    let local = Int(evk_thread_compute_limit())
    return local > 0 ? min(process, local) : process
  }

  /// Below this many element-operations a job runs inline: waking threads costs more than it saves.
  static let minimumWork = 1 << 15

  /// Calls `body` on disjoint subranges covering `0..<count`, possibly concurrently.
  /// `costPerItem` is a rough operation count per index, used only to decide whether to split.
  /// `serial` runs everything on the calling thread (for callers that are already parallel).
  public static func forRanges(
    count: Int, costPerItem: Int = 1, serial: Bool = false, _ body: (Range<Int>) -> Void
  ) {
    if serial {
      if count > 0 { body(0..<count) }
      return
    }
    forChunks(count: count, chunks: chunkCount(count: count, costPerItem: costPerItem)) {
      _, range in body(range)
    }
  }

  /// How many chunks `forChunks` splits `count` items of `costPerItem` into (1 when the work is
  /// too small to be worth waking threads).
  public static func chunkCount(count: Int, costPerItem: Int = 1) -> Int {
    let work = count &* max(1, costPerItem)
    if cores == 1 || count <= 1 || work < minimumWork { return 1 }
    // A few chunks per core keeps cores busy when one is briefly taken by something else.
    return min(count, count >= cores * 4 && work >= minimumWork * 8 ? cores * 4 : cores)
  }

  /// `forRanges` that also passes each chunk's index, `0 ..< chunks`, for bodies that keep
  /// scratch memory per chunk: the caller sizes that memory from `chunks`, which it gets from
  /// `chunkCount` once (the thread limit may change in between). A chunk never runs
  /// concurrently with itself, so per-chunk scratch is never shared.
  public static func forChunks(
    count: Int, chunks: Int, _ body: (_ chunk: Int, _ range: Range<Int>) -> Void
  ) {
    guard count > 0 else { return }
    let chunks = max(1, min(chunks, count))
    if chunks == 1 {
      body(0, 0..<count)
      return
    }
    // concurrentPerform wants a @Sendable closure, but kernels capture raw pointers into buffers
    // whose disjoint parts the chunks write; the call returns only after every chunk has run.
    // The calling thread's own limits (`ComputeThreads.limited`, `SIMDLevel.capped`) hold for
    // the work it hands to other threads too.
    let (limit, cap) = (evk_thread_compute_limit(), evk_thread_simd_cap())
    withoutActuallyEscaping(body) { body in
      let work = UncheckedSendable(body)
      DispatchQueue.concurrentPerform(iterations: chunks) { i in
        let lo = count * i / chunks
        let hi = count * (i + 1) / chunks
        guard lo < hi else { return }
        let saved = (evk_set_thread_compute_limit(limit), evk_set_thread_simd_cap(cap))
        work.value(i, lo..<hi)
        evk_set_thread_compute_limit(saved.0)
        evk_set_thread_simd_cap(saved.1)
      }
    }
  }

  /// Calls `body(i)` for every `i` in `0..<count`, grouping indices into per-thread chunks.
  public static func forEach(count: Int, costPerItem: Int = 1, _ body: (Int) -> Void) {
    forRanges(count: count, costPerItem: costPerItem) { range in
      for i in range { body(i) }
    }
  }

  /// Calls `body` on disjoint ranges covering `0..<count`, several per core whatever the
  /// size of the work: for a few items of heavy work each (the mask generator's per-mask
  /// post-processing), where `chunkCount`'s estimate does not apply.
  package static func forHeavyRanges(count: Int, _ body: (Range<Int>) -> Void) {
    forChunks(count: count, chunks: cores == 1 ? 1 : cores * 4) { _, range in body(range) }
  }

  /// Calls `body(i)` for every index of `weights`, heaviest first, each index taken by the
  /// next free thread: for a few jobs of very different sizes (a checkpoint's tensors).
  /// Runs inline when their total is below `minimumTotal`.
  package static func forEach(weights: [Int], minimumTotal: Int, _ body: (Int) -> Void) {
    if cores == 1 || weights.count < 2 || weights.reduce(0, +) < minimumTotal {
      for i in weights.indices { body(i) }
      return
    }
    let order = weights.indices.sorted { weights[$0] > weights[$1] }
    let (limit, cap) = (evk_thread_compute_limit(), evk_thread_simd_cap())
    withoutActuallyEscaping(body) { body in
      let work = UncheckedSendable(body)
      DispatchQueue.concurrentPerform(iterations: order.count) { i in
        let saved = (evk_set_thread_compute_limit(limit), evk_set_thread_simd_cap(cap))
        work.value(order[i])
        evk_set_thread_compute_limit(saved.0)
        evk_set_thread_simd_cap(saved.1)
      }
    }
  }
}

/// Carries a value into a `@Sendable` closure when the caller guarantees race freedom (a
/// closure that `concurrentPerform` runs and that outlives none of its calls, a pointer into
/// a buffer whose disjoint slots different threads write).
package struct UncheckedSendable<Value>: @unchecked Sendable {
  package let value: Value
  package init(_ value: Value) { self.value = value }
}

/// How many threads the kernels use, for the kernels' own loops and for BLAS alike.
public enum ComputeThreads {
  /// The limit in force on this thread; all cores by default.
  public static var count: Int { Parallel.cores }

  /// Runs `body` with the kernels it starts limited to `n` threads (at most the process-wide
  /// limit); other threads are not affected. For callers that run several independent
  /// computations side by side, one per core.
  public static func limited<R>(to n: Int, _ body: () throws -> R) rethrows -> R {
    let previous = evk_set_thread_compute_limit(Int32(max(1, n)))
    defer { evk_set_thread_compute_limit(previous) }
    return try body()
  }

  /// Limits every kernel (BLAS products included: they are split by `BLAS.sgemm`, OpenBLAS
  /// itself runs single-threaded) to `n` threads; `nil` restores all cores.
  public static func set(_ n: Int?) {
    let limit = max(1, min(n ?? Parallel.available, 256))
    Parallel.threadLimit.store(limit, ordering: .relaxed)
  }
}
