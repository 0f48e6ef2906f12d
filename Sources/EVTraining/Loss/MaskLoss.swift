import EVTensor
import Foundation

/// The official training loss of EfficientViT-SAM (`efficientvit/samcore/trainer`, after
/// SAM-HQ): for each of the K outputs, the low-res logits upsampled bilinearly to the input
/// size, read at PointRend-style points (of 3× oversampled uniform draws the 75 % most
/// uncertain, then uniform ones), `20 × BCE + dice` per mask against the soft target read at
/// the same points; the minimum over outputs, averaged over masks (`mean × K` in the code).
package struct MaskLoss {
  package struct Settings: Sendable, Equatable {
    /// Points per mask (112²).
    package var points = 112 * 112
    package var oversampleRatio = 3
    package var importanceRatio = 0.75
    package var bceWeight = 20.0
    /// The per-point term weighted by `bceWeight`: BCE as the official code, or the paper's
    /// (and SAM's) focal loss.
    package var pointLoss = PointLoss.bce
    /// The focal loss's α and γ (RetinaNet's, as SAM uses them).
    package var focalAlpha = 0.25
    package var focalGamma = 2.0

    package init() {}

    package var oversampled: Int { points * oversampleRatio }
    package var important: Int { Int(importanceRatio * Double(points)) }
    package var extra: Int { points - important }
  }

  /// One output's uniform draws for all N masks: `oversampled` N × (3P) × 2 and `extra`
  /// N × (P − important) × 2, (x, y) pairs in [0, 1)², as `torch.rand` makes them.
  package struct Draws: Sendable {
    package var oversampled: [Float]
    package var extra: [Float]

    /// The draws of masks `range` alone.
    package func masks(_ range: Range<Int>, settings: Settings) -> Draws {
      let (o, e) = (settings.oversampled * 2, settings.extra * 2)
      return Draws(
        oversampled: Array(oversampled[(range.lowerBound * o)..<(range.upperBound * o)]),
        extra: Array(extra[(range.lowerBound * e)..<(range.upperBound * e)]))
    }

    package init(oversampled: [Float], extra: [Float]) {
      self.oversampled = oversampled
      self.extra = extra
    }

    /// Fresh draws from `rng` (the trainer's stream).
    package init(
      masks: Int, settings: Settings, using rng: inout some RandomNumberGenerator
    ) {
      oversampled = (0..<(masks * settings.oversampled * 2)).map { _ in
        Float.random(in: 0..<1, using: &rng)
      }
      extra = (0..<(masks * settings.extra * 2)).map { _ in Float.random(in: 0..<1, using: &rng) }
    }
  }

  package struct Result {
    /// The loss the optimiser follows.
    package var loss: Double
    /// Per output k and mask n: the mean BCE and the dice loss.
    package var bce: [[Double]]
    package var dice: [[Double]]
    /// Per mask, the output with the smallest `20·bce + dice` (the first on ties).
    package var chosen: [Int]
    /// ∂loss/∂logits, the shape of the logits.
    package var gradient: Tensor

    /// `20·bce + dice`, N × K.
    package func matrix(bceWeight: Double = 20) -> [[Double]] {
      (0..<chosen.count).map { n in
        (0..<bce.count).map { k in bceWeight * bce[k][n] + dice[k][n] }
      }
    }
  }

  package let settings: Settings

  package init(settings: Settings = Settings()) { self.settings = settings }

  /// The points of every output and mask: `points[k][n]`, (x, y) pairs. The pairs are
  /// independent and run in parallel.
  package func selectPoints(logits: Tensor, targetSide: Int, draws: [Draws]) -> [[[Float]]] {
    let (n, k, h, w) = Self.dimensions(logits)
    precondition(draws.count == k, "MaskLoss: \(draws.count) draws for \(k) outputs")
    let view = UpsampledLogits(inputHeight: h, inputWidth: w, side: targetSide)
    let s = settings
    let flat = Self.perPair(outputs: k, masks: n, cost: 40 * s.oversampled) { output, mask in
      logits.storage.withUnsafeBufferPointer { all in
        let plane = all.baseAddress! + (mask * k + output) * h * w
        let over = draws[output].oversampled[
          (mask * s.oversampled * 2)..<((mask + 1) * s.oversampled * 2)]
        let extra = draws[output].extra[(mask * s.extra * 2)..<((mask + 1) * s.extra * 2)]
        return uncertainPoints(
          oversampled: over, extra: extra, importantCount: s.important
        ) { px, py in
          let taps = PointSample.taps(x: px, y: py, height: targetSide, width: targetSide)
          return PointSample.value(taps, height: targetSide, width: targetSide) { y, x in
            view.value(plane, y: y, x: x)
          }
        }
      }
    }
    return (0..<k).map { output in Array(flat[(output * n)..<((output + 1) * n)]) }
  }

  /// `body(output, mask)` for every pair, spread over the cores, in the order output-major.
  static func perPair<T>(
    outputs k: Int, masks n: Int, cost: Int, _ body: (Int, Int) -> T
  ) -> [T] {
    var results = [T?](repeating: nil, count: k * n)
    results.withUnsafeMutableBufferPointer { slots in
      let slots = slots.baseAddress!
      Parallel.forRanges(count: k * n, costPerItem: cost) { pairs in
        for pair in pairs { slots[pair] = body(pair / n, pair % n) }
      }
    }
    return results.map { $0! }
  }

  /// Loss and gradient of `logits` (B × M × K × h × w, or N × K × h × w) against `targets`
  /// (B × M × S × S soft masks) with fresh `draws` (one per output). `meanOver` is the number
  /// of masks the mean runs over (default: these N): each mask's loss is its own, so a step
  /// may take its masks in parts, each part with the step's total here.
  package func callAsFunction(
    logits: Tensor, targets: Tensor, draws: [Draws], meanOver: Int? = nil
  ) -> Result {
    let side = targets.dim(-1)
    let points = selectPoints(logits: logits, targetSide: side, draws: draws)
    return evaluate(logits: logits, targets: targets, points: points, meanOver: meanOver)
  }

  /// The loss at fixed points (the point selection has no gradient, as in the official code).
  package func evaluate(
    logits: Tensor, targets: Tensor, points: [[[Float]]], meanOver: Int? = nil
  ) -> Result {
    let (n, k, h, w) = Self.dimensions(logits)
    let meanCount = Double(meanOver ?? n)
    let side = targets.dim(-1)
    precondition(targets.dim(-2) == side && targets.count == n * side * side)
    let view = UpsampledLogits(inputHeight: h, inputWidth: w, side: side)
    // Per output and mask: the losses, and the logits and labels at the points for the
    // backward pass.
    let perPair = Self.perPair(outputs: k, masks: n, cost: 60 * (points.first?.first?.count ?? 1)) {
      output, mask in
      logits.storage.withUnsafeBufferPointer { all in
        targets.storage.withUnsafeBufferPointer { target in
          let plane = all.baseAddress! + (mask * k + output) * h * w
          let truth = target.baseAddress! + mask * side * side
          let p = points[output][mask]
          let count = p.count / 2
          var xs = [Double](repeating: 0, count: count)
          var ts = [Double](repeating: 0, count: count)
          for j in 0..<count {
            let taps = PointSample.taps(x: p[2 * j], y: p[2 * j + 1], height: side, width: side)
            xs[j] = Double(
              PointSample.value(taps, height: side, width: side) { y, x in
                view.value(plane, y: y, x: x)
              })
            ts[j] = Double(
              PointSample.value(taps, height: side, width: side) { y, x in
                truth[y * side + x]
              })
          }
          let (bce, dice) = settings.losses(xs, ts)
          return (bce: bce, dice: dice, xs: xs, ts: ts)
        }
      }
    }
    let bce = (0..<k).map { output in (0..<n).map { perPair[output * n + $0].bce } }
    let dice = (0..<k).map { output in (0..<n).map { perPair[output * n + $0].dice } }
    let weight = settings.bceWeight
    var chosen = [Int](repeating: 0, count: n)
    var total = 0.0
    for mask in 0..<n {
      var best = 0
      for output in 1..<k
      where weight * bce[output][mask] + dice[output][mask] < weight * bce[best][mask]
        + dice[best][mask]
      {
        best = output
      }
      chosen[mask] = best
      total += weight * bce[best][mask] + dice[best][mask]
    }

    // Backward: only the chosen output of each mask carries gradient; masks in parallel,
    // each into its own planes.
    var gradient = [Float](repeating: 0, count: logits.count)
    gradient.withUnsafeMutableBufferPointer { g in
      let g = g.baseAddress!
      Parallel.forRanges(count: n, costPerItem: 40 * (points.first?.first?.count ?? 1)) { masks in
        for mask in masks {
          let output = chosen[mask]
          let pair = perPair[output * n + mask]
          let dx = settings.gradients(pair.xs, pair.ts, scale: 1 / meanCount)
          let plane = g + (mask * k + output) * h * w
          let p = points[output][mask]
          for j in 0..<pair.xs.count {
            let taps = PointSample.taps(x: p[2 * j], y: p[2 * j + 1], height: side, width: side)
            PointSample.scatter(taps, height: side, width: side) { y, x, tapWeight in
              view.accumulate(dx[j] * Double(tapWeight), into: plane, y: y, x: x)
            }
          }
        }
      }
    }
    return Result(
      loss: total / meanCount, bce: bce, dice: dice, chosen: chosen,
      gradient: Tensor(shape: logits.shape, storage: gradient))
  }

  /// N (masks), K (outputs), h, w of B × M × K × h × w or N × K × h × w logits.
  private static func dimensions(_ logits: Tensor) -> (Int, Int, Int, Int) {
    precondition(logits.rank == 4 || logits.rank == 5, "MaskLoss: logits \(logits.shape)")
    let k = logits.dim(-3)
    return (logits.count / (k * logits.dim(-2) * logits.dim(-1)), k, logits.dim(-2), logits.dim(-1))
  }
}

