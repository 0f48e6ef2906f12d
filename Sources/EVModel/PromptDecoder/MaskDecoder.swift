import EVCheckpoint
import EVTensor

/// SAM's mask decoder (checkpoint keys `mask_decoder.*`): a two-way transformer between the
/// prompt tokens and the 64×64 image embedding, then transposed-convolution upscaling and
/// per-mask hypernetworks that produce 256×256 mask logits, plus an IoU prediction head.
///
/// Decoding is split in two: `prepare` does the per-image work once (layout changes, positional
/// encoding, the first block's prompt-independent projections, and the per-image parts of the
/// later attentions and of the first upscaling convolution, see `SecondBlockBasis` and
/// `UpscaleFold`), `decode` runs any number of prompts against it. The image embedding is shared by all prompts, never copied per prompt.
public struct MaskDecoder: Sendable {
  public static let multimaskOutputs = 3
  static let maskTokenCount = multimaskOutputs + 1
  static let embedding = 256
  static let side = PromptEncoder.embeddingSide
  static let imageTokens = side * side
  static let upscaledChannels = [embedding / 4, embedding / 8]
  static let maskSide = 4 * side

  let transformer: TwoWayTransformer
  /// Row 0: the IoU token; rows 1…4: the mask tokens.
  let outputTokens: DecoderBuffer
  /// First ConvTranspose2d as a 256 × (4·64) matrix, columns ordered (sub-pixel, channel).
  let upscale1: DecoderBuffer
  let upscale1Bias: DecoderBuffer
  let upscaleNormWeight: DecoderBuffer
  let upscaleNormBias: DecoderBuffer
  /// Second ConvTranspose2d as a 64 × (4·32) matrix, columns ordered (sub-pixel, channel).
  let upscale2: DecoderBuffer
  /// The two convolutions' matrices packed for `SmallGEMM`.
  let upscale1Packed: PackedMatrix
  let upscale2Packed: PackedMatrix
  let upscale2Bias: DecoderBuffer
  let hypernetworks: [DecoderMLP]
  let iouHead: DecoderMLP
  /// The first upscaling convolution folded through the transformer (see `UpscaleFold`).
  let upscaleFold: UpscaleFold
  /// What the per-image basis path does with a prompt's values, per model (`ValueMaps`); nil
  /// for transformers the basis does not apply to.
  let valueMaps: ValueMaps?
  /// Scratch memory reused from call to call (one workspace per concurrent `decode`).
  let workspaces = DecoderWorkspacePool()
  /// Prompts with at most this many tokens (5 output tokens + points + box corners) fold the
  /// image-side attention projections into the token side; see `DecoderAttention`. 0 never
  /// folds (the official operation order), which tests use to check both paths.
  package let foldedTokenLimit: Int

  /// Declares (and reads) every `mask_decoder.*` key, in the official order.
  public init(_ scope: WeightScope) { self.init(scope, foldedTokenLimit: 16) }

