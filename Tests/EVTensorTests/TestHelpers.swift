import EVTensor
import TestSupport
import Testing

extension Tensor {
  /// Uniform values in `range`, reproducible from `seed`.
  static func random(_ shape: [Int], seed: UInt64, in range: ClosedRange<Float> = -1...1) -> Tensor
  {
    var rng = SeededGenerator(seed: seed)
    let n = shape.reduce(1, *)
    return Tensor(shape: shape, storage: (0..<n).map { _ in Float.random(in: range, using: &rng) })
  }
}

/// Worst elementwise error |a − b| measured against the tensor's overall scale (its largest
/// magnitude, at least 1e-30): a single bad element fails even when the L2 error is small.
func scaledMaxError(_ a: Tensor, _ b: Tensor) -> Double {
  var worst = 0.0
  var scale = 1e-30
  for i in 0..<b.count {
    scale = max(scale, Double(abs(b.storage[i])))
    worst = max(worst, Double(abs(a.storage[i] - b.storage[i])))
  }
  return worst / scale
}

/// Expects `fast` to match `reference` in shape and within `tolerance` (relative L2 and scaled max).
func expectClose(
  _ fast: Tensor, _ reference: Tensor, tolerance: Double = 1e-5, _ context: String = "",
  sourceLocation: SourceLocation = #_sourceLocation
) {
  #expect(fast.shape == reference.shape, "shape \(context)", sourceLocation: sourceLocation)
  guard fast.shape == reference.shape else { return }
  let l2 = relativeL2(fast, reference)
  let worst = scaledMaxError(fast, reference)
  #expect(l2 <= tolerance, "relative L2 \(l2) \(context)", sourceLocation: sourceLocation)
  #expect(
    worst <= 4 * tolerance, "scaled max error \(worst) \(context)", sourceLocation: sourceLocation)
}

/// Exact equality, for pure data movement.
func expectIdentical(
  _ a: Tensor, _ b: Tensor, _ context: String = "",
  sourceLocation: SourceLocation = #_sourceLocation
) {
  #expect(a.shape == b.shape, "shape \(context)", sourceLocation: sourceLocation)
  #expect(a.storage == b.storage, "values \(context)", sourceLocation: sourceLocation)
}

func relativeL2(_ a: Tensor, _ b: Tensor) -> Double {
  var diff = 0.0
  var norm = 0.0
  for i in 0..<a.count {
    let d = Double(a.storage[i]) - Double(b.storage[i])
    diff += d * d
    norm += Double(b.storage[i]) * Double(b.storage[i])
  }
  return norm == 0 ? diff.squareRoot() : (diff / norm).squareRoot()
}
