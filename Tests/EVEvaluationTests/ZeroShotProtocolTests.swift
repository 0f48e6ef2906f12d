import EVEvaluation
import EVMask
import Foundation
import TestSupport
import Testing

/// The protocol's bookkeeping with a stand-in model: prompts, IoU, buckets, journal / resume,
/// shards and merge, bad inputs.
@Suite struct ZeroShotProtocolTests {
  @Test func boxPromptIoUsFollowTheOfficialFormula() throws {
    let data = try SmallDataset.make()
    let evaluator = try ZeroShotEvaluator(
      configuration: try data.configuration(.box), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    let segmenter = BoxSegmenter()
    let report = try evaluator.run(segmenter: segmenter, journal: nil)
    #expect(segmenter.encodes == 2)
    let annotations = try #require(report.annotations)
    #expect(annotations.map(\.id) == SmallDataset.objectIDs)
    for a in annotations {
      let gt = data.dataset.annotations.first { $0.id == a.id }!
      let image = data.dataset.images.first { $0.id == gt.imageID }!
      let box = RLE(box: gt.bbox!, height: image.height, width: image.width)
      #expect(a.iou == [try officialIoU(box, data.groundTruth(gt))], "annotation \(a.id)")
      #expect(a.area == gt.area)
    }
    let miou = try #require(report.miou?.first)
    let all = annotations.map { $0.iou[0] }.reduce(0, +) / Double(annotations.count)
    #expect(miou.all == all)
    #expect(miou.counts.all == 8)
    #expect(report.summaryLines[0].hasPrefix("all=\(String(format: "%.3f", all)), large="))
  }

  @Test func pointPromptsReportEachClickCount() throws {
    let data = try SmallDataset.make()
    let evaluator = try ZeroShotEvaluator(
      configuration: try data.configuration(.point, clicks: [3, 1]), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    let report = try evaluator.run(segmenter: BoxSegmenter(), journal: nil)
    #expect(report.configuration.clicks == [1, 3])
    for a in try #require(report.annotations) {
      let gt = data.dataset.annotations.first { $0.id == a.id }!
      let gtMask = try data.groundTruth(gt)
      let clicks = try #require(a.clicks)
      #expect(clicks.count == 3)
      // The official first click: maximum of the distance transform of the whole object.
      var clicker = Clicker(
        groundTruth: gtMask.decodeRowMajorBool(), height: gtMask.height, width: gtMask.width)
      #expect(
        clicker.nextClick(prediction: [Bool](repeating: false, count: gtMask.height * gtMask.width))
          == clicks[0])
      #expect(clicks[0].positive)
      // The stand-in segments the square around the first click, whatever the later clicks.
      let square = RLE(
        box: BoxXYWH(
          x: Double(clicks[0].x) - 10, y: Double(clicks[0].y) - 10, width: 21, height: 21),
        height: gtMask.height, width: gtMask.width)
      let expected = try officialIoU(square, gtMask)
      #expect(a.iou == [expected, expected], "annotation \(a.id)")
    }
    #expect(report.miou?.map(\.clicks) == [1, 3])
    #expect(report.summaryLines[1].hasPrefix("clicks=3: all="))
  }

  @Test func bucketsAreInclusiveLikeTheOfficialScript() {
    let summary = MIoUSummary(
      areas: [10, 1024, 5000, 9216, 20000], ious: [10, 20, 30, 40, 50], clicks: nil)
    #expect(summary.counts == .init(all: 5, large: 2, medium: 3, small: 2))
    #expect(summary.small == 15)
    #expect(summary.medium == 30)
    #expect(summary.large == 45)
    let empty = MIoUSummary(areas: [5000], ious: [70], clicks: nil)
    #expect(empty.small == nil)
    #expect(empty.line == "all=70.000, large=n/a, medium=70.000, small=n/a")
  }

  @Test func interruptedRunResumesFromTheJournal() throws {
    let data = try SmallDataset.make()
    let config = try data.configuration(.box)
    let journal = data.folder.appendingPathComponent("out.json.partial.jsonl")
    let failing = BoxSegmenter()
    failing.failOnEncode = 2
    let first = try ZeroShotEvaluator(
      configuration: config, dataset: data.dataset, imagesDirectory: try data.imagesURL)
    #expect(throws: EvaluationError.self) { try first.run(segmenter: failing, journal: journal) }
    let lines = try String(contentsOf: journal, encoding: .utf8).split(separator: "\n")
    #expect(lines.count == 2, "header + the one finished image")
    // A torn write at the end is tolerated: that image is redone.
    let handle = try FileHandle(forWritingTo: journal)
    try handle.seekToEnd()
    try handle.write(contentsOf: Data("{\"image_id\": 3, \"annot".utf8))
    try handle.close()

    let resumedSegmenter = BoxSegmenter()
    var progress: [(Int, Int, Int)] = []
    let resumed = try ZeroShotEvaluator(
      configuration: config, dataset: data.dataset, imagesDirectory: try data.imagesURL
    )
    .run(segmenter: resumedSegmenter, journal: journal) { progress.append(($0, $1, $2)) }
    #expect(resumedSegmenter.encodes == 1, "only the unfinished image is encoded again")
    #expect(progress.map(\.0) == [1, 2] && progress.allSatisfy { $0.1 == 2 && $0.2 == 1 })
    let fresh = try ZeroShotEvaluator(
      configuration: config, dataset: data.dataset, imagesDirectory: try data.imagesURL
    )
    .run(segmenter: BoxSegmenter(), journal: nil)
    #expect(resumed.annotations == fresh.annotations)
    #expect(resumed.miou == fresh.miou)

    // A journal from another configuration is refused, not mixed in.
    let other = try ZeroShotEvaluator(
      configuration: try data.configuration(.point), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    #expect(throws: EvaluationError.self) {
      try other.run(segmenter: BoxSegmenter(), journal: journal)
    }
  }

