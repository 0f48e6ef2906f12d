import EVMask
import EVTensor
import TestSupport
import Testing

/// The sparse polygon walk (only the column crossings inside the image) against pycocotools'
/// dense walk, on polygons that stay near the image, reach far outside it, and have negative
/// coordinates (where C's truncation toward zero shifts the rounding).
@Suite struct PolygonWalkTests {
  private func randomPolygon(
    vertices: Int, spread: Double, height: Int, width: Int, rng: inout SplitMix64
  ) -> [Double] {
    (0..<vertices).flatMap { _ in
      [
        Double.random(in: -spread...(Double(width) + spread), using: &rng),
        Double.random(in: -spread...(Double(height) + spread), using: &rng),
      ]
    }
  }

  @Test func sparseWalkEqualsDenseWalk() {
    var rng = SplitMix64(state: 41)
    for trial in 0..<600 {
      let width = Int.random(in: 1...40, using: &rng)
      let height = Int.random(in: 1...40, using: &rng)
      let spread = [0.0, 3, 30, 400][trial % 4]
      let k = Int.random(in: 1...9, using: &rng)
      var polygon = randomPolygon(
        vertices: k, spread: spread, height: height, width: width, rng: &rng)
      if trial % 5 == 0 { polygon = polygon.map { ($0 * 4).rounded() / 4 } }  // vertex ties
      let dense = RLE.rasterize(
        polygon: polygon, pointCount: k, height: height, width: width, denseLimit: .max)
      let sparse = RLE.rasterize(
        polygon: polygon, pointCount: k, height: height, width: width, denseLimit: 0)
      #expect(dense.counts == sparse.counts, "trial \(trial): \(polygon) in \(width)×\(height)")
    }
  }

  /// One coordinate of 3e8 made pycocotools' walk (and ours) allocate about 27 GB; the sparse
  /// walk visits only the crossings inside the image.
  @Test func farOutsideCoordinateIsCheap() {
    let polygon: [Double] = [10, 10, 3e8, 20, 30, 40, 5, 35]
    let clock = ContinuousClock()
    let start = clock.now
    let rle = RLE(polygon: polygon, height: 60, width: 80)
    #expect(clock.now - start < .seconds(1))
    #expect(rle.area > 0)
    for value in [Double.infinity, -1e308, 1e308, .nan] {
      let odd = RLE(polygon: [0, 0, value, 5, 10, 10], height: 20, width: 20)
      #expect(odd.height == 20 && odd.width == 20)
    }
  }
}