  /// `foldedTokenLimit` 0 runs the official operation order for every prompt (tests).
  package init(_ scope: WeightScope, foldedTokenLimit: Int) {
    let e = Self.embedding
    let (c1, c2) = (Self.upscaledChannels[0], Self.upscaledChannels[1])
    self.foldedTokenLimit = foldedTokenLimit
    transformer = TwoWayTransformer(scope["transformer"], embedding: e)
    let iou = scope["iou_token"].take("weight", shape: [1, e])
    let masks = scope["mask_tokens"].take("weight", shape: [Self.maskTokenCount, e])
    outputTokens = DecoderBuffer(iou.storage + masks.storage)

    let up = scope["output_upscaling"]
    // Sequential indices 2 and 4 are the parameter-free GELUs.
    let w1 = up[0].take("weight", shape: [e, c1, 2, 2])
    let b1 = up[0].take("bias", shape: [c1])
    upscaleNormWeight = DecoderBuffer(up[1].take("weight", shape: [c1]))
    upscaleNormBias = DecoderBuffer(up[1].take("bias", shape: [c1]))
    let w2 = up[3].take("weight", shape: [c1, c2, 2, 2])
    let b2 = up[3].take("bias", shape: [c2])
    upscale1 = DecoderBuffer(Self.subpixelMajor(w1.storage, inputs: e, outputs: c1))
    upscale1Bias = DecoderBuffer(b1)
    upscale2 = DecoderBuffer(Self.subpixelMajor(w2.storage, inputs: c1, outputs: c2))
    upscale2Bias = DecoderBuffer(Array((0..<4).map { _ in b2.storage }.joined()))
    upscale1Packed = PackedMatrix(upscale1.base, rows: e, columns: 4 * c1, ld: 4 * c1)
    upscale2Packed = PackedMatrix(upscale2.base, rows: c1, columns: 4 * c2, ld: 4 * c2)

    upscaleFold = UpscaleFold(
      transformer: transformer, weight: upscale1,
      bias: Array((0..<4).map { _ in b1.storage }.joined()), columns: 4 * c1)
    // A model that only declares its keys (before a checkpoint is decoded) never runs.
    valueMaps =
      SecondBlockBasis.applies(to: transformer) && !scope.reader.isDeclaringOnly
      ? ValueMaps(transformer: transformer, upscaleFold: upscaleFold) : nil
    hypernetworks = (0..<Self.maskTokenCount).map {
      DecoderMLP(scope["output_hypernetworks_mlps"][$0], input: e, hidden: e, output: c2, depth: 3)
    }
    iouHead = DecoderMLP(
      scope["iou_prediction_head"], input: e, hidden: 256, output: Self.maskTokenCount, depth: 3)
  }

  /// ConvTranspose2d weight [in, out, 2, 2] → [in, (dy·2 + dx)·out + o].
  private static func subpixelMajor(_ w: [Float], inputs: Int, outputs: Int) -> [Float] {
    var r = [Float](repeating: 0, count: w.count)
    for i in 0..<inputs {
      for o in 0..<outputs {
        for s in 0..<4 { r[i * 4 * outputs + s * outputs + o] = w[(i * outputs + o) * 4 + s] }
      }
    }
    return r
  }

  /// Per-image state for `decode`.
  ///
  /// - Parameters:
  ///   - imageEmbedding: 1×256×64×64, the image encoder's output.
  ///   - imagePE: 1×256×64×64, the prompt encoder's `getDensePE()`.
  ///   - noMaskEmbedding: the prompt encoder's `noMaskEmbedding`. When given, the image-side
  ///     work that prompts without a mask input share (the first block's projections, the
  ///     per-image basis of the later attentions, the upscaling fold's base: 30 MiB) is
  ///     done here, once, instead of for every prompt.
  package func prepare(imageEmbedding: Tensor, imagePE: Tensor, noMaskEmbedding: Tensor?)
    -> DecoderImage
  {
    let e = Self.embedding
    let n = Self.imageTokens
    let shape = [1, e, Self.side, Self.side]
    precondition(
      imageEmbedding.shape == shape,
      "MaskDecoder: image embedding must be \(shape), got \(imageEmbedding.shape)")
    precondition(
      imagePE.shape == shape,
      "MaskDecoder: positional encoding must be \(shape), got \(imagePE.shape)")
    let tokens = Self.tokenMajor(imageEmbedding)
    let pe = Self.tokenMajor(imagePE)
    guard let noMaskEmbedding else {
      return DecoderImage(embedding: tokens, positional: pe, shared: nil)
    }
    precondition(noMaskEmbedding.count == e, "MaskDecoder: no-mask embedding must have \(e) values")
    let keys = DecoderBuffer(count: n * e)
    let keysPE = DecoderBuffer(count: n * e)
    Self.addChannels(tokens.base, noMaskEmbedding, into: keys.base)
    RowOps.add(keys.base, pe.base, into: keysPE.base, count: n * e)
    let first = transformer.layers[0]
    // The first block's projections of the image tokens, head-interleaved for `sliced`.
    func projected(_ linear: DecoderLinear, _ x: DecoderBuffer, _ a: DecoderAttention)
      -> DecoderBuffer
    {
      withExtendedLifetime(x) {
        a.interleavedProjection(x.base, rows: n, through: linear, bias: true)
      }
    }
    let t2i = first.tokensToImage
    let i2t = first.imageToTokens
    let k = projected(t2i.k, keysPE, t2i)
    let v = projected(t2i.v, keys, t2i)
    let q = projected(i2t.q, keysPE, i2t)
    let width = 4 * Self.upscaledChannels[0]
    let upscaleBase = DecoderBuffer(count: n * width)
    DecoderMath.gemm(
      n, width, e, keys.base, e, upscaleFold.maps[0].base, width, upscaleBase.base, width)
    let secondBlock =
      SecondBlockBasis.applies(to: transformer)
      ? SecondBlockBasis(
        transformer: transformer, keys: keys.base, positional: pe.base, imageTokens: n) : nil
    return DecoderImage(
      embedding: tokens, positional: pe,
      shared: .init(
        noMask: noMaskEmbedding.storage, keys: keys, k: k, v: v, q: q,
        upscaleBase: upscaleBase, secondBlock: secondBlock))
  }

