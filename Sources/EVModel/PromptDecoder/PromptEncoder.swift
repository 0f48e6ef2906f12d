import EVCheckpoint
import EVTensor
import Foundation

/// SAM's prompt encoder (checkpoint keys `prompt_encoder.*`): points, boxes and low-resolution
/// masks become the decoder's sparse tokens and dense embedding.
///
/// Coordinates are in the 1024-pixel prompt frame (the official `input_image_size`), whatever
/// resolution the image encoder runs at; the predictor maps original-image pixels into it.
public struct PromptEncoder: Sendable {
  public static let embedDim = 256
  /// Side of the image embedding grid (64×64 tokens).
  public static let embeddingSide = 64
  /// Side of the square prompt frame that point and box coordinates refer to.
  public static let promptFrameSide = 1024
  /// Side of the low-resolution mask input (and of the decoder's mask logits).
  public static let maskInputSide = 256
  static let maskChannels = 16
  static let frequencies = embedDim / 2
  static let eps: Float = 1e-6

  /// `positional_encoding_gaussian_matrix`, 2×128: random Fourier frequencies for x and y.
  let gaussian: [Float]
  /// Label 0 (background), 1 (foreground), 2 and 3 (box corners), each 256 values.
  let pointEmbeddings: [[Float]]
  let notAPointEmbedding: [Float]
  /// Added to the image embedding when no mask is given, 256 values.
  public let noMaskEmbedding: Tensor
  let maskConv1: (weight: Tensor, bias: Tensor)
  let maskNorm1: (weight: Tensor, bias: Tensor)
  let maskConv2: (weight: Tensor, bias: Tensor)
  let maskNorm2: (weight: Tensor, bias: Tensor)
  let maskConv3: (weight: Tensor, bias: Tensor)
  /// `get_dense_pe()`: the encoding of every embedding-grid cell centre, 1×256×64×64.
  public let densePE: Tensor

  /// Declares (and reads) every `prompt_encoder.*` key, in the official order.
  public init(_ scope: WeightScope) {
    let c = Self.embedDim
    let m = Self.maskChannels
    gaussian =
      scope["pe_layer"].take(
        "positional_encoding_gaussian_matrix", shape: [2, Self.frequencies], buffer: true
      ).storage
    pointEmbeddings = (0..<4).map {
      scope["point_embeddings"][$0].take("weight", shape: [1, c]).storage
    }
    notAPointEmbedding = scope["not_a_point_embed"].take("weight", shape: [1, c]).storage
    let down = scope["mask_downscaling"]
    // Sequential indices 2 and 5 are the parameter-free GELUs.
    maskConv1 = (
      down[0].take("weight", shape: [m / 4, 1, 2, 2]), down[0].take("bias", shape: [m / 4])
    )
    maskNorm1 = (down[1].take("weight", shape: [m / 4]), down[1].take("bias", shape: [m / 4]))
    maskConv2 = (
      down[3].take("weight", shape: [m, m / 4, 2, 2]), down[3].take("bias", shape: [m])
    )
    maskNorm2 = (down[4].take("weight", shape: [m]), down[4].take("bias", shape: [m]))
    maskConv3 = (down[6].take("weight", shape: [c, m, 1, 1]), down[6].take("bias", shape: [c]))
    noMaskEmbedding = scope["no_mask_embed"].take("weight", shape: [1, c]).reshaped([c])
    densePE = Self.makeDensePE(gaussian: gaussian)
  }

  /// The official `get_dense_pe()`, 1×256×64×64.
  public func getDensePE() -> Tensor { densePE }

