import ArgumentParser
import EVTensor

@main
struct EVSam: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "evsam",
    abstract: "EfficientViT-SAM: promptable segmentation on the CPU.",
    subcommands: [
      InfoCommand.self, EmbedCommand.self, SegmentCommand.self, EverythingCommand.self,
      BenchCommand.self, BenchEverythingCommand.self,
      EvalCommand.self, CocoEvalCommand.self, MergeCommand.self,
    ] + serverCommands)

  static func main() {
    // Before the first large allocation: freed tensors are then reused instead of unmapped
    // and faulted in again by the next op (see HeapPolicy).
    HeapPolicy.retainFreedMemory()
    main(nil)
  }
}
