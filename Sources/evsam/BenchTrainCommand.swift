import ArgumentParser
import EVCheckpoint
import EVModel
import EVTensor
import EVTraining
import Foundation

/// `evsam bench-train`: the time and peak memory of a training step, optionally beside the
/// official PyTorch step timed by `scripts/reference-bench/run.sh --train`.
struct BenchTrainCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-train",
    abstract: "Time a training step (full, encoder only, or the decoder part); report peak memory.",
    discussion: """
      --part full is the official step on the whole model: the encoder in train mode on the \
      batch of images (seeded random preprocessed ones), for every image the prompt encoder and \
      the mask decoder on its box prompts, the official loss, the backward pass through \
      everything and one clipped AdamW update. --part encoder is a distillation step: the \
      encoder alone in train mode, the mean squared error to target embeddings, backward and \
      AdamW. --part decoder is what a step does besides the image encoder, the embeddings \
      being seeded random inputs (the encoder frozen). The targets are the boxes' rectangles. \
      Without --checkpoint the weights are seeded random ones, which run exactly as fast as \
      trained ones.

      Peak memory is measured from just before the first step (the kernel's high-water mark is \
      reset there), so it is the step's working set plus what was resident: the weights and the \
      inputs. scripts/reference-bench/run.sh --train measures the official code the same way; \
      --reference FILE prints its numbers and the ratios beside these. On a machine shared with \
      other work, --interleave is the fairer comparison: it runs the official step in a server \
      process and alternates the two sides step by step.
      """)

  enum Part: String, ExpressibleByArgument, CaseIterable {
    case decoder, full, encoder

    var description: String {
      switch self {
      case .decoder: return "decoder part of a training step (encoder frozen)"
      case .full: return "a training step (the whole model)"
      case .encoder: return "an encoder-only (distillation) step"
      }
    }
  }

  @Option(
    help: ArgumentHelp(
      "Published variant (l0, l1, l2, xl0, xl1); default l0 unless --config is given.",
      valueName: "name"))
  var model: String?

  @Option(help: ArgumentHelp("Architecture as JSON, instead of --model.", valueName: "file.json"))
  var config: String?

  @Option(
    help: ArgumentHelp(
      "Weights (.pt or .safetensors); default seeded random ones.", valueName: "path"))
  var checkpoint: String?

  @Option(
    help: ArgumentHelp(
      "What to time: decoder (encoder frozen), full or encoder.", valueName: "part"))
  var part: Part = .decoder

  @Option(help: "Images per step.")
  var images: Int = 2

  @Option(help: "Masks (box prompts) per image.")
  var masks: Int = 16

  @Option(
    help: ArgumentHelp(
      "Masks per forward and backward pass of the decoder (each mask's loss is its own, so parts give the same gradients).",
      valueName: "n"))
  var masksPerPass: Int = 8

  @Flag(help: "One output per prompt instead of the multimask three.")
  var singleMask = false

  @Option(help: "Timed steps (after the warm-up ones).")
  var runs: Int = 3

  @Option(help: "Untimed steps first.")
  var warmup: Int = 1

  @Option(help: "Compute threads (default: all cores).")
  var threads: Int?

  @Option(
    help: ArgumentHelp(
      "Reference timings (JSON written by scripts/reference-bench/run.sh --train).",
      valueName: "file"))
  var reference: String?

  @Option(help: ArgumentHelp("Write the results as JSON here.", valueName: "file"))
  var json: String?

  @Flag(help: "Also print the CPU time of every op of the timed steps (forward and backward).")
  var profile = false

  @Flag(
    help: """
      Time the official step too, in a process of its own (scripts/reference-bench/run.sh \
      --serve-train), one step of each side in turn: a shared machine's load then slows both \
      alike.
      """)
  var interleave = false

  @Option(
    help: ArgumentHelp(
      "The reference script (for --interleave).", valueName: "path"))
  var referenceScript: String = "scripts/reference-bench/run.sh"

  func validate() throws {
    if model != nil && config != nil {
      throw ValidationError("give either --model or --config, not both")
    }
    if images < 1 || masks < 1 || runs < 1 || warmup < 0 {
      throw ValidationError("--images, --masks and --runs must be at least 1, --warmup at least 0")
    }
    if masksPerPass < 1 {
      throw ValidationError("--masks-per-pass must be at least 1")
    }
    if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    if interleave && reference != nil {
      throw ValidationError("give either --reference or --interleave, not both")
    }
  }

  func run() throws {
    ComputeThreads.set(threads)
    let (config, name, variant) = try resolveModel()
    // The step keeps the weights its part needs (the decoder's alone for the decoder part);
    // the rest are gone before the peak memory is measured.
    let opTimes = profile ? TapeProfile() : nil
    let step = makeStep(
      config: config, tensors: try loadTensors(config: config, name: name),
      batch: DecoderStepBenchmark.syntheticBatch(
        images: images, masks: masks, side: config.imageSize, seed: 1),
      profile: opTimes)
    FileHandle.standardError.write(
      Data(
        "bench-train: \(name), \(part.description), \(images) × \(masks) masks, \(runs) runs…\n"
          .utf8))
    var theirs = try referenceFile(variant: variant)
    let server = try interleave ? startReferenceServer(variant: variant) : nil
    resetPeakResident()
    let resident = Double(currentResidentBytes()) / 1_048_576
    for _ in 0..<warmup { _ = step() }
    var timed: [DecoderStepBenchmark.Run] = []
    var serverTimes: [Double] = []
    for round in 0..<runs {
      // With a reference server, the sides take turns, each starting every other round, a
      // short pause before each step (PyTorch's OpenMP workers spin for a while after one).
      for side in (round % 2 == 0 ? [0, 1] : [1, 0]) {
        if side == 0 {
          if server != nil { Thread.sleep(forTimeInterval: 0.25) }
          timed.append(step())
        } else if let server {
          Thread.sleep(forTimeInterval: 0.25)
          serverTimes.append(try server.run())
        }
      }
    }
    let stepPeak = Double(peakResidentBytes()) / 1_048_576
    if let server {
      theirs = Reference(times: serverTimes, peakMB: server.quit(), residentMB: nil)
    }
    let wall = timed.map(\.wall)
    let cpu = timed.map(\.cpu)
    let totalMasks = images * masks

    let rows: [(String, Double, Double?, String)] = [
      ("step, median of \(runs)", median(wall), theirs.map { median($0.times) }, "s"),
      ("step, fastest", wall.min()!, theirs?.times.min(), "s"),
      (
        "per mask", median(wall) / Double(totalMasks),
        theirs.map { median($0.times) / Double(totalMasks) }, "s"
      ),
      ("CPU time of the step", median(cpu), nil, "s"),
      ("peak RSS from the first step on", stepPeak, theirs?.peakMB, "MB"),
      ("of which resident before it (weights, inputs)", resident, theirs?.residentMB, "MB"),
    ]
    print(
      "\(name), \(part.description): \(images) images × \(masks) masks, box prompts, "
        + "\(singleMask ? "single mask" : "multimask"), \(ComputeThreads.count) threads"
        + (server != nil ? ", interleaved with PyTorch" : ""))
    print("| | evsam | PyTorch | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for (label, ours, reference, unit) in rows {
      let ratio = reference.map { String(format: "%.2f×", ours / $0) } ?? "—"
      print(
        "| \(label) | \(format(ours, unit)) | \(reference.map { format($0, unit) } ?? "—") | \(ratio) |"
      )
    }
    if server != nil {
      let ratios = zip(wall, serverTimes).map { $0 / $1 }
      print(
        String(
          format: "Per round, evsam / PyTorch: %.2f× … %.2f×", ratios.min() ?? 0, ratios.max() ?? 0)
      )
    }
    if let opTimes {
      print("\nCPU time per op over the \(runs) timed steps (both cores):")
      print(opTimes.report())
    }
    if let json {
      var document: [String: Any] = [
        "tool": "evsam bench-train", "model": name, "part": part.rawValue, "images": images,
        "masks_per_image": masks, "multimask": !singleMask, "threads": ComputeThreads.count,
        "masks_per_pass": min(masksPerPass, masks), "step_s": wall, "step_cpu_s": cpu,
        "losses": timed.map(\.loss), "step_peak_rss_mb": stepPeak, "rss_at_reset_mb": resident,
        "peak_rss_mb": Double(peakResidentBytes()) / 1_048_576,
      ]
      if let theirs {
        var reference: [String: Any] = [
          "step_s": theirs.times, "interleaved": server != nil,
        ]
        if let peak = theirs.peakMB { reference["step_peak_rss_mb"] = peak }
        document["reference"] = reference
      }
      let data = try JSONSerialization.data(
        withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
      try data.write(to: URL(fileURLWithPath: json))
    }
  }

  /// One timed step of `part`, on state that persists from step to step as in training.
  private func makeStep(
    config: ModelConfig, tensors: [String: Tensor], batch: DecoderStepBenchmark.Batch,
    profile: TapeProfile?
  ) -> () -> DecoderStepBenchmark.Run {
    switch part {
    case .decoder:
      let session = DecoderStepBenchmark.Session(
        tensors: tensors, batch: batch, multimask: !singleMask, partSize: masksPerPass)
      return { session.step(profile: profile) }
    case .full:
      var settings = Trainer.Settings()
      settings.masksPerPass = masksPerPass
      let trainer = Trainer(config: config, tensors: tensors, settings: settings)
      let pictures = DecoderStepBenchmark.syntheticImages(
        count: images, side: config.imageSize, seed: 2)
      let examples = (0..<images).map {
        Trainer.Example(image: pictures[$0], prompts: batch.prompts[$0], targets: batch.targets[$0])
      }
      let draws = MaskLoss.Settings()
      var rng = SplitMix64(seed: 3)
      return {
        DecoderStepBenchmark.timed {
          let randomness = Trainer.Randomness(
            multimask: !singleMask,
            draws: (0..<(singleMask ? 1 : 3)).map { _ in
              MaskLoss.Draws(masks: images * masks, settings: draws, using: &rng)
            })
          return trainer.step(examples, randomness: randomness).loss
        }
      }
    case .encoder:
      let distiller = Distiller(config: config, tensors: tensors, settings: Distiller.Settings())
      let side = config.imageSize
      let pictures = DecoderStepBenchmark.syntheticImages(count: images, side: side, seed: 2)
      let input = Tensor(shape: [images, 3, side, side], storage: pictures.flatMap(\.storage))
      let targets = Tensor(
        shape: [images, 256, 64, 64],
        storage: batch.embeddings.flatMap(\.storage))
      return { DecoderStepBenchmark.timed { distiller.step(images: input, targets: targets).loss } }
    }
  }

  /// PyTorch's side: its step times, its peak memory from its first step on and what was
  /// resident before it.
  struct Reference {
    var times: [Double]
    var peakMB: Double?
    var residentMB: Double?
  }

  /// The official step in a process of its own (`run.sh --serve-train`), warmed up.
  private func startReferenceServer(variant: Variant?) throws -> EncoderServer {
    guard let variant else {
      throw CLIError("--interleave needs a published --model (the reference builds it itself)")
    }
    guard FileManager.default.isExecutableFile(atPath: referenceScript) else {
      throw CLIError(
        "\(referenceScript) not found or not executable (run from the package root, or give "
          + "--reference-script)")
    }
    FileHandle.standardError.write(
      Data("bench-train: starting the reference step server (PyTorch)…\n".utf8))
    var arguments = [
      "--serve-train", part.rawValue, "--one", variant.rawValue, "--images", "\(images)",
      "--masks-per-image", "\(masks)",
    ]
    if let threads { arguments += ["--threads", "\(threads)"] }
    return try EncoderServer(
      name: "PyTorch", executable: URL(fileURLWithPath: referenceScript), arguments: arguments)
  }

  private func resolveModel() throws -> (ModelConfig, String, Variant?) {
    if let config {
      return (try ModelConfig.load(json: URL(fileURLWithPath: config)), config, nil)
    }
    let variant = try Variant.parse(model ?? "l0")
    return (ModelConfig.preset(variant), variant.modelName, variant)
  }

  /// The checkpoint's tensors, or seeded random ones for every declared key.
  private func loadTensors(config: ModelConfig, name: String) throws -> [String: Tensor] {
    guard let checkpoint else { return randomWeights(config: config, seed: 0) }
    try checkCheckpointFile(checkpoint)
    do {
      return try Checkpoint.load(
        contentsOf: URL(fileURLWithPath: checkpoint),
        expecting: EfficientViTSAM.declaredParameters(config: config).declared)
    } catch {
      throw CLIError(summarize(error, modelName: name))
    }
  }

  /// The reference's numbers for this model and part, if a file was given and holds them.
  private func referenceFile(variant: Variant?) throws -> Reference? {
    guard let reference else { return nil }
    guard let data = FileManager.default.contents(atPath: reference),
      let document = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      let train = document["train"] as? [String: Any]
    else { throw CLIError("\(reference): not a JSON file written by run.sh --train") }
    guard let variant, let entry = train[variant.rawValue] as? [String: Any] else {
      throw CLIError(
        "\(reference) has no training numbers for this model (it has \(train.keys.sorted()))")
    }
    if entry["images"] as? Int != images || entry["masks_per_image"] as? Int != masks {
      throw CLIError(
        "\(reference) timed \(entry["images"] ?? "?") images × \(entry["masks_per_image"] ?? "?") "
          + "masks; run with the same --images and --masks")
    }
    guard let numbers = entry[part.rawValue] as? [String: Any],
      let step = numbers["step_s"] as? [String: Any], let times = step["runs"] as? [Double],
      !times.isEmpty
    else { throw CLIError("\(reference) has no \(part.rawValue) step for \(variant.rawValue)") }
    return Reference(
      times: times, peakMB: numbers["step_peak_rss_mb"] as? Double,
      residentMB: numbers["rss_at_reset_mb"] as? Double)
  }
}

private func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  let n = sorted.count
  return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
}

private func format(_ value: Double, _ unit: String) -> String {
  unit == "MB" ? String(format: "%.0f MB", value) : String(format: "%.3f s", value)
}

/// Resident set size of this process now (VmRSS), in bytes.
func currentResidentBytes() -> Int { processStatusBytes("VmRSS:") }

/// Gives the heap's free pages back (the tool keeps freed memory, `HeapPolicy`), so that what
/// stays resident is what is live, then resets the kernel's peak-RSS mark (VmHWM) to the
/// current resident size, so that the next `peakResidentBytes()` measures from here (Linux
/// `clear_refs` code 5; a no-op elsewhere).
func resetPeakResident() {
  HeapPolicy.releaseFreeMemory()
  guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return }
  handle.write(Data("5".utf8))
  try? handle.close()
}
