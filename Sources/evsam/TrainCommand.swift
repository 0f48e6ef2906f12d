import ArgumentParser
import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation

struct TrainCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train",
    abstract: "Train or fine-tune EfficientViT-SAM on SA-1B or COCO data.",
    discussion: """
      Trains as the official EfficientViT-SAM trainer does — its transforms (flip, antialiased \
      resize, soft masks), masks per image, box or point prompts, the image encoder in train \
      mode (BatchNorm on the batch's statistics), point-sampled 20×BCE + dice loss with the \
      minimum over outputs (--loss focal: the paper's focal loss instead of BCE), value clipping, AdamW and the cosine schedule. Everything trains \
      except the IoU head (--iou-loss mse trains it as SAM does) and the parts --freeze names; \
      a frozen encoder runs the fast inference path. Validates as the official trainer does \
      (box prompts, the best of three masks, mIoU at the input resolution) on a held-out share \
      of the images.

      OUT receives model.pt (torch.save format, loadable by PyTorch and the official code), \
      model.safetensors, log.jsonl (step, loss, lr, images/s, val_miou), loss.png, and the \
      training state (state.json and the state-*.safetensors it names), all rewritten at every save. Ctrl-C \
      (or SIGUSR1, which mpirun forwards to every rank) finishes the current step, saves, and \
      exits; --resume OUT continues the run exactly. Started by mpirun, it trains \
      data-parallel: each rank takes its micro-batches of every step (see the README).
      """)

  @OptionGroup var modelOptions: ModelOptions

  @Option(
    help: ArgumentHelp(
      "Dataset folder: SA-1B (sa_N.jpg + sa_N.json, or images/ + masks/) or COCO (annotations/*.json + images).",
      valueName: "dir"))
  var data: String?

  @Option(
    help: ArgumentHelp("COCO instances JSON (polygons or RLE), with --images.", valueName: "file"))
  var annotations: String?

  @Option(help: ArgumentHelp("Folder of the images the annotations name.", valueName: "dir"))
  var images: String?

  @Option(help: "Masks per image (the official trainer uses 64).")
  var masksPerImage = 64

  @Option(help: "Prompts: mixed (boxes or points per image, as the official), boxes or points.")
  var prompts: TrainingPrompts.Kind = .mixed

  @Option(
    help: ArgumentHelp(
      "Parts that stay fixed: encoder, decoder, prompt-encoder (repeat or separate by commas); none by default, as the official trainer.",
      valueName: "parts"))
  var freeze: [ModelParts] = []

  @Option(
    help:
      "The mask loss's per-point term, weighted 20:1 against dice: bce (the official code) or focal (the paper's, α 0.25, γ 2)."
  )
  var loss: PointLoss = .bce

  @Option(
    help:
      "Loss on the IoU head: none (the official recipe: the head does not train) or mse (SAM's).")
  var iouLoss: IoULossKind = .none

  @Option(help: "Share of the images held out for validation (0: none).")
  var valFraction = 0.0

  @Option(help: "Validate every N steps (and at the end); 0: only at the end.")
  var valEvery = 0

  @OptionGroup var runOptions: RunOptions

  @OptionGroup var quietOption: QuietOption

  func validate() throws {
    switch (data, annotations, images) {
    case (.some, nil, nil), (nil, .some, .some): break
    case (.some, _, _): throw CLIError("give either --data DIR or --annotations FILE --images DIR")
    case (nil, nil, nil): throw CLIError("give the training data with --data DIR")
    case (nil, _, _): throw CLIError("--annotations and --images go together")
    }
    guard masksPerImage >= 1 else { throw CLIError("--masks-per-image must be at least 1") }
    guard valFraction >= 0, valFraction < 1 else {
      throw CLIError("--val-fraction must be at least 0 and below 1")
    }
    guard valEvery >= 0 else { throw CLIError("--val-every must be 0 or more") }
    guard frozen.count < ModelPart.allCases.count else {
      throw CLIError("--freeze names every part: nothing would train")
    }
  }

  /// The parts `--freeze` names, in a fixed order.
  var frozen: [ModelPart] { Set(freeze.flatMap(\.parts)).sorted() }

  func run() throws { try DataParallelJob.run(train) }

  private func train(_ job: DataParallelJob) throws {
    let options = runOptions
    if job.isLeader { try options.checkOutput() }
    let dataset = try openDataset()
    let (config, name) = try modelOptions.resolveConfig(for: "evsam train")
    let original = try loadCheckpoint(config: config, name: name)
    let split: DataSplit
    do {
      split = try DataSplit(
        count: dataset.items.count, validationFraction: valFraction, seed: options.seed)
    } catch {
      throw CLIError(error.description)
    }
    let microBatches = options.microBatches(ranks: job.group.size)
    let globalBatch = microBatches * options.batchSize
    let totalSteps = options.totalSteps(images: split.train.count, globalBatch: globalBatch)
    let settings = RunSettings(
      steps: totalSteps, batchSize: options.batchSize, microBatches: microBatches,
      lr: options.lr, warmupSteps: options.warmupSteps, masksPerImage: masksPerImage,
      prompts: prompts, frozen: frozen, iouLoss: iouLoss == .mse, pointLoss: loss,
      seed: options.seed, validationFraction: valFraction, imageSize: config.imageSize,
      weights: weightsFingerprint(original), data: dataset.fingerprint)
    try job.checkSameRun("\(settings)")

    var records: [TrainingLogRecord] = []
    let run: TrainingRun
    do {
      let saved = try options.resumeURL.map(TrainingState.read)
      records = try options.resumedRecords(through: saved?.trainer.step ?? 0)
      run = try TrainingRun(
        settings: settings, config: config, tensors: original, dataset: dataset, split: split,
        resuming: saved, group: job.group)
    } catch {
      throw CLIError("cannot resume from \(options.resume ?? ""): \(error.description)")
    }
    let files = TrainOutput(folder: options.outputURL, config: config, modelName: name)
    var lastValidation = records.last { $0.validationMIoU != nil }?.validationMIoU
    let loop = try job.startLoop(
      options, total: totalSteps, quiet: quietOption.quiet, resumedAt: run.step,
      imagesSeen: run.imagesSeen)
    guard
      let progress = try loop.run(
        records: &records, currentStep: { run.step },
        step: { stop in try run.trainStep(stop: stop) },
        complete: { record in
          // Validation runs on rank 0 alone; the others wait at the next step's all-reduce.
          if job.isLeader
            && ((valEvery > 0 && record.step % valEvery == 0) || record.step == totalSteps)
          {
            do throws(TrainingDataError) {
              record.validationMIoU = try run.validate()
            } catch {
              throw CLIError(error.description)
            }
            lastValidation = record.validationMIoU ?? lastValidation
          }
          return String(format: "loss %.4f", record.loss)
            + (lastValidation.map { String(format: "  val mIoU %.4f", $0) } ?? "")
        },
        save: { if job.isLeader { try files.save(run, records: $0) } })
    else { return }
    var summary =
      "trained \(files.modelName) for \(totalSteps) steps → \(files.folder.path)/model.pt"
    if let v = lastValidation { summary += String(format: " (val mIoU %.4f)", v) }
    progress.finish(summary)
  }

  private func openDataset() throws -> TrainingDataset {
    do {
      if let data { return try TrainingDataset.open(folder: URL(fileURLWithPath: data)) }
      return try TrainingDataset.coco(
        annotations: URL(fileURLWithPath: annotations!), images: URL(fileURLWithPath: images!))
    } catch {
      throw CLIError(error.description)
    }
  }

  /// The checkpoint's tensors, every key of a `config` model, checked strictly.
  private func loadCheckpoint(config: ModelConfig, name: String) throws -> [String: Tensor] {
    guard let checkpoint = modelOptions.checkpoint else {
      throw CLIError("--checkpoint is required: training starts from the weights you bring")
    }
    return try ModelOptions.load(.efficientViT(config), name: name, checkpoint: checkpoint)
      .tensors
  }
}

/// `--freeze` values: one part or several separated by commas.
struct ModelParts: ExpressibleByArgument {
  var parts: [ModelPart]

  init?(argument: String) {
    var parts: [ModelPart] = []
    for name in argument.split(separator: ",") {
      guard let part = ModelPart(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
        return nil
      }
      parts.append(part)
    }
    guard !parts.isEmpty else { return nil }
    self.parts = parts
  }

  static var allValueStrings: [String] { ModelPart.allCases.map(\.rawValue) }
}

extension TrainingPrompts.Kind: ExpressibleByArgument {}
extension PointLoss: ExpressibleByArgument {}

/// `--iou-loss`.
enum IoULossKind: String, ExpressibleByArgument, CaseIterable {
  case none, mse
}
