import EVTensor
import EVTraining
import TestSupport
import Testing

/// The encoder's ops: each fast forward against `Reference`, each fast backward against its
/// float64 twin in `PlainGradients`, and both against central differences.
@Suite struct EncoderOpGradientTests {
  typealias Ops = OpGradientTests

  static func close(_ fast: [Float], _ plain: [Double], _ what: String) {
    var diff = 0.0
    var norm = 0.0
    for (a, b) in zip(fast, plain) {
      diff += (Double(a) - b) * (Double(a) - b)
      norm += b * b
    }
    #expect(fast.count == plain.count, "\(what): \(fast.count) vs \(plain.count) values")
    #expect(diff.squareRoot() <= 1e-5 * max(norm.squareRoot(), 1e-12), "\(what)")
  }

  /// (in, out, kernel, stride, groups, bias) of the shapes the encoder uses: dense 3×3 (also
  /// strided), depthwise 3×3 and 5×5 (also strided), grouped and plain 1×1.
  static let convCases: [(Int, Int, Int, Int, Int, Bool)] = [
    (3, 4, 3, 2, 1, false), (4, 5, 3, 1, 1, true), (6, 6, 3, 2, 6, true), (6, 6, 5, 1, 6, false),
    (6, 6, 1, 1, 3, false), (5, 7, 1, 1, 1, true), (4, 6, 3, 1, 2, false),
    // Wide enough for the Winograd forward and input gradient.
    (64, 72, 3, 1, 1, true),
  ]

  @Test(arguments: 0..<8) func conv2d(_ index: Int) {
    let (cin, cout, k, stride, groups, useBias) = Self.convCases[index]
    var rng = Fuzz.Generator(seed: UInt64(40 + index))
    let x = Ops.random([2, cin, 7, 6], &rng)
    let w = Ops.random([cout, cin / groups, k, k], &rng)
    let b = Ops.random([cout], &rng)
    let inputs = useBias ? [x, w, b] : [x, w]
    func build(_ t: Tape, _ v: [Variable]) -> Variable {
      t.conv2d(
        v[0], weight: v[1], bias: useBias ? v[2] : nil, stride: stride, padding: k / 2,
        groups: groups)
    }
    let tape = Tape()
    let y = build(tape, inputs)
    let expected = Reference.conv2d(
      x.value, weight: w.value, bias: useBias ? b.value : nil, stride: stride, padding: k / 2,
      groups: groups)
    #expect(y.shape == expected.shape)
    // The wide case runs through Winograd, whose transforms round differently from the direct
    // sum (the same bound as WinogradTests; the exact figure depends on the BLAS kernels).
    let bound = cin * cout >= 64 * 64 ? 1e-5 : 1e-6
    #expect(relativeL2(y.value.storage, expected.storage) <= bound)
    let g = Ops.random(y.shape, &rng).value
    tape.backward(from: y, gradient: g.storage)
    let plain = PlainGradients.conv2d(
      x.value, weight: w.value, outputGradient: g, stride: stride, padding: k / 2,
      groups: groups)
    Self.close(x.grad ?? [], plain.input, "dx")
    Self.close(w.grad ?? [], plain.weight, "dw")
    if useBias { Self.close(b.grad ?? [], plain.bias, "db") }
    // Linear in each input, so a wide step has no truncation error and less rounding noise.
    Ops.check(inputs, seed: UInt64(index), step: 0.25, build)
  }

