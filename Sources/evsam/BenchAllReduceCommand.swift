import ArgumentParser
import EVModel
import EVTensor
import EVTraining
import Foundation

struct BenchAllReduceCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-allreduce",
    abstract:
      "Time the all-reduce of a model's gradients between MPI ranks; project cluster steps.",
    discussion: """
      Run under MPI with at least two ranks (mpirun -np 2 --oversubscribe evsam \
      bench-allreduce --model l0,xl1). Each rank holds a gradient of the model's trainable \
      size (the official recipe: everything but the IoU head; the encoder alone for \
      distillation) and sums it over the ranks in rank order, as a data-parallel step does; \
      the time of a run is the slowest rank's, and the median over --runs is reported with the \
      bus bandwidth it implies (2(N−1)/N × bytes per rank). The result is checked against the \
      sum computed locally.

      With --step-seconds (a step's compute time on one machine, from `evsam bench-train`), a \
      table projects the step time and the scaling efficiency for --machines at \
      --bandwidth: compute + 2(N−1)/N × bytes / bandwidth + 4(N−1) messages per 16 MiB \
      segment × --latency (the all-reduce follows the backward pass, without overlap), and \
      the time of one pass over SA-1B's 11.1 M images at --images-per-step per machine.
      """)

  @Option(help: "Models, separated by commas (l0 … xl1, sam-vit-*).")
  var model = "l0,xl1"

  @Option(help: "Timed all-reduces per model (after one untimed).")
  var runs = 5

  @Option(
    help: ArgumentHelp(
      "Measured step compute time per model, e.g. l0=6.9,xl1=27.5,l0/distill=3.4 (seconds, from evsam bench-train --part full, or --part encoder for /distill).",
      valueName: "model=s,…"))
  var stepSeconds: String?

  @Option(help: ArgumentHelp("Images per machine and step, for the SA-1B projection."))
  var imagesPerStep = 2

  @Option(help: ArgumentHelp("Machines to project, separated by commas.", valueName: "n,…"))
  var machines = "2,4,8,16,32,64"

  @Option(help: ArgumentHelp("Network bandwidths in Gb/s, separated by commas.", valueName: "g,…"))
  var bandwidth = "10,25,100"

  @Option(help: ArgumentHelp("Per-message latency in microseconds.", valueName: "µs"))
  var latency = 50.0

  func validate() throws {
    guard runs >= 1 else { throw CLIError("--runs must be at least 1") }
    guard imagesPerStep >= 1 else { throw CLIError("--images-per-step must be at least 1") }
    guard latency >= 0 else { throw CLIError("--latency must be 0 or more") }
  }

  func run() throws { try DataParallelJob.run(measure) }

  private func measure(_ job: DataParallelJob) throws {
    let group = job.group
    guard group.size >= 2 else {
      throw CLIError(
        "bench-allreduce measures between MPI ranks: run it as "
          + "mpirun -np 2 --oversubscribe evsam bench-allreduce …")
    }
    let models = try model.split(separator: ",").map {
      try BenchModel(parsing: $0.trimmingCharacters(in: .whitespaces))
    }
    let steps = try parsedStepSeconds()
    let machineCounts = try integers(machines, option: "--machines")
    let bandwidths = try numbers(bandwidth, option: "--bandwidth")
    var rows: [Measurement] = []
    for benchModel in models {
      let declared = SegmentAnythingModel.declaredParameters(
        architecture: benchModel.architecture
      ).declared
      for (what, prefix) in [("train", ""), ("distill", "image_encoder.")] {
        let shapes = declared.filter { Trainer.isTrainable($0.key) && $0.key.hasPrefix(prefix) }
        let count = shapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let seconds = try time(count: count, group: group)
        let step = try timeAveraging(shapes.map { ($0.key, $0.shape) }, group: group)
        rows.append(
          Measurement(
            model: benchModel.key, what: what, values: count, seconds: seconds, stepSeconds: step
          ))
      }
    }
    guard job.isLeader else { return }
    let n = Double(group.size)
    print("All-reduce of the gradients between \(group.size) ranks, median of \(runs):")
    print(
      "| model | step | trainable values | MiB | all-reduce | bus bandwidth | in a step (gather, reduce, average back) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows {
      let bus = 2 * (n - 1) / n * row.bytes / row.seconds / 1e9
      print(
        "| \(row.model) | \(row.what) | \(row.values) | "
          + String(
            format: "%.1f | %.3f s | %.2f GB/s | %.3f s |", row.bytes / 1_048_576, row.seconds,
            bus, row.stepSeconds))
    }
    guard !steps.isEmpty else { return }
    print(
      "\nProjected step time and scaling efficiency, one rank per machine, "
        + "\(imagesPerStep) images per machine and step, \(Int(latency)) µs per message:")
    for row in rows {
      guard let compute = steps[row.model + (row.what == "train" ? "" : "/" + row.what)] else {
        continue
      }
      print(
        "\n\(row.model) (\(row.what), \(String(format: "%.1f", row.bytes / 1_048_576)) MiB of gradients, step compute \(compute) s):"
      )
      print(
        "| machines | "
          + bandwidths.map { "\(formatNumber($0)) Gb/s: step, efficiency, SA-1B pass" }
          .joined(separator: " | ") + " |")
      print("| --- |" + String(repeating: " --- |", count: bandwidths.count))
      for m in machineCounts {
        let cells = bandwidths.map { gbps -> String in
          // The local part (gathering into one buffer and back) measured, the transfer modelled.
          let local = max(0, row.stepSeconds - row.seconds)
          let communication = allReduceSeconds(bytes: row.bytes, machines: m, gbps: gbps)
          let step = compute + local + communication
          let pass = 11.1e6 / (Double(m * imagesPerStep) / step)
          return String(format: "%.2f s, %.0f %%, %@", step, 100 * compute / step, days(pass))
        }
        print("| \(m) | " + cells.joined(separator: " | ") + " |")
      }
    }
  }

  struct Measurement {
    var model: String
    var what: String
    var values: Int
    var seconds: Double
    /// `averageGradients` around the all-reduce: the gradients gathered into one buffer,
    /// reduced, and the mean written back.
    var stepSeconds: Double
    var bytes: Double { Double(values) * 4 }
  }

  /// The median over `runs` of the slowest rank's `averageGradients` on gradients of these
  /// shapes, as a data-parallel step pays it.
  private func timeAveraging(_ shapes: [(String, [Int])], group: any ProcessGroup) throws
    -> Double
  {
    var rng = SplitMix64(seed: UInt64(group.rank) + 7)
    var tensors: [String: Tensor] = [:]
    for (key, shape) in shapes {
      tensors[key] = Tensor(zeros: shape)
    }
    let parameters = Parameters(tensors) { _ in true }
    let layout = DataParallelLayout(ranks: group.size, microBatch: 1)
    var times: [Double] = []
    let clock = ContinuousClock()
    for run in 0...runs {
      for (key, shape) in shapes {
        let count = shape.reduce(1, *)
        parameters[key].grad = (0..<count).map { _ in Float(rng.next() >> 40) / Float(1 << 24) }
      }
      let start = clock.now
      _ = try averageGradients(parameters, layout: layout, group: group) { _ in 0 }
      let elapsed = clock.now - start
      let seconds = elapsed.seconds
      let all = try group.allGather(seconds.bitPattern).map(Double.init(bitPattern:))
      if run > 0 { times.append(all.max()!) }
    }
    return times.sorted()[times.count / 2]
  }

  /// A reduce-scatter and an all-gather over `machines`: each sends and receives
  /// 2(N−1)/N of the bytes; 2(N−1) messages per 16 MiB segment, each way.
  func allReduceSeconds(bytes: Double, machines: Int, gbps: Double) -> Double {
    let n = Double(machines)
    let segments = (bytes / Double(4 << 22)).rounded(.up)
    return 2 * (n - 1) / n * bytes * 8 / (gbps * 1e9) + 4 * (n - 1) * segments * latency * 1e-6
  }

  /// The median over `runs` of the slowest rank's time to sum `count` floats.
  private func time(count: Int, group: any ProcessGroup) throws -> Double {
    var rng = SplitMix64(seed: UInt64(group.rank) + 1)
    let original = (0..<count).map { _ in Float(rng.next() >> 40) / Float(1 << 24) }
    var times: [Double] = []
    let clock = ContinuousClock()
    for run in 0...runs {
      var values = original
      let start = clock.now
      try group.sumInRankOrder(&values)
      let elapsed = clock.now - start
      let seconds = elapsed.seconds
      let all = try group.allGather(seconds.bitPattern).map(Double.init(bitPattern:))
      if run > 0 { times.append(all.max()!) }
      if run == 0 { try check(values, original: original, group: group) }
    }
    return times.sorted()[times.count / 2]
  }

  /// The all-reduced values equal the rank-ordered sum of every rank's seeded values.
  private func check(_ values: [Float], original: [Float], group: any ProcessGroup) throws {
    let probes = stride(from: 0, to: values.count, by: max(1, values.count / 997))
    var generators = (0..<group.size).map { SplitMix64(seed: UInt64($0) + 1) }
    var next = 0
    var expected = [Float](repeating: 0, count: group.size)
    for i in probes {
      // Advance every rank's generator to value i.
      while next <= i {
        for r in 0..<group.size {
          expected[r] = Float(generators[r].next() >> 40) / Float(1 << 24)
        }
        next += 1
      }
      let sum = expected.dropFirst().reduce(expected[0], +)
      guard values[i] == sum else {
        throw CLIError("the all-reduce is wrong at value \(i): \(values[i]), expected \(sum)")
      }
    }
  }

  private func parsedStepSeconds() throws -> [String: Double] {
    guard let stepSeconds else { return [:] }
    var out: [String: Double] = [:]
    for pair in stepSeconds.split(separator: ",") {
      let parts = pair.split(separator: "=")
      guard parts.count == 2, let seconds = Double(parts[1]), seconds > 0 else {
        throw CLIError("--step-seconds takes model=seconds pairs, such as l0=6.9,l0/distill=3.4")
      }
      let name = parts[0].split(separator: "/")
      guard name.count == 1 || (name.count == 2 && name[1] == "distill") else {
        throw CLIError("--step-seconds: '\(parts[0])' is not a model or model/distill")
      }
      let key = try BenchModel(parsing: String(name[0])).key
      out[key + (name.count == 2 ? "/distill" : "")] = seconds
    }
    return out
  }

  private func integers(_ text: String, option: String) throws -> [Int] {
    try text.split(separator: ",").map {
      guard let n = Int($0), n >= 1 else { throw CLIError("\(option): '\($0)' is not a count") }
      return n
    }
  }

  private func numbers(_ text: String, option: String) throws -> [Double] {
    try text.split(separator: ",").map {
      guard let x = Double($0), x > 0 else { throw CLIError("\(option): '\($0)' is not a rate") }
      return x
    }
  }

  private func formatNumber(_ x: Double) -> String {
    x == x.rounded() ? String(Int(x)) : String(x)
  }

  private func days(_ seconds: Double) -> String {
    seconds >= 86400 * 2
      ? String(format: "%.0f d", seconds / 86400) : String(format: "%.1f h", seconds / 3600)
  }
}
