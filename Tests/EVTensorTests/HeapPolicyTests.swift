import EVTensor
import Testing

/// `HeapPolicy` must take effect where it claims to: with glibc both allocator settings apply.
/// (A first version tested `__GLIBC__` before including any C library header, so it was never
/// defined there and the policy silently did nothing.)
@Suite struct HeapPolicyTests {
  @Test func retainsFreedMemoryOnGlibc() {
    #if os(Linux) && canImport(Glibc)
      #expect(HeapPolicy.retainFreedMemory())
    #endif
  }
}
