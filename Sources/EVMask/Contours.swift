/// A corner of the pixel grid: pixel (x, y) covers the square from corner (x, y) to (x+1, y+1),
/// the convention of COCO boxes and of pycocotools' polygon rasteriser.
public struct GridPoint: Hashable, Sendable {
  public var x: Int
  public var y: Int

  public init(x: Int, y: Int) {
    self.x = x
    self.y = y
  }
}

/// One 4-connected region of a mask: its outline and the outlines of its holes, as closed
/// polygons through pixel corners (the first point is not repeated at the end). The outline
/// runs clockwise on screen (y down), the holes counter-clockwise; no two consecutive edges are
/// collinear. Filled by the even-odd rule (or by sampling pixel centres), the polygons give back
/// exactly the region's pixels.
public struct MaskRegion: Hashable, Sendable {
  public var outline: [GridPoint]
  public var holes: [[GridPoint]]

  public init(outline: [GridPoint], holes: [[GridPoint]]) {
    self.outline = outline
    self.holes = holes
  }

  /// The outline with every hole joined to it by a zero-width cut (a segment walked there and
  /// back): one polygon that polygon-only formats (COCO polygons, YOLO-seg, LabelMe) can hold.
  /// The even-odd rule, which pycocotools and scanline fillers apply, leaves the holes empty,
  /// as the cut's two walks cancel.
  public var joined: [GridPoint] { MaskContours.join(outline, holes) }

  /// The pixels the region covers (the outline's area less the holes').
  public var area: Int {
    MaskContours.doubledArea(outline) / 2
      - holes.reduce(0) { $0 - MaskContours.doubledArea($1) / 2 }
  }
}

/// Outlines of binary masks.
public enum MaskContours {
  /// The 4-connected regions of a row-major mask (non-zero = inside), largest first (ties: by
  /// the topmost, then leftmost pixel).
  public static func regions(rowMajor mask: [UInt8], width: Int, height: Int) -> [MaskRegion] {
    precondition(
      mask.count == width * height, "MaskContours: \(mask.count) values for \(width)×\(height)")
    // Only the bounding box matters; work in it, with a one-pixel margin of background.
    var x0 = width
    var y0 = height
    var x1 = -1
    var y1 = -1
    for y in 0..<height {
      let row = y * width
      for x in 0..<width where mask[row + x] != 0 {
        x0 = min(x0, x)
        x1 = max(x1, x)
        y0 = min(y0, y)
        y1 = max(y1, y)
      }
    }
    guard x1 >= 0 else { return [] }
    let w = x1 - x0 + 3
    let h = y1 - y0 + 3
    var inside = [Bool](repeating: false, count: w * h)
    for y in y0...y1 {
      for x in x0...x1 where mask[y * width + x] != 0 {
        inside[(y - y0 + 1) * w + (x - x0 + 1)] = true
      }
    }
    let labels = componentLabels(inside, width: w, height: h)
    var rings = traceRings(inside, width: w, height: h)
    // Back to image coordinates.
    for r in rings.indices {
      for p in rings[r].points.indices {
        rings[r].points[p].x += x0 - 1
        rings[r].points[p].y += y0 - 1
      }
    }
    var outlines: [Int: [GridPoint]] = [:]
    var holes: [Int: [[GridPoint]]] = [:]
    var firstPixel: [Int: Int] = [:]
    for ring in rings {
      let label = labels[ring.pixel]
      if doubledArea(ring.points) > 0 {
        outlines[label] = ring.points
        firstPixel[label] = ring.pixel
      } else {
        holes[label, default: []].append(ring.points)
      }
    }
    let regions = outlines.keys.map { label in
      (MaskRegion(outline: outlines[label]!, holes: holes[label] ?? []), firstPixel[label]!)
    }
    return regions.sorted {
      let a0 = $0.0.area
      let a1 = $1.0.area
      return a0 != a1 ? a0 > a1 : $0.1 < $1.1
    }.map(\.0)
  }

  /// Twice the signed area of a closed polygon (shoelace), positive for clockwise on screen.
  static func doubledArea(_ ring: [GridPoint]) -> Int {
    var sum = 0
    for i in ring.indices {
      let a = ring[i]
      let b = ring[(i + 1) % ring.count]
      sum += a.x * b.y - b.x * a.y
    }
    return sum
  }

