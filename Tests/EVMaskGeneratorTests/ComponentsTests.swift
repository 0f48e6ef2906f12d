import EVMask
import EVMaskGenerator
import EVTensor
import Foundation
import TestSupport
import Testing

/// `amg/components.json`: SAM's `segment_anything.utils.amg` functions and torchvision's NMS,
/// run by the official code on fixed inputs.
enum Components {
  static func load() throws -> JSONValue { try JSONValue.load("amg/components.json") }

  /// A COCO compressed RLE string as a row-major mask.
  static func decode(_ counts: String, size: [Int]) throws -> [Bool] {
    try RLE(compressed: counts, height: size[0], width: size[1]).decodeRowMajorBool()
  }
}

@Suite struct ComponentsTests {
  @Test func pointGridsMatchNumPy() throws {
    let cases = try Components.load()["point_grids"].require(\.array, "point_grids")
    #expect(cases.count == 4)
    for c in cases {
      let n = try c["n_per_side"].require(\.int, "n_per_side")
      let layers = try c["n_layers"].require(\.int, "n_layers")
      let scale = try c["scale_per_layer"].require(\.int, "scale_per_layer")
      let expected = try c["grids"].require(\.array, "grids").map { grid in
        try grid.require(\.array, "grid").map { try $0.require(\.doubles, "point") }
      }
      let grids = AMG.buildAllLayerPointGrids(nPerSide: n, nLayers: layers, scalePerLayer: scale)
      #expect(grids.count == expected.count)
      for (grid, want) in zip(grids, expected) {
        // Exact: the values are linspace's float64 results (0.30000000000000004 and all).
        #expect(grid.map { [$0.x, $0.y] } == want, "n=\(n) layers=\(layers) scale=\(scale)")
      }
    }
  }

  @Test func cropBoxesMatchSAM() throws {
    let cases = try Components.load()["crop_boxes"].require(\.array, "crop_boxes")
    #expect(cases.count == 3)
    for c in cases {
      let size = try c["image_size"].require(\.ints, "image_size")
      let layers = try c["n_layers"].require(\.int, "n_layers")
      let ratio = try c["overlap_ratio"].require(\.double, "overlap_ratio")
      let expected = try c["boxes"].require(\.array, "boxes").map { try $0.require(\.ints, "box") }
      let (boxes, layerIndices) = AMG.generateCropBoxes(
        imageHeight: size[0], imageWidth: size[1], nLayers: layers, overlapRatio: ratio)
      #expect(boxes.map { [$0.x0, $0.y0, $0.x1, $0.y1] } == expected)
      #expect(layerIndices == c["layer_idxs"]?.ints)
    }
  }

  @Test func stabilityScoreMatchesPyTorch() throws {
    let c = try Components.load()["stability_score"]
    let masks = try c["logits"].require(\.array, "logits").map { mask in
      try mask.require(\.array, "mask").flatMap { try $0.require(\.doubles, "row") }
    }
    let threshold = try c["threshold"].require(\.double, "threshold")
    let offset = try c["offset"].require(\.double, "offset")
    let expected = try c["scores"].require(\.doubles, "scores")
    #expect(masks.count == expected.count && !masks.isEmpty)
    for (mask, want) in zip(masks, expected) {
      let score = AMG.stabilityScore(
        logits: mask.map { Float($0) }, maskThreshold: threshold, offset: offset)
      // Counts are integers and the division is float32 in both: exact.
      #expect(score == Float(want))
    }
  }

  @Test func stabilityScoreOfAnEmptyUnionIsNaN() {
    #expect(AMG.stabilityScore(logits: [-5, -3, -2], offset: 1).isNaN)
    #expect(AMG.stabilityScore(logits: [2, 0.5, -2], offset: 1) == 0.5)
  }

  @Test func maskToBoxMatchesSAM() throws {
    let c = try Components.load()["mask_to_box"]
    let masks = try c["masks_rows"].require(\.array, "masks_rows").map {
      try $0.require(\.strings, "rows")
    }
    let boxes = try c["boxes"].require(\.array, "boxes").map { try $0.require(\.ints, "box") }
    #expect(!masks.isEmpty)
    #expect(masks.count == boxes.count)
    #expect(boxes.contains([0, 0, 0, 0]), "the fixture covers the empty mask")
    for (rows, want) in zip(masks, boxes) {
      let (h, w) = (rows.count, rows[0].count)
      let mask = rows.flatMap { $0.map { $0 == "1" } }
      let box = AMG.maskToBox(mask, height: h, width: w)
      #expect([box.x0, box.y0, box.x1, box.y1] == want)
    }
  }

