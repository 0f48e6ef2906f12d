import EVImage
import EVTraining
import Foundation
import Testing

/// `loss.png`: its numbers (moving average, ticks, labels), that every caption it writes has
/// glyphs, and that the curves land in their panels in their colours.
@Suite struct LossPlotTests {
  @Test func movingAverageTicksAndLabels() {
    #expect(LossPlot.movingAverage([1, 2, 3, 4, 5], window: 2) == [1, 1.5, 2.5, 3.5, 4.5])
    #expect(LossPlot.window(count: 3) == 3)
    #expect(LossPlot.window(count: 20) == 5)
    #expect(LossPlot.window(count: 1000) == 50)
    #expect(LossPlot.tickStep(10, count: 5) == 2)
    #expect(LossPlot.tickStep(0.37, count: 4) == 0.1)
    #expect(LossPlot.tickStep(2000, count: 8) == 500)
    #expect(LossPlot.label(0.30000000000000004, step: 0.1) == "0.3")
    #expect(LossPlot.label(1500, step: 500) == "1500")
    #expect(LossPlot.label(-0.0, step: 0.05) == "0.00")
  }

  @Test func everyCaptionHasGlyphs() {
    let captions =
      "training loss validation mIoU step loss moving average (50) val mIoU 0123456789.-"
    let missing = captions.filter { BitmapFont.glyph($0) == nil }
    #expect(missing.isEmpty, "no glyph for \(missing)")
  }

  @Test func curvesAreDrawnInTheirPanels() throws {
    var rng = SystemRandomNumberGenerator()
    let losses = (1...300).map { step in
      (step: step, value: 3 / (1 + Double(step) / 40) + Double.random(in: 0..<0.4, using: &rng))
    }
    let validations = stride(from: 50, through: 300, by: 50).map {
      (step: $0, value: 0.3 + 0.5 * Double($0) / 300)
    }
    let image = LossPlot(losses: losses, validations: validations, totalSteps: 400).render()
    #expect(image.width == 960 && image.height == 680)
    func count(_ color: RGBColor, rows: Range<Int>) -> Int {
      var n = 0
      for y in rows {
        for x in 0..<image.width where image[x: x, y: y] == color { n += 1 }
      }
      return n
    }
    // The moving average's full colour in the loss panel, the validation's below it.
    #expect(count(RGBColor(31, 119, 180), rows: 50..<411) > 300)
    #expect(count(RGBColor(230, 110, 20), rows: 490..<601) > 100)
    #expect(count(RGBColor(230, 110, 20), rows: 0..<470) < 60, "only the legend's sample")

    if let folder = ProcessInfo.processInfo.environment["EVSAM_PLOT_DIR"] {
      try image.write(to: URL(fileURLWithPath: folder).appendingPathComponent("loss.png"))
      let lossOnly = LossPlot(losses: Array(losses.prefix(20)), validations: [], totalSteps: 20)
      try lossOnly.render().write(
        to: URL(fileURLWithPath: folder).appendingPathComponent("loss-only.png"))
    }
  }
}
