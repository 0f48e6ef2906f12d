import EVEvaluation
import EVMask
import Foundation
import TestSupport
import Testing

/// `evsam eval`, `evsam merge` and `evsam coco-eval` end to end: the fixture model on a small
/// COCO-format dataset made from the shipped images.
@Suite(.serialized) struct EvalCommandTests {
  struct Dataset {
    let folder: URL
    let annotations: URL
    let dataset: COCODataset
  }

  private struct File: Encodable {
    let images: [COCOImage]
    let annotations: [COCOAnnotation]
    let categories: [COCOCategory]
  }

  /// coffee and chelsea with eight objects: crowds (uncompressed RLE), compressed RLE, polygons.
  static func makeDataset(edit: (inout COCODataset) -> Void = { _ in }) throws -> Dataset {
    let full = try COCODataset.load(contentsOf: Fixtures.url("coco/gt.json"))
    let keep: Set<Int> = [12, 13, 18, 19, 21, 22, 24, 25]
    var dataset = full
    dataset.annotations = full.annotations.filter { keep.contains($0.id) }
    dataset.images = full.images.filter { $0.id != 1 }
    edit(&dataset)
    let folder = try temporaryDirectory()
    let url = folder.appendingPathComponent("instances.json")
    try JSONEncoder().encode(
      File(images: dataset.images, annotations: dataset.annotations, categories: dataset.categories)
    )
    .write(to: url)
    return Dataset(folder: folder, annotations: url, dataset: dataset)
  }

  func modelArguments() throws -> [String] {
    let models = try Fixtures.url("models")
    return [
      "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
    ]
  }

  func eval(_ data: Dataset, _ extra: [String], output: String) throws -> (CLIRunner.Result, URL) {
    let out = data.folder.appendingPathComponent(output)
    let result = try CLIRunner.run(
      ["eval"] + modelArguments() + [
        "--images", try Fixtures.url("images").path, "--annotations", data.annotations.path,
        "-o", out.path,
      ] + extra)
    return (result, out)
  }

