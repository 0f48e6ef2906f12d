// The official point-prompt protocol's click simulator (sam_eval_utils.Clicker, after RITM):
// each click goes to the pixel farthest from the error region's boundary — the maximum of
// OpenCV's exact Euclidean distance transform (DIST_L2, DIST_MASK_PRECISE) of the false-negative
// or false-positive map, each padded by one background pixel so the image border counts as
// boundary. Positive if the false-negative maximum is larger, ties going negative; among equal
// maxima the first in row-major order; clicked pixels are never chosen again.

/// A simulated click in mask pixels.
public struct Click: Sendable, Equatable, Codable {
  public var positive: Bool
  public var x: Int
  public var y: Int

  public init(positive: Bool, x: Int, y: Int) {
    self.positive = positive
    self.x = x
    self.y = y
  }
}

public struct Clicker: Sendable {
  public let height: Int
  public let width: Int
  private let groundTruth: [Bool]
  private var notClicked: [Bool]
  public private(set) var clicks: [Click] = []

  /// `groundTruth`: row-major `height × width`.
  public init(groundTruth: [Bool], height: Int, width: Int) {
    precondition(groundTruth.count == height * width, "ground truth must be \(height)×\(width)")
    self.height = height
    self.width = width
    self.groundTruth = groundTruth
    notClicked = [Bool](repeating: true, count: height * width)
  }

  /// Places the next click given the current prediction (row-major, same size; all false before
  /// the first click) and records it.
  @discardableResult
  public mutating func nextClick(prediction: [Bool]) -> Click {
    precondition(prediction.count == height * width, "prediction must be \(height)×\(width)")
    let n = height * width
    var falseNegative = [Bool](repeating: false, count: n)
    var falsePositive = [Bool](repeating: false, count: n)
    var anyFN = false
    var anyFP = false
    for i in 0..<n {
      let g = groundTruth[i]
      let p = prediction[i]
      if g && !p {
        falseNegative[i] = true
        anyFN = true
      }
      if !g && p {
        falsePositive[i] = true
        anyFP = true
      }
    }
    let fn = anyFN ? maskedDistances(falseNegative) : nil
    let fp = anyFP ? maskedDistances(falsePositive) : nil
    let fnMax = fn?.max ?? 0
    let fpMax = fp?.max ?? 0
    let positive = fnMax > fpMax
    // With no error at all both maps are zero and numpy's first zero is pixel (0, 0).
    let index = positive ? fn!.firstMaxIndex : (fp?.firstMaxIndex ?? 0)
    let click = Click(positive: positive, x: index % width, y: index / width)
    notClicked[index] = false
    clicks.append(click)
    return click
  }

  /// The distance map times the not-clicked map: its maximum and where it first occurs.
  ///
  /// Only the mask's bounding box is transformed: the ring just outside it is background, and
  /// any background pixel farther out is no closer than its projection onto that ring, so the
  /// distances inside equal those of the whole (padded) image, and they are 0 outside.
  private func maskedDistances(_ mask: [Bool]) -> (max: Float, firstMaxIndex: Int) {
    var x0 = width
    var y0 = height
    var x1 = -1
    var y1 = -1
    for y in 0..<height {
      let row = y * width
      for x in 0..<width where mask[row + x] {
        x0 = min(x0, x)
        x1 = max(x1, x)
        y0 = min(y0, y)
        y1 = max(y1, y)
      }
    }
    guard x1 >= 0 else { return (0, 0) }
    let h = y1 - y0 + 1
    let w = x1 - x0 + 1
    var crop = [Bool](repeating: false, count: h * w)
    for y in 0..<h {
      for x in 0..<w { crop[y * w + x] = mask[(y + y0) * width + x + x0] }
    }
    let d = euclideanDistanceTransform(crop, height: h, width: w)
    var best: Float = 0
    var index = 0  // with nothing left above 0, numpy's first maximum is pixel (0, 0)
    for y in 0..<h {
      for x in 0..<w {
        let i = (y + y0) * width + x + x0
        let v = notClicked[i] ? d[y * w + x] : 0
        if v > best {
          best = v
          index = i
        }
      }
    }
    return (best, index)
  }
}

/// For each pixel of the row-major `mask`, the Euclidean distance to the nearest background
/// pixel, with the image surrounded by a one-pixel background border — what
/// `cv2.distanceTransform(np.pad(mask, 1), DIST_L2, DIST_MASK_PRECISE)[1:-1, 1:-1]` returns.
///
/// Squared distances are exact integers (Felzenszwalb–Huttenlocher lower envelope, columns then
/// rows); OpenCV computes the same envelope and takes a float square root of the same integer,
/// so the float32 results agree bit for bit.
public func euclideanDistanceTransform(_ mask: [Bool], height: Int, width: Int) -> [Float] {
  precondition(mask.count == height * width)
  let h = height + 2
  let w = width + 2
  // Column pass: squared vertical distance to the nearest background pixel of the padded map.
  var f = [Int](repeating: 0, count: h * w)
  f.withUnsafeMutableBufferPointer { f in
    for x in 0..<w {
      var dist = 0
      for y in 0..<h {
        let inside = y > 0 && y < h - 1 && x > 0 && x < w - 1 && mask[(y - 1) * width + (x - 1)]
        dist = inside ? dist + 1 : 0
        f[y * w + x] = dist
      }
      dist = 0
      for y in stride(from: h - 1, through: 0, by: -1) {
        let v = f[y * w + x]
        dist = v == 0 ? 0 : dist + 1
        let best = min(v, dist)
        f[y * w + x] = best * best
      }
    }
  }
  // Row pass: lower envelope of parabolas (q - p)² + f[p].
  var out = [Float](repeating: 0, count: height * width)
  var v = [Int](repeating: 0, count: w)
  var z = [Double](repeating: 0, count: w + 1)
  var row = [Int](repeating: 0, count: w)
  for y in 1..<(h - 1) {
    for x in 0..<w { row[x] = f[y * w + x] }
    var k = 0
    v[0] = 0
    z[0] = -.infinity
    z[1] = .infinity
    for q in 1..<w {
      while true {
        let p = v[k]
        let s = Double((row[q] + q * q) - (row[p] + p * p)) / Double(2 * (q - p))
        if s > z[k] {
          k += 1
          v[k] = q
          z[k] = s
          z[k + 1] = .infinity
          break
        }
        k -= 1
      }
    }
    k = 0
    for q in 0..<w {
      while z[k + 1] < Double(q) { k += 1 }
      let p = v[k]
      if q > 0 && q < w - 1 {
        let d = (q - p) * (q - p) + row[p]
        out[(y - 1) * width + (q - 1)] = Float(d).squareRoot()
      }
    }
  }
  return out
}
