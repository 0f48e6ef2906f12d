import ArgumentParser
import EVCheckpoint
import EVEvaluation
import EVImage
import EVModel
import EVPredictor
import EVTensor
import EVTraining
import Foundation

struct EmbedCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "embed",
    abstract: "Encode an image, or a folder of images, and write the embeddings (1×256×64×64).",
    discussion: """
      With an image, OUTPUT is one safetensors file: image_embeddings, with the image's size, \
      the model, a hash of its encoder's weights and its preprocessing in the metadata, which \
      `evsam segment --embedding OUTPUT` reads instead of encoding the image again. With a \
      folder, OUTPUT is a folder of teacher embeddings for `evsam distill \
      --teacher-embeddings`: teacher.json (the model, a hash of its encoder's weights, its \
      preprocessing) and <image file name>.safetensors per image. Such a folder only ever \
      holds one teacher's embeddings; images already done are skipped, so an interrupted run \
      continues where it stopped, and --shard I/N lets N processes (or machines sharing the \
      folder) split the images: process I takes the images at positions I, I+N, I+2N, … of \
      the sorted list.
      """)

  @OptionGroup var modelOptions: ModelOptions

  @Argument(help: "PNG or JPEG image, or a folder of them.")
  var image: String

  @Option(
    name: .shortAndLong,
    help: ArgumentHelp(
      "Output safetensors file (a folder for a folder of images).", valueName: "path"))
  var output: String

  @OptionGroup(title: "Shards (with a folder)") var shardOptions: ShardOptions

  @OptionGroup var quietOption: QuietOption

  func run() throws {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: image, isDirectory: &isDirectory),
      isDirectory.boolValue
    {
      try embedFolder()
      return
    }
    if shardOptions.shard != nil { throw CLIError("--shard goes with a folder of images") }
    let picture = try RGBImage(contentsOf: URL(fileURLWithPath: image))
    try checkWritableFile(output)
    let (model, name, tensors) = try modelOptions.loadModelAndTensors()
    let clock = ContinuousClock()
    let start = clock.now
    let embedding = model.imageEncoder(model.encoderInput(picture))
    let elapsed = clock.now - start
    try EmbeddingFile(
      embedding: embedding, originalSize: (picture.height, picture.width),
      encoder: EncoderIdentity(model: model, name: name, tensors: tensors)
    ).write(to: output)
    if quietOption.quiet { return }
    printErr(
      "encoded \(picture.width)×\(picture.height) with \(name) in \(formatDuration(elapsed)) → \(output)"
    )
  }
}

extension EmbedCommand {
  /// Every image of the folder (this shard's share) not yet in the output folder.
  private func embedFolder() throws {
    let folder = URL(fileURLWithPath: image)
    let all: [URL]
    do {
      all = try imageFiles(in: folder)
    } catch {
      throw CLIError("cannot list " + fileProblem(error, path: folder.path))
    }
    guard !all.isEmpty else { throw CLIError("\(folder.path) holds no PNG or JPEG images") }
    let (shard, source) = try shardOptions.resolve()
    if let source, !quietOption.quiet { printErr("shard \(shard) from \(source)") }
    let mine = shard.take(all)
    let (model, name, tensors) = try modelOptions.loadModelAndTensors()
    let identity = EncoderIdentity(model: model, name: name, tensors: tensors)
    let cache: EmbeddingFolder
    do {
      cache = try EmbeddingFolder(preparing: URL(fileURLWithPath: output), for: identity)
    } catch {
      throw CLIError(error.description)
    }
    let todo = mine.filter { !cache.contains($0) }
    let progress = ProgressLine(enabled: !quietOption.quiet)
    let clock = ContinuousClock()
    let start = clock.now
    let interrupt = InterruptFlag.install(
      firstNotice: "stopping after this image (the ones done are kept; run again to continue)")
    defer { interrupt.uninstall() }
    for (i, url) in todo.enumerated() {
      do {
        let picture = try readImage(url)
        let embedding = model.imageEncoder(model.encoderInput(picture))
        try cache.write(embedding, for: url, originalSize: (picture.height, picture.width))
      } catch {
        throw CLIError(error.description)
      }
      let elapsed = clock.now - start
      let seconds = elapsed.seconds
      let per = seconds / Double(i + 1)
      if interrupt.isRaised {
        progress.finish(
          "interrupted after \(i + 1) of \(todo.count) images; run the same command to continue",
          isError: true)
        throw ExitCode(130)
      }
      progress.update(
        String(
          format: "embedded %d/%d (%@)  %.1f s/image  ETA %.0f s", i + 1, todo.count,
          url.lastPathComponent, per, per * Double(todo.count - i - 1)))
    }
    progress.finish(
      "\(name): \(todo.count) images embedded, \(mine.count - todo.count) already there"
        + (shard.count > 1 ? " (shard \(shard.index)/\(shard.count) of \(all.count) images)" : "")
        + " → \(output)")
  }
}

func printErr(_ message: String) {
  FileHandle.standardError.write(Data((message + "\n").utf8))
}

func formatDuration(_ d: Duration) -> String {
  let seconds = d.seconds
  return seconds < 1 ? String(format: "%.1f ms", seconds * 1000) : String(format: "%.2f s", seconds)
}