  /// 1×C×H×W → (H·W)×C.
  private static func tokenMajor(_ t: Tensor) -> DecoderBuffer {
    let (c, n) = (t.shape[1], t.shape[2] * t.shape[3])
    let b = DecoderBuffer(count: n * c)
    t.withUnsafeBufferPointer { transpose($0.baseAddress!, channels: c, tokens: n, into: b.base) }
    return b
  }

  /// `out[p·C + c] = src[c·N + p] (+ base[p·C + c])`: channel-major to token-major, in 32×32
  /// tiles so that both the reads and the strided writes stay in cache.
  static func transpose(
    _ src: UnsafePointer<Float>, channels c: Int, tokens n: Int,
    adding base: UnsafePointer<Float>? = nil, into out: UnsafeMutablePointer<Float>
  ) {
    let tile = 32
    for c0 in stride(from: 0, to: c, by: tile) {
      for p0 in stride(from: 0, to: n, by: tile) {
        for ch in c0..<min(c0 + tile, c) {
          for p in p0..<min(p0 + tile, n) {
            out[p * c + ch] = src[ch * n + p] + (base?[p * c + ch] ?? 0)
          }
        }
      }
    }
  }

  /// `out[p·E + c] = tokens[p·E + c] + v[c]` for every image token p.
  static func addChannels(
    _ tokens: UnsafePointer<Float>, _ v: Tensor, into out: UnsafeMutablePointer<Float>
  ) {
    let e = v.count
    v.withUnsafeBufferPointer { pv in
      for p in 0..<imageTokens {
        for c in 0..<e { out[p * e + c] = tokens[p * e + c] + pv[c] }
      }
    }
  }

