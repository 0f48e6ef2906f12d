import EVTensor

/// The model's tensors by checkpoint key, as variables: trainable ones collect gradients,
/// frozen ones and buffers do not. The trainer's optimiser and checkpoint writer work on the
/// same names, so what it saves loads in the official code as it is.
package final class Parameters {
  package private(set) var variables: [String: Variable] = [:]

  /// `trainable(key)` says which keys get gradients (the IoU head and buffers do not, in the
  /// official recipe).
  package init(_ tensors: [String: Tensor], trainable: (String) -> Bool) {
    for (key, value) in tensors {
      variables[key] = Variable(value, requiresGrad: trainable(key))
    }
  }

  package subscript(_ key: String) -> Variable {
    guard let v = variables[key] else { preconditionFailure("no parameter \(key)") }
    return v
  }

  /// Every gradient collected, by key.
  package var gradients: [String: Tensor] {
    var out: [String: Tensor] = [:]
    for (key, v) in variables {
      if let g = v.grad { out[key] = Tensor(shape: v.shape, storage: g) }
    }
    return out
  }

  package func zeroGradients() { for v in variables.values { v.grad = nil } }

  /// Current values, by key (what a checkpoint stores).
  package var tensors: [String: Tensor] { variables.mapValues(\.value) }

  /// Writes optimiser results back.
  package func assign(_ values: [String: Tensor]) {
    for (key, value) in values { variables[key]?.value = value }
  }
}
