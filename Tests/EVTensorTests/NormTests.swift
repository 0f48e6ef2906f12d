import EVTensor
import Testing

@Suite struct NormTests {
  @Test(arguments: [[1, 7], [3, 5, 33], [2, 4096, 256], [1, 1]])
  func layerNormMatchesReference(_ shape: [Int]) {
    // An offset and a spread that make naive single-pass variance lose precision.
    let x = Tensor.random(shape, seed: 401, in: 3...7)
    let d = shape.last!
    let w = Tensor.random([d], seed: 402, in: 0.5...1.5)
    let b = Tensor.random([d], seed: 403)
    for eps: Float in [1e-6, 1e-5] {
      expectClose(
        layerNorm(x, weight: w, bias: b, eps: eps),
        Reference.layerNorm(x, weight: w, bias: b, eps: eps),
        "\(shape) eps \(eps)")
    }
  }

  @Test(arguments: [[1, 3, 5, 7], [2, 16, 9, 31], [1, 256, 64, 64], [2, 1, 3, 3]])
  func layerNorm2dMatchesReference(_ shape: [Int]) {
    let x = Tensor.random(shape, seed: 411, in: -3...5)
    let w = Tensor.random([shape[1]], seed: 412, in: 0.5...1.5)
    let b = Tensor.random([shape[1]], seed: 413)
    expectClose(
      layerNorm2d(x, weight: w, bias: b, eps: 1e-6),
      Reference.layerNorm2d(x, weight: w, bias: b, eps: 1e-6),
      "\(shape)")
  }

  @Test func layerNormKnownValues() {
    // Row (1, 2, 3): mean 2, biased variance 2/3, so (x − 2)/√(2/3 + eps).
    let x = Tensor(shape: [1, 3], storage: [1, 2, 3])
    let y = layerNorm(x, weight: Tensor(repeating: 1, shape: [3]), bias: Tensor(zeros: [3]), eps: 0)
    let s = Float((1.5).squareRoot())
    for (v, e) in zip(y.storage, [-s, 0, s]) { #expect(abs(v - e) <= 1e-6) }
    // The same vector laid out as three channels of a 1×1 image.
    let x2 = x.reshaped([1, 3, 1, 1])
    let y2 = layerNorm2d(
      x2, weight: Tensor(shape: [3], storage: [2, 2, 2]), bias: Tensor(repeating: 1, shape: [3]),
      eps: 0)
    for (v, e) in zip(y2.storage, [1 - 2 * s, 1, 1 + 2 * s]) { #expect(abs(v - e) <= 2e-6) }
  }

  @Test(arguments: [[1, 1], [3, 17], [2, 8, 4096], [5, 1000]])
  func softmaxMatchesReference(_ shape: [Int]) {
    let x = Tensor.random(shape, seed: 421, in: -30...30)
    let fast = softmax(x)
    let reference = Reference.softmax(x)
    expectClose(fast, reference, "\(shape)")
    // Each row sums to 1.
    let d = shape.last!
    for r in 0..<(x.count / d) {
      let s = (0..<d).reduce(0.0) { $0 + Double(fast.storage[r * d + $1]) }
      #expect(abs(s - 1) <= 1e-5)
    }
  }

  @Test func softmaxKnownValuesAndLargeInputs() {
    // Shifting by a large constant must not overflow: the max is subtracted first.
    let x = Tensor(shape: [2, 3], storage: [0, 1, 2, 1000, 1001, 1002])
    let y = softmax(x)
    let e1: Float = 0.09003057
    let e2: Float = 0.24472847
    let e3: Float = 0.66524096
    for r in 0..<2 {
      #expect(abs(y.storage[3 * r] - e1) <= 1e-6)
      #expect(abs(y.storage[3 * r + 1] - e2) <= 1e-6)
      #expect(abs(y.storage[3 * r + 2] - e3) <= 1e-6)
    }
  }
}
