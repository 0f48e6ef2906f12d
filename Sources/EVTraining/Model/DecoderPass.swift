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

  /// Trains the IoU head too: SAM's mean squared error between its predictions and the
  /// outputs' actual IoU (`IoULoss`), averaged over the step's masks and outputs.
  package var iouLoss = false

  package struct Result {
    /// This image's share of the step's loss (its masks' losses summed, divided by `meanOver`;
    /// with `iouLoss`, its share of that loss added).
    package var loss: Double
    /// The low-res logits of the forward pass, `[M, K, 256, 256]`.
    package var logits: Tensor
  }

  /// - Parameters:
  ///   - embedding: the image's `[1, 256, 64, 64]` embedding.
  ///   - prompts: M boxes or point sets in the 1024 prompt frame.
  ///   - targets: M soft masks `[M, S, S]` at the encoder's padded input size.
  ///   - meanOver: the step's number of masks (over all its images).
  ///   - draws: the loss's point draws for masks `rows` of this image and `outputs` outputs.
  ///   - selectionLogits: `[M, K, 256, 256]` logits whose uncertainty picks the points instead
  ///     of the pass's own (to replay another implementation's step exactly).
  package func run(
    parameters: Parameters, embedding: Variable, prompts: TrainingPrompts, targets: Tensor,
    meanOver: Int, draws: (_ rows: Range<Int>, _ outputs: Int) -> [MaskLoss.Draws],
    selectionLogits: Tensor? = nil
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
      let partTargets = EVTensor.slice(targets, axis: 0, range: rows)
      let lossStart = TapeProfile.now()
      let shape = [b, 1, k, out.masks.dim(2), out.masks.dim(3)]
      let ownLogits = out.masks.value.reshaped(shape)
      let side = targets.dim(-1)
      let points = loss.selectPoints(
        logits: selectionLogits.map { EVTensor.slice($0, axis: 0, range: rows).reshaped(shape) }
          ?? ownLogits, targetSide: side, draws: draws(rows, k))
      let result = loss.evaluate(
        logits: ownLogits, targets: partTargets.reshaped([b, 1, side, side]), points: points,
        meanOver: meanOver)
      profile?.add("MaskLoss", forward: TapeProfile.now() - lossStart)
      if iouLoss {
        let iou = IoULoss.meanSquaredError(
          predictions: out.iouPredictions.value, logits: out.masks.value, targets: partTargets)
        // Its mean over this part's b·K entries, rescaled to the step's meanOver·K.
        let share = Double(b) / Double(meanOver)
        total += iou.loss * share
        out.iouPredictions.accumulate(iou.gradient.storage.map { $0 * Float(share) })
      }
      tape.backward(from: out.masks, gradient: result.gradient.storage)
      total += result.loss
      logits += out.masks.value.storage
    }
    return Result(loss: total, logits: Tensor(shape: logitShape, storage: logits))
  }
}
