import EVModel
import EVTensor

/// SAM's mask decoder on the tape: the same computation as `ReferenceMaskDecoder` (and so as
/// `mask_decoder.py`), with gradients for every `mask_decoder.*` parameter.
///
/// Arranged for a batch of prompts on one image (docs/PERFORMANCE.md, "Training step"):
/// - Until the first block's image→token attention, the image side is the same for every
///   prompt (embedding + dense prompt + positional encoding), so the first token→image
///   attention projects it once, at batch 1, and broadcasts; its gradients sum over the
///   prompts.
/// - Every other attention with the image folds the image side's projections into the
///   token side (as the inference decoder does): a 4096 × 256 → 128 projection per prompt
///   becomes a product of the 4096 image tokens with 8·T token rows.
/// - The upscaling stays channels-last: each transposed convolution is one product over the
///   whole batch, its LayerNorm runs over contiguous channels, and the pixels are put in image
///   order only once, on the four low-res masks.
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

  /// `Attention`: projections, 8 heads, softmax of `q·kᵀ / √(head dim)`, output projection;
  /// as written, for the tokens' self-attention and for a token→image attention whose image
  /// side (`k`, `v` at batch 1) every prompt shares.
  private func attention(
    _ tape: Tape, q: Variable, k: Variable, v: Variable, _ name: String
  ) -> Variable {
    let heads = tape.attention(
      q: linear(tape, q, name + ".q_proj"), k: linear(tape, k, name + ".k_proj"),
      v: linear(tape, v, name + ".v_proj"), heads: Self.heads)
    return linear(tape, heads, name + ".out_proj")
  }

  /// 1/√(head dim) of the cross attentions (256 / 2 channels over 8 heads).
  static let crossScale = 1 / Float(16).squareRoot()

  /// Token→image `Attention` with the image side folded into the token side: per head,
  /// `softmax(q_h·(W_k,h x + b_k,h)ᵀ)·(x W_v,hᵀ + b_v,h)` = `softmax((q_h W_k,h)·xᵀ)·x · W_v,hᵀ
  /// + b_v,h` (the key bias shifts a row of scores, which the softmax removes; a row of
  /// probabilities sums to 1). `keys`, `values` `[B, N, 256]` per prompt.
  private func tokenToImage(
    _ tape: Tape, q: Variable, keys: Variable, values: Variable, _ name: String
  ) -> Variable {
    let query = linear(tape, q, name + ".q_proj")
    let folded = tape.headProjection(
      query, weight: p(name + ".k_proj.weight"), heads: Self.heads, scale: Self.crossScale)
    let probabilities = tape.ignoring(
      p(name + ".k_proj.bias"), tape.softmaxOfProduct(folded, keys))
    let mixed = tape.matmul(probabilities, values)  // [B, 8T, 256]
    let merged = tape.headMerge(mixed, weight: p(name + ".v_proj.weight"), heads: Self.heads)
    let out = tape.addRows(merged, tape.reshape(p(name + ".v_proj.bias"), [1, 1, merged.dim(2)]))
    return linear(tape, out, name + ".out_proj")
  }

  /// `residual + Attention(q: image, k: tokens, v: tokens)`, folded the other way: the
  /// image's query projection goes into the keys, `(x W_q,hᵀ + b_q,h)·k_hᵀ = x·(k_h W_q,h)ᵀ +
  /// b_q,h·k_h`, and the output projection into the values, `Σ_h P_h·(v_h W_o,hᵀ) + b_o`
  /// (b_o split over the heads, whose probabilities each sum to 1). `image` `[1 or B, N, 256]`.
  private func imageToToken(
    _ tape: Tape, image: Variable, tokens: Variable, values: Variable, residual: Variable,
    _ name: String
  ) -> Variable {
    let (b, t) = (tokens.dim(0), tokens.dim(1))
    let keys = linear(tape, tokens, name + ".k_proj")
    let folded = tape.headProjection(
      keys, weight: p(name + ".q_proj.weight"), heads: Self.heads, scale: Self.crossScale)
    let queryBias = tape.headProjection(
      keys, weight: tape.reshape(p(name + ".q_proj.bias"), [keys.dim(2), 1]), heads: Self.heads,
      scale: Self.crossScale)
    let probabilities = tape.softmaxOfProduct(
      image, folded, adding: tape.reshape(queryBias, [b, 1, Self.heads * t]), group: t)
    let bias = p(name + ".out_proj.bias")
    let projected = tape.addRows(
      tape.headProjection(
        linear(tape, values, name + ".v_proj"), weight: p(name + ".out_proj.weight"),
        heads: Self.heads, transposedWeight: true),
      tape.reshape(tape.scale(bias, 1 / Float(Self.heads)), [1, 1, bias.count]))
    return tape.matmul(probabilities, projected, adding: residual)
  }

  private func block(
    _ tape: Tape, _ i: Int, queries: Variable, keys: Variable, queryPE: Variable, keyPE: Variable
  ) -> (Variable, Variable) {
    let name = "transformer.layers.\(i)"
    var queries = queries
    if i == 0 {
      queries = attention(tape, q: queries, k: queries, v: queries, name + ".self_attn")
    } else {
      let q = tape.add(queries, queryPE)
      queries = tape.add(queries, attention(tape, q: q, k: q, v: queries, name + ".self_attn"))
    }
    queries = norm(tape, queries, name + ".norm1")
    var q = tape.add(queries, queryPE)
    // The keys do not change until the block's last attention: one sum serves both.
    let k = tape.add(keys, keyPE)
    let t2i = name + ".cross_attn_token_to_image"
    let attended =
      keys.dim(0) == 1 && queries.dim(0) > 1
      ? attention(tape, q: q, k: k, v: keys, t2i)
      : tokenToImage(tape, q: q, keys: k, values: keys, t2i)
    queries = norm(tape, tape.add(queries, attended), name + ".norm2")
    let hidden = tape.activation(linear(tape, queries, name + ".mlp.lin1"), .relu)
    queries = norm(
      tape, tape.add(queries, linear(tape, hidden, name + ".mlp.lin2")), name + ".norm3")
    q = tape.add(queries, queryPE)
    let keys = norm(
      tape,
      imageToToken(
        tape, image: k, tokens: q, values: queries, residual: keys,
        name + ".cross_attn_image_to_token"),
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
  /// `[B, 256, 64, 64]` prompt embeddings (or `[1, …]`, one for every prompt, as the dense
  /// embedding without a mask input is).
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
    // Embedding and dense prompt at batch 1 when both are shared by every prompt.
    let image = tape.add(imageEmbedding, dense)
    let (h, w) = (image.shape[2], image.shape[3])
    let keyPE = tape.permute(Variable(imagePE.reshaped([1, e, h * w])), [0, 2, 1])
    var keys = tape.permute(tape.reshape(image, [image.dim(0), e, h * w]), [0, 2, 1])
    var queries = tokens
    for i in 0..<2 {
      (queries, keys) = block(tape, i, queries: queries, keys: keys, queryPE: tokens, keyPE: keyPE)
    }
    let final = tokenToImage(
      tape, q: tape.add(queries, tokens), keys: tape.add(keys, keyPE), values: keys,
      "transformer.final_attn_token_to_image")
    queries = norm(tape, tape.add(queries, final), "transformer.norm_final_attn")

    // Upscaling, channels-last: pixel order (image pixel, first tap, second tap).
    var up = tape.convTranspose2x2ChannelsLast(
      keys, weight: p("output_upscaling.0.weight"), bias: p("output_upscaling.0.bias"))
    up = tape.layerNorm(
      up, weight: p("output_upscaling.1.weight"), bias: p("output_upscaling.1.bias"),
      eps: Self.eps, then: .geluErf)
    up = tape.convTranspose2x2ChannelsLast(
      up, weight: p("output_upscaling.3.weight"), bias: p("output_upscaling.3.bias"))
    up = tape.activation(up, .geluErf)
    let hyper = tape.concat(
      (0..<tokenCount).map { i in
        mlp(
          tape, tape.slice(queries, axis: 1, range: (1 + i)..<(2 + i)),
          "output_hypernetworks_mlps.\(i)", depth: 3)
      }, axis: 1)
    // [B, 4, pixels] in upscaling order → [B, 4, 4h, 4w]: pixel (y, x, t1, t2) sits at row
    // 4y + 2·dy1 + dy2, column 4x + 2·dx1 + dx2 (t = dy·2 + dx).
    let scrambled = tape.reshape(
      tape.matmul(hyper, up, transposeB: true), [b, tokenCount, h, w, 2, 2, 2, 2])
    let masks = tape.reshape(
      tape.permute(scrambled, [0, 1, 2, 4, 6, 3, 5, 7]), [b, tokenCount, 4 * h, 4 * w])
    let iou = tape.reshape(
      mlp(tape, tape.slice(queries, axis: 1, range: 0..<1), "iou_prediction_head", depth: 3),
      [b, tokenCount])
    let kept = multimask ? 1..<tokenCount : 0..<1
    return (tape.slice(masks, axis: 1, range: kept), tape.slice(iou, axis: 1, range: kept))
  }
}
