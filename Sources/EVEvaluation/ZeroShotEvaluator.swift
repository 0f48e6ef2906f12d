import EVImage
import EVMask
import Foundation

/// The official zero-shot protocol (eval_efficientvit_sam_model.py): for every image, encode once,
/// then prompt with each annotation's box, with simulated clicks, or with each detector box;
/// keep the multimask output with the highest predicted IoU.
///
/// Long runs append one line per finished image to a journal (`<output>.partial.jsonl`); a new
/// run with the same configuration resumes from it. Shards split the image list for parallel
/// jobs; `merge` joins their reports.
public final class ZeroShotEvaluator {
  public let configuration: ZeroShotConfiguration
  public let dataset: COCODataset
  public let detections: [RawResult]?
  public let imagesDirectory: URL

  /// One image's work.
  struct WorkItem {
    let image: COCOImage
    let annotations: [COCOAnnotation]
    let detections: [RawResult]
    var file: URL?
  }

  /// One finished image, as the journal stores it.
  struct ImageRecord: Codable {
    var imageID: Int
    var annotations: [AnnotationResult]?
    var detections: [RawResult]?

    enum CodingKeys: String, CodingKey {
      case imageID = "image_id"
      case annotations
      case detections
    }
  }

  struct JournalHeader: Codable {
    var journal: String
    var configuration: ZeroShotConfiguration
  }

  private(set) var work: [WorkItem] = []
  /// Findings that do not stop the run; they are counted in the report.
  public private(set) var warnings: [String] = []

  public init(
    configuration: ZeroShotConfiguration, dataset: COCODataset, detections: [RawResult]? = nil,
    imagesDirectory: URL
  ) throws(EvaluationError) {
    try configuration.validate()
    self.configuration = configuration
    self.dataset = dataset
    self.detections = detections
    self.imagesDirectory = imagesDirectory
    try plan()
  }

  /// Number of images this run (shard) evaluates.
  public var imageCount: Int { work.count }

  // MARK: - Planning

  private func plan() throws(EvaluationError) {
    let imagesByID = try dataset.imagesByID()
    try dataset.validateIDs()
    var annotationsByImage: [Int: [COCOAnnotation]] = [:]
    var detectionsByImage: [Int: [RawResult]] = [:]
    switch configuration.prompt {
    case .box, .point:
      var unknown = 0
      var tiny = 0
      for a in dataset.annotations {
        guard imagesByID[a.imageID] != nil else {
          unknown += 1
          continue
        }
        // The official loop skips objects with area < 1.
        guard a.area >= 1 else {
          tiny += 1
          continue
        }
        annotationsByImage[a.imageID, default: []].append(a)
      }
      if unknown > 0 {
        warnings.append(
          "\(unknown) annotation(s) refer to image ids not in the annotation file's images; skipped"
        )
      }
      if tiny > 0 {
        warnings.append(
          "\(tiny) annotation(s) with area < 1 skipped (as the official protocol does)")
      }
      guard !annotationsByImage.isEmpty else {
        throw .emptyResults("the annotation file has no objects with area ≥ 1 on its images")
      }
    case .detector:
      guard let detections, !detections.isEmpty else {
        throw .emptyResults("the detections file is empty")
      }
      var unknown = 0
      for (i, d) in detections.enumerated() {
        guard imagesByID[d.imageID] != nil else {
          unknown += 1
          continue
        }
        guard d.bbox != nil else { throw .invalidResults("detection \(i) has no bbox") }
        guard let score = d.score, score.isFinite else {
          throw .invalidResults("detection \(i) has no finite score")
        }
        detectionsByImage[d.imageID, default: []].append(d)
      }
      if unknown > 0 {
        warnings.append(
          "\(unknown) detection(s) refer to image ids not in the annotation file; skipped")
      }
      guard !detectionsByImage.isEmpty else {
        throw .emptyResults("no detection refers to an image of the annotation file")
      }
    }
    if configuration.prompt == .detector && configuration.dataset == .lvis {
      // LVISEval needs these at the end of the run; check them before hours of work.
      if let image = dataset.images.first(where: {
        $0.negativeCategoryIDs == nil || $0.notExhaustiveCategoryIDs == nil
      }) {
        throw .invalidAnnotation(
          "image \(image.id) lacks neg_category_ids / not_exhaustive_category_ids, which LVIS evaluation needs; use --dataset coco for a COCO file"
        )
      }
      if let category = dataset.categories.first(where: {
        !["r", "c", "f"].contains($0.frequency ?? "")
      }) {
        throw .invalidAnnotation(
          "category \(category.id) has no LVIS frequency (r, c or f); use --dataset coco for a COCO file"
        )
      }
    }
    var items = dataset.images.sorted { $0.id < $1.id }.compactMap { image -> WorkItem? in
      let anns = annotationsByImage[image.id] ?? []
      let dets = detectionsByImage[image.id] ?? []
      if anns.isEmpty && dets.isEmpty { return nil }
      return WorkItem(image: image, annotations: anns, detections: dets, file: nil)
    }
    if let limit = configuration.limit { items = Array(items.prefix(limit)) }
    let shard = configuration.shard
    items = items.enumerated().filter { $0.offset % shard.count == shard.index }.map(\.element)

    var missing: [String] = []
    for i in items.indices {
      let candidates = candidateFiles(for: items[i].image)
      items[i].file = candidates.first { FileManager.default.fileExists(atPath: $0.path) }
      if items[i].file == nil {
        missing.append(
          candidates.first?.path ?? "image \(items[i].image.id) (no file_name or coco_url)")
      }
    }
    if !missing.isEmpty {
      guard configuration.skipMissingImages else {
        throw .missingImages(count: missing.count, examples: missing)
      }
      let objects = items.filter { $0.file == nil }.reduce(0) {
        $0 + $1.annotations.count + $1.detections.count
      }
      warnings.append(
        "\(missing.count) image file(s) missing and skipped with their \(objects) object(s)/detection(s), e.g. \(missing.prefix(3).joined(separator: ", "))"
      )
      items.removeAll { $0.file == nil }
    }
    guard !items.isEmpty else {
      throw .emptyResults("no image to evaluate (check --limit / --shard / --images)")
    }
    work = items
  }

