import EVTensor

/// Masks and polygon filling for the outline and annotation-format tests.
public enum MaskShapes {
  /// A row-major 0/1 mask of discs, some with holes, sprinkled with flipped pixels: one-pixel
  /// islands and lines, pixels that touch only at a corner, holes within holes.
  public static func blobs(seed: UInt64, width: Int, height: Int) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    func next() -> Double { Double.random(in: 0..<1, using: &rng) }
    var mask = [UInt8](repeating: 0, count: width * height)
    for _ in 0..<(2 + Int(next() * 4)) {
      let cx = next() * Double(width)
      let cy = next() * Double(height)
      let r = 2 + next() * Double(min(width, height)) / 3
      let hole = next() * r * 0.6
      for y in 0..<height {
        for x in 0..<width {
          let dx = Double(x) - cx
          let dy = Double(y) - cy
          let d = (dx * dx + dy * dy).squareRoot()
          if d < r && d >= hole { mask[y * width + x] = 1 }
        }
      }
    }
    let speckle = next() * 0.3
    for i in mask.indices where next() < speckle { mask[i] ^= 1 }
    return mask
  }

  /// 1 where a pixel's centre is inside `polygons` by the even-odd rule (how scanline fillers,
  /// and pycocotools, read a polygon), row-major: per row, the crossings of the centre line,
  /// sorted, fill between pairs.
  public static func fill(_ polygons: [[(x: Double, y: Double)]], width: Int, height: Int)
    -> [UInt8]
  {
    var mask = [UInt8](repeating: 0, count: width * height)
    var crossings: [Double] = []
    for y in 0..<height {
      let py = Double(y) + 0.5
      crossings.removeAll(keepingCapacity: true)
      for ring in polygons {
        for i in ring.indices {
          let a = ring[i]
          let b = ring[(i + 1) % ring.count]
          guard (a.y > py) != (b.y > py) else { continue }
          crossings.append(a.x + (py - a.y) / (b.y - a.y) * (b.x - a.x))
        }
      }
      crossings.sort()
      for k in stride(from: 0, to: crossings.count - 1, by: 2) {
        // Pixels whose centre x + 0.5 lies in [left, right).
        let first = max(0, Int((crossings[k] - 0.5).rounded(.up)))
        let last = min(width, Int((crossings[k + 1] - 0.5).rounded(.up)))
        if first < last { for x in first..<last { mask[y * width + x] = 1 } }
      }
    }
    return mask
  }

  /// |a ∩ b| / |a ∪ b| of two 0/1 masks (1 when both are empty).
  public static func iou(_ a: [UInt8], _ b: [UInt8]) -> Double {
    var inter = 0
    var union = 0
    for i in a.indices {
      inter += Int(a[i] & b[i])
      union += Int(a[i] | b[i])
    }
    return union == 0 ? 1 : Double(inter) / Double(union)
  }
}
