import Foundation

public enum ShardMerger {
  /// Joins the reports of all shards `0/N … N-1/N` of one run into the report the unsharded run
  /// would have written (objects in ascending image order), and computes its metrics. Detector
  /// runs need the ground truth for (LVIS-)COCOeval.
  public static func merge(_ reports: [ZeroShotReport], groundTruth: COCODataset?)
    throws(EvaluationError)
    -> ZeroShotReport
  {
    guard let first = reports.first else { throw .mergeMismatch("no shard reports given") }
    let count = first.configuration.shard.count
    var base = first.configuration
    base.shard = .whole
    var seen = [Int: Int]()
    for (n, r) in reports.enumerated() {
      var c = r.configuration
      guard c.shard.count == count else {
        throw .mergeMismatch(
          "report \(n + 1) is shard \(c.shard) but report 1 is shard \(first.configuration.shard)")
      }
      if let previous = seen.updateValue(n, forKey: c.shard.index) {
        throw .mergeMismatch("reports \(previous + 1) and \(n + 1) are both shard \(c.shard)")
      }
      c.shard = .whole
      guard c == base else {
        throw .mergeMismatch("report \(n + 1) comes from a different run (\(differences(base, c)))")
      }
    }
    let missing = (0..<count).filter { seen[$0] == nil }
    guard missing.isEmpty else {
      throw .mergeMismatch(
        "shard(s) \(missing.map { "\($0)/\(count)" }.joined(separator: ", ")) missing; all \(count) shards are needed"
      )
    }

    var imageIDs: [Int] = []
    var warnings: [String] = []
    var annotationsByImage: [Int: [AnnotationResult]] = [:]
    var detectionsByImage: [Int: [RawResult]] = [:]
    for r in reports {
      imageIDs += r.imageIDs
      for w in r.warnings where !warnings.contains(w) { warnings.append(w) }
      for a in r.annotations ?? [] { annotationsByImage[a.imageID, default: []].append(a) }
      for d in r.detections ?? [] { detectionsByImage[d.imageID, default: []].append(d) }
    }
    guard Set(imageIDs).count == imageIDs.count else {
      throw .mergeMismatch("an image appears in more than one shard report")
    }
    imageIDs.sort()
    var merged = ZeroShotReport(configuration: base, imageIDs: imageIDs, warnings: warnings)
    switch base.prompt {
    case .box, .point:
      merged.annotations = imageIDs.flatMap { annotationsByImage[$0] ?? [] }
    case .detector:
      merged.detections = imageIDs.flatMap { detectionsByImage[$0] ?? [] }
      guard groundTruth != nil else {
        throw .invalidParameters("merging detector shards needs the annotation file for COCOeval")
      }
    }
    try ZeroShotEvaluator.summarize(
      &merged, groundTruth: groundTruth,
      restrictToEvaluatedImages: base.limit != nil || base.skipMissingImages)
    return merged
  }
}
