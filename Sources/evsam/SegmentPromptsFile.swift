import EVExport
import EVImage
import EVPredictor
import Foundation

/// `evsam segment --prompts FILE.jsonl -o OUT`: many images and prompts in one run, the model
/// loaded once and each image encoded once for its consecutive lines.
extension SegmentCommand {
  /// One line of the prompts file.
  struct PromptLine {
    var line: Int
    var image: URL
    /// The line's output folder, inside the run's.
    var name: String
    var prompt: Prompt
    /// The class its masks get in the export formats.
    var category: String?
  }

  /// Reads every line first, so that a mistake anywhere is reported before any work, with its
  /// line number.
  static func readPrompts(_ path: String, multimask: Bool) throws -> [PromptLine] {
    let url = URL(fileURLWithPath: path)
    let text: String
    do {
      text = try String(contentsOf: url, encoding: .utf8)
    } catch {
      throw CLIError("cannot read " + fileProblem(error, path: path))
    }
    let folder = url.deletingLastPathComponent()
    var lines: [PromptLine] = []
    for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let number = index + 1
      let trimmed = raw.trimmingCharacters(in: .whitespaces)
      if trimmed.isEmpty { continue }
      func problem(_ message: String) -> CLIError { CLIError("\(path) line \(number): \(message)") }
      guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)),
        let record = object as? [String: Any]
      else { throw problem("not a JSON object") }
      guard let image = record["image"] as? String, !image.isEmpty else {
        throw problem("no \"image\"")
      }
      let points = try (record["points"] as? [Any] ?? []).enumerated().map { i, p in
        guard let xy = p as? [Double], xy.count == 2 else {
          throw problem("point \(i) is not [x, y]")
        }
        return Point(x: xy[0], y: xy[1])
      }
      let labels = record["labels"].map { $0 as? [Int] } ?? Array(repeating: 1, count: points.count)
      guard let labels, labels.count == points.count else {
        throw problem("\"labels\" must give one label (1 or 0) per point")
      }
      let boxes = try (record["boxes"] as? [Any] ?? []).enumerated().map { i, b in
        guard let values = b as? [Double] else { throw problem("box \(i) is not [x0, y0, x1, y1]") }
        do throws(PredictorError) {
          return try Box(values: values, index: i)
        } catch {
          throw problem(error.description)
        }
      }
      guard !points.isEmpty || !boxes.isEmpty else { throw problem("no points and no boxes") }
      let imageURL =
        image.hasPrefix("/") ? URL(fileURLWithPath: image) : folder.appendingPathComponent(image)
      let name =
        (record["name"] as? String)
        ?? "\(number)_\(imageURL.deletingPathExtension().lastPathComponent)"
      guard !name.isEmpty, !name.contains("/"), name != ".", name != ".." else {
        throw problem("\"name\" must be a plain folder name")
      }
      lines.append(
        PromptLine(
          line: number, image: imageURL, name: name,
          prompt: Prompt(
            points: points, labels: labels, boxes: boxes,
            multimask: record["multimask"] as? Bool ?? multimask),
          category: try record["category"].map { value in
            guard let name = value as? String, !name.isEmpty, !name.contains("\n") else {
              throw problem("\"category\" must be a non-empty name")
            }
            return name
          }))
    }
    guard !lines.isEmpty else { throw CLIError("\(path) holds no prompts") }
    var seen: [String: Int] = [:]
    for l in lines {
      if let first = seen[l.name] {
        throw CLIError(
          "\(path) lines \(first) and \(l.line) both write to \(l.name): give them other names")
      }
      seen[l.name] = l.line
    }
    return lines
  }

  func runPromptsFile(_ path: String) throws {
    let lines = try Self.readPrompts(path, multimask: multimask)
    let format = exportOptions.format
    // These formats make one set for the whole file instead of a folder per line.
    let asSet = [.coco, .polygons, .yoloSeg, .labelme].contains(format)
    if asSet && (format == .yoloSeg || format == .labelme) {
      var stems: [String: URL] = [:]
      for l in lines {
        let stem = ExportFiles.stem(l.image)
        if let other = stems[stem], other != l.image {
          throw CLIError(
            "\(other.path) and \(l.image.path) would both write \(stem) in \(format.rawValue); give the images distinct names"
          )
        }
        stems[stem] = l.image
      }
    }
    let root = URL(fileURLWithPath: output)
    try createFolder(root)
    var collected: [(url: URL, image: AnnotatedImage)] = []
    let (model, name) = try modelOptions.loadModel()
    let predictor = SamPredictor(model: model)
    var current: (url: URL, picture: RGBImage)?
    let clock = ContinuousClock()
    for (i, entry) in lines.enumerated() {
      let where_ = "\(path) line \(entry.line)"
      var encodeTime = Duration.zero
      if current?.url != entry.image {
        let start = clock.now
        let picture: RGBImage
        do {
          picture = try RGBImage(contentsOf: entry.image)
        } catch {
          throw CLIError("\(where_): \(error)")
        }
        try predictor.setImage(picture)
        encodeTime = clock.now - start
        current = (entry.image, picture)
      }
      let picture = current!.picture
      do {
        try SamPredictor.checkInsideImage(
          points: entry.prompt.points, boxes: entry.prompt.boxes, width: picture.width,
          height: picture.height)
      } catch {
        throw CLIError("\(where_): \(error)")
      }
      let category = entry.category ?? exportOptions.category
      if asSet {
        let decoded = try decode(entry.prompt, predictor: predictor, maskTensor: nil)
        let image = annotated(
          decoded, image: entry.image, width: picture.width, height: picture.height,
          category: category)
        if let k = collected.firstIndex(where: { $0.url == entry.image }) {
          collected[k].image.annotations += image.annotations
        } else {
          collected.append((entry.image, image))
        }
        if !quietOption.quiet {
          printErr(
            "[\(i + 1)/\(lines.count)] line \(entry.line): \(image.annotations.count) mask(s), decode \(formatDuration(decoded.decodeTime))"
          )
        }
        continue
      }
      let destination = root.appendingPathComponent(entry.name)
      let stem = ExportFiles.stem(entry.image)
      let folder = StagedFolder(
        destination: destination, ownsName: { Self.isOwnOutput($0, imageStem: stem) })
      try folder.preflight()
      let summary = try write(
        entry.prompt, on: picture, imageName: entry.image.path, predictor: predictor,
        modelName: name, maskTensor: nil, maskInputName: nil, encodeTime: encodeTime,
        folder: folder, output: destination.path, saveLogits: nil, format: format,
        category: category)
      if !quietOption.quiet { printErr("[\(i + 1)/\(lines.count)] line \(entry.line): \(summary)") }
    }
    guard asSet else { return }
    // COCO names images by their paths relative to the prompts file, as the lines do.
    let base = URL(fileURLWithPath: path).deletingLastPathComponent()
    switch format {
    case .coco, .polygons:
      let images = collected.map { entry in
        var image = entry.image
        image.fileName = ExportFiles.relativePath(of: entry.url, from: base)
        return image
      }
      try writeFile(
        ExportFiles.coco(images, polygons: format == .polygons),
        to: root.appendingPathComponent("instances.json"))
    case .yoloSeg:
      let classes = categoryNames(of: collected.map(\.image))
      for (url, image) in collected {
        try writeFile(
          Data(YOLOSegmentation.labels(image, classes: classes).utf8),
          to: root.appendingPathComponent(ExportFiles.stem(url) + ".txt"))
      }
      try writeFile(ExportFiles.classes(classes), to: root.appendingPathComponent("classes.txt"))
    case .labelme:
      for (url, image) in collected {
        try writeFile(
          LabelMe.data(image, imagePath: ExportFiles.relativePath(of: url, from: root)),
          to: root.appendingPathComponent(ExportFiles.stem(url) + ".json"))
      }
    case .sam, .png:
      break
    }
    if !quietOption.quiet {
      let masks = collected.reduce(0) { $0 + $1.image.annotations.count }
      printErr("\(format.rawValue): \(collected.count) image(s), \(masks) masks → \(output)")
    }
  }
}
