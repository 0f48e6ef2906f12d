import EVTensor
import Foundation

/// Safetensors files: an 8-byte little-endian header length, a JSON header mapping names to
/// dtype, shape and byte offsets into the data section, then the raw little-endian data.
///
/// Reading validates the header as strictly as the reference Rust implementation: tensors
/// must tile the data section exactly (no overlaps, gaps or bytes past the end).
public enum SafeTensors {
  /// Headers larger than this are rejected, as the reference implementation does.
  public static let maximumHeaderSize = 100_000_000

  /// All tensors of the file, converted to float32. The file is memory-mapped while reading.
  public static func read(contentsOf url: URL) throws(CheckpointError) -> [String: Tensor] {
    let (data, fileBacked) = try mapFile(url)
    return try withBytes(of: data, fileBacked: fileBacked) { (bytes) throws(CheckpointError) in
      try load(bytes, file: url.path, expecting: nil, requireFinite: false).tensors
    }
  }

  public static func read(_ data: Data, file: String) throws(CheckpointError) -> [String: Tensor] {
    // A general tensor reader (logits, embeddings, golden data): -inf logits are legitimate
    // here, so only checkpoint loads refuse non-finite values.
    try withBytes(of: data) { (bytes) throws(CheckpointError) in
      try load(bytes, file: file, expecting: nil, requireFinite: false).tensors
    }
  }

  /// A file's tensors with its `__metadata__`, from its bytes.
  public static func checkpoint(_ data: Data, file: String) throws(CheckpointError)
    -> LoadedCheckpoint
  {
    try withBytes(of: data) { (bytes) throws(CheckpointError) in
      try load(bytes, file: file, expecting: nil, requireFinite: false)
    }
  }

  // MARK: - Reading

  private struct Entry {
    let name: String
    let dtype: DType
    let shape: [Int]
    let count: Int
    let begin: Int
    let end: Int
  }

  static func load(
    _ bytes: ByteView, file: String, expecting expectation: Expectation?, requireFinite: Bool
  ) throws(CheckpointError) -> LoadedCheckpoint {
    func bad(_ reason: String) -> CheckpointError { .malformed(file: file, reason: reason) }

    guard let length = bytes.u64(0) else {
      throw bad(
        "the file is \(bytes.count) bytes, too short for a safetensors header (truncated?)")
    }
    guard length <= UInt64(maximumHeaderSize) else {
      throw bad(
        "the safetensors header length \(length) is over the \(maximumHeaderSize)-byte limit: "
          + "the file is damaged or not a safetensors file")
    }
    guard length <= UInt64(bytes.count - 8) else {
      throw bad(
        "the safetensors header is \(length) bytes long but the file has only \(bytes.count) "
          + "bytes: the file is truncated")
    }
    let headerLength = Int(length)
    let dataStart = 8 + headerLength
    let dataLength = bytes.count - dataStart
    guard let header = bytes.slice(8, length: headerLength), header.u8(0) == UInt8(ascii: "{")
    else {
      throw bad("the safetensors header does not start with '{'")
    }
    guard String(validating: header.buffer, as: UTF8.self) != nil else {
      throw bad("the safetensors header is not valid UTF-8")
    }
    let json: Any
    do {
      json = try JSONSerialization.jsonObject(with: Data(header.buffer))
    } catch {
      throw bad("the safetensors header is not valid JSON (damaged or truncated)")
    }
    guard let object = json as? [String: Any] else {
      throw bad("the safetensors header is not a JSON object")
    }

    var metadata: [String: String] = [:]
    var entries: [Entry] = []
    entries.reserveCapacity(object.count)
    for (name, value) in object {
      if name == "__metadata__" {
        // The reference implementation reads it as an optional map: null means none.
        if value is NSNull { continue }
        guard let map = value as? [String: Any] else {
          throw bad("__metadata__ is not a JSON object")
        }
        for (key, item) in map {
          guard let text = item as? String else {
            throw bad("__metadata__ value for \(key) is not a string")
          }
          metadata[key] = text
        }
        continue
      }
      guard let fields = value as? [String: Any], let dtypeName = fields["dtype"] as? String,
        let shapeValues = fields["shape"] as? [Any],
        let offsetValues = fields["data_offsets"] as? [Any]
      else {
        throw bad("the header entry for \(name) lacks dtype, shape or data_offsets")
      }
      guard let dtype = DType(safetensorsName: dtypeName) else {
        throw .unsupported(
          file: file,
          reason: "tensor \(name) has dtype \(dtypeName); only real types (F64, F32, F16, BF16, "
            + "I64, I32, I16, I8, U8, BOOL) are supported")
      }
      guard let shape = nonNegativeIntegers(shapeValues),
        let offsets = nonNegativeIntegers(offsetValues), offsets.count == 2
      else {
        throw bad("tensor \(name) has a shape or data_offsets that are not non-negative integers")
      }
      var count = 1
      for d in shape {
        let (product, overflow) = count.multipliedReportingOverflow(by: d)
        guard !overflow else { throw bad("tensor \(name) has too many elements") }
        count = product
      }
      let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
      let begin = offsets[0]
      let end = offsets[1]
      guard !overflow, begin <= end, end - begin == byteCount else {
        throw bad(
          "tensor \(name): data_offsets [\(begin), \(end)] do not fit shape "
            + "\(formatShape(shape)) of \(dtypeName) (\(overflow ? "too many" : "\(byteCount)") bytes)"
        )
      }
      guard end <= dataLength else {
        throw bad(
          "tensor \(name) ends at byte \(end) of a \(dataLength)-byte data section: the file is "
            + "truncated or the offsets are wrong")
      }
      entries.append(
        Entry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end))
    }

