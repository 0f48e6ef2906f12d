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
  // The official code would make a zero-pixel side for an aspect ratio beyond longSide:1 (and
  // then fail); one pixel is the nearest size that exists and leaves every other image as it is.
  return (
    max(1, Int(Double(originalHeight) * scale + 0.5)),
    max(1, Int(Double(originalWidth) * scale + 0.5))
  )
}

/// How pixel bytes become the encoder's input values. The constants are SAM's mean and std on
/// the 0–255 scale in both cases; the two official transforms apply them differently, which
/// changes the float32 result in the last bits.
public enum PixelNormalization: Sendable, Equatable {
  /// EfficientViT-SAM's `ToTensor` then `Normalize`: `(v/255 − mean/255) / (std/255)`, the
  /// quotients formed in double and held as float32, as torchvision does.
  case unitRange
  /// segment-anything's `Sam.preprocess`: `(v − mean) / std` in float32 on the 0–255 scale.
  case byteRange

  /// The normalised value of each byte, per channel.
  fileprivate var table: [[Float]] {
    switch self {
    case .unitRange: unitRangeValues
    case .byteRange: byteRangeValues
    }
  }
}

private let samMean: [Double] = [123.675, 116.28, 103.53]
private let samStd: [Double] = [58.395, 57.12, 57.375]

private let unitRangeValues: [[Float]] = (0..<3).map { c in
  let mean = Float(samMean[c] / 255)
  let std = Float(samStd[c] / 255)
  return (0..<256).map { v in (Float(v) / Float(255) - mean) / std }
}

private let byteRangeValues: [[Float]] = (0..<3).map { c in
  let mean = Float(samMean[c])
  let std = Float(samStd[c])
  return (0..<256).map { v in (Float(v) - mean) / std }
}

/// The official image transform: `SamResize(targetSize)` (PIL bilinear, long side to
/// `targetSize`, skipped when it already is), the normalisation (EfficientViT-SAM's
/// `ToTensor` + `Normalize`, or SAM's own on the 0–255 scale), then `SamPad` (zeros
/// bottom/right) to a square. `targetSize` is 512 for the L models and 1024 for XL and SAM's
/// ViTs. Returns a 1×3×S×S tensor and the size of the unpadded content.
/// `order` picks the Pillow generation to match; they differ by at most one grey level, and
/// only for images more than about twice as tall as wide.
public func preprocess(
  _ image: RGBImage, targetSize: Int, normalization: PixelNormalization = .unitRange,
  order: PILPassOrder = .pillow13
) -> (
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
  let normalizedValues = normalization.table
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
