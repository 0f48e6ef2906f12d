import EVImage
import Foundation

/// The pure functions of SAM's automatic mask generator (`segment_anything.utils.amg`) and the
/// torchvision NMS it uses, with the same arithmetic (float64 where NumPy/Python compute in
/// double, float32 where PyTorch computes on float tensors).
///
/// Masks here are row-major `height × width` arrays of `Bool`.
public enum AMG {
  /// `build_point_grid`: `n × n` points evenly spaced in [0, 1]², centred in their cells,
  /// x varying fastest. Coordinates are NumPy's `linspace` values (`start + i·step`, the last
  /// one exactly `stop`).
  public static func buildPointGrid(_ nPerSide: Int) -> [Point] {
    precondition(nPerSide > 0, "buildPointGrid: need at least one point per side, got \(nPerSide)")
    let offset = 1 / (2 * Double(nPerSide))
    let side = linspace(offset, 1 - offset, count: nPerSide)
    var points: [Point] = []
    points.reserveCapacity(nPerSide * nPerSide)
    for y in side {
      for x in side { points.append(Point(x: x, y: y)) }
    }
    return points
  }

  /// `np.linspace(start, stop, count)` bit for bit.
  static func linspace(_ start: Double, _ stop: Double, count: Int) -> [Double] {
    guard count > 1 else { return count == 1 ? [start] : [] }
    let step = (stop - start) / Double(count - 1)
    var values = (0..<count).map { Double($0) * step + start }
    values[count - 1] = stop
    return values
  }

  /// `build_all_layer_point_grids`: layer `i` has `int(n / scale**i)` points per side.
  public static func buildAllLayerPointGrids(nPerSide: Int, nLayers: Int, scalePerLayer: Int)
    -> [[Point]]
  {
    (0...max(nLayers, 0)).map { i in
      buildPointGrid(pointsPerSide(nPerSide: nPerSide, layer: i, scalePerLayer: scalePerLayer))
    }
  }

  /// `int(n_per_side / (scale_per_layer ** layer))`: Python divides in double and truncates.
  static func pointsPerSide(nPerSide: Int, layer: Int, scalePerLayer: Int) -> Int {
    var power = 1
    for _ in 0..<layer { power *= scalePerLayer }
    return Int(Double(nPerSide) / Double(power))
  }

  /// `generate_crop_boxes`: the whole image (layer 0), then for layer `i ≥ 1` a
  /// `2^i × 2^i` grid of overlapping crops, x outer and y inner, as XYXY with exclusive ends.
  public static func generateCropBoxes(
    imageHeight: Int, imageWidth: Int, nLayers: Int, overlapRatio: Double
  ) -> (boxes: [BoxXYXY], layers: [Int]) {
    var boxes = [BoxXYXY(x0: 0, y0: 0, x1: imageWidth, y1: imageHeight)]
    var layers = [0]
    let shortSide = Double(min(imageHeight, imageWidth))
    func cropLength(_ length: Int, _ crops: Int, _ overlap: Int) -> Int {
      Int((Double(overlap * (crops - 1) + length) / Double(crops)).rounded(.up))
    }
    for layer in 0..<max(nLayers, 0) {
      let crops = 1 << (layer + 1)
      let overlap = Int(overlapRatio * shortSide * (2 / Double(crops)))
      let cropWidth = cropLength(imageWidth, crops, overlap)
      let cropHeight = cropLength(imageHeight, crops, overlap)
      let x0s = (0..<crops).map { (cropWidth - overlap) * $0 }
      let y0s = (0..<crops).map { (cropHeight - overlap) * $0 }
      for x0 in x0s {
        for y0 in y0s {
          boxes.append(
            BoxXYXY(
              x0: x0, y0: y0, x1: min(x0 + cropWidth, imageWidth),
              y1: min(y0 + cropHeight, imageHeight)))
          layers.append(layer + 1)
        }
      }
    }
    return (boxes, layers)
  }

