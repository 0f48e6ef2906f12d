import EVTensor
import Foundation

/// The decoder part of the official training step, timed (`evsam bench-train --part decoder`):
/// for every image its prompts, the mask decoder, the loss and the backward pass
/// (`DecoderPass`), then one update of the prompt encoder's rows and the mask decoder (value
/// clipping at 2.0, AdamW), as the official step ends. The image encoder is frozen here: the
/// embeddings are inputs, like `torch.no_grad()` embeddings on the reference side.
package enum DecoderStepBenchmark {
  /// One step's inputs.
  package struct Batch: Sendable {
    /// Per image, `[1, 256, 64, 64]`.
    package var embeddings: [Tensor]
    package var prompts: [TrainingPrompts]
    /// Per image, `[M, S, S]` soft masks at the encoder's input size.
    package var targets: [Tensor]
  }

  /// Seeded inputs of the official shapes: standard-normal embeddings (the encoder ends in a
  /// LayerNorm, so real ones have that scale), and per image `masks` boxes of 10–40 % of the
  /// side with their filled rectangles as targets. The decoder's work does not depend on the
  /// values; the loss's point selection hardly does.
  package static func syntheticBatch(images: Int, masks: Int, side: Int, seed: UInt64) -> Batch {
    var rng = SplitMix64(seed: seed)
    var batch = Batch(embeddings: [], prompts: [], targets: [])
    let toPrompt = Float(1024) / Float(side)
    for _ in 0..<images {
      var embedding = [Float](repeating: 0, count: 256 * 64 * 64)
      for i in stride(from: 0, to: embedding.count, by: 2) {
        // Box–Muller: two normal values from two uniform ones.
        let u = Float.random(in: Float.leastNormalMagnitude..<1, using: &rng)
        let v = Float.random(in: 0..<1, using: &rng)
        let r = (-2 * Foundation.log(u)).squareRoot()
        embedding[i] = r * Foundation.cos(2 * Float.pi * v)
        embedding[i + 1] = r * Foundation.sin(2 * Float.pi * v)
      }
      batch.embeddings.append(Tensor(shape: [1, 256, 64, 64], storage: embedding))
      var boxes: [Float] = []
      var targets = [Float](repeating: 0, count: masks * side * side)
      for m in 0..<masks {
        let width = Int(Float(side) * Float.random(in: 0.1...0.4, using: &rng))
        let height = Int(Float(side) * Float.random(in: 0.1...0.4, using: &rng))
        let x0 = Int.random(in: 0...(side - width), using: &rng)
        let y0 = Int.random(in: 0...(side - height), using: &rng)
        for y in y0..<(y0 + height) {
          for x in x0..<(x0 + width) { targets[(m * side + y) * side + x] = 1 }
        }
        boxes += [x0, y0, x0 + width, y0 + height].map { Float($0) * toPrompt }
      }
      batch.prompts.append(.boxes(Tensor(shape: [masks, 4], storage: boxes)))
      batch.targets.append(Tensor(shape: [masks, side, side], storage: targets))
    }
    return batch
  }

  /// One timed step.
  package struct Run: Sendable {
    package var wall: Double
    /// Process CPU time (all threads).
    package var cpu: Double
    package var loss: Double
  }

  /// Times `step`, which returns its loss.
  package static func timed(_ step: () -> Double) -> Run {
    let cpu0 = TapeProfile.now()
    let start = ContinuousClock.now
    let loss = step()
    return Run(
      wall: (ContinuousClock.now - start).seconds, cpu: TapeProfile.now() - cpu0, loss: loss)
  }

  /// Seeded preprocessed images `[3, S, S]` (uniform in ±2, the normalised range) for the
  /// steps that run the encoder.
  package static func syntheticImages(count: Int, side: Int, seed: UInt64) -> [Tensor] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in
      Tensor(
        shape: [3, side, side],
        storage: (0..<(3 * side * side)).map { _ in Float.random(in: -2...2, using: &rng) })
    }
  }

  /// The weights, the optimiser and the inputs of repeated steps (the weights change from
  /// step to step, as in training). `tensors` holds at least the `prompt_encoder.*` and
  /// `mask_decoder.*` keys.
  package final class Session {
    let parameters: Parameters
    let optimizer = AdamW()
    let batch: Batch
    var pass: DecoderPass
    var rng: SplitMix64
    let totalMasks: Int

    package init(
      tensors: [String: Tensor], batch: Batch, multimask: Bool, partSize: Int?, seed: UInt64 = 0
    ) {
      parameters = Parameters(
        tensors.filter {
          $0.key.hasPrefix("prompt_encoder.") || $0.key.hasPrefix("mask_decoder.")
        }
      ) { key in
        // What the official step trains of these: the IoU head gets no gradient from the
        // loss, the positional encoding is a buffer and the mask input path is unused.
        !key.contains("iou_prediction_head") && !key.contains("pe_layer")
          && !key.contains("mask_downscaling")
      }
      self.batch = batch
      pass = DecoderPass(multimask: multimask, partSize: partSize)
      rng = SplitMix64(seed: seed)
      totalMasks = batch.targets.reduce(0) { $0 + $1.dim(0) }
    }

    /// One optimiser step on the batch, timed; per-op CPU times go to `profile` if given.
    package func step(profile: TapeProfile? = nil) -> Run {
      pass.profile = profile
      let cpu0 = TapeProfile.now()
      let start = ContinuousClock.now
      parameters.zeroGradients()
      var loss = 0.0
      for (image, embedding) in batch.embeddings.enumerated() {
        loss +=
          pass.run(
            parameters: parameters, embedding: Variable(embedding), prompts: batch.prompts[image],
            targets: batch.targets[image], meanOver: totalMasks,
            draws: { rows, outputs in
              (0..<outputs).map { _ in
                MaskLoss.Draws(
                  masks: rows.count, settings: self.pass.loss.settings, using: &self.rng)
              }
            }
          ).loss
      }
      let optimizerStart = TapeProfile.now()
      parameters.applyAdamW(optimizer, lr: 1e-4, clip: 2)
      profile?.add("clip + AdamW", forward: TapeProfile.now() - optimizerStart)
      return Run(
        wall: (ContinuousClock.now - start).seconds, cpu: TapeProfile.now() - cpu0, loss: loss)
    }
  }
}
