import Foundation

/// An encoder in a process of its own that runs one timed pass per request: evsam's
/// (`evsam bench --serve-encoder`) or the reference's (`scripts/reference-bench/run.sh --serve`).
///
/// Protocol, one line each way: the server prints `evsam-bench ready` once warmed up, answers
/// each `run` with `evsam-bench time SECONDS` and each `quit` with `evsam-bench peak_rss_mb MB`
/// before exiting. Other output lines (library warnings) are ignored.
final class EncoderServer {
  let name: String
  private let process = Process()
  private let input = Pipe()
  private let output = Pipe()
  private var buffer = Data()

  init(name: String, executable: URL, arguments: [String]) throws {
    self.name = name
    process.executableURL = executable
    process.arguments = arguments
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    _ = try expect("ready")
  }

  /// Seconds of one encoder pass, as the server measured it.
  func run() throws -> Double {
    try send("run")
    let reply = try expect("time")
    guard let value = Double(reply) else {
      throw CLIError("\(name) encoder server: unreadable time \"\(reply)\"")
    }
    return value
  }

  /// Stops the server; returns its peak resident memory in MB if it reported one.
  @discardableResult
  func quit() -> Double? {
    guard process.isRunning else { return nil }
    let peak = (try? send("quit")).flatMap { (try? expect("peak_rss_mb")).flatMap(Double.init) }
    try? input.fileHandleForWriting.close()
    process.waitUntilExit()
    return peak
  }

  deinit {
    if process.isRunning { process.terminate() }
  }

  private func send(_ line: String) throws {
    try input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
  }

  /// Reads lines until one reads `evsam-bench <keyword> …`; returns the rest of that line.
  private func expect(_ keyword: String) throws -> String {
    let prefix = "evsam-bench \(keyword)"
    while true {
      while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
        let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
        buffer.removeSubrange(buffer.startIndex...newline)
        if line.hasPrefix(prefix) {
          return line.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces)
        }
      }
      let chunk = output.fileHandleForReading.availableData
      if chunk.isEmpty {
        process.waitUntilExit()
        throw CLIError(
          "\(name) encoder server exited (status \(process.terminationStatus)) before \"\(keyword)\""
        )
      }
      buffer.append(chunk)
    }
  }
}

/// Times the encoders of several servers run by run in turn: round r starts with server
/// r mod n, so no side always follows the same other side, and each pass waits `pauseSeconds` first so
/// that the previous side's worker threads (OpenMP's and ONNX Runtime's spin before sleeping)
/// are idle. A machine whose speed drifts over minutes then slows every side alike.
func interleavedEncoderTimes(
  _ servers: [EncoderServer], rounds: Int, pauseSeconds: Double = 0.25,
  progress: ((String) -> Void)? = nil
) throws -> [[Double]] {
  var times = [[Double]](repeating: [], count: servers.count)
  for round in 0..<rounds {
    for k in 0..<servers.count {
      let s = (round + k) % servers.count
      Thread.sleep(forTimeInterval: pauseSeconds)
      times[s].append(try servers[s].run())
    }
    let summary = zip(servers, times).map { "\($0.name) \(String(format: "%.3f", $1[round])) s" }
    progress?("  round \(round + 1)/\(rounds): " + summary.joined(separator: ", "))
  }
  return times
}