    // Tensors must tile the data section exactly, in offset order.
    entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
    var covered = 0
    var previous: String? = nil
    for entry in entries {
      if entry.begin < covered, let previous {
        throw bad(
          "tensors \(previous) and \(entry.name) overlap (\(entry.name) starts at byte "
            + "\(entry.begin), before \(previous) ends at \(covered))")
      }
      if entry.begin > covered {
        throw bad(
          "bytes \(covered)..<\(entry.begin) of the data section belong to no tensor "
            + "(before \(entry.name)): the offsets are wrong")
      }
      covered = entry.end
      previous = entry.name
    }
    guard covered == dataLength else {
      throw bad(
        "the data section has \(dataLength) bytes but the tensors cover only \(covered): the "
          + "offsets are wrong or the file has trailing garbage")
    }

    // Every entry now lies inside the file and they tile it, so an honest file decodes to no
    // more elements than it has data bytes; a model's declaration is checked before anything
    // is allocated.
    if let expectation {
      try expectation.verify(entries.map { ($0.name, $0.shape) }, file: file)
      try checkMaterialisedSize(
        entries.lazy.map(\.count), limit: expectation.elementCount,
        basis: "the model declares", file: file)
    } else {
      try checkMaterialisedSize(
        entries.lazy.map(\.count), limit: dataLength,
        basis: "a \(dataLength)-byte data section holds", file: file)
    }

