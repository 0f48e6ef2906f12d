import EVMask
import EVTensor
import TestSupport
import Testing

/// Random masks with long runs (blobs) and isolated pixels, so both the word-skipping scan and
/// the byte loop are exercised.
func randomMask(height: Int, width: Int, density: Double, blobs: Int, rng: inout SplitMix64)
  -> [UInt8]
{
  var m = [UInt8](repeating: 0, count: height * width)
  for i in m.indices where Double.random(in: 0..<1, using: &rng) < density { m[i] = 1 }
  for _ in 0..<blobs {
    let x0 = Int.random(in: 0..<width, using: &rng)
    let y0 = Int.random(in: 0..<height, using: &rng)
    let x1 = min(width, x0 + Int.random(in: 1...max(1, width / 2), using: &rng))
    let y1 = min(height, y0 + Int.random(in: 1...max(1, height / 2), using: &rng))
    for y in y0..<y1 { for x in x0..<x1 { m[y * width + x] = 1 } }
  }
  return m
}

/// Column-major runs computed the obvious way.
func naiveCounts(_ m: [UInt8], height: Int, width: Int) -> [UInt32] {
  var counts: [UInt32] = []
  var value: UInt8 = 0
  var run: UInt32 = 0
  for x in 0..<width {
    for y in 0..<height {
      let v = m[y * width + x]
      if v != value {
        counts.append(run)
        run = 0
        value = v
      }
      run += 1
    }
  }
  counts.append(run)
  return counts
}

@Suite struct RLEPropertyTests {
  let sizes = [(1, 1), (1, 17), (17, 1), (9, 13), (31, 64), (64, 33), (100, 7)]

  @Test func encodeDecodeAgreeWithNaiveRuns() {
    var rng = SplitMix64(state: 1)
    for (h, w) in sizes {
      for density in [0.0, 0.02, 0.5, 1.0] {
        let m = randomMask(height: h, width: w, density: density, blobs: 2, rng: &rng)
        let rle = RLE(rowMajor: m, height: h, width: w)
        #expect(rle.counts == naiveCounts(m, height: h, width: w), "\(h)×\(w) density \(density)")
        #expect(rle.decodeRowMajor() == m)
        // Any nonzero byte is foreground, as for a boolean mask.
        #expect(RLE(rowMajor: m.map { $0 * 255 }, height: h, width: w) == rle)
        #expect(rle.area == m.reduce(0) { $0 + Int($1) })
        // Column-major input is the transpose of the same pixels.
        var columnMajor = [UInt8](repeating: 0, count: h * w)
        for y in 0..<h { for x in 0..<w { columnMajor[x * h + y] = m[y * w + x] } }
        let fromColumns = columnMajor.withUnsafeBufferPointer {
          RLE(columnMajor: $0, height: h, width: w)
        }
        #expect(fromColumns == rle)
        #expect(rle.decodeColumnMajor() == columnMajor)
        let parsed = try? RLE(compressed: rle.compressedCounts, height: h, width: w)
        #expect(parsed == rle)
      }
    }
  }

  @Test func largeRunsRoundTripThroughTheString() throws {
    // Runs far beyond 5 bits and negative deltas exercise the multi-character and sign paths.
    let h = 1000
    let w = 900
    let rle = try RLE(height: h, width: w, counts: [123_456, 3, 700_000, 1, 76_540])
    let parsed = try RLE(compressed: rle.compressedCounts, height: h, width: w)
    #expect(parsed == rle)
  }

  @Test func bboxMatchesPixelScanForNonEmptyMasks() {
    var rng = SplitMix64(state: 2)
    for (h, w) in sizes {
      for _ in 0..<6 {
        let m = randomMask(height: h, width: w, density: 0.0, blobs: 1, rng: &rng)
        let rle = RLE(rowMajor: m, height: h, width: w)
        var xs = w
        var ys = h
        var xe = -1
        var ye = -1
        for y in 0..<h {
          for x in 0..<w where m[y * w + x] != 0 {
            xs = min(xs, x)
            xe = max(xe, x)
            ys = min(ys, y)
            ye = max(ye, y)
          }
        }
        let box = rle.boundingBox
        #expect(box.x == Double(xs) && box.width == Double(xe - xs + 1))
        // One rectangle: a run crosses a column boundary only when the rectangle spans the full
        // height, where pycocotools' full-height rule is exact too.
        #expect(box.y == Double(ys) && box.height == Double(ye - ys + 1))
      }
    }
    #expect(RLE.empty(height: 5, width: 4).boundingBox == BoxXYWH(x: 0, y: 0, width: 0, height: 0))
  }

