import EVTensor

/// A value in a differentiable computation: its tensor, and (once `Tape.backward` has run)
/// the gradient of the loss with respect to it. Parameters are variables that live across
/// steps; everything else is made by the ops of one step.
package final class Variable {
  package var value: Tensor
  /// ∂loss/∂value, float32 like PyTorch's `.grad`; nil until something flows into it.
  package var grad: [Float]?
  /// Whether gradients are wanted here (false for inputs and frozen parameters).
  package let requiresGrad: Bool
  /// Set when an op made this value; `Tape.backward` runs them in reverse.
  fileprivate(set) var producer: Int?

  package init(_ value: Tensor, requiresGrad: Bool = false) {
    self.value = value
    self.requiresGrad = requiresGrad
  }

  package var shape: [Int] { value.shape }
  package var count: Int { value.count }

  /// Adds `g` (one value per element) to the gradient.
  func accumulate(_ g: [Float]) {
    guard requiresGrad else { return }
    precondition(g.count == value.count, "gradient of \(g.count) values for shape \(shape)")
    if grad == nil {
      grad = g
    } else {
      for i in g.indices { grad![i] += g[i] }
    }
  }

  /// Adds `g` in double precision, rounded once.
  func accumulate(_ g: [Double]) { accumulate(g.map { Float($0) }) }
}

/// Records the ops of one forward pass, then runs their backward passes in reverse order.
/// A variable needs gradient when it requires it or when an op that produced it does, so
/// ops on inputs alone record nothing.
package final class Tape {
  private var backwards: [() -> Void] = []

  package init() {}

  /// The output of an op: `backward` receives the output's gradient (zeros when nothing
  /// reached it) and must accumulate into the inputs that need it.
  func record(
    _ value: Tensor, inputs: [Variable], backward: @escaping (_ outGrad: [Float]) -> Void
  ) -> Variable {
    let needs = inputs.contains { $0.requiresGrad }
    let out = Variable(value, requiresGrad: needs)
    guard needs else { return out }
    out.producer = backwards.count
    backwards.append { [out] in
      guard let g = out.grad else { return }
      backward(g)
    }
    return out
  }

  /// Seeds `output` with `gradient` (∂loss/∂output) and propagates to every variable.
  package func backward(from output: Variable, gradient: [Float]) {
    output.accumulate(gradient)
    for step in backwards.reversed() { step() }
    backwards.removeAll()
  }
}
