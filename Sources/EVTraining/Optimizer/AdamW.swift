import EVTensor
import Foundation

/// PyTorch's `torch.optim.AdamW` (single-tensor implementation, float32 state) as the
/// official trainer builds it: betas (0.9, 0.999), ε 1e-8, weight decay 0.1 except for the
/// parameters whose name contains `norm` or `bias` (`no_wd_keys`).
package final class AdamW {
  package struct Settings: Sendable, Equatable, Codable {
    package var beta1 = 0.9
    package var beta2 = 0.999
    package var eps = 1e-8
    package var weightDecay = 0.1
    package var noDecayKeys = ["norm", "bias"]

    package init() {}

    /// Whether the parameter called `name` is decayed (`no_wd_keys` matched as substrings).
    package func decays(_ name: String) -> Bool {
      weightDecay != 0 && !noDecayKeys.contains { name.contains($0) }
    }
  }

  package let settings: Settings
  /// Steps taken (PyTorch keeps one per parameter; they advance together).
  package private(set) var step = 0
  /// First and second moments by parameter name.
  package private(set) var firstMoment: [String: [Float]] = [:]
  package private(set) var secondMoment: [String: [Float]] = [:]

  package init(settings: Settings = Settings()) { self.settings = settings }

  /// Restores a saved state (`--resume`).
  package init(
    settings: Settings, step: Int, firstMoment: [String: [Float]], secondMoment: [String: [Float]]
  ) {
    self.settings = settings
    self.step = step
    self.firstMoment = firstMoment
    self.secondMoment = secondMoment
  }

  /// One update of every parameter that has a gradient, with learning rate `lr`. Gradients
  /// are used as given (clip them first, see `clipGradientValues`).
  package func update(
    _ parameters: inout [String: Tensor], gradients: [String: Tensor], lr: Double
  ) {
    step += 1
    let s = settings
    let bias1 = 1 - pow(s.beta1, Double(step))
    let bias2 = 1 - pow(s.beta2, Double(step))
    let stepSize = Float(lr / bias1)
    let bias2Root = Float(bias2.squareRoot())
    let beta1 = Float(s.beta1)
    let oneMinusBeta1 = Float(1 - s.beta1)
    let beta2 = Float(s.beta2)
    let oneMinusBeta2 = Float(1 - s.beta2)
    let eps = Float(s.eps)
    for name in gradients.keys.sorted() {
      guard let g = gradients[name], var p = parameters[name] else { continue }
      precondition(g.count == p.count, "AdamW: gradient of \(name) has \(g.count) values")
      var m = firstMoment[name] ?? [Float](repeating: 0, count: p.count)
      var v = secondMoment[name] ?? [Float](repeating: 0, count: p.count)
      let decay = s.decays(name) ? Float(1 - lr * s.weightDecay) : 1
      for i in 0..<p.count {
        let gi = g.storage[i]
        // param.mul_(1 − lr·wd); exp_avg.lerp_(grad, 1 − β1); exp_avg_sq·β2 + (1 − β2)·g².
        p.storage[i] *= decay
        m[i] = oneMinusBeta1 < 0.5 ? m[i] + oneMinusBeta1 * (gi - m[i]) : gi - (gi - m[i]) * beta1
        v[i] = v[i] * beta2 + oneMinusBeta2 * gi * gi
        let denominator = v[i].squareRoot() / bias2Root + eps
        p.storage[i] += -stepSize * (m[i] / denominator)
      }
      parameters[name] = p
      firstMoment[name] = m
      secondMoment[name] = v
    }
  }
}

extension Parameters {
  /// The end of every official step: the collected gradients clipped by value to ±`clip`
  /// (`clip_grad_value_`), then one `optimizer` update at `lr`, written back.
  package func applyAdamW(_ optimizer: AdamW, lr: Double, clip: Float) {
    var clipped = gradients
    clipGradientValues(&clipped, limit: clip)
    var values = tensors
    optimizer.update(&values, gradients: clipped, lr: lr)
    assign(values)
  }
}

/// `torch.nn.utils.clip_grad_value_`: every gradient value clamped to [−limit, limit].
package func clipGradientValues(_ gradients: inout [String: Tensor], limit: Float) {
  for (name, g) in gradients {
    var clipped = g
    for i in clipped.storage.indices {
      clipped.storage[i] = min(max(clipped.storage[i], -limit), limit)
    }
    gradients[name] = clipped
  }
}

/// The official `CosineLRwithWarmup` per iteration: linear warm-up from `warmupLR` over
/// `warmupSteps`, then `0.5·lr·(1 + cos(π·t / T))` over the `decaySteps` that follow, down
/// to 0 (the official schedule counts T without the warm-up).
package struct CosineSchedule: Sendable, Equatable, Codable {
  package var baseLR: Double
  package var decaySteps: Int
  package var warmupSteps = 0
  package var warmupLR = 0.0

  package init(baseLR: Double, decaySteps: Int, warmupSteps: Int = 0, warmupLR: Double = 0) {
    self.baseLR = baseLR
    self.decaySteps = decaySteps
    self.warmupSteps = warmupSteps
    self.warmupLR = warmupLR
  }

  /// The learning rate of iteration `step` (0-based).
  package func lr(at step: Int) -> Double {
    if step < warmupSteps {
      return (baseLR - warmupLR) * Double(step + 1) / Double(warmupSteps) + warmupLR
    }
    let decay = max(decaySteps, 1)
    let t = min(step - warmupSteps, decay)
    return 0.5 * baseLR * (1 + cos(Double.pi * Double(t) / Double(decay)))
  }
}