  @Test func mergeIsPixelwiseUnionAndIntersection() throws {
    var rng = SplitMix64(state: 3)
    for (h, w) in sizes {
      let masks = (0..<3).map { _ in
        randomMask(height: h, width: w, density: 0.3, blobs: 1, rng: &rng)
      }
      let rles = masks.map { RLE(rowMajor: $0, height: h, width: w) }
      let union = try RLE.merge(rles)
      let inter = try RLE.merge(rles, intersect: true)
      let expectedUnion = (0..<h * w).map { i in masks.contains { $0[i] != 0 } ? UInt8(1) : 0 }
      let expectedInter = (0..<h * w).map { i in masks.allSatisfy { $0[i] != 0 } ? UInt8(1) : 0 }
      #expect(union == RLE(rowMajor: expectedUnion, height: h, width: w))
      #expect(inter == RLE(rowMajor: expectedInter, height: h, width: w))
    }
    #expect(throws: RLEError.self) {
      try RLE.merge([RLE.empty(height: 2, width: 3), RLE.empty(height: 3, width: 2)])
    }
  }

  @Test func iouIsPixelwiseRatio() {
    var rng = SplitMix64(state: 4)
    let h = 40
    let w = 30
    let masks = (0..<4).map { _ in
      randomMask(height: h, width: w, density: 0.05, blobs: 2, rng: &rng)
    }
    let rles = masks.map { RLE(rowMajor: $0, height: h, width: w) }
    let crowd = [false, true, false, true]
    let o = RLE.iou(rles, rles, isCrowd: crowd)
    for d in 0..<4 {
      for g in 0..<4 {
        let inter = (0..<h * w).filter { masks[d][$0] != 0 && masks[g][$0] != 0 }.count
        let union = (0..<h * w).filter { masks[d][$0] != 0 || masks[g][$0] != 0 }.count
        let dtArea = masks[d].reduce(0) { $0 + Int($1) }
        let expected = inter == 0 ? 0 : Double(inter) / Double(crowd[g] ? dtArea : union)
        #expect(o[d][g] == expected, "[\(d)][\(g)]")
      }
    }
    // Different sizes are flagged, not compared.
    let other = RLE(rowMajor: [UInt8](repeating: 1, count: 12), height: 3, width: 4)
    #expect(
      RLE.pairIoU(other, RLE(rowMajor: [UInt8](repeating: 1, count: 12), height: 4, width: 3)) == -1
    )
  }

  @Test func integerBoxRasterisesToItsPixels() {
    let h = 10
    let w = 12
    let rle = RLE(box: BoxXYWH(x: 2, y: 3, width: 4, height: 5), height: h, width: w)
    var expected = [UInt8](repeating: 0, count: h * w)
    for y in 3..<8 { for x in 2..<6 { expected[y * w + x] = 1 } }
    #expect(rle.decodeRowMajor() == expected)
    #expect(rle.boundingBox == BoxXYWH(x: 2, y: 3, width: 4, height: 5))
  }

  @Test func malformedInputIsRejected() {
    #expect(throws: RLEError.truncatedString) { try RLE(compressed: "a", height: 2, width: 2) }
    #expect(throws: RLEError.self) { try RLE(compressed: "4 ", height: 2, width: 2) }
    #expect(throws: RLEError.countsDoNotCoverMask(sum: 3, height: 2, width: 2)) {
      try RLE(height: 2, width: 2, counts: [1, 2])
    }
    #expect(throws: RLEError.self) { try RLE(compressed: "@", height: 2, width: 2) }  // a negative run
  }
}
