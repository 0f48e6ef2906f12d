import ArgumentParser
import EVEvaluation
import Foundation

struct MergeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "merge",
    abstract: "Combine the reports of `evsam eval --shard I/N` runs into one, with its metrics.",
    discussion: """
      All N shards of one run are needed (same model, data and options). The merged report equals \
      what one unsharded run writes; detector runs are scored with (LVIS-)COCOeval here.
      """)

  @Argument(
    help: ArgumentHelp("Shard reports written by `evsam eval --shard`.", valueName: "report.json"))
  var reports: [String]

  @Option(
    help: ArgumentHelp(
      "Annotation file for detector runs (default: the path recorded in the reports).",
      valueName: "file"))
  var annotations: String?

  @Option(name: .shortAndLong, help: ArgumentHelp("Merged report to write.", valueName: "file"))
  var output: String

  func validate() throws {
    guard !reports.isEmpty else { throw ValidationError("give the shard reports to merge") }
  }

  func run() throws {
    let loaded = try reports.map { try ZeroShotReport.load(contentsOf: URL(fileURLWithPath: $0)) }
    var groundTruth: COCODataset?
    if loaded[0].configuration.prompt == .detector {
      let path = annotations ?? loaded[0].configuration.annotations
      groundTruth = try COCODataset.load(contentsOf: URL(fileURLWithPath: path))
    }
    let merged = try ShardMerger.merge(loaded, groundTruth: groundTruth)
    try merged.write(to: URL(fileURLWithPath: output))
    for w in merged.warnings { printError("warning: \(w)") }
    for line in merged.summaryLines { print(line) }
  }
}
