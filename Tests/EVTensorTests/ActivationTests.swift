import EVTensor
import Foundation
import Testing

@Suite struct ActivationTests {
  static let all: [Activation] = [.identity, .relu, .geluTanh, .geluErf, .hardswish]

  @Test(arguments: all)
  func matchesReferenceElementwise(_ act: Activation) {
    // A dense sweep of [-12, 12] plus random values: covers both tails and the region near 0.
    var values = stride(from: Float(-12), through: 12, by: 0.0037).map { $0 }
    values += Tensor.random([5000], seed: 11, in: -6...6).storage
    let x = Tensor(shape: [values.count], storage: values)
    let fast = activate(x, act)
    let reference = Reference.activate(x, act)
    for i in 0..<x.count {
      let (f, r) = (fast.storage[i], reference.storage[i])
      // A few 1e-6 relative: for negative x the exponent ~2|u| is itself rounded to Float, which
      // costs |2u|·ulp relative (≈2e-6 at x = −4). The absolute floor covers the far tail, where
      // results fall towards 0 (GELU(−12) ≈ −2e-32) and no float formula keeps relative accuracy.
      let ok = abs(f - r) <= 4e-6 * abs(r) + 1e-12
      #expect(ok, "\(act)(\(x.storage[i])) = \(f), reference \(r)")
      if !ok { break }
    }
  }

  @Test func inPlaceMatchesOutOfPlace() {
    let x = Tensor.random([3, 70_001], seed: 3, in: -5...5)
    for act in Self.all {
      var y = x
      activateInPlace(&y, act)
      expectIdentical(y, activate(x, act), "\(act)")
    }
  }

  /// GELU at points whose values are textbook: 0.5·x·(1 + erf(x/√2)) and the tanh approximation
  /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715x³))).
  @Test func geluKnownValues() {
    let points: [Float] = [-3, -1, -0.5, 0, 0.5, 1, 2]
    let erfValues: [Double] = [
      -0.00404969409489031, -0.15865525393145707, -0.15426876936299344, 0,
      0.34573123063700656, 0.8413447460685429, 1.9544997361036416,
    ]
    let tanhValues: [Double] = [
      -0.0036373920817729943, -0.15880800939172324, -0.15428599017485606, 0,
      0.34571400982514394, 0.8411919906082768, 1.954597694087775,
    ]
    let x = Tensor(shape: [points.count], storage: points)
    let e = activate(x, .geluErf)
    let t = activate(x, .geluTanh)
    for i in 0..<points.count {
      #expect(
        abs(Double(e.storage[i]) - erfValues[i]) <= 1e-6 * abs(erfValues[i]) + 1e-9,
        "erf GELU at \(points[i])")
      #expect(
        abs(Double(t.storage[i]) - tanhValues[i]) <= 1e-6 * abs(tanhValues[i]) + 1e-9,
        "tanh GELU at \(points[i])")
    }
    // The two variants differ measurably (1.5e-4 at x = 1), so mixing them up cannot go unnoticed.
    #expect(abs(e.storage[5] - t.storage[5]) > 1e-4)
  }

  @Test func reluAndHardswishKnownValues() {
    let x = Tensor(shape: [7], storage: [-4, -3, -1, 0, 1, 3, 4])
    #expect(activate(x, .relu).storage == [0, 0, 0, 0, 1, 3, 4])
    let h = activate(x, .hardswish).storage
    let expected: [Float] = [0, 0, -1.0 / 3, 0, 2.0 / 3, 3, 4]
    for i in 0..<7 { #expect(abs(h[i] - expected[i]) <= 1e-7, "hardswish(\(x.storage[i]))") }
  }
}
