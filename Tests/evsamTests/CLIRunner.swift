import Foundation
import TestSupport

/// Runs the built `evsam` binary, which SwiftPM places beside the test bundle.
struct CLIRunner {
  struct Result {
    let status: Int32
    let stdout: String
    let stderr: String
  }

  static var binary: URL {
    get throws {
      var candidates: [URL] = []
      if let exe = Bundle.main.executableURL { candidates.append(exe.deletingLastPathComponent()) }
      candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
      candidates.append(Bundle.main.bundleURL)
      for dir in candidates {
        let url = dir.appendingPathComponent("evsam")
        if FileManager.default.isExecutableFile(atPath: url.path) { return url }
      }
      throw NotFound(searched: candidates.map(\.path))
    }
  }

  struct NotFound: Error, CustomStringConvertible {
    let searched: [String]
    var description: String { "evsam binary not found in \(searched)" }
  }

  /// `environment`: variables set for the child on top of this process's (scheduler variables
  /// of the parent, such as a CI runner's, are removed first so they cannot leak into a test).
  static func run(_ arguments: [String], environment: [String: String]? = nil) throws -> Result {
    let process = Process()
    process.executableURL = try binary
    process.arguments = arguments
    if let environment {
      let schedulerPrefixes = ["SLURM_", "OMPI_", "JOB_COMPLETION_INDEX", "EVSAM_SHARD_COUNT"]
      var merged = ProcessInfo.processInfo.environment.filter { key, _ in
        !schedulerPrefixes.contains { key.hasPrefix($0) }
      }
      merged.merge(environment) { _, new in new }
      process.environment = merged
    }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read before waiting: a full pipe would otherwise block the child.
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Result(
      status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
      stderr: String(decoding: errData, as: UTF8.self))
  }
}

func temporaryDirectory() throws -> URL {
  let url = FileManager.default.temporaryDirectory.appendingPathComponent(
    "evsam-cli-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  return url
}

/// `--config` and `--checkpoint` of a fixture model.
func fixtureModelArguments(_ name: String = "tiny-l") throws -> [String] {
  let models = try Fixtures.url("models")
  return [
    "--config", models.appendingPathComponent(name + ".json").path,
    "--checkpoint", models.appendingPathComponent(name + ".pt").path,
  ]
}
