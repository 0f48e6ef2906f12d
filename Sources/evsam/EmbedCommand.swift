import ArgumentParser
import EVCheckpoint
import EVImage
import EVModel
import EVPredictor
import Foundation

struct EmbedCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "embed",
    abstract: "Encode an image and write its embedding (image_embeddings, 1×256×64×64).")

  @OptionGroup var modelOptions: ModelOptions

  @Argument(help: "PNG or JPEG image.")
  var image: String

  @Option(name: .shortAndLong, help: ArgumentHelp("Output safetensors file.", valueName: "file"))
  var output: String

  @OptionGroup var quietOption: QuietOption

  func run() throws {
    let picture = try RGBImage(contentsOf: URL(fileURLWithPath: image))
    try checkWritableFile(output)
    let (model, name) = try modelOptions.loadModel()
    let clock = ContinuousClock()
    let start = clock.now
    let input = preprocess(picture, targetSize: model.config.imageSize).tensor
    let embedding = model.imageEncoder(input)
    let elapsed = clock.now - start
    do {
      try SafeTensors.write(
        ["image_embeddings": embedding],
        metadata: [
          "model": name, "original_size": "\(picture.height),\(picture.width)",
          "input_size": "\(model.config.imageSize)",
        ],
        to: URL(fileURLWithPath: output))
    } catch {
      throw CLIError("cannot write " + fileProblem(error, path: output))
    }
    if quietOption.quiet { return }
    printErr(
      "encoded \(picture.width)×\(picture.height) with \(name) in \(formatDuration(elapsed)) → \(output)"
    )
  }
}

func printErr(_ message: String) {
  FileHandle.standardError.write(Data((message + "\n").utf8))
}

func formatDuration(_ d: Duration) -> String {
  let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
  return seconds < 1 ? String(format: "%.1f ms", seconds * 1000) : String(format: "%.2f s", seconds)
}
