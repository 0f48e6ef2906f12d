// pycocotools' compressed counts string: each run (after the third, as the difference to the run
// two before it, which is usually small) in little-endian groups of 5 bits, one character per
// group: bit 0x20 = "more groups follow", bit 0x10 of the last group = sign, offset by ASCII 48.

extension RLE {
  /// Parses a compressed counts string (COCO `"counts": "…"`).
  public init(compressed string: String, height: Int, width: Int) throws(RLEError) {
    let counts = try RLE.parseCompressed(Array(string.utf8))
    try self.init(height: height, width: width, counts: counts)
  }

  private static func parseCompressed(_ s: [UInt8]) throws(RLEError) -> [UInt32] {
    var counts: [UInt32] = []
    counts.reserveCapacity(s.count / 2 + 1)
    var p = 0
    while p < s.count {
      var x: Int64 = 0
      var k: Int64 = 0
      var more = true
      while more {
        guard p < s.count else { throw .truncatedString }
        let byte = s[p]
        guard byte >= 48, byte <= 111 else { throw .invalidCharacter(position: p, character: byte) }
        let c = Int64(byte - 48)
        x |= (c & 0x1f) << (5 * k)
        more = (c & 0x20) != 0
        p += 1
        k += 1
        if !more && (c & 0x10) != 0 { x |= -1 << (5 * k) }
      }
      if counts.count > 2 { x += Int64(counts[counts.count - 2]) }
      guard x >= 0, x <= Int64(UInt32.max) else {
        throw .countOutOfRange(index: counts.count, value: x)
      }
      counts.append(UInt32(x))
    }
    return counts
  }

  /// The compressed counts string pycocotools writes.
  public var compressedCounts: String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(counts.count * 2)
    for i in counts.indices {
      var x = Int64(counts[i])
      if i > 2 { x -= Int64(counts[i - 2]) }
      var more = true
      while more {
        var c = UInt8(truncatingIfNeeded: x & 0x1f)
        x >>= 5
        more = (c & 0x10) != 0 ? x != -1 : x != 0
        if more { c |= 0x20 }
        bytes.append(c + 48)
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// COCO's JSON form: `{"size": [h, w], "counts": "compressed"}`; decoding also accepts the
/// uncompressed form with a list of integer counts.
extension RLE: Codable {
  private enum Keys: String, CodingKey {
    case size
    case counts
  }

  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: Keys.self)
    let size = try container.decode([Int].self, forKey: .size)
    guard size.count == 2 else {
      throw DecodingError.dataCorruptedError(
        forKey: .size, in: container,
        debugDescription: "RLE size must be [height, width], got \(size)")
    }
    if let string = try? container.decode(String.self, forKey: .counts) {
      self = try RLE(compressed: string, height: size[0], width: size[1])
    } else {
      let counts = try container.decode([UInt32].self, forKey: .counts)
      self = try RLE(height: size[0], width: size[1], counts: counts)
    }
  }

  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: Keys.self)
    try container.encode([height, width], forKey: .size)
    try container.encode(compressedCounts, forKey: .counts)
  }
}
