import EVTensor
import Foundation

/// A value in a differentiable computation: its tensor, and (once `Tape.backward` has run)
/// the gradient of the loss with respect to it. Parameters are variables that live across
/// steps; everything else is made by the ops of one step.
package final class Variable {
  package var value: Tensor
  /// ∂loss/∂value, float32 like PyTorch's `.grad`; nil until something flows into it. An op's
  /// output drops its gradient once that has flowed back into the op's inputs (PyTorch keeps
  /// no gradient of non-leaf tensors either); variables made by `init` keep theirs.
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
  /// The extent along `axis` (negative counts from the end).
  package func dim(_ axis: Int) -> Int { value.dim(axis) }

  /// Adds `g` (one value per element) to the gradient. The first gradient is kept as it is
  /// (arrays are shared, not copied); later ones are added in place.
  package func accumulate(_ g: [Float]) {
    guard requiresGrad else { return }
    precondition(g.count == value.count, "gradient of \(g.count) values for shape \(shape)")
    guard grad != nil else {
      grad = g
      return
    }
    g.withUnsafeBufferPointer { src in
      addToGradient { dst, fresh in
        if fresh {
          dst.update(from: src.baseAddress!, count: src.count)
        } else {
          Loops.add(src.baseAddress!, into: dst, count: src.count)
        }
      }
    }
  }

  /// Adds `g` in double precision, rounded once.
  package func accumulate(_ g: [Double]) {
    guard requiresGrad else { return }
    accumulate(g.map { Float($0) })
  }

  /// Lets `body` add its contribution straight into the gradient's storage, without an array
  /// of its own. `fresh` is true when there was no gradient yet: the storage is then
  /// uninitialised and `body` must write every element (a product runs with β = 0); otherwise
  /// it adds (β = 1). Does nothing when the variable needs no gradient.
  package func addToGradient(_ body: (_ g: UnsafeMutablePointer<Float>, _ fresh: Bool) -> Void) {
    guard requiresGrad else { return }
    let n = value.count
    guard grad != nil else {
      grad = [Float](unsafeUninitializedCapacity: n) { buffer, count in
        if n > 0 { body(buffer.baseAddress!, true) }
        count = n
      }
      return
    }
    grad!.withUnsafeMutableBufferPointer { buffer in
      if n > 0 { body(buffer.baseAddress!, false) }
    }
  }

  /// Lets `body` add into the gradient's storage, zero-filled first when there was none: for
  /// contributions that arrive in parts (a broadcast input summed over the batch, scattered
  /// taps).
  package func addToZeroedGradient(_ body: (_ g: UnsafeMutablePointer<Float>) -> Void) {
    addToGradient { g, fresh in
      if fresh { g.initialize(repeating: 0, count: value.count) }
      body(g)
    }
  }
}

/// Records the ops of one forward pass, then runs their backward passes in reverse order.
/// A variable needs gradient when it requires it or when an op that produced it does, so
/// ops on inputs alone record nothing.
package final class Tape {
  private var backwards: [(() -> Void)?] = []
  /// Where per-op times go, if anywhere.
  let profile: TapeProfile?
  private var lastMark: Double

  package init(profile: TapeProfile? = nil) {
    self.profile = profile
    lastMark = TapeProfile.now()
  }

  /// The output of an op: `backward` receives the output's gradient (zeros when nothing
  /// reached it) and must accumulate into the inputs that need it. `name` labels the op in a
  /// profile.
  func record(
    _ value: Tensor, inputs: [Variable], name: String = #function,
    backward: @escaping (_ outGrad: [Float]) -> Void
  ) -> Variable {
    if let profile {
      // An op computes its value just before recording it: the time since the previous
      // record is its forward pass.
      let now = TapeProfile.now()
      profile.add(name, forward: now - lastMark)
      lastMark = now
    }
    let needs = inputs.contains { $0.requiresGrad }
    let out = Variable(value, requiresGrad: needs)
    guard needs else { return out }
    out.producer = backwards.count
    let profile = profile
    backwards.append { [out] in
      guard let g = out.grad else { return }
      // The op's inputs get their share below; the output's own gradient is no longer needed.
      out.grad = nil
      guard let profile else { return backward(g) }
      let start = TapeProfile.now()
      backward(g)
      profile.add(name, backward: TapeProfile.now() - start)
    }
    return out
  }

  /// Seeds `output` with `gradient` (∂loss/∂output) and propagates to every variable. Each
  /// op's closure (and with it what the op kept for its backward pass: its inputs' values,
  /// softmax probabilities, normalisation statistics) is released as soon as it has run, so
  /// memory falls as the pass proceeds instead of after it.
  package func backward(from output: Variable, gradient: [Float]) {
    output.accumulate(gradient)
    for index in backwards.indices.reversed() {
      let step = backwards[index]
      backwards[index] = nil
      step?()
    }
    backwards.removeAll()
  }
}

/// CPU time per op (the whole process's, so an op's parallel parts count on every core),
/// forward and backward, summed over the tapes that share this profile (`Tape(profile:)`;
/// `evsam bench-train --profile` prints it). CPU time rather than wall time because other
/// work on a shared machine stretches wall time but not it. Not thread-safe: a profile
/// belongs to one thread's tapes.
package final class TapeProfile {
  package struct Entry {
    package var forward = 0.0
    package var backward = 0.0
    package var calls = 0
  }

  package private(set) var entries: [String: Entry] = [:]

  package init() {}

  /// Adds seconds of CPU time to `name`; a forward time counts a call.
  package func add(_ name: String, forward: Double = 0, backward: Double = 0) {
    entries[name, default: Entry()].forward += forward
    entries[name, default: Entry()].backward += backward
    if backward == 0 { entries[name, default: Entry()].calls += 1 }
  }

  /// The process's CPU time so far, in seconds.
  package static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }

  /// A table of the entries, the costliest first.
  package func report() -> String {
    var lines = [
      "| op | calls | forward | backward | total |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    let total = entries.values.reduce(0) { $0 + $1.forward + $1.backward }
    for (name, e) in entries.sorted(by: {
      $0.value.forward + $0.value.backward > $1.value.forward + $1.value.backward
    }) {
      let op = name.split(separator: "(").first.map(String.init) ?? name
      lines.append(
        "| \(op) | \(e.calls) | \(milliseconds(e.forward)) | \(milliseconds(e.backward)) | "
          + "\(milliseconds(e.forward + e.backward)) |")
    }
    lines.append("| all | | | | \(milliseconds(total)) |")
    return lines.joined(separator: "\n")
  }

  private func milliseconds(_ s: Double) -> String {
    let ms = (s * 10_000).rounded() / 10
    return "\(ms) ms"
  }
}
