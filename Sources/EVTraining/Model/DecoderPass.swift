import EVTensor

/// The decoder part of a training step for the masks of one image: the prompt encoder's
/// tokens, the mask decoder, the official loss and the backward pass, which leaves the
/// gradients in the parameters (and in the image embedding when it requires gradient).
///
/// Each mask's loss depends on that mask's outputs alone (its own points, its own minimum over
/// the outputs; the mean over masks is a constant factor), so the masks may go through in
/// parts: the gradients are the same up to float summation order, and the tape holds one part
/// at a time instead of all of them.
package struct DecoderPass {
  package var multimask: Bool
  package var loss: MaskLoss
  /// Masks per forward and backward pass; nil takes all of the image's masks at once. Parts
  /// of 8 hold about 0.6 GB of tape for L0's shapes, half of what 16 masks at once hold, at
  /// the same speed (docs/PERFORMANCE.md, "Training step").
  package var partSize: Int?
  /// Collects per-op times when set.
  package var profile: TapeProfile?

  package init(
    multimask: Bool, loss: MaskLoss = MaskLoss(), partSize: Int? = 8,
    profile: TapeProfile? = nil
  ) {
    self.multimask = multimask
    self.loss = loss
    self.partSize = partSize
    self.profile = profile
  }

  package struct Result {
    /// This image's share of the step's loss (its masks' losses summed, divided by `meanOver`).
    package var loss: Double
    /// The low-res logits of the forward pass, `[M, K, 256, 256]`.
    package var logits: Tensor
  }

  /// - Parameters:
  ///   - embedding: the image's `[1, 256, 64, 64]` embedding.
  ///   - prompts: M boxes or point sets in the 1024 prompt frame.
  ///   - targets: M soft masks `[M, S, S]` at the encoder's padded input size.
  ///   - meanOver: the step's number of masks (over all its images).
  package func run(
    parameters: Parameters, embedding: Variable, prompts: TrainingPrompts, targets: Tensor,
    meanOver: Int, using rng: inout some RandomNumberGenerator
  ) -> Result {
    let masks = targets.dim(0)
    let part = max(1, min(partSize ?? masks, masks))
    let promptGraph = PromptEncoderGraph(parameters: parameters)
    let imagePE = promptGraph.encoder.getDensePE()
    let decoder = MaskDecoderGraph(parameters: parameters)
    var total = 0.0
    var logits: [Float] = []
    var logitShape = [masks, 0, 0, 0]
    for start in stride(from: 0, to: masks, by: part) {
      let rows = start..<min(start + part, masks)
      let tape = Tape(profile: profile)
      let sparse: Variable
      switch prompts {
      case .boxes(let boxes):
        sparse = promptGraph.sparse(
          tape, points: nil, boxes: EVTensor.slice(boxes, axis: 0, range: rows))
      case .points(let coords):
        let chosen = EVTensor.slice(coords, axis: 0, range: rows)
        let labels = [Int](repeating: 1, count: chosen.dim(0) * chosen.dim(1))
        sparse = promptGraph.sparse(tape, points: (chosen, labels), boxes: nil)
      }
      let out = decoder(
        tape, imageEmbedding: embedding, imagePE: imagePE, sparse: sparse,
        dense: promptGraph.noMaskDense(tape, batch: 1), multimask: multimask)
      let (b, k) = (out.masks.dim(0), out.masks.dim(1))
      logitShape[1...] = out.masks.shape[1...]
      let draws = (0..<k).map { _ in
        MaskLoss.Draws(masks: b, settings: loss.settings, using: &rng)
      }
      let partTargets = EVTensor.slice(targets, axis: 0, range: rows)
      let lossStart = TapeProfile.now()
      let result = loss(
        logits: out.masks.value.reshaped([b, 1, k, out.masks.dim(2), out.masks.dim(3)]),
        targets: partTargets.reshaped([b, 1, targets.dim(-2), targets.dim(-1)]), draws: draws,
        meanOver: meanOver)
      profile?.add("MaskLoss", forward: TapeProfile.now() - lossStart)
      tape.backward(from: out.masks, gradient: result.gradient.storage)
      total += result.loss
      logits += out.masks.value.storage
    }
    return Result(loss: total, logits: Tensor(shape: logitShape, storage: logits))
  }
}
