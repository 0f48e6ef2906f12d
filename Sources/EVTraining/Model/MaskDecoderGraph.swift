import EVModel
import EVTensor

/// SAM's mask decoder on the tape: the same computation as `ReferenceMaskDecoder` (and so as
/// `mask_decoder.py`), with gradients for every `mask_decoder.*` parameter.
package struct MaskDecoderGraph {
  static let heads = 8
  static let eps: Float = 1e-6
  let parameters: Parameters
  let prefix = "mask_decoder."

  package init(parameters: Parameters) { self.parameters = parameters }

  private func p(_ name: String) -> Variable { parameters[prefix + name] }

  private func linear(_ tape: Tape, _ x: Variable, _ name: String) -> Variable {
    tape.linear(x, weight: p(name + ".weight"), bias: p(name + ".bias"))
  }

  private func norm(_ tape: Tape, _ x: Variable, _ name: String) -> Variable {
    tape.layerNorm(x, weight: p(name + ".weight"), bias: p(name + ".bias"), eps: Self.eps)
  }

  /// `Attention`: 8 heads, softmax of `q·kᵀ / √(head dim)`.
  private func attention(
    _ tape: Tape, q: Variable, k: Variable, v: Variable, _ name: String
  ) -> Variable {
    func heads(_ x: Variable) -> Variable {
      let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
      return tape.permute(tape.reshape(x, [b, n, Self.heads, c / Self.heads]), [0, 2, 1, 3])
    }
    let qh = heads(linear(tape, q, name + ".q_proj"))
    let kh = heads(linear(tape, k, name + ".k_proj"))
    let vh = heads(linear(tape, v, name + ".v_proj"))
    let headDim = qh.shape[3]
    let scores = tape.scale(
      tape.matmul(qh, kh, transposeB: true), 1 / Float(headDim).squareRoot())
    let out = tape.matmul(tape.softmax(scores), vh)
    let (b, h, n, c) = (out.shape[0], out.shape[1], out.shape[2], out.shape[3])
    let merged = tape.reshape(tape.permute(out, [0, 2, 1, 3]), [b, n, h * c])
    return linear(tape, merged, name + ".out_proj")
  }

  private func block(
    _ tape: Tape, _ i: Int, queries: Variable, keys: Variable, queryPE: Variable, keyPE: Variable
  ) -> (Variable, Variable) {
    let name = "transformer.layers.\(i)"
    var queries = queries
    var keys = keys
    if i == 0 {
      queries = attention(tape, q: queries, k: queries, v: queries, name + ".self_attn")
    } else {
      let q = tape.add(queries, queryPE)
      queries = tape.add(queries, attention(tape, q: q, k: q, v: queries, name + ".self_attn"))
    }
    queries = norm(tape, queries, name + ".norm1")
    var q = tape.add(queries, queryPE)
    var k = tape.add(keys, keyPE)
    queries = norm(
      tape,
      tape.add(queries, attention(tape, q: q, k: k, v: keys, name + ".cross_attn_token_to_image")),
      name + ".norm2")
    let hidden = tape.activation(linear(tape, queries, name + ".mlp.lin1"), .relu)
    queries = norm(
      tape, tape.add(queries, linear(tape, hidden, name + ".mlp.lin2")), name + ".norm3")
    q = tape.add(queries, queryPE)
    k = tape.add(keys, keyPE)
    keys = norm(
      tape,
      tape.add(keys, attention(tape, q: k, k: q, v: queries, name + ".cross_attn_image_to_token")),
      name + ".norm4")
    return (queries, keys)
  }

  private func mlp(_ tape: Tape, _ x: Variable, _ name: String, depth: Int) -> Variable {
    var y = x
    for i in 0..<depth {
      y = linear(tape, y, "\(name).layers.\(i)")
      if i < depth - 1 { y = tape.activation(y, .relu) }
    }
    return y
  }

  /// Low-res logits `[B, C, 256, 256]` and IoU predictions `[B, C]` (C = 3 with `multimask`,
  /// tokens 1…3; else token 0), from the image embedding `[1, 256, 64, 64]` (or one per
  /// prompt, `[B, …]`), the dense positional encoding, sparse `[B, N, 256]` and dense
  /// `[B, 256, 64, 64]` prompt embeddings.
  package func callAsFunction(
    _ tape: Tape, imageEmbedding: Variable, imagePE: Tensor, sparse: Variable, dense: Variable,
    multimask: Bool
  ) -> (masks: Variable, iouPredictions: Variable) {
    let b = sparse.shape[0]
    let e = 256
    let tokenCount = 4
    let output = tape.concat([p("iou_token.weight"), p("mask_tokens.weight")], axis: 0)
    let outputBatch = tape.concat(
      Array(repeating: tape.reshape(output, [1, 1 + tokenCount, e]), count: b), axis: 0)
    let tokens = tape.concat([outputBatch, sparse], axis: 1)
    let embedding =
      imageEmbedding.shape[0] == b
      ? imageEmbedding : tape.concat(Array(repeating: imageEmbedding, count: b), axis: 0)
    let image = tape.add(embedding, dense)
    let (h, w) = (image.shape[2], image.shape[3])
    let pe = Variable(Reference.concat(Array(repeating: imagePE, count: b), axis: 0))
    let keyPE = tape.permute(tape.reshape(pe, [b, e, h * w]), [0, 2, 1])
    var keys = tape.permute(tape.reshape(image, [b, e, h * w]), [0, 2, 1])
    var queries = tokens
    for i in 0..<2 {
      (queries, keys) = block(tape, i, queries: queries, keys: keys, queryPE: tokens, keyPE: keyPE)
    }
    let q = tape.add(queries, tokens)
    let k = tape.add(keys, keyPE)
    queries = norm(
      tape,
      tape.add(
        queries, attention(tape, q: q, k: k, v: keys, "transformer.final_attn_token_to_image")),
      "transformer.norm_final_attn")

    let src = tape.reshape(tape.permute(keys, [0, 2, 1]), [b, e, h, w])
    var up = tape.convTranspose2x2(
      src, weight: p("output_upscaling.0.weight"), bias: p("output_upscaling.0.bias"))
    up = tape.layerNorm2d(
      up, weight: p("output_upscaling.1.weight"), bias: p("output_upscaling.1.bias"),
      eps: Self.eps)
    up = tape.activation(up, .geluErf)
    up = tape.convTranspose2x2(
      up, weight: p("output_upscaling.3.weight"), bias: p("output_upscaling.3.bias"))
    up = tape.activation(up, .geluErf)
    let (c2, uh, uw) = (up.shape[1], up.shape[2], up.shape[3])
    let hyper = tape.concat(
      (0..<tokenCount).map { i in
        mlp(
          tape, tape.slice(queries, axis: 1, range: (1 + i)..<(2 + i)),
          "output_hypernetworks_mlps.\(i)", depth: 3)
      }, axis: 1)
    let masks = tape.reshape(
      tape.matmul(hyper, tape.reshape(up, [b, c2, uh * uw])), [b, tokenCount, uh, uw])
    let iou = tape.reshape(
      mlp(tape, tape.slice(queries, axis: 1, range: 0..<1), "iou_prediction_head", depth: 3),
      [b, tokenCount])
    let kept = multimask ? 1..<tokenCount : 0..<1
    return (tape.slice(masks, axis: 1, range: kept), tape.slice(iou, axis: 1, range: kept))
  }
}
