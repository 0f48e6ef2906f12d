import EVMask
import Foundation

// COCO / LVIS annotation files, read with the semantics of pycocotools' `COCO` and lvis' `LVIS`
// classes: ids, polygons / RLE (compressed and not), crowds, and LVIS' per-image federated
// category lists.

/// An object's mask as an annotation file stores it.
public enum Segmentation: Sendable, Equatable {
  /// One or more polygons `[x0, y0, x1, y1, …]` forming one object.
  case polygons([[Double]])
  /// `{"size": [h, w], "counts": [runs…]}` (COCO crowds).
  case uncompressedRLE(height: Int, width: Int, counts: [UInt32])
  /// `{"size": [h, w], "counts": "compressed"}`.
  case compressedRLE(height: Int, width: Int, counts: String)

  /// The mask as pycocotools' `annToRLE` makes it (polygons are rasterised at `height × width`
  /// and merged; RLEs keep their own size). A polygon list whose first entry has exactly four
  /// numbers is read as boxes, as pycocotools `frPyObjects` does.
  public func rle(height: Int, width: Int) throws(EvaluationError) -> RLE {
    switch self {
    case .polygons(let polygons):
      guard let first = polygons.first else {
        throw .invalidAnnotation("the segmentation is an empty polygon list")
      }
      var parts: [RLE] = []
      if first.count == 4 {
        for p in polygons {
          guard p.count == 4 else {
            throw .invalidAnnotation(
              "the segmentation mixes a 4-number entry (read as a box by pycocotools) with a \(p.count)-number polygon"
            )
          }
          parts.append(
            RLE(
              box: BoxXYWH(x: p[0], y: p[1], width: p[2], height: p[3]), height: height,
              width: width))
        }
      } else if first.count > 4 {
        for p in polygons {
          guard p.allSatisfy(\.isFinite) else {
            throw .invalidAnnotation("a polygon has a NaN or infinite coordinate")
          }
          parts.append(RLE(polygon: p, height: height, width: width))
        }
      } else {
        throw .invalidAnnotation(
          "a polygon has \(first.count) numbers; a polygon needs at least three points (six numbers)"
        )
      }
      do {
        return try RLE.merge(parts)
      } catch {
        throw .invalidAnnotation(error.description)
      }
    case .uncompressedRLE(let h, let w, let counts):
      do {
        return try RLE(height: h, width: w, counts: counts)
      } catch {
        throw .invalidAnnotation(error.description)
      }
    case .compressedRLE(let h, let w, let counts):
      do {
        return try RLE(compressed: counts, height: h, width: w)
      } catch {
        throw .invalidAnnotation(error.description)
      }
    }
  }
}

extension Segmentation: Codable {
  private enum Keys: String, CodingKey {
    case size
    case counts
  }

  public init(from decoder: any Decoder) throws {
    if let polygons = try? decoder.singleValueContainer().decode([[Double]].self) {
      self = .polygons(polygons)
      return
    }
    let container: KeyedDecodingContainer<Keys>
    do {
      container = try decoder.container(keyedBy: Keys.self)
    } catch {
      throw DecodingError.dataCorrupted(
        .init(
          codingPath: decoder.codingPath,
          debugDescription:
            "a segmentation must be a list of polygons or an RLE object {size, counts}"))
    }
    let size = try container.decode([Int].self, forKey: .size)
    guard size.count == 2, RLE.isValidSize(height: size[0], width: size[1]) else {
      throw DecodingError.dataCorruptedError(
        forKey: .size, in: container,
        debugDescription: "RLE size must be [height, width], got \(size)")
    }
    if let counts = try? container.decode(String.self, forKey: .counts) {
      self = .compressedRLE(height: size[0], width: size[1], counts: counts)
    } else {
      // Read as Int first so that a negative or oversized run gets a message of its own
      // rather than JSONDecoder's "not representable" (which reads like a syntax error).
      let runs = try container.decode([Int].self, forKey: .counts)
      if let bad = runs.firstIndex(where: { $0 < 0 || $0 > Int(UInt32.max) }) {
        throw DecodingError.dataCorruptedError(
          forKey: .counts, in: container,
          debugDescription:
            "RLE counts must be run lengths 0…\(UInt32.max); run \(bad) is \(runs[bad])")
      }
      self = .uncompressedRLE(
        height: size[0], width: size[1], counts: runs.map { UInt32($0) })
    }
  }

  public func encode(to encoder: any Encoder) throws {
    switch self {
    case .polygons(let p):
      var c = encoder.singleValueContainer()
      try c.encode(p)
    case .uncompressedRLE(let h, let w, let counts):
      var c = encoder.container(keyedBy: Keys.self)
      try c.encode([h, w], forKey: .size)
      try c.encode(counts, forKey: .counts)
    case .compressedRLE(let h, let w, let counts):
      var c = encoder.container(keyedBy: Keys.self)
      try c.encode([h, w], forKey: .size)
      try c.encode(counts, forKey: .counts)
    }
  }

