import EVLoadTest
import EVServer
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

extension ServerTests {
  /// `evsam serve` as its own process: the command line, a bounded load with the memory check
  /// (a process of its own, so nothing else in the test run moves its resident memory), and a
  /// graceful shutdown on SIGTERM that finishes the request in flight.
  @Suite struct ServeProcessTests {
    /// The built `evsam`: $EVSAM_BINARY, else beside the test bundle in the build folder.
    static var evsamBinary: URL? {
      if let path = ProcessInfo.processInfo.environment["EVSAM_BINARY"] {
        return URL(fileURLWithPath: path)
      }
      var folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        .deletingLastPathComponent()
      for _ in 0..<4 {
        let candidate = folder.appendingPathComponent("evsam")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        folder = folder.deletingLastPathComponent()
      }
      return nil
    }

    /// A running `evsam serve` and what it printed.
    final class Server: @unchecked Sendable {
      let process = Process()
      let port: Int
      private let log = Log()

      final class Log: Sendable {
        let text = Mutex("")
      }

      init(arguments: [String]) throws {
        let binary = try #require(
          ServeProcessTests.evsamBinary,
          "evsam not found beside the tests: build with swift build --build-tests")
        process.executableURL = binary
        process.arguments = ["serve"] + arguments + ["--port", "0", "--log-level", "info"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        errors.fileHandleForReading.readabilityHandler = { [log] handle in
          let text = String(decoding: handle.availableData, as: UTF8.self)
          log.text.withLock { $0 += text }
        }
        // "serving NAME on http://127.0.0.1:PORT/ …"
        let end = Date().addingTimeInterval(120)
        var found: Int?
        while found == nil && Date() < end && process.isRunning {
          let text = log.text.withLock { $0 }
          if let range = text.range(of: "http://127.0.0.1:") {
            found = Int(text[range.upperBound...].prefix { $0.isNumber })
          } else {
            usleep(50_000)
          }
        }
        guard let found else {
          process.terminate()
          throw TestFailure(
            "evsam serve did not start listening; it printed:\n\(log.text.withLock { $0 })")
        }
        port = found
      }

      var output: String { log.text.withLock { $0 } }

      /// Sends `signal` and waits for the exit status (nil if it did not exit in time).
      func stop(_ signal: Int32, seconds: Double = 60) -> Int32? {
        kill(process.processIdentifier, signal)
        let end = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < end { usleep(50_000) }
        guard !process.isRunning else {
          process.terminate()
          return nil
        }
        return process.terminationStatus
      }

      deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
      }
    }

    static func fixtureModelArguments() throws -> [String] {
      [
        "--config", try Fixtures.url("models/tiny-l.json").path, "--checkpoint",
        try Fixtures.url("models/tiny-l.pt").path,
      ]
    }

    /// A bounded load: no errors, and the server's resident memory stays within the cache bound.
    @Test func loadRunHasNoErrorsAndBoundedMemory() async throws {
      let server = try Server(arguments: try Self.fixtureModelArguments() + ["--cache-mb", "128"])
      defer { _ = server.stop(SIGKILL, seconds: 5) }
      var options = LoadTest.Options()
      options.port = server.port
      options.image = [UInt8](try Data(contentsOf: TestServer.exampleJPEG))
      options.clients = 8
      options.duration = .seconds(4)
      let load = options
      let report = try await Task.detached { try LoadTest.run(load) }.value
      #expect(report.errors == 0, "\(report.errorKinds)")
      #expect(report.requests > options.clients)
      let p50 = try #require(report.latencyMs["p50"])
      let p99 = try #require(report.latencyMs["p99"])
      #expect(p50 > 0 && p99 >= p50)
      #expect(report.cacheLimitBytes == 128 << 20)
      #expect(report.rssBeforeBytes > 0)
      #expect(report.rssGrowthBytes < report.cacheLimitBytes, "\(report.summary)")
    }

    /// SIGTERM while a request runs: the request still gets its answer, then the server exits
    /// cleanly; a later connection is refused.
    @Test func sigtermFinishesTheRequestInFlight() async throws {
      let server = try Server(arguments: try Self.fixtureModelArguments())
      let port = server.port
      let image = [UInt8](try Data(contentsOf: Fixtures.url("images/coffee.png")))
      let control = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
      let upload = try control.request("POST", "/v1/images", body: image)
      #expect(upload.status == 201)
      let id = try JSONDecoder().decode(ImageResponse.self, from: Data(upload.body)).id

      // A job of a few seconds, on its own connection.
      let slow = Task.detached { () throws -> Int in
        let connection = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
        let response = try connection.request(
          "POST", "/v1/images/\(id)/everything", headers: ["Content-Type": "application/json"],
          body: Array(
            #"{"points_per_side": 8, "pred_iou_thresh": 0, "stability_score_thresh": 0}"#.utf8))
        return response.status
      }
      let end = Date().addingTimeInterval(60)
      var running = false
      while !running && Date() < end {
        let health = try LoadTest.health(control, as: HealthResponse.self)
        running = health.queue.running == 1
        if !running { usleep(20_000) }
      }
      #expect(running)
      let status = server.stop(SIGTERM)
      #expect(try await slow.value == 200)
      #expect(status == 0, "evsam serve printed:\n\(server.output)")
      #expect(server.output.contains("stopped"))
      #expect(throws: (any Error).self) {
        try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
      }
    }
  }
}