  /// Decodes a batch of B prompts (all with the same number of sparse tokens) against one image.
  /// With `multimask` the three multimask outputs (tokens 1…3) are returned, else token 0.
  ///
  /// The prompts run one after another through scratch buffers allocated once per call, with
  /// the image-side tensors shared; calls are independent and may run concurrently.
  ///
  /// - Parameter skipMasksAtOrBelowIoU: when given, a prompt whose returned outputs all have a
  ///   predicted IoU at or below it (or NaN) gets no masks: its output upscaling, about half of
  ///   the per-prompt work, is skipped and its logits are -∞. Everything mode discards such
  ///   masks anyway (`pred_iou_thresh` keeps IoU > threshold), so it decodes far less.
  package func decode(
    _ image: DecoderImage, prompts: PromptEmbeddings, multimask: Bool,
    skipMasksAtOrBelowIoU: Float? = nil
  ) -> MaskDecoderOutput {
    let e = Self.embedding
    let n = Self.imageTokens
    let sparse = prompts.sparse
    precondition(
      sparse.rank == 3 && sparse.shape[2] == e,
      "MaskDecoder: sparse embeddings must be B×N×\(e), got \(sparse.shape)")
    let batch = sparse.shape[0]
    let t = Self.maskTokenCount + 1 + sparse.shape[1]
    let selected = multimask ? Array(1...Self.multimaskOutputs) : [0]
    let outputs = selected.count
    // Only the IoU token and the selected mask tokens are read after the transformer.
    let finalRows = [0] + selected.map { 1 + $0 }
    let plane = Self.maskSide * Self.maskSide
    if case .masks(let m) = prompts.dense {
      precondition(
        m.shape == [batch, e, Self.side, Self.side],
        "MaskDecoder: dense embeddings must be \([batch, e, Self.side, Self.side]), got \(m.shape)")
    }
    let workspace = workspaces.take()
    defer { workspaces.give(workspace) }
    let sliced = transformer.canRunSliced(tokens: t, foldLimit: foldedTokenLimit)
    var iou = [Float](repeating: 0, count: batch * outputs)
    let masks = Tensor(uninitializedShape: [batch, outputs, Self.maskSide, Self.maskSide]) { out in
      let queries = DecoderBuffer(count: t * e)
      let tokenPE = DecoderBuffer(count: t * e)
      let hyper = DecoderBuffer(count: outputs * Self.upscaledChannels[1])
      let iouAll = DecoderBuffer(count: Self.maskTokenCount)
      for b in 0..<batch {
        // Tokens: IoU token, mask tokens, then this prompt's sparse embeddings.
        tokenPE.base.update(from: outputTokens.base, count: Self.maskTokenCount * e + e)
        sparse.withUnsafeBufferPointer { s in
          let rows = sparse.shape[1]
          (tokenPE.base + (Self.maskTokenCount + 1) * e).update(
            from: s.baseAddress! + b * rows * e, count: rows * e)
        }
        queries.base.update(from: tokenPE.base, count: t * e)

        let cached = cachedImage(image, dense: prompts.dense)
        // Where the upscaling will read the transformer's output from (the folded form's
        // mixing matrix is only made once the prompt's masks are known to be wanted).
        enum Source {
          case keys(UnsafePointer<Float>)
          case folded(base: UnsafePointer<Float>, trace: FoldTrace)
        }
        let source: Source
        if sliced {
          let (keys, keysPE) =
            cached.map { (UnsafePointer($0.keys.base), nil) }
            ?? promptKeys(image, dense: prompts.dense, prompt: b, workspace: workspace)
          let (trace, keysOut) = transformer.sliced(
            queries: queries.base, tokenPE: tokenPE.base, count: t, keys: keys, keysPE: keysPE,
            cached: cached, imagePE: image.positional.base, imageTokens: n,
            workspace: workspace, finalRows: finalRows, maps: valueMaps)
          source = cached.map { .folded(base: $0.upscaleBase.base, trace: trace) } ?? .keys(keysOut)
        } else {
          let (keys, keysPE) =
            cached.map { c in
              let keysPE = workspace.keysPE(count: n * e)
              RowOps.add(c.keys.base, image.positional.base, into: keysPE, count: n * e)
              return (UnsafePointer(c.keys.base), UnsafePointer(keysPE))
            } ?? promptKeys(image, dense: prompts.dense, prompt: b, workspace: workspace)
          source = .keys(
            transformer(
              queries: queries.base, tokenPE: tokenPE.base, count: t, keys: keys,
              keysPE: keysPE!, imagePE: image.positional.base, imageTokens: n,
              workspace: workspace, finalRows: finalRows))
        }

        iouHead.apply(queries.base, ldx: e, rows: 1, into: iouAll.base)
        for (j, m) in selected.enumerated() { iou[b * outputs + j] = iouAll.base[m] }
        if let cut = skipMasksAtOrBelowIoU,
          (0..<outputs).allSatisfy({ !(iou[b * outputs + $0] > cut) })
        {
          (out.baseAddress! + b * outputs * plane).update(
            repeating: -.infinity, count: outputs * plane)
          continue
        }
        for (j, m) in selected.enumerated() {
          hypernetworks[m].apply(
            queries.base + (1 + m) * e, ldx: e, rows: 1,
            into: hyper.base + j * Self.upscaledChannels[1])
        }
        let upscaling: UpscaleSource
        switch source {
        case .keys(let keys): upscaling = .keys(keys)
        case .folded(let base, let trace):
          upscaling = .folded(
            base: base, trace: trace, mixing: foldMixing(trace, workspace: workspace))
        }
        upscaleMasks(
          upscaling, hyper: hyper.base, count: outputs,
          into: out.baseAddress! + b * outputs * plane)
      }
    }
    return MaskDecoderOutput(
      masks: masks, iouPredictions: Tensor(shape: [batch, outputs], storage: iou))
  }

