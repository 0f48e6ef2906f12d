import Foundation

/// Spreads independent decoding jobs over the cores.
enum ParallelWork {
  static let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)

  /// Below this many bytes in total, starting threads costs more than it saves.
  static let minimumBytes = 8 << 20

  /// Calls `body(i)` once for every `i` in `0..<weights.count`, possibly concurrently, the
  /// heaviest jobs first. `concurrentPerform` hands out iterations one at a time, so a core
  /// that is briefly busy elsewhere does not hold up the rest.
  ///
  /// `body` must be safe to run concurrently for different `i` (callers write disjoint slots).
  static func run(weights: [Int], _ body: (Int) -> Void) {
    let total = weights.reduce(0, +)
    if cores == 1 || weights.count < 2 || total < minimumBytes {
      for i in weights.indices { body(i) }
      return
    }
    let order = weights.indices.sorted { weights[$0] > weights[$1] }
    // concurrentPerform wants a @Sendable closure; it returns only after every iteration ran,
    // so the non-escaping body outlives all uses.
    withoutActuallyEscaping(body) { body in
      let job = UncheckedJob(body: body)
      DispatchQueue.concurrentPerform(iterations: order.count) { job.body(order[$0]) }
    }
  }

  private struct UncheckedJob: @unchecked Sendable {
    let body: (Int) -> Void
  }
}
