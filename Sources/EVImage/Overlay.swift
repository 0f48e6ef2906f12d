import Foundation

/// A point prompt to draw, with its label (foreground or background).
public struct PointMarker: Sendable, Equatable {
  public var point: Point
  public var positive: Bool

  public init(_ point: Point, positive: Bool) {
    self.point = point
    self.positive = positive
  }
}

public enum OverlayStyle {
  /// Distinct, saturated colours for the first masks; later ones continue around the hue
  /// circle by the golden angle so neighbours stay distinguishable.
  public static let palette: [RGBColor] = [
    RGBColor(30, 144, 255), RGBColor(255, 99, 71), RGBColor(50, 205, 50), RGBColor(255, 215, 0),
    RGBColor(186, 85, 211), RGBColor(0, 206, 209), RGBColor(255, 140, 0), RGBColor(255, 20, 147),
    RGBColor(154, 205, 50), RGBColor(100, 149, 237),
  ]
  public static let positivePoint = RGBColor(0, 200, 60)
  public static let negativePoint = RGBColor(230, 30, 30)
  public static let box = RGBColor(255, 230, 0)

  /// Colour of mask `index`.
  public static func color(_ index: Int) -> RGBColor {
    if index < palette.count { return palette[index] }
    let hue = (Double(index) * 0.618_033_988_749_895).truncatingRemainder(dividingBy: 1)
    return hsv(hue, 0.8, 0.95)
  }

  static func hsv(_ h: Double, _ s: Double, _ v: Double) -> RGBColor {
    let sector = h * 6
    let i = Int(sector) % 6
    let f = sector - Double(Int(sector))
    let p = v * (1 - s)
    let q = v * (1 - s * f)
    let t = v * (1 - s * (1 - f))
    let (r, g, b): (Double, Double, Double) =
      switch i {
      case 0: (v, t, p)
      case 1: (q, v, p)
      case 2: (p, v, t)
      case 3: (p, q, v)
      case 4: (t, p, v)
      default: (v, p, q)
      }
    return RGBColor(UInt8(r * 255 + 0.5), UInt8(g * 255 + 0.5), UInt8(b * 255 + 0.5))
  }
}

/// Draws masks over an image: each mask is alpha-blended in its own colour and outlined by a
/// darker contour (1 px, 2 px on images of 600 px and more); then box prompts as rectangles
/// and point prompts as discs (green positive, red negative) with a white rim.
///
/// - Parameters:
///   - masks: one row-major `image.height * image.width` array per mask.
///   - colors: a colour per mask; `OverlayStyle.color(i)` where missing.
///   - opacity: weight of the mask colour in the fill, 0…1.
public func overlay(
  masks: [[Bool]], on image: RGBImage, colors: [RGBColor] = [], opacity: Double = 0.45,
  points: [PointMarker] = [], boxes: [Box] = []
) -> RGBImage {
  let w = image.width
  let h = image.height
  for (i, mask) in masks.enumerated() {
    precondition(
      mask.count == w * h, "mask \(i) has \(mask.count) values, the image has \(w)×\(h) pixels")
  }
  var out = image.pixels
  let alpha = min(max(opacity, 0), 1)
  let thickness = min(w, h) >= 600 ? 2 : 1

  for (i, mask) in masks.enumerated() {
    let color = i < colors.count ? colors[i] : OverlayStyle.color(i)
    let fill = [Double(color.r), Double(color.g), Double(color.b)]
    let edge = [color.r, color.g, color.b].map { UInt8(Double($0) * 0.55) }
    mask.withUnsafeBufferPointer { mask in
      out.withUnsafeMutableBufferPointer { out in
        for y in 0..<h {
          for x in 0..<w where mask[y * w + x] {
            let p = (y * w + x) * 3
            if isContour(mask, x, y, w, h, thickness) {
              out[p] = edge[0]
              out[p + 1] = edge[1]
              out[p + 2] = edge[2]
            } else {
              for c in 0..<3 {
                out[p + c] = UInt8(Double(out[p + c]) * (1 - alpha) + fill[c] * alpha + 0.5)
              }
            }
          }
        }
      }
    }
  }

  var result = RGBImage(width: w, height: h, pixels: out)
  let lineWidth = max(2, min(w, h) / 300)
  for box in boxes { drawRectangle(&result, box, color: OverlayStyle.box, lineWidth: lineWidth) }
  let radius = max(4.0, Double(min(w, h)) / 60)
  for marker in points {
    let color = marker.positive ? OverlayStyle.positivePoint : OverlayStyle.negativePoint
    let (x, y) = (marker.point.x, marker.point.y)
    drawDisc(
      &result, x: x, y: y, radius: radius + max(1.5, radius / 4), color: RGBColor(255, 255, 255))
    drawDisc(&result, x: x, y: y, radius: radius, color: color)
  }
  return result
}

