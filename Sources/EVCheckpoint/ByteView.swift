import Foundation

/// Bounds-checked little-endian reads over a file's bytes.
///
/// Every read returns `nil` past the end instead of trapping, so parsers can turn any
/// out-of-range offset in a damaged file into an error naming the problem.
struct ByteView {
  let buffer: UnsafeRawBufferPointer

  var count: Int { buffer.count }

  /// True when `length` bytes starting at `offset` lie inside the buffer (overflow-safe).
  func contains(_ offset: Int, length: Int) -> Bool {
    guard offset >= 0, length >= 0 else { return false }
    let (end, overflow) = offset.addingReportingOverflow(length)
    return !overflow && end <= buffer.count
  }

  func u8(_ offset: Int) -> UInt8? {
    contains(offset, length: 1) ? buffer[offset] : nil
  }

  func u16(_ offset: Int) -> UInt16? {
    guard contains(offset, length: 2) else { return nil }
    return UInt16(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
  }

  func u32(_ offset: Int) -> UInt32? {
    guard contains(offset, length: 4) else { return nil }
    return UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
  }

  func u64(_ offset: Int) -> UInt64? {
    guard contains(offset, length: 8) else { return nil }
    return UInt64(littleEndian: buffer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
  }

  /// A sub-view of `length` bytes at `offset`, or nil when it does not fit.
  func slice(_ offset: Int, length: Int) -> ByteView? {
    guard contains(offset, length: length) else { return nil }
    return ByteView(buffer: UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + length)]))
  }

  /// Whether the bytes at `offset` equal `prefix`.
  func hasBytes(_ prefix: [UInt8], at offset: Int = 0) -> Bool {
    guard contains(offset, length: prefix.count) else { return false }
    for (i, byte) in prefix.enumerated() where buffer[offset + i] != byte { return false }
    return true
  }
}

/// Runs `body` over the bytes of `data` without copying, keeping the typed error.
///
/// `Data.withUnsafeBytes` only rethrows untyped errors, so the result travels out as a `Result`.
func withBytes<R>(
  of data: Data, _ body: (ByteView) throws(CheckpointError) -> R
) throws(CheckpointError) -> R {
  let result: Result<R, CheckpointError> = data.withUnsafeBytes { raw in
    do throws(CheckpointError) {
      return .success(try body(ByteView(buffer: raw)))
    } catch {
      return .failure(error)
    }
  }
  return try result.get()
}

/// Maps `url` into memory; pages are read on demand, so opening a large checkpoint is cheap.
func mapFile(_ url: URL) throws(CheckpointError) -> Data {
  do {
    return try Data(contentsOf: url, options: .alwaysMapped)
  } catch {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
      if isDirectory.boolValue {
        throw .unreadable(file: url.path, reason: "it is a directory, not a checkpoint file")
      }
      throw .unreadable(file: url.path, reason: error.localizedDescription)
    }
    throw .unreadable(file: url.path, reason: "no such file")
  }
}

/// `n` bytes as hex, for messages about unrecognised content.
func hexPrefix(_ bytes: ByteView, _ n: Int) -> String {
  (0..<min(n, bytes.count)).map { String(format: "%02X", bytes.buffer[$0]) }.joined(separator: " ")
}
