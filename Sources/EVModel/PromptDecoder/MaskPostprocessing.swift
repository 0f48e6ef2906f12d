import EVTensor

/// The official `postprocess_masks`: low-resolution logits back to the original image.
public enum MaskPostprocessing {
  /// B×C×256×256 logits → bilinear to 1024×1024 (align_corners=False) → keep the top-left
  /// `inputSize` (the image's extent in the 1024 prompt frame) → bilinear to `originalSize`.
  ///
  /// Both resizes and the crop are linear and separable, so they are applied as one composite
  /// resampling per axis (each output pixel reads at most 3×3 low-res logits): the 1024×1024
  /// intermediate is never formed. The result equals the two-step computation up to float
  /// rounding of the combined weights.
  public static func upscale(
    _ lowRes: Tensor, inputSize: (height: Int, width: Int),
    originalSize: (height: Int, width: Int), frame: Int = PromptEncoder.promptFrameSide
  ) -> Tensor {
    precondition(
      lowRes.rank == 4, "MaskPostprocessing: logits must be B×C×H×W, got \(lowRes.shape)")
    let plan = Plan(
      lowResolution: (lowRes.shape[2], lowRes.shape[3]), inputSize: inputSize,
      originalSize: originalSize, frame: frame)
    return plan.upscale(lowRes)
  }

  /// `upscale` for one image's sizes, with the composite taps worked out once: a predictor
  /// keeps one per image, since building the taps costs about as much as resampling one
  /// prompt's masks.
  public struct Plan: Sendable {
    let rows: ResampleAxis
    let cols: ResampleAxis
    public let lowResolution: (height: Int, width: Int)
    public let originalSize: (height: Int, width: Int)

    public init(
      lowResolution: (height: Int, width: Int) = (
        PromptEncoder.maskInputSide, PromptEncoder.maskInputSide
      ),
      inputSize: (height: Int, width: Int), originalSize: (height: Int, width: Int),
      frame: Int = PromptEncoder.promptFrameSide
    ) {
      precondition(
        inputSize.height > 0 && inputSize.height <= frame && inputSize.width > 0
          && inputSize.width <= frame,
        "MaskPostprocessing: input size \(inputSize) outside the \(frame) frame")
      precondition(
        originalSize.height > 0 && originalSize.width > 0,
        "MaskPostprocessing: empty original size \(originalSize)")
      self.lowResolution = lowResolution
      self.originalSize = originalSize
      rows = MaskPostprocessing.axis(
        input: lowResolution.height, frame: frame, kept: inputSize.height,
        output: originalSize.height)
      cols = MaskPostprocessing.axis(
        input: lowResolution.width, frame: frame, kept: inputSize.width,
        output: originalSize.width)
    }

    /// B×C×H×W logits at `lowResolution` → B×C at `originalSize`.
    public func upscale(_ lowRes: Tensor) -> Tensor {
      precondition(
        lowRes.rank == 4 && lowRes.shape[2] == lowResolution.height
          && lowRes.shape[3] == lowResolution.width,
        "MaskPostprocessing: logits must be B×C×\(lowResolution.height)×\(lowResolution.width), "
          + "got \(lowRes.shape)")
      let (b, c) = (lowRes.shape[0], lowRes.shape[1])
      return Tensor(uninitializedShape: [b, c, originalSize.height, originalSize.width]) { out in
        guard out.count > 0 else { return }
        lowRes.withUnsafeBufferPointer {
          RowOps.resample(
            $0.baseAddress!, planes: b * c, rows: rows, cols: cols, into: out.baseAddress!)
        }
      }
    }
  }

  /// One axis of the composite: `input` → `frame` (bilinear), keep the first `kept`, → `output`
  /// (bilinear).
  package static func axis(input: Int, frame: Int, kept: Int, output: Int) -> ResampleAxis {
    let first = bilinear(input: input, output: frame)
    let second = bilinear(input: kept, output: output)
    var spans: [(lo: Int, weights: [Double])] = []
    var taps = 1
    for o in 0..<output {
      let s = second[o]
      let a = first[s.i0]
      let b = first[s.i1]
      let lo = min(a.i0, b.i0)
      let hi = max(a.i1, b.i1)
      var weights = [Double](repeating: 0, count: hi - lo + 1)
      weights[a.i0 - lo] += Double(s.w0) * Double(a.w0)
      weights[a.i1 - lo] += Double(s.w0) * Double(a.w1)
      weights[b.i0 - lo] += Double(s.w1) * Double(b.w0)
      weights[b.i1 - lo] += Double(s.w1) * Double(b.w1)
      spans.append((lo, weights))
      taps = max(taps, weights.count)
    }
    var start: [Int] = []
    var weight: [Float] = []
    for (lo, weights) in spans {
      // Shift windows that would run past the end; the extra taps get weight 0.
      let s = min(lo, input - taps)
      var row = [Float](repeating: 0, count: taps)
      for (k, v) in weights.enumerated() { row[lo - s + k] = Float(v) }
      start.append(s)
      weight += row
    }
    return ResampleAxis(inputCount: input, taps: taps, start: start, weight: weight)
  }

  /// upsample_bilinear2d's taps (align_corners=False) in its float arithmetic: source
  /// coordinate `scale·(dst + 0.5) − 0.5` clamped at 0; equal sizes copy.
  static func bilinear(input: Int, output: Int) -> [(i0: Int, i1: Int, w0: Float, w1: Float)] {
    let scale = Float(input) / Float(output)
    return (0..<output).map { dst in
      if input == output { return (dst, dst, 1, 0) }
      let real = max(scale * (Float(dst) + 0.5) - 0.5, 0)
      let i0 = min(Int(real.rounded(.down)), input - 1)
      let lambda = min(max(real - Float(i0), 0), 1)
      return (i0, i0 + (i0 < input - 1 ? 1 : 0), 1 - lambda, lambda)
    }
  }
}
