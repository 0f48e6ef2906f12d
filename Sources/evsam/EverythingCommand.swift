import ArgumentParser
import EVExport
import EVImage
import EVMaskGenerator
import EVModel
import EVPredictor
import EVTensor
import Foundation

/// The parameters of SAM's automatic mask generator, named as SAM names them.
struct GeneratorOptions: ParsableArguments {
  @Option(help: "Points sampled along each side of the image (the grid is N×N).")
  var pointsPerSide: Int = 32

  @Option(
    help: ArgumentHelp(
      "Explicit normalised point grids instead of --points-per-side: a JSON list with one list of [x, y] in [0, 1] per crop layer.",
      valueName: "file.json"))
  var pointGrids: String?

  @Option(help: "Point prompts decoded together.")
  var pointsPerBatch: Int = 64

  @Option(
    name: .customLong("pred-iou-thresh"),
    help: "Keep masks whose predicted IoU is above this (0 disables the filter).")
  var predIoUThresh: Double = 0.88

  @Option(help: "Keep masks whose stability score is at least this (0 disables the filter).")
  var stabilityScoreThresh: Double = 0.95

  @Option(help: "Shift of the logit cutoff used for the stability score.")
  var stabilityScoreOffset: Double = 1.0

  @Option(
    name: .customLong("box-nms-thresh"),
    help: "Box IoU above which NMS drops a duplicate mask within a crop.")
  var boxNMSThresh: Double = 0.7

  @Option(help: "Crop layers beyond the whole image (layer i has 2^i × 2^i crops).")
  var cropNLayers: Int = 0

  @Option(
    name: .customLong("crop-nms-thresh"),
    help: "Box IoU above which NMS drops a duplicate mask between crops.")
  var cropNMSThresh: Double = 0.7

  @Option(help: "Overlap of first-layer crops as a fraction of the short side.")
  var cropOverlapRatio: Double = 512.0 / 1500.0

  @Option(help: "Points per side in crop layer i are divided by this to the power i.")
  var cropNPointsDownscaleFactor: Int = 1

  @Option(help: "Fill holes and remove islands smaller than this many pixels (0 disables it).")
  var minMaskRegionArea: Int = 0

  // SAM's flags spell these with underscores; accept both spellings.
  enum Mode: String, ExpressibleByArgument, CaseIterable {
    case binaryMask = "binary_mask"
    case uncompressedRLE = "uncompressed_rle"
    case cocoRLE = "coco_rle"

    init?(argument: String) {
      self.init(rawValue: argument.replacingOccurrences(of: "-", with: "_"))
    }

    var outputMode: OutputMode {
      switch self {
      case .binaryMask: .binaryMask
      case .uncompressedRLE: .uncompressedRLE
      case .cocoRLE: .cocoRLE
      }
    }
  }

  @Option(
    help: ArgumentHelp(
      "coco_rle (pycocotools' compressed RLE), uncompressed_rle (SAM's run lists) or binary_mask (one PNG per mask beside the JSON).",
      valueName: "mode"))
  var outputMode: Mode = .cocoRLE

  /// Bad settings are refused before the model loads, with the generator's own message.
  func validate() throws { _ = try settings() }

  func settings() throws -> MaskGeneratorSettings {
    var s = MaskGeneratorSettings()
    if let pointGrids {
      s.pointsPerSide = nil
      s.pointGrids = try loadPointGrids(pointGrids)
    } else {
      s.pointsPerSide = pointsPerSide
    }
    s.pointsPerBatch = pointsPerBatch
    s.predIoUThresh = predIoUThresh
    s.stabilityScoreThresh = stabilityScoreThresh
    s.stabilityScoreOffset = stabilityScoreOffset
    s.boxNMSThresh = boxNMSThresh
    s.cropNLayers = cropNLayers
    s.cropNMSThresh = cropNMSThresh
    s.cropOverlapRatio = cropOverlapRatio
    s.cropNPointsDownscaleFactor = cropNPointsDownscaleFactor
    s.minMaskRegionArea = minMaskRegionArea
    s.outputMode = outputMode.outputMode
    do {
      _ = try s.layerPointGrids()
    } catch {
      throw CLIError(error.description)
    }
    return s
  }

  private func loadPointGrids(_ path: String) throws -> [[Point]] {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw CLIError("cannot read point grids \(path): \(error.localizedDescription)")
    }
    // JSONDecoder parses float64 exactly (JSONSerialization on Linux may not).
    guard let grids = try? JSONDecoder().decode([[[Double]]].self, from: data),
      grids.allSatisfy({ $0.allSatisfy { $0.count == 2 } })
    else {
      throw CLIError(
        "\(path): point grids must be a JSON list of grids, each a list of [x, y] pairs in [0, 1]")
    }
    return grids.map { $0.map { Point(x: $0[0], y: $0[1]) } }
  }
}

