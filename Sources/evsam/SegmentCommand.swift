import ArgumentParser
import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import EVTensor
import Foundation

struct SegmentCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "segment",
    abstract: "Segment an image from point, box and mask prompts.",
    discussion: """
      Coordinates are in original-image pixels. Several --point values form one prompt; several
      --box values form a batch (one prompt per box, each with all the points). Writes one PNG per
      mask (mask_<prompt>_<candidate>.png), overlay.png (the best mask of each prompt over the
      image) and result.json into the output folder.
      """)

  @OptionGroup var modelOptions: ModelOptions

  @Argument(help: "PNG or JPEG image.")
  var image: String

  @Option(
    name: .customLong("point"),
    help: "A click X,Y with optional label 1 (foreground, default) or 0 (background); repeatable.")
  var points: [PointArgument] = []

  @Option(
    name: .customLong("box"), help: "A box X0,Y0,X1,Y1; repeatable, several boxes form a batch.")
  var boxes: [BoxArgument] = []

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Low-res logits from an earlier run (--save-logits file, or a safetensors with one 256×256 tensor named mask_input); the best-scoring mask of the first prompt is used.",
      valueName: "file"))
  var maskInput: String?

  @Flag(help: "Return three candidate masks per prompt instead of one.")
  var multimask = false

  @Option(name: .shortAndLong, help: ArgumentHelp("Output folder.", valueName: "dir"))
  var output: String

  @Option(
    help: ArgumentHelp(
      "Also write low_res_logits, iou_predictions and mask_logits.", valueName: "file.safetensors"))
  var saveLogits: String?

  func validate() throws {
    if points.isEmpty && boxes.isEmpty && maskInput == nil {
      throw ValidationError("give at least one prompt: --point, --box or --mask-input")
    }
  }

  func run() throws {
    let imageURL = URL(fileURLWithPath: image)
    let picture = try RGBImage(contentsOf: imageURL)
    let maskTensor = try maskInput.map(loadMaskInput)
    let (model, name) = try modelOptions.loadModel()
    let predictor = SamPredictor(model: model)

    let clock = ContinuousClock()
    var start = clock.now
    try predictor.setImage(picture)
    let encodeTime = clock.now - start

    start = clock.now
    let batchSize = max(boxes.count, 1)
    let pointSet = points.map { (x: $0.x, y: $0.y) }
    let labelSet = points.map(\.label)
    let result = try predictor.predictBatch(
      boxes: boxes.isEmpty ? nil : boxes.map(\.values),
      pointSets: points.isEmpty ? nil : Array(repeating: pointSet, count: batchSize),
      labelSets: points.isEmpty ? nil : Array(repeating: labelSet, count: batchSize),
      maskInputs: maskTensor.map { mask in
        Tensor(
          shape: [batchSize, 1, 256, 256],
          storage: Array([[Float]](repeating: mask.storage, count: batchSize).joined()))
      },
      multimask: multimask)
    let decodeTime = clock.now - start

    guard let masks = result.masks, let maskLogits = result.maskLogits else {
      throw CLIError("the predictor returned no full-size masks")
    }
    let candidates = result.masksPerPrompt
    let width = picture.width
    let height = picture.height

    // Everything is encoded in memory first, so a failure leaves no partial output behind.
    var files: [(name: String, data: Data)] = []
    var entries: [[String: Any]] = []
    var best: [[Bool]] = []
    for b in 0..<result.batchSize {
      let scores = (0..<candidates).map { result.iouPredictions.storage[b * candidates + $0] }
      let bestIndex = scores.indices.max { scores[$0] < scores[$1] }!
      for c in 0..<candidates {
        let index = b * candidates + c
        let mask = masks.mask(index)
        let fileName = "mask_\(b)_\(c).png"
        files.append((fileName, try GrayImage(mask: mask, width: width, height: height).pngData()))
        entries.append([
          "file": fileName, "prompt": b, "candidate": c, "score": Double(scores[c]),
          "area": masks.area(index), "best": c == bestIndex,
        ])
        if c == bestIndex { best.append(mask) }
      }
    }
    let picture2 = overlay(
      masks: best, on: picture,
      points: points.map { PointMarker(x: $0.x, y: $0.y, positive: $0.label == 1) },
      boxes: boxes.map {
        BoxMarker(x0: $0.values[0], y0: $0.values[1], x1: $0.values[2], y1: $0.values[3])
      })
    files.append(("overlay.png", try picture2.pngData()))

    let summary: [String: Any] = [
      "image": image, "model": name, "original_size": [height, width],
      "multimask": multimask,
      "prompts": [
        "points": points.map { [$0.x, $0.y, Double($0.label)] },
        "boxes": boxes.map(\.values),
        "mask_input": maskInput as Any? ?? NSNull(),
      ] as [String: Any],
      "masks": entries,
      "timing_ms": ["encode": milliseconds(encodeTime), "decode": milliseconds(decodeTime)],
    ]
    files.append(
      (
        "result.json",
        try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
      ))

    let logits: [String: Tensor]? = saveLogits.map { _ in
      [
        "low_res_logits": result.lowResLogits, "iou_predictions": result.iouPredictions,
        "mask_logits": maskLogits,
      ]
    }

    let directory = URL(fileURLWithPath: output)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    for file in files {
      try file.data.write(to: directory.appendingPathComponent(file.name), options: .atomic)
    }
    if let saveLogits, let logits {
      try SafeTensors.write(logits, metadata: ["model": name], to: URL(fileURLWithPath: saveLogits))
    }
    printErr(
      "\(result.batchSize) prompt(s) × \(candidates) mask(s) with \(name): encode \(formatDuration(encodeTime)), decode \(formatDuration(decodeTime)) → \(output)"
    )
  }

  /// A 1×256×256 mask input from a safetensors file.
  private func loadMaskInput(_ path: String) throws -> Tensor {
    let tensors = try SafeTensors.read(contentsOf: URL(fileURLWithPath: path))
    let side = 256
    if let t = tensors["mask_input"] {
      guard t.count == side * side else {
        throw CLIError(
          "\(path): mask_input has shape \(formatShape(t.shape)); it must hold one 256×256 mask")
      }
      return t.reshaped([1, side, side])
    }
    guard let low = tensors["low_res_logits"] else {
      throw CLIError("\(path): no tensor named mask_input or low_res_logits")
    }
    guard low.count % (side * side) == 0, low.dim(-1) == side, low.dim(-2) == side else {
      throw CLIError(
        "\(path): low_res_logits has shape \(formatShape(low.shape)); masks must be 256×256")
    }
    let candidates = low.rank >= 4 ? low.dim(1) : low.count / (side * side)
    var pick = 0
    if let iou = tensors["iou_predictions"], iou.count >= candidates {
      pick = (0..<candidates).max { iou.storage[$0] < iou.storage[$1] }!
    }
    return Tensor(
      shape: [1, side, side],
      storage: Array(low.storage[(pick * side * side)..<((pick + 1) * side * side)]))
  }
}

private func milliseconds(_ d: Duration) -> Double {
  (Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18) * 1000
}
