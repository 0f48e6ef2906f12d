/// The central directory of a zip archive, enough to read PyTorch checkpoints: stored (not
/// compressed) entries, zip64 sizes and offsets, single disk.
///
/// Sizes, offsets and checksums come from the central directory only: PyTorch writes local
/// headers with zero sizes and a trailing data descriptor (general-purpose flag bit 3).
struct ZipArchive {
  struct Entry {
    let name: String
    let method: UInt16
    let flags: UInt16
    let crc32: UInt32
    let compressedSize: Int
    let uncompressedSize: Int
    let localHeaderOffset: Int
  }

  let bytes: ByteView
  let file: String
  /// Entries in central-directory order.
  let entries: [Entry]
  private let index: [String: Int]
  /// Where the central directory starts; entry data must end before it.
  private let directoryOffset: Int

  private static let localHeaderSignature: UInt32 = 0x0403_4B50
  private static let centralHeaderSignature: UInt32 = 0x0201_4B50
  private static let endSignature: UInt32 = 0x0605_4B50
  private static let zip64EndSignature: UInt32 = 0x0606_4B50
  private static let zip64LocatorSignature: UInt32 = 0x0706_4B50

  init(_ bytes: ByteView, file: String) throws(CheckpointError) {
    self.bytes = bytes
    self.file = file
    func bad(_ reason: String) -> CheckpointError { .malformed(file: file, reason: reason) }

    // The end record is 22 bytes plus a comment of at most 65535 bytes, so it starts within
    // the last 65557 bytes; scan backwards for a signature whose comment fits the file.
    var endOffset: Int? = nil
    var candidate = bytes.count - 22
    let lowest = max(0, bytes.count - 22 - 0xFFFF)
    while candidate >= lowest {
      if bytes.u32(candidate) == Self.endSignature, let commentLength = bytes.u16(candidate + 20),
        candidate + 22 + Int(commentLength) <= bytes.count
      {
        endOffset = candidate
        break
      }
      candidate -= 1
    }
    guard let end = endOffset,
      let disk = bytes.u16(end + 4), let directoryDisk = bytes.u16(end + 6),
      let count16 = bytes.u16(end + 10), let size32 = bytes.u32(end + 12),
      let offset32 = bytes.u32(end + 16)
    else {
      throw bad(
        "the zip archive's end-of-central-directory record is missing: the file is truncated "
          + "(\(bytes.count) bytes) or damaged")
    }
    var entryCount = Int(count16)
    var directorySize = Int(size32)
    var directoryOffset = Int(offset32)
    var directoryLimit = end

    // PyTorch always writes a zip64 end record and locator; the 32-bit fields are only
    // saturated (0xFFFF…) when needed, but the zip64 record is authoritative whenever present.
    let locator = end - 20
    if locator >= 0, bytes.u32(locator) == Self.zip64LocatorSignature {
      guard let zip64Offset64 = bytes.u64(locator + 8), zip64Offset64 < UInt64(locator),
        case let zip64Offset = Int(zip64Offset64),
        bytes.u32(zip64Offset) == Self.zip64EndSignature,
        let count64 = bytes.u64(zip64Offset + 32), let size64 = bytes.u64(zip64Offset + 40),
        let offset64 = bytes.u64(zip64Offset + 48),
        count64 <= UInt64(bytes.count), size64 <= UInt64(bytes.count),
        offset64 <= UInt64(bytes.count)
      else {
        throw bad("the zip64 end-of-central-directory record is damaged (truncated?)")
      }
      entryCount = Int(count64)
      directorySize = Int(size64)
      directoryOffset = Int(offset64)
      directoryLimit = zip64Offset
    } else if count16 == 0xFFFF || size32 == 0xFFFF_FFFF || offset32 == 0xFFFF_FFFF {
      throw bad("the archive needs zip64 records but they are missing (truncated?)")
    }
    guard disk == 0, directoryDisk == 0 else {
      throw .unsupported(file: file, reason: "multi-volume zip archives are not supported")
    }
    guard directoryOffset <= directoryLimit, directorySize <= directoryLimit - directoryOffset
    else {
      throw bad(
        "the zip central directory (offset \(directoryOffset), \(directorySize) bytes) lies "
          + "outside the file: it is truncated or damaged")
    }
    // Each central header takes at least 46 bytes, which bounds a lying entry count.
    guard entryCount <= directorySize / 46 else {
      throw bad(
        "the zip central directory claims \(entryCount) entries in \(directorySize) bytes")
    }

    var entries: [Entry] = []
    entries.reserveCapacity(entryCount)
    var index: [String: Int] = [:]
    var p = directoryOffset
    let directoryEnd = directoryOffset + directorySize
    for number in 0..<entryCount {
      guard p + 46 <= directoryEnd, bytes.u32(p) == Self.centralHeaderSignature,
        let flags = bytes.u16(p + 8), let method = bytes.u16(p + 10),
        let crc = bytes.u32(p + 16), let compressed32 = bytes.u32(p + 20),
        let uncompressed32 = bytes.u32(p + 24), let nameLength = bytes.u16(p + 28),
        let extraLength = bytes.u16(p + 30), let commentLength = bytes.u16(p + 32),
        let startDisk = bytes.u16(p + 34), let local32 = bytes.u32(p + 42)
      else {
        throw bad("zip central directory entry \(number) is damaged")
      }
      let nameStart = p + 46
      let extraStart = nameStart + Int(nameLength)
      let next = extraStart + Int(extraLength) + Int(commentLength)
      guard next <= directoryEnd, let nameBytes = bytes.slice(nameStart, length: Int(nameLength))
      else {
        throw bad("zip central directory entry \(number) runs past the directory")
      }
      let name = String(decoding: nameBytes.buffer, as: UTF8.self)

      // Saturated 32-bit fields are replaced, in this order, by 64-bit values in the zip64
      // extra field (id 1).
      var uncompressed = UInt64(uncompressed32)
      var compressed = UInt64(compressed32)
      var local = UInt64(local32)
      if uncompressed32 == 0xFFFF_FFFF || compressed32 == 0xFFFF_FFFF || local32 == 0xFFFF_FFFF {
        var q = extraStart
        let extraEnd = extraStart + Int(extraLength)
        var found = false
        while q + 4 <= extraEnd, let id = bytes.u16(q), let size = bytes.u16(q + 2) {
          let body = q + 4
          guard body + Int(size) <= extraEnd else { break }
          if id == 1 {
            var r = body
            func next64() -> UInt64? {
              guard r + 8 <= body + Int(size), let v = bytes.u64(r) else { return nil }
              r += 8
              return v
            }
            if uncompressed32 == 0xFFFF_FFFF { uncompressed = next64() ?? UInt64.max }
            if compressed32 == 0xFFFF_FFFF { compressed = next64() ?? UInt64.max }
            if local32 == 0xFFFF_FFFF { local = next64() ?? UInt64.max }
            found = true
            break
          }
          q = body + Int(size)
        }
        guard found else {
          throw bad("zip entry \(name) needs a zip64 extra field but has none")
        }
      }
      guard startDisk == 0 || startDisk == 0xFFFF else {
        throw .unsupported(file: file, reason: "multi-volume zip archives are not supported")
      }
      let limit = UInt64(directoryOffset)
      guard compressed <= limit, uncompressed <= UInt64(Int.max), local <= limit else {
        throw bad(
          "zip entry \(name) claims to lie outside the archive's data (the file is truncated "
            + "or damaged)")
      }
      entries.append(
        Entry(
          name: name, method: method, flags: flags, crc32: crc,
          compressedSize: Int(compressed), uncompressedSize: Int(uncompressed),
          localHeaderOffset: Int(local)))
      if index[name] == nil { index[name] = entries.count - 1 }
      p = next
    }
    self.entries = entries
    self.index = index
    self.directoryOffset = directoryOffset
  }