    var decoded = [[Float]](repeating: [], count: entries.count)
    var nonFinite = [Int](repeating: 0, count: entries.count)
    decoded.withUnsafeMutableBufferPointer { decoded in
      nonFinite.withUnsafeMutableBufferPointer { nonFinite in
        Parallel.forEach(weights: entries.map { $0.end - $0.begin }, minimumTotal: 8 << 20) { i in
          let entry = entries[i]
          decoded[i] = [Float](unsafeUninitializedCapacity: entry.count) { out, n in
            // Zero-element tensors have no destination address and nothing to copy.
            if let destination = out.baseAddress, let base = bytes.buffer.baseAddress {
              entry.dtype.widen(
                from: base + dataStart + entry.begin, byteStride: entry.dtype.byteSize,
                count: entry.count, into: destination)
            }
            n = entry.count
          }
          if requireFinite { nonFinite[i] = decoded[i].withUnsafeBufferPointer(nonFiniteCount) }
          bytes.slice(dataStart + entry.begin, length: entry.end - entry.begin)?.releasePages()
        }
      }
    }
    if let i = nonFinite.firstIndex(where: { $0 > 0 }) {
      throw .nonFiniteValues(file: file, key: entries[i].name, count: nonFinite[i])
    }
    var tensors: [String: Tensor] = [:]
    var dtypes: [String: DType] = [:]
    tensors.reserveCapacity(entries.count)
    dtypes.reserveCapacity(entries.count)
    for (entry, storage) in zip(entries, decoded) {
      tensors[entry.name] = Tensor(shape: entry.shape, storage: storage)
      dtypes[entry.name] = entry.dtype
    }
    return LoadedCheckpoint(
      tensors: tensors, keys: entries.map(\.name), dtypes: dtypes, format: .safetensors,
      metadata: metadata, unwrappedKey: nil)
  }

  /// JSON numbers that are non-negative integers; nil for anything else.
  private static func nonNegativeIntegers(_ values: [Any]) -> [Int]? {
    var out: [Int] = []
    out.reserveCapacity(values.count)
    for value in values {
      // `as? Int` fails for fractional and out-of-range numbers and for strings.
      guard let int = value as? Int, int >= 0 else { return nil }
      out.append(int)
    }
    return out
  }

  // MARK: - Writing

  /// Writes `tensors` as float32 safetensors, keys sorted bytewise and the header padded with
  /// spaces to a multiple of 8 bytes, exactly as the reference Rust implementation lays it
  /// out. The file is written under a temporary name and renamed into place, so `url` is
  /// either the complete new file or untouched.
  public static func write(
    _ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL
  ) throws(CheckpointError) {
    let file = url.path
    let (header, order) = try encodeHeader(tensors, metadata: metadata, file: file)
    let directory = url.deletingLastPathComponent().path
    let temporary =
      (directory.isEmpty ? "." : directory)
      + "/.\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier)-"
      + "\(UInt32.random(in: 0...UInt32.max)).tmp"

    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
    guard descriptor >= 0 else {
      throw .unwritable(file: file, reason: "cannot create \(temporary): \(errnoText())")
    }
    var closed = false
    var renamed = false
    defer {
      if !closed { close(descriptor) }
      if !renamed { unlink(temporary) }
    }
    // Rethrowing closures lose typed errors, so the writes report failure as a message.
    var failure = header.withUnsafeBytes { writeAll(descriptor, $0) }
    for name in order where failure == nil {
      // Keys come from `order`, which was built from `tensors`.
      guard let tensor = tensors[name] else { continue }
      failure = tensor.withUnsafeBufferPointer { buffer in
        #if _endian(little)
          return writeAll(descriptor, UnsafeRawBufferPointer(buffer))
        #else
          let swapped = buffer.map { $0.bitPattern.littleEndian }
          return swapped.withUnsafeBytes { writeAll(descriptor, $0) }
        #endif
      }
    }
    if let failure {
      throw .unwritable(file: file, reason: "cannot write \(temporary): \(failure)")
    }
    guard fsync(descriptor) == 0 else {
      throw .unwritable(file: file, reason: "cannot flush \(temporary): \(errnoText())")
    }
    closed = true
    guard close(descriptor) == 0 else {
      throw .unwritable(file: file, reason: "cannot close \(temporary): \(errnoText())")
    }
    guard rename(temporary, file) == 0 else {
      throw .unwritable(file: file, reason: "cannot rename \(temporary) into place: \(errnoText())")
    }
    renamed = true
  }

  /// The bytes `write` would put in a file, for callers that keep them in memory.
  public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:])
    throws(CheckpointError) -> Data
  {
    let (header, order) = try encodeHeader(tensors, metadata: metadata, file: "(memory)")
    var data = header
    for name in order {
      guard let tensor = tensors[name] else { continue }
      tensor.withUnsafeBufferPointer { buffer in
        #if _endian(little)
          let raw = UnsafeRawBufferPointer(buffer)
          if let base = raw.baseAddress {
            data.append(base.assumingMemoryBound(to: UInt8.self), count: raw.count)
          }
        #else
          for value in buffer {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
          }
        #endif
      }
    }
    return data
  }

  /// The length prefix and padded JSON header, and the order tensors' data follows it in.
  private static func encodeHeader(
    _ tensors: [String: Tensor], metadata: [String: String], file: String
  ) throws(CheckpointError) -> (Data, [String]) {
    if tensors["__metadata__"] != nil {
      throw .unwritable(file: file, reason: "a tensor cannot be named __metadata__")
    }
    // Byte order, as Rust's `str` comparison sorts.
    let order = tensors.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    var json = "{"
    var first = true
    if !metadata.isEmpty {
      json += "\"__metadata__\":{"
      let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
      json += keys.map { "\(jsonString($0)):\(jsonString(metadata[$0] ?? ""))" }.joined(
        separator: ",")
      json += "}"
      first = false
    }
    var offset = 0
    for name in order {
      guard let tensor = tensors[name] else { continue }
      let end = offset + tensor.count * 4
      if !first { json += "," }
      first = false
      json += "\(jsonString(name)):{\"dtype\":\"F32\",\"shape\":["
      json += tensor.shape.map(String.init).joined(separator: ",")
      json += "],\"data_offsets\":[\(offset),\(end)]}"
      offset = end
    }
    json += "}"
    var headerBytes = Array(json.utf8)
    headerBytes += [UInt8](repeating: UInt8(ascii: " "), count: (8 - headerBytes.count % 8) % 8)
    var data = Data(capacity: 8 + headerBytes.count)
    withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { data.append(contentsOf: $0) }
    data.append(contentsOf: headerBytes)
    return (data, order)
  }

  /// A JSON string literal, escaped as serde_json does.
  private static func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      default:
        if scalar.value < 0x20 {
          out += String(format: "\\u%04x", scalar.value)
        } else {
          out.unicodeScalars.append(scalar)
        }
      }
    }
    return out + "\""
  }

  /// Writes all of `bytes`; nil on success, else the system's reason.
  private static func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) -> String? {
    guard var p = bytes.baseAddress else { return nil }
    var remaining = bytes.count
    while remaining > 0 {
      let n = posixWrite(descriptor, p, remaining)
      if n < 0 {
        if errno == EINTR { continue }
        return errnoText()
      }
      p += n
      remaining -= n
    }
    return nil
  }

  private static func errnoText() -> String {
    String(cString: strerror(errno))
  }
}

/// `write(2)`; a free function because `SafeTensors.write` shadows the name inside the enum.
private func posixWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
  write(descriptor, bytes, count)
}
