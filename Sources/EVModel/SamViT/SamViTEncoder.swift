import EVCheckpoint
import EVTensor

/// segment-anything's `ImageEncoderViT`: 16-px patches, absolute positions, `depth` transformer
/// blocks (windowed or global attention) and the neck (1×1 conv, LayerNorm2d, 3×3 conv,
/// LayerNorm2d, no biases). Takes the preprocessed, padded image `N×3×1024×1024` and returns
/// the `N×256×64×64` embedding SAM's mask decoder attends to.
/// Keys: `patch_embed.proj.*`, `pos_embed`, `blocks.<i>.*`, `neck.{0,1,2,3}.*`.
///
/// Tokens stay channels-last (`[64·64, C]` per image) through the blocks, as the official
/// code keeps them, so every projection is one matrix product over all tokens.
public struct SamViTEncoder: Sendable {
  public let config: SamViTConfig
  /// The patch embedding's kernel as a matrix, `C × (in_chans·p·p)`.
  public let patchWeight: Tensor
  public let patchBias: Tensor
  /// `[side, side, C]`, or nil without absolute positions.
  public let positions: Tensor?
  public let blocks: [ViTBlock]
  public let neckProjection: Tensor
  public let neckNorm1: LayerNorm
  public let neckConv: Tensor
  public let neckNorm2: LayerNorm2d

  public init(config: SamViTConfig, _ scope: WeightScope) {
    self.config = config
    let (dim, p, side) = (config.embedDim, config.patchSize, config.gridSide)
    let out = config.outChannels
    patchWeight = scope["patch_embed"]["proj"].take(
      "weight", shape: [dim, config.inChannels, p, p]
    ).reshaped([dim, config.inChannels * p * p])
    patchBias = scope["patch_embed"]["proj"].take("bias", shape: [dim])
    positions =
      config.useAbsolutePositions
      ? scope.take("pos_embed", shape: [1, side, side, dim]).reshaped([side, side, dim]) : nil
    blocks = (0..<config.depth).map { ViTBlock(scope["blocks"][$0], config: config, index: $0) }
    let neck = scope["neck"]
    neckProjection = neck[0].take("weight", shape: [out, dim, 1, 1]).reshaped([out, dim])
    neckNorm1 = LayerNorm(neck[1], features: out)
    neckConv = neck[2].take("weight", shape: [out, out, 3, 3])
    neckNorm2 = LayerNorm2d(neck[3], channels: out)
  }

  public func callAsFunction(_ x: Tensor) -> Tensor {
    let images = (0..<checkInput(x)).map { encode(x, image: $0, record: nil) }
    return images.count == 1 ? images[0] : concatenateBatch(images)
  }

  /// Every tensor the golden files hold, for the first image: `patch_embed` and `block.<i>`
  /// (`1×side×side×C`, channels last), `embedding`.
  public func forwardWithIntermediates(_ x: Tensor) -> [String: Tensor] {
    _ = checkInput(x)
    var result: [String: Tensor] = [:]
    let embedding = encode(x, image: 0) { result[$0] = $1 }
    result["embedding"] = embedding
    return result
  }

  private func encode(_ x: Tensor, image: Int, record: ((String, Tensor) -> Void)?) -> Tensor {
    let side = config.gridSide
    let dim = config.embedDim
    var tokens = embedPatches(x, image: image, record: record)
    for (i, block) in blocks.enumerated() {
      tokens = block(tokens, side: side)
      record?("block.\(i)", tokens.reshaped([1, side, side, dim]))
    }
    return neck(tokens)
  }

  /// Image `image` of the batch as tokens `[side², C]`: the patch embedding (a strided
  /// convolution, here one matrix product) plus the absolute positions.
  package func embedPatches(
    _ x: Tensor, image: Int, record: ((String, Tensor) -> Void)? = nil
  ) -> Tensor {
    let side = config.gridSide
    let dim = config.embedDim
    var tokens = linear(patches(x, image: image), weight: patchWeight, bias: patchBias)
    record?("patch_embed", tokens.reshaped([1, side, side, dim]))
    if let positions { addInPlace(&tokens, positions.reshaped([side * side, dim])) }
    return tokens
  }