struct EverythingCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "everything",
    abstract: "Segment everything: SAM's automatic mask generator.",
    discussion: """
      Prompts the model with a grid of points, keeps confident and stable masks, and removes \
      duplicates, exactly as the official automatic mask generator does. Writes SAM's records \
      (segmentation, area, bbox, predicted_iou, point_coords, stability_score, crop_box) as JSON.

      With a folder as input, OUT is a folder and each image gets OUT/<file name>.json, the \
      image's extension kept so that photo.jpg and photo.png do not collide (and \
      <file name>.png with --overlay, a folder then). Images whose JSON is already complete and \
      was made with the same model, checkpoint and settings are skipped, so an interrupted run \
      can simply be started again; an output made with anything else is refused unless \
      --overwrite is given.

      --format writes the masks for other tools as well. With an image, OUT is then the \
      format's file: a COCO instances file (coco, polygons), YOLO labels (yolo-seg), a LabelMe \
      file (labelme) or a folder of mask_<i>.png (png). With a folder, the per-image JSON files \
      stay (they make runs resumable) and, once the run ends, OUT also holds instances.json \
      (coco, polygons: every image done so far, other shards' included), labels/<stem>.txt \
      with labels/classes.txt (yolo-seg), labelme/<stem>.json (labelme) or \
      <file name>_masks/mask_<i>.png (png).
      """)

  @OptionGroup var modelOptions: ModelOptions
  @OptionGroup var generatorOptions: GeneratorOptions
  @OptionGroup(title: "Output format") var exportOptions: ExportOptions

  @Argument(help: "PNG, JPEG, TIFF or WebP image, or a folder of them.")
  var input: String

  @Option(
    name: .shortAndLong,
    help: ArgumentHelp(
      "Output file (the --format's; a folder when the input is a folder or the format is png).",
      valueName: "path")
  )
  var output: String

  @Option(
    help: ArgumentHelp(
      "Also draw every mask in its own colour over the image (a folder when the input is a folder).",
      valueName: "path"))
  var overlay: String?

  @Flag(help: "Redo images whose output already exists.")
  var overwrite = false

  @OptionGroup(title: "Shards (with a folder)") var shardOptions: ShardOptions

  @OptionGroup var quietOption: QuietOption

  func run() throws {
    let settings = try generatorOptions.settings()
    let inputURL = URL(fileURLWithPath: input)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: inputURL.path, isDirectory: &isDirectory) else {
      throw CLIError("\(input): no such file or folder")
    }
    let isFolder = isDirectory.boolValue
    let format = exportOptions.format
    var allImages: [URL] = []
    let jobs: [(image: URL, json: URL, overlay: URL?)]
    if isFolder {
      let all = try imageFiles(in: inputURL)
      allImages = all
      guard !all.isEmpty else {
        throw CLIError("\(input): no .png/.jpg/.jpeg images in this folder")
      }
      let (shard, source) = try shardOptions.resolve()
      if let source, !quietOption.quiet { printErr("shard \(shard) from \(source)") }
      let images = shard.take(all)
      let outDir = URL(fileURLWithPath: output)
      let overlayDir = overlay.map { URL(fileURLWithPath: $0) }
      try createFolder(outDir)
      if let overlayDir { try createFolder(overlayDir) }
      jobs = images.map { image in
        let file = image.lastPathComponent
        return (
          image, outDir.appendingPathComponent(file + ".json"),
          overlayDir?.appendingPathComponent(file + ".png")
        )
      }
    } else {
      if shardOptions.shard != nil { throw CLIError("--shard goes with a folder of images") }
      jobs = [(inputURL, URL(fileURLWithPath: output), overlay.map { URL(fileURLWithPath: $0) })]
    }

    let (_, modelName) = try modelOptions.resolveArchitecture()
    let run = EverythingRun(
      model: modelName, checkpoint: modelOptions.checkpoint, settings: settings)
    var pending: [(image: URL, json: URL, overlay: URL?)] = []
    for job in jobs {
      // A single image's export holds no record of the run: it is always redone.
      guard !overwrite, isFolder || format == .sam, let stored = completeOutput(job.json) else {
        pending.append(job)
        continue
      }
      if let difference = run.difference(from: stored) {
        throw CLIError(
          "\(job.json.path) was made with \(difference); pass --overwrite to redo it, or choose another -o"
        )
      }
      if let overlay = job.overlay, !FileManager.default.fileExists(atPath: overlay.path) {
        pending.append(job)
      }
    }
    let skipped = jobs.count - pending.count
    if skipped > 0 && !quietOption.quiet {
      printErr("skipping \(skipped) image(s) whose output is complete and up to date")
    }
    guard !pending.isEmpty else {
      if isFolder { try writeFolderExport(allImages, output: URL(fileURLWithPath: output)) }
      return
    }

    let (model, _) = try modelOptions.loadModel()
    let generator = try AutomaticMaskGenerator(model: model, settings: settings)
    // A command-line run is the only user of the model in this process.
    generator.parallelPrompts = true
    let progress = ProgressLine(enabled: !quietOption.quiet)
    var totalMasks = 0
    var failed: [String] = []
    for (n, job) in pending.enumerated() {
      let label =
        pending.count > 1
        ? "[\(n + 1)/\(pending.count)] \(job.image.lastPathComponent)" : job.image.lastPathComponent
      do {
        let picture = try RGBImage(contentsOf: job.image)
        let result = try generator.generate(picture) { p in
          progress.update(
            "\(label): crop \(p.crop + 1)/\(p.crops), batch \(p.batchesDone)/\(p.batches), \(p.masksSoFar) masks kept"
          )
        }
        try write(
          result, image: picture, job: job, settings: settings, run: run, isFolder: isFolder)
        totalMasks += result.masks.count
        let t = result.timing
        progress.finish(
          "\(label): \(result.masks.count) masks in \(formatDuration(t.total)) (encoder \(formatDuration(t.encoder)), decoder \(formatDuration(t.decoder)), post-processing \(formatDuration(t.postprocess + t.filtering))) → \(job.json.path)"
        )
      } catch {
        // One bad image must not stop a folder: report it, go on, fail at the end.
        guard pending.count > 1 else { throw error }
        progress.finish("error: \(label): \(error)", isError: true)
        failed.append(job.image.lastPathComponent)
      }
    }
    if jobs.count > 1 && !quietOption.quiet {
      printErr(
        "\(pending.count - failed.count) image(s) written (\(totalMasks) masks), \(skipped) already done, \(failed.count) failed"
      )
    }
    if isFolder { try writeFolderExport(allImages, output: URL(fileURLWithPath: output)) }
    if !failed.isEmpty {
      throw CLIError(
        "\(failed.count) image(s) failed (\(failed.joined(separator: ", "))); run again to retry them"
      )
    }
  }

  /// Writes the JSON (last, atomically: its presence means the image is done), the binary-mask
  /// PNGs it refers to, and the overlay.
  private func write(
    _ result: MaskGeneration, image: RGBImage, job: (image: URL, json: URL, overlay: URL?),
    settings: MaskGeneratorSettings, run: EverythingRun, isFolder: Bool
  ) throws {
    if let overlayURL = job.overlay {
      // Largest first, so small masks stay visible on top (as SAM's notebooks draw them).
      let order = result.masks.indices.sorted { result.masks[$0].area > result.masks[$1].area }
      let picture = EVImage.overlay(
        masks: order.map { result.masks[$0].segmentation.mask() }, on: image,
        colors: order.map { OverlayStyle.color($0) })
      try writeFile(picture.pngData(), to: overlayURL)
    }
    if !isFolder && exportOptions.format != .sam {
      let annotated = AnnotatedImage(
        fileName: job.image.lastPathComponent, width: image.width, height: image.height,
        annotations: result.masks.map {
          MaskAnnotation(
            mask: $0.segmentation.cocoRLE,
            score: $0.predictedIoU.isNaN ? nil : Double($0.predictedIoU),
            category: exportOptions.category)
        })
      try writeExport(annotated, image: job.image, to: job.json)
      return
    }
    var records: [[String: Any]] = []
    if settings.outputMode == .binaryMask {
      let stem = job.json.deletingPathExtension().lastPathComponent
      let folder = job.json.deletingLastPathComponent().appendingPathComponent(stem + "_masks")
      try createFolder(folder)
      for (i, m) in result.masks.enumerated() {
        let file = "\(i).png"
        try writeFile(
          GrayImage(mask: m.segmentation.mask(), width: image.width, height: image.height)
            .pngData(), to: folder.appendingPathComponent(file))
        records.append(m.jsonRecord(segmentation: stem + "_masks/" + file))
      }
    } else {
      records = result.masks.map { $0.jsonRecord(outputMode: settings.outputMode) }
    }
    let t = result.timing
    let document: [String: Any] = [
      "image": job.image.lastPathComponent, "model": run.model, "checkpoint": run.checkpoint,
      "size": [image.height, image.width], "settings": run.settings,
      "annotations": records,
      "timing_ms": [
        "encoder": milliseconds(t.encoder), "decoder": milliseconds(t.decoder),
        "postprocess": milliseconds(t.postprocess), "filtering": milliseconds(t.filtering),
        "total": milliseconds(t.total),
      ],
    ]
    let data = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
    try createFolder(job.json.deletingLastPathComponent())
    try writeFile(data, to: job.json)
  }
}