  @Test func shardsMergeIntoTheUnshardedReport() throws {
    let data = try SmallDataset.make()
    let whole = try ZeroShotEvaluator(
      configuration: try data.configuration(.point, clicks: [1, 2]), dataset: data.dataset,
      imagesDirectory: try data.imagesURL
    ).run(segmenter: BoxSegmenter(), journal: nil)
    var shards: [ZeroShotReport] = []
    for i in [1, 0] {
      let config = try data.configuration(.point, clicks: [1, 2], shard: Shard(index: i, count: 2))
      let evaluator = try ZeroShotEvaluator(
        configuration: config, dataset: data.dataset, imagesDirectory: try data.imagesURL)
      #expect(evaluator.imageCount == 1)
      let report = try evaluator.run(segmenter: BoxSegmenter(), journal: nil)
      #expect(report.note?.contains("evsam merge") == true)
      // Through the file format, as `evsam merge` reads them.
      let url = data.folder.appendingPathComponent("shard\(i).json")
      try report.write(to: url)
      shards.append(try ZeroShotReport.load(contentsOf: url))
    }
    let merged = try ShardMerger.merge(shards, groundTruth: nil)
    #expect(merged.annotations == whole.annotations)
    #expect(merged.miou == whole.miou)
    #expect(merged.imageIDs == whole.imageIDs)
    #expect(merged.configuration == whole.configuration)
    #expect(throws: EvaluationError.self) { try ShardMerger.merge([shards[0]], groundTruth: nil) }
    #expect(throws: EvaluationError.self) {
      try ShardMerger.merge([shards[0], shards[0]], groundTruth: nil)
    }
    #expect(throws: EvaluationError.self) {
      try ShardMerger.merge([shards[0], whole], groundTruth: nil)
    }
  }

  @Test func detectorMasksAreScoredWithCOCOeval() throws {
    let data = try SmallDataset.make()
    // Detector boxes: the ground-truth boxes, shifted, plus a false positive; categories kept.
    var detections = data.dataset.annotations.map { a in
      RawResult(
        imageID: a.imageID, categoryID: a.categoryID, score: 0.5 + Double(a.id) / 100,
        bbox: BoxXYWH(x: a.bbox!.x + 1, y: a.bbox!.y, width: a.bbox!.width, height: a.bbox!.height),
        segmentation: nil)
    }
    detections.append(
      RawResult(
        imageID: 2, categoryID: 1, score: 0.9, bbox: BoxXYWH(x: 0, y: 0, width: 50, height: 40),
        segmentation: nil))
    let report = try ZeroShotEvaluator(
      configuration: try data.configuration(.detector, detections: "dets.json"),
      dataset: data.dataset,
      detections: detections, imagesDirectory: try data.imagesURL
    ).run(segmenter: BoxSegmenter(), journal: nil)
    let scored = try #require(report.detections)
    #expect(scored.count == detections.count)
    for d in scored {
      guard case .compressedRLE(let h, let w, let counts) = d.segmentation else {
        Issue.record("detections carry compressed RLE masks")
        continue
      }
      let mask = try RLE(compressed: counts, height: h, width: w)
      #expect(mask == RLE(box: d.bbox!, height: h, width: w))
    }
    // The official evaluation drops the boxes, so areas come from the masks.
    let expected = try COCOEvaluator.evaluate(
      groundTruth: data.dataset,
      results: scored.map {
        RawResult(
          imageID: $0.imageID, categoryID: $0.categoryID, score: $0.score, bbox: nil,
          segmentation: $0.segmentation)
      },
      parameters: .init(iouType: .segm))
    #expect(report.coco == expected)
    #expect(expected.stats[0] > 0 && expected.stats[0] < 1)
    #expect(
      report.summaryLines.first?.hasPrefix(
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]") == true)

    #expect(throws: EvaluationError.emptyResults("the detections file is empty")) {
      try ZeroShotEvaluator(
        configuration: try data.configuration(.detector, detections: "dets.json"),
        dataset: data.dataset,
        detections: [], imagesDirectory: try data.imagesURL)
    }
  }

  @Test func lvisDetectorRunsUseLVISEval() throws {
    let gt = try COCODataset.load(contentsOf: Fixtures.url("coco/lvis_gt.json"))
    let data = try SmallDataset.write(gt)
    let boxes = try ResultsFile.load(contentsOf: Fixtures.url("coco/lvis_dt.json")).map {
      RawResult(
        imageID: $0.imageID, categoryID: $0.categoryID, score: $0.score, bbox: $0.bbox,
        segmentation: nil)
    }
    let config = try data.configuration(.detector, detections: "lvis_dt.json", dataset: .lvis)
    let report = try ZeroShotEvaluator(
      configuration: config, dataset: data.dataset, detections: boxes,
      imagesDirectory: try data.imagesURL
    ).run(segmenter: BoxSegmenter(), journal: nil)
    let expected = try LVISEvaluator.evaluate(
      groundTruth: data.dataset,
      results: (report.detections ?? []).map {
        RawResult(
          imageID: $0.imageID, categoryID: $0.categoryID, score: $0.score, bbox: nil,
          segmentation: $0.segmentation)
      }, iouType: .segm)
    #expect(report.lvis == expected)
    #expect(report.coco == nil)
    #expect(report.summaryLines.last?.hasPrefix("{'AP': ") == true)

    // A COCO file cannot be scored the LVIS way; that is said before any image is encoded.
    let coco = try SmallDataset.make()
    #expect(throws: EvaluationError.self) {
      try ZeroShotEvaluator(
        configuration: try coco.configuration(.detector, detections: "d.json", dataset: .lvis),
        dataset: coco.dataset,
        detections: boxes, imagesDirectory: try coco.imagesURL)
    }
  }

  @Test func missingImagesStopTheRunUnlessSkipped() throws {
    let data = try SmallDataset.make { d in d.images[0].fileName = "no-such-image.png" }
    #expect(throws: EvaluationError.self) {
      try ZeroShotEvaluator(
        configuration: try data.configuration(.box), dataset: data.dataset,
        imagesDirectory: try data.imagesURL)
    }
    let evaluator = try ZeroShotEvaluator(
      configuration: try data.configuration(.box, skipMissing: true), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    #expect(evaluator.imageCount == 1)
    #expect(
      evaluator.warnings.contains {
        $0.hasPrefix("1 image file(s) missing and skipped with their 4 object(s)")
      })
    let report = try evaluator.run(segmenter: BoxSegmenter(), journal: nil)
    #expect(report.annotations?.count == 4)
    #expect(report.warnings == evaluator.warnings)
  }

  @Test func unknownImagesAndTinyObjectsAreCountedWarnings() throws {
    let data = try SmallDataset.make { d in
      d.annotations[0].imageID = 42
      d.annotations[1].area = 0.5
    }
    let evaluator = try ZeroShotEvaluator(
      configuration: try data.configuration(.box), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    #expect(
      evaluator.warnings.contains(
        "1 annotation(s) refer to image ids not in the annotation file's images; skipped"))
    #expect(
      evaluator.warnings.contains(
        "1 annotation(s) with area < 1 skipped (as the official protocol does)"))
    let report = try evaluator.run(segmenter: BoxSegmenter(), journal: nil)
    #expect(report.annotations?.count == 6)
  }

  @Test func wrongImageSizeIsAnError() throws {
    let data = try SmallDataset.make { d in d.images[0].width += 1 }
    let evaluator = try ZeroShotEvaluator(
      configuration: try data.configuration(.box), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    #expect {
      try evaluator.run(segmenter: BoxSegmenter(), journal: nil)
    } throws: { error in
      guard case .imageSizeMismatch(let id, _, _, _) = error as? EvaluationError else {
        return false
      }
      return id == 2
    }
  }

  @Test func limitAndLVISPathsResolve() throws {
    let data = try SmallDataset.make { d in
      d.images[1].fileName = nil
      d.images[1].cocoURL = "http://images.cocodataset.org/val2017/chelsea.png"
    }
    // Official LVIS layout is <images>/val2017/<name>; a flat folder is accepted too.
    let evaluator = try ZeroShotEvaluator(
      configuration: try data.configuration(.box, limit: 2), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    #expect(evaluator.imageCount == 2)
    let limited = try ZeroShotEvaluator(
      configuration: try data.configuration(.box, limit: 1), dataset: data.dataset,
      imagesDirectory: try data.imagesURL)
    #expect(limited.imageCount == 1)
  }

  @Test func progressLineShowsRateAndETA() {
    var clock = 100.0
    var written: [String] = []
    let progress = ProgressReporter(
      total: 10, alreadyDone: 2, interactive: false, logInterval: 0, now: { clock },
      write: { written.append($0) })
    clock += 4
    progress.advance(by: 2)
    #expect(written.last == "[#########---------------] 4/10 images  0.50 images/s  ETA 12s\n")
    clock += 600
    progress.advance(by: 6)
    #expect(
      written.last?.hasPrefix("[########################] 10/10 images  0.01 images/s  took 10m04s")
        == true)
    let count = written.count
    progress.finish()
    #expect(written.count == count, "the final line is not repeated in logs")
  }
}