  /// Sparse and dense embeddings of a batch of prompts, like the official `forward`.
  ///
  /// - Parameters:
  ///   - points: coordinates B×N×2 (x, y) in the 1024 frame and B·N labels (row-major): 1
  ///     foreground, 0 background, -1 padding. When there is no box, a padding point is
  ///     appended to every prompt, as the official encoder does.
  ///   - boxes: B×4 (x0, y0, x1, y1) in the 1024 frame.
  ///   - masks: B×1×256×256 mask logits.
  /// The batch size B must agree between the inputs that are given.
  public func callAsFunction(
    points: (coords: Tensor, labels: [Int])?, boxes: Tensor?, masks: Tensor?
  ) -> PromptEmbeddings {
    let batch = points?.coords.shape.first ?? boxes?.shape.first ?? masks?.shape.first ?? 1
    var parts: [Tensor] = []
    if let points {
      parts.append(embedPoints(points.coords, labels: points.labels, pad: boxes == nil))
    }
    if let boxes { parts.append(embedBoxes(boxes)) }
    for part in parts {
      precondition(part.shape[0] == batch, "PromptEncoder: points and boxes disagree on batch size")
    }
    let sparse =
      parts.isEmpty
      ? Tensor(zeros: [batch, 0, Self.embedDim])
      : parts.count == 1 ? parts[0] : concat(parts, axis: 1)
    let dense: DenseEmbedding
    if let masks {
      precondition(masks.shape[0] == batch, "PromptEncoder: masks disagree on batch size")
      dense = .masks(embedMasks(masks))
    } else {
      dense = .noMask(noMaskEmbedding)
    }
    return PromptEmbeddings(sparse: sparse, dense: dense)
  }

  /// Point tokens, B×N×256 (B×(N+1)×256 with `pad`). Coordinates are shifted by half a pixel to
  /// the pixel centre; the padding point is appended after the shift, at exactly (0, 0).
  public func embedPoints(_ coords: Tensor, labels: [Int], pad: Bool) -> Tensor {
    precondition(
      coords.rank == 3 && coords.shape[2] == 2,
      "embedPoints: coordinates must be B×N×2, got \(coords.shape)")
    let (batch, count) = (coords.shape[0], coords.shape[1])
    precondition(
      labels.count == batch * count,
      "embedPoints: \(labels.count) labels for \(batch)×\(count) points")
    let tokens = count + (pad ? 1 : 0)
    let c = Self.embedDim
    let side = Float(Self.promptFrameSide)
    return Tensor(uninitializedShape: [batch, tokens, c]) { out in
      let o = out.baseAddress!
      for b in 0..<batch {
        for i in 0..<tokens {
          let row = o + (b * tokens + i) * c
          let label = i < count ? labels[b * count + i] : -1
          if label == -1 {
            // The official code zeroes the encoding of padding points before adding the embedding.
            for j in 0..<c { row[j] = notAPointEmbedding[j] }
            continue
          }
          let x = coords.storage[(b * count + i) * 2] + 0.5
          let y = coords.storage[(b * count + i) * 2 + 1] + 0.5
          encode(x: x / side, y: y / side, into: row)
          // Labels other than 0 and 1 get the bare encoding, as in the official encoder.
          if label == 0 || label == 1 {
            let e = pointEmbeddings[label]
            for j in 0..<c { row[j] += e[j] }
          }
        }
      }
    }
  }

  /// Box tokens, B×2×256: the two corners, with the corner embeddings (labels 2 and 3) added.
  public func embedBoxes(_ boxes: Tensor) -> Tensor {
    precondition(
      boxes.rank == 2 && boxes.shape[1] == 4, "embedBoxes: boxes must be B×4, got \(boxes.shape)")
    let batch = boxes.shape[0]
    let c = Self.embedDim
    let side = Float(Self.promptFrameSide)
    return Tensor(uninitializedShape: [batch, 2, c]) { out in
      let o = out.baseAddress!
      for b in 0..<batch {
        for corner in 0..<2 {
          let row = o + (b * 2 + corner) * c
          let x = boxes.storage[b * 4 + corner * 2] + 0.5
          let y = boxes.storage[b * 4 + corner * 2 + 1] + 0.5
          encode(x: x / side, y: y / side, into: row)
          let e = pointEmbeddings[2 + corner]
          for j in 0..<c { row[j] += e[j] }
        }
      }
    }
  }