  public init(_ rle: RLE) {
    self = .compressedRLE(height: rle.height, width: rle.width, counts: rle.compressedCounts)
  }
}

public struct COCOImage: Sendable, Equatable, Codable {
  public var id: Int
  public var fileName: String?
  /// LVIS names images only by URL (`…/val2017/000000397133.jpg`).
  public var cocoURL: String?
  public var height: Int
  public var width: Int
  /// LVIS: categories verified absent from the image.
  public var negativeCategoryIDs: [Int]?
  /// LVIS: categories present but not exhaustively annotated.
  public var notExhaustiveCategoryIDs: [Int]?

  enum CodingKeys: String, CodingKey {
    case id
    case fileName = "file_name"
    case cocoURL = "coco_url"
    case height
    case width
    case negativeCategoryIDs = "neg_category_ids"
    case notExhaustiveCategoryIDs = "not_exhaustive_category_ids"
  }

  public init(
    id: Int, fileName: String?, cocoURL: String? = nil, height: Int, width: Int,
    negativeCategoryIDs: [Int]? = nil, notExhaustiveCategoryIDs: [Int]? = nil
  ) {
    self.id = id
    self.fileName = fileName
    self.cocoURL = cocoURL
    self.height = height
    self.width = width
    self.negativeCategoryIDs = negativeCategoryIDs
    self.notExhaustiveCategoryIDs = notExhaustiveCategoryIDs
  }
}

public struct COCOCategory: Sendable, Equatable, Codable {
  public var id: Int
  public var name: String?
  /// LVIS frequency group: "r" (rare), "c" (common) or "f" (frequent).
  public var frequency: String?

  public init(id: Int, name: String? = nil, frequency: String? = nil) {
    self.id = id
    self.name = name
    self.frequency = frequency
  }
}

/// A ground-truth annotation, or (with `score`) a result.
public struct COCOAnnotation: Sendable, Equatable, Codable {
  public var id: Int
  public var imageID: Int
  public var categoryID: Int
  public var segmentation: Segmentation?
  public var area: Double
  public var bbox: BoxXYWH?
  public var isCrowd: Bool
  public var ignore: Bool?
  public var score: Double?

  enum CodingKeys: String, CodingKey {
    case id
    case imageID = "image_id"
    case categoryID = "category_id"
    case segmentation
    case area
    case bbox
    case isCrowd = "iscrowd"
    case ignore
    case score
  }

  public init(
    id: Int, imageID: Int, categoryID: Int, segmentation: Segmentation?, area: Double,
    bbox: BoxXYWH?, isCrowd: Bool = false, ignore: Bool? = nil, score: Double? = nil
  ) {
    self.id = id
    self.imageID = imageID
    self.categoryID = categoryID
    self.segmentation = segmentation
    self.area = area
    self.bbox = bbox
    self.isCrowd = isCrowd
    self.ignore = ignore
    self.score = score
  }

  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    id = try c.decode(Int.self, forKey: .id)
    imageID = try c.decode(Int.self, forKey: .imageID)
    categoryID = try c.decode(Int.self, forKey: .categoryID)
    segmentation = try c.decodeIfPresent(Segmentation.self, forKey: .segmentation)
    area = try c.decode(Double.self, forKey: .area)
    bbox = try c.decodeIfPresent(FlexibleBox.self, forKey: .bbox)?.box
    isCrowd = try c.decodeIfPresent(FlexibleBool.self, forKey: .isCrowd)?.value ?? false
    ignore = try c.decodeIfPresent(FlexibleBool.self, forKey: .ignore)?.value
    score = try c.decodeIfPresent(Double.self, forKey: .score)
  }

  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(id, forKey: .id)
    try c.encode(imageID, forKey: .imageID)
    try c.encode(categoryID, forKey: .categoryID)
    try c.encodeIfPresent(segmentation, forKey: .segmentation)
    try c.encode(area, forKey: .area)
    try c.encodeIfPresent(bbox.map(\.array), forKey: .bbox)
    try c.encode(isCrowd ? 1 : 0, forKey: .isCrowd)
    try c.encodeIfPresent(ignore.map { $0 ? 1 : 0 }, forKey: .ignore)
    try c.encodeIfPresent(score, forKey: .score)
  }
}

