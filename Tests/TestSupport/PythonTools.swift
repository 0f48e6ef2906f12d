import Foundation

/// The project's Python venv of format readers (`.venv-tools`, made by `scripts/install-deps`):
/// tests hand our files to the readers other tools use. A missing venv is a failure, never a
/// skip.
public enum PythonTools {
  public struct Missing: Error, CustomStringConvertible {
    public let path: String
    public var description: String {
      "\(path) not found: run scripts/install-deps (it makes .venv-tools with pycocotools)"
    }
  }

  public struct Failed: Error, CustomStringConvertible {
    public let status: Int32
    public let output: String
    public var description: String { "python exited with \(status): \(output)" }
  }

  public static var python: URL {
    Fixtures.projectRoot.appendingPathComponent(".venv-tools/bin/python3")
  }

  /// Runs `script` with `arguments`; returns its standard output.
  public static func run(_ script: String, arguments: [String] = []) throws -> Data {
    guard FileManager.default.isExecutableFile(atPath: python.path) else {
      throw Missing(path: python.path)
    }
    let process = Process()
    process.executableURL = python
    process.arguments = ["-c", script] + arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw Failed(
        status: process.terminationStatus, output: String(decoding: errors, as: UTF8.self))
    }
    return data
  }
}
