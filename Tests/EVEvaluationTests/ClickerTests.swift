import EVEvaluation
import EVMask
import Foundation
import TestSupport
import Testing

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
      let h = testCase.gt.height
      let w = testCase.gt.width
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
    var rng = LCG(state: 7)
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

  /// The official rule spelled out on whole-image distance maps, against the cropped fast path.
  @Test func clickerMatchesTheWholeImageRule() {
    var rng = LCG(state: 11)
    func blobs(_ h: Int, _ w: Int, _ n: Int) -> [Bool] {
      var m = [Bool](repeating: false, count: h * w)
      for _ in 0..<n {
        let x0 = Int.random(in: 0..<w, using: &rng)
        let y0 = Int.random(in: 0..<h, using: &rng)
        let x1 = min(w, x0 + Int.random(in: 1...w / 2, using: &rng))
        let y1 = min(h, y0 + Int.random(in: 1...h / 2, using: &rng))
        for y in y0..<y1 { for x in x0..<x1 { m[y * w + x] = true } }
      }
      return m
    }
    for trial in 0..<20 {
      let h = 20 + trial
      let w = 33 - trial / 2
      let gt = blobs(h, w, 2)
      var clicker = Clicker(groundTruth: gt, height: h, width: w)
      var notClicked = [Bool](repeating: true, count: h * w)
      for round in 0..<4 {
        let prediction = round == 0 ? [Bool](repeating: false, count: h * w) : blobs(h, w, 2)
        let fn = euclideanDistanceTransform(
          (0..<h * w).map { gt[$0] && !prediction[$0] }, height: h, width: w)
        let fp = euclideanDistanceTransform(
          (0..<h * w).map { !gt[$0] && prediction[$0] }, height: h, width: w)
        let fnMasked = (0..<h * w).map { notClicked[$0] ? fn[$0] : 0 }
        let fpMasked = (0..<h * w).map { notClicked[$0] ? fp[$0] : 0 }
        let positive = fnMasked.max()! > fpMasked.max()!
        let map = positive ? fnMasked : fpMasked
        let index = map.firstIndex(of: map.max()!)!
        notClicked[index] = false
        let click = clicker.nextClick(prediction: prediction)
        #expect(
          click == Click(positive: positive, x: index % w, y: index / w),
          "trial \(trial) round \(round)")
      }
    }
  }

  @Test func perfectPredictionGivesTheNegativeCornerClick() {
    let gt = [false, true, true, false]
    var clicker = Clicker(groundTruth: gt, height: 2, width: 2)
    #expect(clicker.nextClick(prediction: gt) == Click(positive: false, x: 0, y: 0))
  }
}

/// Deterministic generator so failures reproduce.
struct LCG: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return state ^ (state >> 29)
  }
}
