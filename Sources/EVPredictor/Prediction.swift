import EVTensor

/// Thresholded masks (`logit > 0`, the official `mask_threshold`), row-major, with the shape of
/// the logits they came from: `[C, H, W]` for one prompt, `[B, C, H, W]` for a batch.
public struct BinaryMasks: Sendable, Equatable {
  public let shape: [Int]
  public var values: [Bool]

  public init(logits: Tensor, threshold: Float = 0) {
    precondition(logits.rank >= 2, "BinaryMasks: logits must be at least H×W, got \(logits.shape)")
    shape = logits.shape
    let count = logits.count
    // Plain loops over the raw buffers (`map` appends element by element, 10× slower here),
    // in blocks on all cores: one prompt's masks at a photo's size are millions of pixels.
    values = [Bool](unsafeUninitializedCapacity: count) { out, initialized in
      logits.withUnsafeBufferPointer { src in
        guard let o = out.baseAddress, let s = src.baseAddress else { return }
        let block = 1 << 16
        Parallel.forRanges(count: (count + block - 1) / block, costPerItem: block) { blocks in
          for i in (blocks.lowerBound * block)..<min(count, blocks.upperBound * block) {
            o[i] = s[i] > threshold
          }
        }
      }
      initialized = count
    }
  }

  /// The same masks under another shape with the same H×W planes (e.g. without a batch axis).
  func reshaped(_ newShape: [Int]) -> BinaryMasks {
    precondition(
      newShape.reduce(1, *) == values.count && newShape.suffix(2) == shape.suffix(2),
      "BinaryMasks: cannot reshape \(shape) to \(newShape)")
    return BinaryMasks(shape: newShape, values: values)
  }

  private init(shape: [Int], values: [Bool]) {
    self.shape = shape
    self.values = values
  }

  public var height: Int { shape[shape.count - 2] }
  public var width: Int { shape[shape.count - 1] }
  /// How many H×W masks there are.
  public var count: Int { shape.dropLast(2).reduce(1, *) }

  /// Mask `index` (counting over all leading dimensions, row-major) as a row-major H×W array.
  public func mask(_ index: Int) -> [Bool] {
    precondition(index >= 0 && index < count, "BinaryMasks: mask \(index) of \(count)")
    let plane = height * width
    return Array(values[(index * plane)..<((index + 1) * plane)])
  }

  /// Pixel (x, y) of mask `index`.
  public subscript(index: Int, y: Int, x: Int) -> Bool {
    values[(index * height + y) * width + x]
  }

  /// Number of pixels set in mask `index`.
  public func area(_ index: Int) -> Int {
    let plane = height * width
    var n = 0
    for i in (index * plane)..<((index + 1) * plane) where values[i] { n += 1 }
    return n
  }
}

/// The result of one prompt, as the official `predict` returns it (with `return_logits` both
/// ways): C = 3 masks with multimask output, else 1.
public struct Prediction: Sendable {
  /// C×H×W mask logits at the original image size.
  public let maskLogits: Tensor
  /// `maskLogits > 0`.
  public let masks: BinaryMasks
  /// C predicted IoUs.
  public let iouPredictions: [Float]
  /// C×256×256 logits; pass one (as 1×256×256) back as `maskInput` to refine a prediction.
  public let lowResLogits: Tensor

  /// Index of the mask with the highest predicted IoU (the official evaluation keeps that one).
  public var bestIndex: Int {
    iouPredictions.indices.max { iouPredictions[$0] < iouPredictions[$1] } ?? 0
  }
}

/// The result of B prompts decoded together.
public struct BatchPrediction: Sendable {
  /// B×C×H×W mask logits at the original size; nil when upscaling was not requested.
  public let maskLogits: Tensor?
  /// `maskLogits > 0`, B×C×H×W; nil when upscaling was not requested.
  public let masks: BinaryMasks?
  /// B×C predicted IoUs.
  public let iouPredictions: Tensor
  /// B×C×256×256 logits.
  public let lowResLogits: Tensor

  public var batchSize: Int { iouPredictions.shape[0] }
  public var masksPerPrompt: Int { iouPredictions.shape[1] }
}
