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

  /// Threads the kernels spread work over (all cores unless `ComputeThreads.set` said fewer).
  static var cores: Int { threadLimit.load(ordering: .relaxed) }

  /// Below this many element-operations a job runs inline: waking threads costs more than it saves.
  static let minimumWork = 1 << 15

  /// Calls `body` on disjoint subranges covering `0..<count`, possibly concurrently.
  /// `costPerItem` is a rough operation count per index, used only to decide whether to split.
  /// `serial` runs everything on the calling thread (for callers that are already parallel).
  public static func forRanges(
    count: Int, costPerItem: Int = 1, serial: Bool = false, _ body: (Range<Int>) -> Void
  ) {
    guard count > 0 else { return }
    let work = count &* max(1, costPerItem)
    if serial || cores == 1 || count == 1 || work < minimumWork {
      body(0..<count)
      return
    }
    // A few chunks per core keeps cores busy when one is briefly taken by something else.
    let chunks = min(count, count >= cores * 4 && work >= minimumWork * 8 ? cores * 4 : cores)
    // concurrentPerform wants a @Sendable closure, but kernels capture raw pointers into buffers
    // whose disjoint parts the chunks write; the call returns only after every chunk has run.
    withoutActuallyEscaping(body) { body in
      let work = UncheckedSendable(body)
      DispatchQueue.concurrentPerform(iterations: chunks) { i in
        let lo = count * i / chunks
        let hi = count * (i + 1) / chunks
        if lo < hi { work.value(lo..<hi) }
      }
    }
  }

  /// Calls `body(i)` for every `i` in `0..<count`, grouping indices into per-thread chunks.
  public static func forEach(count: Int, costPerItem: Int = 1, _ body: (Int) -> Void) {
    forRanges(count: count, costPerItem: costPerItem) { range in
      for i in range { body(i) }
    }
  }
}

/// Carries a value into a `@Sendable` closure when the caller guarantees race freedom.
struct UncheckedSendable<Value>: @unchecked Sendable {
  let value: Value
  init(_ value: Value) { self.value = value }
}

/// How many threads the kernels use, for the kernels' own loops and for BLAS alike.
public enum ComputeThreads {
  /// The current limit; all cores by default.
  public static var count: Int { Parallel.cores }

  /// Limits every kernel (BLAS products included: they are split by `BLAS.sgemm`, OpenBLAS
  /// itself runs single-threaded) to `n` threads; `nil` restores all cores.
  public static func set(_ n: Int?) {
    let limit = max(1, min(n ?? Parallel.available, 256))
    Parallel.threadLimit.store(limit, ordering: .relaxed)
  }
}