/// The same with masks given as gray images (non-zero = inside).
public func overlay(
  masks: [GrayImage], on image: RGBImage, colors: [RGBColor] = [], opacity: Double = 0.45,
  points: [PointMarker] = [], boxes: [Box] = []
) -> RGBImage {
  for (i, mask) in masks.enumerated() {
    precondition(
      mask.width == image.width && mask.height == image.height,
      "mask \(i) is \(mask.width)×\(mask.height), the image \(image.width)×\(image.height)")
  }
  return overlay(
    masks: masks.map { $0.pixels.map { $0 != 0 } }, on: image, colors: colors, opacity: opacity,
    points: points, boxes: boxes)
}

/// Whether a mask pixel lies within `thickness` pixels (Chebyshev) of a pixel outside the
/// mask. The image border does not count as outside, so masks touching it are not framed.
@inline(__always)
private func isContour(
  _ mask: UnsafeBufferPointer<Bool>, _ x: Int, _ y: Int, _ w: Int, _ h: Int, _ thickness: Int
) -> Bool {
  for yy in max(0, y - thickness)...min(h - 1, y + thickness) {
    for xx in max(0, x - thickness)...min(w - 1, x + thickness) where !mask[yy * w + xx] {
      return true
    }
  }
  return false
}

private func drawRectangle(
  _ image: inout RGBImage, _ box: Box, color: RGBColor, lineWidth: Int
) {
  let w = image.width
  let h = image.height
  func clampX(_ v: Double) -> Int { pixelIndex(v.rounded(), limit: w) }
  func clampY(_ v: Double) -> Int { pixelIndex(v.rounded(), limit: h) }
  let x0 = clampX(min(box.x0, box.x1))
  let x1 = clampX(max(box.x0, box.x1))
  let y0 = clampY(min(box.y0, box.y1))
  let y1 = clampY(max(box.y0, box.y1))
  func set(_ x: Int, _ y: Int) {
    let p = (y * w + x) * 3
    image.pixels[p] = color.r
    image.pixels[p + 1] = color.g
    image.pixels[p + 2] = color.b
  }
  // The line grows inwards from the box edge so it never hides pixels outside the box.
  for t in 0..<lineWidth {
    let top = min(y0 + t, y1)
    let bottom = max(y1 - t, y0)
    let left = min(x0 + t, x1)
    let right = max(x1 - t, x0)
    for x in x0...x1 {
      set(x, top)
      set(x, bottom)
    }
    for y in y0...y1 {
      set(left, y)
      set(right, y)
    }
  }
}

/// `v` clamped to the pixel indices 0…limit−1 before it becomes an Int, so any finite or
/// infinite coordinate is safe (NaN goes to 0).
private func pixelIndex(_ v: Double, limit: Int) -> Int {
  guard v > 0 else { return 0 }
  return v >= Double(limit - 1) ? limit - 1 : Int(v)
}

/// An antialiased filled disc centred on pixel coordinates (x, y).
private func drawDisc(
  _ image: inout RGBImage, x: Double, y: Double, radius: Double, color: RGBColor
) {
  let w = image.width
  let h = image.height
  guard x.isFinite, y.isFinite, radius.isFinite else { return }
  // A disc wholly outside the image draws nothing; clamping in Double first keeps far-away
  // centres (1e20) from overflowing the conversion to Int.
  guard x + radius + 1 >= 0, x - radius - 1 <= Double(w - 1),
    y + radius + 1 >= 0, y - radius - 1 <= Double(h - 1)
  else { return }
  let xmin = pixelIndex((x - radius - 1).rounded(.down), limit: w)
  let xmax = pixelIndex((x + radius + 1).rounded(.up), limit: w)
  let ymin = pixelIndex((y - radius - 1).rounded(.down), limit: h)
  let ymax = pixelIndex((y + radius + 1).rounded(.up), limit: h)
  let target = [Double(color.r), Double(color.g), Double(color.b)]
  for py in ymin...ymax {
    for px in xmin...xmax {
      let d = ((Double(px) - x) * (Double(px) - x) + (Double(py) - y) * (Double(py) - y))
        .squareRoot()
      let coverage = min(max(radius + 0.5 - d, 0), 1)
      guard coverage > 0 else { continue }
      let p = (py * w + px) * 3
      for c in 0..<3 {
        image.pixels[p + c] = UInt8(
          Double(image.pixels[p + c]) * (1 - coverage) + target[c] * coverage + 0.5)
      }
    }
  }
}
