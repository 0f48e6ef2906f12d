import ArgumentParser
import EVCheckpoint
import EVModel
import EVPredictor
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

  @OptionGroup var runOptions: RunOptions

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
  }

  func run() throws { try DataParallelJob.run(distill) }

  private func distill(_ job: DataParallelJob) throws {
    let options = runOptions
    if job.isLeader { try options.checkOutput() }
    let imageList = try listImages()
    let (config, name) = try modelOptions.resolveConfig(for: "evsam distill's student")
    let (teacherSource, teacherTensors) = try openTeacher()
    let original = try studentWeights(config: config, name: name, teacher: teacherTensors)
    let microBatches = options.microBatches(ranks: job.group.size)
    let globalBatch = microBatches * options.batchSize
    let totalSteps = options.totalSteps(images: imageList.count, globalBatch: globalBatch)
    let settings = DistillationSettings(
      steps: totalSteps, batchSize: options.batchSize, microBatches: microBatches,
      lr: options.lr, warmupSteps: options.warmupSteps, seed: options.seed,
      imageSize: config.imageSize, teacher: teacherSource.identity,
      weights: weightsFingerprint(original), data: DistillationSettings.fingerprint(imageList))
    try job.checkSameRun("\(settings)")

    var records: [TrainingLogRecord] = []
    let run: DistillationRun
    do {
      let saved = try options.resumeURL.map(DistillationState.read)
      records = try options.resumedRecords(through: saved?.trainer.step ?? 0)
      run = try DistillationRun(
        settings: settings, config: config, tensors: original, images: imageList,
        teacher: teacherSource, resuming: saved, group: job.group)
    } catch {
      throw CLIError("cannot resume from \(options.resume ?? ""): \(error.description)")
    }
    let files = TrainOutput(folder: options.outputURL, config: config, modelName: name)
    let firstLoss = records.first?.loss
    let loop = try job.startLoop(
      options, total: totalSteps, quiet: quietOption.quiet, resumedAt: run.step,
      imagesSeen: run.imagesSeen)
    guard
      let progress = try loop.run(
        records: &records, currentStep: { run.step },
        step: { stop in try run.distillStep(stop: stop) },
        complete: { String(format: "mse %.5f", $0.loss) },
        save: { if job.isLeader { try files.save(run, records: $0) } })
    else { return }
    let first = firstLoss ?? records.first?.loss
    progress.finish(
      "distilled \(files.modelName) for \(totalSteps) steps (mse "
        + (first.map { String(format: "%.5f → ", $0) } ?? "")
        + String(format: "%.5f", records.last?.loss ?? 0) + ") → \(files.folder.path)/model.pt")
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
    let identity = EncoderIdentity(model: model, name: name, tensors: tensors)
    return (ModelTeacher(model: model, identity: identity), tensors)
  }

  /// The student's starting tensors: --checkpoint, or PyTorch's default initialisation with
  /// the teacher's prompt encoder and mask decoder when there is a teacher model.
  private func studentWeights(config: ModelConfig, name: String, teacher: [String: Tensor]?)
    throws -> [String: Tensor]
  {
    guard let checkpoint = modelOptions.checkpoint else {
      let declared = EfficientViTSAM.declaredParameters(config: config).declared
      var tensors = initialWeights(declared: declared, seed: runOptions.seed)
      if let teacher {
        for key in tensors.keys where !key.hasPrefix("image_encoder.") {
          if let t = teacher[key], t.shape == tensors[key]!.shape { tensors[key] = t }
        }
      }
      return tensors
    }
    return try ModelOptions.load(.efficientViT(config), name: name, checkpoint: checkpoint)
      .tensors
  }
}
