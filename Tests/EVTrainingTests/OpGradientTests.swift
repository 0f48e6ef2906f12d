import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// Every differentiable op's backward against central differences of its forward (which
/// accumulates in double precision), on small random inputs, through the objective
/// `L = Σ rᵢ·yᵢ` with random weights r.
@Suite struct OpGradientTests {
  static func random(
    _ shape: [Int], _ rng: inout Fuzz.Generator, range: ClosedRange<Float> = -2...2
  )
    -> Variable
  {
    Variable(
      Tensor(
        shape: shape,
        storage: (0..<shape.reduce(1, *)).map { _ in Float.random(in: range, using: &rng) }),
      requiresGrad: true)
  }

  /// Checks ∂L/∂input for every input (at most `samples` elements each).
  static func check(
    _ inputs: [Variable], seed: UInt64 = 1, step: Float = 1e-2, tolerance: Double = 2e-3,
    samples: Int = 48, _ build: (Tape, [Variable]) -> Variable,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    var rng = Fuzz.Generator(seed: seed)
    for input in inputs { input.grad = nil }
    let tape = Tape()
    let y = build(tape, inputs)
    let r = (0..<y.count).map { _ in Float.random(in: -1...1, using: &rng) }
    tape.backward(from: y, gradient: r)
    func objective() -> Double {
      let out = build(Tape(), inputs)
      return zip(out.value.storage, r).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
    for (n, input) in inputs.enumerated() where input.requiresGrad {
      let analytic = input.grad ?? [Float](repeating: 0, count: input.count)
      let picks = (0..<min(samples, input.count)).map { _ in
        Int.random(in: 0..<input.count, using: &rng)
      }
      for i in picks {
        let original = input.value.storage[i]
        input.value.storage[i] = original + step
        let plus = objective()
        input.value.storage[i] = original - step
        let minus = objective()
        input.value.storage[i] = original
        let numeric = (plus - minus) / (Double(original + step) - Double(original - step))
        #expect(
          abs(numeric - Double(analytic[i])) <= tolerance * max(1, abs(numeric)),
          "input \(n)[\(i)]: analytic \(analytic[i]), numeric \(numeric)",
          sourceLocation: sourceLocation)
      }
    }
  }

  @Test func elementwiseAndShapeOps() {
    var rng = Fuzz.Generator(seed: 7)
    let a = Self.random([2, 3, 4], &rng)
    let b = Self.random([2, 3, 4], &rng)
    Self.check([a, b]) { t, v in t.scale(t.add(v[0], v[1]), 0.7) }
    Self.check([a]) { t, v in t.permute(t.reshape(v[0], [3, 2, 4]), [2, 0, 1]) }
    Self.check([a, b]) { t, v in t.slice(t.concat([v[0], v[1]], axis: 1), axis: 1, range: 2..<5) }
    for kind in [Activation.relu, .geluErf, .geluTanh] {
      Self.check([a]) { t, v in t.activation(v[0], kind) }
    }
  }

  @Test func linearAlgebraOps() {
    var rng = Fuzz.Generator(seed: 8)
    let x = Self.random([2, 3, 5], &rng)
    let w = Self.random([4, 5], &rng)
    let bias = Self.random([4], &rng)
    Self.check([x, w, bias]) { t, v in t.linear(v[0], weight: v[1], bias: v[2]) }
  }

  @Test func batchedProducts() {
    var rng = Fuzz.Generator(seed: 10)
    let p = Self.random([2, 3, 4, 5], &rng)
    let q = Self.random([2, 3, 5, 6], &rng)
    let qt = Self.random([2, 3, 6, 5], &rng)
    Self.check([p, q]) { t, v in t.matmul(v[0], v[1]) }
    Self.check([p, qt]) { t, v in t.matmul(v[0], v[1], transposeB: true) }
  }

  @Test func softmaxRows() {
    var rng = Fuzz.Generator(seed: 11)
    let p = Self.random([2, 3, 4, 5], &rng)
    Self.check([p]) { t, v in t.softmax(v[0]) }
  }

