/// 64-bit FNV-1a, for fingerprints that say whether two things are the same: two runs'
/// starting points, the weights an embedding was made with.
package struct FNV1a {
  package private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

  package init() {}

  private static let prime: UInt64 = 0x0000_0100_0000_01B3

  package mutating func add(_ text: String) {
    for b in text.utf8 {
      value ^= UInt64(b)
      value &*= Self.prime
    }
  }

  /// The four bytes of `word`, least significant first.
  package mutating func add(_ word: UInt32) {
    var w = word
    for _ in 0..<4 {
      value ^= UInt64(w & 0xFF)
      value &*= Self.prime
      w >>= 8
    }
  }

  package var hex: String { hex16(value) }
}

/// `v` as 16 hex digits.
package func hex16(_ v: UInt64) -> String {
  let digits = String(v, radix: 16)
  return String(repeating: "0", count: 16 - digits.count) + digits
}

/// A hash of every tensor's key, shape and values: whether two sets of weights are the same,
/// wherever their files have moved.
package func weightsFingerprint(_ tensors: [String: Tensor]) -> String {
  var hash = FNV1a()
  for key in tensors.keys.sorted() {
    let t = tensors[key]!
    hash.add(key + "\(t.shape)")
    t.withUnsafeBufferPointer { values in
      for v in values { hash.add(v.bitPattern) }
    }
  }
  return hash.hex
}
