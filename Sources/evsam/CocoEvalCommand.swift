import ArgumentParser
import EVEvaluation
import Foundation

struct CocoEvalCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "coco-eval",
    abstract: "Score detection / segmentation results against COCO or LVIS annotations.",
    discussion: """
      Computes what pycocotools' COCOeval prints (the 12 standard numbers, same order and format), \
      or with --lvis what the LVIS API's LVISEval prints (federated evaluation: AP, AP50, AP75, \
      APs, APm, APl, APr, APc, APf, AR@300 …). RESULTS is a COCO results list \
      ([{"image_id", "category_id", "score", "bbox" and/or "segmentation"}]) or an \
      `evsam eval --prompt detector` report.
      """)

  @Option(
    help: ArgumentHelp("Ground-truth annotation file (COCO or LVIS JSON).", valueName: "file"))
  var annotations: String

  @Option(help: ArgumentHelp("Results to score.", valueName: "file"))
  var results: String

  @Option(help: ArgumentHelp("segm (masks) or bbox (boxes).", valueName: "type"))
  var iouType: IoUTypeArgument = .segm

  @Option(
    help: ArgumentHelp(
      "Detections per image considered: three values for COCO (default 1,10,100), one for LVIS (default 300).",
      valueName: "list"))
  var maxDets: String?

  @Flag(help: "LVIS federated evaluation (lvis API semantics) instead of COCOeval.")
  var lvis = false

  @Option(help: ArgumentHelp("Also write the numbers as JSON.", valueName: "file"))
  var json: String?

  func run() throws {
    let maxDets = try parseMaxDets()
    let groundTruth = try COCODataset.load(contentsOf: URL(fileURLWithPath: annotations))
    let resultList = try ResultsFile.load(contentsOf: URL(fileURLWithPath: results))
    if !lvis && groundTruth.looksLikeLVIS {
      printError(
        "note: \(annotations) looks like an LVIS file; pass --lvis for LVIS' federated evaluation")
    }
    let data: Data
    if lvis {
      let summary = try LVISEvaluator.evaluate(
        groundTruth: groundTruth, results: resultList, iouType: iouType.value,
        maxDetections: maxDets.first ?? 300)
      for w in summary.warnings { printError("warning: \(w)") }
      for line in summary.lines { print(line) }
      data = try encodeJSON(summary)
    } else {
      var parameters = COCOEvalParameters(iouType: iouType.value)
      if !maxDets.isEmpty { parameters.maxDetections = maxDets }
      let summary = try COCOEvaluator.evaluate(
        groundTruth: groundTruth, results: resultList, parameters: parameters)
      for w in summary.warnings { printError("warning: \(w)") }
      for line in summary.lines { print(line) }
      data = try encodeJSON(summary)
    }
    if let json {
      do {
        try data.write(to: URL(fileURLWithPath: json), options: .atomic)
      } catch {
        throw CLIError("cannot write \(json): \(error.localizedDescription)")
      }
    }
  }

  private func parseMaxDets() throws -> [Int] {
    guard let maxDets else { return [] }
    let parts = maxDets.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else {
      throw ValidationError(
        "--max-dets must be positive integers separated by commas, e.g. 1,10,100")
    }
    let values = parts.map { $0! }
    if lvis {
      guard values.count == 1 else {
        throw ValidationError("with --lvis give one --max-dets value (e.g. 300)")
      }
    } else {
      guard values.count >= 3 else {
        throw ValidationError(
          "COCOeval needs three --max-dets values (e.g. 1,10,100); its summary reads three")
      }
    }
    return values
  }
}

enum IoUTypeArgument: String, ExpressibleByArgument, CaseIterable {
  case segm
  case bbox

  var value: IoUType { self == .segm ? .segm : .bbox }
}

func encodeJSON<T: Encodable>(_ value: T) throws -> Data {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
  return try encoder.encode(value)
}

func printError(_ line: String) {
  FileHandle.standardError.write(Data((line + "\n").utf8))
}
