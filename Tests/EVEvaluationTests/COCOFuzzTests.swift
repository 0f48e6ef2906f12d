import EVEvaluation
import EVMask
import Foundation
import TestSupport
import Testing

/// COCO and LVIS files with damaged values — extreme and negative numbers, wrong types,
/// missing keys — loaded and evaluated. Each must evaluate or throw an `EvaluationError`;
/// none may trap or allocate in proportion to a coordinate (a polygon vertex at 3e8 once
/// made the rasteriser allocate 27 GB).
@Suite struct COCOFuzzTests {
  static var extremes: [Any] {
    [
      3e8, -3e8, 1e308, -1e308, 0, -1, -5, 1.5, 2_147_483_648, 4_294_967_296, 9e15, "x", [Any](),
      [String: Any](), NSNull(), true,
    ]
  }

  /// A copy of `value` with one number, string, list or object somewhere inside replaced,
  /// removed or emptied.
  static func mutate(_ value: Any, rng: inout Fuzz.Generator, depth: Int = 0) -> Any {
    let stop = depth > 0 && Int.random(in: 0..<4, using: &rng) == 0
    if var object = value as? [String: Any], !object.isEmpty, !stop {
      let key = object.keys.sorted().randomElement(using: &rng)!
      if Int.random(in: 0..<8, using: &rng) == 0 {
        object[key] = nil
      } else {
        object[key] = mutate(object[key]!, rng: &rng, depth: depth + 1)
      }
      return object
    }
    if var list = value as? [Any], !list.isEmpty, !stop {
      let i = Int.random(in: 0..<list.count, using: &rng)
      list[i] = mutate(list[i], rng: &rng, depth: depth + 1)
      return list
    }
    return extremes.randomElement(using: &rng)!
  }

  /// A polygon of the ground truth or a detection pushed far off its image.
  static func farPolygon(_ value: Any, rng: inout Fuzz.Generator) -> Any {
    guard var object = value as? [String: Any],
      var annotations = object["annotations"] as? [[String: Any]], !annotations.isEmpty
    else { return value }
    let i = Int.random(in: 0..<annotations.count, using: &rng)
    let far = [3e8, -3e8, 2e9, 1e12].randomElement(using: &rng)!
    annotations[i]["segmentation"] = [[10.0, 10.0, far, 20.0, 30.0, far, 5.0, 35.0]]
    object["annotations"] = annotations
    return object
  }

  @Test func damagedAnnotationFilesEvaluateOrThrow() throws {
    let gtObject = try JSONSerialization.jsonObject(
      with: Data(contentsOf: Fixtures.url("coco/gt.json")))
    let dtObject = try JSONSerialization.jsonObject(
      with: Data(contentsOf: Fixtures.url("coco/dt.json")))
    var rng = Fuzz.Generator(seed: 2026)
    var evaluated = 0
    let clock = ContinuousClock()
    for iteration in 0..<Fuzz.iterations(1500) {
      var gt = gtObject
      var dt = dtObject
      switch iteration % 4 {
      case 0: gt = Self.mutate(gt, rng: &rng)
      case 1: dt = Self.mutate(dt, rng: &rng)
      case 2: gt = Self.farPolygon(gt, rng: &rng)
      default:
        gt = Self.mutate(gt, rng: &rng)
        dt = Self.mutate(dt, rng: &rng)
      }
      let gtData = try JSONSerialization.data(withJSONObject: gt)
      let dtData = try JSONSerialization.data(withJSONObject: dt)
      let start = clock.now
      do {
        let dataset = try COCODataset(jsonData: gtData, source: "gt")
        let results = try ResultsFile.decode(dtData, source: "dt")
        for type in [IoUType.segm, .bbox] {
          _ = try COCOEvaluator.evaluate(
            groundTruth: dataset, results: results, parameters: .init(iouType: type))
        }
        evaluated += 1
      } catch {
        #expect(!"\(error)".isEmpty)
      }
      #expect(clock.now - start < .seconds(10), "iteration \(iteration) took too long")
    }
    #expect(evaluated > 0, "every mutation was refused: the generator never reaches evaluation")
  }
}
