import EVMask
import Foundation

/// The numbers lvis' `LVISEval.get_results()` returns, in its order.
public struct LVISEvalSummary: Sendable, Codable, Equatable {
  public var iouType: IoUType
  public var maxDetections: Int
  /// ("AP", value), ("AP50", …), …, ("APf", …), ("AR@300", …), ("ARs@300", …), …
  public var results: [Metric]
  /// The lines `print_results()` prints.
  public var lines: [String]
  public var warnings: [String]

  public struct Metric: Sendable, Codable, Equatable {
    public var name: String
    public var value: Double
  }

  public subscript(_ name: String) -> Double? { results.first { $0.name == name }?.value }
}

/// lvis 0.5.3 `LVISEval`: federated evaluation. Detections are only scored in categories the
/// image is known to contain or known to lack (`neg_category_ids`); unmatched detections in
/// not-exhaustively annotated categories are ignored; AP is also reported per frequency group
/// (rare / common / frequent); at most `maxDetections` results per image (by score).
public enum LVISEvaluator {
  public static func evaluate(
    groundTruth: COCODataset, results: [RawResult], iouType: IoUType, maxDetections: Int = 300,
    imageIDs restrictTo: [Int]? = nil
  ) throws(EvaluationError) -> LVISEvalSummary {
    try groundTruth.validateIDs()
    let imagesByID = try groundTruth.imagesByID()
    guard !results.isEmpty else { throw .emptyResults("the results list is empty") }
    var warnings: [String] = []

    // LVISResults.limit_dets_per_image: group by image (first appearance), keep the top scores.
    var limited = results
    if maxDetections >= 0 {
      var order: [Int] = []
      var perImage: [Int: [RawResult]] = [:]
      for r in results {
        if perImage[r.imageID] == nil { order.append(r.imageID) }
        perImage[r.imageID, default: []].append(r)
      }
      limited = []
      var dropped = 0
      for id in order {
        var list = perImage[id]!
        if list.count > maxDetections {
          dropped += list.count - maxDetections
          let sortedIndices = stableArgsort(list.map { -($0.score ?? -.infinity) })
          list = sortedIndices.prefix(maxDetections).map { list[$0] }
        }
        limited.append(contentsOf: list)
      }
      if dropped > 0 {
        warnings.append(
          "\(dropped) result(s) beyond the \(maxDetections) best of their image were dropped (as LVIS does)"
        )
      }
    }
    let loaded = try loadResults(limited, groundTruth: groundTruth, imagesByID: imagesByID)

    let imageIDs = Array(Set(restrictTo ?? groundTruth.images.map(\.id))).sorted()
    let categoryIDs = Array(Set(groundTruth.categories.map(\.id))).sorted()
    let categoriesByID = Dictionary(
      groundTruth.categories.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    let imageIndex = Dictionary(uniqueKeysWithValues: imageIDs.enumerated().map { ($1, $0) })
    let categoryIndex = Dictionary(uniqueKeysWithValues: categoryIDs.enumerated().map { ($1, $0) })
    let I = imageIDs.count
    let K = categoryIDs.count

    // Frequency groups r, c, f by category position.
    var frequencyGroups: [[Int]] = [[], [], []]
    for (k, id) in categoryIDs.enumerated() {
      guard let f = categoriesByID[id]?.frequency, let g = ["r", "c", "f"].firstIndex(of: f) else {
        throw .invalidAnnotation(
          "category \(id) has no LVIS frequency (\"r\", \"c\" or \"f\"); is this an LVIS annotation file?"
        )
      }
      frequencyGroups[g].append(k)
    }
    var negative: [Int: Set<Int>] = [:]
    var notExhaustive: [Int: Set<Int>] = [:]
    for image in groundTruth.images {
      guard let neg = image.negativeCategoryIDs, let nel = image.notExhaustiveCategoryIDs else {
        throw .invalidAnnotation(
          "image \(image.id) lacks neg_category_ids / not_exhaustive_category_ids; is this an LVIS annotation file?"
        )
      }
      negative[image.id] = Set(neg)
      notExhaustive[image.id] = Set(nel)
    }

    // get_ann_ids(img_ids, cat_ids) keeps only areas strictly between 0 and infinity.
    func inScope(_ a: COCOAnnotation) -> Bool {
      imageIndex[a.imageID] != nil && categoryIndex[a.categoryID] != nil && a.area > 0
        && a.area < .infinity
    }
    var groups: [Int: EvalGroup] = [:]
    var present: [Int: Set<Int>] = [:]
    var gtByImage: [Int: [COCOAnnotation]] = [:]
    for a in groundTruth.annotations { gtByImage[a.imageID, default: []].append(a) }
    for imageID in imageIDs {
      for a in gtByImage[imageID] ?? [] where inScope(a) {
        let item = try COCOEvaluator.makeItem(
          a, image: imagesByID[imageID]!, type: iouType, isCrowd: false, ignore: a.ignore ?? false,
          what: "annotation \(a.id)")
        groups[categoryIndex[a.categoryID]! * I + imageIndex[imageID]!, default: EvalGroup()].gts
          .append(item)
        present[imageID, default: []].insert(a.categoryID)
      }
    }
    var dtByImage: [Int: [COCOAnnotation]] = [:]
    for a in loaded { dtByImage[a.imageID, default: []].append(a) }
    var unscoredEmpty = 0
    var outsideFederation = 0
    for imageID in imageIDs {
      for a in dtByImage[imageID] ?? [] {
        guard inScope(a) else {
          if categoryIndex[a.categoryID] != nil && !(a.area > 0) { unscoredEmpty += 1 }
          continue
        }
        guard
          negative[imageID]!.contains(a.categoryID)
            || present[imageID]?.contains(a.categoryID) == true
        else {
          outsideFederation += 1
          continue
        }
        let item = try COCOEvaluator.makeItem(
          a, image: imagesByID[imageID]!, type: iouType, isCrowd: false, ignore: false,
          what: "result \(a.id - 1)")
        groups[categoryIndex[a.categoryID]! * I + imageIndex[imageID]!, default: EvalGroup()].dts
          .append(item)
      }
    }
    if unscoredEmpty > 0 {
      warnings.append("\(unscoredEmpty) result(s) have area 0 and are not evaluated (as LVIS does)")
    }
    if outsideFederation > 0 {
      warnings.append(
        "\(outsideFederation) result(s) are in categories neither annotated nor verified absent for their image; not scored (federated evaluation)"
      )
    }

    for (k, var group) in groups {
      let order = stableArgsort(group.dts.map { -$0.score })
      group.dts = order.map { group.dts[$0] }
      group.ious = try computeIoUs(group, type: iouType)
      groups[k] = group
    }

    let iouThresholds = numpyLinspace(0.5, 0.95, 10)
    let recallThresholds = numpyLinspace(0, 1, 101)
    let areaRanges: [[Double]] = [[0, 1e10], [0, 1024], [1024, 9216], [9216, 1e10]]
    let areaLabels = ["all", "small", "medium", "large"]
    let T = iouThresholds.count
    let R = recallThresholds.count
    let A = areaRanges.count
    var precision = [Double](repeating: -1, count: T * R * K * A)
    var recall = [Double](repeating: -1, count: T * K * A)
    var byCategory = [[Int]](repeating: [], count: K)
    for key in groups.keys { byCategory[key / max(I, 1)].append(key % max(I, 1)) }
    for k in 0..<K {
      let images = byCategory[k].sorted()
      for a in 0..<A {
        let evaluations = images.compactMap { i in
          evaluateImage(
            groups[k * I + i]!, areaRange: areaRanges[a], maxDetections: nil,
            thresholds: iouThresholds,
            dtOutOfScope: { notExhaustive[$0.imageID]!.contains($0.categoryID) })
        }
        guard
          let cell = accumulateCell(
            evaluations, maxDetections: nil, thresholdCount: T, recallThresholds: recallThresholds)
        else { continue }
        for t in 0..<T {
          for r in 0..<R { precision[((t * R + r) * K + k) * A + a] = cell.precision[t * R + r] }
          recall[(t * K + k) * A + a] = cell.recall[t]
        }
      }
    }

    func summarize(ap: Bool, iouThreshold: Double? = nil, area: String = "all", group: Int? = nil)
      -> Double
    {
      let aind = areaLabels.indices.filter { areaLabels[$0] == area }
      let tind =
        iouThreshold.map { v in iouThresholds.indices.filter { iouThresholds[$0] == v } }
        ?? Array(0..<T)
      var values: [Double] = []
      for t in tind {
        if ap {
          // s[:, :, freq_group, aidx]: with one area index numpy pairs them up elementwise.
          let cats = group.map { frequencyGroups[$0] } ?? Array(0..<K)
          for r in 0..<R {
            for k in cats {
              for a in aind {
                let v = precision[((t * R + r) * K + k) * A + a]
                if v > -1 { values.append(v) }
              }
            }
          }
        } else {
          for k in 0..<K {
            for a in aind {
              let v = recall[(t * K + k) * A + a]
              if v > -1 { values.append(v) }
            }
          }
        }
      }
      return values.isEmpty ? -1 : numpyMean(values)
    }
    let md = maxDetections
    var metrics: [LVISEvalSummary.Metric] = []
    func add(_ name: String, _ v: Double) { metrics.append(.init(name: name, value: v)) }
    add("AP", summarize(ap: true))
    add("AP50", summarize(ap: true, iouThreshold: 0.5))
    add("AP75", summarize(ap: true, iouThreshold: 0.75))
    add("APs", summarize(ap: true, area: "small"))
    add("APm", summarize(ap: true, area: "medium"))
    add("APl", summarize(ap: true, area: "large"))
    add("APr", summarize(ap: true, group: 0))
    add("APc", summarize(ap: true, group: 1))
    add("APf", summarize(ap: true, group: 2))
    add("AR@\(md)", summarize(ap: false))
    for area in ["small", "medium", "large"] {
      add("AR\(area.first!)@\(md)", summarize(ap: false, area: area))
    }

    // print_results()
    var lines: [String] = []
    for m in metrics {
      let key = Array(m.name)
      let isAP = m.name.contains("AP")
      var iou =
        "\(formatFixed(iouThresholds[0], digits: 2)):\(formatFixed(iouThresholds[T - 1], digits: 2))"
      if key.count > 2, key[2].isNumber, let v = Double(String(key[2...])) {
        iou = formatFixed(v / 100, digits: 2)
      }
      let group = key.count > 2 && "rcf".contains(key[2]) ? String(key[2]) : "all"
      let area = key.count > 2 && "sml".contains(key[2]) ? String(key[2]) : "all"
      lines.append(
        " \(pad(isAP ? "Average Precision" : "Average Recall", 18)) \(isAP ? "(AP)" : "(AR)") @[ IoU=\(pad(iou, 9)) | area=\(padLeft(area, 6)) | maxDets=\(padLeft(String(md), 3)) catIds=\(padLeft(group, 3))] = \(format3(m.value))"
      )
    }
    return LVISEvalSummary(
      iouType: iouType, maxDetections: md, results: metrics, lines: lines, warnings: warnings)
  }
}