  /// `calculate_stability_score` for one mask of logits: the IoU of the masks thresholded at
  /// `maskThreshold + offset` and `maskThreshold - offset` (one contains the other), as
  /// float32 `intersection / union`. NaN when the union is empty, as in PyTorch.
  public static func stabilityScore(
    logits: UnsafeBufferPointer<Float>, maskThreshold: Double = 0, offset: Double
  ) -> Float {
    let high = Float(maskThreshold + offset)
    let low = Float(maskThreshold - offset)
    var intersection = 0
    var union = 0
    for v in logits {
      if v > high { intersection += 1 }
      if v > low { union += 1 }
    }
    return Float(intersection) / Float(union)
  }

  public static func stabilityScore(logits: [Float], maskThreshold: Double = 0, offset: Double)
    -> Float
  {
    logits.withUnsafeBufferPointer {
      stabilityScore(logits: $0, maskThreshold: maskThreshold, offset: offset)
    }
  }

  /// `batched_mask_to_box` for one mask: the tight box (inclusive last row and column),
  /// `[0, 0, 0, 0]` for an empty mask.
  public static func maskToBox(_ mask: [Bool], height: Int, width: Int) -> BoxXYXY {
    precondition(
      mask.count == height * width, "maskToBox: \(mask.count) pixels for \(height)×\(width)")
    var (left, top, right, bottom) = (width, height, -1, -1)
    for y in 0..<height {
      let row = y * width
      var first = -1
      var last = -1
      for x in 0..<width where mask[row + x] {
        if first < 0 { first = x }
        last = x
      }
      guard first >= 0 else { continue }
      top = min(top, y)
      bottom = y
      left = min(left, first)
      right = max(right, last)
    }
    return bottom < 0 ? .zero : BoxXYXY(x0: left, y0: top, x1: right, y1: bottom)
  }

  /// `is_box_near_crop_edge` for one box given in the crop's frame: whether a side lies within
  /// `atol` pixels of the crop's edge without also lying within `atol` of the image's edge.
  public static func isBoxNearCropEdge(
    _ box: BoxXYXY, cropBox: BoxXYXY, originalBox: BoxXYXY, atol: Float = 20
  ) -> Bool {
    let b = box.uncropped(from: cropBox).floats
    let crop = cropBox.floats
    let original = originalBox.floats
    for i in 0..<4 {
      let nearCrop = b[i] == crop[i] || abs(b[i] - crop[i]) <= atol
      let nearImage = b[i] == original[i] || abs(b[i] - original[i]) <= atol
      if nearCrop && !nearImage { return true }
    }
    return false
  }

  /// torchvision's `batched_nms`: greedy non-maximum suppression inside each category. Boxes
  /// are visited by decreasing score (a stable sort, so equal scores keep their order); a box
  /// is dropped when its float32 IoU with a kept box of its category is greater than
  /// `iouThreshold`. Returns the kept indices by decreasing score.
  public static func batchedNMS(
    boxes: [SIMD4<Float>], scores: [Float], categories: [Int]? = nil, iouThreshold: Double
  ) -> [Int] {
    precondition(
      boxes.count == scores.count, "batchedNMS: \(boxes.count) boxes, \(scores.count) scores")
    precondition(
      categories == nil || categories!.count == boxes.count, "batchedNMS: category count")
    let n = boxes.count
    guard n > 0 else { return [] }
    // Stable descending order; NaN scores come first, as in torch.sort(descending=True).
    let order = (0..<n).sorted { a, b in
      let (sa, sb) = (scores[a], scores[b])
      if sa == sb || (sa.isNaN && sb.isNaN) { return a < b }
      if sa.isNaN { return true }
      if sb.isNaN { return false }
      return sa > sb
    }
    let areas = boxes.map { ($0[2] - $0[0]) * ($0[3] - $0[1]) }
    var suppressed = [Bool](repeating: false, count: n)
    var keep: [Int] = []
    for (position, i) in order.enumerated() where !suppressed[i] {
      keep.append(i)
      let bi = boxes[i]
      for j in order[(position + 1)...] where !suppressed[j] {
        if let categories, categories[j] != categories[i] { continue }
        let bj = boxes[j]
        let w = max(0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
        let h = max(0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
        let intersection = w * h
        let iou = intersection / (areas[i] + areas[j] - intersection)
        if Double(iou) > iouThreshold { suppressed[j] = true }
      }
    }
    return keep
  }
}
