// Built only where the package links EVServer (Hummingbird); see ServeCommand.swift.
#if canImport(EVServer)
  import ArgumentParser
  import EVLoadTest
  import EVServer
  import Foundation

  struct LoadTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "loadtest",
      abstract: "Load a running `evsam serve` on this machine with segment requests.",
      discussion: """
        Uploads the image, then CLIENTS connections each send segment requests with random clicks, \
        one after another, for the given time. Prints the latency percentiles, the errors and the \
        server's resident memory before and after (from /v1/health). Only loopback addresses are \
        accepted. Exits with status 1 if any request failed or memory grew past --max-rss-growth-mb.
        """)

    @Option(help: "Server address (loopback only).")
    var host = "127.0.0.1"

    @Option(help: "Server port.")
    var port = 8080

    @Option(help: ArgumentHelp("PNG or JPEG to upload and click on.", valueName: "path"))
    var image: String

    @Option(help: "Concurrent connections (1…256).")
    var clients = 16

    @Option(help: ArgumentHelp("How long to send requests (at most 600).", valueName: "seconds"))
    var duration: Double = 30

    @Flag(help: "Ask for one mask per click instead of three.")
    var singleMask = false

    @Option(help: ArgumentHelp("Fail when resident memory grows more than this.", valueName: "MiB"))
    var maxRssGrowthMb: Double?

    @Option(help: ArgumentHelp("Also write the report as JSON.", valueName: "file.json"))
    var json: String?

    func run() throws {
      var options = LoadTest.Options()
      options.host = host
      options.port = port
      do {
        options.image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
      } catch {
        throw CLIError("cannot read \(image): \(error.localizedDescription)")
      }
      options.clients = clients
      options.duration = .milliseconds(Int64((duration * 1000).rounded()))
      options.multimask = !singleMask
      let problems = options.problems()
      guard problems.isEmpty else { throw ValidationError(problems.joined(separator: "; ")) }

      let report: LoadTest.Report
      do {
        report = try LoadTest.run(options)
      } catch {
        throw CLIError("\(error)")
      }
      print(report.summary)
      if let json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: json), options: .atomic)
      }
      if report.errors > 0 { throw CLIError("\(report.errors) request(s) failed") }
      if let limit = maxRssGrowthMb, Double(report.rssGrowthBytes) > limit * 1_048_576 {
        throw CLIError(
          "resident memory grew by \(report.rssGrowthBytes >> 20) MiB, more than the allowed \(limit) MiB"
        )
      }
    }
  }
#endif