  @Test func normalisationAndUpscaling() {
    var rng = Fuzz.Generator(seed: 9)
    let x = Self.random([2, 3, 6], &rng)
    let g = Self.random([6], &rng)
    let b = Self.random([6], &rng)
    Self.check([x, g, b]) { t, v in t.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6) }
    let image = Self.random([2, 4, 3, 3], &rng)
    let g4 = Self.random([4], &rng)
    let b4 = Self.random([4], &rng)
    Self.check([image, g4, b4]) { t, v in
      t.layerNorm2d(v[0], weight: v[1], bias: v[2], eps: 1e-6)
    }
    let weight = Self.random([4, 3, 2, 2], &rng)
    let bias3 = Self.random([3], &rng)
    Self.check([image, weight, bias3]) { t, v in
      t.convTranspose2x2(v[0], weight: v[1], bias: v[2])
    }
  }
}

/// The ops added for batches of prompts on one image.
@Suite struct SharedBatchGradientTests {
  @Test func broadcastingAddAndProducts() {
    var rng = Fuzz.Generator(seed: 30)
    let a = OpGradientTests.random([3, 4, 5], &rng)
    let shared = OpGradientTests.random([1, 4, 5], &rng)
    OpGradientTests.check([a, shared]) { t, v in t.add(v[0], v[1]) }
    OpGradientTests.check([shared, a]) { t, v in t.add(v[0], v[1]) }
    let p = OpGradientTests.random([3, 4, 6], &rng)
    let q = OpGradientTests.random([1, 6, 5], &rng)
    OpGradientTests.check([p, q]) { t, v in t.matmul(v[0], v[1]) }
    let qt = OpGradientTests.random([1, 5, 6], &rng)
    OpGradientTests.check([p, qt]) { t, v in t.matmul(v[0], v[1], transposeB: true) }
  }

  @Test func multiHeadAttention() {
    var rng = Fuzz.Generator(seed: 31)
    for (bq, nq, bk, nk) in [(2, 3, 2, 5), (2, 3, 1, 5), (1, 5, 2, 3)] {
      let q = OpGradientTests.random([bq, nq, 8], &rng, range: -1...1)
      let k = OpGradientTests.random([bk, nk, 8], &rng, range: -1...1)
      let v = OpGradientTests.random([bk, nk, 8], &rng)
      OpGradientTests.check([q, k, v], samples: 24) { t, x in
        t.attention(q: x[0], k: x[1], v: x[2], heads: 2)
      }
    }
  }

  @Test func headProductsAndRows() {
    var rng = Fuzz.Generator(seed: 33)
    let x = OpGradientTests.random([2, 3, 6], &rng)
    let w = OpGradientTests.random([6, 5], &rng)
    let wt = OpGradientTests.random([5, 6], &rng)
    OpGradientTests.check([x, w]) { t, v in
      t.headProjection(v[0], weight: v[1], heads: 2, scale: 0.7)
    }
    OpGradientTests.check([x, wt]) { t, v in
      t.headProjection(v[0], weight: v[1], heads: 3, transposedWeight: true)
    }
    let c = OpGradientTests.random([2, 6, 5], &rng)
    OpGradientTests.check([c, w]) { t, v in t.headMerge(v[0], weight: v[1], heads: 2) }
    let rows = OpGradientTests.random([2, 1, 6], &rng)
    let shared = OpGradientTests.random([1, 1, 6], &rng)
    OpGradientTests.check([x, rows]) { t, v in t.addRows(v[0], v[1]) }
    OpGradientTests.check([x, shared]) { t, v in t.addRows(v[0], v[1]) }
    let image = OpGradientTests.random([1, 6, 4], &rng, range: -1...1)
    let tokens = OpGradientTests.random([2, 4, 4], &rng, range: -1...1)
    let offsets = OpGradientTests.random([2, 1, 4], &rng)
    OpGradientTests.check([tokens, image]) { t, v in t.softmaxOfProduct(v[0], v[1]) }
    OpGradientTests.check([image, tokens, offsets]) { t, v in
      t.softmaxOfProduct(v[0], v[1], adding: v[2], group: 2)
    }
    let a = OpGradientTests.random([2, 3, 4], &rng)
    let b = OpGradientTests.random([2, 5, 4], &rng)
    let addend = OpGradientTests.random([1, 3, 5], &rng)
    OpGradientTests.check([a, b, addend]) { t, v in
      t.matmul(v[0], v[1], transposeB: true, adding: v[2])
    }
  }

