import ArgumentParser
import EVCheckpoint
import EVModel
import Foundation

/// How every subcommand names the architecture and its weights.
struct ModelOptions: ParsableArguments {
  @Option(
    name: .long,
    help: ArgumentHelp(
      "Published variant: efficientvit-sam-l0 … efficientvit-sam-xl1 (or l0, l1, l2, xl0, xl1).",
      valueName: "name"))
  var model: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Architecture as JSON (the form of the tiny fixture models), instead of --model.",
      valueName: "file.json"))
  var config: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Official .pt checkpoint (optionally {\"state_dict\": …}) or .safetensors file.",
      valueName: "path"))
  var checkpoint: String?

  func validate() throws {
    switch (model, config) {
    case (nil, nil):
      throw ValidationError("give the architecture with --model NAME or --config FILE.json")
    case (.some, .some): throw ValidationError("give either --model or --config, not both")
    default: break
    }
  }

  /// The architecture and a display name for it.
  func resolveConfig() throws -> (config: ModelConfig, name: String) {
    if let model {
      let variant = try Variant.parse(model)
      return (ModelConfig.preset(variant), variant.modelName)
    }
    let path = config!
    return (try ModelConfig.load(json: URL(fileURLWithPath: path)), path)
  }

  /// Loads and strictly verifies the checkpoint; `--checkpoint` is required.
  func loadModel() throws -> (model: EfficientViTSAM, name: String) {
    let (config, name) = try resolveConfig()
    guard let checkpoint else {
      throw ValidationError("--checkpoint is required: the weights are brought by the user")
    }
    try checkCheckpointFile(checkpoint)
    let url = URL(fileURLWithPath: checkpoint)
    do {
      return (try EfficientViTSAM.load(config: config, checkpoint: url), name)
    } catch {
      throw CLIError(summarize(error, modelName: name))
    }
  }
}

/// A checkpoint must be a readable regular file: a folder, /dev/null or a pipe would otherwise
/// reach the parsers and fail with a message about something else ("permission", "header").
func checkCheckpointFile(_ path: String) throws {
  var info = stat()
  guard stat(path, &info) == 0 else {
    throw CLIError("checkpoint \(path): \(String(cString: strerror(errno)))")
  }
  guard info.st_mode & S_IFMT == S_IFREG else {
    let kind = info.st_mode & S_IFMT == S_IFDIR ? "a folder" : "not a regular file"
    throw CLIError("checkpoint \(path) is \(kind); give a .pt or .safetensors file")
  }
  guard access(path, R_OK) == 0 else {
    throw CLIError("checkpoint \(path): permission denied")
  }
  guard info.st_size > 0 else { throw CLIError("checkpoint \(path) is empty") }
}

/// A one-line failure: printed as `error: <message>`, exit code 1.
struct CLIError: Error, CustomStringConvertible {
  let description: String
  init(_ message: String) { description = message }
}

/// A verification failure lists every problem; on the command line one line says what is
/// wrong and `evsam info` prints the full list.
func summarize(_ error: CheckpointError, modelName: String) -> String {
  guard case .verificationFailed(let file, let problems) = error else { return error.description }
  let first = problems.prefix(2).map(\.description).joined(separator: "; ")
  return
    "\(file) does not hold the weights of \(modelName) (\(problems.count) problems, e.g. \(first)); "
    + "run `evsam info` with the same --model/--config and --checkpoint for the full list"
}
