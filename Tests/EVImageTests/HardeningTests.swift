import EVImage
import Foundation
import TestSupport
import Testing

/// The image side of the hardening: decoders fed damaged files, extreme sizes through
/// preprocessing, and overlays drawn at coordinates far off the image. None may trap.
@Suite struct ImageHardeningTests {
  /// Mutated PNG and JPEG files decode or throw; a decoded image is as large as it says.
  @Test(arguments: ["images/coffee.png", "images/coffee.jpg", "images/chelsea.png"])
  func damagedFilesDecodeOrThrow(fixture: String) throws {
    let original = [UInt8](try Data(contentsOf: Fixtures.url(fixture)))
    var rng = Fuzz.Generator(seed: UInt64(fixture.utf8.count) &* 7919)
    var decoded = 0
    for _ in 0..<Fuzz.iterations(1000) {
      var bytes = Fuzz.mutate(original, using: &rng)
      // libpng rejects a chunk whose CRC is wrong; mending the CRCs half of the time lets the
      // mutations reach the decompressor and the row filters.
      if fixture.hasSuffix(".png") && Bool.random(using: &rng) { mendChunkCRCs(&bytes) }
      if let image = try? RGBImage(data: Data(bytes)) {
        #expect(image.pixels.count == image.width * image.height * 3)
        #expect(image.width > 0 && image.height > 0)
        decoded += 1
      }
    }
    // JPEG has no checksums: some mutations only touch pixel data, so the generator must
    // reach past the header. (A PNG's zlib stream carries an Adler-32, so damaged pixel data
    // is refused there, and the test checks that it is refused cleanly.)
    if fixture.hasSuffix(".jpg") { #expect(decoded > 0) }
  }

  /// Recomputes the CRC of every PNG chunk whose length still fits the file.
  private func mendChunkCRCs(_ bytes: inout [UInt8]) {
    var at = 8
    while at + 12 <= bytes.count {
      let length = bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) }
      guard length <= bytes.count - at - 12 else { return }
      var crc: UInt32 = 0xFFFF_FFFF
      for byte in bytes[(at + 4)..<(at + 8 + length)] {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
      }
      crc = ~crc
      for i in 0..<4 { bytes[at + 8 + length + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * i)) }
      at += length + 12
    }
  }

  /// Every side rounds to at least one pixel, at both frames, whatever the aspect ratio.
  @Test func extremeAspectRatiosKeepAPixel() {
    for (h, w) in [(1, 1025), (1025, 1), (1, 2049), (1, 100_000), (3, 5000), (1, 1)] {
      for long in [512, 1024] {
        let size = promptFrameSize(originalHeight: h, originalWidth: w, longSide: long)
        #expect(size.height >= 1 && size.width >= 1, "\(w)×\(h) at \(long)")
        #expect(max(size.height, size.width) == long)
      }
      let image = RGBImage(width: w, height: h, color: RGBColor(10, 200, 30))
      let out = preprocess(image, targetSize: 512)
      #expect(out.tensor.shape == [1, 3, 512, 512])
      #expect(out.resizedHeight >= 1 && out.resizedWidth >= 1)
    }
  }

  @Test func overlayMarkersFarOffTheImage() {
    let image = RGBImage(width: 20, height: 10, color: RGBColor(0, 0, 0))
    let far: [Double] = [1e20, -1e20, 1e308, -1e308, .infinity, -.infinity, .nan, 25, -3]
    var points: [PointMarker] = []
    var boxes: [Box] = []
    for x in far {
      for y in far {
        points.append(PointMarker(Point(x: x, y: y), positive: true))
        boxes.append(Box(x0: -x, y0: -y, x1: x, y1: y))
      }
    }
    let drawn = overlay(masks: [[Bool]](), on: image, points: points, boxes: boxes)
    #expect(drawn.width == 20 && drawn.height == 10)
  }
}
