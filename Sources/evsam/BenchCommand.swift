import ArgumentParser
import EVCheckpoint
import EVImage
import EVMaskGenerator
import EVModel
import EVPredictor
import EVTensor
import Foundation

/// `evsam bench`: encoder and decoder latency, everything-mode time and peak memory, optionally
/// side by side with the official PyTorch / ONNX Runtime code (scripts/reference-bench).
struct BenchCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench",
    abstract: "Time the encoder, the decoder and everything mode; report peak memory.",
    discussion: """
      Without --checkpoint the model gets seeded random weights (with non-trivial BatchNorm \
      statistics), which run exactly as fast as trained ones. With --model all, or several \
      comma-separated names, every model runs in its own process so that its peak memory is \
      its own.

      Reference mode: --with-reference runs scripts/reference-bench/run.sh (it creates a Python \
      environment with the official package, torch and onnxruntime on first use), which times \
      PyTorch eager and ONNX Runtime on the same random weights and image, and this command \
      then loads those very weights and prints the ratios. The encoder ratios come from a last \
      phase that runs evsam's, PyTorch's and ONNX Runtime's encoders in three resident \
      processes, one pass each in turn (--runs rounds), so that a machine whose speed drifts \
      over minutes slows all sides alike. --reference FILE reads a JSON the script wrote \
      earlier instead (and the weights saved beside it); its encoder times were taken minutes \
      apart from ours.
      """)

  @Option(
    help: ArgumentHelp(
      "Model(s): l0, l1, l2, xl0, xl1, sam-vit-b, sam-vit-l, sam-vit-h, a comma-separated list, or all (the five EfficientViT-SAM variants).",
      valueName: "name"))
  var model: String = "l0"

  @Option(help: "Compute threads (default: all cores).")
  var threads: Int?

  @Option(help: "Timed encoder runs (after one warm-up run).")
  var runs: Int = 5

  @Option(help: "Timed runs of each decoder case.")
  var decoderRuns: Int = 20

  @Option(
    help: ArgumentHelp(
      "Image (PNG/JPEG); default a synthetic 600×400 picture (the reference script draws the same).",
      valueName: "file"))
  var image: String?

  @Option(
    help: ArgumentHelp(
      "Weights (.pt or .safetensors) for a single model, instead of random ones.",
      valueName: "path"))
  var checkpoint: String?

  @Option(help: ArgumentHelp("Write the results as JSON here.", valueName: "file"))
  var json: String?

  @Option(
    help: ArgumentHelp(
      "Reference timings (JSON written by scripts/reference-bench) to compare against.",
      valueName: "file"))
  var reference: String?

  @Flag(help: "Run scripts/reference-bench/run.sh first and compare against it.")
  var withReference = false

  @Option(
    help: ArgumentHelp(
      "The reference script (for --with-reference).", valueName: "path"))
  var referenceScript: String = "scripts/reference-bench/run.sh"

  @Flag(help: "Skip everything mode (32×32 points, batches of 64).")
  var skipEverything = false

  @Flag(help: "Also time every encoder op once and print the slowest.")
  var profile = false

  @Option(help: .hidden)
  var childOutput: String?

  @Flag(help: .hidden)
  var serveEncoder = false

  @OptionGroup var quietOption: QuietOption

  /// A status line on stderr, unless --quiet.
  private func status(_ line: String) { if !quietOption.quiet { printErr(line) } }

  func validate() throws {
    guard runs >= 1, decoderRuns >= 1 else {
      throw ValidationError("--runs and --decoder-runs must be ≥ 1")
    }
    if let threads, threads < 1 { throw ValidationError("--threads must be ≥ 1") }
    if withReference && reference != nil {
      throw ValidationError("give either --with-reference or --reference FILE, not both")
    }
    _ = try variants()
  }

  func variants() throws -> [BenchModel] {
    if model.lowercased() == "all" { return Variant.allCases.map(BenchModel.efficientViT) }
    return try model.split(separator: ",").map {
      do {
        return try BenchModel(parsing: String($0).trimmingCharacters(in: .whitespaces))
      } catch {
        throw ValidationError("\(error)")
      }
    }
  }

  func run() throws {
    let variants = try variants()
    if serveEncoder {
      try serveEncoderRuns(variants[0], checkpointPath: checkpoint)
      return
    }
    if let childOutput {
      // One model in this process: the measurement proper.
      let result = try measure(variants[0], checkpointPath: checkpoint)
      try writeJSON(result, to: childOutput)
      return
    }

    var referenceDocument: [String: Any]?
    var referenceWeights: [BenchModel: String] = [:]
    let referenceFile = withReference ? try runReferenceScript(variants) : reference
    if let referenceFile {
      referenceDocument = try readJSON(referenceFile)
      // The script saves the weights it timed beside its JSON: run the very same models.
      let folder = URL(fileURLWithPath: referenceFile).deletingLastPathComponent()
      for v in variants {
        let weights = folder.appendingPathComponent("\(v.key).pt").path
        if FileManager.default.fileExists(atPath: weights) { referenceWeights[v] = weights }
      }
    }
    if checkpoint != nil && variants.count > 1 {
      throw ValidationError("--checkpoint goes with a single --model")
    }

    var results: [[String: Any]] = []
    for v in variants {
      let weights = checkpoint ?? referenceWeights[v]
      status(
        "benchmarking \(v.modelName)\(weights.map { " (weights \($0))" } ?? " (random weights)")…")
      var result = try measureInChild(v, checkpointPath: weights)
      if withReference {
        let timed = (referenceDocument?["models"] as? [String: Any])?[v.key] as? [String: Any]
        result["interleaved"] = try interleavedEncoders(
          v, weights: weights, resultsFolder: referenceResultsFolder,
          runtimes: ReferenceRuntime.allCases.filter { timed?[$0.rawValue] != nil })
      }
      results.append(result)
    }

    let document = report(results, reference: referenceDocument)
    if let json {
      try writeJSON(document, to: json)
      status("wrote \(json)")
    }
  }

  // MARK: - Measuring one model

  private func measure(_ variant: BenchModel, checkpointPath: String?) throws -> [String: Any] {
    ComputeThreads.set(threads)
    let clock = ContinuousClock()
    let loadStart = clock.now
    let model = try loadModel(variant, checkpointPath: checkpointPath)
    let loadTime = seconds(clock.now - loadStart)
    let picture = try benchImage()
    let input = model.encoderInput(picture)

    // Encoder: one warm-up run (first-touch page faults, BLAS buffers), then the timed runs.
    var embedding = model.imageEncoder(input)
    var encoderTimes: [Double] = []
    var encoderCPU: [Double] = []
    for _ in 0..<runs {
      let cpu0 = processCPUSeconds()
      let start = clock.now
      embedding = model.imageEncoder(input)
      encoderTimes.append(seconds(clock.now - start))
      encoderCPU.append(processCPUSeconds() - cpu0)
    }
    let rssAfterEncode = peakResidentBytes()

    var profileRows: [[String: Any]] = []
    if profile {
      if let encoder = model.imageEncoder as? ImageEncoder {
        profileRows = profileEncoder(encoder, input)
      } else if let encoder = model.imageEncoder as? SamViTEncoder {
        profileRows = profileEncoder(encoder, input)
      }
    }

    // Decoder cases, on the embedding just computed. Setting it prepares the decoder's
    // per-image state (done once per image, like the encoder; timed separately).
    let predictor = SamPredictor(model: model)
    let prepareTimes = try timeRepeated(runs) {
      try predictor.setEmbedding(embedding, originalSize: (picture.height, picture.width))
    }
    let (w, h) = (Double(picture.width), Double(picture.height))
    let point = [Point(x: w * 0.45, y: h * 0.55)]
    let box = Box(x0: w * 0.2, y0: h * 0.25, x1: w * 0.7, y1: h * 0.8)
    // An 8×8 grid of single-point prompts, as everything mode sends them.
    var batchPoints: [[Point]] = []
    for i in 0..<64 {
      let gx: Double = (Double(i % 8) + 0.5) * w / 8
      let gy: Double = (Double(i / 8) + 0.5) * h / 8
      batchPoints.append([Point(x: gx, y: gy)])
    }
    let batchLabels = [[Int]](repeating: [1], count: 64)
    let pointTimes = try timeRepeated(decoderRuns) {
      _ = try predictor.predict(points: point, labels: [1], multimask: true)
    }
    let boxTimes = try timeRepeated(decoderRuns) {
      _ = try predictor.predict(box: box, multimask: false)
    }
    let batchTimes = try timeRepeated(max(3, decoderRuns / 4)) {
      _ = try predictor.predictBatch(
        pointSets: batchPoints, labelSets: batchLabels, multimask: true, upscale: true)
    }

    var result: [String: Any] = [
      "model": variant.key, "model_name": variant.modelName,
      "threads": ComputeThreads.count, "weights": checkpointPath ?? "random (seed 0)",
      "image": image ?? "synthetic 600x400", "image_size": [picture.height, picture.width],
      "load_s": loadTime,
      "encoder_s": summary(encoderTimes),
      "encoder_cpu_s": summary(encoderCPU),
      "decoder_prepare_ms": summary(prepareTimes.wall.map { $0 * 1000 }),
      "decoder_point_ms": summary(pointTimes.wall.map { $0 * 1000 }),
      "decoder_box_ms": summary(boxTimes.wall.map { $0 * 1000 }),
      "decoder_batch64_ms": summary(batchTimes.wall.map { $0 * 1000 }),
      "decoder_point_cpu_ms": summary(pointTimes.cpu.map { $0 * 1000 }),
      "decoder_box_cpu_ms": summary(boxTimes.cpu.map { $0 * 1000 }),
      "decoder_batch64_cpu_ms": summary(batchTimes.cpu.map { $0 * 1000 }),
      "peak_rss_after_encode_mb": Double(rssAfterEncode) / 1_048_576,
      "encoder_gmacs": Double(model.imageEncoder.multiplyAccumulates) / 1e9,
    ]
    if !profileRows.isEmpty { result["profile"] = profileRows }

    if !skipEverything {
      let generator = try AutomaticMaskGenerator(model: model)
      let start = clock.now
      let generated = try generator.generate(picture)
      result["everything_s"] = seconds(clock.now - start)
      result["everything_masks"] = generated.masks.count
      let t = generated.timing
      result["everything_parts_s"] = [
        "encoder": seconds(t.encoder), "decoder": seconds(t.decoder),
        "postprocess": seconds(t.postprocess), "filtering": seconds(t.filtering),
      ]
    }
    result["peak_rss_mb"] = Double(peakResidentBytes()) / 1_048_576
    return result
  }

  /// The weights at `checkpointPath`, or seeded random ones (as fast as trained weights).
  private func loadModel(_ variant: BenchModel, checkpointPath: String?) throws
    -> SegmentAnythingModel
  {
    let architecture = variant.architecture
    if let checkpointPath {
      do {
        return try SegmentAnythingModel.load(
          architecture: architecture, checkpoint: URL(fileURLWithPath: checkpointPath))
      } catch {
        throw CLIError(summarize(error, modelName: variant.modelName))
      }
    }
    let reader = WeightReader(
      randomWeights(architecture: architecture, seed: 0), origin: "random weights")
    let model = SegmentAnythingModel(architecture: architecture, reader: reader)
    try reader.finish()
    return model
  }

  /// `--serve-encoder`: the model resident, one timed encoder pass per `run` line on stdin
  /// (protocol in InterleavedTiming.swift).
  private func serveEncoderRuns(_ variant: BenchModel, checkpointPath: String?) throws {
    ComputeThreads.set(threads)
    let model = try loadModel(variant, checkpointPath: checkpointPath)
    let input = model.encoderInput(try benchImage())
    _ = model.imageEncoder(input)
    let clock = ContinuousClock()
    // Unbuffered: the parent waits for each line.
    func reply(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
    reply("evsam-bench ready")
    while let line = readLine() {
      let request = line.trimmingCharacters(in: .whitespaces)
      if request == "quit" { break }
      guard request == "run" else { continue }
      let start = clock.now
      _ = model.imageEncoder(input)
      reply("evsam-bench time \(seconds(clock.now - start))")
    }
    reply("evsam-bench peak_rss_mb \(Double(peakResidentBytes()) / 1_048_576)")
  }

  /// The encoders of evsam and of the reference runtimes timed before (PyTorch, ONNX Runtime,
  /// OpenVINO), resident side by side and run one pass each in turn for `runs` rounds.
  private func interleavedEncoders(
    _ variant: BenchModel, weights: String?, resultsFolder folder: String,
    runtimes: [ReferenceRuntime]
  ) throws -> [String: Any] {
    status("timing \(variant.modelName)'s encoders interleaved (\(runs) rounds)…")
    let threadCount = threads ?? ComputeThreads.count
    var ours = ["bench", "--model", variant.key, "--serve-encoder"]
    ours += ["--threads", "\(threadCount)"]
    if let weights { ours += ["--checkpoint", weights] }
    if let image { ours += ["--image", image] }
    func reference(_ runtime: String) -> [String] {
      var arguments = [
        referenceScript, "--serve", runtime, "--one", variant.key, "--out", folder,
        "--threads", "\(threadCount)",
      ]
      if let image { arguments += ["--image", image] }
      return arguments
    }
    let bash = URL(fileURLWithPath: "/bin/bash")
    var servers = [
      try EncoderServer(
        name: "evsam",
        executable: Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0]),
        arguments: ours)
    ]
    for runtime in runtimes {
      servers.append(
        try EncoderServer(
          name: runtime.rawValue, executable: bash, arguments: reference(runtime.rawValue)))
    }
    defer { for s in servers { s.quit() } }
    let times = try interleavedEncoderTimes(servers, rounds: runs, progress: status)
    var entry: [String: Any] = ["rounds": runs]
    for (s, t) in zip(servers, times) { entry[s.name] = summary(t) }
    // Each round's ratio pairs passes a few seconds apart; their median is the drift-proof one.
    for (s, t) in zip(servers.dropFirst(), times.dropFirst()) {
      entry["ratio_to_\(s.name)_per_round"] = summary(zip(times[0], t).map { $0 / $1 })
    }
    return entry
  }

  /// Runs the measurement in a fresh process of this executable, so that peak memory and warm
  /// caches belong to one model only.
  private func measureInChild(_ variant: BenchModel, checkpointPath: String?) throws -> [String:
    Any]
  {
    let output = FileManager.default.temporaryDirectory
      .appendingPathComponent(
        "evsam-bench-\(ProcessInfo.processInfo.processIdentifier)-\(variant.key).json")
    defer { try? FileManager.default.removeItem(at: output) }
    var arguments = [
      "bench", "--model", variant.key, "--runs", "\(runs)", "--decoder-runs", "\(decoderRuns)",
      "--child-output", output.path,
    ]
    if let threads { arguments += ["--threads", "\(threads)"] }
    if let image { arguments += ["--image", image] }
    if let checkpointPath { arguments += ["--checkpoint", checkpointPath] }
    if skipEverything { arguments.append("--skip-everything") }
    if profile { arguments.append("--profile") }
    let process = Process()
    process.executableURL =
      Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
    process.arguments = arguments
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw CLIError(
        "benchmarking \(variant.modelName) failed (exit status \(process.terminationStatus))")
    }
    return try readJSON(output.path)
  }

  private func benchImage() throws -> RGBImage {
    if let image { return try RGBImage(contentsOf: URL(fileURLWithPath: image)) }
    return syntheticImage(width: 600, height: 400)
  }

  /// Times `body` once untimed, then `count` times: wall seconds, and CPU seconds of the process.
  private func timeRepeated(_ count: Int, _ body: () throws -> Void) throws -> (
    wall: [Double], cpu: [Double]
  ) {
    let clock = ContinuousClock()
    try body()
    var times: [Double] = []
    var cpu: [Double] = []
    for _ in 0..<count {
      let cpu0 = processCPUSeconds()
      let start = clock.now
      try body()
      times.append(seconds(clock.now - start))
      cpu.append(processCPUSeconds() - cpu0)
    }
    return (times, cpu)
  }

  /// Each top-level encoder op timed once (after the warm-up runs), slowest first.
  private func profileEncoder(_ encoder: ImageEncoder, _ input: Tensor) -> [[String: Any]] {
    let clock = ContinuousClock()
    // (op, wall seconds, CPU seconds of the whole process, MACs): on a loaded machine the CPU
    // time is the steadier measure of the work an op does.
    var rows: [(String, Double, Double, Int)] = []
    func timed(_ name: String, macs: Int, _ body: () -> Void) {
      let cpu0 = processCPUSeconds()
      let start = clock.now
      body()
      rows.append((name, seconds(clock.now - start), processCPUSeconds() - cpu0, macs))
    }
    var size = FeatureSize(square: encoder.config.imageSize)
    var x = input
    var stageOutputs: [Tensor] = []
    for (s, stage) in encoder.backbone.stages.enumerated() {
      for (i, op) in stage.enumerated() {
        let macs = op.multiplyAccumulates(input: size)
        timed("stage\(s).op\(i) \(type(of: op))", macs: macs.macs) { x = op(x) }
        size = macs.output
      }
      stageOutputs.append(x)
    }
    var neck = x
    timed("neck", macs: encoder.multiplyAccumulatesByPart().last!.macs) {
      neck = encoder.neck(stageOutputs)
    }
    timed("layernorm", macs: 0) { _ = encoder.norm(neck) }
    printProfile(rows)
    return rows.map { ["op": $0.0, "seconds": $0.1, "cpu_seconds": $0.2, "macs": $0.3] }
  }

  /// The profile table: (op, wall s, CPU s, MACs) rows, the costliest in CPU time first.
  private func printProfile(_ rows: [(String, Double, Double, Int)]) {
    let total = rows.reduce(0) { $0 + $1.1 }
    let totalCPU = rows.reduce(0) { $0 + $1.2 }
    print(
      "encoder profile (one pass: \(String(format: "%.3f", total)) s wall, "
        + "\(String(format: "%.3f", totalCPU)) s CPU):")
    for row in rows.sorted(by: { $0.2 > $1.2 }) {
      let rate = row.2 > 0 ? 2 * Double(row.3) / row.2 / 1e9 : 0
      print(
        "  \(pad(row.0, 34)) \(pad(String(format: "%.1f ms", row.1 * 1000), 10, right: true))"
          + " \(pad(String(format: "%.1f ms CPU", row.2 * 1000), 14, right: true))"
          + "  \(pad(String(format: "%.2f GMAC", Double(row.3) / 1e9), 11, right: true))"
          + "  \(pad(String(format: "%.0f GFLOP/CPU-s", rate), 16, right: true))")
    }
  }

  /// The ViT's patch embedding, each block and the neck timed once, slowest first.
  private func profileEncoder(_ encoder: SamViTEncoder, _ input: Tensor) -> [[String: Any]] {
    let clock = ContinuousClock()
    var rows: [(String, Double, Double, Int)] = []
    let side = encoder.config.gridSide
    var tokens = Tensor(zeros: [0])
    func timed(_ name: String, macs: Int, _ body: () -> Void) {
      let cpu0 = processCPUSeconds()
      let start = clock.now
      body()
      rows.append((name, seconds(clock.now - start), processCPUSeconds() - cpu0, macs))
    }
    let parts = Dictionary(uniqueKeysWithValues: encoder.multiplyAccumulatesByPart())
    timed("patch_embed + positions", macs: parts["patch_embed"]!) {
      tokens = encoder.embedPatches(input, image: 0)
    }
    for (i, block) in encoder.blocks.enumerated() {
      let kind = block.windowSize == nil ? "global" : "window"
      timed("block\(i) (\(kind))", macs: block.multiplyAccumulates(side: side)) {
        tokens = block(tokens, side: side)
      }
    }
    timed("neck", macs: parts["neck"]!) { _ = encoder.neck(tokens) }
    printProfile(rows)
    return rows.map { ["op": $0.0, "seconds": $0.1, "cpu_seconds": $0.2, "macs": $0.3] }
  }

  // MARK: - Reference

  /// Where the reference script keeps its results and the weights both sides run: beside its
  /// virtual environment.
  private var referenceResultsFolder: String {
    URL(fileURLWithPath: referenceScript).absoluteURL.deletingLastPathComponent()
      .deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent(".venv-ref/results").path
  }

  private func runReferenceScript(_ variants: [BenchModel]) throws -> String {
    guard FileManager.default.fileExists(atPath: referenceScript) else {
      throw CLIError(
        "\(referenceScript) not found: run from the repository root or pass --reference-script")
    }
    let folder = referenceResultsFolder
    var arguments = [
      referenceScript, "--models", variants.map(\.key).joined(separator: ","),
      "--runs", "\(runs)", "--decoder-runs", "\(decoderRuns)", "--out", folder,
      "--threads", "\(threads ?? ComputeThreads.count)",
    ]
    if let image { arguments += ["--image", image] }
    if skipEverything { arguments.append("--skip-everything") }
    status("running the reference: bash \(arguments.joined(separator: " "))")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = arguments
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw CLIError("the reference script failed (exit status \(process.terminationStatus))")
    }
    return folder + "/reference.json"
  }

  // MARK: - Report

  /// Prints the table and returns the JSON document.
  private func report(_ results: [[String: Any]], reference: [String: Any]?) -> [String: Any] {
    let refModels = reference?["models"] as? [String: Any] ?? [:]
    // The table's columns: PyTorch and ONNX Runtime always, OpenVINO when the reference
    // timed it for some model.
    let columns = ReferenceRuntime.allCases.filter { runtime in
      runtime == .pytorch || runtime == .onnxruntime
        || refModels.values.contains { ($0 as? [String: Any])?[runtime.rawValue] != nil }
    }
    var rows: [[String]] = []
    for r in results {
      let name = r["model"] as? String ?? "?"
      let ref = refModels[name] as? [String: Any]
      func ours(_ key: String) -> Double? { (r[key] as? [String: Any])?["median"] as? Double }
      /// A reference value: a number, or a summary's `stat`.
      func theirs(_ runtime: ReferenceRuntime, _ key: String, _ stat: String = "median") -> Double?
      {
        let d = ref?[runtime.rawValue] as? [String: Any]
        if let v = d?[key] as? Double { return v }
        return (d?[key] as? [String: Any])?[stat] as? Double
      }
      func add(
        _ label: String, _ value: Double?, unit: String, _ values: [ReferenceRuntime: Double]
      ) {
        guard let value else { return }
        let fmt = unit == "s" ? "%.3f s" : (unit == "MB" ? "%.0f MB" : "%.1f ms")
        var row = ["\(name) \(label)", String(format: fmt, value)]
        for runtime in columns {
          let theirs = values[runtime]
          row.append(theirs.map { String(format: fmt, $0) } ?? "—")
          row.append(theirs.map { String(format: "%.2f×", value / $0) } ?? "—")
        }
        rows.append(row)
      }
      func all(_ key: String, _ stat: String = "median") -> [ReferenceRuntime: Double] {
        var values: [ReferenceRuntime: Double] = [:]
        for runtime in columns { values[runtime] = theirs(runtime, key, stat) }
        return values
      }
      if let inter = r["interleaved"] as? [String: Any] {
        // The drift-proof comparison: the encoders took turns, pass by pass.
        func stat(_ side: String, _ key: String) -> Double? {
          (inter[side] as? [String: Any])?[key] as? Double
        }
        for key in ["median", "min"] {
          var values: [ReferenceRuntime: Double] = [:]
          for runtime in columns { values[runtime] = stat(runtime.rawValue, key) }
          add("encoder, interleaved (\(key))", stat("evsam", key), unit: "s", values)
        }
        add("encoder, own process (median)", ours("encoder_s"), unit: "s", all("encoder_s"))
      } else {
        add("encoder (median)", ours("encoder_s"), unit: "s", all("encoder_s"))
        add(
          "encoder (min)", (r["encoder_s"] as? [String: Any])?["min"] as? Double, unit: "s",
          all("encoder_s", "min"))
      }
      func torchOnly(_ key: String) -> [ReferenceRuntime: Double] {
        theirs(.pytorch, key).map { [.pytorch: $0] } ?? [:]
      }
      add("encoder CPU time (median)", ours("encoder_cpu_s"), unit: "s", [:])
      add("decoder per-image preparation", ours("decoder_prepare_ms"), unit: "ms", [:])
      add("decoder, 1 point", ours("decoder_point_ms"), unit: "ms", torchOnly("decoder_point_ms"))
      add("decoder, 1 box", ours("decoder_box_ms"), unit: "ms", torchOnly("decoder_box_ms"))
      add(
        "decoder, 64 points", ours("decoder_batch64_ms"), unit: "ms",
        torchOnly("decoder_batch64_ms"))
      add("decoder CPU time, 1 point", ours("decoder_point_cpu_ms"), unit: "ms", [:])
      add("decoder CPU time, 64 points", ours("decoder_batch64_cpu_ms"), unit: "ms", [:])
      add("everything mode", r["everything_s"] as? Double, unit: "s", torchOnly("everything_s"))
      add(
        "peak RSS after encode", r["peak_rss_after_encode_mb"] as? Double, unit: "MB",
        all("peak_rss_after_encode_mb"))
    }
    let header = ["", "evsam"] + columns.flatMap { [$0.title, "ratio"] }
    let widths = (0..<header.count).map { c in ([header] + rows).map { $0[c].count }.max()! }
    func line(_ cells: [String]) -> String {
      "| "
        + cells.enumerated().map { pad($0.element, widths[$0.offset], right: $0.offset > 0) }
        .joined(separator: " | ") + " |"
    }
    print(line(header))
    print(
      "|"
        + widths.enumerated().map {
          String(repeating: "-", count: $0.element + 1) + ($0.offset > 0 ? ":" : "-")
        }.joined(separator: "|") + "|")
    for row in rows { print(line(row)) }
    let threadsUsed = results.first?["threads"] as? Int ?? ComputeThreads.count
    print(
      "(\(threadsUsed) threads; encoder over \(runs) runs, decoder over \(decoderRuns); ratio < 1 means evsam is faster)"
    )

    var document: [String: Any] = [
      "tool": "evsam bench", "threads": threadsUsed, "runs": runs, "decoder_runs": decoderRuns,
      "machine": machineDescription(), "results": results,
    ]
    if let reference { document["reference"] = reference }
    return document
  }
}

