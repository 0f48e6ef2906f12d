import EVImage
import Foundation

/// The picture of a run that `evsam train` writes as `loss.png`: the training loss per step
/// (raw, faint, and its trailing moving average) and, when the run validates, the validation
/// mIoU in a panel below on the same step axis; axes with tick labels, grids and legends.
package struct LossPlot {
  /// (step, loss) of every step so far.
  package var losses: [(step: Int, value: Double)]
  /// (step, mIoU) of every validation so far.
  package var validations: [(step: Int, value: Double)]
  /// The run's last step: the step axis spans the whole run while it is under way.
  package var totalSteps: Int

  package init(
    losses: [(step: Int, value: Double)], validations: [(step: Int, value: Double)],
    totalSteps: Int
  ) {
    self.losses = losses
    self.validations = validations
    self.totalSteps = totalSteps
  }

  static let width = 960
  static let height = 680
  static let scale = 2
  static let left = 100
  static let right = 30
  static let ink = RGBColor(40, 40, 40)
  static let frame = RGBColor(150, 150, 150)
  static let grid = RGBColor(232, 232, 232)
  static let lossColor = RGBColor(31, 119, 180)
  static let validationColor = RGBColor(230, 110, 20)

  /// Points of the moving average: the mean of the last `window` losses at each step.
  package static func movingAverage(_ values: [Double], window: Int) -> [Double] {
    var out: [Double] = []
    out.reserveCapacity(values.count)
    var sum = 0.0
    for (i, v) in values.enumerated() {
      sum += v
      if i >= window { sum -= values[i - window] }
      out.append(sum / Double(min(i + 1, window)))
    }
    return out
  }

  /// The window of the moving average: a twentieth of the run so far, at least 5 steps.
  package static func window(count: Int) -> Int { max(1, min(count, max(5, count / 20))) }

  package func render() -> RGBImage {
    var canvas = Canvas(width: Self.width, height: Self.height, background: RGBColor(255, 255, 255))
    let xRange = (lo: 0.0, hi: Double(max(totalSteps, losses.last?.step ?? 1, 1)))
    let plotWidth = Self.width - Self.left - Self.right
    let lossPanel: Panel
    if validations.isEmpty {
      lossPanel = Panel(x: Self.left, y: 50, width: plotWidth, height: Self.height - 130)
    } else {
      lossPanel = Panel(x: Self.left, y: 50, width: plotWidth, height: 360)
    }
    let values = losses.map(\.value)
    let window = Self.window(count: values.count)
    let lossRange = Self.padded(values)
    lossPanel.drawAxes(
      &canvas, title: "training loss", x: xRange, y: lossRange, xLabel: validations.isEmpty)
    if !losses.isEmpty {
      let raw = Self.decimated(losses, buckets: 2 * plotWidth)
      canvas.stroke(
        raw.map { lossPanel.point($0.step, $0.value, x: xRange, y: lossRange) },
        color: Self.lossColor, lineWidth: 1.2, opacity: 0.4, clip: lossPanel.clip)
      let average = zip(losses, Self.movingAverage(values, window: window)).map {
        (step: $0.step, value: $1)
      }
      canvas.stroke(
        Self.decimated(average, buckets: 2 * plotWidth).map {
          lossPanel.point($0.step, $0.value, x: xRange, y: lossRange)
        }, color: Self.lossColor, lineWidth: 2.5, clip: lossPanel.clip)
    }
    lossPanel.legend(
      &canvas,
      [
        (label: "loss", color: Self.lossColor, opacity: 0.4, marker: false),
        (label: "moving average (\(window))", color: Self.lossColor, opacity: 1, marker: false),
      ])
    if !validations.isEmpty {
      let panel = Panel(x: Self.left, y: 490, width: plotWidth, height: 110)
      let range = Self.padded(validations.map(\.value))
      panel.drawAxes(&canvas, title: "validation mIoU", x: xRange, y: range, xLabel: true)
      let points = validations.map { panel.point($0.step, $0.value, x: xRange, y: range) }
      canvas.stroke(
        points, color: Self.validationColor, lineWidth: 2, clip: panel.clip)
      for p in points {
        canvas.stroke(
          [p], color: Self.validationColor, lineWidth: 7, clip: panel.clip)
      }
      panel.legend(
        &canvas, [(label: "val mIoU", color: Self.validationColor, opacity: 1, marker: true)])
    }
    return canvas.image
  }

  /// The data's range with 5 % room on each side (a little room around a single value).
  static func padded(_ values: [Double]) -> (lo: Double, hi: Double) {
    let finite = values.filter(\.isFinite)
    guard let lo = finite.min(), let hi = finite.max() else { return (0, 1) }
    let room = hi > lo ? (hi - lo) * 0.05 : max(abs(hi) * 0.05, 0.05)
    return (lo - room, hi + room)
  }

  /// At most `buckets` groups of consecutive points, each kept as its lowest and highest
  /// value in the order they came: a long run drawn this way keeps its envelope.
  static func decimated(_ series: [(step: Int, value: Double)], buckets: Int) -> [(
    step: Int, value: Double
  )] {
    guard series.count > 2 * buckets else { return series }
    var out: [(step: Int, value: Double)] = []
    let size = (series.count + buckets - 1) / buckets
    for start in stride(from: 0, to: series.count, by: size) {
      let group = series[start..<min(start + size, series.count)]
      let low = group.min { $0.value < $1.value }!
      let high = group.max { $0.value < $1.value }!
      out += low.step <= high.step ? [low, high] : [high, low]
    }
    return out
  }

  /// 1, 2 or 5 × 10ᵏ: the tick spacing that gives at most `count` ticks over `range`.
  package static func tickStep(_ range: Double, count: Int) -> Double {
    guard range > 0, range.isFinite else { return 1 }
    let rough = range / Double(max(count, 1))
    let magnitude = pow(10, (log10(rough)).rounded(.down))
    for factor in [1.0, 2, 5, 10] where magnitude * factor >= rough { return magnitude * factor }
    return magnitude * 10
  }

  /// A tick's label with as many decimals as the spacing needs.
  package static func label(_ value: Double, step: Double) -> String {
    let decimals = step >= 1 ? 0 : Int((-log10(step)).rounded(.up))
    let text = String(format: "%.\(decimals)f", value)
    return text.hasPrefix("-") && Double(text) == 0 ? String(text.dropFirst()) : text
  }

  /// One plotting area in canvas pixels.
  struct Panel {
    let x: Int
    let y: Int
    let width: Int
    let height: Int

    var clip: (x: Int, y: Int, width: Int, height: Int) { (x, y, width + 1, height + 1) }

    func point(
      _ step: Int, _ value: Double, x xr: (lo: Double, hi: Double), y yr: (lo: Double, hi: Double)
    )
      -> (x: Double, y: Double)
    {
      let u = (Double(step) - xr.lo) / max(xr.hi - xr.lo, 1e-12)
      let v = (value - yr.lo) / max(yr.hi - yr.lo, 1e-12)
      return (Double(x) + u * Double(width), Double(y) + (1 - v) * Double(height))
    }

    /// Grid, frame, tick labels on both axes and the panel's title above it; "step" under the
    /// tick labels of the bottom panel.
    func drawAxes(
      _ canvas: inout Canvas, title: String, x xr: (lo: Double, hi: Double),
      y yr: (lo: Double, hi: Double), xLabel: Bool
    ) {
      let s = LossPlot.scale
      let glyph = BitmapFont.capHeight * s
      let yStep = LossPlot.tickStep(yr.hi - yr.lo, count: max(3, height / 60))
      var v = (yr.lo / yStep).rounded(.up) * yStep
      while v <= yr.hi + yStep * 1e-9 {
        let py = Int(point(0, v, x: xr, y: yr).y.rounded())
        canvas.fill(x: x, y: py, width: width, height: 1, color: LossPlot.grid)
        let text = LossPlot.label(v, step: yStep)
        canvas.text(
          text, x: x - 10 - BitmapFont.width(text, scale: s), y: py - glyph / 2, scale: s,
          color: LossPlot.ink)
        v += yStep
      }
      let xStep = max(LossPlot.tickStep(xr.hi - xr.lo, count: 8), 1)
      var t = (xr.lo / xStep).rounded(.up) * xStep
      while t <= xr.hi + xStep * 1e-9 {
        let px = Int(point(Int(t), yr.lo, x: xr, y: yr).x.rounded())
        canvas.fill(x: px, y: y, width: 1, height: height, color: LossPlot.grid)
        canvas.fill(x: px, y: y + height, width: 1, height: 6, color: LossPlot.frame)
        let text = LossPlot.label(t, step: xStep)
        canvas.text(
          text, x: px - BitmapFont.width(text, scale: s) / 2, y: y + height + 12, scale: s,
          color: LossPlot.ink)
        t += xStep
      }
      for (fx, fy, fw, fh) in [
        (x, y, width + 1, 1), (x, y + height, width + 1, 1), (x, y, 1, height + 1),
        (x + width, y, 1, height + 1),
      ] {
        canvas.fill(x: fx, y: fy, width: fw, height: fh, color: LossPlot.frame)
      }
      canvas.text(title, x: x, y: y - glyph - 12, scale: s, color: LossPlot.ink)
      if xLabel {
        canvas.text(
          "step", x: x + width / 2 - BitmapFont.width("step", scale: s) / 2,
          y: y + height + 24 + glyph, scale: s, color: LossPlot.ink)
      }
    }

    /// A boxed legend in the top-right corner: a line sample (with a dot for markers) per
    /// entry and its label.
    func legend(
      _ canvas: inout Canvas,
      _ entries: [(label: String, color: RGBColor, opacity: Double, marker: Bool)]
    ) {
      let s = LossPlot.scale
      let rowHeight = BitmapFont.capHeight * s + 10
      let sample = 36
      let textWidth = entries.map { BitmapFont.width($0.label, scale: s) }.max() ?? 0
      let boxWidth = sample + textWidth + 30
      let boxHeight = entries.count * rowHeight + 10
      let bx = x + width - boxWidth - 10
      let by = y + 10
      canvas.fill(
        x: bx, y: by, width: boxWidth, height: boxHeight, color: RGBColor(255, 255, 255),
        opacity: 0.9)
      for (fx, fy, fw, fh) in [
        (bx, by, boxWidth, 1), (bx, by + boxHeight, boxWidth, 1), (bx, by, 1, boxHeight),
        (bx + boxWidth, by, 1, boxHeight + 1),
      ] {
        canvas.fill(x: fx, y: fy, width: fw, height: fh, color: LossPlot.grid)
      }
      for (i, entry) in entries.enumerated() {
        let cy = Double(by + 5 + i * rowHeight + rowHeight / 2)
        let lx = Double(bx + 10)
        canvas.stroke(
          [(lx, cy), (lx + Double(sample - 8), cy)], color: entry.color,
          lineWidth: entry.opacity < 1 ? 1.5 : 2.5, opacity: entry.opacity)
        if entry.marker {
          canvas.stroke(
            [(lx + Double(sample - 8) / 2, cy)], color: entry.color, lineWidth: 7)
        }
        canvas.text(
          entry.label, x: bx + sample + 12, y: Int(cy) - BitmapFont.capHeight * s / 2, scale: s,
          color: LossPlot.ink)
      }
    }
  }
}
