import EVExport
import Foundation
import TestSupport
import Testing

/// Label Studio's brush RLE: the bytes label-studio-converter's `encode_rle` writes, and masks
/// that its `decode_rle` (the reader Label Studio's own tools use) gives back.
@Suite struct LabelStudioBrushTests {
  @Test func matchesTheConvertersBytes() {
    // Written by label-studio-converter 0.0.59's brush.encode_rle for these masks (×255, RGBA).
    var small = [UInt8](repeating: 0, count: 15)
    for x in 1...3 { small[5 + x] = 1 }
    #expect(
      LabelStudioBrush.encode(rowMajor: small)
        == [0, 0, 0, 60, 57, 27, 254, 23, 0, 183, 255, 133, 192, 0])
    #expect(
      LabelStudioBrush.encode(rowMajor: [0, 0, 0, 0]) == [0, 0, 0, 16, 57, 27, 253, 240, 0])
    // 360,000 words of zeros: five 65,536-word pieces and the rest, 27 bytes.
    #expect(LabelStudioBrush.encode(rowMajor: [UInt8](repeating: 0, count: 300 * 300)).count == 27)
  }

  @Test(arguments: 0..<6) func roundTrips(seed: Int) {
    let width = 31 + 17 * seed
    let height = 23 + 11 * seed
    let mask = MaskShapes.blobs(seed: UInt64(seed), width: width, height: height)
    let rle = LabelStudioBrush.encode(rowMajor: mask)
    #expect(LabelStudioBrush.decode(rle, width: width, height: height) == mask)
    #expect(LabelStudioBrush.decode(rle, width: width + 1, height: height) == nil)
    #expect(
      LabelStudioBrush.decode(Array(rle.prefix(rle.count / 2)), width: width, height: height) == nil
    )
  }

  /// label-studio-converter's decoder reads our masks back pixel for pixel, long runs included.
  @Test func theConvertersDecoderReadsThem() throws {
    var masks = (0..<4).map { seed in
      (
        width: 40 + 9 * seed, height: 30 + 5 * seed,
        mask: MaskShapes.blobs(
          seed: UInt64(100 + seed), width: 40 + 9 * seed, height: 30 + 5 * seed)
      )
    }
    masks.append((300, 300, [UInt8](repeating: 1, count: 300 * 300)))
    let cases = masks.map { m in
      [
        "width": m.width, "height": m.height,
        "rle": LabelStudioBrush.encode(rowMajor: m.mask).map(Int.init),
      ]
        as [String: Any]
    }
    let file = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-brush-\(ProcessInfo.processInfo.processIdentifier).json")
    try JSONSerialization.data(withJSONObject: cases).write(to: file)
    defer { try? FileManager.default.removeItem(at: file) }
    let script = """
      import contextlib, json, sys
      with contextlib.redirect_stdout(sys.stderr):  # the package reports missing extras
          from label_studio_converter.brush import decode_rle
      out = []
      for c in json.load(open(sys.argv[1])):
          rgba = decode_rle(c["rle"]).reshape(c["height"], c["width"], 4)
          out.append([int(v != 0) for v in rgba[:, :, 3].ravel()])
      print(json.dumps(out))
      """
    let output = try PythonTools.run(script, arguments: [file.path])
    let decoded = try #require(try JSONSerialization.jsonObject(with: output) as? [[Int]])
    #expect(decoded.count == masks.count)
    for (d, m) in zip(decoded, masks) {
      #expect(d.map(UInt8.init) == m.mask, "\(m.width)×\(m.height)")
    }
  }
}
