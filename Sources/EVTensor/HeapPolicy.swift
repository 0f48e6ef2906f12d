import CKernels

/// How the process's allocator treats the large, short-lived buffers that inference makes.
///
/// Every op of the encoder writes a fresh tensor (XL1's largest are 128 MB). glibc serves
/// blocks above its mmap threshold with fresh mappings and unmaps them when they are freed, so
/// the next op faults every page in again and the kernel zeroes it first: on XL1 that was
/// 5–15 % of the encoder's time (docs/PERFORMANCE.md). `retainFreedMemory` makes
/// freed blocks stay in the heap for the next request of the same size.
///
/// The price: the process keeps its high-water mark of memory after a peak instead of
/// returning it to the system. A process-wide setting, so the executable decides (the `evsam`
/// tool calls it at start); an app embedding the library may call it too.
public enum HeapPolicy {
  /// Serve every block from the heap (no per-block mappings) and never trim it. Returns false
  /// where it does not apply (a C library other than glibc).
  @discardableResult
  public static func retainFreedMemory() -> Bool {
    evk_retain_freed_memory() == 1
  }

  /// Gives the free pages of the whole heap back to the system (glibc's `malloc_trim(0)`,
  /// which walks every arena, not only the top of the main one). The counterpart of
  /// `retainFreedMemory` for a long-running process that promises a memory bound: keep freed
  /// blocks while the process is within its budget, call this when it is not. Costs the next
  /// large allocations their page faults again. Returns false when nothing was released or the
  /// C library is not glibc.
  @discardableResult
  public static func releaseFreeMemory() -> Bool {
    evk_release_free_memory() == 1
  }

  /// At most `count` allocator arenas for the threads started from now on. glibc gives busy
  /// threads arenas of their own, and `releaseFreeMemory` cannot shrink the top of those (only
  /// the main arena's): freed scratch of worker threads would stay resident there whatever the
  /// process trims. A process that bounds its memory calls this with 1 before starting
  /// threads; the big tensors take the arena lock rarely, so sharing it costs little. Returns
  /// false where it does not apply.
  @discardableResult
  public static func limitArenas(_ count: Int) -> Bool {
    evk_limit_arenas(Int32(clamping: count)) == 1
  }
}
