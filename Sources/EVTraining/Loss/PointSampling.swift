/// `torch.nn.functional.grid_sample(mode="bilinear", padding_mode="zeros",
/// align_corners=False)` at points given in [0, 1]² as the official `point_sample` passes them
/// (`2·p − 1`), for one `height × width` map read through `pixel(y, x)`.
struct PointSample {
  /// The four neighbours of a point and their weights; a neighbour outside the map has
  /// weight but reads 0 (zero padding).
  struct Taps {
    var x0: Int
    var y0: Int
    var nw: Float
    var ne: Float
    var sw: Float
    var se: Float
  }

  /// PyTorch's vectorised CPU kernel in float32: `g = 2·p − 1`, `i = g·(size/2) + (size−1)/2`,
  /// then the weights from the fractional parts `w = i − ⌊i⌋`, `e = 1 − w` (and `n`, `s` in y):
  /// nw = s·e, ne = s·w, sw = n·e, se = n·w.
  @inline(__always)
  static func taps(x px: Float, y py: Float, height: Int, width: Int) -> Taps {
    let ix = (2 * px - 1) * (Float(width) / 2) + (Float(width) - 1) / 2
    let iy = (2 * py - 1) * (Float(height) / 2) + (Float(height) - 1) / 2
    let fx = ix.rounded(.down)
    let fy = iy.rounded(.down)
    let w = ix - fx
    let e = 1 - w
    let n = iy - fy
    let s = 1 - n
    return Taps(x0: Int(fx), y0: Int(fy), nw: s * e, ne: s * w, sw: n * e, se: n * w)
  }

  /// The sampled value, in PyTorch's order of the four products.
  @inline(__always)
  static func value(_ t: Taps, height: Int, width: Int, pixel: (Int, Int) -> Float) -> Float {
    func read(_ y: Int, _ x: Int) -> Float {
      y >= 0 && y < height && x >= 0 && x < width ? pixel(y, x) : 0
    }
    let x1 = t.x0 + 1
    let y1 = t.y0 + 1
    return read(t.y0, t.x0) * t.nw + read(t.y0, x1) * t.ne + read(y1, t.x0) * t.sw
      + read(y1, x1) * t.se
  }

  /// Calls `body(y, x, weight)` for each neighbour inside the map: the backward pass of
  /// `value` with respect to the map.
  @inline(__always)
  static func scatter(
    _ t: Taps, height: Int, width: Int, _ body: (Int, Int, Float) -> Void
  ) {
    for (dy, dx, w) in [(0, 0, t.nw), (0, 1, t.ne), (1, 0, t.sw), (1, 1, t.se)] {
      let y = t.y0 + dy
      let x = t.x0 + dx
      if y >= 0 && y < height && x >= 0 && x < width { body(y, x, w) }
    }
  }
}

/// PointRend's `get_uncertain_point_coords_with_randomness` as the official loss calls it:
/// of `oversampled` uniform draws, the `importantCount` with the smallest |logit| (largest
/// uncertainty −|logit|; ties keep the earlier draw), followed by the `extra` uniform draws.
/// Points are (x, y) pairs in [0, 1)²; the chosen draws come in the order they were drawn
/// (the loss sums over them, so their order only changes rounding).
func uncertainPoints(
  oversampled: ArraySlice<Float>, extra: ArraySlice<Float>, importantCount: Int,
  logitAt: (Float, Float) -> Float
) -> [Float] {
  let count = oversampled.count / 2
  let base = oversampled.startIndex
  var uncertainty = [Float](repeating: 0, count: count)
  for i in 0..<count {
    uncertainty[i] = -abs(logitAt(oversampled[base + 2 * i], oversampled[base + 2 * i + 1]))
  }
  let chosen = largest(uncertainty, count: importantCount)
  var points: [Float] = []
  points.reserveCapacity(2 * importantCount + extra.count)
  for i in chosen {
    points.append(oversampled[base + 2 * i])
    points.append(oversampled[base + 2 * i + 1])
  }
  points.append(contentsOf: extra)
  return points
}

/// The indices of the `count` largest values, ties to the lower index, in increasing index
/// order: what `torch.topk` selects (as a set) when ties break towards earlier elements.
/// A radix selection instead of a sort: four counting passes over the values' bytes, from the
/// top, find the `count`-th largest value; then one pass collects what lies above it and the
/// first of its ties. Linear in the number of values (a sort of 37 632 uncertainties per mask
/// and output was a tenth of the decoder step).
func largest(_ values: [Float], count: Int) -> [Int] {
  precondition(count >= 0 && count <= values.count, "largest: \(count) of \(values.count)")
  guard count > 0 else { return [] }
  // Unsigned keys in the order of the floats: negative ones bit-inverted, positive ones with
  // the sign bit set (no NaN here: uncertainties are −|logit|).
  let keys = values.map { v -> UInt32 in
    let bits = v.bitPattern
    return bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
  }
  var prefix: UInt32 = 0
  var known: UInt32 = 0
  var wanted = count
  var histogram = [Int](repeating: 0, count: 256)
  for shift in stride(from: 24, through: 0, by: -8) {
    for i in 0..<256 { histogram[i] = 0 }
    for key in keys where key & known == prefix {
      histogram[Int((key >> UInt32(shift)) & 0xFF)] += 1
    }
    var digit = 255
    while wanted > histogram[digit] {
      wanted -= histogram[digit]
      digit -= 1
    }
    prefix |= UInt32(digit) << UInt32(shift)
    known |= 0xFF << UInt32(shift)
  }
  // `prefix` is now the count-th largest key; `wanted` of its ties are taken.
  var chosen: [Int] = []
  chosen.reserveCapacity(count)
  for (i, key) in keys.enumerated() {
    if key > prefix {
      chosen.append(i)
    } else if key == prefix && wanted > 0 {
      chosen.append(i)
      wanted -= 1
    }
  }
  return chosen
}
