import EVMask
import Foundation

public enum PromptKind: String, Codable, Sendable, CaseIterable {
  /// The ground-truth box of each annotation.
  case box
  /// Simulated clicks (1, 3, 5 … each using all earlier ones).
  case point
  /// A detector's boxes (e.g. ViTDet results); masks are scored with (LVIS-)COCOeval.
  case detector
}

public enum DatasetKind: String, Codable, Sendable, CaseIterable {
  case coco
  case lvis
}

/// `I/N`: this job evaluates every N-th image starting at the I-th (0-based).
public struct Shard: Codable, Sendable, Equatable, CustomStringConvertible {
  public var index: Int
  public var count: Int

  public static let whole = Shard(index: 0, count: 1)

  public init(index: Int, count: Int) {
    self.index = index
    self.count = count
  }

  public init(parsing text: String) throws(EvaluationError) {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n
    else {
      throw .invalidParameters("shard must be I/N with 0 ≤ I < N (e.g. 0/4), got \"\(text)\"")
    }
    self.init(index: i, count: n)
  }

  public var description: String { "\(index)/\(count)" }
}

/// Everything that decides a run's numbers; a resumed run or a merged shard must match it.
public struct ZeroShotConfiguration: Codable, Sendable, Equatable {
  public var model: String
  public var checkpoint: String?
  public var annotations: String
  public var images: String
  public var prompt: PromptKind
  /// Click counts reported (point prompts), ascending.
  public var clicks: [Int]
  public var detections: String?
  public var dataset: DatasetKind
  public var limit: Int?
  public var shard: Shard
  public var skipMissingImages: Bool

  public init(
    model: String, checkpoint: String?, annotations: String, images: String, prompt: PromptKind,
    clicks: [Int] = [1], detections: String? = nil, dataset: DatasetKind = .coco, limit: Int? = nil,
    shard: Shard = .whole, skipMissingImages: Bool = false
  ) {
    self.model = model
    self.checkpoint = checkpoint
    self.annotations = annotations
    self.images = images
    self.prompt = prompt
    self.clicks = prompt == .point ? Array(Set(clicks)).sorted() : []
    self.detections = detections
    self.dataset = dataset
    self.limit = limit
    self.shard = shard
    self.skipMissingImages = skipMissingImages
  }

  public func validate() throws(EvaluationError) {
    if prompt == .point {
      guard !clicks.isEmpty, clicks.allSatisfy({ $0 >= 1 }) else {
        throw .invalidParameters("--clicks must list positive click counts, e.g. 1,3,5")
      }
      guard clicks.last! <= 100 else { throw .invalidParameters("at most 100 clicks per object") }
    }
    if prompt == .detector && detections == nil {
      throw .invalidParameters(
        "--prompt detector needs --detections FILE (detector boxes in COCO results format)")
    }
    if prompt != .detector && detections != nil {
      throw .invalidParameters("--detections is only used with --prompt detector")
    }
    if let limit, limit < 1 { throw .invalidParameters("--limit must be at least 1") }
  }
}

/// One ground-truth object's result (box / point prompts).
public struct AnnotationResult: Codable, Sendable, Equatable {
  public var id: Int
  public var imageID: Int
  public var categoryID: Int
  public var area: Double
  /// IoU × 100 of the kept mask with the ground truth: one value for a box, one per entry of
  /// `configuration.clicks` for points.
  public var iou: [Double]
  /// The simulated clicks (point prompts).
  public var clicks: [Click]?

  enum CodingKeys: String, CodingKey {
    case id
    case imageID = "image_id"
    case categoryID = "category_id"
    case area
    case iou
    case clicks
  }

  public init(
    id: Int, imageID: Int, categoryID: Int, area: Double, iou: [Double], clicks: [Click]? = nil
  ) {
    self.id = id
    self.imageID = imageID
    self.categoryID = categoryID
    self.area = area
    self.iou = iou
    self.clicks = clicks
  }
}

/// The official `get_iou_metric`: mean IoU over all objects and by area. The official buckets
/// are inclusive at both ends (`area <= 32²` small, `32² <= area <= 96²` medium, `area >= 96²`
/// large), so objects of area exactly 1024 or 9216 count in two buckets.
public struct MIoUSummary: Codable, Sendable, Equatable {
  public var clicks: Int?
  public var all: Double?
  public var large: Double?
  public var medium: Double?
  public var small: Double?
  public var counts: Counts

