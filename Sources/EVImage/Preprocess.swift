import EVTensor

/// The size of an image whose long side is scaled to `longSide`:
/// `int(side * longSide / max(h, w) + 0.5)` in double precision, exactly as
/// `ResizeLongestSide.get_preprocess_shape` (and `SamResize.get_preprocess_shape`) compute it.
/// Prompts and masks live in the 1024 frame, whatever the encoder's input size.
public func promptFrameSize(originalHeight: Int, originalWidth: Int, longSide: Int = 1024) -> (
  height: Int, width: Int
) {
  precondition(originalHeight > 0 && originalWidth > 0, "empty image")
  let scale = Double(longSide) * 1.0 / Double(max(originalHeight, originalWidth))
  return (
    max(1, Int(Double(originalHeight) * scale + 0.5)),
    max(1, Int(Double(originalWidth) * scale + 0.5))
  )
}

/// Per-channel normalisation constants as torchvision holds them: float32 tensors made from
/// the double-precision quotients in the official transform.
private let normalizationMean: [Float] = [
  Float(123.675 / 255), Float(116.28 / 255), Float(103.53 / 255),
]
private let normalizationStd: [Float] = [
  Float(58.395 / 255), Float(57.12 / 255), Float(57.375 / 255),
]

/// `(x / 255 - mean) / std` in float32, as `ToTensor` then `Normalize` compute it, for each
/// channel and byte value.
private let normalizedValues: [[Float]] = (0..<3).map { c in
  (0..<256).map { v in (Float(v) / Float(255) - normalizationMean[c]) / normalizationStd[c] }
}

/// The official EfficientViT-SAM image transform: `SamResize(targetSize)` (PIL bilinear,
/// long side to `targetSize`, skipped when it already is), `ToTensor`, `Normalize` with SAM's
/// mean/std, then `SamPad` (zeros bottom/right) to a square. `targetSize` is 512 for the L
/// models and 1024 for XL. Returns a 1×3×S×S tensor and the size of the unpadded content.
/// `order` picks the Pillow generation to match; they differ by at most one grey level, and
/// only for images more than about twice as tall as wide.
public func preprocess(_ image: RGBImage, targetSize: Int, order: PILPassOrder = .pillow13) -> (
  tensor: Tensor, resizedHeight: Int, resizedWidth: Int
) {
  precondition(image.width > 0 && image.height > 0, "empty image")
  precondition(targetSize > 0, "target size must be positive")
  var resized = image
  if max(image.width, image.height) != targetSize {
    let size = promptFrameSize(
      originalHeight: image.height, originalWidth: image.width, longSide: targetSize)
    resized = resizeBilinearPIL(image, width: size.width, height: size.height, order: order)
  }
  let h = resized.height
  let w = resized.width
  let s = targetSize
  let tensor = Tensor(uninitializedShape: [1, 3, s, s]) { out in
    out.initialize(repeating: 0)
    resized.pixels.withUnsafeBufferPointer { pixels in
      for c in 0..<3 {
        normalizedValues[c].withUnsafeBufferPointer { table in
          let plane = out.baseAddress! + c * s * s
          for y in 0..<h {
            let row = plane + y * s
            let src = pixels.baseAddress! + y * w * 3 + c
            for x in 0..<w { row[x] = table[Int(src[x * 3])] }
          }
        }
      }
    }
  }
  return (tensor, h, w)
}
