import EVImage
import Foundation
import TestSupport
import Testing

@Suite struct Encoding {
  static func noise(width: Int, height: Int, channels: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<(width * height * channels)).map { _ in
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return UInt8(truncatingIfNeeded: state >> 56)
    }
  }

  @Test func rgbRoundTrip() throws {
    let image = RGBImage(
      width: 37, height: 23, pixels: Self.noise(width: 37, height: 23, channels: 3, seed: 1))
    let data = try image.pngData()
    #expect(Array(data.prefix(4)) == [0x89, 0x50, 0x4E, 0x47])
    #expect(try RGBImage(data: data) == image)
  }

  @Test func fixtureRoundTrip() throws {
    let image = try RGBImage(contentsOf: Fixtures.url("images/chelsea.png"))
    #expect(try RGBImage(data: image.pngData()) == image)
  }

  @Test func grayRoundTrip() throws {
    let gray = GrayImage(
      width: 19, height: 7, pixels: Self.noise(width: 19, height: 7, channels: 1, seed: 2))
    let decoded = try RGBImage(data: gray.pngData())
    #expect(decoded.width == 19 && decoded.height == 7)
    for (i, v) in gray.pixels.enumerated() {
      #expect(
        decoded.pixels[3 * i] == v && decoded.pixels[3 * i + 1] == v
          && decoded.pixels[3 * i + 2] == v)
    }
    let mask = GrayImage(mask: [true, false, false, true], width: 2, height: 2)
    #expect(mask.pixels == [255, 0, 0, 255])
  }

  @Test func writesAtomicallyAndReadsBack() throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evimage-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }

    let image = RGBImage(
      width: 16, height: 9, pixels: Self.noise(width: 16, height: 9, channels: 3, seed: 3))
    let png = directory.appendingPathComponent("out.png")
    try image.write(to: png)
    #expect(try RGBImage(contentsOf: png) == image)
    // Overwriting replaces the file whole.
    let other = RGBImage(width: 3, height: 2, color: RGBColor(1, 2, 3))
    try other.write(to: png)
    #expect(try RGBImage(contentsOf: png) == other)

    let jpeg = directory.appendingPathComponent("out.jpg")
    try RGBImage(width: 16, height: 16, color: RGBColor(200, 100, 50)).write(to: jpeg)
    let decoded = try RGBImage(contentsOf: jpeg)
    #expect(Array(try Data(contentsOf: jpeg).prefix(2)) == [0xFF, 0xD8])
    #expect(
      decoded.pixels.enumerated().allSatisfy {
        abs(Int($0.element) - [200, 100, 50][$0.offset % 3]) <= 3
      })

    let mask = directory.appendingPathComponent("mask.png")
    try GrayImage(mask: [true, false, true, false, true, false], width: 3, height: 2).write(
      to: mask)
    #expect(try RGBImage(contentsOf: mask)[x: 1, y: 0] == RGBColor(0, 0, 0))
    #expect(try RGBImage(contentsOf: mask)[x: 1, y: 1] == RGBColor(255, 255, 255))

    do {
      try image.write(to: directory.appendingPathComponent("missing/dir/out.png"))
      Issue.record("writing into a missing directory succeeded")
    } catch {
      #expect(error.kind == .writeFailed)
      #expect(error.description.contains("missing/dir/out.png"))
    }
  }
}

@Suite struct OverlayRendering {
  static let background = RGBColor(100, 100, 100)

  @Test func blendsOutlinesAndMarks() {
    let w = 40
    let h = 30
    let image = RGBImage(width: w, height: h, color: Self.background)
    // Mask 0: a 20×14 rectangle at (5, 5); mask 1: a 6×6 square at (30, 20).
    let first = (0..<(w * h)).map { i in (5..<25).contains(i % w) && (5..<19).contains(i / w) }
    let second = (0..<(w * h)).map { i in (30..<36).contains(i % w) && (20..<26).contains(i / w) }
    let colors = [RGBColor(255, 0, 0), RGBColor(0, 0, 255)]
    let result = overlay(masks: [first, second], on: image, colors: colors, opacity: 0.5)

    // Outside every mask: untouched.
    #expect(result[x: 1, y: 1] == Self.background)
    #expect(result[x: 28, y: 2] == Self.background)
    // Interior: half-way between background and mask colour.
    #expect(result[x: 15, y: 12] == RGBColor(178, 50, 50))
    #expect(result[x: 33, y: 23] == RGBColor(50, 50, 178))
    // Contour: the darker shade of the mask colour, on the mask's edge pixels only.
    let edge = RGBColor(140, 0, 0)
    #expect(result[x: 5, y: 10] == edge)
    #expect(result[x: 24, y: 10] == edge)
    #expect(result[x: 15, y: 5] == edge)
    #expect(result[x: 6, y: 10] == RGBColor(178, 50, 50))
    #expect(result[x: 30, y: 25] == RGBColor(0, 0, 140))

    let marked = overlay(
      masks: [first], on: image,
      points: [
        PointMarker(Point(x: 15, y: 12), positive: true),
        PointMarker(Point(x: 32, y: 8), positive: false),
      ],
      boxes: [Box(x0: 2, y0: 3, x1: 37, y1: 27)])
    #expect(marked[x: 15, y: 12] == OverlayStyle.positivePoint)
    #expect(marked[x: 32, y: 8] == OverlayStyle.negativePoint)
    #expect(marked[x: 20, y: 3] == OverlayStyle.box)
    #expect(marked[x: 37, y: 15] == OverlayStyle.box)
    #expect(marked[x: 0, y: 0] == Self.background)
  }

  @Test func grayMasksAndDefaultColours() {
    let image = RGBImage(width: 8, height: 8, color: Self.background)
    let masks = (0..<12).map { i in
      GrayImage(width: 8, height: 8, pixels: (0..<64).map { $0 == 27 + (i % 2) ? 0 : 255 })
    }
    let result = overlay(masks: masks, on: image)
    #expect(result != image)
    let colors = (0..<30).map(OverlayStyle.color)
    #expect(Set(colors).count == 30)
  }
}