@inline(__always)
func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }

/// The per-point classification term of the mask loss.
package enum PointLoss: String, Sendable, Codable, CaseIterable {
  /// `BCE-with-logits`, as the official EfficientViT-SAM code trains.
  case bce
  /// The sigmoid focal loss `α_t·(1 − p_t)^γ·BCE` the paper (after SAM) names.
  case focal
}

extension MaskLoss.Settings {
  /// The per-point term and its derivative by the logit, at logit `x` against the soft label
  /// `t`.
  @inline(__always)
  package func pointTerm(_ x: Double, _ t: Double) -> (value: Double, slope: Double) {
    let ce = max(x, 0) - x * t + log1p(exp(-abs(x)))
    let p = sigmoid(x)
    switch pointLoss {
    case .bce:
      return (ce, p - t)
    case .focal:
      // torchvision's sigmoid_focal_loss, which reads soft labels the same way.
      let pt = p * t + (1 - p) * (1 - t)
      let alphaT = focalAlpha * t + (1 - focalAlpha) * (1 - t)
      let modulation = pow(1 - pt, focalGamma)
      let dModulation =
        -focalGamma * pow(1 - pt, focalGamma - 1) * p * (1 - p) * (2 * t - 1)
      return (alphaT * modulation * ce, alphaT * (dModulation * ce + modulation * (p - t)))
    }
  }

