import EVMask
import Foundation

/// pycocotools `COCOeval` parameters (segm / bbox).
public struct COCOEvalParameters: Sendable {
  public var iouType: IoUType
  public var iouThresholds = numpyLinspace(0.5, 0.95, 10)
  public var recallThresholds = numpyLinspace(0, 1, 101)
  /// At least three values; `summarize` reads the first three (after sorting), 100 in the third
  /// place being the standard.
  public var maxDetections = [1, 10, 100]
  public var areaRanges: [[Double]] = [[0, 1e10], [0, 1024], [1024, 9216], [9216, 1e10]]
  public var areaLabels = ["all", "small", "medium", "large"]
  /// Restrict to these images (default: every image of the ground truth).
  public var imageIDs: [Int]?

  public init(iouType: IoUType, maxDetections: [Int] = [1, 10, 100]) {
    self.iouType = iouType
    self.maxDetections = maxDetections
  }
}

/// What `COCOeval.summarize()` computes and prints.
public struct COCOEvalSummary: Sendable, Codable, Equatable {
  public var iouType: IoUType
  public var maxDetections: [Int]
  /// The 12 numbers of `summarize()`, in its order (-1 where nothing could be scored).
  public var stats: [Double]
  /// The 12 lines `summarize()` prints.
  public var lines: [String]
  /// Non-fatal findings, each counted (e.g. results in categories the ground truth lacks).
  public var warnings: [String]
}

