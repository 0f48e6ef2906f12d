import EVCheckpoint
import EVTensor

/// SAM's mask decoder written as segment-anything's `mask_decoder.py` and `transformer.py`
/// read, on the plain `Reference` ops: no folds, no per-image basis, no caches, weights in the
/// checkpoint's own layout. It is the oracle every fast decoder schedule is tested against,
/// and the forward pass the trainer differentiates. Slow by design (double-precision loops).
package struct ReferenceMaskDecoder {
  static let heads = 8
  static let eps: Float = 1e-6

  /// `nn.Linear`: weight `[out, in]`, bias `[out]`.
  package struct Linear {
    package let weight: Tensor
    package let bias: Tensor

    init(_ scope: WeightScope, in inFeatures: Int, out outFeatures: Int) {
      weight = scope.take("weight", shape: [outFeatures, inFeatures])
      bias = scope.take("bias", shape: [outFeatures])
    }

    func callAsFunction(_ x: Tensor, _ activation: Activation = .identity) -> Tensor {
      Reference.linear(x, weight: weight, bias: bias, activation: activation)
    }
  }

  /// `nn.LayerNorm` over the last dimension.
  package struct LayerNorm {
    package let weight: Tensor
    package let bias: Tensor

    init(_ scope: WeightScope, dim: Int) {
      weight = scope.take("weight", shape: [dim])
      bias = scope.take("bias", shape: [dim])
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
      Reference.layerNorm(x, weight: weight, bias: bias, eps: ReferenceMaskDecoder.eps)
    }
  }

  /// `Attention`: projections to `embedding / downsample` channels, 8 heads, softmax of
  /// `q·kᵀ / √(head dim)`, output projection back to `embedding`.
  package struct Attention {
    package let q: Linear
    package let k: Linear
    package let v: Linear
    package let out: Linear
    let internalDim: Int

    init(_ scope: WeightScope, embedding: Int, downsample: Int) {
      internalDim = embedding / downsample
      q = Linear(scope["q_proj"], in: embedding, out: internalDim)
      k = Linear(scope["k_proj"], in: embedding, out: internalDim)
      v = Linear(scope["v_proj"], in: embedding, out: internalDim)
      out = Linear(scope["out_proj"], in: internalDim, out: embedding)
    }

    /// `[B, N, C] → [B, heads, N, C / heads]`.
    private func separateHeads(_ x: Tensor) -> Tensor {
      let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
      let h = ReferenceMaskDecoder.heads
      return Reference.permute(x.reshaped([b, n, h, c / h]), [0, 2, 1, 3])
    }

    /// `[B, heads, N, c] → [B, N, heads · c]`.
    private func recombineHeads(_ x: Tensor) -> Tensor {
      let (b, h, n, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
      return Reference.permute(x, [0, 2, 1, 3]).reshaped([b, n, h * c])
    }

    func callAsFunction(q queries: Tensor, k keys: Tensor, v values: Tensor) -> Tensor {
      let qh = separateHeads(q(queries))
      let kh = separateHeads(k(keys))
      let vh = separateHeads(v(values))
      let headDim = qh.dim(-1)
      var scores = Reference.matmul(qh, kh, transposeB: true)
      let scale = Float(headDim).squareRoot()
      for i in scores.storage.indices { scores.storage[i] /= scale }
      let attention = Reference.softmax(scores)
      return out(recombineHeads(Reference.matmul(attention, vh)))
    }
  }

  /// `MLP` of segment-anything: linear layers with ReLU between them (none after the last).
  package struct MLP {
    package let layers: [Linear]

    init(_ scope: WeightScope, input: Int, hidden: Int, output: Int, depth: Int) {
      let dims = [input] + Array(repeating: hidden, count: depth - 1) + [output]
      layers = (0..<depth).map {
        Linear(scope["layers"][$0], in: dims[$0], out: dims[$0 + 1])
      }
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
      var y = x
      for (i, layer) in layers.enumerated() {
        y = layer(y, i < layers.count - 1 ? .relu : .identity)
      }
      return y
    }
  }

  /// `TwoWayAttentionBlock`.
  package struct Block {
    package let selfAttention: Attention
    package let norm1: LayerNorm
    package let tokensToImage: Attention
    package let norm2: LayerNorm
    package let mlpIn: Linear
    package let mlpOut: Linear
    package let norm3: LayerNorm
    package let norm4: LayerNorm
    package let imageToTokens: Attention
    let skipFirstLayerPE: Bool

    init(_ scope: WeightScope, embedding e: Int, mlpDim: Int, skipFirstLayerPE: Bool) {
      selfAttention = Attention(scope["self_attn"], embedding: e, downsample: 1)
      norm1 = LayerNorm(scope["norm1"], dim: e)
      tokensToImage = Attention(
        scope["cross_attn_token_to_image"], embedding: e, downsample: TwoWayTransformer.downsample)
      norm2 = LayerNorm(scope["norm2"], dim: e)
      mlpIn = Linear(scope["mlp"]["lin1"], in: e, out: mlpDim)
      mlpOut = Linear(scope["mlp"]["lin2"], in: mlpDim, out: e)
      norm3 = LayerNorm(scope["norm3"], dim: e)
      norm4 = LayerNorm(scope["norm4"], dim: e)
      imageToTokens = Attention(
        scope["cross_attn_image_to_token"], embedding: e, downsample: TwoWayTransformer.downsample)
      self.skipFirstLayerPE = skipFirstLayerPE
    }

    func callAsFunction(queries: Tensor, keys: Tensor, queryPE: Tensor, keyPE: Tensor) -> (
      queries: Tensor, keys: Tensor
    ) {
      var queries = queries
      var keys = keys
      if skipFirstLayerPE {
        queries = selfAttention(q: queries, k: queries, v: queries)
      } else {
        let q = Reference.add(queries, queryPE)
        queries = Reference.add(queries, selfAttention(q: q, k: q, v: queries))
      }
      queries = norm1(queries)

      var q = Reference.add(queries, queryPE)
      var k = Reference.add(keys, keyPE)
      queries = norm2(Reference.add(queries, tokensToImage(q: q, k: k, v: keys)))

      queries = norm3(Reference.add(queries, mlpOut(mlpIn(queries, .relu))))

      q = Reference.add(queries, queryPE)
      k = Reference.add(keys, keyPE)
      keys = norm4(Reference.add(keys, imageToTokens(q: k, k: q, v: queries)))
      return (queries, keys)
    }
  }

  package let layers: [Block]
  package let finalAttention: Attention
  package let finalNorm: LayerNorm
  /// Row 0 the IoU token, rows 1…4 the mask tokens.
  package let iouToken: Tensor
  package let maskTokens: Tensor
  package let upscale1Weight: Tensor
  package let upscale1Bias: Tensor
  package let upscaleNorm: (weight: Tensor, bias: Tensor)
  package let upscale2Weight: Tensor
  package let upscale2Bias: Tensor
  package let hypernetworks: [MLP]
  package let iouHead: MLP

  /// Reads every `mask_decoder.*` key, as `MaskDecoder` does.
  package init(_ scope: WeightScope) {
    let e = MaskDecoder.embedding
    let (c1, c2) = (MaskDecoder.upscaledChannels[0], MaskDecoder.upscaledChannels[1])
    let t = scope["transformer"]
    layers = (0..<TwoWayTransformer.depth).map {
      Block(
        t["layers"][$0], embedding: e, mlpDim: TwoWayTransformer.mlpDim,
        skipFirstLayerPE: $0 == 0)
    }
    finalAttention = Attention(
      t["final_attn_token_to_image"], embedding: e, downsample: TwoWayTransformer.downsample)
    finalNorm = LayerNorm(t["norm_final_attn"], dim: e)
    iouToken = scope["iou_token"].take("weight", shape: [1, e])
    maskTokens = scope["mask_tokens"].take("weight", shape: [MaskDecoder.maskTokenCount, e])
    let up = scope["output_upscaling"]
    upscale1Weight = up[0].take("weight", shape: [e, c1, 2, 2])
    upscale1Bias = up[0].take("bias", shape: [c1])
    upscaleNorm = (up[1].take("weight", shape: [c1]), up[1].take("bias", shape: [c1]))
    upscale2Weight = up[3].take("weight", shape: [c1, c2, 2, 2])
    upscale2Bias = up[3].take("bias", shape: [c2])
    hypernetworks = (0..<MaskDecoder.maskTokenCount).map {
      MLP(scope["output_hypernetworks_mlps"][$0], input: e, hidden: e, output: c2, depth: 3)
    }
    iouHead = MLP(
      scope["iou_prediction_head"], input: e, hidden: 256, output: MaskDecoder.maskTokenCount,
      depth: 3)
  }

  /// `TwoWayTransformer.forward`: image `[B, C, H, W]` and its positional encoding, prompt
  /// tokens `[B, N, C]` → (tokens `[B, N, C]`, image tokens `[B, H·W, C]`).
  package func transformer(image: Tensor, imagePE: Tensor, tokens: Tensor) -> (
    queries: Tensor, keys: Tensor
  ) {
    let (b, c, h, w) = (image.shape[0], image.shape[1], image.shape[2], image.shape[3])
    let keysIn = Reference.permute(image.reshaped([b, c, h * w]), [0, 2, 1])
    let keyPE = Reference.permute(imagePE.reshaped([b, c, h * w]), [0, 2, 1])
    var queries = tokens
    var keys = keysIn
    for layer in layers {
      (queries, keys) = layer(queries: queries, keys: keys, queryPE: tokens, keyPE: keyPE)
    }
    let q = Reference.add(queries, tokens)
    let k = Reference.add(keys, keyPE)
    queries = finalNorm(Reference.add(queries, finalAttention(q: q, k: k, v: keys)))
    return (queries, keys)
  }

  /// `MaskDecoder.forward`: low-res mask logits `[B, C, 256, 256]` and IoU predictions
  /// `[B, C]`, C = 3 with `multimask` (tokens 1…3), else 1 (token 0).
  ///
  /// - Parameters:
  ///   - imageEmbedding: `[1, 256, 64, 64]`, shared by the batch.
  ///   - imagePE: `[1, 256, 64, 64]`, the prompt encoder's dense positional encoding.
  ///   - sparse: `[B, N, 256]` prompt tokens.
  ///   - dense: `[B, 256, 64, 64]` dense prompt embeddings (the mask input or no-mask embedding).
  package func callAsFunction(
    imageEmbedding: Tensor, imagePE: Tensor, sparse: Tensor, dense: Tensor, multimask: Bool
  ) -> (masks: Tensor, iouPredictions: Tensor) {
    let b = sparse.shape[0]
    let e = MaskDecoder.embedding
    let outputTokens = Reference.concat([iouToken, maskTokens], axis: 0)
    let outputBatch = Reference.concat(
      Array(repeating: outputTokens.reshaped([1, 1 + MaskDecoder.maskTokenCount, e]), count: b),
      axis: 0)
    let tokens = Reference.concat([outputBatch, sparse], axis: 1)
    let image = Reference.add(
      Reference.concat(Array(repeating: imageEmbedding, count: b), axis: 0), dense)
    let pe = Reference.concat(Array(repeating: imagePE, count: b), axis: 0)
    let (hs, keys) = transformer(image: image, imagePE: pe, tokens: tokens)

    let (h, w) = (imageEmbedding.shape[2], imageEmbedding.shape[3])
    let src = Reference.permute(keys, [0, 2, 1]).reshaped([b, e, h, w])
    var up = Reference.convTranspose2x2(src, weight: upscale1Weight, bias: upscale1Bias)
    up = Reference.layerNorm2d(
      up, weight: upscaleNorm.weight, bias: upscaleNorm.bias, eps: Self.eps)
    up = Reference.activate(up, .geluErf)
    up = Reference.convTranspose2x2(up, weight: upscale2Weight, bias: upscale2Bias)
    up = Reference.activate(up, .geluErf)

    let tokenCount = MaskDecoder.maskTokenCount
    let (c2, uh, uw) = (up.shape[1], up.shape[2], up.shape[3])
    let hyper = Reference.concat(
      (0..<tokenCount).map { i in
        hypernetworks[i](Reference.slice(hs, axis: 1, range: (1 + i)..<(2 + i)))
      }, axis: 1)  // [B, 4, 32]
    let masks = Reference.matmul(hyper, up.reshaped([b, c2, uh * uw])).reshaped([
      b, tokenCount, uh, uw,
    ])
    let iou = iouHead(Reference.slice(hs, axis: 1, range: 0..<1)).reshaped([b, tokenCount])
    let kept = multimask ? 1..<tokenCount : 0..<1
    return (
      Reference.slice(masks, axis: 1, range: kept), Reference.slice(iou, axis: 1, range: kept)
    )
  }
}
