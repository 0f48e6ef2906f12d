import EVEvaluation
import EVMask
import Foundation
import TestSupport
import Testing

/// `coco/eval.json` (pycocotools COCOeval) and `coco/lvis_eval.json` (lvis 0.5.3 LVISEval).
@Suite struct COCOEvalFixtureTests {
  struct Expected: Decodable {
    let segm: [Double]
    let bbox: [Double]
    let segm_maxdets_1_5_20: [Double]
  }

  func load() throws -> (COCODataset, [RawResult], Expected) {
    let gt = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
    let dt = try ResultsFile.load(contentsOf: Fixtures.url("coco/dt.json"))
    let expected = try JSONDecoder().decode(
      Expected.self, from: Data(contentsOf: Fixtures.url("coco/eval.json")))
    return (gt, dt, expected)
  }

  func expectClose(_ a: [Double], _ b: [Double], _ what: String) {
    #expect(a.count == b.count, "\(what): \(a.count) numbers, expected \(b.count)")
    for (i, (x, y)) in zip(a, b).enumerated() {
      #expect(abs(x - y) <= 1e-12, "\(what)[\(i)] = \(x), pycocotools \(y)")
    }
  }

  @Test func segmStatsMatchPycocotools() throws {
    let (gt, dt, expected) = try load()
    let summary = try COCOEvaluator.evaluate(
      groundTruth: gt, results: dt, parameters: .init(iouType: .segm))
    expectClose(summary.stats, expected.segm, "segm")
    #expect(summary.lines.count == 12)
    #expect(
      summary.lines[0]
        == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = \(String(format: "%.3f", expected.segm[0]))"
    )
    #expect(
      summary.lines[9].hasPrefix(
        " Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = "))
    #expect(
      summary.lines[1].hasPrefix(
        " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = "))
  }

  @Test func bboxStatsMatchPycocotools() throws {
    let (gt, dt, expected) = try load()
    let summary = try COCOEvaluator.evaluate(
      groundTruth: gt, results: dt, parameters: .init(iouType: .bbox))
    expectClose(summary.stats, expected.bbox, "bbox")
  }

  @Test func customMaxDetsMatchPycocotools() throws {
    let (gt, dt, expected) = try load()
    let summary = try COCOEvaluator.evaluate(
      groundTruth: gt, results: dt, parameters: .init(iouType: .segm, maxDetections: [1, 5, 20]))
    expectClose(summary.stats, expected.segm_maxdets_1_5_20, "segm maxDets 1,5,20")
    #expect(summary.stats[0] == -1)
    #expect(summary.lines[0].hasSuffix("maxDets=100 ] = -1.000"))
  }

  @Test func lvisMatchesOfficialLVISEval() throws {
    let gt = try COCODataset.load(contentsOf: Fixtures.url("coco/lvis_gt.json"))
    let dt = try ResultsFile.load(contentsOf: Fixtures.url("coco/lvis_dt.json"))
    let json = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("coco/lvis_eval.json")))
        as? [String: Any])
    #expect(gt.looksLikeLVIS)
    for type in IoUType.allCases {
      let expected = try #require(json[type.rawValue] as? [String: Double])
      let summary = try LVISEvaluator.evaluate(groundTruth: gt, results: dt, iouType: type)
      #expect(summary.results.count == expected.count)
      for (name, value) in expected {
        let ours = try #require(summary[name], "missing \(name)")
        #expect(abs(ours - value) <= 1e-12, "\(type) \(name) = \(ours), lvis \(value)")
      }
      #expect(summary.lines[6].contains("catIds=  r] = "))
    }
  }

  @Test func emptyAndMismatchedResultsAreRejected() throws {
    let (gt, dt, _) = try load()
    #expect(throws: EvaluationError.self) {
      try COCOEvaluator.evaluate(groundTruth: gt, results: [], parameters: .init(iouType: .segm))
    }
    var stray = dt
    stray[3].imageID = 999
    #expect(throws: EvaluationError.unknownImages(what: "results", ids: [999])) {
      try COCOEvaluator.evaluate(groundTruth: gt, results: stray, parameters: .init(iouType: .segm))
    }
    var noScore = dt
    noScore[0].score = nil
    #expect(throws: EvaluationError.self) {
      try COCOEvaluator.evaluate(
        groundTruth: gt, results: noScore, parameters: .init(iouType: .bbox))
    }
    #expect(throws: EvaluationError.self) {
      try ResultsFile.decode(
        Data("[{\"image_id\": 1, \"category_id\": ".utf8), source: "broken.json")
    }
    #expect(throws: EvaluationError.self) {
      try COCODataset(jsonData: Data("{\"images\": [{\"id\": 1}]}".utf8), source: "gt.json")
    }
  }

  @Test func resultsInUnknownCategoriesAreCountedNotScored() throws {
    let (gt, dt, expected) = try load()
    var extra = dt
    extra.append(
      RawResult(
        imageID: 1, categoryID: 77, score: 0.99, bbox: dt[0].bbox, segmentation: dt[0].segmentation)
    )
    let summary = try COCOEvaluator.evaluate(
      groundTruth: gt, results: extra, parameters: .init(iouType: .bbox))
    #expect(summary.warnings.contains { $0.hasPrefix("1 result(s) have category ids absent") })
    for (x, y) in zip(summary.stats, expected.bbox) { #expect(abs(x - y) <= 1e-12) }
  }
}
