import Foundation

/// Spreads independent per-mask work over the cores.
///
/// Only used between decoder calls, when OpenBLAS's threads are idle, so the two never compete.
enum ConcurrentChunks {
  static let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)

  /// Calls `body` on disjoint ranges covering `0..<count`, concurrently when there is more than
  /// one item and core. Several chunks per core, so a core briefly busy elsewhere does not hold
  /// up the rest; each chunk sets up its own scratch memory once.
  static func run(count: Int, _ body: (Range<Int>) -> Void) {
    guard count > 0 else { return }
    let chunks = min(count, cores == 1 ? 1 : cores * 4)
    if chunks == 1 {
      body(0..<count)
      return
    }
    // concurrentPerform returns only after every chunk ran, so the non-escaping body outlives
    // all its uses; chunks write disjoint slots.
    withoutActuallyEscaping(body) { body in
      let job = UncheckedSendable(body)
      DispatchQueue.concurrentPerform(iterations: chunks) { i in
        let range = (count * i / chunks)..<(count * (i + 1) / chunks)
        if !range.isEmpty { job.value(range) }
      }
    }
  }
}

/// Carries a value (a pointer into a buffer whose disjoint slots different threads write, or a
/// closure) into `concurrentPerform`'s `@Sendable` closure.
struct UncheckedSendable<Value>: @unchecked Sendable {
  let value: Value
  init(_ value: Value) { self.value = value }
}
