import EVTensor
import EVTraining
import TestSupport
import Testing

/// Every fast op against its plain twin (`tape.plain`): the same random inputs through both,
/// the same random output gradient back, then the outputs and every input's gradient compared.
/// The plain ops are checked against central differences in `OpGradientTests`.
@Suite struct FastOpTests {
  /// Relative L2 distance of two equally long arrays.
  static func distance(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count)
    var diff = 0.0
    var norm = 0.0
    for (x, y) in zip(a, b) {
      diff += (Double(x) - Double(y)) * (Double(x) - Double(y))
      norm += Double(y) * Double(y)
    }
    return (diff / max(norm, 1e-30)).squareRoot()
  }

  static func compare(
    _ inputs: [Variable], seed: UInt64 = 3, tolerance: Double = 1e-5,
    fast: (Tape, [Variable]) -> Variable, plain: (Tape, [Variable]) -> Variable,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    func run(_ build: (Tape, [Variable]) -> Variable) -> (Tensor, [[Float]?]) {
      for input in inputs { input.grad = nil }
      let tape = Tape()
      let y = build(tape, inputs)
      var rng = Fuzz.Generator(seed: seed)
      let r = (0..<y.count).map { _ in Float.random(in: -1...1, using: &rng) }
      tape.backward(from: y, gradient: r)
      return (y.value, inputs.map(\.grad))
    }
    let (fastValue, fastGrads) = run(fast)
    let (plainValue, plainGrads) = run(plain)
    #expect(fastValue.shape == plainValue.shape, sourceLocation: sourceLocation)
    #expect(
      distance(fastValue.storage, plainValue.storage) <= tolerance, "value",
      sourceLocation: sourceLocation)
    for (n, (f, p)) in zip(fastGrads, plainGrads).enumerated() {
      #expect(
        (f == nil) == (p == nil), "input \(n): gradient presence", sourceLocation: sourceLocation)
      if let f, let p {
        let d = distance(f, p)
        #expect(d <= tolerance, "input \(n): gradient off by \(d)", sourceLocation: sourceLocation)
      }
    }
  }

  static func random(_ shape: [Int], _ rng: inout Fuzz.Generator, grad: Bool = true) -> Variable {
    OpGradientTests.random(shape, &rng).detached(requiresGrad: grad)
  }

  @Test func elementwiseAndLayout() {
    var rng = Fuzz.Generator(seed: 21)
    let a = Self.random([3, 5, 40], &rng)
    let b = Self.random([3, 5, 40], &rng)
    let shared = Self.random([1, 5, 40], &rng)
    Self.compare(
      [a, b], fast: { t, v in t.add(v[0], v[1]) }, plain: { t, v in t.plain.add(v[0], v[1]) })
    Self.compare(
      [a, shared], fast: { t, v in t.add(v[0], v[1]) },
      plain: { t, v in t.plain.addBroadcasting(v[0], v[1]) })
    Self.compare(
      [shared, a], fast: { t, v in t.add(v[0], v[1]) },
      plain: { t, v in t.plain.addBroadcasting(v[0], v[1]) })
    Self.compare(
      [a], fast: { t, v in t.scale(v[0], -1.5) }, plain: { t, v in t.plain.scale(v[0], -1.5) })
    for kind in [Activation.relu, .geluErf, .geluTanh, .hardswish] {
      Self.compare(
        [a], tolerance: 2e-6, fast: { t, v in t.activation(v[0], kind) },
        plain: { t, v in t.plain.activation(v[0], kind) })
    }
    let wide = Self.random([2, 3, 4, 5, 6], &rng)
    for perm in [[0, 2, 1, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 4, 3], [1, 0, 3, 4, 2]] {
      Self.compare(
        [wide], fast: { t, v in t.permute(v[0], perm) },
        plain: { t, v in t.plain.permute(v[0], perm) })
    }
    Self.compare(
      [a, b], fast: { t, v in t.concat([v[0], v[1], v[0]], axis: 1) },
      plain: { t, v in t.plain.concat([v[0], v[1], v[0]], axis: 1) })
    Self.compare(
      [a],
      fast: { t, v in
        t.add(t.slice(v[0], axis: 2, range: 3..<17), t.slice(v[0], axis: 2, range: 0..<14))
      },
      plain: { t, v in
        t.plain.add(
          t.plain.slice(v[0], axis: 2, range: 3..<17), t.plain.slice(v[0], axis: 2, range: 0..<14))
      })
  }

  @Test func productsAndNormalisations() {
    var rng = Fuzz.Generator(seed: 22)
    let x = Self.random([4, 70, 33], &rng)
    let w = Self.random([20, 33], &rng)
    let bias = Self.random([20], &rng)
    Self.compare(
      [x, w, bias], fast: { t, v in t.linear(v[0], weight: v[1], bias: v[2]) },
      plain: { t, v in t.plain.linear(v[0], weight: v[1], bias: v[2]) })
    // Only the weight trains (a frozen input, as the encoder's output is to the decoder).
    let frozen = Self.random([4, 70, 33], &rng, grad: false)
    Self.compare(
      [frozen, w, bias], fast: { t, v in t.linear(v[0], weight: v[1], bias: v[2]) },
      plain: { t, v in t.plain.linear(v[0], weight: v[1], bias: v[2]) })
    let p = Self.random([2, 3, 9, 17], &rng)
    let q = Self.random([2, 3, 17, 6], &rng)
    let qt = Self.random([2, 3, 11, 17], &rng)
    Self.compare(
      [p, q], fast: { t, v in t.matmul(v[0], v[1]) }, plain: { t, v in t.plain.matmul(v[0], v[1]) })
    Self.compare(
      [p, qt], fast: { t, v in t.matmul(v[0], v[1], transposeB: true) },
      plain: { t, v in t.plain.matmul(v[0], v[1], transposeB: true) })
    let scores = Self.random([2, 3, 9, 300], &rng)
    Self.compare(
      [scores], fast: { t, v in t.softmax(v[0]) }, plain: { t, v in t.plain.softmax(v[0]) })
    let rows = Self.random([3, 300, 64], &rng)
    let g = Self.random([64], &rng)
    let b = Self.random([64], &rng)
    Self.compare(
      [rows, g, b], fast: { t, v in t.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6) },
      plain: { t, v in t.plain.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6) })
    for kind in [Activation.geluErf, .relu] {
      Self.compare(
        [rows, g, b], tolerance: 5e-6,
        fast: { t, v in t.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6, then: kind) },
        plain: { t, v in t.plain.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6, then: kind) })
    }
    let many = Self.random([2, 700, 16], &rng)
    let g16 = Self.random([16], &rng)
    let b16 = Self.random([16], &rng)
    Self.compare(
      [many, g16, b16], tolerance: 5e-6,
      fast: { t, v in t.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6, then: .geluErf) },
      plain: { t, v in t.plain.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6, then: .geluErf)
      })
    let image = Self.random([2, 16, 19, 23], &rng)
    Self.compare(
      [image, g16, b16], fast: { t, v in t.layerNorm2d(v[0], weight: v[1], bias: v[2], eps: 1e-6) },
      plain: { t, v in t.plain.layerNorm2d(v[0], weight: v[1], bias: v[2], eps: 1e-6) })
  }

  @Test func upscaling() {
    var rng = Fuzz.Generator(seed: 23)
    let image = Self.random([2, 12, 7, 9], &rng)
    let weight = Self.random([12, 5, 2, 2], &rng)
    let bias = Self.random([5], &rng)
    Self.compare(
      [image, weight, bias], fast: { t, v in t.convTranspose2x2(v[0], weight: v[1], bias: v[2]) },
      plain: { t, v in t.plain.convTranspose2x2(v[0], weight: v[1], bias: v[2]) })
    let pixels = Self.random([2, 7 * 9, 12], &rng)
    Self.compare(
      [pixels, weight, bias],
      fast: { t, v in t.convTranspose2x2ChannelsLast(v[0], weight: v[1], bias: v[2]) },
      plain: { t, v in
        t.plain.convTranspose2x2ChannelsLast(v[0], height: 7, width: 9, weight: v[1], bias: v[2])
      })
  }

  @Test func attentionWithSharedSides() {
    var rng = Fuzz.Generator(seed: 24)
    // Token → image and image → token shapes, with either side shared by the batch.
    for (bq, nq, bk, nk) in [(3, 7, 3, 50), (3, 7, 1, 50), (1, 50, 3, 7), (2, 50, 2, 7)] {
      let q = Self.random([bq, nq, 16], &rng)
      let k = Self.random([bk, nk, 16], &rng)
      let v = Self.random([bk, nk, 16], &rng)
      Self.compare(
        [q, k, v], fast: { t, x in t.attention(q: x[0], k: x[1], v: x[2], heads: 4) },
        plain: { t, x in t.plain.attention(q: x[0], k: x[1], v: x[2], heads: 4) })
    }
  }
}

