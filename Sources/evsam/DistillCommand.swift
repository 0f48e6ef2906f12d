import ArgumentParser
import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation

struct DistillCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "distill",
    abstract:
      "Distil a teacher's image embeddings (SAM ViT-H in the paper) into an EfficientViT-SAM encoder.",
    discussion: """
      The first stage of EfficientViT-SAM's training: the student's image encoder, in train \
      mode, learns to reproduce the teacher's 1×256×64×64 image embedding (student at its own \
      input size, 512 or 1024; teacher at 1024) under the mean squared error, with value \
      clipping, AdamW and the cosine schedule. Then `evsam train` fine-tunes the whole model \
      end to end.

      The teacher is a model run on every image (--teacher sam-vit-h --teacher-checkpoint \
      sam_vit_h_4b8939.pth), or a folder of its embeddings written earlier by \
      `evsam embed --model sam-vit-h IMAGES -o DIR` (--teacher-embeddings DIR): ViT-H takes \
      tens of seconds per image on a CPU, so cache it once for many epochs. Without \
      --checkpoint the student starts from PyTorch's default initialisation, with the \
      teacher's prompt encoder and mask decoder when the teacher is a model (as \
      EfficientViT-SAM keeps SAM's).

      OUT receives model.pt, model.safetensors, log.jsonl, loss.png and the state for \
      --resume, as `evsam train` writes them.
      """)

  @OptionGroup(title: "Student") var modelOptions: ModelOptions

  @Option(
    help: ArgumentHelp(
      "Teacher model: sam-vit-b, sam-vit-l, sam-vit-h (or any --model name).",
      valueName: "name"))
  var teacher: String?

  @Option(
    help: ArgumentHelp(
      "Teacher architecture as JSON, instead of --teacher.", valueName: "file.json"))
  var teacherConfig: String?

  @Option(help: ArgumentHelp("The teacher's weights.", valueName: "path"))
  var teacherCheckpoint: String?

  @Option(
    help: ArgumentHelp(
      "A folder of teacher embeddings from `evsam embed`, instead of a teacher model.",
      valueName: "dir"))
  var teacherEmbeddings: String?

  @Option(
    help: ArgumentHelp(
      "Images: a folder of PNG/JPEG files, or with --annotations the images a COCO file names.",
      valueName: "dir"))
  var images: String?

  @Option(
    help: ArgumentHelp(
      "Dataset folder (SA-1B or COCO, as `evsam train --data`): its images.",
      valueName: "dir"))
  var data: String?

  @Option(
    help: ArgumentHelp("COCO instances JSON naming the images, with --images.", valueName: "file"))
  var annotations: String?

  @Option(help: "Optimiser steps (default 1000); or give --epochs.")
  var steps: Int?

  @Option(help: "Passes over the images, instead of --steps.")
  var epochs: Int?

  @Option(help: "Images per step.")
  var batchSize = 1

  @Option(help: "Peak learning rate (cosine decay to 0).")
  var lr = 1e-4

  @Option(help: "Linear warm-up steps before the cosine decay.")
  var warmupSteps = 0

  @Option(help: "Seed of the images' order (and of the initial weights without --checkpoint).")
  var seed: UInt64 = 0

  @Option(help: "Save the model, the state, the log and loss.png every N steps (and at the end).")
  var saveEvery = 500

  @Option(help: ArgumentHelp("Continue the run saved in this folder.", valueName: "dir"))
  var resume: String?

  @Option(
    name: .shortAndLong,
    help: ArgumentHelp("Output folder (default: the --resume folder).", valueName: "dir"))
  var output: String?

  @OptionGroup var quietOption: QuietOption

  func validate() throws {
    switch (teacher != nil || teacherConfig != nil, teacherEmbeddings != nil) {
    case (true, true):
      throw CLIError("give either a teacher model (--teacher) or --teacher-embeddings, not both")
    case (false, false):
      throw CLIError(
        "give the teacher: --teacher sam-vit-h --teacher-checkpoint FILE, or --teacher-embeddings DIR"
      )
    default: break
    }
    if teacher != nil && teacherConfig != nil {
      throw CLIError("give either --teacher or --teacher-config, not both")
    }
    if (teacher != nil || teacherConfig != nil) && teacherCheckpoint == nil {
      throw CLIError("--teacher-checkpoint is required with a teacher model")
    }
    switch (data, annotations, images) {
    case (.some, nil, nil), (nil, nil, .some), (nil, .some, .some): break
    case (.some, _, _): throw CLIError("give either --data DIR or --images DIR, not both")
    case (nil, .some, nil): throw CLIError("--annotations goes with --images")
    case (nil, nil, nil): throw CLIError("give the images with --images DIR or --data DIR")
    }
    if steps != nil && epochs != nil { throw CLIError("give either --steps or --epochs, not both") }
    if let steps, steps < 1 { throw CLIError("--steps must be at least 1") }
    if let epochs, epochs < 1 { throw CLIError("--epochs must be at least 1") }
    guard batchSize >= 1 else { throw CLIError("--batch-size must be at least 1") }
    guard lr > 0, lr.isFinite else { throw CLIError("--lr must be a positive number") }
    guard warmupSteps >= 0 else { throw CLIError("--warmup-steps must be 0 or more") }
    guard saveEvery >= 1 else { throw CLIError("--save-every must be at least 1") }
    guard output != nil || resume != nil else {
      throw CLIError("give the output folder with -o DIR")
    }
  }

  func run() throws {
    let outputURL = URL(fileURLWithPath: output ?? resume!)
    let resumeURL = resume.map { URL(fileURLWithPath: $0).standardizedFileURL }
    if outputURL.standardizedFileURL != resumeURL { try TrainOutput.checkFresh(outputURL) }
    let imageList = try listImages()
    let (config, name) = try modelOptions.resolveConfig(for: "evsam distill's student")
    let (teacherSource, teacherTensors) = try openTeacher()
    let original = try studentWeights(config: config, name: name, teacher: teacherTensors)
    let totalSteps =
      epochs.map { ($0 * imageList.count + batchSize - 1) / batchSize } ?? steps ?? 1000
    let settings = DistillationSettings(
      steps: totalSteps, batchSize: batchSize, lr: lr, warmupSteps: warmupSteps, seed: seed,
      imageSize: config.imageSize, teacher: teacherSource.identity,
      weights: weightsFingerprint(original),
      data: DistillationSettings.fingerprint(imageList))

    var records: [TrainingLogRecord] = []
    let run: DistillationRun
    do {
      var saved: DistillationState? = nil
      if let folder = resumeURL {
        let state = try DistillationState.read(from: folder)
        let log = folder.appendingPathComponent(TrainOutput.logFile)
        if let text = try? String(contentsOf: log, encoding: .utf8) {
          records = try TrainingLogRecord.parse(text, through: state.trainer.step, file: log.path)
        }
        saved = state
      }
      run = try DistillationRun(
        settings: settings, config: config, tensors: original, images: imageList,
        teacher: teacherSource, resuming: saved)
    } catch {
      throw CLIError("cannot resume from \(resume ?? ""): \(error.description)")
    }
    try createFolder(outputURL)
    let files = TrainOutput(folder: outputURL, config: config, modelName: name)
    guard run.step < totalSteps else {
      try files.save(run, records: records)
      printErr("the run in \(resume ?? output!) is already complete (\(totalSteps) steps)")
      return
    }
    try distill(run, records: &records, files: files)
  }

  private func distill(
    _ run: DistillationRun, records: inout [TrainingLogRecord], files: TrainOutput
  ) throws {
    let total = run.settings.steps
    let interrupt = InterruptFlag.install(
      firstNotice: "stopping after this step and saving (Ctrl-C again to quit without saving)")
    defer { interrupt.uninstall() }
    let progress = ProgressLine(enabled: !quietOption.quiet)
    let clock = ContinuousClock()
    let start = clock.now
    let firstStep = run.step
    var firstLoss: Double?
    while run.step < total {
      let result: (loss: Double, lr: Double)
      do {
        result = try run.distillStep()
      } catch {
        throw CLIError(error.description)
      }
      firstLoss = firstLoss ?? result.loss
      let step = run.step
      let elapsed = clock.now - start
      let seconds =
        Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
      let rate = Double((step - firstStep) * batchSize) / max(seconds, 1e-9)
      records.append(
        TrainingLogRecord(step: step, loss: result.loss, lr: result.lr, imagesPerSecond: rate))
      let interrupted = interrupt.isRaised
      if step % saveEvery == 0 || step == total || interrupted {
        try files.save(run, records: records)
      }
      if interrupted {
        progress.finish(
          "interrupted at step \(step)/\(total); model and state saved in \(files.folder.path) "
            + "(continue with --resume \(files.folder.path))", isError: true)
        throw ExitCode(130)
      }
      let eta = Double((total - step) * batchSize) / max(rate, 1e-9)
      progress.update(
        String(
          format: "step %d/%d  mse %.5f  lr %.3g  %.2f images/s  ETA %.0f s", step, total,
          result.loss, result.lr, rate, eta))
    }
    let last = records.last?.loss ?? 0
    progress.finish(
      "distilled \(files.modelName) for \(total) steps (mse "
        + (firstLoss.map { String(format: "%.5f → ", $0) } ?? "")
        + String(format: "%.5f", last) + ") → \(files.folder.path)/model.pt")
  }

  /// The images, in a fixed order (the run shuffles them per epoch from --seed).
  private func listImages() throws -> [URL] {
    do {
      if let data {
        return try TrainingDataset.open(folder: URL(fileURLWithPath: data)).items.map(\.image)
      }
      if let annotations {
        return try TrainingDataset.coco(
          annotations: URL(fileURLWithPath: annotations), images: URL(fileURLWithPath: images!)
        ).items.map(\.image)
      }
    } catch {
      throw CLIError(error.description)
    }
    let folder = URL(fileURLWithPath: images!)
    let found: [URL]
    do {
      found = try imageFiles(in: folder)
    } catch {
      throw CLIError("cannot list " + fileProblem(error, path: folder.path))
    }
    guard !found.isEmpty else { throw CLIError("\(folder.path) holds no PNG or JPEG images") }
    return found
  }

  /// The teacher (a model or a folder of its embeddings) and, for a model, its tensors.
  private func openTeacher() throws -> (any EmbeddingTeacher, [String: Tensor]?) {
    if let teacherEmbeddings {
      do {
        return (try EmbeddingFolder(opening: URL(fileURLWithPath: teacherEmbeddings)), nil)
      } catch {
        throw CLIError(error.description)
      }
    }
    let options = try ModelOptions.parse(
      (teacher.map { ["--model", $0] } ?? ["--config", teacherConfig!])
        + ["--checkpoint", teacherCheckpoint!])
    let (model, name, tensors) = try options.loadModelAndTensors()
    let identity = TeacherIdentity(model: model, name: name, tensors: tensors)
    return (ModelTeacher(model: model, identity: identity), tensors)
  }

  /// The student's starting tensors: --checkpoint, or PyTorch's default initialisation with
  /// the teacher's prompt encoder and mask decoder when there is a teacher model.
  private func studentWeights(config: ModelConfig, name: String, teacher: [String: Tensor]?)
    throws -> [String: Tensor]
  {
    let declared = EfficientViTSAM.declaredParameters(config: config).declared
    guard let checkpoint = modelOptions.checkpoint else {
      var tensors = initialWeights(declared: declared, seed: seed)
      if let teacher {
        for key in tensors.keys where !key.hasPrefix("image_encoder.") {
          if let t = teacher[key], t.shape == tensors[key]!.shape { tensors[key] = t }
        }
      }
      return tensors
    }
    try checkCheckpointFile(checkpoint)
    do {
      let tensors = try Checkpoint.load(
        contentsOf: URL(fileURLWithPath: checkpoint), expecting: declared)
      let reader = WeightReader(tensors, origin: checkpoint)
      _ = EfficientViTSAM(config: config, reader: reader)
      try reader.finish()
      return tensors
    } catch {
      throw CLIError(summarize(error, modelName: name))
    }
  }
}
