import EVTensor
import Foundation

/// Deterministic inputs for the parser fuzz tests: every failure reproduces from its seed.
/// `EVSAM_FUZZ_ITERATIONS=100000 swift test -c release --filter "Fuzz|ImageHardening"` runs them longer
/// (`EVSAM_FUZZ_SEED` picks another seed where a test reads it).
public enum Fuzz {
  /// How many generated inputs a fuzz test tries: `standard` in the test suite, or
  /// `EVSAM_FUZZ_ITERATIONS` when set.
  public static func iterations(_ standard: Int) -> Int {
    ProcessInfo.processInfo.environment["EVSAM_FUZZ_ITERATIONS"].flatMap(Int.init) ?? standard
  }

  /// The project's seeded generator (`EVTensor.SplitMix64`).
  package typealias Generator = SplitMix64

  /// One mutation of `bytes`: bit flips, a run of random or extreme bytes (0x00, 0xFF, 0x7F,
  /// 0x80: the edges of lengths and counts), a truncation, a duplicated or deleted block, or
  /// several of these, so that headers, lengths and payloads all get hit.
  package static func mutate(_ bytes: [UInt8], using rng: inout Generator) -> [UInt8] {
    var out = bytes
    for _ in 0..<Int.random(in: 1...4, using: &rng) {
      guard !out.isEmpty else { break }
      // Headers hold the interesting fields: half the edits land in the first 64 bytes.
      let limit = Bool.random(using: &rng) ? min(out.count, 64) : out.count
      let at = Int.random(in: 0..<limit, using: &rng)
      switch Int.random(in: 0..<6, using: &rng) {
      case 0:
        out[at] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
      case 1:
        let edge: [UInt8] = [0x00, 0xFF, 0x7F, 0x80]
        for i in at..<min(out.count, at + Int.random(in: 1...8, using: &rng)) {
          out[i] = edge.randomElement(using: &rng)!
        }
      case 2:
        for i in at..<min(out.count, at + Int.random(in: 1...16, using: &rng)) {
          out[i] = UInt8.random(in: 0...255, using: &rng)
        }
      case 3:
        out.removeSubrange(Int.random(in: 0..<out.count, using: &rng)...)
      case 4:
        let end = min(out.count, at + Int.random(in: 1...64, using: &rng))
        out.insert(contentsOf: out[at..<end], at: at)
      default:
        out.removeSubrange(at..<min(out.count, at + Int.random(in: 1...64, using: &rng)))
      }
    }
    return out
  }
}

/// The seeded generator under the name some suites use.
package typealias SeededGenerator = SplitMix64
