import Foundation

/// One line for a failed file operation on `path`: what the operating system said, in words,
/// instead of Foundation's `NSCocoaErrorDomain Code=516`.
func fileProblem(_ error: any Error, path: String) -> String {
  let ns = error as NSError
  var code = ns.domain == NSPOSIXErrorDomain ? Int32(ns.code) : 0
  if code == 0, let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError,
    underlying.domain == NSPOSIXErrorDomain
  {
    code = Int32(underlying.code)
  }
  if code != 0 { return "\(path): \(String(cString: strerror(code)))" }
  if let cocoa = error as? CocoaError {
    switch cocoa.code {
    case .fileWriteFileExists: return "\(path): a file is in the way (a folder is needed there)"
    case .fileWriteNoPermission, .fileReadNoPermission: return "\(path): permission denied"
    case .fileWriteOutOfSpace: return "\(path): no space left on the device"
    case .fileWriteVolumeReadOnly: return "\(path): the file system is read-only"
    case .fileNoSuchFile, .fileReadNoSuchFile: return "\(path): no such file or folder"
    default: break
    }
  }
  return "\(path): \(ns.localizedDescription)"
}

/// Creates `url` and its parents, with a one-line error naming the folder.
func createFolder(_ url: URL) throws {
  var isDirectory: ObjCBool = false
  if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
    guard isDirectory.boolValue else {
      throw CLIError("\(url.path) is a file; a folder is needed there")
    }
    return
  }
  do {
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  } catch {
    throw CLIError("cannot create the folder " + fileProblem(error, path: url.path))
  }
}

/// Writes `data` to `url` atomically (a temporary file renamed into place), with a one-line
/// error naming the file.
func writeFile(_ data: Data, to url: URL) throws {
  do {
    try data.write(to: url, options: .atomic)
  } catch {
    throw CLIError("cannot write " + fileProblem(error, path: url.path))
  }
}

/// A folder of results that appears whole or not at all: files are written into a staging
/// folder beside the destination, which then replaces it. A folder left by an earlier run of
/// the same command is replaced entirely (none of its stale files stay beside the new ones);
/// a folder holding anything else is refused before any work starts.
struct StagedFolder {
  let destination: URL
  /// Which names in an existing destination this command could have written.
  let ownsName: (String) -> Bool

  /// Checks that the destination can be replaced; call before the expensive work.
  func preflight() throws {
    let path = destination.path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      try checkParentWritable()
      return
    }
    guard isDirectory.boolValue else {
      throw CLIError("\(path) is a file; -o takes a folder")
    }
    let names: [String]
    do {
      names = try FileManager.default.contentsOfDirectory(atPath: path)
    } catch {
      throw CLIError("cannot read " + fileProblem(error, path: path))
    }
    if let foreign = names.sorted().first(where: { !ownsName($0) }) {
      throw CLIError(
        "\(path) holds files this command did not write (e.g. \(foreign)); give a new or empty folder with -o"
      )
    }
    try checkParentWritable()
  }

  private func checkParentWritable() throws {
    var parent = destination.deletingLastPathComponent()
    // The nearest existing ancestor is where the staging folder's parents will be made.
    while !FileManager.default.fileExists(atPath: parent.path), parent.path != "/" {
      parent = parent.deletingLastPathComponent()
    }
    guard FileManager.default.isWritableFile(atPath: parent.path) else {
      throw CLIError("cannot write into \(parent.path): permission denied")
    }
  }

  /// Writes `files` into a staging folder, runs `alsoWrite` (other outputs that must succeed
  /// too), then moves the folder into place. On any failure nothing is left behind.
  func commit(_ files: [(name: String, data: Data)], alsoWrite: () throws -> Void = {}) throws {
    let parent = destination.deletingLastPathComponent()
    try createFolder(parent)
    let pid = ProcessInfo.processInfo.processIdentifier
    let staging = parent.appendingPathComponent(".\(destination.lastPathComponent).partial-\(pid)")
    let old = parent.appendingPathComponent(".\(destination.lastPathComponent).old-\(pid)")
    try? FileManager.default.removeItem(at: staging)
    defer { try? FileManager.default.removeItem(at: staging) }
    try createFolder(staging)
    for file in files {
      try writeFile(file.data, to: staging.appendingPathComponent(file.name))
    }
    try alsoWrite()
    let fm = FileManager.default
    do {
      if fm.fileExists(atPath: destination.path) {
        try? fm.removeItem(at: old)
        try fm.moveItem(at: destination, to: old)
      }
      try fm.moveItem(at: staging, to: destination)
    } catch {
      if !fm.fileExists(atPath: destination.path), fm.fileExists(atPath: old.path) {
        try? fm.moveItem(at: old, to: destination)
      }
      throw CLIError(
        "cannot move the results into place: " + fileProblem(error, path: destination.path))
    }
    try? fm.removeItem(at: old)
  }
}
