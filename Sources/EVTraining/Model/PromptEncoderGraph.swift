import EVCheckpoint
import EVModel
import EVTensor

/// SAM's prompt encoder on the tape. Its outputs are fixed random-Fourier encodings of the
/// coordinates plus learned rows (`point_embeddings.0…3` for background and foreground points
/// and the two box corners, `not_a_point_embed` for the padding point, `no_mask_embed` for the
/// dense map when there is no mask input), so the values come from the inference
/// `PromptEncoder` built on the current parameters and the gradients flow to those rows.
package struct PromptEncoderGraph {
  let parameters: Parameters
  /// The inference encoder on the parameters' values when this graph was made (the rows
  /// change every step, so a step makes its own graph).
  package let encoder: PromptEncoder

  package init(parameters: Parameters) {
    self.parameters = parameters
    let reader = WeightReader(
      parameters.tensors.filter { $0.key.hasPrefix("prompt_encoder.") }, origin: "parameters")
    encoder = PromptEncoder(reader.root["prompt_encoder"])
  }

  /// The learned row each sparse token adds: −1 padding, 0/1 point labels, 2/3 box corners.
  static func tableKey(_ kind: Int) -> String {
    kind < 0
      ? "prompt_encoder.not_a_point_embed.weight" : "prompt_encoder.point_embeddings.\(kind).weight"
  }

  /// Sparse tokens `[B, N, 256]` for B prompts (points in the 1024 frame with labels, and/or
  /// boxes `[B, 4]`), as `PromptEncoder` builds them, with gradients to the learned rows.
  package func sparse(
    _ tape: Tape, points: (coords: Tensor, labels: [Int])?, boxes: Tensor?
  ) -> Variable {
    let value = encoder(points: points, boxes: boxes, masks: nil).sparse
    let b = value.shape[0]
    let n = value.shape[1]
    // Token kinds in the encoder's order: the points (labels row-major, B·N of them) and a
    // padding point when there is no box, then the box's two corners.
    let perPrompt = points.map { $0.labels.count / b } ?? 0
    let allKinds: [[Int]] = (0..<b).map { prompt in
      var k: [Int] = []
      if let points {
        // Other labels get the bare encoding in the official encoder: no learned row.
        k += points.labels[(prompt * perPrompt)..<((prompt + 1) * perPrompt)].map {
          (-1...1).contains($0) ? $0 : Int.min
        }
        if boxes == nil { k.append(-1) }
      }
      if boxes != nil { k += [2, 3] }
      return k
    }
    precondition(
      allKinds.allSatisfy { $0.count == n }, "PromptEncoderGraph: token kinds do not match \(n)")
    // The official encoder adds every point row through a label mask (`embedding[labels ==
    // 0] += …`), so with points all three rows get a gradient, zero for an unused label, and
    // AdamW decays them; with a box, both corner rows.
    let kinds = (points == nil ? [] : [-1, 0, 1]) + (boxes == nil ? [] : [2, 3])
    let tables = kinds.map { (kind: $0, v: parameters[Self.tableKey($0)]) }
    return tape.record(value, inputs: tables.map(\.v)) { g in
      let e = value.shape[2]
      for table in tables where table.v.requiresGrad {
        var d = [Double](repeating: 0, count: e)
        for prompt in 0..<b {
          for token in 0..<n where allKinds[prompt][token] == table.kind {
            let row = (prompt * n + token) * e
            for c in 0..<e { d[c] += Double(g[row + c]) }
          }
        }
        table.v.accumulate(d)
      }
    }
  }

  /// The dense embedding without a mask input: `no_mask_embed` at every pixel of
  /// `[B, 256, 64, 64]`. It is the same for every prompt, so `batch: 1` gives the one map
  /// that `MaskDecoderGraph` shares across a batch of prompts.
  package func noMaskDense(_ tape: Tape, batch b: Int) -> Variable {
    let table = parameters["prompt_encoder.no_mask_embed.weight"]
    let side = PromptEncoder.embeddingSide
    let (e, plane) = (table.count, side * side)
    let value = Tensor(uninitializedShape: [b, e, side, side]) { out in
      for prompt in 0..<b {
        for c in 0..<e {
          (out.baseAddress! + (prompt * e + c) * plane).initialize(
            repeating: table.value.storage[c], count: plane)
        }
      }
    }
    return tape.record(value, inputs: [table]) { g in
      var d = [Double](repeating: 0, count: e)
      g.withUnsafeBufferPointer { gp in
        for prompt in 0..<b {
          for c in 0..<e {
            d[c] += Double(Loops.sum(gp.baseAddress! + (prompt * e + c) * plane, plane))
          }
        }
      }
      table.accumulate(d)
    }
  }
}
