import ArgumentParser
import EVCheckpoint
import EVModel
import Foundation

struct InfoCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "info",
    abstract:
      "Print a model's architecture summary, parameter counts and MACs; verify a checkpoint.")

  @OptionGroup var modelOptions: ModelOptions

  /// Encoder GMACs reported in the EfficientViT-SAM paper (Table 1), for comparison.
  static let paperGMACs: [Variant: Double] = [.l0: 35, .l1: 49, .l2: 69, .xl0: 185, .xl1: 322]

  /// Encoder GMACs reported for SAM's ViTs (ViT-H: 2973 G in the EfficientViT-SAM paper).
  static let samPaperGMACs: [SamViTVariant: Double] = [.h: 2973]

  func run() throws {
    let (architecture, name) = try modelOptions.resolveArchitecture()
    let declared = SegmentAnythingModel.declaredParameters(architecture: architecture)
    let encoder: any ImageEncoding
    let side = architecture.encoderInputSize

    print("model            \(name)")
    print("encoder input    \(side)×\(side) (prompts and masks in the 1024 frame)")
    switch architecture {
    case .efficientViT(let config):
      encoder = ImageEncoder(config: config, WeightReader.declaringOnly().root)
      let b = config.backbone
      print("backbone widths  \(b.widthList.map(String.init).joined(separator: ", "))")
      print("backbone depths  \(b.depthList.map(String.init).joined(separator: ", "))")
      print("backbone blocks  \(b.blockList.map(\.rawValue).joined(separator: ", "))")
      print(
        "neck             \(config.neck.fidList.joined(separator: "+")) → \(config.neck.headDepth)×\(config.neck.middleOp.rawValue) at width \(config.neck.headWidth)"
      )
    case .samViT(let config):
      encoder = SamViTEncoder(config: config, WeightReader.declaringOnly().root)
      let global = (0..<config.depth).filter { config.isGlobal(block: $0) }
      print(
        "ViT              \(config.depth) blocks × \(config.embedDim) channels, \(config.numHeads) heads, MLP \(config.mlpDim)"
      )
      print(
        "attention        \(config.windowSize)×\(config.windowSize) windows; global in blocks \(global.map(String.init).joined(separator: ", "))"
          + (config.useRelativePositions ? "; relative positions" : ""))
      print(
        "patches          \(config.patchSize)×\(config.patchSize) px, pixels normalised on the 0–255 scale"
      )
    }
    print("")
    print("parameters")
    let parts = [
      ("image encoder", "image_encoder."), ("prompt encoder", "prompt_encoder."),
      ("mask decoder", "mask_decoder."),
    ]
    for (label, prefix) in parts {
      print(
        "  \(pad(label, 16)) \(pad(grouped(declared.parameterCount(prefix: prefix)), 13, right: true))"
      )
    }
    print("  \(pad("total", 16)) \(pad(grouped(declared.parameterCount()), 13, right: true))")
    print("  (\(declared.declared.count) checkpoint keys, buffers included)")
    print("")
    print("image encoder multiply-accumulates at \(side)×\(side)")
    for part in encoder.multiplyAccumulatesByPart() {
      print(
        "  \(pad(part.part, 16)) \(pad(String(format: "%.3f G", Double(part.macs) / 1e9), 13, right: true))"
      )
    }
    let total = Double(encoder.multiplyAccumulates) / 1e9
    var line = "  \(pad("total", 16)) \(pad(String(format: "%.3f G", total), 13, right: true))"
    let paper = modelOptions.model.flatMap { name in
      Variant(name: name).flatMap { Self.paperGMACs[$0] }
        ?? SamViTVariant(name: name).flatMap { Self.samPaperGMACs[$0] }
    }
    if let paper { line += String(format: "   (paper: %.0f G)", paper) }
    print(line)

    guard let checkpoint = modelOptions.checkpoint else { return }
    print("")
    let url = URL(fileURLWithPath: checkpoint)
    do {
      try checkCheckpointFile(checkpoint)
      let tensors = try Checkpoint.load(contentsOf: url, expecting: declared.declared)
      let reader = WeightReader(tensors, origin: url.path)
      _ = SegmentAnythingModel(architecture: architecture, reader: reader)
      try reader.finish()
      print("checkpoint       \(checkpoint): OK — all \(tensors.count) keys match \(name)")
    } catch {
      // The summary above is the result; why the checkpoint failed is an error, on stderr.
      print("checkpoint       \(checkpoint): FAILED")
      printError("error: \(error)")
      throw ExitCode.failure
    }
  }
}

func grouped(_ n: Int) -> String {
  let digits = Array(String(n))
  var out = ""
  for (i, d) in digits.enumerated() {
    if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
    out.append(d)
  }
  return out
}

func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
  let fill = String(repeating: " ", count: max(0, width - s.count))
  return right ? fill + s : s + fill
}