extension FastOpTests {
  @Test func headProductsAndRows() {
    var rng = Fuzz.Generator(seed: 25)
    let x = Self.random([3, 5, 12], &rng)
    let w = Self.random([12, 20], &rng)
    let wt = Self.random([20, 12], &rng)
    Self.compare(
      [x, w], fast: { t, v in t.headProjection(v[0], weight: v[1], heads: 4, scale: 0.5) },
      plain: { t, v in t.plain.headProjection(v[0], weight: v[1], heads: 4, scale: 0.5) })
    Self.compare(
      [x, wt],
      fast: { t, v in t.headProjection(v[0], weight: v[1], heads: 3, transposedWeight: true) },
      plain: { t, v in
        t.plain.headProjection(v[0], weight: v[1], heads: 3, transposedWeight: true)
      })
    let c = Self.random([3, 20, 20], &rng)
    Self.compare(
      [c, w], fast: { t, v in t.headMerge(v[0], weight: v[1], heads: 4) },
      plain: { t, v in t.plain.headMerge(v[0], weight: v[1], heads: 4) })
    let rows = Self.random([3, 1, 12], &rng)
    let shared = Self.random([1, 1, 12], &rng)
    for r in [rows, shared] {
      Self.compare(
        [x, r], fast: { t, v in t.addRows(v[0], v[1]) },
        plain: { t, v in t.plain.addRows(v[0], v[1]) })
    }
    let image = Self.random([1, 40, 12], &rng)
    let tokens = Self.random([3, 6, 12], &rng)
    let offsets = Self.random([3, 1, 6], &rng)
    Self.compare(
      [tokens, image], fast: { t, v in t.softmaxOfProduct(v[0], v[1]) },
      plain: { t, v in t.plain.softmaxOfProduct(v[0], v[1]) })
    Self.compare(
      [image, tokens, offsets],
      fast: { t, v in t.softmaxOfProduct(v[0], v[1], adding: v[2], group: 3) },
      plain: { t, v in t.plain.softmaxOfProduct(v[0], v[1], adding: v[2], group: 3) })
    let a = Self.random([3, 5, 7], &rng)
    let b = Self.random([3, 9, 7], &rng)
    let sum = Self.random([3, 5, 9], &rng)
    let sharedSum = Self.random([1, 5, 9], &rng)
    for addend in [sum, sharedSum] {
      Self.compare(
        [a, b, addend], fast: { t, v in t.matmul(v[0], v[1], transposeB: true, adding: v[2]) },
        plain: { t, v in t.plain.matmul(v[0], v[1], transposeB: true, adding: v[2]) })
    }
  }
}

extension Variable {
  /// The same value as a fresh variable.
  func detached(requiresGrad: Bool) -> Variable { Variable(value, requiresGrad: requiresGrad) }
}