  /// The official call: embeddings in, masks and IoU predictions out, nothing cached.
  public func callAsFunction(
    imageEmbeddings: Tensor, imagePE: Tensor, sparsePromptEmbeddings: Tensor,
    densePromptEmbeddings: DenseEmbedding, multimaskOutput: Bool
  ) -> MaskDecoderOutput {
    let image = prepare(imageEmbedding: imageEmbeddings, imagePE: imagePE, noMaskEmbedding: nil)
    return decode(
      image,
      prompts: PromptEmbeddings(sparse: sparsePromptEmbeddings, dense: densePromptEmbeddings),
      multimask: multimaskOutput)
  }

  /// The per-image cache, when this batch's prompts have no mask input and it was prepared
  /// for the same no-mask embedding.
  private func cachedImage(_ image: DecoderImage, dense: DenseEmbedding) -> DecoderImage.Shared? {
    if case .noMask(let v) = dense, let shared = image.shared, shared.noMask == v.storage {
      return shared
    }
    return nil
  }

  /// Prompt `b`'s image side built here: embedding + dense embedding, and + positional
  /// encoding (in the workspace's `keysPE` buffer).
  private func promptKeys(
    _ image: DecoderImage, dense: DenseEmbedding, prompt b: Int, workspace: DecoderWorkspace
  ) -> (UnsafePointer<Float>, UnsafePointer<Float>?) {
    let e = Self.embedding
    let n = Self.imageTokens
    let keys = workspace.buffer("promptKeys", count: n * e)
    let keysPE = workspace.keysPE(count: n * e)
    let emb = image.embedding.base
    switch dense {
    case .noMask(let v):
      precondition(v.count == e, "MaskDecoder: no-mask embedding must have \(e) values")
      Self.addChannels(emb, v, into: keys)
    case .masks(let m):
      m.withUnsafeBufferPointer { pm in
        Self.transpose(pm.baseAddress! + b * e * n, channels: e, tokens: n, adding: emb, into: keys)
      }
    }
    RowOps.add(keys, image.positional.base, into: keysPE, count: n * e)
    return (UnsafePointer(keys), UnsafePointer(keysPE))
  }
}

/// The per-image half of mask decoding; see `MaskDecoder.prepare`.
package struct DecoderImage: Sendable {
  struct Shared: Sendable {
    let noMask: [Float]
    /// Embedding + no-mask embedding, N×256.
    let keys: DecoderBuffer
    /// The first block's `Wk(keys + pe)`, `Wv(keys)` (token→image) and `Wq(keys + pe)`
    /// (image→token), N×128 each, heads interleaved (column c·8 + h).
    let k: DecoderBuffer
    let v: DecoderBuffer
    let q: DecoderBuffer
    /// `keys·W_0` of `UpscaleFold`, N×256.
    let upscaleBase: DecoderBuffer
    /// The second block's image projections, folded (`SecondBlockBasis`).
    let secondBlock: SecondBlockBasis?
  }

  /// The image embedding, token-major (4096×256).
  let embedding: DecoderBuffer
  /// The dense positional encoding, token-major (4096×256).
  let positional: DecoderBuffer
  let shared: Shared?

  /// Whether prompts without a mask input reuse projections computed once per image.
  package var cachesNoMaskProjections: Bool { shared != nil }
}

public struct MaskDecoderOutput: Sendable {
  /// B×C×256×256 mask logits (C = 3 with multimask output, else 1).
  public var masks: Tensor
  /// B×C predicted IoU of each mask.
  public var iouPredictions: Tensor
}
