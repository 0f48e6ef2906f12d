import EVTensor

/// How a step's global batch is cut: `ranks` processes, each taking `accumulation`
/// micro-batches of `microBatch` images in turn (`--grad-accum`). The step's update is the
/// mean of the `slots` micro-batches' gradients wherever they ran, so 2 ranks give the update
/// of 1 rank accumulating 2 micro-batches. BatchNorm normalises each micro-batch on its own
/// statistics, as each GPU of the official trainer does (no SyncBN).
package struct DataParallelLayout: Sendable, Equatable {
  package var ranks: Int
  package var accumulation: Int
  package var microBatch: Int

  package init(ranks: Int = 1, accumulation: Int = 1, microBatch: Int) {
    precondition(ranks >= 1 && accumulation >= 1 && microBatch >= 1, "empty layout")
    self.ranks = ranks
    self.accumulation = accumulation
    self.microBatch = microBatch
  }

  /// The layout of a run of `microBatches` per step (a multiple of `ranks`).
  package init(ranks: Int, microBatches: Int, microBatch: Int) {
    precondition(microBatches % ranks == 0, "\(microBatches) micro-batches on \(ranks) ranks")
    self.init(ranks: ranks, accumulation: microBatches / ranks, microBatch: microBatch)
  }

  /// Micro-batches per step, over all ranks.
  package var slots: Int { ranks * accumulation }

  /// The peak learning rate for the base rate `lr`: the official trainer multiplies its base
  /// rate by its world size (`init_lr = base_lr · world_size`); here by the micro-batches.
  package func scaledLR(_ lr: Double) -> Double { lr * Double(slots) }

  /// Images per optimiser step.
  package var globalBatch: Int { slots * microBatch }

  /// The slot of micro-batch `micro` of `rank`: rank-major, so slot order is rank order.
  package func slot(rank: Int, micro: Int) -> Int { rank * accumulation + micro }

  /// Positions, in the run's stream of images, of a slot's images at `step`.
  package func positions(step: Int, slot: Int) -> Range<Int> {
    let start = step * globalBatch + slot * microBatch
    return start..<(start + microBatch)
  }
}

extension SplitMix64 {
  /// The generator of item `index` of a run's `stream`: every image's draws (and every
  /// step's coin) come from their own generator, found from the seed and the position alone,
  /// so any rank can make any image's sample and a run's randomness does not depend on how
  /// its steps are spread over ranks.
  package init(seed: UInt64, stream: UInt64, index: Int) {
    var mixer = SplitMix64(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
    let key = mixer.next() &+ UInt64(bitPattern: Int64(index)) &* 0x9E37_79B9_7F4A_7C15
    var inner = SplitMix64(seed: key)
    self.init(seed: inner.next())
  }
}

/// The streams a training run draws from, each indexed by image position or step.
package enum RandomStream {
  /// An image's sample: which masks, the flip, the prompts.
  package static let sample: UInt64 = 0xDA7A
  /// An image's loss points.
  package static let lossPoints: UInt64 = 0x1055
  /// A step's multimask coin.
  package static let multimask: UInt64 = 0xC014
}

/// Runs a step's micro-batches and leaves in `parameters` the mean of their gradients over
/// every slot of every rank (summed in slot order, the same on every rank), so every rank
/// takes the same optimiser step.
///
/// `compute(micro)` runs micro-batch `micro` of this rank: it sets the gradients (as the
/// trainers' `computeGradients` do, zeroing first) and returns its loss. `stop` is this
/// rank's wish to end the run after the step; the result's `stop` is every rank's wish
/// combined, so all ranks stop at the same step.
package func averageGradients(
  _ parameters: Parameters, layout: DataParallelLayout, group: any ProcessGroup,
  stop: Bool = false, compute: (Int) throws -> Double
) throws -> (loss: Double, stop: Bool) {
  precondition(group.size == layout.ranks, "\(group.size) processes for \(layout.ranks) ranks")
  if layout.slots == 1 {
    return (try compute(0), stop)
  }
  let keys = parameters.variables.filter(\.value.requiresGrad).keys.sorted()
  var offsets: [Int] = [0]
  for key in keys { offsets.append(offsets.last! + parameters[key].count) }
  var sum = [Float](repeating: 0, count: offsets.last!)
  // The losses, a count of the ranks that want to stop, then per key the micro-batches that
  // gave it a gradient: a parameter no micro-batch reached keeps no gradient, so AdamW leaves
  // it alone (as in one process, and as PyTorch does with a parameter no rank used).
  var scalars = [0.0, stop ? 1 : 0] + [Double](repeating: 0, count: keys.count)
  for micro in 0..<layout.accumulation {
    scalars[0] += try compute(micro)
    sum.withUnsafeMutableBufferPointer { total in
      for (i, key) in keys.enumerated() {
        guard let g = parameters[key].grad else { continue }
        scalars[2 + i] += 1
        g.withUnsafeBufferPointer { g in
          let base = offsets[i]
          for j in g.indices { total[base + j] += g[j] }
        }
      }
    }
  }
  try group.sumInRankOrder(&sum)
  try group.sumInRankOrder(&scalars)
  let count = Float(layout.slots)
  for (i, key) in keys.enumerated() {
    parameters[key].grad =
      scalars[2 + i] > 0 ? sum[offsets[i]..<offsets[i + 1]].map { $0 / count } : nil
  }
  return (scalars[0] / Double(layout.slots), scalars[1] > 0)
}
