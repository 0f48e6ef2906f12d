import EVMask
import Foundation
import TestSupport
import Testing

/// `coco/rle.json`: pycocotools 2.0.11 outputs for encode, IoU with crowds and polygon → RLE.
struct RLEFixture: Decodable {
  struct Encode: Decodable {
    let h: Int
    let w: Int
    let mask_rows: [String]
    let counts: String
    let area: Int
    let bbox: [Double]
  }
  struct IoU: Decodable {
    let size: [Int]
    let dt: [String]
    let gt: [String]
    let iscrowd: [Int]
    let iou: [[Double]]
  }
  struct Polygon: Decodable {
    let h: Int
    let w: Int
    let polygon: [Double]
    let counts: String
    let area: Int
  }
  let encode: [Encode]
  let iou: [IoU]
  let polygon: [Polygon]

  static func load() throws -> RLEFixture {
    try JSONDecoder().decode(RLEFixture.self, from: Data(contentsOf: Fixtures.url("coco/rle.json")))
  }
}

func rowMajorMask(_ rows: [String]) -> [UInt8] {
  rows.flatMap { $0.utf8.map { $0 == UInt8(ascii: "1") ? 1 : 0 } }
}

@Suite struct RLEFixtureTests {
  @Test func encodeMatchesPycocotools() throws {
    let fixture = try RLEFixture.load()
    #expect(fixture.encode.count > 5)
    for (i, c) in fixture.encode.enumerated() {
      let mask = rowMajorMask(c.mask_rows)
      try #require(mask.count == c.h * c.w)
      let rle = RLE(rowMajor: mask, height: c.h, width: c.w)
      #expect(rle.compressedCounts == c.counts, "case \(i)")
      #expect(rle.area == c.area, "case \(i)")
      #expect(rle.boundingBox.array == c.bbox, "case \(i)")
      // Bool input and float thresholding take the same path to the same runs.
      #expect(RLE(rowMajor: mask.map { $0 != 0 }, height: c.h, width: c.w) == rle)
      let floats = mask.map { $0 != 0 ? Float(0.25) : Float(-1) }
      let fromFloats = floats.withUnsafeBufferPointer {
        RLE(rowMajor: $0, threshold: 0, height: c.h, width: c.w)
      }
      #expect(fromFloats == rle)
      // Round trips: string → runs → mask.
      let parsed = try RLE(compressed: c.counts, height: c.h, width: c.w)
      #expect(parsed == rle, "case \(i)")
      #expect(parsed.decodeRowMajor() == mask, "case \(i)")
    }
  }

  @Test func iouMatchesPycocotools() throws {
    let fixture = try RLEFixture.load()
    #expect(!fixture.iou.isEmpty)
    var sawCrowd = false
    for (i, c) in fixture.iou.enumerated() {
      let dt = try c.dt.map { try RLE(compressed: $0, height: c.size[0], width: c.size[1]) }
      let gt = try c.gt.map { try RLE(compressed: $0, height: c.size[0], width: c.size[1]) }
      let crowd = c.iscrowd.map { $0 != 0 }
      sawCrowd = sawCrowd || crowd.contains(true)
      let o = RLE.iou(dt, gt, isCrowd: crowd)
      try #require(o.count == c.iou.count)
      for d in o.indices {
        for g in o[d].indices {
          #expect(abs(o[d][g] - c.iou[d][g]) <= 1e-15, "case \(i) [\(d)][\(g)]")
        }
      }
    }
    #expect(sawCrowd, "the fixture exercises crowd ground truth")
  }

  @Test func polygonMatchesPycocotools() throws {
    let fixture = try RLEFixture.load()
    #expect(!fixture.polygon.isEmpty)
    for (i, c) in fixture.polygon.enumerated() {
      let rle = RLE(polygon: c.polygon, height: c.h, width: c.w)
      #expect(rle.compressedCounts == c.counts, "case \(i)")
      #expect(rle.area == c.area, "case \(i)")
    }
  }
}
