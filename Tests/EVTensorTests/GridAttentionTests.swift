import EVTensor
import Testing

@Suite("Grid attention against its plain twin")
struct GridAttentionTests {
  static func random(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = SplitMix64(seed: seed)
    let n = shape.reduce(1, *)
    return Tensor(
      shape: shape,
      storage: (0..<n).map { _ in scale * (Float(rng.next() >> 40) / Float(1 << 24) * 2 - 1) })
  }

  /// Windows (several groups), a grid whose rows do not divide the query blocks (side 20: 12
  /// rows per block, the last one short), with and without relative positions, on every SIMD
  /// level this CPU has.
  @Test(arguments: [(groups: 3, side: 5, heads: 2, d: 4), (1, 20, 3, 8), (2, 14, 1, 16)])
  func matchesThePlainDefinition(groups: Int, side: Int, heads: Int, d: Int) {
    let channels = heads * d
    let qkv = Self.random([groups * side * side, 3 * channels], seed: 1, scale: 2)
    let relH = Self.random([2 * side - 1, d], seed: 2)
    let relW = Self.random([2 * side - 1, d], seed: 3)
    let scale = 1 / Float(d).squareRoot()
    for relative in [true, false] {
      let expected = Reference.gridAttention(
        qkv: qkv, groups: groups, side: side, heads: heads, relH: relative ? relH : nil,
        relW: relative ? relW : nil, scale: scale)
      for level in SIMDLevel.supported {
        let actual = SIMDLevel.capped(at: level) {
          gridAttention(
            qkv: qkv, groups: groups, side: side, heads: heads, relH: relative ? relH : nil,
            relW: relative ? relW : nil, scale: scale)
        }
        #expect(actual.shape == expected.shape)
        var worst: Float = 0
        for (a, b) in zip(actual.storage, expected.storage) { worst = max(worst, abs(a - b)) }
        #expect(worst < 2e-5, "\(level) side \(side) relative \(relative): max |Δ| \(worst)")
      }
    }
  }
}
