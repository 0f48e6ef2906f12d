import EVMask

// The matching and precision/recall accumulation that pycocotools' COCOeval and lvis' LVISEval
// share, written once. Both greedily match detections (highest score first) to the best
// still-unmatched ground truth at each IoU threshold, then build interpolated precision at 101
// recall points.

public enum IoUType: String, Sendable, Codable, CaseIterable {
  case segm
  case bbox
}

/// A ground truth or detection, ready for matching.
struct EvalItem {
  let id: Int
  let imageID: Int
  let categoryID: Int
  let area: Double
  let isCrowd: Bool
  /// Ground truth excluded from scoring (crowds in COCO, `ignore` in LVIS).
  let ignore: Bool
  let score: Double
  let rle: RLE?
  let box: BoxXYWH?
}

/// One (image, category) pair: its ground truth in file order, its detections sorted by score
/// (stable) and their IoUs `[dt][gt]`.
struct EvalGroup {
  var gts: [EvalItem] = []
  var dts: [EvalItem] = []
  var ious: [[Double]] = []
}

/// `evaluateImg`'s output for one (category, area range, image).
struct ImageEvaluation {
  let dtScores: [Double]
  /// T×D, row-major: the matched ground truth's id, 0 when unmatched (an id of 0 therefore
  /// counts as unmatched, exactly as in pycocotools).
  let dtMatches: [Int]
  let dtIgnore: [Bool]
  let gtIgnore: [Bool]
}

func computeIoUs(_ group: EvalGroup, type: IoUType) throws(EvaluationError) -> [[Double]] {
  if group.gts.isEmpty || group.dts.isEmpty { return [] }
  let crowd = group.gts.map(\.isCrowd)
  switch type {
  case .segm:
    let g = group.gts.map { $0.rle! }
    let d = group.dts.map { $0.rle! }
    for dt in d {
      for gt in g where dt.height != gt.height || dt.width != gt.width {
        throw .invalidResults(
          "a result mask is \(dt.height)×\(dt.width) but the ground truth of its image is \(gt.height)×\(gt.width)"
        )
      }
    }
    return RLE.iou(d, g, isCrowd: crowd)
  case .bbox:
    return BoxXYWH.iou(group.dts.map { $0.box! }, group.gts.map { $0.box! }, isCrowd: crowd)
  }
}

/// pycocotools `evaluateImg` / lvis `evaluate_img`. `dtOutOfScope` marks detections that are
/// ignored when unmatched (outside the area range; LVIS adds not-exhaustively-annotated
/// categories).
func evaluateImage(
  _ group: EvalGroup, areaRange: [Double], maxDetections: Int?, thresholds: [Double],
  dtOutOfScope: (EvalItem) -> Bool = { _ in false }
) -> ImageEvaluation? {
  if group.gts.isEmpty && group.dts.isEmpty { return nil }
  let gtIgnoreUnsorted = group.gts.map { g in
    g.ignore || g.area < areaRange[0] || g.area > areaRange[1]
  }
  let gtOrder = stableArgsort(gtIgnoreUnsorted.map { $0 ? 1 : 0 })
  let gts = gtOrder.map { group.gts[$0] }
  let gtIgnore = gtOrder.map { gtIgnoreUnsorted[$0] }
  let dtCount = min(group.dts.count, maxDetections ?? group.dts.count)
  let dts = group.dts.prefix(dtCount)
  let T = thresholds.count
  let G = gts.count
  let D = dtCount
  var gtMatches = [Int](repeating: 0, count: T * G)
  var dtMatches = [Int](repeating: 0, count: T * D)
  var dtIgnore = [Bool](repeating: false, count: T * D)
  if !group.ious.isEmpty {
    for (t, threshold) in thresholds.enumerated() {
      for (d, dt) in dts.enumerated() {
        var best = min(threshold, 1 - 1e-10)
        var m = -1
        let row = group.ious[d]
        for g in 0..<G {
          if gtMatches[t * G + g] > 0 && !gts[g].isCrowd { continue }
          if m > -1 && !gtIgnore[m] && gtIgnore[g] { break }
          let iou = row[gtOrder[g]]
          if iou < best { continue }
          best = iou
          m = g
        }
        if m == -1 { continue }
        dtIgnore[t * D + d] = gtIgnore[m]
        dtMatches[t * D + d] = gts[m].id
        gtMatches[t * G + m] = dt.id
      }
    }
  }
  for (d, dt) in dts.enumerated()
  where dt.area < areaRange[0] || dt.area > areaRange[1] || dtOutOfScope(dt) {
    for t in 0..<T where dtMatches[t * D + d] == 0 { dtIgnore[t * D + d] = true }
  }
  return ImageEvaluation(
    dtScores: dts.map(\.score), dtMatches: dtMatches, dtIgnore: dtIgnore, gtIgnore: gtIgnore)
}

/// The accumulation step for one (category, area range, max detections) cell: precision at each
/// recall threshold (T×R, row-major) and final recall (T), or nil when the cell has no scored
/// ground truth (the -1 entries of pycocotools' arrays).
func accumulateCell(
  _ evaluations: [ImageEvaluation], maxDetections: Int?, thresholdCount T: Int,
  recallThresholds: [Double]
) -> (precision: [Double], recall: [Double])? {
  if evaluations.isEmpty { return nil }
  var scores: [Double] = []
  var matched: [[Bool]] = Array(repeating: [], count: T)
  var ignored: [[Bool]] = Array(repeating: [], count: T)
  var scoredGT = 0
  for e in evaluations {
    let D = e.dtScores.count
    let keep = min(D, maxDetections ?? D)
    scores.append(contentsOf: e.dtScores.prefix(keep))
    for t in 0..<T {
      for d in 0..<keep {
        matched[t].append(e.dtMatches[t * D + d] != 0)
        ignored[t].append(e.dtIgnore[t * D + d])
      }
    }
    scoredGT += e.gtIgnore.lazy.filter { !$0 }.count
  }
  if scoredGT == 0 { return nil }
  let order = stableArgsort(scores.map { -$0 })
  let nd = order.count
  let R = recallThresholds.count
  var precision = [Double](repeating: 0, count: T * R)
  var recall = [Double](repeating: 0, count: T)
  let eps = Double.ulpOfOne  // np.spacing(1)
  for t in 0..<T {
    var tp = 0.0
    var fp = 0.0
    var rc = [Double](repeating: 0, count: nd)
    var pr = [Double](repeating: 0, count: nd)
    for (j, i) in order.enumerated() {
      if !ignored[t][i] {
        if matched[t][i] { tp += 1 } else { fp += 1 }
      }
      rc[j] = tp / Double(scoredGT)
      pr[j] = tp / (fp + tp + eps)
    }
    recall[t] = nd > 0 ? rc[nd - 1] : 0
    if nd > 1 {
      for i in stride(from: nd - 1, to: 0, by: -1) where pr[i] > pr[i - 1] { pr[i - 1] = pr[i] }
    }
    for (r, threshold) in recallThresholds.enumerated() {
      let p = searchSortedLeft(rc, threshold)
      if p >= nd { break }
      precision[t * R + r] = pr[p]
    }
  }
  return (precision, recall)
}
