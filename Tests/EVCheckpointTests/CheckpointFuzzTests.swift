// Bounded fuzzing of the checkpoint readers. A longer run (any count, same deterministic seed
// unless EVSAM_FUZZ_SEED is set too):
//   EVSAM_FUZZ_ITERATIONS=200000 swift test -c release --filter CheckpointFuzzTests
import EVCheckpoint
import EVTensor
import Foundation
import TestSupport
import Testing

/// Mutated PyTorch archives and safetensors files (bit flips, truncations, overwritten numbers,
/// edited strides, shapes, offsets and storage sizes with valid checksums, edited headers):
/// every one must load completely or throw a `CheckpointError`; a trap ends the test process.
@Suite struct CheckpointFuzzTests {
  typealias Generator = Fuzz.Generator

  static func environment(_ name: String) -> Int? {
    ProcessInfo.processInfo.environment[name].flatMap { Int($0) }
  }

  static let iterations = Fuzz.iterations(3000)
  static let seed = UInt64(truncatingIfNeeded: environment("EVSAM_FUZZ_SEED") ?? 20_261_207)

  /// Numbers at the edges: sign, byte and word boundaries, the per-view repetition limit, and
  /// values whose products or sums overflow.
  static let edges: [Int] = [
    0, 1, 2, 3, 4, 7, 8, 24, 255, 256, 65_535, 65_536, 1 << 20, 1 << 26, (1 << 26) + 1,
    Int(Int32.max), 1 << 31, 1 << 32, 1 << 40, 1 << 62, Int.max - 1, Int.max, -1, -2, Int.min,
  ]

  struct Tally {
    var loads = 0
    var errors = 0
  }

  /// Loads `bytes` in memory and checks the outcome: a complete load or an error naming it.
  static func check(
    _ bytes: [UInt8], _ rng: inout Generator, _ tally: inout Tally,
    context: @autoclosure () -> String
  ) {
    let declared = Bool.random(using: &rng) ? HostileCheckpointTests.declared() : nil
    do {
      let loaded = try LoadedCheckpoint(
        data: Data(bytes), file: "fuzz", verifyChecksums: Bool.random(using: &rng),
        expecting: declared, allowNonFinite: Bool.random(using: &rng))
      for (key, t) in loaded.tensors where t.count != t.shape.reduce(1, *) {
        Issue.record("\(context()): tensor \(key) has \(t.count) elements for shape \(t.shape)")
      }
      if let declared, loaded.tensors.count != declared.count {
        Issue.record("\(context()): \(loaded.tensors.count) tensors for \(declared.count) declared")
      }
      tally.loads += 1
    } catch {
      if error.file != "fuzz" { Issue.record("\(context()): error names \(error.file): \(error)") }
      tally.errors += 1
    }
  }