  @Test func nmsMatchesTorchvision() throws {
    let c = try Components.load()["box_nms"]
    let boxes = try c["boxes"].require(\.array, "boxes").map { try $0.require(\.doubles, "box") }
      .map { SIMD4(Float($0[0]), Float($0[1]), Float($0[2]), Float($0[3])) }
    let scores = try c["scores"].require(\.doubles, "scores").map { Float($0) }
    let keep = try c["keep"].require(\.ints, "keep")
    // The fixture's note: `keep` was computed with IoU threshold 0.3 (0.7 keeps almost all).
    #expect(c["note"]?.string?.contains("0.3") == true)
    #expect(AMG.batchedNMS(boxes: boxes, scores: scores, iouThreshold: 0.3) == keep)
    // A stricter threshold keeps a superset, still by decreasing score.
    let loose = AMG.batchedNMS(boxes: boxes, scores: scores, iouThreshold: 0.7)
    #expect(Set(keep).isSubset(of: Set(loose)))
    #expect(loose == loose.sorted { scores[$0] > scores[$1] })
  }

  @Test func nmsSemantics() {
    let a = SIMD4<Float>(0, 0, 10, 10)
    let b = SIMD4<Float>(0, 0, 10, 5)  // IoU with a: exactly 0.5
    // Suppression needs IoU strictly above the threshold.
    #expect(AMG.batchedNMS(boxes: [a, b], scores: [0.9, 0.8], iouThreshold: 0.5) == [0, 1])
    #expect(AMG.batchedNMS(boxes: [a, b], scores: [0.9, 0.8], iouThreshold: 0.49) == [0])
    // Equal scores keep input order (stable sort); identical boxes have IoU 1, kept at 1.0.
    #expect(AMG.batchedNMS(boxes: [a, a, a], scores: [1, 1, 1], iouThreshold: 1.0) == [0, 1, 2])
    #expect(AMG.batchedNMS(boxes: [a, a, a], scores: [1, 1, 1], iouThreshold: 0.99) == [0])
    #expect(AMG.batchedNMS(boxes: [b, a], scores: [0.1, 0.5], iouThreshold: 0.3) == [1])
    // Boxes of different categories never suppress each other.
    #expect(
      AMG.batchedNMS(
        boxes: [a, a, a], scores: [3, 2, 1], categories: [0, 1, 0], iouThreshold: 0.5)
        == [0, 1])
    #expect(AMG.batchedNMS(boxes: [], scores: [], iouThreshold: 0.5).isEmpty)
  }

  @Test func smallRegionRemovalMatchesOpenCV() throws {
    let cases = try Components.load()["remove_small_regions"].require(\.array, "cases")
    #expect(!cases.isEmpty)
    for (i, c) in cases.enumerated() {
      let size = try c["size"].require(\.ints, "size")
      let (h, w) = (size[0], size[1])
      let mask = try Components.decode(try c["mask"].require(\.string, "mask"), size: size)
      let area = try c["area_thresh"].require(\.double, "area_thresh")
      let afterHoles = try Components.decode(
        try c["after_holes"].require(\.string, "after_holes"), size: size)
      let afterIslands = try Components.decode(
        try c["after_islands"].require(\.string, "after_islands"), size: size)

      let holes = AMG.removeSmallRegions(
        mask, height: h, width: w, areaThreshold: area, mode: .holes)
      #expect(holes.mask == afterHoles, "case \(i): holes")
      #expect(holes.changed == c["changed_holes"]?.bool, "case \(i)")
      let islands = AMG.removeSmallRegions(
        holes.mask, height: h, width: w, areaThreshold: area, mode: .islands)
      #expect(islands.mask == afterIslands, "case \(i): islands")
      #expect(islands.changed == c["changed_islands"]?.bool, "case \(i)")
    }
  }

  @Test func smallRegionEdgeCases() {
    // 5×5 with one 4-pixel island and one single pixel touching it only diagonally (same
    // 8-connected region), and a lone pixel far away.
    let rows = [
      "11000",
      "11000",
      "00100",
      "00000",
      "00001",
    ]
    let mask = rows.flatMap { $0.map { $0 == "1" } }
    let islands = AMG.removeSmallRegions(
      mask, height: 5, width: 5, areaThreshold: 2, mode: .islands)
    #expect(islands.changed)
    #expect(
      islands.mask
        == rows.flatMap { r in r.enumerated().map { $0.element == "1" && $0.offset < 4 } })
    // Every island small: the largest stays.
    let all = AMG.removeSmallRegions(mask, height: 5, width: 5, areaThreshold: 100, mode: .islands)
    #expect(all.mask.filter { $0 }.count == 5 && !all.mask[24])
    // Nothing small: unchanged.
    let none = AMG.removeSmallRegions(mask, height: 5, width: 5, areaThreshold: 1, mode: .islands)
    #expect(!none.changed && none.mask == mask)
    // A hole enclosed by the mask is filled; the background touching the border is a region too.
    let ring = ["111", "101", "111"].flatMap { $0.map { $0 == "1" } }
    let filled = AMG.removeSmallRegions(ring, height: 3, width: 3, areaThreshold: 2, mode: .holes)
    #expect(filled.changed && filled.mask.allSatisfy { $0 })
    let empty = [Bool](repeating: false, count: 6)
    let emptyHoles = AMG.removeSmallRegions(
      empty, height: 2, width: 3, areaThreshold: 10, mode: .holes)
    #expect(emptyHoles.changed && emptyHoles.mask.allSatisfy { $0 })
    let emptyIslands = AMG.removeSmallRegions(
      empty, height: 2, width: 3, areaThreshold: 10, mode: .islands)
    #expect(!emptyIslands.changed)
  }

  @Test func cropEdgeTestMatchesSAM() throws {
    let c = try Components.load()["is_box_near_crop_edge"]
    let boxes = try c["boxes"].require(\.array, "boxes").map { try $0.require(\.doubles, "box") }
    let crop = try c["crop_box"].require(\.ints, "crop_box")
    let original = try c["orig_box"].require(\.ints, "orig_box")
    let atol = try c["atol"].require(\.double, "atol")
    let near = try c["near"].require(\.bools, "near")
    let cropBox = BoxXYXY(x0: crop[0], y0: crop[1], x1: crop[2], y1: crop[3])
    let originalBox = BoxXYXY(x0: original[0], y0: original[1], x1: original[2], y1: original[3])
    #expect(boxes.count == near.count)
    for (box, want) in zip(boxes, near) {
      let b = BoxXYXY(x0: Int(box[0]), y0: Int(box[1]), x1: Int(box[2]), y1: Int(box[3]))
      #expect(b.floats == SIMD4(Float(box[0]), Float(box[1]), Float(box[2]), Float(box[3])))
      #expect(
        AMG.isBoxNearCropEdge(b, cropBox: cropBox, originalBox: originalBox, atol: Float(atol))
          == want,
        "box \(box)")
    }
  }

  @Test func uncompressedRLEMatchesSAMAndPycocotools() throws {
    // Column-major runs starting with a (possibly empty) 0-run, like mask_to_rle_pytorch.
    let rows = ["0110", "0111", "1000"]
    let mask = rows.flatMap { $0.map { $0 == "1" } }
    let rle = UncompressedRLE(mask: mask, height: 3, width: 4)
    // Column-major pixels: 001 110 110 010.
    #expect(rle.counts == [2, 3, 1, 2, 2, 1, 1])
    #expect(rle.area == 6)
    #expect(rle.mask() == mask)
    let full = UncompressedRLE(mask: [true, true], height: 1, width: 2)
    #expect(full.counts == [0, 2])
    let empty = UncompressedRLE(mask: [false, false, false], height: 3, width: 1)
    #expect(empty.counts == [3] && empty.area == 0)
    // The COCO form agrees with EVMask's own encoder of the same mask.
    #expect(rle.cocoRLE == RLE(rowMajor: mask, height: 3, width: 4))

    // Random masks round-trip, and agree with pycocotools-identical encoding.
    var rng = SplitMix64(seed: 7)
    for _ in 0..<20 {
      let (h, w) = (Int(rng.next() % 17) + 1, Int(rng.next() % 23) + 1)
      let m = (0..<(h * w)).map { _ in rng.next() % 3 == 0 }
      let r = UncompressedRLE(mask: m, height: h, width: w)
      #expect(r.mask() == m)
      #expect(r.area == m.filter { $0 }.count)
      #expect(r.cocoRLE.compressedCounts == RLE(rowMajor: m, height: h, width: w).compressedCounts)
    }
  }
}