  /// Labels of the 4-connected components of `inside` (0 outside any).
  static func componentLabels(_ inside: [Bool], width w: Int, height h: Int) -> [Int] {
    var labels = [Int](repeating: 0, count: w * h)
    var next = 0
    var stack: [Int] = []
    for start in 0..<(w * h) where inside[start] && labels[start] == 0 {
      next += 1
      labels[start] = next
      stack.append(start)
      while let i = stack.popLast() {
        let x = i % w
        for j in [i - w, i + w, x > 0 ? i - 1 : -1, x + 1 < w ? i + 1 : -1]
        where j >= 0 && j < w * h && inside[j] && labels[j] == 0 {
          labels[j] = next
          stack.append(j)
        }
      }
    }
    return labels
  }

  /// A closed ring of boundary edges and one pixel it runs along.
  struct Ring {
    var points: [GridPoint]
    var pixel: Int
  }

  // Edge directions on the corner grid, clockwise on screen: a right turn is +1.
  private static let steps = [(1, 0), (0, 1), (-1, 0), (0, -1)]

  /// Every boundary as a ring of pixel-grid edges, the inside on each edge's right-hand side (y
  /// down). Where two regions touch only at a corner the walk turns right, toward the pixel it
  /// is following, so regions stay 4-connected and separate. `inside` has a background margin.
  static func traceRings(_ inside: [Bool], width w: Int, height h: Int) -> [Ring] {
    // edges[v] bit d: a boundary edge leaves corner v (= y·(w+1) + x) in direction d;
    // unused[v]: those not yet walked.
    let stride = w + 1
    var edges = [UInt8](repeating: 0, count: stride * (h + 1))
    func isInside(_ x: Int, _ y: Int) -> Bool { inside[y * w + x] }
    for y in 1..<(h - 1) {
      for x in 1..<(w - 1) where isInside(x, y) {
        if !isInside(x, y - 1) { edges[y * stride + x] |= 1 }  // top, rightwards
        if !isInside(x + 1, y) { edges[y * stride + x + 1] |= 2 }  // right side, downwards
        if !isInside(x, y + 1) { edges[(y + 1) * stride + x + 1] |= 4 }  // bottom, leftwards
        if !isInside(x - 1, y) { edges[(y + 1) * stride + x] |= 8 }  // left side, upwards
      }
    }
    var unused = edges
    var rings: [Ring] = []
    for start in unused.indices where unused[start] != 0 {
      while unused[start] != 0 {
        var d = unused[start].trailingZeroBitCount
        let first = d
        var v = start
        let (sx, sy) = (start % stride, start / stride)
        // The pixel on the first edge's right-hand side.
        let pixel: Int
        switch d {
        case 0: pixel = sy * w + sx
        case 1: pixel = sy * w + sx - 1
        case 2: pixel = (sy - 1) * w + sx - 1
        default: pixel = (sy - 1) * w + sx
        }
        var points: [GridPoint] = []
        var previous = -1
        while unused[v] & (1 << d) != 0 {
          unused[v] &= ~(1 << d)
          if d != previous { points.append(GridPoint(x: v % stride, y: v / stride)) }
          previous = d
          v += steps[d].0 + steps[d].1 * stride
          // Right turn first, then straight on, then left; an edge already walked closes the
          // ring (it can only be the first).
          for turn in [1, 0, 3] where edges[v] & (1 << ((d + turn) & 3)) != 0 {
            d = (d + turn) & 3
            break
          }
        }
        // The start lies on a straight run when the ring ends going the way it began.
        if previous == first && points.count > 1 { points.removeFirst() }
        rings.append(Ring(points: points, pixel: pixel))
      }
    }
    return rings
  }

  /// `outline` with each hole spliced in by a cut from the hole's first point to the nearest
  /// point of the polygon built so far, walked there and back.
  package static func join(_ outline: [GridPoint], _ holes: [[GridPoint]]) -> [GridPoint] {
    var ring = outline
    for hole in holes where !hole.isEmpty {
      let target = hole[0]
      var best = 0
      var bestDistance = Int.max
      for (i, p) in ring.enumerated() {
        let dx = p.x - target.x
        let dy = p.y - target.y
        let distance = dx * dx + dy * dy
        if distance < bestDistance {
          best = i
          bestDistance = distance
        }
      }
      ring = Array(ring[...best]) + hole + [hole[0], ring[best]] + Array(ring[(best + 1)...])
    }
    return ring
  }
}