  /// `file_name` under the images folder; for LVIS (URL only) `<split>/<name>` as the official
  /// script, then `<name>`.
  func candidateFiles(for image: COCOImage) -> [URL] {
    var out: [URL] = []
    if let name = image.fileName, !name.isEmpty {
      out.append(imagesDirectory.appendingPathComponent(name))
    }
    if let url = image.cocoURL {
      let parts = url.split(separator: "/").map(String.init)
      if parts.count >= 2 {
        out.append(
          imagesDirectory.appendingPathComponent(parts[parts.count - 2]).appendingPathComponent(
            parts[parts.count - 1]))
      }
      if let last = parts.last { out.append(imagesDirectory.appendingPathComponent(last)) }
    }
    return out
  }

  // MARK: - Running

  /// Evaluates every image not already in the journal, then summarises.
  ///
  /// - Parameters:
  ///   - journal: where finished images are appended (and read back when resuming); nil for none.
  ///   - progress: called with (images done, total) after each image; make a `ProgressReporter`.
  public func run(
    segmenter: PromptSegmenter, journal: URL?,
    progress: ((_ done: Int, _ total: Int, _ resumed: Int) -> Void)? = nil
  ) throws(EvaluationError) -> ZeroShotReport {
    var records: [Int: ImageRecord] = [:]
    var handle: FileHandle?
    if let journal {
      records = try readJournal(journal)
      handle = try openJournal(journal, fresh: records.isEmpty)
    }
    defer { try? handle?.close() }
    let resumed = work.filter { records[$0.image.id] != nil }.count
    progress?(resumed, work.count, resumed)
    var done = resumed
    for item in work where records[item.image.id] == nil {
      let record = try evaluate(item, segmenter: segmenter)
      records[item.image.id] = record
      if let handle { try append(record, to: handle, path: journal!.path) }
      done += 1
      progress?(done, work.count, resumed)
    }
    return try makeReport(records: work.map { records[$0.image.id]! })
  }

