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
            multimask: record["multimask"] as? Bool ?? multimask)))
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
    let root = URL(fileURLWithPath: output)
    try createFolder(root)
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
      let destination = root.appendingPathComponent(entry.name)
      let folder = StagedFolder(destination: destination, ownsName: SegmentCommand.isOwnOutput)
      try folder.preflight()
      let summary = try write(
        entry.prompt, on: picture, imageName: entry.image.path, predictor: predictor,
        modelName: name, maskTensor: nil, maskInputName: nil, encodeTime: encodeTime,
        folder: folder, output: destination.path, saveLogits: nil)
      if !quietOption.quiet { printErr("[\(i + 1)/\(lines.count)] line \(entry.line): \(summary)") }
    }
  }
}
