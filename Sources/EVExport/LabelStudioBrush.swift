/// Label Studio's brush masks (`"format": "rle"` in a `brushlabels` value): the mask as RGBA
/// bytes (each pixel's value four times), run-length packed in thi.ng's rle-pack bit stream,
/// as label-studio-sdk's `converter.brush.encode_rle` writes it and Label Studio's editor
/// reads it.
///
/// The stream, most significant bit first: 32 bits of byte count, 5 bits of word size − 1 (7),
/// four 4-bit run-length field sizes − 1 (3, 4, 8, 16 bits); then per run a flag bit (1: one
/// word repeated, 0: literal words), 2 bits choosing the length field, the length − 1, and the
/// word(s); zero bits pad the end (1 to 8 of them, as the SDK writes).
public enum LabelStudioBrush {
  private static let lengthBits = [3, 4, 8, 16]

  /// The RLE of a row-major mask (non-zero = inside), painted with `value` (255 by default,
  /// what the SDK's SAM examples send).
  public static func encode(rowMajor mask: [UInt8], value: UInt8 = 255) -> [UInt8] {
    var bits = BitWriter()
    let count = mask.count * 4
    bits.write(UInt64(count), 32)
    bits.write(7, 5)
    for size in lengthBits { bits.write(UInt64(size - 1), 4) }
    var i = 0
    while i < mask.count {
      let word = mask[i] != 0 ? value : 0
      var j = i + 1
      while j < mask.count && (mask[j] != 0 ? value : 0) == word { j += 1 }
      var run = (j - i) * 4
      i = j
      // A long run goes out in 65,536-word pieces, every piece with the 16-bit length field.
      let field = run <= 8 ? 0 : run <= 16 ? 1 : run <= 256 ? 2 : 3
      while run > 65_536 {
        bits.repeated(word, length: 65_536, field: 3)
        run -= 65_536
      }
      bits.repeated(word, length: run, field: field)
    }
    bits.write(0, 8 - bits.count % 8)
    return bits.bytes
  }

  /// The mask (1 inside: any non-zero alpha, as Label Studio paints it) of `width × height`
  /// pixels, or nil when the stream is not one.
  public static func decode(_ rle: [UInt8], width: Int, height: Int) -> [UInt8]? {
    var bits = BitReader(rle)
    guard let count = bits.read(32), count == UInt64(width * height * 4),
      let wordSize = bits.read(5).map({ Int($0) + 1 })
    else { return nil }
    var sizes: [Int] = []
    for _ in 0..<4 {
      guard let s = bits.read(4) else { return nil }
      sizes.append(Int(s) + 1)
    }
    var words = [UInt8](repeating: 0, count: Int(count))
    var i = 0
    while i < words.count {
      guard let repeated = bits.read(1), let field = bits.read(2),
        let n = bits.read(sizes[Int(field)])
      else { return nil }
      let end = i + 1 + Int(n)
      guard end <= words.count else { return nil }
      if repeated == 1 {
        guard let w = bits.read(wordSize) else { return nil }
        for k in i..<end { words[k] = UInt8(truncatingIfNeeded: w) }
      } else {
        for k in i..<end {
          guard let w = bits.read(wordSize) else { return nil }
          words[k] = UInt8(truncatingIfNeeded: w)
        }
      }
      i = end
    }
    return (0..<(width * height)).map { words[4 * $0 + 3] != 0 ? 1 : 0 }
  }
}

private struct BitWriter {
  var bytes: [UInt8] = []
  var count = 0

  /// One run: `length` copies of `word`, the length in field `field` of (3, 4, 8, 16) bits.
  mutating func repeated(_ word: UInt8, length: Int, field: Int) {
    write(1, 1)
    write(UInt64(field), 2)
    write(UInt64(length - 1), [3, 4, 8, 16][field])
    write(UInt64(word), 8)
  }

  mutating func write(_ value: UInt64, _ width: Int) {
    for k in stride(from: width - 1, through: 0, by: -1) {
      if count % 8 == 0 { bytes.append(0) }
      if (value >> UInt64(k)) & 1 == 1 { bytes[bytes.count - 1] |= UInt8(0x80) >> UInt8(count % 8) }
      count += 1
    }
  }
}

private struct BitReader {
  let bytes: [UInt8]
  var position = 0

  init(_ bytes: [UInt8]) { self.bytes = bytes }

  mutating func read(_ width: Int) -> UInt64? {
    guard position + width <= bytes.count * 8 else { return nil }
    var value: UInt64 = 0
    for _ in 0..<width {
      let bit = (bytes[position / 8] >> UInt8(7 - position % 8)) & 1
      value = value << 1 | UInt64(bit)
      position += 1
    }
    return value
  }
}
