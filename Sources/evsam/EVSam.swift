import ArgumentParser
import EVTensor
import Foundation

/// The version `evsam --version` prints.
let evsamVersion = "0.9.0"

@main
struct EVSam: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "evsam",
    abstract: "EfficientViT-SAM: promptable segmentation on the CPU.",
    version: evsamVersion,
    subcommands: [
      InfoCommand.self, EmbedCommand.self, SegmentCommand.self, EverythingCommand.self,
      BenchCommand.self, BenchEverythingCommand.self,
      EvalCommand.self, CocoEvalCommand.self, MergeCommand.self, TrainCommand.self,
      DistillCommand.self,
      BenchTrainCommand.self, BenchAllReduceCommand.self,
    ] + serverCommands)

  static func main() {
    // Before the first large allocation: freed tensors are then reused instead of unmapped
    // and faulted in again by the next op (see HeapPolicy).
    HeapPolicy.retainFreedMemory()
    do {
      var command = try parseAsRoot()
      try command.run()
    } catch let error as NSError where error.domain == NSCocoaErrorDomain {
      // A file error that no command turned into words yet: name the file, not the domain.
      let path =
        error.userInfo[NSFilePathErrorKey] as? String
        ?? (error.userInfo[NSURLErrorKey] as? URL)?.path ?? "a file"
      exit(withError: CLIError(fileProblem(error, path: path)))
    } catch {
      exit(withError: error)
    }
  }
}