  public struct Counts: Codable, Sendable, Equatable {
    public var all: Int
    public var large: Int
    public var medium: Int
    public var small: Int

    public init(all: Int, large: Int, medium: Int, small: Int) {
      self.all = all
      self.large = large
      self.medium = medium
      self.small = small
    }
  }

  public init(areas: [Double], ious: [Double], clicks: Int?) {
    precondition(areas.count == ious.count)
    func mean(_ keep: (Double) -> Bool) -> (Double?, Int) {
      var sum = 0.0
      var n = 0
      for (a, v) in zip(areas, ious) where keep(a) {
        sum += v
        n += 1
      }
      return (n > 0 ? sum / Double(n) : nil, n)
    }
    let (all, nAll) = mean { _ in true }
    let (large, nLarge) = mean { $0 >= 9216 }
    let (medium, nMedium) = mean { $0 >= 1024 && $0 <= 9216 }
    let (small, nSmall) = mean { $0 <= 1024 }
    self.clicks = clicks
    self.all = all
    self.large = large
    self.medium = medium
    self.small = small
    counts = Counts(all: nAll, large: nLarge, medium: nMedium, small: nSmall)
  }

  /// The official print: `all=…, large=…, medium=…, small=…` (3 decimals); an empty bucket, on
  /// which the official script divides by zero, shows as `n/a`.
  public var line: String {
    func f(_ v: Double?) -> String { v.map(format3) ?? "n/a" }
    let body = "all=\(f(all)), large=\(f(large)), medium=\(f(medium)), small=\(f(small))"
    return clicks.map { "clicks=\($0): " + body } ?? body
  }
}

/// What `evsam eval` writes: the configuration, per-object (or per-detection) results and the
/// summary.
public struct ZeroShotReport: Codable, Sendable {
  public static let currentFormat = "evsam-eval/1"
  public var format = ZeroShotReport.currentFormat
  public var configuration: ZeroShotConfiguration
  /// Images evaluated, in evaluation order (ascending id).
  public var imageIDs: [Int]
  public var warnings: [String]
  /// Box / point prompts.
  public var annotations: [AnnotationResult]?
  /// Detector prompts: the detections with their masks (COCO results format).
  public var detections: [RawResult]?
  public var miou: [MIoUSummary]?
  public var coco: COCOEvalSummary?
  public var lvis: LVISEvalSummary?
  /// Why no metrics were computed (e.g. a shard: merge the shards first).
  public var note: String?

  enum CodingKeys: String, CodingKey {
    case format
    case configuration
    case imageIDs = "image_ids"
    case warnings
    case annotations
    case detections
    case miou
    case coco
    case lvis
    case note
  }

  public init(configuration: ZeroShotConfiguration, imageIDs: [Int], warnings: [String]) {
    self.configuration = configuration
    self.imageIDs = imageIDs
    self.warnings = warnings
  }

  /// The summary lines the official script prints (plus our notes and warnings).
  public var summaryLines: [String] {
    var lines: [String] = []
    if let miou { lines += miou.map(\.line) }
    if let coco { lines += coco.lines }
    if let lvis {
      lines += lvis.lines
      lines.append(
        "{"
          + lvis.results.prefix(9).map { "'\($0.name)': \(formatFixed($0.value * 100, digits: 3))" }
          .joined(separator: ", ") + "}")
    }
    if let note { lines.append(note) }
    return lines
  }

  public static func load(contentsOf url: URL) throws(EvaluationError) -> ZeroShotReport {
    let data: Data
    do {
      data = try Data(contentsOf: url)
    } catch {
      throw .unreadableFile(url.path, detail: error.localizedDescription)
    }
    let report: ZeroShotReport
    do {
      report = try JSONDecoder().decode(ZeroShotReport.self, from: data)
    } catch {
      throw .malformedJSON(file: url.path, detail: describe(error))
    }
    guard report.format == currentFormat else {
      throw .mergeMismatch("\(url.path) has format \(report.format), expected \(currentFormat)")
    }
    return report
  }

  public func write(to url: URL) throws(EvaluationError) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    do {
      let data = try encoder.encode(self)
      try data.write(to: url, options: .atomic)
    } catch {
      throw .writeFailed(path: url.path, detail: error.localizedDescription)
    }
  }
}
