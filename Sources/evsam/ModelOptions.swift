import ArgumentParser
import EVCheckpoint
import EVModel
import EVTensor
import Foundation

/// How every subcommand names the architecture and its weights.
struct ModelOptions: ParsableArguments {
  @Option(
    name: .long,
    help: ArgumentHelp(
      "Published model: efficientvit-sam-l0 … efficientvit-sam-xl1 (or l0, l1, l2, xl0, xl1), or SAM's sam-vit-b, sam-vit-l, sam-vit-h.",
      valueName: "name"))
  var model: String?

  @Option(
    name: .long,
    help: ArgumentHelp(
      "Architecture as JSON instead of --model: an EfficientViT-SAM config (backbone, neck, image_size) or the constructor arguments of SAM's ImageEncoderViT (embed_dim, depth, …).",
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
  func resolveArchitecture() throws -> (architecture: Architecture, name: String) {
    if let model {
      let (architecture, name) = try Architecture.named(model)
      return (architecture, name)
    }
    let path = config!
    return (try Architecture.load(json: URL(fileURLWithPath: path)), path)
  }

  /// The EfficientViT-SAM architecture, for the commands that only run EfficientViT-SAM
  /// (training, its benchmarks); `purpose` completes "… is for EfficientViT-SAM models".
  func resolveConfig(for purpose: String) throws -> (config: ModelConfig, name: String) {
    let (architecture, name) = try resolveArchitecture()
    guard case .efficientViT(let config) = architecture else {
      throw CLIError(
        "\(name) is one of SAM's ViT models; \(purpose) is for EfficientViT-SAM models (l0 … xl1, or an EfficientViT-SAM --config)"
      )
    }
    return (config, name)
  }

  /// Loads and strictly verifies the checkpoint; `--checkpoint` is required.
  func loadModel() throws -> (model: SegmentAnythingModel, name: String) {
    let (model, name, _) = try loadModelAndTensors()
    return (model, name)
  }

  /// `loadModel`, also returning the checkpoint's tensors by key.
  func loadModelAndTensors() throws -> (
    model: SegmentAnythingModel, name: String, tensors: [String: Tensor]
  ) {
    let (architecture, name) = try resolveArchitecture()
    guard let checkpoint else {
      throw ValidationError("--checkpoint is required: the weights are brought by the user")
    }
    let loaded = try Self.load(architecture, name: name, checkpoint: checkpoint)
    return (loaded.model, name, loaded.tensors)
  }

  /// The model and tensors of the checkpoint at `path`, checked strictly against
  /// `architecture`; a failure is one line naming the model (`name`).
  static func load(_ architecture: Architecture, name: String, checkpoint path: String) throws
    -> (model: SegmentAnythingModel, tensors: [String: Tensor])
  {
    try checkCheckpointFile(path)
    do {
      return try SegmentAnythingModel.loadWithTensors(
        architecture: architecture, checkpoint: URL(fileURLWithPath: path))
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
