import ArgumentParser
import EVCheckpoint
import EVImage
import EVMaskGenerator
import EVModel
import EVTensor
import Foundation

/// `evsam bench-everything`: everything mode (SAM's automatic mask generator) timed over
/// several runs, split into encoder, decoder, mask post-processing and filtering.
struct BenchEverythingCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-everything",
    abstract: "Time everything mode (median of several runs) and where the time goes.",
    discussion: """
      Runs the automatic mask generator on one image with SAM's defaults (32×32 points, batches \
      of 64) unless generator options say otherwise, and reports per run and as the median: \
      encoder (per crop), decoder (prompt encoder + mask decoder over all batches), \
      post-processing (upscaling, stability scores, thresholds, boxes, RLE) and filtering (NMS, \
      small regions). Without --checkpoint the model gets seeded random weights, which run as \
      fast as trained ones; but random weights predict low IoUs, so with the default filters \
      few masks reach post-processing: --pred-iou-thresh 0 --stability-score-thresh 0 measures \
      the worst case where every mask is upscaled and encoded.
      """)

  @Option(
    help: ArgumentHelp(
      "Model(s): l0 … xl1 or sam-vit-b|l|h, comma-separated.", valueName: "names"))
  var model: String = "l0,xl1"

  @Option(
    help: ArgumentHelp("Weights for a single model, instead of random ones.", valueName: "path"))
  var checkpoint: String?

  @Option(
    help: ArgumentHelp("Image (PNG/JPEG); default a synthetic 600×400 picture.", valueName: "file"))
  var image: String?

  @Option(help: "Timed runs per model.")
  var runs: Int = 3

  @Option(help: "Untimed warm-up runs per model.")
  var warmup: Int = 0

  @Option(help: "Compute threads (default: all cores).")
  var threads: Int?

  @Flag(
    help: "Decode each batch as one threaded decoder call instead of one prompt group per core.")
  var sequentialPrompts = false

  @Option(help: ArgumentHelp("Also write the results as JSON.", valueName: "file"))
  var json: String?

  @OptionGroup var quietOption: QuietOption

  /// A status line on stderr, unless --quiet.
  private func status(_ line: String) { if !quietOption.quiet { printErr(line) } }

  @OptionGroup(title: "Generator options") var generatorOptions: GeneratorOptions

  func validate() throws {
    guard runs >= 1, warmup >= 0 else {
      throw ValidationError("--runs must be ≥ 1 and --warmup ≥ 0")
    }
    if checkpoint != nil && model.contains(",") {
      throw ValidationError("--checkpoint holds one model's weights: give a single --model")
    }
  }

  func run() throws {
    let variants = try model.split(separator: ",").map { try BenchModel(parsing: String($0)) }
    let settings = try generatorOptions.settings()
    let picture =
      try image.map { try RGBImage(contentsOf: URL(fileURLWithPath: $0)) }
      ?? syntheticImage(width: 600, height: 400)
    ComputeThreads.set(threads)
    status(
      "everything mode on \(image ?? "a synthetic picture") (\(picture.width)×\(picture.height)), \(ComputeThreads.count) thread(s), \(runs) run(s)"
    )
    var results: [[String: Any]] = []
    for variant in variants {
      let architecture = variant.architecture
      let loaded: SegmentAnythingModel
      if let checkpoint {
        do {
          loaded = try SegmentAnythingModel.load(
            architecture: architecture, checkpoint: URL(fileURLWithPath: checkpoint))
        } catch {
          throw CLIError(summarize(error, modelName: variant.modelName))
        }
      } else {
        let reader = WeightReader(
          randomWeights(architecture: architecture, seed: 0), origin: "random weights")
        loaded = SegmentAnythingModel(architecture: architecture, reader: reader)
        try reader.finish()
      }
      let generator = try AutomaticMaskGenerator(model: loaded, settings: settings)
      generator.parallelPrompts = !sequentialPrompts
      for _ in 0..<warmup { _ = try generator.generate(picture) }
      var timings: [GenerationTiming] = []
      var cpu: [Double] = []
      var generation: MaskGeneration?
      for r in 0..<runs {
        let cpu0 = processCPUSeconds()
        let g = try generator.generate(picture)
        cpu.append(processCPUSeconds() - cpu0)
        timings.append(g.timing)
        generation = g
        status(
          "  \(variant.key) run \(r + 1): \(describe(g.timing)), \(String(format: "%.1f", cpu[r])) s CPU, \(g.masks.count) masks"
        )
      }
      let parts: [(String, KeyPath<GenerationTiming, Duration>)] = [
        ("total", \.total), ("encoder", \.encoder), ("decoder", \.decoder),
        ("postprocess", \.postprocess), ("filtering", \.filtering),
      ]
      var medians: [String: Double] = [:]
      for (name, path) in parts {
        medians[name] = median(timings.map { seconds($0[keyPath: path]) })
      }
      medians["cpu"] = median(cpu)
      let g = generation!
      print(
        String(
          format:
            "%@ everything: median %.2f s (encoder %.2f s, decoder %.2f s, post-processing %.2f s, filtering %.3f s; %.1f s CPU); %d prompts → %d candidate masks → %d masks",
          variant.modelName, medians["total"]!, medians["encoder"]!, medians["decoder"]!,
          medians["postprocess"]!, medians["filtering"]!, medians["cpu"]!, g.candidates / 3,
          g.candidates, g.masks.count))
      results.append([
        "model": variant.key, "median_s": medians,
        "runs_cpu_s": cpu,
        "runs_s": timings.map { t in
          Dictionary(uniqueKeysWithValues: parts.map { ($0.0, seconds(t[keyPath: $0.1])) })
        },
        "candidates": g.candidates, "masks": g.masks.count,
      ])
    }
    if let json {
      let document: [String: Any] = [
        "image": image ?? "synthetic 600x400", "image_size": [picture.height, picture.width],
        "threads": ComputeThreads.count, "settings": settings.jsonRecord,
        "parallel_prompts": !sequentialPrompts,
        "weights": checkpoint ?? "random (seed 0)", "results": results,
      ]
      let data = try JSONSerialization.data(
        withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
      try data.write(to: URL(fileURLWithPath: json), options: .atomic)
    }
  }

  private func describe(_ t: GenerationTiming) -> String {
    "\(formatDuration(t.total)) (encoder \(formatDuration(t.encoder)), decoder \(formatDuration(t.decoder)), post-processing \(formatDuration(t.postprocess)), filtering \(formatDuration(t.filtering)))"
  }
}

private func seconds(_ d: Duration) -> Double { d.seconds }

private func median(_ values: [Double]) -> Double {
  let s = values.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
