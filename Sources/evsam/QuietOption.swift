import ArgumentParser

/// The one switch for progress and status lines, shared by every command that prints them.
/// Errors and results (stdout) are not affected.
struct QuietOption: ParsableArguments {
  @Flag(name: .shortAndLong, help: "No progress or status lines on stderr.")
  var quiet = false
}
