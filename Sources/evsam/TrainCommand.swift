import ArgumentParser
import EVCheckpoint
import EVEvaluation
import EVImage
import EVMask
import EVModel
import EVTensor
import EVTraining
import Foundation

struct TrainCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train",
    abstract: "Fine-tune the prompt encoder and mask decoder on COCO-format annotations.",
    discussion: """
      Trains as the official EfficientViT-SAM trainer does — its transforms (flip, antialiased \
      resize, soft masks), masks per image, box or point prompts, point-sampled 20×BCE + dice \
      loss with the minimum over outputs, value clipping, AdamW and the cosine schedule — with \
      the image encoder frozen (--freeze encoder, the only mode so far: the encoder's training \
      path is not finished). Writes OUT/model.pt (torch.save format, loadable by PyTorch and \
      the official code), OUT/model.safetensors and OUT/log.jsonl (step, loss, lr, images/s).
      """)

  @OptionGroup var modelOptions: ModelOptions

  @Option(help: ArgumentHelp("COCO instances JSON (polygons or RLE).", valueName: "file"))
  var annotations: String

  @Option(help: ArgumentHelp("Folder of the images the annotations name.", valueName: "dir"))
  var images: String

  @Option(help: "Optimiser steps (one image each).")
  var steps = 1000

  @Option(help: "Peak learning rate (cosine decay to 0).")
  var lr = 1e-4

  @Option(help: "Linear warm-up steps before the cosine decay.")
  var warmupSteps = 0

  @Option(help: "Masks per image (the official trainer uses 64).")
  var masksPerImage = 64

  @Option(help: "Prompts: mixed (boxes or points per image, as the official), box or points.")
  var prompts: TrainingPrompts.Kind = .mixed

  @Option(help: "Which part stays fixed; only the encoder can be frozen so far.")
  var freeze: String = "encoder"

  @Option(help: "Seed of every random draw (images' order, flips, masks, prompts, points).")
  var seed: UInt64 = 0

  @Option(name: .shortAndLong, help: ArgumentHelp("Output folder.", valueName: "dir"))
  var output: String

  @OptionGroup var quietOption: QuietOption

  func validate() throws {
    guard steps >= 1 else { throw CLIError("--steps must be at least 1") }
    guard lr > 0, lr.isFinite else { throw CLIError("--lr must be a positive number") }
    guard warmupSteps >= 0 else { throw CLIError("--warmup-steps must be 0 or more") }
    guard masksPerImage >= 1 else { throw CLIError("--masks-per-image must be at least 1") }
    guard freeze == "encoder" else {
      throw CLIError(
        "--freeze \(freeze): only --freeze encoder is available so far (the image encoder's training path is not finished)"
      )
    }
  }

  func run() throws {
    let dataset = try COCODataset.load(contentsOf: URL(fileURLWithPath: annotations))
    let byImage = Dictionary(grouping: dataset.annotations.filter { !$0.isCrowd }) { $0.imageID }
    let usable = dataset.images.filter { byImage[$0.id] != nil }.sorted { $0.id < $1.id }
    guard !usable.isEmpty else {
      throw CLIError("\(annotations): no image has a non-crowd annotation to train on")
    }
    let outputURL = URL(fileURLWithPath: output)
    try createFolder(outputURL)
    // The checkpoint is read once: its tensors build the frozen model and seed the trainer.
    let (config, name) = try modelOptions.resolveConfig()
    guard let checkpoint = modelOptions.checkpoint else {
      throw CLIError("--checkpoint is required: training starts from the weights you bring")
    }
    try checkCheckpointFile(checkpoint)
    let declared = EfficientViTSAM.declaredParameters(config: config).declared
    let original: [String: Tensor]
    let model: EfficientViTSAM
    do {
      original = try Checkpoint.load(
        contentsOf: URL(fileURLWithPath: checkpoint), expecting: declared)
      let reader = WeightReader(original, origin: checkpoint)
      model = EfficientViTSAM(config: config, reader: reader)
      try reader.finish()
    } catch {
      throw CLIError(summarize(error, modelName: name))
    }
    let side = config.imageSize

    var settings = DecoderFineTuner.Settings()
    settings.lr = lr
    settings.steps = steps
    settings.warmupSteps = warmupSteps
    settings.seed = seed
    let tuner = DecoderFineTuner(tensors: original, settings: settings)
    var rng = SplitMix64(seed: seed ^ 0xDA7A)
    var log = ""
    let clock = ContinuousClock()
    let start = clock.now
    let progress = ProgressLine(enabled: !quietOption.quiet)
    var order: [COCOImage] = []
    for step in 0..<steps {
      if order.isEmpty { order = usable.shuffled(using: &rng) }
      let image = order.removeLast()
      let sample = try trainingSample(
        image, annotations: byImage[image.id]!, side: side, rng: &rng)
      let embedding = model.imageEncoder(
        Tensor(shape: [1, 3, side, side], storage: sample.image))
      let prompts = TrainingPrompts.draw(
        masks: sample.masks, side: side, boxes: sample.boxes, kind: self.prompts, using: &rng)
      let result = tuner.step(
        embedding: embedding, prompts: prompts,
        targets: Tensor(shape: [sample.maskCount, side, side], storage: sample.masks))
      let elapsed = clock.now - start
      let seconds =
        Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
      let rate = Double(step + 1) / max(seconds, 1e-9)
      log += String(
        format: "{\"step\": %d, \"loss\": %.6f, \"lr\": %.8g, \"images_per_s\": %.4f}\n", step + 1,
        result.loss, result.lr, rate)
      let eta = Double(steps - step - 1) / max(rate, 1e-9)
      progress.update(
        String(
          format: "step %d/%d  loss %.4f  lr %.3g  %.2f images/s  ETA %.0f s", step + 1, steps,
          result.loss, result.lr, rate, eta))
    }
    var trained = original
    trained.merge(tuner.parameters.tensors) { _, new in new }
    let entries = declared.map {
      TorchWriter.Entry(key: $0.key, tensor: trained[$0.key]!, dtype: $0.dtype)
    }
    do {
      try TorchWriter.write(entries, to: outputURL.appendingPathComponent("model.pt"))
      try SafeTensors.write(
        trained.filter { key, _ in declared.contains { $0.key == key } },
        metadata: ["model": name, "trained_steps": "\(steps)"],
        to: outputURL.appendingPathComponent("model.safetensors"))
    } catch {
      throw CLIError("cannot write the model: " + fileProblem(error, path: output))
    }
    try writeFile(Data(log.utf8), to: outputURL.appendingPathComponent("log.jsonl"))
    progress.finish("trained \(name) for \(steps) steps → \(output)/model.pt")
  }

  /// One image as the official data provider makes it: masks chosen, flipped with p ½,
  /// resized with its long side to `side`, normalised and padded.
  private func trainingSample(
    _ image: COCOImage, annotations: [COCOAnnotation], side: Int, rng: inout SplitMix64
  ) throws -> TrainingSample {
    guard let file = image.fileName else {
      throw CLIError("image \(image.id) has no file_name")
    }
    let picture = try RGBImage(
      contentsOf: URL(fileURLWithPath: images).appendingPathComponent(file),
      applyEXIFOrientation: false)
    let (h, w) = (picture.height, picture.width)
    guard h == image.height, w == image.width else {
      throw CLIError(
        "\(file) is \(w)×\(h) but the annotations say \(image.width)×\(image.height)")
    }
    var planes = [Float](repeating: 0, count: 3 * h * w)
    for p in 0..<(h * w) {
      for c in 0..<3 { planes[c * h * w + p] = Float(picture.pixels[p * 3 + c]) }
    }
    let picked = selectMasks(count: annotations.count, wanted: masksPerImage, using: &rng)
    var masks: [Float] = []
    var boxes: [[Float]] = []
    for i in picked {
      let a = annotations[i]
      guard let segmentation = a.segmentation else {
        throw CLIError("annotation \(a.id) has no segmentation")
      }
      let rle = try segmentation.rle(height: h, width: w)
      masks += rle.decodeRowMajor().map { Float($0) }
      let box = a.bbox ?? rle.boundingBox
      boxes.append([Float(box.x), Float(box.y), Float(box.width), Float(box.height)])
    }
    var sample = TrainingSample(
      image: planes, masks: masks, points: boxes.map { [$0[0], $0[1]] }, boxes: boxes,
      height: h, width: w)
    if Double.random(in: 0..<1, using: &rng) >= 0.5 {
      sample = SampleTransforms.flipHorizontally(sample)
    }
    sample = SampleTransforms.resizeLongestSide(sample, target: side)
    return SampleTransforms.normalizeAndPad(sample, target: side)
  }
}

extension TrainingPrompts.Kind: ExpressibleByArgument {}