/// What an output depends on: the model, the checkpoint file (path, size and modification
/// time, so a replaced file counts as another checkpoint) and the generator's settings. An
/// existing output is reused only when all of them are what this run would write.
struct EverythingRun {
  let model: String
  let checkpoint: [String: Any]
  let settings: [String: Any]

  init(model: String, checkpoint: String?, settings: MaskGeneratorSettings) {
    self.model = model
    self.settings = settings.jsonRecord
    guard let checkpoint else {
      self.checkpoint = [:]
      return
    }
    let path = absolutePath(checkpoint)
    let attributes = try? FileManager.default.attributesOfItem(atPath: path)
    let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
    self.checkpoint = [
      "path": path, "bytes": (attributes?[.size] as? NSNumber)?.intValue ?? -1,
      "modified": (modified * 1000).rounded() / 1000,
    ]
  }

  /// nil when the `stored` output record was made by an identical run; otherwise what
  /// differs, as "another model (tiny-xl there, tiny-l now)" or "other settings (…)".
  func difference(from stored: [String: Any]) -> String? {
    if canonical(stored["model"]) != canonical(model) {
      return "another model (\(stored["model"] ?? "none") there, \(model) now)"
    }
    if canonical(stored["checkpoint"]) != canonical(checkpoint) {
      let there = (stored["checkpoint"] as? [String: Any])?["path"] ?? "an unrecorded checkpoint"
      return "another checkpoint (\(there) there, or the file has changed since)"
    }
    let old = stored["settings"] as? [String: Any] ?? [:]
    let keys = Set(old.keys).union(settings.keys).sorted().filter {
      canonical(old[$0]) != canonical(settings[$0])
    }
    guard !keys.isEmpty else { return nil }
    let listed = keys.prefix(3).map {
      "\($0) \(old[$0].map { "\($0)" } ?? "unset") there, \(settings[$0].map { "\($0)" } ?? "unset") now"
    }
    return "other settings (\(listed.joined(separator: "; ")))"
  }
}