  private func evaluate(_ item: WorkItem, segmenter: PromptSegmenter) throws(EvaluationError)
    -> ImageRecord
  {
    let file = item.file!
    let picture: RGBImage
    do {
      // The official script reads with PIL (no EXIF rotation): annotations refer to stored pixels.
      picture = try RGBImage(contentsOf: file, applyEXIFOrientation: false)
    } catch {
      throw .imageDecoding("cannot decode image \(item.image.id) (\(file.path)): \(error)")
    }
    let h = item.image.height
    let w = item.image.width
    guard picture.height == h, picture.width == w else {
      throw .imageSizeMismatch(
        imageID: item.image.id, file: file.path, annotated: [h, w],
        decoded: [picture.height, picture.width])
    }
    do {
      try segmenter.setImage(picture)
    } catch {
      throw .prediction("image \(item.image.id): \(error)")
    }
    switch configuration.prompt {
    case .box:
      let gts = try item.annotations.map { a throws(EvaluationError) in
        try groundTruthMask(a, height: h, width: w)
      }
      var boxes: [Box] = []
      for a in item.annotations {
        guard let b = a.bbox else {
          throw .invalidAnnotation("annotation \(a.id) has no bbox (needed for box prompts)")
        }
        boxes.append(Box(x0: b.x, y0: b.y, x1: b.x + b.width, y1: b.y + b.height))
      }
      let masks: [[Bool]]
      do {
        masks = try segmenter.bestMasks(boxes: boxes)
      } catch {
        throw .prediction("image \(item.image.id): \(error)")
      }
      let results = item.annotations.indices.map { i in
        AnnotationResult(
          id: item.annotations[i].id, imageID: item.image.id,
          categoryID: item.annotations[i].categoryID,
          area: item.annotations[i].area, iou: [maskIoU(masks[i], gts[i])])
      }
      return ImageRecord(imageID: item.image.id, annotations: results, detections: nil)

    case .point:
      let gts = try item.annotations.map { a throws(EvaluationError) in
        try groundTruthMask(a, height: h, width: w)
      }
      var clickers = gts.map { Clicker(groundTruth: $0, height: h, width: w) }
      var predictions = [[Bool]](
        repeating: [Bool](repeating: false, count: h * w), count: gts.count)
      var ious = [[Double]](repeating: [], count: gts.count)
      let wanted = Set(configuration.clicks)
      for round in 1...configuration.clicks.last! {
        for i in clickers.indices { clickers[i].nextClick(prediction: predictions[i]) }
        let pointSets = clickers.map { c in c.clicks.map { Point(x: Double($0.x), y: Double($0.y)) }
        }
        let labels = clickers.map { c in c.clicks.map { $0.positive ? 1 : 0 } }
        do {
          predictions = try segmenter.bestMasks(pointSets: pointSets, labels: labels)
        } catch {
          throw .prediction("image \(item.image.id): \(error)")
        }
        if wanted.contains(round) {
          for i in gts.indices { ious[i].append(maskIoU(predictions[i], gts[i])) }
        }
      }
      let results = item.annotations.indices.map { i in
        AnnotationResult(
          id: item.annotations[i].id, imageID: item.image.id,
          categoryID: item.annotations[i].categoryID,
          area: item.annotations[i].area, iou: ious[i], clicks: clickers[i].clicks)
      }
      return ImageRecord(imageID: item.image.id, annotations: results, detections: nil)

    case .detector:
      let boxes = item.detections.map { d -> Box in
        let b = d.bbox!
        return Box(x0: b.x, y0: b.y, x1: b.x + b.width, y1: b.y + b.height)
      }
      let masks: [[Bool]]
      do {
        masks = try segmenter.bestMasks(boxes: boxes)
      } catch {
        throw .prediction("image \(item.image.id): \(error)")
      }
      var out = item.detections
      for i in out.indices {
        out[i].segmentation = Segmentation(RLE(rowMajor: masks[i], height: h, width: w))
      }
      return ImageRecord(imageID: item.image.id, annotations: nil, detections: out)
    }
  }

