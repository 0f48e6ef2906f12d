import EVTensor

/// The embedding distillation loss of EfficientViT-SAM's first training stage: the mean
/// squared error between the student's image embedding and the teacher's (`F.mse_loss`,
/// mean over every element).
package enum DistillationLoss {
  /// The loss and ∂loss/∂embedding.
  package static func meanSquaredError(_ embedding: Tensor, target: Tensor) -> (
    loss: Double, gradient: Tensor
  ) {
    precondition(
      embedding.shape == target.shape, "distillation: \(embedding.shape) vs \(target.shape)")
    let n = Double(embedding.count)
    var sum = 0.0
    var gradient = [Float](repeating: 0, count: embedding.count)
    for i in 0..<embedding.count {
      let d = Double(embedding.storage[i]) - Double(target.storage[i])
      sum += d * d
      gradient[i] = Float(2 * d / n)
    }
    return (sum / n, Tensor(shape: embedding.shape, storage: gradient))
  }
}
