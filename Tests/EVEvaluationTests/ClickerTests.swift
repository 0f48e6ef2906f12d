import EVEvaluation
import EVMask
import Foundation
import Testing
import TestSupport

/// `coco/clicks.json`: the official Clicker (cv2 exact distance transform) on successive
/// predictions.
@Suite struct ClickerTests {
  struct Fixture: Decodable {
    struct Case: Decodable {
      let gt: RLE
      let preds: [String]
      let clicks: [Click]
    }
    let cases: [Case]
  }

  @Test func clicksMatchTheOfficialClicker() throws {
    let fixture = try JSONDecoder().decode(
      Fixture.self, from: Data(contentsOf: Fixtures.url("coco/clicks.json")))
    #expect(fixture.cases.count >= 5)
    var negatives = 0
    for (c, testCase) in fixture.cases.enumerated() {
      let h = testCase.gt.height, w = testCase.gt.width
      var clicker = Clicker(groundTruth: testCase.gt.decodeRowMajorBool(), height: h, width: w)
      #expect(testCase.preds.count == testCase.clicks.count)
      for (i, counts) in testCase.preds.enumerated() {
        let prediction = try RLE(compressed: counts, height: h, width: w).decodeRowMajorBool()
        let click = clicker.nextClick(prediction: prediction)
        #expect(click == testCase.clicks[i], "case \(c) click \(i)")
        if !click.positive { negatives += 1 }
      }
      #expect(clicker.clicks == testCase.clicks)
    }
    #expect(negatives > 0, "the fixture exercises negative clicks")
  }

  /// Brute force: distance to the nearest background pixel (the border counts as background).
  @Test func distanceTransformIsExactEuclidean() {
    var rng = SystemRandomNumberGenerator()
    for (h, w) in [(1, 1), (5, 9), (17, 12), (30, 31)] {
      for density in [0.5, 0.9, 1.0] {
        let mask = (0..<h * w).map { _ in Double.random(in: 0..<1, using: &rng) < density }
        let d = euclideanDistanceTransform(mask, height: h, width: w)
        for y in 0..<h {
          for x in 0..<w {
            var best = Int.max
            for yy in -1...h {
              for xx in -1...w {
                let background = yy < 0 || yy >= h || xx < 0 || xx >= w || !mask[yy * w + xx]
                if background { best = min(best, (yy - y) * (yy - y) + (xx - x) * (xx - x)) }
              }
            }
            #expect(d[y * w + x] == Float(best).squareRoot(), "\(h)×\(w) at (\(x), \(y))")
          }
        }
      }
    }
  }

  @Test func perfectPredictionGivesTheNegativeCornerClick() {
    let gt = [false, true, true, false]
    var clicker = Clicker(groundTruth: gt, height: 2, width: 2)
    #expect(clicker.nextClick(prediction: gt) == Click(positive: false, x: 0, y: 0))
  }
}