  private func groundTruthMask(_ a: COCOAnnotation, height: Int, width: Int) throws(EvaluationError)
    -> [Bool]
  {
    guard let segmentation = a.segmentation else {
      throw .invalidAnnotation("annotation \(a.id) has no segmentation")
    }
    let rle: RLE
    do {
      rle = try segmentation.rle(height: height, width: width)
    } catch {
      throw .invalidAnnotation("annotation \(a.id): \(error.description)")
    }
    guard rle.height == height, rle.width == width else {
      throw .invalidAnnotation(
        "annotation \(a.id)'s mask is \(rle.width)×\(rle.height) but its image is \(width)×\(height)"
      )
    }
    return rle.decodeRowMajorBool()
  }

  // MARK: - Summaries

  func makeReport(records: [ImageRecord]) throws(EvaluationError) -> ZeroShotReport {
    var report = ZeroShotReport(
      configuration: configuration, imageIDs: records.map(\.imageID), warnings: warnings)
    switch configuration.prompt {
    case .box, .point:
      report.annotations = records.flatMap { $0.annotations ?? [] }
    case .detector:
      report.detections = records.flatMap { $0.detections ?? [] }
    }
    let partial = configuration.limit != nil || configuration.skipMissingImages
    try ZeroShotEvaluator.summarize(
      &report, groundTruth: dataset, restrictToEvaluatedImages: partial)
    return report
  }

  /// Fills in the metrics: mIoU buckets for box / point prompts; COCOeval or LVISEval (segm,
  /// maxDets 100 / 300) of the detector masks, as the official script (boxes dropped first, so
  /// areas come from the masks). A shard gets no metrics: they need every image.
  public static func summarize(
    _ report: inout ZeroShotReport, groundTruth: COCODataset?, restrictToEvaluatedImages: Bool
  ) throws(EvaluationError) {
    let configuration = report.configuration
    if configuration.shard.count > 1 {
      report.note =
        "shard \(configuration.shard) of the images: combine all \(configuration.shard.count) shards with `evsam merge` for the metrics"
    }
    switch configuration.prompt {
    case .box, .point:
      let annotations = report.annotations ?? []
      guard !annotations.isEmpty else { throw .emptyResults("no object was evaluated") }
      let areas = annotations.map(\.area)
      if configuration.prompt == .box {
        report.miou = [MIoUSummary(areas: areas, ious: annotations.map { $0.iou[0] }, clicks: nil)]
      } else {
        report.miou = configuration.clicks.enumerated().map { k, clicks in
          MIoUSummary(areas: areas, ious: annotations.map { $0.iou[k] }, clicks: clicks)
        }
      }
    case .detector:
      guard configuration.shard.count == 1 else { return }
      guard let groundTruth else { return }
      let detections = (report.detections ?? []).map { d in
        RawResult(
          imageID: d.imageID, categoryID: d.categoryID, score: d.score, bbox: nil,
          segmentation: d.segmentation)
      }
      guard !detections.isEmpty else { throw .emptyResults("no detection was evaluated") }
      let imageIDs = restrictToEvaluatedImages ? report.imageIDs : nil
      switch configuration.dataset {
      case .coco:
        var parameters = COCOEvalParameters(iouType: .segm)
        parameters.imageIDs = imageIDs
        report.coco = try COCOEvaluator.evaluate(
          groundTruth: groundTruth, results: detections, parameters: parameters)
      case .lvis:
        report.lvis = try LVISEvaluator.evaluate(
          groundTruth: groundTruth, results: detections, iouType: .segm, imageIDs: imageIDs)
      }
      if imageIDs != nil {
        report.note =
          "metrics over the \(report.imageIDs.count) evaluated image(s) only (--limit / skipped images)"
      }
    }
  }

  // MARK: - Journal

