import Foundation

/// Bounds-checked little-endian reads over a file's bytes.
///
/// Every read returns `nil` past the end instead of trapping, so parsers can turn any
/// out-of-range offset in a damaged file into an error naming the problem.
struct ByteView {
  let buffer: UnsafeRawBufferPointer
  /// The bytes are a read-only private mapping of a file (`mapFile`), whose pages may be
  /// handed back to the kernel once decoded (`releasePages`): the file still holds them.
  var fileBacked = false

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
    return ByteView(
      buffer: UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + length)]),
      fileBacked: fileBacked)
  }

  /// Drops the whole pages inside these bytes from the process's resident memory when they are
  /// a file mapping; a later read faults them in from the file again. Decoding a checkpoint
  /// then holds its tensors, not the tensors plus the file (ViT-H: 2.5 GB less at the peak).
  func releasePages() {
    guard fileBacked, let base = buffer.baseAddress, buffer.count > 0 else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = (Int(bitPattern: base) + page - 1) / page * page
    let end = (Int(bitPattern: base) + buffer.count) / page * page
    guard end > start else { return }
    _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_DONTNEED)
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
  of data: Data, fileBacked: Bool = false, _ body: (ByteView) throws(CheckpointError) -> R
) throws(CheckpointError) -> R {
  let result: Result<R, CheckpointError> = data.withUnsafeBytes { raw in
    do throws(CheckpointError) {
      return .success(try body(ByteView(buffer: raw, fileBacked: fileBacked)))
    } catch {
      return .failure(error)
    }
  }
  return try result.get()
}

/// Maps `url` into memory; pages are read on demand, so opening a large checkpoint is cheap.
/// `fileBacked` says the bytes are a private read-only mapping of the file (see `ByteView`).
func mapFile(_ url: URL) throws(CheckpointError) -> (data: Data, fileBacked: Bool) {
  let fd = open(url.path, O_RDONLY)
  if fd >= 0 {
    defer { close(fd) }
    var info = stat()
    if fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size > 0 {
      let size = Int(info.st_size)
      if let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED {
        let data = Data(
          bytesNoCopy: address, count: size,
          deallocator: .custom { p, n in
            munmap(p, n)
          })
        return (data, true)
      }
    }
  }
  do {
    return (try Data(contentsOf: url, options: .alwaysMapped), false)
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
