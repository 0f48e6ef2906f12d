import EVTensor

/// SAM's IoU-head loss, which the official EfficientViT-SAM trainer leaves out (its IoU head
/// is not trained): the mean squared error between each output's predicted IoU and the IoU of
/// that output's mask (logits upsampled to the input size, > 0) with the target (> 0.5).
package enum IoULoss {
  /// `predictions` `[N, K]`, `logits` `[N, K, h, w]` (low-res), `targets` `[N, S, S]`.
  /// Returns the loss (mean over N·K) and ∂loss/∂predictions.
  package static func meanSquaredError(
    predictions: Tensor, logits: Tensor, targets: Tensor
  ) -> (loss: Double, gradient: Tensor, iou: [Float]) {
    let (n, k, h, w) = (logits.dim(0), logits.dim(1), logits.dim(2), logits.dim(3))
    let side = targets.dim(-1)
    precondition(predictions.count == n * k && targets.count == n * side * side)
    let view = UpsampledLogits(inputHeight: h, inputWidth: w, side: side)
    var iou = [Float](repeating: 0, count: n * k)
    iou.withUnsafeMutableBufferPointer { out in
      logits.storage.withUnsafeBufferPointer { all in
        targets.storage.withUnsafeBufferPointer { target in
          Parallel.forRanges(count: n * k, costPerItem: side * side * 8) { range in
            for index in range {
              let plane = all.baseAddress! + index * h * w
              let truth = target.baseAddress! + (index / k) * side * side
              var inter = 0
              var union = 0
              for y in 0..<side {
                for x in 0..<side {
                  let predicted = view.value(plane, y: y, x: x) > 0
                  let actual = truth[y * side + x] > 0.5
                  if predicted && actual { inter += 1 }
                  if predicted || actual { union += 1 }
                }
              }
              out[index] = union == 0 ? 1 : Float(inter) / Float(union)
            }
          }
        }
      }
    }
    var loss = 0.0
    var gradient = [Float](repeating: 0, count: n * k)
    let count = Double(n * k)
    for i in 0..<(n * k) {
      let d = Double(predictions.storage[i]) - Double(iou[i])
      loss += d * d / count
      gradient[i] = Float(2 * d / count)
    }
    return (loss, Tensor(shape: predictions.shape, storage: gradient), iou)
  }
}
