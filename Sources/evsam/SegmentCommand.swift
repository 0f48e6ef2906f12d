import ArgumentParser
import EVCheckpoint
import EVExport
import EVImage
import EVMask
import EVModel
import EVPredictor
import EVTensor
import EVTraining
import Foundation

struct SegmentCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "segment",
    abstract: "Segment an image from point, box and mask prompts.",
    discussion: """
      Coordinates are in original-image pixels and must lie on the image (0…width, 0…height). \
      Several --point values form one prompt; several --box values form a batch (one prompt per \
      box, each with all the points). Writes one PNG per mask (mask_<prompt>_<candidate>.png), \
      overlay.png (the best mask of each prompt over the image) and result.json (per mask its \
      score, area, COCO compressed RLE and box) into the output folder. The folder appears whole or not at all: it is written beside the destination and \
      moved into place, replacing an earlier run's folder entirely.

      --format writes the best mask of each prompt for other tools instead of result.json and \
      the PNGs: instances.json (coco: COCO with RLE; polygons: COCO with polygons), \
      <image stem>.txt and classes.txt (yolo-seg), <image stem>.json (labelme), or only the \
      PNGs (png); overlay.png stays. With --prompts and coco, polygons, yolo-seg or labelme, \
      OUTPUT holds one such set for all lines: one instances.json, or one file per image \
      (a line may name its class with "category").
      """)

  @OptionGroup var modelOptions: ModelOptions
  @OptionGroup(title: "Output format") var exportOptions: ExportOptions

  @Argument(help: "PNG, JPEG, TIFF or WebP image (or give --prompts).")
  var image: String?

  @Option(
    help: ArgumentHelp(
      "A JSON Lines file of prompts, one per line, each with its image: {\"image\": \"a.jpg\", \"points\": [[x, y], …], \"labels\": [1, …], \"boxes\": [[x0, y0, x1, y1], …], \"multimask\": true, \"name\": \"…\", \"category\": \"…\"}; image paths relative to the file. Each line's results go to OUTPUT/<name> (default <line>_<image name>); with --format coco, polygons, yolo-seg or labelme, all lines' masks go into one set in OUTPUT.",
      valueName: "file.jsonl"))
  var prompts: String?

  // Unconditional: "--point -1,-1" is a value that starts with a dash, not an option.
  @Option(
    name: .customLong("point"), parsing: .unconditionalSingleValue,
    help: "A click X,Y with optional label 1 (foreground, default) or 0 (background); repeatable.")
  var points: [PointArgument] = []

  @Option(
    name: .customLong("box"), parsing: .unconditionalSingleValue,
    help: "A box X0,Y0,X1,Y1; repeatable, several boxes form a batch.")
  var boxes: [BoxArgument] = []

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Low-res logits from an earlier run (--save-logits file, or a safetensors with one 256×256 tensor named mask_input); the best-scoring mask of the first prompt is used.",
      valueName: "file"))
  var maskInput: String?

  @Option(
    help: ArgumentHelp(
      "The image's embedding from `evsam embed IMAGE -o FILE`, instead of encoding it again (checked: the same encoder and image size).",
      valueName: "file"))
  var embedding: String?

  @Flag(help: "Return three candidate masks per prompt instead of one.")
  var multimask = false

  @Option(name: .shortAndLong, help: ArgumentHelp("Output folder.", valueName: "dir"))
  var output: String

  @Option(
    help: ArgumentHelp(
      "Also write low_res_logits, iou_predictions and mask_logits.", valueName: "file.safetensors"))
  var saveLogits: String?

  func validate() throws {
    if prompts != nil {
      guard image == nil, points.isEmpty, boxes.isEmpty, maskInput == nil, embedding == nil,
        saveLogits == nil
      else {
        throw ValidationError(
          "--prompts takes the images and prompts from its file: give no IMAGE, --point, --box, "
            + "--mask-input, --embedding or --save-logits with it")
      }
      return
    }
    guard image != nil else { throw ValidationError("give the IMAGE, or a --prompts file") }
    if points.isEmpty && boxes.isEmpty && maskInput == nil {
      throw ValidationError("give at least one prompt: --point, --box or --mask-input")
    }
  }

  @OptionGroup var quietOption: QuietOption

  /// What an earlier run of this command on an image named `stem` leaves in its folder: the
  /// sam format's files and every format's (the yolo-seg and labelme files are named after
  /// the image, so a user's own `notes.txt` is never taken for ours).
  static func isOwnOutput(_ name: String, imageStem stem: String) -> Bool {
    if [
      "result.json", "overlay.png", "instances.json", "classes.txt", stem + ".txt", stem + ".json",
    ]
    .contains(name) {
      return true
    }
    let parts = name.split(separator: "_")
    return parts.count == 3 && parts[0] == "mask" && Int(parts[1]) != nil
      && parts[2].hasSuffix(".png") && Int(parts[2].dropLast(4)) != nil
  }

  func run() throws {
    if let prompts {
      try runPromptsFile(prompts)
      return
    }
    let image = image!
    let imageURL = URL(fileURLWithPath: image)
    let picture = try RGBImage(contentsOf: imageURL)
    try SamPredictor.checkInsideImage(
      points: points.map(\.point), boxes: boxes.map(\.box),
      width: picture.width, height: picture.height)
    let maskTensor = try maskInput.map(loadMaskInput)
    let folder = StagedFolder(
      destination: URL(fileURLWithPath: output),
      ownsName: { Self.isOwnOutput($0, imageStem: ExportFiles.stem(imageURL)) })
    try folder.preflight()
    if let saveLogits { try checkWritableFile(saveLogits) }
    let (model, name, tensors) = try modelOptions.loadModelAndTensors()
    let predictor = SamPredictor(model: model)

    let clock = ContinuousClock()
    let start = clock.now
    if let embedding {
      let file = try EmbeddingFile.read(
        embedding, expecting: EncoderIdentity(model: model, name: name, tensors: tensors))
      guard file.originalSize == (picture.height, picture.width) else {
        throw CLIError(
          "\(embedding) is the embedding of a \(file.originalSize.width)×"
            + "\(file.originalSize.height) image, not of \(image) "
            + "(\(picture.width)×\(picture.height))")
      }
      try predictor.setEmbedding(file.embedding, originalSize: file.originalSize)
    } else {
      try predictor.setImage(picture)
    }
    let encodeTime = clock.now - start
    let prompt = Prompt(
      points: points.map(\.point), labels: points.map(\.label), boxes: boxes.map(\.box),
      multimask: multimask)
    let summary = try write(
      prompt, on: picture, imageName: image, predictor: predictor, modelName: name,
      maskTensor: maskTensor, maskInputName: maskInput, encodeTime: encodeTime, folder: folder,
      output: output, saveLogits: saveLogits, format: exportOptions.format,
      category: exportOptions.category)
    if !quietOption.quiet { printErr(summary) }
  }

  /// One image's prompts: clicks with labels, and boxes (several form a batch).
  struct Prompt {
    var points: [Point]
    var labels: [Int]
    var boxes: [Box]
    var multimask: Bool
  }

  /// A prompt's masks, decoded.
  struct Decoded {
    var result: BatchPrediction
    var decodeTime: Duration
    /// Per prompt of the batch, the candidate with the best predicted IoU.
    var best: [Int]
  }

  /// Decodes `prompt` on the image `predictor` holds.
  func decode(_ prompt: Prompt, predictor: SamPredictor, maskTensor: Tensor?) throws -> Decoded {
    let clock = ContinuousClock()
    let start = clock.now
    let batchSize = max(prompt.boxes.count, 1)
    let result = try predictor.predictBatch(
      boxes: prompt.boxes.isEmpty ? nil : prompt.boxes,
      pointSets: prompt.points.isEmpty ? nil : Array(repeating: prompt.points, count: batchSize),
      labelSets: prompt.points.isEmpty ? nil : Array(repeating: prompt.labels, count: batchSize),
      maskInputs: maskTensor.map { mask in
        Tensor(
          shape: [batchSize, 1, 256, 256],
          storage: Array([[Float]](repeating: mask.storage, count: batchSize).joined()))
      },
      multimask: prompt.multimask)
    let decodeTime = clock.now - start
    guard result.masks != nil, result.maskLogits != nil else {
      throw CLIError("the predictor returned no full-size masks")
    }
    let candidates = result.masksPerPrompt
    let best = (0..<result.batchSize).map { b in
      let scores = result.iouPredictions.storage[(b * candidates)..<((b + 1) * candidates)]
      return scores.indices.max { scores[$0] < scores[$1] }! - b * candidates
    }
    return Decoded(result: result, decodeTime: decodeTime, best: best)
  }

  /// The best mask of each prompt, as the export formats take them.
  func annotated(_ decoded: Decoded, image: URL, width: Int, height: Int, category: String)
    -> AnnotatedImage
  {
    let result = decoded.result
    let candidates = result.masksPerPrompt
    let annotations = decoded.best.enumerated().map { b, c in
      MaskAnnotation(
        mask: RLE(rowMajor: result.masks!.mask(b * candidates + c), height: height, width: width),
        score: Double(result.iouPredictions.storage[b * candidates + c]), category: category)
    }
    return AnnotatedImage(
      fileName: image.lastPathComponent, width: width, height: height, annotations: annotations)
  }

  /// Decodes `prompt` on the image `predictor` holds and writes the folder in `format`;
  /// returns the line that says what was done.
  func write(
    _ prompt: Prompt, on picture: RGBImage, imageName: String, predictor: SamPredictor,
    modelName name: String, maskTensor: Tensor?, maskInputName: String?, encodeTime: Duration,
    folder: StagedFolder, output: String, saveLogits: String?, format: ExportFormat,
    category: String
  ) throws -> String {
    let decoded = try decode(prompt, predictor: predictor, maskTensor: maskTensor)
    let result = decoded.result
    let (masks, maskLogits) = (result.masks!, result.maskLogits!)
    let (points, labels, boxes) = (prompt.points, prompt.labels, prompt.boxes)
    let candidates = result.masksPerPrompt
    let width = picture.width
    let height = picture.height

    // Everything is encoded in memory first, so a failure leaves no partial output behind.
    var files: [(name: String, data: Data)] = []
    var entries: [[String: Any]] = []
    for b in 0..<result.batchSize {
      for c in 0..<candidates where format == .sam || format == .png {
        let index = b * candidates + c
        let mask = masks.mask(index)
        let fileName = "mask_\(b)_\(c).png"
        files.append((fileName, try GrayImage(mask: mask, width: width, height: height).pngData()))
        let rle = RLE(rowMajor: mask, height: height, width: width)
        entries.append([
          "file": fileName, "prompt": b, "candidate": c,
          "score": Double(result.iouPredictions.storage[index]), "area": masks.area(index),
          "best": c == decoded.best[b],
          "segmentation": ["size": [height, width], "counts": rle.compressedCounts],
          "bbox": rle.boundingBox.array,
        ])
      }
    }
    let best = decoded.best.enumerated().map { b, c in masks.mask(b * candidates + c) }
    let picture2 = overlay(
      masks: best, on: picture,
      points: zip(points, labels).map { PointMarker($0, positive: $1 == 1) }, boxes: boxes)
    files.append(("overlay.png", try picture2.pngData()))

    let imageURL = URL(fileURLWithPath: imageName)
    let export = annotated(
      decoded, image: imageURL, width: width, height: height, category: category)
    switch format {
    case .sam:
      let summary: [String: Any] = [
        "image": imageName, "model": name, "original_size": [height, width],
        "multimask": prompt.multimask,
        "prompts": [
          "points": zip(points, labels).map { [$0.x, $0.y, Double($1)] },
          "boxes": boxes.map(\.values),
          "mask_input": maskInputName as Any? ?? NSNull(),
        ] as [String: Any],
        "masks": entries,
        "timing_ms": [
          "encode": milliseconds(encodeTime), "decode": milliseconds(decoded.decodeTime),
        ],
      ]
      files.append(
        (
          "result.json",
          try JSONSerialization.data(
            withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        ))
    case .png:
      break
    case .coco, .polygons:
      files.append(
        ("instances.json", try ExportFiles.coco([export], polygons: format == .polygons)))
    case .yoloSeg:
      files.append(
        (
          ExportFiles.stem(imageURL) + ".txt",
          Data(YOLOSegmentation.labels(export, classes: [category]).utf8)
        ))
      files.append(("classes.txt", ExportFiles.classes([category])))
    case .labelme:
      let path = ExportFiles.relativePath(of: imageURL, from: folder.destination)
      files.append(
        (ExportFiles.stem(imageURL) + ".json", try LabelMe.data(export, imagePath: path)))
    }

    let logits: [String: Tensor]? = saveLogits.map { _ in
      [
        "low_res_logits": result.lowResLogits, "iou_predictions": result.iouPredictions,
        "mask_logits": maskLogits,
      ]
    }

    let pid = ProcessInfo.processInfo.processIdentifier
    let logitsTemporary = saveLogits.map { URL(fileURLWithPath: $0 + ".partial-\(pid)") }
    defer { if let logitsTemporary { try? FileManager.default.removeItem(at: logitsTemporary) } }
    try folder.commit(files) {
      if let logitsTemporary, let logits {
        do {
          try SafeTensors.write(logits, metadata: ["model": name], to: logitsTemporary)
        } catch {
          throw CLIError("cannot write " + fileProblem(error, path: saveLogits!))
        }
      }
    }
    if let saveLogits, let logitsTemporary {
      // rename(2) replaces an existing file in one step.
      guard rename(logitsTemporary.path, saveLogits) == 0 else {
        throw CLIError(
          "cannot write \(saveLogits): \(String(cString: strerror(errno))) (the masks are in \(output))"
        )
      }
    }
    return
      "\(result.batchSize) prompt(s) × \(candidates) mask(s) with \(name): encode \(formatDuration(encodeTime)), decode \(formatDuration(decoded.decodeTime)) → \(output)"
  }

  /// A 1×256×256 mask input from a safetensors file: `mask_input` (256×256, 1×256×256 or
  /// 1×1×256×256), or the best-scoring candidate of `low_res_logits` (C×256×256 or
  /// B×C×256×256, the first prompt) as `--save-logits` writes them.
  private func loadMaskInput(_ path: String) throws -> Tensor {
    let tensors: [String: Tensor]
    do {
      tensors = try SafeTensors.read(contentsOf: URL(fileURLWithPath: path))
    } catch {
      if let kind = imageKind(atPath: path) {
        throw CLIError(
          "\(path) is a \(kind) image; --mask-input takes low-res logits in a safetensors file (written by --save-logits)"
        )
      }
      throw CLIError("--mask-input \(error)")
    }
    let side = 256
    let plane = [side, side]
    if let t = tensors["mask_input"] {
      guard Array(t.shape.suffix(2)) == plane, t.shape.dropLast(2).allSatisfy({ $0 == 1 }),
        t.rank <= 4, t.storage.allSatisfy(\.isFinite)
      else {
        throw CLIError(
          "\(path): mask_input has shape \(formatShape(t.shape)); it must be one finite 256×256 mask (256×256, 1×256×256 or 1×1×256×256)"
        )
      }
      return t.reshaped([1, side, side])
    }
    guard let low = tensors["low_res_logits"] else {
      throw CLIError("\(path): no tensor named mask_input or low_res_logits")
    }
    guard (3...4).contains(low.rank), Array(low.shape.suffix(2)) == plane, low.count > 0 else {
      throw CLIError(
        "\(path): low_res_logits has shape \(formatShape(low.shape)); expected C×256×256 or B×C×256×256"
      )
    }
    let candidates = low.dim(-3)
    var pick = 0
    if let iou = tensors["iou_predictions"], iou.count >= candidates {
      pick = (0..<candidates).max { iou.storage[$0] < iou.storage[$1] }!
    }
    let values = Array(low.storage[(pick * side * side)..<((pick + 1) * side * side)])
    guard values.allSatisfy(\.isFinite) else {
      throw CLIError("\(path): low_res_logits candidate \(pick) has NaN or infinite values")
    }
    return Tensor(shape: [1, side, side], storage: values)
  }
}

/// "PNG" or "JPEG" when the file starts like one, so a mistaken image argument gets a message
/// that says so instead of a parser's complaint about its header.
func imageKind(atPath path: String) -> String? {
  guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
  defer { try? handle.close() }
  let head = [UInt8]((try? handle.read(upToCount: 8)) ?? Data())
  if head.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return "PNG" }
  if head.starts(with: [0xFF, 0xD8, 0xFF]) { return "JPEG" }
  return nil
}

/// Fails early when a file cannot be created at `path` (its folder is missing or read-only, or
/// a folder is in the way).
func checkWritableFile(_ path: String) throws {
  var isDirectory: ObjCBool = false
  if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue
  {
    throw CLIError("\(path) is a folder; a file name is needed")
  }
  let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
  guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory),
    isDirectory.boolValue
  else { throw CLIError("cannot write \(path): the folder \(folder) does not exist") }
  guard FileManager.default.isWritableFile(atPath: folder) else {
    throw CLIError("cannot write \(path): permission denied in \(folder)")
  }
}

/// `d` in milliseconds, as the commands' JSON reports times.
func milliseconds(_ d: Duration) -> Double { d.seconds * 1000 }
