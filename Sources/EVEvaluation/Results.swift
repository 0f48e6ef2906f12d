import EVMask
import Foundation

/// One detection / segmentation result as a results file lists it.
public struct RawResult: Sendable, Equatable, Codable {
  public var imageID: Int
  public var categoryID: Int
  public var score: Double?
  public var bbox: BoxXYWH?
  public var segmentation: Segmentation?

  enum CodingKeys: String, CodingKey {
    case imageID = "image_id"
    case categoryID = "category_id"
    case score
    case bbox
    case segmentation
  }

  public init(
    imageID: Int, categoryID: Int, score: Double?, bbox: BoxXYWH?, segmentation: Segmentation?
  ) {
    self.imageID = imageID
    self.categoryID = categoryID
    self.score = score
    self.bbox = bbox
    self.segmentation = segmentation
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    imageID = try c.decode(Int.self, forKey: .imageID)
    categoryID = try c.decode(Int.self, forKey: .categoryID)
    score = try c.decodeIfPresent(Double.self, forKey: .score)
    // pycocotools treats `"bbox": []` as no box.
    if let values = try c.decodeIfPresent([Double].self, forKey: .bbox), !values.isEmpty {
      guard values.count == 4 else {
        throw DecodingError.dataCorruptedError(
          forKey: .bbox, in: c,
          debugDescription: "a bbox must be [x, y, width, height], got \(values.count) numbers")
      }
      bbox = BoxXYWH(x: values[0], y: values[1], width: values[2], height: values[3])
    } else {
      bbox = nil
    }
    segmentation = try c.decodeIfPresent(Segmentation.self, forKey: .segmentation)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(imageID, forKey: .imageID)
    try c.encode(categoryID, forKey: .categoryID)
    try c.encodeIfPresent(score, forKey: .score)
    try c.encodeIfPresent(bbox?.array, forKey: .bbox)
    try c.encodeIfPresent(segmentation, forKey: .segmentation)
  }
}

public enum ResultsFile {
  /// Reads a results file: a JSON list of results (the COCO format), or an `evsam eval` report
  /// whose `detections` it takes.
  public static func load(contentsOf url: URL) throws(EvaluationError) -> [RawResult] {
    let data: Data
    do {
      data = try Data(contentsOf: url, options: .mappedIfSafe)
    } catch {
      throw .unreadableFile(url.path, detail: error.localizedDescription)
    }
    return try decode(data, source: url.path)
  }

  private struct Envelope: Decodable {
    let detections: [RawResult]
  }

  public static func decode(_ data: Data, source: String) throws(EvaluationError) -> [RawResult] {
    do {
      return try JSONDecoder().decode([RawResult].self, from: data)
    } catch let listError {
      if let envelope = try? JSONDecoder().decode(Envelope.self, from: data) {
        return envelope.detections
      }
      throw .malformedJSON(file: source, detail: describe(listError))
    }
  }
}

/// Turns results into annotations the way pycocotools `COCO.loadRes` (and, with `maxDetsPerImage`
/// and `crowdField: false`, lvis `LVISResults`) does: ids 1…n in list order; when the first result
/// has a box, every result's area is its box area and a missing segmentation becomes the box
/// polygon; otherwise the area is the mask area and a missing box the mask's box.
func loadResults(
  _ results: [RawResult], groundTruth: COCODataset, imagesByID: [Int: COCOImage]
) throws(EvaluationError) -> [COCOAnnotation] {
  guard let first = results.first else {
    throw .emptyResults("the results list is empty")
  }
  let unknown = Set(results.map(\.imageID)).filter { imagesByID[$0] == nil }.sorted()
  guard unknown.isEmpty else { throw .unknownImages(what: "results", ids: unknown) }
  var out: [COCOAnnotation] = []
  out.reserveCapacity(results.count)
  let boxBranch = first.bbox != nil
  if !boxBranch && first.segmentation == nil {
    throw .invalidResults("the first result has neither \"bbox\" nor \"segmentation\"")
  }
  for (i, r) in results.enumerated() {
    guard let score = r.score else { throw .invalidResults("result \(i) has no \"score\"") }
    guard score.isFinite else { throw .invalidResults("result \(i) has score \(score)") }
    if boxBranch {
      guard let bb = r.bbox else {
        throw .invalidResults(
          "result \(i) has no \"bbox\" but the first result has one (pycocotools needs all or none)"
        )
      }
      let x1 = bb.x
      let x2 = bb.x + bb.width
      let y1 = bb.y
      let y2 = bb.y + bb.height
      out.append(
        COCOAnnotation(
          id: i + 1, imageID: r.imageID, categoryID: r.categoryID,
          segmentation: r.segmentation ?? .polygons([[x1, y1, x1, y2, x2, y2, x2, y1]]),
          area: bb.width * bb.height, bbox: bb, isCrowd: false, score: score))
    } else {
      guard let segmentation = r.segmentation else {
        throw .invalidResults("result \(i) has no \"segmentation\" but the first result has one")
      }
      let image = imagesByID[r.imageID]!
      let rle: RLE
      do {
        rle = try segmentation.rle(height: image.height, width: image.width)
      } catch {
        throw .invalidResults("result \(i): \(error.description)")
      }
      out.append(
        COCOAnnotation(
          id: i + 1, imageID: r.imageID, categoryID: r.categoryID, segmentation: segmentation,
          area: Double(rle.area), bbox: r.bbox ?? rle.boundingBox, isCrowd: false, score: score))
    }
  }
  return out
}