  @Test func batchNormInTraining() {
    var rng = Fuzz.Generator(seed: 50)
    let x = Ops.random([2, 3, 4, 5], &rng)
    let gamma = Ops.random([3], &rng)
    let beta = Ops.random([3], &rng)
    let mean = Variable(Tensor(shape: [3], storage: [0.1, -0.2, 0.3]))
    let variance = Variable(Tensor(shape: [3], storage: [1.5, 0.5, 2]))
    let running = BatchNormStatistics(mean: mean, variance: variance)
    func build(_ t: Tape, _ v: [Variable]) -> Variable {
      t.batchNorm2d(v[0], weight: v[1], bias: v[2], running: running, eps: 1e-6, training: true)
    }
    let tape = Tape()
    let y = build(tape, [x, gamma, beta])
    // The running statistics moved by momentum 0.1 towards the batch's (variance unbiased).
    let m = 2 * 4 * 5
    for ch in 0..<3 {
      var values: [Double] = []
      for b in 0..<2 {
        for i in 0..<20 { values.append(Double(x.value.storage[(b * 3 + ch) * 20 + i])) }
      }
      let batchMean = values.reduce(0, +) / Double(m)
      let unbiased = values.reduce(0) { $0 + ($1 - batchMean) * ($1 - batchMean) } / Double(m - 1)
      let start = [0.1, -0.2, 0.3][ch]
      #expect(abs(Double(mean.value.storage[ch]) - (0.9 * start + 0.1 * batchMean)) <= 1e-6)
      let startVar = [1.5, 0.5, 2][ch]
      #expect(abs(Double(variance.value.storage[ch]) - (0.9 * startVar + 0.1 * unbiased)) <= 1e-6)
    }
    let g = Ops.random(y.shape, &rng).value
    tape.backward(from: y, gradient: g.storage)
    let plain = PlainGradients.batchNorm2dTraining(
      x.value, weight: gamma.value, outputGradient: g, eps: 1e-6)
    Self.close(x.grad ?? [], plain.input, "dx")
    Self.close(gamma.grad ?? [], plain.weight, "dγ")
    Self.close(beta.grad ?? [], plain.bias, "dβ")
    Ops.check([x, gamma, beta], build)
  }

  @Test func batchNormInEvalMode() {
    var rng = Fuzz.Generator(seed: 51)
    let x = Ops.random([2, 3, 4, 5], &rng)
    let gamma = Ops.random([3], &rng)
    let beta = Ops.random([3], &rng)
    let running = BatchNormStatistics(
      mean: Variable(Tensor(shape: [3], storage: [0.1, -0.2, 0.3])),
      variance: Variable(Tensor(shape: [3], storage: [1.5, 0.5, 2])))
    let y = Tape().batchNorm2d(
      x, weight: gamma, bias: beta, running: running, eps: 1e-6, training: false)
    let folded = Reference.foldBatchNorm(
      weight: Tensor(shape: [3, 1, 1, 1], storage: [1, 1, 1]), bias: nil, gamma: gamma.value,
      beta: beta.value, mean: running.mean.value, variance: running.variance.value, eps: 1e-6)
    let expected = Reference.conv2d(
      x.value, weight: folded.weight, bias: folded.bias, groups: 3)
    #expect(relativeL2(y.value.storage, expected.storage) <= 1e-6)
    #expect(running.mean.value.storage == [0.1, -0.2, 0.3], "eval mode keeps the statistics")
    Ops.check([x, gamma, beta]) { t, v in
      t.batchNorm2d(v[0], weight: v[1], bias: v[2], running: running, eps: 1e-6, training: false)
    }
  }

  @Test(arguments: [(4, 5, 9, 7), (12, 10, 6, 6), (3, 3, 8, 8)])
  func bicubicResize(_ h: Int, _ w: Int, _ height: Int, _ width: Int) {
    var rng = Fuzz.Generator(seed: UInt64(h * 100 + height))
    let x = Ops.random([1, 2, h, w], &rng)
    let tape = Tape()
    let y = tape.resizeBicubic(x, height: height, width: width)
    let expected = Reference.resizeBicubic(x.value, height: height, width: width)
    #expect(relativeL2(y.value.storage, expected.storage) <= 1e-6)
    let g = Ops.random(y.shape, &rng).value
    tape.backward(from: y, gradient: g.storage)
    Self.close(
      x.grad ?? [], PlainGradients.resizeBicubic(inputShape: x.shape, outputGradient: g), "dx")
    Ops.check([x]) { t, v in t.resizeBicubic(v[0], height: height, width: width) }
  }