// MARK: - Helpers

/// A runtime the reference script times the official model in, as its documents name it.
enum ReferenceRuntime: String, CaseIterable {
  case pytorch
  case onnxruntime
  case openVINOFP32 = "openvino-fp32"
  case openVINO = "openvino"

  var title: String {
    switch self {
    case .pytorch: "PyTorch"
    case .onnxruntime: "ONNX Runtime"
    case .openVINOFP32: "OpenVINO fp32"
    case .openVINO: "OpenVINO default"
    }
  }
}

/// A published model `bench` can time: an EfficientViT-SAM variant or one of SAM's ViTs.
enum BenchModel: Hashable {
  case efficientViT(Variant)
  case samViT(SamViTVariant)

  init(parsing name: String) throws {
    if let sam = SamViTVariant(name: name) {
      self = .samViT(sam)
    } else {
      self = .efficientViT(try Variant.parse(name))
    }
  }

  /// The name in the reference script's documents and weight files: `l0`, `sam-vit-h`.
  var key: String {
    switch self {
    case .efficientViT(let v): v.rawValue
    case .samViT(let v): v.modelName
    }
  }

  var modelName: String {
    switch self {
    case .efficientViT(let v): v.modelName
    case .samViT(let v): v.modelName
    }
  }

  var architecture: Architecture {
    switch self {
    case .efficientViT(let v): .efficientViT(.preset(v))
    case .samViT(let v): .samViT(.preset(v))
    }
  }
}