  /// The neck on the last block's tokens: the `1×256×side×side` embedding.
  package func neck(_ tokens: Tensor) -> Tensor {
    let projected = neckNorm1(linear(tokens, weight: neckProjection, bias: nil))
    let map = channelsFirst(projected, side: config.gridSide)
    return neckNorm2(conv2d(map, weight: neckConv, bias: nil, padding: 1))
  }

  /// The image's 16×16 patches as rows of `in_chans·p·p` values in the kernel's (c, ky, kx)
  /// order, so the strided convolution is one matrix product.
  private func patches(_ x: Tensor, image: Int) -> Tensor {
    let (p, side, c) = (config.patchSize, config.gridSide, config.inChannels)
    let size = config.imageSize
    let width = c * p * p
    return Tensor(uninitializedShape: [side * side, width]) { out in
      x.withUnsafeBufferPointer { src in
        let s = src.baseAddress! + image * c * size * size
        let o = out.baseAddress!
        Parallel.forEach(count: side, costPerItem: side * width) { py in
          for px in 0..<side {
            let row = o + (py * side + px) * width
            for ch in 0..<c {
              for ky in 0..<p {
                let from = s + (ch * size + py * p + ky) * size + px * p
                (row + (ch * p + ky) * p).update(from: from, count: p)
              }
            }
          }
        }
      }
    }
  }

  /// `[side², C]` tokens as a `1×C×side×side` map.
  private func channelsFirst(_ t: Tensor, side: Int) -> Tensor {
    let c = t.dim(1)
    let n = side * side
    return Tensor(uninitializedShape: [1, c, side, side]) { out in
      t.withUnsafeBufferPointer { src in
        for i in 0..<n {
          for ch in 0..<c { out[ch * n + i] = src[i * c + ch] }
        }
      }
    }
  }

  private func concatenateBatch(_ images: [Tensor]) -> Tensor {
    let shape = images[0].shape
    let per = images[0].count
    return Tensor(uninitializedShape: [images.count] + shape.dropFirst()) { out in
      for (i, t) in images.enumerated() {
        t.withUnsafeBufferPointer {
          (out.baseAddress! + i * per).update(from: $0.baseAddress!, count: per)
        }
      }
    }
  }

  /// The batch size, after checking the input's shape.
  private func checkInput(_ x: Tensor) -> Int {
    let s = config.imageSize
    precondition(
      x.rank == 4 && x.dim(1) == config.inChannels && x.dim(2) == s && x.dim(3) == s,
      "the SAM ViT encoder takes N×\(config.inChannels)×\(s)×\(s) images, got \(x.shape)")
    return x.dim(0)
  }

  /// Multiply-accumulates of one encoder pass (batch 1): the patch embedding, every block
  /// (projections, attention including the relative terms, MLP) and the neck's two
  /// convolutions. LayerNorms, GELU, softmax and residual adds are not counted.
  public var multiplyAccumulates: Int {
    multiplyAccumulatesByPart().reduce(0) { $0 + $1.macs }
  }

  /// `multiplyAccumulates` split into `patch_embed`, `blocks.window`, `blocks.global` and `neck`.
  public func multiplyAccumulatesByPart() -> [(part: String, macs: Int)] {
    let side = config.gridSide
    let tokens = side * side
    let out = config.outChannels
    var window = 0
    var global = 0
    for block in blocks {
      if block.windowSize == nil {
        global += block.multiplyAccumulates(side: side)
      } else {
        window += block.multiplyAccumulates(side: side)
      }
    }
    return [
      ("patch_embed", tokens * patchWeight.count),
      ("blocks.window", window),
      ("blocks.global", global),
      ("neck", tokens * out * config.embedDim + tokens * out * out * 9),
    ]
  }
}