  @Test func attentionNormalisations() {
    var rng = Fuzz.Generator(seed: 52)
    let x = Ops.random([2, 4, 6], &rng, range: 0.5...2)
    Ops.check([x]) { t, v in t.divideByLastRow(v[0], eps: 1e-15) }
    Ops.check([x]) { t, v in t.normalizeColumns(v[0], eps: 1e-15) }
  }

  /// The fused `convLayer` against `conv2d` → `batchNorm2d` → `activation` on the tape:
  /// outputs, every gradient and the running statistics, in train and eval mode.
  @Test(arguments: [true, false])
  func convLayerEqualsItsParts(_ training: Bool) {
    for (index, act) in [Activation.geluTanh, .relu, .identity].enumerated() {
      var rng = Fuzz.Generator(seed: UInt64(60 + index))
      let x = Ops.random([2, 4, 9, 8], &rng)
      let w = Ops.random([6, 4, 3, 3], &rng)
      let bias = Ops.random([6], &rng)
      let gamma = Ops.random([6], &rng)
      let beta = Ops.random([6], &rng)
      func statistics() -> BatchNormStatistics {
        BatchNormStatistics(
          mean: Variable(Tensor(shape: [6], storage: [0.1, 0.2, -0.3, 0, 0.5, -1])),
          variance: Variable(Tensor(shape: [6], storage: [1, 2, 0.5, 3, 1.5, 0.7])),
          batchesTracked: Variable(Tensor(shape: [1], storage: [4])))
      }
      let g = Ops.random([2, 6, 5, 4], &rng).value
      func run(fused: Bool) -> (y: Tensor, grads: [[Float]], running: BatchNormStatistics) {
        for v in [x, w, bias, gamma, beta] { v.grad = nil }
        let running = statistics()
        let tape = Tape()
        let y: Variable
        if fused {
          y = tape.convLayer(
            x, weight: w, bias: bias,
            norm: BatchNormParameters(weight: gamma, bias: beta, running: running, eps: 1e-6),
            activation: act, stride: 2, padding: 1, training: training)
        } else {
          let z = tape.conv2d(x, weight: w, bias: bias, stride: 2, padding: 1)
          let u = tape.batchNorm2d(
            z, weight: gamma, bias: beta, running: running, eps: 1e-6, training: training)
          y = act == .identity ? u : tape.activation(u, act)
        }
        tape.backward(from: y, gradient: g.storage)
        return (y.value, [x, w, bias, gamma, beta].map { $0.grad ?? [] }, running)
      }
      let fused = run(fused: true)
      let parts = run(fused: false)
      #expect(relativeL2(fused.y.storage, parts.y.storage) <= 1e-5, "\(act) output")
      for (i, (a, b)) in zip(fused.grads, parts.grads).enumerated() {
        // Before a train-mode BatchNorm the conv bias's gradient is zero up to rounding.
        if training && i == 2 {
          #expect(a.allSatisfy { abs($0) <= 1e-4 } && b.allSatisfy { abs($0) <= 1e-4 })
        } else {
          #expect(a.count == b.count && relativeL2(a, b) <= 1e-4, "\(act) gradient \(i)")
        }
      }
      #expect(
        relativeL2(fused.running.mean.value.storage, parts.running.mean.value.storage) <= 1e-6)
      #expect(
        relativeL2(fused.running.variance.value.storage, parts.running.variance.value.storage)
          <= 1e-6)
      #expect(
        fused.running.batchesTracked?.value.storage == parts.running.batchesTracked?.value.storage
      )
    }
  }

  func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
    var diff = 0.0
    var norm = 0.0
    for (x, y) in zip(a, b) {
      diff += Double(x - y) * Double(x - y)
      norm += Double(y) * Double(y)
    }
    return diff.squareRoot() / max(norm.squareRoot(), 1e-30)
  }
}