  @Test func boxPointAndDetectorPrompts() throws {
    let data = try Self.makeDataset()

    // Box prompts.
    let (box, boxURL) = try eval(data, ["--prompt", "box"], output: "box.json")
    #expect(box.status == 0, "\(box.stderr)")
    let boxReport = try ZeroShotReport.load(contentsOf: boxURL)
    #expect(boxReport.annotations?.count == 8)
    #expect(
      boxReport.annotations?.allSatisfy { $0.iou.count == 1 && $0.iou[0] >= 0 && $0.iou[0] <= 100 }
        == true)
    let boxLine = try #require(boxReport.miou?.first?.line)
    #expect(boxLine.hasPrefix("all="))
    #expect(box.stdout.split(separator: "\n").map(String.init) == [boxLine])
    #expect(
      !FileManager.default.fileExists(atPath: boxURL.path + ".partial.jsonl"),
      "the journal is removed when done")
    #expect(box.stderr.components(separatedBy: "evaluating 2 image(s), prompt box").count == 2)
    let (quiet, _) = try eval(data, ["--prompt", "box", "--quiet"], output: "quiet.json")
    #expect(quiet.status == 0 && !quiet.stderr.contains("evaluating"), "\(quiet.stderr)")

    // Point prompts, 1 and 3 clicks from one run.
    let (point, pointURL) = try eval(
      data, ["--prompt", "point", "--clicks", "1,3"], output: "point.json")
    #expect(point.status == 0, "\(point.stderr)")
    let pointReport = try ZeroShotReport.load(contentsOf: pointURL)
    #expect(pointReport.configuration.clicks == [1, 3])
    for a in try #require(pointReport.annotations) {
      #expect(a.iou.count == 2)
      #expect(a.clicks?.count == 3)
      #expect(a.clicks?.first?.positive == true, "the first click is always inside the object")
    }
    let lines = point.stdout.split(separator: "\n").map(String.init)
    #expect(lines.count == 2)
    #expect(lines == pointReport.miou?.map(\.line))
    #expect(lines[0].hasPrefix("clicks=1: all=") && lines[1].hasPrefix("clicks=3: all="))

    // Detector boxes: the ground-truth boxes moved by two pixels, with scores, plus a false positive.
    var detections: [[String: Any]] = data.dataset.annotations.enumerated().map { i, a in
      let b = a.bbox!
      return [
        "image_id": a.imageID, "category_id": a.categoryID, "score": 0.3 + Double(i) / 20,
        "bbox": [b.x + 2, b.y + 2, b.width, b.height],
      ]
    }
    detections.append(["image_id": 3, "category_id": 1, "score": 0.95, "bbox": [10, 10, 60, 40]])
    let detectionsURL = data.folder.appendingPathComponent("detections.json")
    try JSONSerialization.data(withJSONObject: detections).write(to: detectionsURL)
    let (detector, detectorURL) = try eval(
      data, ["--prompt", "detector", "--detections", detectionsURL.path], output: "detector.json")
    #expect(detector.status == 0, "\(detector.stderr)")
    let detectorReport = try ZeroShotReport.load(contentsOf: detectorURL)
    let coco = try #require(detectorReport.coco)
    #expect(coco.stats.count == 12)
    #expect(detectorReport.detections?.count == detections.count)
    #expect(
      detectorReport.detections?.allSatisfy { $0.segmentation != nil && $0.score != nil } == true)
    #expect(detector.stdout.split(separator: "\n").map(String.init) == coco.lines)
    // The masks, scored again by coco-eval from the report (boxes dropped as the official script
    // does before COCOeval), give the same numbers.
    let masksOnly = (detectorReport.detections ?? []).map {
      RawResult(
        imageID: $0.imageID, categoryID: $0.categoryID, score: $0.score, bbox: nil,
        segmentation: $0.segmentation)
    }
    let masksURL = data.folder.appendingPathComponent("masks.json")
    try JSONEncoder().encode(masksOnly).write(to: masksURL)
    let rescored = try CLIRunner.run([
      "coco-eval", "--annotations", data.annotations.path, "--results", masksURL.path,
    ])
    #expect(rescored.status == 0, "\(rescored.stderr)")
    #expect(rescored.stdout.split(separator: "\n").map(String.init) == coco.lines)
  }

  @Test func shardsMergeToTheWholeRun() throws {
    let data = try Self.makeDataset()
    let (whole, wholeURL) = try eval(data, ["--prompt", "box"], output: "whole.json")
    #expect(whole.status == 0, "\(whole.stderr)")
    var shardPaths: [String] = []
    for i in 0..<2 {
      let (shard, url) = try eval(
        data, ["--prompt", "box", "--shard", "\(i)/2"], output: "shard\(i).json")
      #expect(shard.status == 0, "\(shard.stderr)")
      #expect(shard.stdout.contains("evsam merge"))
      shardPaths.append(url.path)
    }
    let mergedURL = data.folder.appendingPathComponent("merged.json")
    let merge = try CLIRunner.run(["merge"] + shardPaths + ["-o", mergedURL.path])
    #expect(merge.status == 0, "\(merge.stderr)")
    let merged = try ZeroShotReport.load(contentsOf: mergedURL)
    let reference = try ZeroShotReport.load(contentsOf: wholeURL)
    #expect(merged.annotations == reference.annotations)
    #expect(merged.miou == reference.miou)
    #expect(merge.stdout == whole.stdout)

    let incomplete = try CLIRunner.run(["merge", shardPaths[0], "-o", mergedURL.path])
    #expect(incomplete.status != 0)
    #expect(incomplete.stderr.contains("shard(s) 1/2 missing"))
  }

  @Test func cocoEvalPrintsWhatPycocotoolsPrints() throws {
    struct Expected: Decodable {
      let segm: [Double]
      let bbox: [Double]
      let segm_maxdets_1_5_20: [Double]
    }
    let expected = try JSONDecoder().decode(
      Expected.self, from: Data(contentsOf: Fixtures.url("coco/eval.json")))
    let gt = try Fixtures.url("coco/gt.json").path
    let dt = try Fixtures.url("coco/dt.json").path
    let out = try temporaryDirectory().appendingPathComponent("stats.json")
    for (args, stats) in [
      (["--iou-type", "segm"], expected.segm), (["--iou-type", "bbox"], expected.bbox),
      (["--max-dets", "1,5,20"], expected.segm_maxdets_1_5_20),
    ] {
      let result = try CLIRunner.run(
        ["coco-eval", "--annotations", gt, "--results", dt, "--json", out.path] + args)
      #expect(result.status == 0, "\(result.stderr)")
      let lines = result.stdout.split(separator: "\n").map(String.init)
      #expect(lines.count == 12)
      for (line, value) in zip(lines, stats) {
        #expect(line.hasSuffix("] = " + String(format: "%.3f", value)), "\(line)")
      }
      let summary = try JSONDecoder().decode(COCOEvalSummary.self, from: Data(contentsOf: out))
      for (x, y) in zip(summary.stats, stats) { #expect(abs(x - y) <= 1e-12) }
    }
    let lvis = try CLIRunner.run([
      "coco-eval", "--lvis", "--annotations", try Fixtures.url("coco/lvis_gt.json").path,
      "--results", try Fixtures.url("coco/lvis_dt.json").path,
    ])
    #expect(lvis.status == 0, "\(lvis.stderr)")
    let lvisLines = lvis.stdout.split(separator: "\n")
    #expect(lvisLines.count == 13)
    #expect(lvisLines[8].contains("catIds=  f] = "))
    let lvisNote = try CLIRunner.run([
      "coco-eval", "--annotations", try Fixtures.url("coco/lvis_gt.json").path,
      "--results", try Fixtures.url("coco/lvis_dt.json").path,
    ])
    #expect(lvisNote.stderr.contains("pass --lvis"))
  }

  @Test func badInputGivesClearErrors() throws {
    let data = try Self.makeDataset()
    let images = try Fixtures.url("images").path

    let broken = data.folder.appendingPathComponent("broken.json")
    try Data("{\"images\": [{\"id\": 1, \"height\": 5}], \"annotations\": [".utf8).write(to: broken)
    let malformed = try CLIRunner.run(
      ["eval"] + modelArguments() + [
        "--images", images, "--annotations", broken.path, "--prompt", "box", "-o", "x.json",
      ])
    #expect(malformed.status != 0)
    #expect(malformed.stderr.contains("is not a valid annotation/results file"))

    let missingFile = try Self.makeDataset { $0.images[0].fileName = "missing.png" }
    let (missing, _) = try eval(missingFile, ["--prompt", "box"], output: "m.json")
    #expect(missing.status != 0)
    #expect(
      missing.stderr.contains("missing.png") && missing.stderr.contains("--skip-missing-images"))
    let (skipped, skippedURL) = try eval(
      missingFile, ["--prompt", "box", "--skip-missing-images"], output: "s.json")
    #expect(skipped.status == 0, "\(skipped.stderr)")
    #expect(skipped.stderr.contains("warning: 1 image file(s) missing and skipped"))
    #expect(try ZeroShotReport.load(contentsOf: skippedURL).warnings.count == 1)

    let (noDetections, _) = try eval(data, ["--prompt", "detector"], output: "d.json")
    #expect(noDetections.status != 0)
    #expect(noDetections.stderr.contains("--detections"))

    let empty = data.folder.appendingPathComponent("empty.json")
    try Data("[]".utf8).write(to: empty)
    let emptyResults = try CLIRunner.run([
      "coco-eval", "--annotations", data.annotations.path, "--results", empty.path,
    ])
    #expect(emptyResults.status != 0)
    #expect(emptyResults.stderr.contains("nothing to evaluate"))

    let stray = data.folder.appendingPathComponent("stray.json")
    try Data(#"[{"image_id": 404, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]"#.utf8)
      .write(to: stray)
    let strayResults = try CLIRunner.run(
      [
        "coco-eval", "--annotations", data.annotations.path, "--results", stray.path, "--iou-type",
        "bbox",
      ])
    #expect(strayResults.status != 0)
    #expect(strayResults.stderr.contains("not in the annotation file"))
  }
}