  @Test func normalisationThenActivation() {
    var rng = Fuzz.Generator(seed: 34)
    let x = OpGradientTests.random([2, 3, 6], &rng)
    let g = OpGradientTests.random([6], &rng)
    let b = OpGradientTests.random([6], &rng)
    OpGradientTests.check([x, g, b]) { t, v in
      t.layerNorm(v[0], weight: v[1], bias: v[2], eps: 1e-6, then: .geluErf)
    }
  }

  @Test func channelsLastUpscaling() {
    var rng = Fuzz.Generator(seed: 32)
    let pixels = OpGradientTests.random([2, 6, 4], &rng)
    let weight = OpGradientTests.random([4, 3, 2, 2], &rng)
    let bias = OpGradientTests.random([3], &rng)
    OpGradientTests.check([pixels, weight, bias]) { t, v in
      t.convTranspose2x2ChannelsLast(v[0], weight: v[1], bias: v[2])
    }
  }
}

/// The prompt encoder's learned rows receive the gradients of the tokens that use them.
@Suite struct PromptEncoderGraphTests {
  @Test func learnedRowsCollectTheirTokensGradients() throws {
    let all = try SafeTensors.read(contentsOf: Fixtures.url("models/tiny-l.safetensors"))
    let prompt = all.filter { $0.key.hasPrefix("prompt_encoder.") }
    let reader = WeightReader(prompt, origin: "tiny-l prompt_encoder")
    let encoder = PromptEncoder(reader.root["prompt_encoder"])
    let parameters = Parameters(prompt) { !$0.contains("gaussian") }
    let graph = PromptEncoderGraph(parameters: parameters)
    let points = (
      coords: Tensor(
        shape: [2, 3, 2], storage: [10, 20, 500, 600, 30, 40, 7, 8, 900, 100, 50, 60]),
      labels: [1, 0, 1, 1, 1, 0]
    )
    let boxes = Tensor(shape: [2, 4], storage: [10, 10, 300, 400, 50, 60, 700, 800])
    for (p, b) in [(points, nil), (nil, boxes), (points, boxes)]
      as [((coords: Tensor, labels: [Int])?, Tensor?)]
    {
      let rows = (0..<4).map { parameters["prompt_encoder.point_embeddings.\($0).weight"] }
      OpGradientTests.check(
        rows + [parameters["prompt_encoder.not_a_point_embed.weight"]], samples: 12
      ) { tape, _ in
        // A graph reads the rows' values when it is made, as each training step makes its own.
        PromptEncoderGraph(parameters: parameters).sparse(tape, points: p, boxes: b)
      }
      let expected = encoder(points: p, boxes: b, masks: nil).sparse
      #expect(graph.sparse(Tape(), points: p, boxes: b).value.storage == expected.storage)
    }
    OpGradientTests.check([parameters["prompt_encoder.no_mask_embed.weight"]]) { tape, _ in
      graph.noMaskDense(tape, batch: 2)
    }
  }
}

/// The products' fast path (BLAS) against the plain `Reference` twins.
@Suite struct ProductTests {
  @Test func linearAndBatchedProductsMatchTheReference() {
    var rng = Fuzz.Generator(seed: 12)
    let x = OpGradientTests.random([3, 7, 33], &rng)
    let w = OpGradientTests.random([20, 33], &rng)
    let b = OpGradientTests.random([20], &rng)
    let fast = Tape().linear(x, weight: w, bias: b).value
    let plain = Reference.linear(x.value, weight: w.value, bias: b.value)
    #expect(relativeL2Error(fast, plain) <= 1e-6)
    let p = OpGradientTests.random([2, 3, 9, 17], &rng)
    let q = OpGradientTests.random([2, 3, 11, 17], &rng)
    let fastT = Tape().matmul(p, q, transposeB: true).value
    #expect(relativeL2Error(fastT, Reference.matmul(p.value, q.value, transposeB: true)) <= 1e-6)
    let image = OpGradientTests.random([2, 6, 5, 7], &rng)
    let weight = OpGradientTests.random([6, 4, 2, 2], &rng)
    let bias = OpGradientTests.random([4], &rng)
    let up = Tape().convTranspose2x2(image, weight: weight, bias: bias).value
    let plainUp = Reference.convTranspose2x2(image.value, weight: weight.value, bias: bias.value)
    #expect(relativeL2Error(up, plainUp) <= 1e-6)
  }
}