/// A JSON value in one byte form, whether it came from a file or from this run, so that a
/// stored record and a fresh one compare equal exactly when they would be written alike.
private func canonical(_ value: Any?) -> Data? {
  guard let value else { return nil }
  let options: JSONSerialization.WritingOptions = [.sortedKeys, .fragmentsAllowed]
  guard let once = try? JSONSerialization.data(withJSONObject: value, options: options),
    let parsed = try? JSONSerialization.jsonObject(with: once, options: .fragmentsAllowed)
  else { return nil }
  return try? JSONSerialization.data(withJSONObject: parsed, options: options)
}

/// Images in a folder (not recursive), by name.
func imageFiles(in folder: URL) throws -> [URL] {
  let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
  return names.filter {
    ImageFormat.fileExtensions.contains(($0 as NSString).pathExtension.lowercased())
  }
  .sorted().map { folder.appendingPathComponent($0) }
}

/// The record of a complete output: it parses and holds the annotations list. Files are
/// written atomically, so a half-written one cannot exist, but a foreign or damaged file
/// (nil here) is redone.
func completeOutput(_ json: URL) -> [String: Any]? {
  guard let data = try? Data(contentsOf: json),
    let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
    object["annotations"] is [Any]
  else { return nil }
  return object
}

/// A progress line on stderr: rewritten in place on a terminal; in a log, a plain line at
/// most every few seconds so long runs show life without flooding it.
final class ProgressLine {
  private let enabled: Bool
  private let terminal = isatty(STDERR_FILENO) != 0
  private var last = ContinuousClock.now

  init(enabled: Bool) { self.enabled = enabled }

  func update(_ message: String) {
    guard enabled else { return }
    let now = ContinuousClock.now
    guard now - last > (terminal ? .milliseconds(100) : .seconds(5)) else { return }
    last = now
    FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K" + message : message + "\n").utf8))
  }

  /// Ends the line with `message`; with progress off only errors are printed.
  func finish(_ message: String, isError: Bool = false) {
    if enabled && terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    if enabled || isError { printErr(message) }
  }
}