  /// The mean point term and the dice loss `1 − (2Σσ(x)t + 1) / (Σσ(x) + Σt + 1)` of one
  /// mask's points.
  func losses(_ x: [Double], _ t: [Double]) -> (bce: Double, dice: Double) {
    var term = 0.0
    var overlap = 0.0
    var predicted = 0.0
    var truth = 0.0
    for j in x.indices {
      term += pointTerm(x[j], t[j]).value
      let p = sigmoid(x[j])
      overlap += p * t[j]
      predicted += p
      truth += t[j]
    }
    let dice = 1 - (2 * overlap + 1) / (predicted + truth + 1)
    return (term / Double(x.count), dice)
  }

  /// ∂(w·term + dice)/∂x_j · `scale` for one mask's points.
  func gradients(_ x: [Double], _ t: [Double], scale: Double) -> [Double] {
    var overlap = 0.0
    var predicted = 0.0
    var truth = 0.0
    let p = x.map(sigmoid)
    for j in x.indices {
      overlap += p[j] * t[j]
      predicted += p[j]
      truth += t[j]
    }
    let numerator = 2 * overlap + 1
    let denominator = predicted + truth + 1
    let count = Double(x.count)
    return x.indices.map { j in
      let slope = p[j] * (1 - p[j])
      let dDice =
        -(2 * t[j] * slope * denominator - numerator * slope) / (denominator * denominator)
      return scale * (bceWeight * pointTerm(x[j], t[j]).slope / count + dDice)
    }
  }
}
