import EVMask
import TestSupport
import Testing

/// `MaskContours` against the masks it outlines: the polygons, filled by the even-odd rule at
/// pixel centres (how scanline fillers and pycocotools read them), give back every pixel.
@Suite struct ContoursTests {
  static func fill(_ polygons: [[GridPoint]], width: Int, height: Int) -> [UInt8] {
    MaskShapes.fill(
      polygons.map { $0.map { (Double($0.x), Double($0.y)) } }, width: width, height: height)
  }

  @Test(arguments: 0..<24) func polygonsGiveBackTheMask(seed: Int) {
    let width = 17 + seed * 3 % 29
    let height = 11 + seed * 7 % 31
    let mask = MaskShapes.blobs(seed: UInt64(seed), width: width, height: height)
    let regions = MaskContours.regions(rowMajor: mask, width: width, height: height)
    // Outlines and holes together, and each region's joined polygon, fill the mask exactly.
    let rings = regions.flatMap { [$0.outline] + $0.holes }
    #expect(Self.fill(rings, width: width, height: height) == mask)
    var union = [UInt8](repeating: 0, count: width * height)
    for region in regions {
      let filled = Self.fill([region.joined], width: width, height: height)
      #expect(filled.reduce(0) { $0 + Int($1) } == region.area)
      for i in union.indices where filled[i] != 0 {
        #expect(union[i] == 0, "regions overlap")
        union[i] = 1
      }
      // COCO's reading of a polygon (the pycocotools rasteriser) gives the same pixels.
      let coco = RLE(
        polygon: region.joined.flatMap { [Double($0.x), Double($0.y)] }, height: height,
        width: width)
      #expect(coco.decodeRowMajor() == filled)
    }
    #expect(union == mask)
    #expect(regions.map(\.area) == regions.map(\.area).sorted(by: >))
  }

  @Test func shapesAndOrientation() {
    // One pixel at (2, 1): its four corners, clockwise on screen.
    var mask = [UInt8](repeating: 0, count: 5 * 4)
    mask[1 * 5 + 2] = 1
    let single = MaskContours.regions(rowMajor: mask, width: 5, height: 4)
    #expect(
      single == [
        MaskRegion(
          outline: [
            GridPoint(x: 2, y: 1), GridPoint(x: 3, y: 1), GridPoint(x: 3, y: 2),
            GridPoint(x: 2, y: 2),
          ], holes: [])
      ])
    // A 3×3 ring: one region, one hole, area 8.
    var ring = [UInt8](repeating: 1, count: 9)
    ring[4] = 0
    let framed = MaskContours.regions(rowMajor: ring, width: 3, height: 3)
    #expect(framed.count == 1 && framed[0].holes.count == 1 && framed[0].area == 8)
    #expect(framed[0].outline.count == 4 && framed[0].holes[0].count == 4)
    // Two pixels touching at a corner are two regions (4-connectivity).
    let diagonal: [UInt8] = [1, 0, 0, 1]
    #expect(MaskContours.regions(rowMajor: diagonal, width: 2, height: 2).count == 2)
    #expect(MaskContours.regions(rowMajor: [0, 0, 0, 0], width: 2, height: 2).isEmpty)
    // A full mask: the image's border.
    let full = MaskContours.regions(rowMajor: [UInt8](repeating: 1, count: 12), width: 4, height: 3)
    #expect(full.count == 1 && full[0].area == 12 && full[0].outline.count == 4)
  }
}
