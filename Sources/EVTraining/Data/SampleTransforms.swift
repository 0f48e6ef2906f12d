import EVTensor
import Foundation

/// One training image with its masks and prompts, as the official data provider hands them to
/// its transforms: the image as float 0…255 planes, the masks as float planes (soft once
/// resized), one point and one XYWH box per mask in pixels of the current image.
package struct TrainingSample: Sendable {
  /// 3 × height × width.
  package var image: [Float]
  /// masks × height × width.
  package var masks: [Float]
  /// (x, y) per mask.
  package var points: [[Float]]
  /// (x, y, w, h) per mask.
  package var boxes: [[Float]]
  package var height: Int
  package var width: Int

  package init(
    image: [Float], masks: [Float], points: [[Float]], boxes: [[Float]], height: Int, width: Int
  ) {
    precondition(
      image.count == 3 * height * width, "TrainingSample: image is not 3×\(height)×\(width)")
    precondition(masks.count == points.count * height * width || points.isEmpty)
    self.image = image
    self.masks = masks
    self.points = points
    self.boxes = boxes
    self.height = height
    self.width = width
  }

  package var maskCount: Int { masks.count / (height * width) }
}

/// The official training transforms (`efficientvit/samcore/data_provider/utils.py`), in order:
/// `RandomHFlip` → `ResizeLongestSide` → `Normalize_and_Pad`.
package enum SampleTransforms {
  /// `RandomHFlip` when it fires: image and masks mirrored, x of points `W − x`, box x
  /// `W − x − w`.
  package static func flipHorizontally(_ s: TrainingSample) -> TrainingSample {
    var out = s
    let w = s.width
    func mirror(_ planes: [Float]) -> [Float] {
      var r = planes
      for row in 0..<(planes.count / w) {
        for x in 0..<w { r[row * w + x] = planes[row * w + (w - 1 - x)] }
      }
      return r
    }
    out.image = mirror(s.image)
    out.masks = mirror(s.masks)
    out.points = s.points.map { [Float(w) - $0[0], $0[1]] }
    out.boxes = s.boxes.map { [Float(w) - $0[2] - $0[0], $0[1], $0[2], $0[3]] }
    return out
  }

  /// `ResizeLongestSide(target)`: image and masks through `F.interpolate(bilinear,
  /// align_corners=False, antialias=True)` to the long side `target` (masks stay soft),
  /// points and boxes scaled per axis by new / old size.
  package static func resizeLongestSide(_ s: TrainingSample, target: Int) -> TrainingSample {
    let scale = Double(target) / Double(max(s.height, s.width))
    let nh = max(1, Int(Double(s.height) * scale + 0.5))
    let nw = max(1, Int(Double(s.width) * scale + 0.5))
    var out = s
    out.image = antialiasedBilinear(s.image, height: s.height, width: s.width, to: nh, nw)
    out.masks = antialiasedBilinear(s.masks, height: s.height, width: s.width, to: nh, nw)
    let sx = Float(Double(nw) / Double(s.width))
    let sy = Float(Double(nh) / Double(s.height))
    out.points = s.points.map { [$0[0] * sx, $0[1] * sy] }
    out.boxes = s.boxes.map { [$0[0] * sx, $0[1] * sy, $0[2] * sx, $0[3] * sy] }
    out.height = nh
    out.width = nw
    return out
  }

  /// `Normalize_and_Pad(target)`: SAM's mean and std on the 0–255 scale, then zeros to the
  /// bottom and right of a `target × target` square, for the image and the masks.
  package static func normalizeAndPad(_ s: TrainingSample, target: Int) -> TrainingSample {
    let mean: [Float] = [123.675, 116.28, 103.53]
    let std: [Float] = [58.395, 57.12, 57.375]
    let (h, w) = (s.height, s.width)
    precondition(h <= target && w <= target, "normalizeAndPad: \(w)×\(h) exceeds \(target)")
    var image = [Float](repeating: 0, count: 3 * target * target)
    for c in 0..<3 {
      for y in 0..<h {
        for x in 0..<w {
          image[(c * target + y) * target + x] = (s.image[(c * h + y) * w + x] - mean[c]) / std[c]
        }
      }
    }
    let m = s.maskCount
    var masks = [Float](repeating: 0, count: m * target * target)
    for k in 0..<m {
      for y in 0..<h {
        for x in 0..<w { masks[(k * target + y) * target + x] = s.masks[(k * h + y) * w + x] }
      }
    }
    var out = s
    out.image = image
    out.masks = masks
    out.height = target
    out.width = target
    return out
  }

  /// PyTorch's antialiased bilinear resize (`_upsample_bilinear2d_aa`) of `planes` (any
  /// number of height × width planes): separable triangle filter whose support widens with
  /// the downscale factor, window clipped to the image and its weights renormalised, width
  /// first. Weights and sums in double precision; PyTorch's float32 differs by rounding.
  package static func antialiasedBilinear(
    _ planes: [Float], height: Int, width: Int, to outHeight: Int, _ outWidth: Int
  ) -> [Float] {
    let count = planes.count / (height * width)
    let columns = FilterTaps(input: width, output: outWidth)
    let rows = FilterTaps(input: height, output: outHeight)
    var horizontal = [Double](repeating: 0, count: count * height * outWidth)
    for p in 0..<(count * height) {
      for x in 0..<outWidth {
        var acc = 0.0
        for (i, w) in zip(
          columns.first[x]..<(columns.first[x] + columns.weights[x].count), columns.weights[x])
        {
          acc += Double(planes[p * width + i]) * w
        }
        horizontal[p * outWidth + x] = acc
      }
    }
    var out = [Float](repeating: 0, count: count * outHeight * outWidth)
    for c in 0..<count {
      for y in 0..<outHeight {
        for x in 0..<outWidth {
          var acc = 0.0
          for (i, w) in zip(
            rows.first[y]..<(rows.first[y] + rows.weights[y].count), rows.weights[y])
          {
            acc += horizontal[(c * height + i) * outWidth + x] * w
          }
          out[(c * outHeight + y) * outWidth + x] = Float(acc)
        }
      }
    }
    return out
  }

  /// The taps of one antialiased pass: for each output index, the first input index and the
  /// normalised triangle weights of its window.
  struct FilterTaps {
    var first: [Int]
    var weights: [[Double]]

    init(input: Int, output: Int) {
      let scale = Double(input) / Double(output)
      let support = scale >= 1 ? scale : 1
      let inverse = scale >= 1 ? 1 / scale : 1
      first = []
      weights = []
      for i in 0..<output {
        let center = scale * (Double(i) + 0.5)
        let lo = max(Int(center - support + 0.5), 0)
        let hi = min(Int(center + support + 0.5), input)
        var w = (lo..<max(hi, lo)).map { j in max(0, 1 - abs((Double(j) - center + 0.5) * inverse))
        }
        let total = w.reduce(0, +)
        if total > 0 { w = w.map { $0 / total } }
        first.append(lo)
        weights.append(w)
      }
    }
  }
}
