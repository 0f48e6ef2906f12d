import ArgumentParser
import EVEvaluation
import EVPredictor
import Foundation

struct EvalCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "eval",
    abstract: "Zero-shot evaluation on COCO / LVIS with the official SAM protocol.",
    discussion: """
      box: each object's ground-truth box; point: simulated clicks (--clicks 1,3,5 reports each \
      count from one run: click k uses clicks 1…k-1); detector: each box of a detector's results \
      (--detections, COCO results format), scored with COCOeval (LVISEval for LVIS) on the masks. \
      Multimask output, the mask with the highest predicted IoU is kept; mIoU is IoU×100 averaged \
      over all / large / medium / small objects, as the official script prints it.

      Finished images are appended to OUT.partial.jsonl: rerun the same command to resume after \
      an interruption. --shard I/N evaluates every N-th image (--shard auto: the index and count from Slurm, a Kubernetes Indexed Job or mpirun); `evsam merge` combines the shards.
      """)

  @OptionGroup var modelOptions: ModelOptions

  @Option(
    help: ArgumentHelp(
      "Folder with the images (COCO: val2017; LVIS: the folder holding val2017/, train2017/).",
      valueName: "dir"))
  var images: String

  @Option(help: ArgumentHelp("COCO or LVIS annotation file.", valueName: "file"))
  var annotations: String

  @Option(help: ArgumentHelp("box, point or detector.", valueName: "kind"))
  var prompt: PromptArgument

  @Option(help: ArgumentHelp("Click counts to report for --prompt point.", valueName: "list"))
  var clicks: String = "1"

  @Option(
    help: ArgumentHelp(
      "Detector results (COCO results JSON) for --prompt detector.", valueName: "file"))
  var detections: String?

  @Option(
    help: ArgumentHelp(
      "coco or lvis (default: detected from the annotation file).", valueName: "kind"))
  var dataset: DatasetArgument?

  @Option(help: ArgumentHelp("Evaluate only the first N images (ascending id).", valueName: "n"))
  var limit: Int?

  @OptionGroup(title: "Shards") var shardOptions: ShardOptions

  @Flag(help: "Skip images whose file is missing (counted and reported) instead of stopping.")
  var skipMissingImages = false

  @Option(help: ArgumentHelp("Prompts decoded together.", valueName: "n"))
  var batchSize: Int = 16

  @OptionGroup var quietOption: QuietOption

  @Option(name: .shortAndLong, help: ArgumentHelp("Report (JSON) to write.", valueName: "file"))
  var output: String

  func validate() throws {
    guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
  }

  func run() throws {
    let clickCounts = try parseClicks()
    let annotationsURL = URL(fileURLWithPath: annotations)
    let groundTruth = try COCODataset.load(contentsOf: annotationsURL)
    let detectionList = try detections.map {
      try ResultsFile.load(contentsOf: URL(fileURLWithPath: $0))
    }
    let kind = dataset?.value ?? (groundTruth.looksLikeLVIS ? .lvis : .coco)
    let (_, modelName) = try modelOptions.resolveArchitecture()
    let (shard, shardSource) = try shardOptions.resolve()
    if let shardSource { printError("shard \(shard) from \(shardSource)") }
    let configuration = ZeroShotConfiguration(
      model: modelName, checkpoint: modelOptions.checkpoint.map(absolutePath),
      annotations: absolutePath(annotations), images: absolutePath(images), prompt: prompt.value,
      clicks: clickCounts, detections: detections.map(absolutePath), dataset: kind, limit: limit,
      shard: shard, skipMissingImages: skipMissingImages)
    // Everything about the data is checked before the (slow) model load.
    let evaluator = try ZeroShotEvaluator(
      configuration: configuration, dataset: groundTruth, detections: detectionList,
      imagesDirectory: URL(fileURLWithPath: images))
    for w in evaluator.warnings { printError("warning: \(w)") }

    try checkWritableFile(output)
    let (model, _) = try modelOptions.loadModel()
    let segmenter = SamSegmenter(predictor: SamPredictor(model: model), batchSize: batchSize)
    let outputURL = URL(fileURLWithPath: output)
    let journal = URL(fileURLWithPath: output + ".partial.jsonl")
    var reporter: ProgressReporter?
    var started = false
    let report = try evaluator.run(segmenter: segmenter, journal: journal) { done, total, resumed in
      if !started {
        started = true
        guard !quietOption.quiet else { return }
        if resumed > 0 {
          printError("resuming from \(journal.path): \(resumed) of \(total) images already done")
        }
        printError(
          "evaluating \(total) image(s), prompt \(configuration.prompt.rawValue), shard \(configuration.shard)"
        )
        reporter = ProgressReporter.standardError(total: total, alreadyDone: resumed)
      } else {
        reporter?.advance()
      }
    }
    reporter?.finish()
    try report.write(to: outputURL)
    try? FileManager.default.removeItem(at: journal)
    for line in report.summaryLines { print(line) }
  }

  private func parseClicks() throws -> [Int] {
    let parts = clicks.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 1 }) else {
      throw ValidationError("--clicks must be positive integers separated by commas, e.g. 1,3,5")
    }
    if prompt.value != .point && clicks != "1" {
      throw ValidationError("--clicks applies to --prompt point only")
    }
    return parts.map { $0! }
  }
}

func absolutePath(_ path: String) -> String {
  URL(fileURLWithPath: path).standardizedFileURL.path
}

enum PromptArgument: String, ExpressibleByArgument, CaseIterable {
  case box
  case point
  case detector

  var value: PromptKind { PromptKind(rawValue: rawValue)! }
}

enum DatasetArgument: String, ExpressibleByArgument, CaseIterable {
  case coco
  case lvis

  var value: DatasetKind { DatasetKind(rawValue: rawValue)! }
}
