/// A small RGB rasteriser for the charts the project writes (training curves): filled
/// rectangles, antialiased polylines and bitmap-font text, over an opaque background.
package struct Canvas {
  package let width: Int
  package let height: Int
  /// `height * width * 3` bytes, as `RGBImage` keeps them.
  package private(set) var pixels: [UInt8]

  package init(width: Int, height: Int, background: RGBColor) {
    self.width = width
    self.height = height
    pixels = RGBImage(width: width, height: height, color: background).pixels
  }

  package var image: RGBImage { RGBImage(width: width, height: height, pixels: pixels) }

  /// A rectangle of pixels `x..<x+w`, `y..<y+h`, clipped to the canvas, mixed over what is
  /// there with weight `opacity`.
  package mutating func fill(
    x: Int, y: Int, width w: Int, height h: Int, color: RGBColor, opacity: Double = 1
  ) {
    for py in max(y, 0)..<max(min(y + h, height), max(y, 0)) {
      for px in max(x, 0)..<max(min(x + w, width), max(x, 0)) {
        blend(px, py, color, opacity)
      }
    }
  }

  /// A polyline of `lineWidth` pixels through `points` (pixel coordinates, (0, 0) the top-left
  /// corner of the first pixel), antialiased by the distance of each pixel's centre to the
  /// nearest segment. Coverage is gathered over the whole line before it is mixed in, so a
  /// translucent line does not darken where its segments meet. Pixels outside `clip`
  /// (x, y, width, height) are left alone.
  package mutating func stroke(
    _ points: [(x: Double, y: Double)], color: RGBColor, lineWidth: Double, opacity: Double = 1,
    clip: (x: Int, y: Int, width: Int, height: Int)? = nil
  ) {
    guard !points.isEmpty else { return }
    let area = clip ?? (0, 0, width, height)
    let x0 = max(area.x, 0)
    let y0 = max(area.y, 0)
    let x1 = min(area.x + area.width, width)
    let y1 = min(area.y + area.height, height)
    guard x1 > x0, y1 > y0 else { return }
    let cw = x1 - x0
    var coverage = [Double](repeating: 0, count: cw * (y1 - y0))
    let half = lineWidth / 2
    let segments =
      points.count == 1 ? [(points[0], points[0])] : Array(zip(points, points.dropFirst()))
    for (a, b) in segments {
      let lx = max(Int((min(a.x, b.x) - half - 1).rounded(.down)), x0)
      let hx = min(Int((max(a.x, b.x) + half + 1).rounded(.up)), x1)
      let ly = max(Int((min(a.y, b.y) - half - 1).rounded(.down)), y0)
      let hy = min(Int((max(a.y, b.y) + half + 1).rounded(.up)), y1)
      guard hx > lx, hy > ly else { continue }
      for py in ly..<hy {
        for px in lx..<hx {
          let d = Self.distance(x: Double(px) + 0.5, y: Double(py) + 0.5, a, b)
          let c = min(max(half + 0.5 - d, 0), 1)
          let i = (py - y0) * cw + (px - x0)
          if c > coverage[i] { coverage[i] = c }
        }
      }
    }
    for py in y0..<y1 {
      for px in x0..<x1 {
        let c = coverage[(py - y0) * cw + (px - x0)]
        if c > 0 { blend(px, py, color, c * opacity) }
      }
    }
  }

  /// `text` in the bitmap font with its top-left corner at (x, y), each font pixel a
  /// `scale × scale` square. Characters the font lacks are drawn as hollow boxes, so a
  /// missing glyph shows instead of vanishing.
  package mutating func text(_ text: String, x: Int, y: Int, scale: Int, color: RGBColor) {
    var left = x
    for character in text {
      let rows =
        BitmapFont.glyph(character)
        ?? ["#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####"]
      for (r, row) in rows.enumerated() {
        for (c, bit) in row.enumerated() where bit == "#" {
          fill(x: left + c * scale, y: y + r * scale, width: scale, height: scale, color: color)
        }
      }
      left += BitmapFont.advance * scale
    }
  }

  private mutating func blend(_ x: Int, _ y: Int, _ color: RGBColor, _ weight: Double) {
    let i = (y * width + x) * 3
    let w = min(max(weight, 0), 1)
    for (k, v) in [color.r, color.g, color.b].enumerated() {
      let mixed = Double(pixels[i + k]) * (1 - w) + Double(v) * w
      pixels[i + k] = UInt8(min(max(mixed.rounded(), 0), 255))
    }
  }

  /// Distance from (x, y) to the segment a–b.
  private static func distance(
    x: Double, y: Double, _ a: (x: Double, y: Double), _ b: (x: Double, y: Double)
  ) -> Double {
    let dx = b.x - a.x
    let dy = b.y - a.y
    let length2 = dx * dx + dy * dy
    let t = length2 == 0 ? 0 : min(max(((x - a.x) * dx + (y - a.y) * dy) / length2, 0), 1)
    let px = a.x + t * dx - x
    let py = a.y + t * dy - y
    return (px * px + py * py).squareRoot()
  }
}