  /// Byte-level damage any file can suffer.
  static func damage(_ bytes: [UInt8], _ rng: inout Generator) -> [UInt8] {
    var out = bytes
    switch Int.random(in: 0..<4, using: &rng) {
    case 0:
      for _ in 0..<Int.random(in: 1...4, using: &rng) {
        out[Int.random(in: 0..<out.count, using: &rng)] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
      }
    case 1:
      out.removeLast(Int.random(in: 1...out.count, using: &rng))
    case 2:
      // An edge number over 2, 4 or 8 bytes: sizes, offsets and counts in binary headers.
      let width = [2, 4, 8].randomElement(using: &rng)!
      let at = Int.random(in: 0..<max(1, out.count - width), using: &rng)
      let value = UInt64(bitPattern: Int64(edges.randomElement(using: &rng)!))
      for i in 0..<width where at + i < out.count {
        out[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
      }
    default:
      let at = Int.random(in: 0..<out.count, using: &rng)
      out.insert(contentsOf: out[at..<min(out.count, at + 16)], at: at)
    }
    return out
  }

  // MARK: - PyTorch archives

  static let storageTypes = [
    "FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "DoubleStorage",
    "BoolStorage", "ComplexFloatStorage",
  ]

  /// The toy state dict with one field of one tensor changed, rebuilt so checksums match.
  static func editedArchive(_ rng: inout Generator) -> [UInt8] {
    var records = HostileCheckpointTests.records
    let i = Int.random(in: 0..<records.count, using: &rng)
    var r = records[i]
    func edge() -> Int { edges.randomElement(using: &rng)! }
    switch Int.random(in: 0..<8, using: &rng) {
    case 0: r.offset = edge()
    case 1 where !r.size.isEmpty: r.size[Int.random(in: 0..<r.size.count, using: &rng)] = edge()
    case 2 where !r.stride.isEmpty:
      r.stride[Int.random(in: 0..<r.stride.count, using: &rng)] = edge()
    case 3:
      // Expanded: every stride 0, with a larger logical size.
      r.stride = r.stride.map { _ in 0 }
      r.size = r.size.map { _ in [1, 2, 4096, 1 << 13, 1 << 20].randomElement(using: &rng)! }
    case 4: r.storageElements = edge()
    case 5: r.storageType = storageTypes.randomElement(using: &rng)!
    case 6:
      r.size.append(edge())
      r.stride.append(edge())
    default: r.storageKey = ["0", "1", "2", "3", "4"].randomElement(using: &rng)!
    }
    records[i] = r
    if Bool.random(using: &rng) { records.append(r) }
    return TorchPickle.archive(
      pickle: TorchPickle.stateDict(
        records, orderedDictMetadata: Bool.random(using: &rng), wrapper: Bool.random(using: &rng),
        protocol4: Bool.random(using: &rng)),
      storages: HostileCheckpointTests.storages())
  }

  @Test func mutatedArchivesLoadOrThrow() {
    var rng = Generator(seed: Self.seed)
    let base = HostileCheckpointTests.archive()
    var tally = Tally()
    for n in 0..<Self.iterations {
      var bytes = n % 3 == 1 ? base : Self.editedArchive(&rng)
      if n % 3 != 0 { bytes = Self.damage(bytes, &rng) }
      Self.check(bytes, &rng, &tally, context: "archive case \(n) (seed \(Self.seed))")
    }
    #expect(tally.loads + tally.errors == Self.iterations)
    #expect(tally.errors > 0 && tally.loads > 0, "loads \(tally.loads), errors \(tally.errors)")
  }

  // MARK: - Safetensors

  /// The toy tensors as safetensors, with the header as text for editing.
  static let safetensorsParts: (header: String, data: [UInt8]) = {
    let header =
      #"{"__metadata__":{"format":"pt"},"#
      + #""image_encoder.conv.bias":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"#
      + #""image_encoder.conv.weight":{"dtype":"F32","shape":[2,3,2,2],"data_offsets":[4,100]},"#
      + #""image_encoder.norm.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[100,108]},"#
      + #""mask_decoder.iou_token.weight":{"dtype":"BF16","shape":[1,4],"data_offsets":[108,116]}}"#
    var data = uint16Bytes([0x3C00, 0xBC00]) + float32Bytes((0..<24).map { Float($0) })
    data += int64Bytes([3]) + uint16Bytes([0x3F80, 0x4000, 0xC040, 0x0000])
    return (header, data)
  }()

  /// A safetensors file whose length prefix is off by `lengthDelta`.
  static func safetensors(header: String, data: [UInt8], lengthDelta: Int = 0) -> [UInt8] {
    var out = SafeTensorsTests.file(header: header, data: data)
    let length = Int(out[0]) | Int(out[1]) << 8 | Int(out[2]) << 16 | Int(out[3]) << 24
    var prefix: [UInt8] = []
    prefix.le64(UInt64(bitPattern: Int64(length + lengthDelta)))
    out.replaceSubrange(0..<8, with: prefix)
    return out
  }

  /// The header with one number, dtype or structural character replaced.
  static func editedHeader(_ rng: inout Generator) -> String {
    var header = Array(safetensorsParts.header)
    let numbers = header.indices.filter {
      header[$0].isNumber && ($0 == 0 || !header[$0 - 1].isNumber)
    }
    switch Int.random(in: 0..<4, using: &rng) {
    case 0, 1:
      let start = numbers.randomElement(using: &rng)!
      var end = start
      while end < header.count && header[end].isNumber { end += 1 }
      let replacement =
        Bool.random(using: &rng)
        ? String(edges.randomElement(using: &rng)!)
        : ["1e400", "-0", "2.5", "true", "null", "\"4\"", "18446744073709551616", "[]"]
          .randomElement(using: &rng)!
      header.replaceSubrange(start..<end, with: Array(replacement))
    case 2:
      let text = String(header)
      let dtypes = ["F32", "F16", "BF16", "I64", "F64", "U8", "BOOL", "C64", "F8_E4M3", ""]
      let from = ["\"F32\"", "\"F16\"", "\"BF16\"", "\"I64\""].randomElement(using: &rng)!
      return text.replacingOccurrences(
        of: from, with: "\"\(dtypes.randomElement(using: &rng)!)\"")
    default:
      let at = Int.random(in: 0..<header.count, using: &rng)
      header[at] = ["{", "}", "[", "]", ",", ":", "\"", " ", "\\"].randomElement(using: &rng)!
    }
    return String(header)
  }

  @Test func mutatedSafetensorsLoadOrThrow() {
    var rng = Generator(seed: Self.seed ^ 0x5AFE)
    let (header, data) = Self.safetensorsParts
    let base = Self.safetensors(header: header, data: data)
    var tally = Tally()
    for n in 0..<Self.iterations {
      var bytes: [UInt8]
      switch n % 4 {
      case 1: bytes = base
      case 2:
        bytes = Self.safetensors(
          header: header, data: data,
          lengthDelta: [-9, -8, -1, 1, 8, 1 << 20, 1 << 40].randomElement(using: &rng)!)
      default: bytes = Self.safetensors(header: Self.editedHeader(&rng), data: data)
      }
      if n % 4 == 1 || n % 4 == 3 { bytes = Self.damage(bytes, &rng) }
      Self.check(bytes, &rng, &tally, context: "safetensors case \(n) (seed \(Self.seed))")
    }
    #expect(tally.loads + tally.errors == Self.iterations)
    #expect(tally.errors > 0 && tally.loads > 0, "loads \(tally.loads), errors \(tally.errors)")
  }
}
