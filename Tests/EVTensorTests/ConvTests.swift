import EVTensor
import Testing

@Suite struct ConvTests {
  struct ConvCase: CustomTestStringConvertible, Sendable {
    var n = 1, c = 4, h = 9, w = 11, o = 6, k = 3, stride = 1, padding = 1, groups = 1
    var bias = true
    var act = Activation.identity
    var testDescription: String {
      "N\(n) C\(c) \(h)×\(w) → O\(o) k\(k) s\(stride) p\(padding) g\(groups) bias \(bias) \(act)"
    }
  }

  static let cases: [ConvCase] = {
    var cases: [ConvCase] = []
    // Dense convs over the kernel / stride / padding grid, non-square odd images.
    for k in [1, 2, 3, 5] {
      for stride in [1, 2] {
        for padding in Set([0, k / 2, k - 1]) {
          cases.append(ConvCase(h: 9, w: 12, o: 5, k: k, stride: stride, padding: padding))
        }
      }
    }
    // Batch > 1, activations fused, no bias, even image sides.
    cases.append(
      ConvCase(n: 3, c: 3, h: 16, w: 10, o: 8, k: 3, stride: 2, padding: 1, act: .geluTanh))
    cases.append(
      ConvCase(
        n: 2, c: 7, h: 8, w: 8, o: 3, k: 1, stride: 1, padding: 0, bias: false, act: .hardswish))
    cases.append(ConvCase(n: 2, c: 5, h: 13, w: 7, o: 4, k: 1, stride: 2, padding: 0, act: .relu))
    cases.append(
      ConvCase(
        n: 1, c: 3, h: 17, w: 19, o: 16, k: 3, stride: 2, padding: 1, bias: false, act: .geluErf))
    // Grouped convs with many channels per group (GEMM per group) …
    cases.append(ConvCase(n: 2, c: 16, h: 7, w: 9, o: 12, k: 1, stride: 1, padding: 0, groups: 2))
    cases.append(
      ConvCase(n: 1, c: 18, h: 7, w: 9, o: 12, k: 3, stride: 2, padding: 1, groups: 3, act: .relu))
    cases.append(
      ConvCase(
        n: 1, c: 24, h: 6, w: 5, o: 24, k: 1, stride: 1, padding: 0, groups: 3, act: .geluTanh))
    // … and with few (direct loops).
    cases.append(ConvCase(n: 2, c: 8, h: 9, w: 7, o: 4, k: 3, stride: 1, padding: 1, groups: 4))
    cases.append(
      ConvCase(n: 1, c: 12, h: 10, w: 11, o: 24, k: 2, stride: 2, padding: 1, groups: 3, act: .relu)
    )
    // Depthwise, including channel multipliers, big kernels and stride 2.
    for k in [1, 3, 5] {
      for stride in [1, 2] {
        cases.append(
          ConvCase(
            n: 2, c: 6, h: 11, w: 8, o: 6, k: k, stride: stride, padding: k / 2, groups: 6,
            act: .geluTanh))
      }
    }
    cases.append(
      ConvCase(n: 1, c: 5, h: 7, w: 9, o: 10, k: 3, stride: 1, padding: 1, groups: 5, bias: false))
    cases.append(
      ConvCase(
        n: 1, c: 4, h: 6, w: 6, o: 4, k: 5, stride: 1, padding: 0, groups: 4, act: .hardswish))
    cases.append(ConvCase(n: 1, c: 3, h: 5, w: 4, o: 3, k: 5, stride: 2, padding: 4, groups: 3))
    // Large enough that the direct and epilogue loops split across threads.
    cases.append(
      ConvCase(
        n: 1, c: 32, h: 40, w: 36, o: 32, k: 3, stride: 1, padding: 1, groups: 32, act: .geluTanh))
    cases.append(
      ConvCase(n: 1, c: 16, h: 40, w: 36, o: 24, k: 3, stride: 1, padding: 1, act: .geluTanh))
    return cases
  }()

