// PIL's `Image.resize(size, Image.BILINEAR)` for 8-bit images, bit for bit.
//
// It follows Pillow's ImagingResample (libImaging/Resample.c): normally a horizontal pass
// over only the source rows the vertical pass will read, then a vertical pass (Pillow 13
// swaps them for images whose height shrinks much more than their width, see
// `PILPassOrder`), each skipped when that dimension keeps its size. The triangle filter's
// support grows with the downscale factor (antialiasing); weights are normalised in double
// precision, then turned into 22-bit fixed point (PRECISION_BITS = 32 - 8 - 2), and every
// pass rounds (+0.5 in fixed point) and clips to 0…255, so the 8-bit intermediate image
// makes the pass order matter.

private let precisionBits = 32 - 8 - 2

/// The taps of one resampling pass: for each output index, the first source index, the
/// number of taps, and that many fixed-point weights (each output's `stride` apart).
private struct ResampleTaps {
  var stride: Int
  var first: [Int]
  var count: [Int]
  var weights: [Int32]

  /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter over the
  /// whole source extent (box 0…inSize).
  init(inSize: Int, outSize: Int) {
    // Pillow computes the box width in float, then widens it to double.
    let scale = Double(Float(inSize) - Float(0)) / Double(outSize)
    let filterScale = max(scale, 1.0)
    let support = 1.0 * filterScale  // bilinear support is 1
    let stride = Int(support.rounded(.up)) * 2 + 1
    var first = [Int](repeating: 0, count: outSize)
    var count = [Int](repeating: 0, count: outSize)
    var weights = [Int32](repeating: 0, count: outSize * stride)
    var k = [Double](repeating: 0, count: stride)
    let inverseScale = 1.0 / filterScale
    for xx in 0..<outSize {
      let center = (Double(xx) + 0.5) * scale
      // C's (int) conversion truncates toward zero, as Int(_: Double) does.
      let xmin = max(Int(center - support + 0.5), 0)
      let xmax = min(Int(center + support + 0.5), inSize) - xmin
      var total = 0.0
      for x in 0..<max(xmax, 0) {
        var t = (Double(x + xmin) - center + 0.5) * inverseScale
        if t < 0 { t = -t }
        let w = t < 1.0 ? 1.0 - t : 0.0
        k[x] = w
        total += w
      }
      for x in 0..<max(xmax, 0) {
        let w = total != 0 ? k[x] / total : k[x]
        let fixed =
          w < 0 ? -0.5 + w * Double(1 << precisionBits) : 0.5 + w * Double(1 << precisionBits)
        weights[xx * stride + x] = Int32(fixed)
      }
      first[xx] = xmin
      count[xx] = max(xmax, 0)
    }
    self.stride = stride
    self.first = first
    self.count = count
    self.weights = weights
  }
}

@inline(__always)
private func clip8(_ sum: Int32) -> UInt8 {
  let v = sum >> Int32(precisionBits)
  return v < 0 ? 0 : v > 255 ? 255 : UInt8(truncatingIfNeeded: v)
}

/// Which of Pillow's pass orders to reproduce. The two differ only when the height shrinks
/// by more than twice as many pixels as the width does (tall images, or width enlarged while
/// height shrinks); the intermediate image is rounded to 8 bits, so the order can change
/// results by one grey level.
public enum PILPassOrder: Sendable {
  /// Pillow ≥ 13 (`ImagingResampleInner`): the vertical pass runs first when
  /// `inHeight - outHeight > 0 && inHeight - outHeight > 2 * (inWidth - outWidth)`.
  case pillow13
  /// Pillow ≤ 12: always the horizontal pass first.
  case horizontalFirst
}

/// Resizes interleaved 8-bit pixels (`channels` per pixel) like PIL's bilinear resize.
func resampleBilinearPIL(
  _ pixels: [UInt8], width: Int, height: Int, channels: Int, outWidth: Int, outHeight: Int,
  order: PILPassOrder
) -> [UInt8] {
  precondition(width > 0 && height > 0 && outWidth > 0 && outHeight > 0, "empty image in resize")
  precondition(pixels.count == width * height * channels)
  let needHorizontal = outWidth != width
  let needVertical = outHeight != height
  if !needHorizontal && !needVertical { return pixels }

  let horizontal = ResampleTaps(inSize: width, outSize: outWidth)
  var vertical = ResampleTaps(inSize: height, outSize: outHeight)
  let shrink = height - outHeight
  let verticalFirst = order == .pillow13 && shrink > 0 && shrink > (width - outWidth) * 2

  if verticalFirst {
    var current = pixels
    if needVertical {
      current = verticalPass(current, width: width, taps: vertical, channels: channels)
    }
    if needHorizontal {
      current = horizontalPass(
        current, width: width, firstRow: 0, rows: outHeight, taps: horizontal, channels: channels)
    }
    return current
  }

  var current = pixels
  var currentWidth = width
  if needHorizontal {
    // Only the source rows the vertical pass reads are resampled horizontally.
    let firstRow = vertical.first[0]
    let lastRow = vertical.first[outHeight - 1] + vertical.count[outHeight - 1]
    for i in 0..<outHeight { vertical.first[i] -= firstRow }
    current = horizontalPass(
      pixels, width: width, firstRow: firstRow, rows: lastRow - firstRow, taps: horizontal,
      channels: channels)
    currentWidth = outWidth
  }
  if needVertical {
    current = verticalPass(current, width: currentWidth, taps: vertical, channels: channels)
  }
  return current
}

