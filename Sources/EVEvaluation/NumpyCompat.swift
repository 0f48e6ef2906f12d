import Foundation

// The few numpy operations whose exact rounding decides COCO metrics.

/// `numpy.linspace(start, stop, num)`: `i * step + start`, the last value set to `stop`. The
/// thresholds must be these exact doubles (0.8999999999999999, not 0.9): IoUs equal to a
/// threshold are matched by `>=`.
func numpyLinspace(_ start: Double, _ stop: Double, _ num: Int) -> [Double] {
  precondition(num >= 2)
  let step = (stop - start) / Double(num - 1)
  var y = (0..<num).map { Double($0) * step + start }
  y[num - 1] = stop
  return y
}

/// `numpy.searchsorted(sorted, value, side="left")`: the first index whose element is not less
/// than `value`.
func searchSortedLeft(_ sorted: [Double], _ value: Double) -> Int {
  var lo = 0
  var hi = sorted.count
  while lo < hi {
    let mid = (lo + hi) / 2
    if sorted[mid] < value { lo = mid + 1 } else { hi = mid }
  }
  return lo
}

/// `numpy.mean` of a 1-D float64 array: the first element plus numpy's pairwise sum of the rest
/// (8 accumulators, blocks of 128), divided by the count — bit for bit what numpy prints.
func numpyMean(_ values: [Double]) -> Double {
  precondition(!values.isEmpty)
  let sum = values.withUnsafeBufferPointer { buffer in
    buffer[0] + pairwiseSum(buffer.baseAddress! + 1, buffer.count - 1)
  }
  return sum / Double(values.count)
}

private func pairwiseSum(_ a: UnsafePointer<Double>, _ n: Int) -> Double {
  if n < 8 {
    var res = 0.0
    for i in 0..<n { res += a[i] }
    return res
  } else if n <= 128 {
    var r = (0..<8).map { a[$0] }
    var i = 8
    while i < n - (n % 8) {
      for j in 0..<8 { r[j] += a[i + j] }
      i += 8
    }
    var res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    while i < n {
      res += a[i]
      i += 1
    }
    return res
  } else {
    var n2 = n / 2
    n2 -= n2 % 8
    return pairwiseSum(a, n2) + pairwiseSum(a + n2, n - n2)
  }
}

/// Indices that sort `keys` ascending, keeping equal keys in order (`argsort(kind="mergesort")`).
func stableArgsort<T: Comparable>(_ keys: [T]) -> [Int] {
  keys.indices.sorted { a, b in keys[a] < keys[b] || (keys[a] == keys[b] && a < b) }
}

/// Python's `'{:0.3f}'.format(x)` (printf rounding of the exact binary value, like CPython).
func format3(_ x: Double) -> String {
  formatFixed(x, digits: 3)
}

func formatFixed(_ x: Double, digits: Int) -> String {
  if x.isNaN { return "nan" }
  if x.isInfinite { return x > 0 ? "inf" : "-inf" }
  return String(format: "%.\(digits)f", x)
}