  /// `mask_downscaling`: B×1×256×256 logits → B×256×64×64.
  public func embedMasks(_ masks: Tensor) -> Tensor {
    let side = Self.maskInputSide
    precondition(
      masks.rank == 4 && Array(masks.shape.dropFirst()) == [1, side, side],
      "embedMasks: masks must be B×1×\(side)×\(side), got \(masks.shape)")
    var x = conv2d(masks, weight: maskConv1.weight, bias: maskConv1.bias, stride: 2)
    x = layerNorm2d(x, weight: maskNorm1.weight, bias: maskNorm1.bias, eps: Self.eps)
    activateInPlace(&x, .geluErf)
    x = conv2d(x, weight: maskConv2.weight, bias: maskConv2.bias, stride: 2)
    x = layerNorm2d(x, weight: maskNorm2.weight, bias: maskNorm2.bias, eps: Self.eps)
    activateInPlace(&x, .geluErf)
    return conv2d(x, weight: maskConv3.weight, bias: maskConv3.bias)
  }

  /// Random-Fourier encoding of a point normalised to [0, 1]²: sin then cos of 2π·(2p − 1)·G.
  /// Float32 throughout, like the official code (2π is rounded to float first, as PyTorch does
  /// when it multiplies a float tensor by a Python scalar).
  private func encode(x: Float, y: Float, into out: UnsafeMutablePointer<Float>) {
    Self.encode(x: x, y: y, gaussian: gaussian, into: out)
  }

  private static func encode(
    x: Float, y: Float, gaussian: [Float], into out: UnsafeMutablePointer<Float>
  ) {
    let f = frequencies
    let u = 2 * x - 1
    let v = 2 * y - 1
    let twoPi = Float(2 * Double.pi)
    for k in 0..<f {
      let a = twoPi * (u * gaussian[k] + v * gaussian[f + k])
      out[k] = sin(a)
      out[f + k] = cos(a)
    }
  }

  private static func makeDensePE(gaussian: [Float]) -> Tensor {
    let side = embeddingSide
    let c = embedDim
    let cells = side * side
    // Encode cell by cell (token-major), then transpose to the official C×H×W layout.
    var tokens = [Float](repeating: 0, count: cells * c)
    tokens.withUnsafeMutableBufferPointer { t in
      for i in 0..<side {
        for j in 0..<side {
          let x = (Float(j) + 0.5) / Float(side)
          let y = (Float(i) + 0.5) / Float(side)
          encode(x: x, y: y, gaussian: gaussian, into: t.baseAddress! + (i * side + j) * c)
        }
      }
    }
    return Tensor(uninitializedShape: [1, c, side, side]) { out in
      for p in 0..<cells {
        for ch in 0..<c { out[ch * cells + p] = tokens[p * c + ch] }
      }
    }
  }
}

/// What the prompt encoder hands the mask decoder.
public struct PromptEmbeddings: Sendable {
  /// B×N×256 point and box tokens (N may be 0).
  public var sparse: Tensor
  public var dense: DenseEmbedding

  public init(sparse: Tensor, dense: DenseEmbedding) {
    self.sparse = sparse
    self.dense = dense
  }

  public var batchSize: Int { sparse.shape[0] }
}

/// The dense prompt embedding. Without a mask input it is one 256-vector broadcast over the
/// whole grid and every prompt, so it is kept as that vector instead of B×256×64×64 copies.
public enum DenseEmbedding: Sendable {
  /// `no_mask_embed`, 256 values, the same for every prompt and grid cell.
  case noMask(Tensor)
  /// Embedded mask inputs, B×256×64×64.
  case masks(Tensor)

  /// The official B×256×64×64 tensor.
  public func materialized(batch: Int) -> Tensor {
    switch self {
    case .masks(let t):
      precondition(t.shape[0] == batch, "DenseEmbedding: \(t.shape[0]) masks for batch \(batch)")
      return t
    case .noMask(let v):
      let side = PromptEncoder.embeddingSide
      let plane = side * side
      return Tensor(uninitializedShape: [batch, v.count, side, side]) { out in
        for b in 0..<batch {
          for ch in 0..<v.count {
            let base = (b * v.count + ch) * plane
            for p in 0..<plane { out[base + p] = v.storage[ch] }
          }
        }
      }
    }
  }
}
