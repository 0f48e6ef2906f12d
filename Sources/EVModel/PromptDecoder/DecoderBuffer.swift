import EVTensor

#if os(Linux)
  import Glibc
#endif

/// A fixed block of floats with a stable address.
///
/// The decoder's hot path is a chain of GEMMs over column slices of shared buffers; owning the
/// memory directly keeps those pointers valid without nesting `withUnsafe…` closures. Weight
/// buffers are written once in `init` and only read afterwards, which is what makes sharing them
/// across threads safe.
///
/// Buffers of 1 MB and more sit on 2 MB boundaries and ask Linux for huge pages: a prompt
/// streams about 32 MB of per-image arrays (each 2–4 MB) and 14 MB of weights, which in 4 KB
/// pages is about 12 000 TLB misses per prompt (the measurement is in docs/PERFORMANCE.md).
final class DecoderBuffer: @unchecked Sendable {
  let base: UnsafeMutablePointer<Float>
  let count: Int
  private let pageAligned: Bool

  /// Uninitialised storage for `count` floats.
  init(count: Int) {
    self.count = count
    #if os(Linux)
      let bytes = count * MemoryLayout<Float>.stride
      if bytes >= 1 << 20 {
        let huge = 1 << 21
        let rounded = (bytes + huge - 1) / huge * huge
        var p: UnsafeMutableRawPointer? = nil
        if posix_memalign(&p, huge, rounded) == 0, let p {
          // Advice only: without transparent huge pages the buffer is an ordinary one.
          _ = madvise(p, rounded, MADV_HUGEPAGE)
          base = p.bindMemory(to: Float.self, capacity: count)
          pageAligned = true
          return
        }
      }
    #endif
    base = .allocate(capacity: max(count, 1))
    pageAligned = false
  }

  convenience init(_ values: [Float]) {
    self.init(count: values.count)
    values.withUnsafeBufferPointer { base.initialize(from: $0.baseAddress!, count: values.count) }
  }

  convenience init(_ tensor: Tensor) { self.init(tensor.storage) }

  deinit {
    if pageAligned {
      free(base)
    } else {
      base.deallocate()
    }
  }
}