  @Test(arguments: cases)
  func conv2dMatchesReference(_ c: ConvCase) {
    let x = Tensor.random([c.n, c.c, c.h, c.w], seed: 101, in: -2...2)
    let weight = Tensor.random([c.o, c.c / c.groups, c.k, c.k], seed: 102)
    let bias = c.bias ? Tensor.random([c.o], seed: 103) : nil
    let fast = conv2d(
      x, weight: weight, bias: bias, stride: c.stride, padding: c.padding, groups: c.groups,
      activation: c.act)
    let reference = Reference.conv2d(
      x, weight: weight, bias: bias, stride: c.stride, padding: c.padding, groups: c.groups,
      activation: c.act)
    expectClose(fast, reference, c.testDescription)
  }

  /// A 3×3 box filter on a ramp, checked by hand: interior sums and zero-padded borders.
  @Test func conv2dKnownValues() {
    let x = Tensor(shape: [1, 1, 3, 3], storage: [1, 2, 3, 4, 5, 6, 7, 8, 9])
    let ones = Tensor(repeating: 1, shape: [1, 1, 3, 3])
    let y = conv2d(x, weight: ones, bias: Tensor(shape: [1], storage: [0.5]), padding: 1)
    #expect(y.storage == [12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5])
    let strided = conv2d(x, weight: ones, bias: nil, stride: 2, padding: 1)
    #expect(strided.shape == [1, 1, 2, 2])
    #expect(strided.storage == [12, 16, 24, 28])
  }

  @Test(arguments: [(1, 3, 5, 4, 2), (2, 4, 3, 7, 3), (1, 16, 8, 8, 8)])
  func convTransposeMatchesReference(_ s: (Int, Int, Int, Int, Int)) {
    let (n, cin, h, w, cout) = s
    let x = Tensor.random([n, cin, h, w], seed: 201)
    let weight = Tensor.random([cin, cout, 2, 2], seed: 202)
    let bias = Tensor.random([cout], seed: 203)
    expectClose(
      convTranspose2x2(x, weight: weight, bias: bias),
      Reference.convTranspose2x2(x, weight: weight, bias: bias))
    expectClose(
      convTranspose2x2(x, weight: weight, bias: nil),
      Reference.convTranspose2x2(x, weight: weight, bias: nil))
  }

  @Test func convTransposeKnownValues() {
    // One input pixel of value 2 spreads the 2×2 kernel times 2, plus the bias.
    let x = Tensor(shape: [1, 1, 1, 2], storage: [2, -1])
    let weight = Tensor(shape: [1, 1, 2, 2], storage: [1, 2, 3, 4])
    let y = convTranspose2x2(x, weight: weight, bias: Tensor(shape: [1], storage: [10]))
    #expect(y.shape == [1, 1, 2, 4])
    #expect(y.storage == [12, 14, 9, 8, 16, 18, 7, 6])
  }

  /// conv → BatchNorm (eval) must equal the folded conv.
  @Test(arguments: [false, true])
  func foldedBatchNormMatchesConvThenNorm(_ withBias: Bool) {
    let (c, o) = (5, 7)
    let x = Tensor.random([2, c, 6, 9], seed: 301)
    let weight = Tensor.random([o, c, 3, 3], seed: 302)
    let bias = withBias ? Tensor.random([o], seed: 303) : nil
    let gamma = Tensor.random([o], seed: 304, in: 0.5...2)
    let beta = Tensor.random([o], seed: 305)
    let mean = Tensor.random([o], seed: 306)
    let variance = Tensor.random([o], seed: 307, in: 0.01...3)
    let eps: Float = 1e-6
    let folded = foldBatchNorm(
      weight: weight, bias: bias, gamma: gamma, beta: beta, mean: mean, variance: variance, eps: eps
    )
    let referenceFold = Reference.foldBatchNorm(
      weight: weight, bias: bias, gamma: gamma, beta: beta, mean: mean, variance: variance, eps: eps
    )
    expectClose(folded.weight, referenceFold.weight)
    expectClose(folded.bias, referenceFold.bias)

    let raw = Reference.conv2d(x, weight: weight, bias: bias, padding: 1)
    var normed = raw
    let plane = 6 * 9
    for i in 0..<raw.count {
      let ch = (i / plane) % o
      let v =
        (Double(raw.storage[i]) - Double(mean.storage[ch]))
        / (Double(variance.storage[ch]) + Double(eps)).squareRoot()
      normed.storage[i] = Float(v * Double(gamma.storage[ch]) + Double(beta.storage[ch]))
    }
    expectClose(conv2d(x, weight: folded.weight, bias: folded.bias, padding: 1), normed)
  }
}
