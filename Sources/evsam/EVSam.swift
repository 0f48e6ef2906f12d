import ArgumentParser

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
}