/// `[x, y, w, h]` in JSON.
struct FlexibleBox: Decodable {
  let box: BoxXYWH
  init(from decoder: any Decoder) throws {
    let values = try decoder.singleValueContainer().decode([Double].self)
    guard values.count == 4 else {
      throw DecodingError.dataCorrupted(
        .init(
          codingPath: decoder.codingPath,
          debugDescription: "a bbox must be [x, y, width, height], got \(values.count) numbers"))
    }
    box = BoxXYWH(x: values[0], y: values[1], width: values[2], height: values[3])
  }
}

/// `0` / `1` or `false` / `true`.
struct FlexibleBool: Decodable {
  let value: Bool
  init(from decoder: any Decoder) throws {
    let c = try decoder.singleValueContainer()
    if let b = try? c.decode(Bool.self) {
      value = b
    } else {
      value = try c.decode(Int.self) != 0
    }
  }
}

/// A COCO or LVIS annotation file.
public struct COCODataset: Sendable {
  public var images: [COCOImage]
  public var annotations: [COCOAnnotation]
  public var categories: [COCOCategory]

  private struct File: Decodable {
    var images: [COCOImage]
    var annotations: [COCOAnnotation]?
    var categories: [COCOCategory]?
  }

  public init(images: [COCOImage], annotations: [COCOAnnotation], categories: [COCOCategory]) {
    self.images = images
    self.annotations = annotations
    self.categories = categories
  }

  public init(jsonData: Data, source: String) throws(EvaluationError) {
    let file: File
    do {
      file = try JSONDecoder().decode(File.self, from: jsonData)
    } catch {
      throw .malformedJSON(file: source, detail: describe(error))
    }
    images = file.images
    annotations = file.annotations ?? []
    categories = file.categories ?? []
  }

  public static func load(contentsOf url: URL) throws(EvaluationError) -> COCODataset {
    let data: Data
    do {
      data = try Data(contentsOf: url, options: .mappedIfSafe)
    } catch {
      throw .unreadableFile(url.path, detail: error.localizedDescription)
    }
    return try COCODataset(jsonData: data, source: url.path)
  }

  /// LVIS files list per-image negative / not-exhaustive categories.
  public var looksLikeLVIS: Bool {
    images.contains { $0.negativeCategoryIDs != nil || $0.notExhaustiveCategoryIDs != nil }
      || categories.contains { $0.frequency != nil }
  }

  /// Images by id; duplicate ids are an error (pycocotools silently keeps the last one).
  public func imagesByID() throws(EvaluationError) -> [Int: COCOImage] {
    var map: [Int: COCOImage] = [:]
    map.reserveCapacity(images.count)
    for image in images {
      guard map.updateValue(image, forKey: image.id) == nil else {
        throw .invalidAnnotation(
          "image id \(image.id) appears more than once in the annotation file")
      }
      guard image.height > 0, image.width > 0,
        RLE.isValidSize(height: image.height, width: image.width)
      else {
        throw .invalidAnnotation(
          "image \(image.id) has size \(image.width)×\(image.height) (at most 2^32 − 1 pixels)")
      }
    }
    return map
  }

  /// Checks what pycocotools would otherwise trip over or silently mishandle.
  public func validateIDs() throws(EvaluationError) {
    _ = try imagesByID()
    var annotationIDs = Set<Int>()
    annotationIDs.reserveCapacity(annotations.count)
    for a in annotations where !annotationIDs.insert(a.id).inserted {
      throw .invalidAnnotation(
        "annotation id \(a.id) appears more than once (pycocotools would evaluate one of them twice)"
      )
    }
    var categoryIDs = Set<Int>()
    for c in categories where !categoryIDs.insert(c.id).inserted {
      throw .invalidAnnotation("category id \(c.id) appears more than once")
    }
  }
}

/// One line describing a JSON decoding failure, with the path to the offending value.
func describe(_ error: any Error) -> String {
  guard let error = error as? DecodingError else { return "\(error)" }
  func path(_ p: [any CodingKey]) -> String {
    let s = p.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }.joined()
    return s.isEmpty ? "the top level" : String(s.drop { $0 == "." })
  }
  switch error {
  case .typeMismatch(let type, let ctx):
    return "\(path(ctx.codingPath)): expected \(type) (\(ctx.debugDescription))"
  case .valueNotFound(let type, let ctx):
    return "\(path(ctx.codingPath)): missing \(type) value"
  case .keyNotFound(let key, let ctx):
    return "\(path(ctx.codingPath + [key])): required key \"\(key.stringValue)\" is missing"
  case .dataCorrupted(let ctx):
    let underlying = (ctx.underlyingError as NSError?).map { " (\($0.localizedDescription))" } ?? ""
    return "\(path(ctx.codingPath)): \(ctx.debugDescription)\(underlying)"
  @unknown default:
    return "\(error)"
  }
}