public enum COCOEvaluator {
  /// Evaluates `results` against `groundTruth` exactly as pycocotools does:
  /// `COCOeval(gt, gt.loadRes(results), iouType)`, `evaluate()`, `accumulate()`, `summarize()`.
  public static func evaluate(
    groundTruth: COCODataset, results: [RawResult], parameters: COCOEvalParameters
  ) throws(EvaluationError) -> COCOEvalSummary {
    var p = parameters
    guard p.maxDetections.count >= 3, p.maxDetections.allSatisfy({ $0 > 0 }) else {
      throw .invalidParameters(
        "max detections must be at least three positive numbers, e.g. 1,10,100")
    }
    p.maxDetections.sort()
    try groundTruth.validateIDs()
    let imagesByID = try groundTruth.imagesByID()
    let loaded = try loadResults(results, groundTruth: groundTruth, imagesByID: imagesByID)

    let imageIDs = Array(Set(p.imageIDs ?? groundTruth.images.map(\.id))).sorted()
    let categoryIDs = Array(Set(groundTruth.categories.map(\.id))).sorted()
    let imageIndex = Dictionary(uniqueKeysWithValues: imageIDs.enumerated().map { ($1, $0) })
    let categoryIndex = Dictionary(uniqueKeysWithValues: categoryIDs.enumerated().map { ($1, $0) })
    var warnings: [String] = []

    var groups: [Int: EvalGroup] = [:]  // key: category index * images + image index
    func key(_ imageID: Int, _ categoryID: Int) -> Int? {
      guard let i = imageIndex[imageID], let k = categoryIndex[categoryID] else { return nil }
      return k * imageIDs.count + i
    }

    // Ground truth in pycocotools' order: by image id, then file order.
    var gtByImage: [Int: [COCOAnnotation]] = [:]
    var gtOrphans = 0
    for a in groundTruth.annotations {
      if imagesByID[a.imageID] == nil { gtOrphans += 1 }
      gtByImage[a.imageID, default: []].append(a)
    }
    if gtOrphans > 0 {
      warnings.append(
        "\(gtOrphans) ground-truth annotation(s) refer to images not in the file; ignored (as pycocotools does)"
      )
    }
    for imageID in imageIDs {
      for a in gtByImage[imageID] ?? [] {
        guard let k = key(a.imageID, a.categoryID) else { continue }
        let item = try makeItem(
          a, image: imagesByID[a.imageID]!, type: p.iouType, isCrowd: a.isCrowd, ignore: a.isCrowd,
          what: "annotation \(a.id)")
        groups[k, default: EvalGroup()].gts.append(item)
      }
    }
    var foreignCategories = 0
    var dtByImage: [Int: [COCOAnnotation]] = [:]
    for a in loaded { dtByImage[a.imageID, default: []].append(a) }
    for imageID in imageIDs {
      for a in dtByImage[imageID] ?? [] {
        guard let k = key(a.imageID, a.categoryID) else {
          foreignCategories += 1
          continue
        }
        let item = try makeItem(
          a, image: imagesByID[a.imageID]!, type: p.iouType, isCrowd: false, ignore: false,
          what: "result \(a.id - 1)")
        groups[k, default: EvalGroup()].dts.append(item)
      }
    }
    if foreignCategories > 0 {
      warnings.append(
        "\(foreignCategories) result(s) have category ids absent from the annotation file; ignored (as pycocotools does)"
      )
    }

    let maxDet = p.maxDetections.last!
    for (k, var group) in groups {
      let order = stableArgsort(group.dts.map { -$0.score })
      group.dts = Array(order.prefix(maxDet).map { group.dts[$0] })
      group.ious = try computeIoUs(group, type: p.iouType)
      groups[k] = group
    }

    let T = p.iouThresholds.count
    let R = p.recallThresholds.count
    let K = categoryIDs.count
    let A = p.areaRanges.count
    let M = p.maxDetections.count
    let I = imageIDs.count
    var precision = [Double](repeating: -1, count: T * R * K * A * M)
    var recall = [Double](repeating: -1, count: T * K * A * M)
    // Only (category, image) pairs with data produce evaluations; the rest are None.
    var byCategory = [[Int]](repeating: [], count: K)
    for k in groups.keys { byCategory[k / max(I, 1)].append(k % max(I, 1)) }
    for k in 0..<K {
      let images = byCategory[k].sorted()
      for a in 0..<A {
        let evaluations = images.compactMap { i in
          evaluateImage(
            groups[k * I + i]!, areaRange: p.areaRanges[a], maxDetections: maxDet,
            thresholds: p.iouThresholds)
        }
        for (m, det) in p.maxDetections.enumerated() {
          guard
            let cell = accumulateCell(
              evaluations, maxDetections: det, thresholdCount: T,
              recallThresholds: p.recallThresholds)
          else { continue }
          for t in 0..<T {
            for r in 0..<R {
              precision[(((t * R + r) * K + k) * A + a) * M + m] = cell.precision[t * R + r]
            }
            recall[((t * K + k) * A + a) * M + m] = cell.recall[t]
          }
        }
      }
    }

    // summarize()
    func summarize(ap: Bool, iouThreshold: Double? = nil, area: String = "all", maxDets: Int = 100)
      -> (Double, String)
    {
      let aind = p.areaLabels.indices.filter { p.areaLabels[$0] == area }
      let mind = p.maxDetections.indices.filter { p.maxDetections[$0] == maxDets }
      let tind =
        iouThreshold.map { v in p.iouThresholds.indices.filter { p.iouThresholds[$0] == v } }
        ?? Array(0..<T)
      var values: [Double] = []
      for t in tind {
        if ap {
          for r in 0..<R {
            for k in 0..<K {
              for a in aind {
                for m in mind {
                  let v = precision[(((t * R + r) * K + k) * A + a) * M + m]
                  if v > -1 { values.append(v) }
                }
              }
            }
          }
        } else {
          for k in 0..<K {
            for a in aind {
              for m in mind {
                let v = recall[((t * K + k) * A + a) * M + m]
                if v > -1 { values.append(v) }
              }
            }
          }
        }
      }
      let mean = values.isEmpty ? -1 : numpyMean(values)
      let title = ap ? "Average Precision" : "Average Recall"
      let type = ap ? "(AP)" : "(AR)"
      let iouString =
        iouThreshold.map { formatFixed($0, digits: 2) }
        ?? "\(formatFixed(p.iouThresholds[0], digits: 2)):\(formatFixed(p.iouThresholds[T - 1], digits: 2))"
      let line =
        " \(pad(title, 18)) \(type) @[ IoU=\(pad(iouString, 9)) | area=\(padLeft(area, 6)) | maxDets=\(padLeft(String(maxDets), 3)) ] = \(format3(mean))"
      return (mean, line)
    }
    let md = p.maxDetections
    let rows: [(Bool, Double?, String, Int)] = [
      (true, nil, "all", 100), (true, 0.5, "all", md[2]), (true, 0.75, "all", md[2]),
      (true, nil, "small", md[2]), (true, nil, "medium", md[2]), (true, nil, "large", md[2]),
      (false, nil, "all", md[0]), (false, nil, "all", md[1]), (false, nil, "all", md[2]),
      (false, nil, "small", md[2]), (false, nil, "medium", md[2]), (false, nil, "large", md[2]),
    ]
    var stats: [Double] = []
    var lines: [String] = []
    for row in rows {
      let (v, line) = summarize(ap: row.0, iouThreshold: row.1, area: row.2, maxDets: row.3)
      stats.append(v)
      lines.append(line)
    }
    return COCOEvalSummary(
      iouType: p.iouType, maxDetections: p.maxDetections, stats: stats, lines: lines,
      warnings: warnings)
  }

  static func makeItem(
    _ a: COCOAnnotation, image: COCOImage, type: IoUType, isCrowd: Bool, ignore: Bool, what: String
  ) throws(EvaluationError) -> EvalItem {
    var rle: RLE?
    var box: BoxXYWH?
    switch type {
    case .segm:
      guard let segmentation = a.segmentation else {
        throw .invalidAnnotation("\(what) has no segmentation (needed for segm evaluation)")
      }
      do {
        rle = try segmentation.rle(height: image.height, width: image.width)
      } catch {
        throw .invalidAnnotation("\(what): \(error.description)")
      }
    case .bbox:
      guard let b = a.bbox else {
        throw .invalidAnnotation("\(what) has no bbox (needed for bbox evaluation)")
      }
      box = b
    }
    return EvalItem(
      id: a.id, imageID: a.imageID, categoryID: a.categoryID, area: a.area, isCrowd: isCrowd,
      ignore: ignore, score: a.score ?? 0, rle: rle, box: box)
  }
}

/// Python's `'{:<n}'` and `'{:>n}'`.
func pad(_ s: String, _ n: Int) -> String {
  s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
}

func padLeft(_ s: String, _ n: Int) -> String {
  s.count >= n ? s : String(repeating: " ", count: n - s.count) + s
}
