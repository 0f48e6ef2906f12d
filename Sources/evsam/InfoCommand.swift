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

  func run() throws {
    let (config, name) = try modelOptions.resolveConfig()
    let declared = EfficientViTSAM.declaredParameters(config: config)
    let encoder = ImageEncoder(config: config, WeightReader.declaringOnly().root)

    print("model            \(name)")
    print(
      "encoder input    \(config.imageSize)×\(config.imageSize) (prompts and masks in the 1024 frame)"
    )
    print("backbone widths  \(config.backbone.widthList.map(String.init).joined(separator: ", "))")
    print("backbone depths  \(config.backbone.depthList.map(String.init).joined(separator: ", "))")
    print("backbone blocks  \(config.backbone.blockList.map(\.rawValue).joined(separator: ", "))")
    print(
      "neck             \(config.neck.fidList.joined(separator: "+")) → \(config.neck.headDepth)×\(config.neck.middleOp.rawValue) at width \(config.neck.headWidth)"
    )
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
    print("image encoder multiply-accumulates at \(config.imageSize)×\(config.imageSize)")
    for part in encoder.multiplyAccumulatesByPart() {
      print(
        "  \(pad(part.part, 16)) \(pad(String(format: "%.3f G", Double(part.macs) / 1e9), 13, right: true))"
      )
    }
    let total = Double(encoder.multiplyAccumulates) / 1e9
    var line = "  \(pad("total", 16)) \(pad(String(format: "%.3f G", total), 13, right: true))"
    if let model = modelOptions.model, let variant = Variant(name: model),
      let paper = Self.paperGMACs[variant]
    {
      line += String(format: "   (paper: %.0f G)", paper)
    }
    print(line)

    guard let checkpoint = modelOptions.checkpoint else { return }
    print("")
    let url = URL(fileURLWithPath: checkpoint)
    do {
      try checkCheckpointFile(checkpoint)
      let tensors = try Checkpoint.load(contentsOf: url, expecting: declared.declared)
      let reader = WeightReader(tensors, origin: url.path)
      _ = EfficientViTSAM(config: config, reader: reader)
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