/// Seeded random weights for every key `config` declares: weights uniform in ±1/√fan_in (the
/// scale of PyTorch's default init), BatchNorm and LayerNorm with non-trivial statistics.
func randomWeights(config: ModelConfig, seed: UInt64) -> [String: Tensor] {
  randomWeights(architecture: .efficientViT(config), seed: seed)
}

/// `randomWeights(config:seed:)` for any architecture.
func randomWeights(architecture: Architecture, seed: UInt64) -> [String: Tensor] {
  var rng = SplitMix64(seed: seed)
  var tensors: [String: Tensor] = [:]
  for d in SegmentAnythingModel.declaredParameters(architecture: architecture).declared {
    let count = d.shape.reduce(1, *)
    let name = d.key.split(separator: ".").last.map(String.init) ?? d.key
    let (lo, hi): (Float, Float)
    switch name {
    case "num_batches_tracked": (lo, hi) = (0, 0)
    case "running_var": (lo, hi) = (0.5, 1.5)
    case "running_mean": (lo, hi) = (-0.1, 0.1)
    case "weight" where d.shape.count == 1: (lo, hi) = (0.5, 1.5)
    case "bias": (lo, hi) = (-0.1, 0.1)
    default:
      let fanIn = d.shape.count >= 2 ? d.shape.dropFirst().reduce(1, *) : max(1, count)
      let bound = 1 / Float(max(1, fanIn)).squareRoot()
      (lo, hi) = (-bound, bound)
    }
    let storage = [Float](unsafeUninitializedCapacity: count) { buffer, initialised in
      for i in 0..<count { buffer[i] = hi > lo ? lo + (hi - lo) * rng.nextUnitFloat() : lo }
      initialised = count
    }
    tensors[d.key] = Tensor(shape: d.shape, storage: storage)
  }
  return tensors
}
extension SplitMix64 {
  /// Uniform in [0, 1).
  mutating func nextUnitFloat() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

/// The benchmark picture: smooth colour ramps with a few discs, so everything mode finds
/// structure. scripts/reference-bench draws the same pixels.
func syntheticImage(width: Int, height: Int) -> RGBImage {
  var pixels = [UInt8](repeating: 0, count: width * height * 3)
  let discs: [(cx: Int, cy: Int, r: Int, c: (UInt8, UInt8, UInt8))] = [
    (width / 4, height / 3, height / 6, (220, 40, 40)),
    (width * 2 / 3, height / 2, height / 4, (40, 200, 60)),
    (width / 2, height * 4 / 5, height / 8, (30, 60, 220)),
  ]
  for y in 0..<height {
    for x in 0..<width {
      var c = (UInt8(x * 255 / max(1, width - 1)), UInt8(y * 255 / max(1, height - 1)), UInt8(128))
      for d in discs where (x - d.cx) * (x - d.cx) + (y - d.cy) * (y - d.cy) <= d.r * d.r {
        c = d.c
      }
      let i = (y * width + x) * 3
      (pixels[i], pixels[i + 1], pixels[i + 2]) = c
    }
  }
  return RGBImage(width: width, height: height, pixels: pixels)
}

/// Peak resident set size of this process so far (VmHWM), in bytes.
func peakResidentBytes() -> Int { processStatusBytes("VmHWM:") }

/// A kB field of /proc/self/status (`VmHWM:`, `VmRSS:`, …) in bytes; 0 where there is none.
/// The value follows a tab and is padded to 8 columns, so wider values have no space before.
func processStatusBytes(_ field: String) -> Int {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else {
    return 0
  }
  for line in status.split(separator: "\n") where line.hasPrefix(field) {
    let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first
    return (kb.flatMap { Int($0) } ?? 0) * 1024
  }
  return 0
}

/// CPU time of the whole process (all threads), in seconds.
func processCPUSeconds() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func machineDescription() -> String {
  let cpu =
    (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
    .split(separator: "\n").first { $0.hasPrefix("model name") }?
    .split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
  let load =
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?
    .split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
  return "\(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(load)"
}

private func seconds(_ d: Duration) -> Double { d.seconds }

private func summary(_ values: [Double]) -> [String: Any] {
  let sorted = values.sorted()
  let median =
    sorted.count % 2 == 1
    ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
  return ["median": median, "min": sorted.first ?? 0, "max": sorted.last ?? 0, "runs": values]
}

private func readJSON(_ path: String) throws -> [String: Any] {
  guard let data = FileManager.default.contents(atPath: path),
    let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
  else { throw CLIError("\(path): not a JSON object (or unreadable)") }
  return object
}

private func writeJSON(_ object: [String: Any], to path: String) throws {
  let data = try JSONSerialization.data(
    withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
  try data.write(to: URL(fileURLWithPath: path))
}