  private func readJournal(_ url: URL) throws(EvaluationError) -> [Int: ImageRecord] {
    guard FileManager.default.fileExists(atPath: url.path) else { return [:] }
    let data: Data
    do {
      data = try Data(contentsOf: url)
    } catch {
      throw .unreadableFile(url.path, detail: error.localizedDescription)
    }
    let lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true)
    guard let first = lines.first else { return [:] }
    let decoder = JSONDecoder()
    guard let header = try? decoder.decode(JournalHeader.self, from: Data(first)),
      header.journal == "evsam-eval-journal/1"
    else {
      throw .journalMismatch(
        path: url.path, detail: "its first line is not an evsam eval journal header")
    }
    guard header.configuration == configuration else {
      throw .journalMismatch(
        path: url.path, detail: differences(header.configuration, configuration))
    }
    let planned = Set(work.map(\.image.id))
    var records: [Int: ImageRecord] = [:]
    for (n, line) in lines.dropFirst().enumerated() {
      guard let record = try? decoder.decode(ImageRecord.self, from: Data(line)) else {
        // An interrupted write leaves a partial last line; that image is simply redone.
        if n == lines.count - 2 { break }
        throw .journalMismatch(path: url.path, detail: "line \(n + 2) is not a valid image record")
      }
      guard planned.contains(record.imageID) else {
        throw .journalMismatch(
          path: url.path,
          detail: "it holds image \(record.imageID), which this run does not evaluate")
      }
      records[record.imageID] = record
    }
    return records
  }

  private func openJournal(_ url: URL, fresh: Bool) throws(EvaluationError) -> FileHandle {
    do {
      if fresh {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data = try encoder.encode(
          JournalHeader(journal: "evsam-eval-journal/1", configuration: configuration))
        data.append(UInt8(ascii: "\n"))
        try data.write(to: url)
      } else {
        // Drop a torn last line so appended records start on a line of their own.
        let data = try Data(contentsOf: url)
        if let last = data.last, last != UInt8(ascii: "\n") {
          let cut = (data.lastIndex(of: UInt8(ascii: "\n")) ?? -1) + 1
          try data.prefix(cut).write(to: url)
        }
      }
      let handle = try FileHandle(forWritingTo: url)
      try handle.seekToEnd()
      return handle
    } catch {
      throw .writeFailed(path: url.path, detail: error.localizedDescription)
    }
  }

  private func append(_ record: ImageRecord, to handle: FileHandle, path: String)
    throws(EvaluationError)
  {
    do {
      var data = try JSONEncoder().encode(record)
      data.append(UInt8(ascii: "\n"))
      try handle.write(contentsOf: data)
    } catch {
      throw .writeFailed(path: path, detail: error.localizedDescription)
    }
  }
}

/// IoU × 100 exactly as the official `iou`: `intersection / (union + 1e-7) * 100`.
public func maskIoU(_ a: [Bool], _ b: [Bool]) -> Double {
  precondition(a.count == b.count)
  var intersection = 0
  var union = 0
  for i in 0..<a.count {
    let x = a[i]
    let y = b[i]
    if x && y { intersection += 1 }
    if x || y { union += 1 }
  }
  return Double(intersection) / (Double(union) + 1e-7) * 100
}

/// Which configuration fields differ, for messages.
func differences(_ a: ZeroShotConfiguration, _ b: ZeroShotConfiguration) -> String {
  var out: [String] = []
  if a.model != b.model { out.append("model \(a.model) vs \(b.model)") }
  if a.checkpoint != b.checkpoint {
    out.append("checkpoint \(a.checkpoint ?? "-") vs \(b.checkpoint ?? "-")")
  }
  if a.annotations != b.annotations {
    out.append("annotations \(a.annotations) vs \(b.annotations)")
  }
  if a.images != b.images { out.append("images \(a.images) vs \(b.images)") }
  if a.prompt != b.prompt { out.append("prompt \(a.prompt.rawValue) vs \(b.prompt.rawValue)") }
  if a.clicks != b.clicks { out.append("clicks \(a.clicks) vs \(b.clicks)") }
  if a.detections != b.detections {
    out.append("detections \(a.detections ?? "-") vs \(b.detections ?? "-")")
  }
  if a.dataset != b.dataset { out.append("dataset \(a.dataset.rawValue) vs \(b.dataset.rawValue)") }
  if a.limit != b.limit {
    out.append(
      "limit \(a.limit.map(String.init) ?? "none") vs \(b.limit.map(String.init) ?? "none")")
  }
  if a.shard != b.shard { out.append("shard \(a.shard) vs \(b.shard)") }
  if a.skipMissingImages != b.skipMissingImages { out.append("skip-missing-images differs") }
  return out.isEmpty ? "same configuration" : out.joined(separator: "; ")
}
