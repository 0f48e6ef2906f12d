import EVCheckpoint
import EVTensor
import EVTraining
import Foundation
import TestSupport
import Testing

/// The official training step's loss (`train/step.*`): its train-mode low-res logits, soft
/// targets and written-out point draws give the official BCE, dice, loss matrix and loss.
@Suite struct MaskLossGoldenTests {
  @Test func reproducesTheOfficialLoss() throws {
    let step = try SafeTensors.read(contentsOf: Fixtures.url("train/step.safetensors"))
    let logits = try #require(step["low_res_logits"])  // [B, M, K, 256, 256]
    let masks = try #require(step["masks"])  // [B, M, 512, 512]
    let k = logits.dim(2)
    let draws = try (0..<k).map { i in
      MaskLoss.Draws(
        oversampled: try #require(step["rand_oversampled.\(i)"]).storage,
        extra: try #require(step["rand_extra.\(i)"]).storage)
    }
    let result = MaskLoss()(logits: logits, targets: masks, draws: draws)
    for i in 0..<k {
      let bce = try #require(step["bce.\(i)"]).storage.map(Double.init)
      let dice = try #require(step["dice.\(i)"]).storage.map(Double.init)
      for n in bce.indices {
        #expect(abs(result.bce[i][n] - bce[n]) <= 1e-5 * max(1, abs(bce[n])), "bce \(i) \(n)")
        #expect(abs(result.dice[i][n] - dice[n]) <= 1e-5, "dice \(i) \(n)")
      }
    }
    let matrix = try #require(step["loss_matrix"])
    let ours = result.matrix().flatMap { $0 }
    for (a, b) in zip(ours, matrix.storage) {
      #expect(abs(a - Double(b)) <= 1e-4 * max(1, abs(Double(b))))
    }
    let loss = try #require(step["loss"]).storage[0]
    #expect(
      abs(result.loss - Double(loss)) <= 1e-5 * abs(Double(loss)), "\(result.loss) vs \(loss)")
  }
}

/// The backward pass of the loss (through the point sampling and the bilinear upsampling)
/// against central differences of the forward, which runs in double precision.
@Suite struct MaskLossGradientTests {
  /// torchvision's `sigmoid_focal_loss` (α 0.25, γ 2) at a few points, by hand:
  /// `α_t·(1 − p_t)²·BCE`.
  @Test func focalTermIsTorchvisions() {
    var settings = MaskLoss.Settings()
    settings.pointLoss = .focal
    for (x, t) in [(0.3, 1.0), (-1.2, 0.0), (2.0, 0.4), (0.0, 0.5)] {
      let p = 1 / (1 + exp(-x))
      let ce = -(t * log(p) + (1 - t) * log(1 - p))
      let pt = p * t + (1 - p) * (1 - t)
      let expected = (0.25 * t + 0.75 * (1 - t)) * (1 - pt) * (1 - pt) * ce
      let term = settings.pointTerm(x, t)
      #expect(abs(term.value - expected) <= 1e-12, "x \(x) t \(t)")
      let h = 1e-6
      let numeric =
        (settings.pointTerm(x + h, t).value - settings.pointTerm(x - h, t).value)
        / (2 * h)
      #expect(abs(term.slope - numeric) <= 1e-7, "x \(x) t \(t)")
    }
  }

  @Test(arguments: [PointLoss.bce, .focal])
  func gradientMatchesFiniteDifferences(_ pointLoss: PointLoss) {
    var rng = Fuzz.Generator(seed: 16)
    var settings = MaskLoss.Settings()
    settings.pointLoss = pointLoss
    settings.points = 24
    let loss = MaskLoss(settings: settings)
    let (b, m, k, h, side) = (1, 2, 3, 6, 14)
    var logits = Tensor(
      shape: [b, m, k, h, h],
      storage: (0..<(b * m * k * h * h)).map { _ in Float.random(in: -3...3, using: &rng) })
    let targets = Tensor(
      shape: [b, m, side, side],
      storage: (0..<(b * m * side * side)).map { _ in Float.random(in: 0...1, using: &rng) })
    let draws = (0..<k).map { _ in MaskLoss.Draws(masks: b * m, settings: settings, using: &rng) }
    let points = loss.selectPoints(logits: logits, targetSide: side, draws: draws)
    let result = loss.evaluate(logits: logits, targets: targets, points: points)
    #expect(result.gradient.shape == logits.shape)
    var checked = 0
    for index in logits.storage.indices {
      let original = logits.storage[index]
      let step: Float = 1e-2
      logits.storage[index] = original + step
      let plus = loss.evaluate(logits: logits, targets: targets, points: points)
      logits.storage[index] = original - step
      let minus = loss.evaluate(logits: logits, targets: targets, points: points)
      logits.storage[index] = original
      // The chosen output must not switch inside the difference, or the loss has a kink.
      guard plus.chosen == result.chosen, minus.chosen == result.chosen else { continue }
      let width = Double(original + step) - Double(original - step)
      let numeric = (plus.loss - minus.loss) / width
      let analytic = Double(result.gradient.storage[index])
      #expect(
        abs(numeric - analytic) <= 1e-4 * max(1, abs(numeric)) + 1e-6,
        "logit \(index): analytic \(analytic), numeric \(numeric)")
      checked += 1
    }
    #expect(checked > logits.count / 2)
    // Outputs that lose the minimum get no gradient.
    let plane = h * h
    for n in 0..<(b * m) {
      for output in 0..<k where output != result.chosen[n] {
        let start = (n * k + output) * plane
        #expect(result.gradient.storage[start..<(start + plane)].allSatisfy { $0 == 0 })
      }
    }
  }

  /// The upsampled view reads what PyTorch's bilinear interpolation stores.
  @Test func upsampledViewMatchesTheReferenceResize() {
    var rng = Fuzz.Generator(seed: 3)
    let (h, w, side) = (5, 7, 16)
    let plane = Tensor(
      shape: [1, 1, h, w], storage: (0..<(h * w)).map { _ in Float.random(in: -5...5, using: &rng) }
    )
    let reference = Reference.resizeBilinear(plane, height: side, width: side)
    let view = UpsampledLogits(inputHeight: h, inputWidth: w, side: side)
    plane.storage.withUnsafeBufferPointer { p in
      for y in 0..<side {
        for x in 0..<side {
          #expect(abs(view.value(p.baseAddress!, y: y, x: x) - reference[0, 0, y, x]) <= 1e-5)
        }
      }
    }
  }
}