/// Pillow's `ImagingResampleHorizontal_8bpc` over `rows` rows starting at `firstRow`.
private func horizontalPass(
  _ pixels: [UInt8], width: Int, firstRow: Int, rows: Int, taps: ResampleTaps, channels: Int
) -> [UInt8] {
  let outWidth = taps.first.count
  var out = [UInt8](repeating: 0, count: rows * outWidth * channels)
  pixels.withUnsafeBufferPointer { src in
    out.withUnsafeMutableBufferPointer { dst in
      taps.weights.withUnsafeBufferPointer { weights in
        for y in 0..<rows {
          let inRow = src.baseAddress! + (y + firstRow) * width * channels
          let outRow = dst.baseAddress! + y * outWidth * channels
          for xx in 0..<outWidth {
            let xmin = taps.first[xx]
            let count = taps.count[xx]
            let k = weights.baseAddress! + xx * taps.stride
            for c in 0..<channels {
              var sum: Int32 = 1 << Int32(precisionBits - 1)
              var p = inRow + xmin * channels + c
              for x in 0..<count {
                sum &+= Int32(p.pointee) &* k[x]
                p += channels
              }
              outRow[xx * channels + c] = clip8(sum)
            }
          }
        }
      }
    }
  }
  return out
}

/// Pillow's `ImagingResampleVertical_8bpc`; `taps.first` indexes rows of `pixels`.
private func verticalPass(_ pixels: [UInt8], width: Int, taps: ResampleTaps, channels: Int)
  -> [UInt8]
{
  let outHeight = taps.first.count
  let rowLength = width * channels
  var out = [UInt8](repeating: 0, count: outHeight * rowLength)
  var sums = [Int32](repeating: 0, count: rowLength)
  pixels.withUnsafeBufferPointer { src in
    out.withUnsafeMutableBufferPointer { dst in
      taps.weights.withUnsafeBufferPointer { weights in
        sums.withUnsafeMutableBufferPointer { sums in
          for yy in 0..<outHeight {
            let ymin = taps.first[yy]
            let count = taps.count[yy]
            let k = weights.baseAddress! + yy * taps.stride
            for i in 0..<rowLength { sums[i] = 1 << Int32(precisionBits - 1) }
            // Row by row so the inner loop runs over contiguous memory; integer sums make
            // the result independent of the summation order.
            for y in 0..<count {
              let weight = k[y]
              let inRow = src.baseAddress! + (ymin + y) * rowLength
              for i in 0..<rowLength { sums[i] &+= Int32(inRow[i]) &* weight }
            }
            let outRow = dst.baseAddress! + yy * rowLength
            for i in 0..<rowLength { outRow[i] = clip8(sums[i]) }
          }
        }
      }
    }
  }
  return out
}

/// PIL's `image.resize((width, height), Image.BILINEAR)`, bit-exact (antialiased when
/// shrinking; a no-op copy when the size does not change).
public func resizeBilinearPIL(
  _ image: RGBImage, width: Int, height: Int, order: PILPassOrder = .pillow13
) -> RGBImage {
  RGBImage(
    width: width, height: height,
    pixels: resampleBilinearPIL(
      image.pixels, width: image.width, height: image.height, channels: 3, outWidth: width,
      outHeight: height, order: order))
}

/// The same resize for a single-channel image (PIL mode "L").
public func resizeBilinearPIL(
  _ image: GrayImage, width: Int, height: Int, order: PILPassOrder = .pillow13
) -> GrayImage {
  GrayImage(
    width: width, height: height,
    pixels: resampleBilinearPIL(
      image.pixels, width: image.width, height: image.height, channels: 1, outWidth: width,
      outHeight: height, order: order))
}