  func entry(named name: String) -> Entry? {
    index[name].map { entries[$0] }
  }

  /// The bytes of a stored entry, with `verify` checked against the recorded CRC-32.
  func contents(of entry: Entry, verify: Bool) throws(CheckpointError) -> ByteView {
    guard entry.flags & 1 == 0 else {
      throw .unsupported(file: file, reason: "zip entry \(entry.name) is encrypted")
    }
    guard entry.method == 0 else {
      let method =
        switch entry.method {
        case 8: "deflate"
        case 12: "bzip2"
        case 14: "lzma"
        case 93: "zstd"
        default: "method \(entry.method)"
        }
      throw .unsupported(
        file: file,
        reason: "zip entry \(entry.name) is compressed (\(method)); only stored entries are "
          + "supported, as torch.save writes them")
    }
    guard entry.compressedSize == entry.uncompressedSize else {
      throw .malformed(
        file: file,
        reason: "stored zip entry \(entry.name) has different compressed and uncompressed sizes")
    }
    let h = entry.localHeaderOffset
    guard bytes.u32(h) == Self.localHeaderSignature, let nameLength = bytes.u16(h + 26),
      let extraLength = bytes.u16(h + 28)
    else {
      throw .malformed(
        file: file, reason: "the local header of zip entry \(entry.name) is damaged")
    }
    let start = h + 30 + Int(nameLength) + Int(extraLength)
    guard start <= directoryOffset, entry.compressedSize <= directoryOffset - start,
      let data = bytes.slice(start, length: entry.compressedSize)
    else {
      throw .malformed(
        file: file,
        reason: "the data of zip entry \(entry.name) runs past the end of the archive's data "
          + "(truncated?)")
    }
    if verify, let error = checksumError(of: entry, data) { throw error }
    return data
  }

  /// Nil when `data` (the entry's contents) matches its recorded CRC-32, else the error. A
  /// recorded 0 means the writer skipped it (`torch.serialization.set_crc32_options(False)`).
  /// Safe to call from several threads.
  func checksumError(of entry: Entry, _ data: ByteView) -> CheckpointError? {
    guard entry.crc32 != 0 else { return nil }
    let actual = CRC32.checksum(data.buffer)
    guard actual != entry.crc32 else { return nil }
    return .malformed(
      file: file,
      reason: "zip entry \(entry.name) is corrupt: its CRC-32 is \(String(actual, radix: 16)), "
        + "the archive records \(String(entry.crc32, radix: 16))")
  }
}
