import EVTensor

/// The official `postprocess_masks`: low-resolution logits back to the original image.
public enum MaskPostprocessing {
  /// B×C×256×256 logits → bilinear to 1024×1024 (align_corners=False) → keep the top-left
  /// `inputSize` (the image's extent in the 1024 prompt frame) → bilinear to `originalSize`.
  public static func upscale(
    _ lowRes: Tensor, inputSize: (height: Int, width: Int),
    originalSize: (height: Int, width: Int), frame: Int = PromptEncoder.promptFrameSide
  ) -> Tensor {
    precondition(lowRes.rank == 4, "MaskPostprocessing: logits must be B×C×H×W, got \(lowRes.shape)")
    precondition(
      inputSize.height > 0 && inputSize.height <= frame && inputSize.width > 0
        && inputSize.width <= frame,
      "MaskPostprocessing: input size \(inputSize) outside the \(frame) frame")
    precondition(
      originalSize.height > 0 && originalSize.width > 0,
      "MaskPostprocessing: empty original size \(originalSize)")
    var x = resizeBilinear(lowRes, height: frame, width: frame)
    if inputSize.height < frame { x = slice(x, axis: 2, range: 0..<inputSize.height) }
    if inputSize.width < frame { x = slice(x, axis: 3, range: 0..<inputSize.width) }
    return resizeBilinear(x, height: originalSize.height, width: originalSize.width)
  }
}
