import EVCheckpoint
import Foundation

// Writers for the test inputs: a zip archive laid out as PyTorch lays it out (stored entries,
// 64-byte aligned data, zip64 end records), pickles built opcode by opcode, and torch.save-style
// state dicts. They are deliberately independent of the reader (own CRC, own layout code).

/// A temporary folder, removed when the value is released.
final class TemporaryDirectory {
  let url: URL

  init() throws {
    url = FileManager.default.temporaryDirectory
      .appendingPathComponent("evcheckpoint-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }

  deinit { try? FileManager.default.removeItem(at: url) }

  /// Writes `bytes` to a file named `name` and returns its URL.
  func file(_ name: String, _ bytes: [UInt8]) throws -> URL {
    let target = url.appendingPathComponent(name)
    try Data(bytes).write(to: target)
    return target
  }

  func file(_ name: String, _ data: Data) throws -> URL {
    let target = url.appendingPathComponent(name)
    try data.write(to: target)
    return target
  }

  var contents: [String] {
    (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
  }
}

/// Bitwise CRC-32, slow and obviously right, to check the reader's table-driven one.
func referenceCRC32<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
  var crc: UInt32 = 0xFFFF_FFFF
  for byte in bytes {
    crc ^= UInt32(byte)
    for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
  }
  return ~crc
}

extension Array where Element == UInt8 {
  mutating func le16(_ v: Int) { append(contentsOf: [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)]) }
  mutating func le32(_ v: UInt32) {
    for i in 0..<4 { append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) }
  }
  mutating func le64(_ v: UInt64) {
    for i in 0..<8 { append(UInt8((v >> (8 * UInt64(i))) & 0xFF)) }
  }
}

struct ZipBuilder {
  struct Entry {
    var name: String
    var data: [UInt8]
    /// 0 = stored; anything else only sets the header field (the data stays as given).
    var method: UInt16 = 0
    /// Written instead of the real CRC-32, to simulate corruption.
    var recordedCRC: UInt32? = nil
  }

  var entries: [Entry] = []
  /// Data offsets are padded to this, as PyTorch's writer does with an "FB" extra field.
  var alignment = 64
  /// PyTorch always writes a zip64 end record and locator.
  var zip64EndRecords = true
  /// Saturate the 32-bit size and offset fields and put the values in zip64 extra fields,
  /// as writers do for archives over 4 GB.
  var zip64ExtraFields = false

  mutating func add(_ name: String, _ data: [UInt8]) {
    entries.append(Entry(name: name, data: data))
  }

  func build() -> [UInt8] {
    var out: [UInt8] = []
    var central: [UInt8] = []
    for entry in entries {
      let name = Array(entry.name.utf8)
      let crc = entry.recordedCRC ?? referenceCRC32(entry.data)
      let offset = out.count
      let unpadded = offset + 30 + name.count + 4
      let padding = (alignment - unpadded % alignment) % alignment
      var extra: [UInt8] = []
      extra.le16(0x4246)
      extra.le16(padding)
      extra += [UInt8](repeating: 0x5A, count: padding)

      out.le32(0x0403_4B50)
      out.le16(zip64ExtraFields ? 45 : 20)
      out.le16(0)
      out.le16(Int(entry.method))
      out.le16(0)
      out.le16(0)
      out.le32(crc)
      out.le32(UInt32(entry.data.count))
      out.le32(UInt32(entry.data.count))
      out.le16(name.count)
      out.le16(extra.count)
      out += name
      out += extra
      out += entry.data

      var centralExtra: [UInt8] = []
      if zip64ExtraFields {
        centralExtra.le16(1)
        centralExtra.le16(24)
        centralExtra.le64(UInt64(entry.data.count))
        centralExtra.le64(UInt64(entry.data.count))
        centralExtra.le64(UInt64(offset))
      }
      central.le32(0x0201_4B50)
      central.le16(0x031E)
      central.le16(zip64ExtraFields ? 45 : 20)
      central.le16(0)
      central.le16(Int(entry.method))
      central.le16(0)
      central.le16(0)
      central.le32(crc)
      central.le32(zip64ExtraFields ? 0xFFFF_FFFF : UInt32(entry.data.count))
      central.le32(zip64ExtraFields ? 0xFFFF_FFFF : UInt32(entry.data.count))
      central.le16(name.count)
      central.le16(centralExtra.count)
      central.le16(0)
      central.le16(0)
      central.le16(0)
      central.le32(0)
      central.le32(zip64ExtraFields ? 0xFFFF_FFFF : UInt32(offset))
      central += name
      central += centralExtra
    }
    let directoryOffset = out.count
    out += central
    if zip64EndRecords {
      let zip64End = out.count
      out.le32(0x0606_4B50)
      out.le64(44)
      out.le16(0x1E)
      out.le16(45)
      out.le32(0)
      out.le32(0)
      out.le64(UInt64(entries.count))
      out.le64(UInt64(entries.count))
      out.le64(UInt64(central.count))
      out.le64(UInt64(directoryOffset))
      out.le32(0x0706_4B50)
      out.le32(0)
      out.le64(UInt64(zip64End))
      out.le32(1)
    }
    out.le32(0x0605_4B50)
    out.le16(0)
    out.le16(0)
    out.le16(entries.count)
    out.le16(entries.count)
    out.le32(UInt32(central.count))
    out.le32(UInt32(directoryOffset))
    out.le16(0)
    return out
  }
}

/// Emits pickle opcodes. `protocol4` switches to the opcodes Python's pickler uses from
/// protocol 4 on (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL).
struct PickleBuilder {
  var bytes: [UInt8] = []
  let protocol4: Bool
  private var memoCount = 0
  private var memoized: [String: Int] = [:]

  init(protocol4: Bool = false) {
    self.protocol4 = protocol4
    bytes = [0x80, protocol4 ? 4 : 2]
    if protocol4 {
      // A FRAME header; its length is not checked by readers that do not buffer.
      bytes.append(0x95)
      bytes.le64(0)
    }
  }

  mutating func op(_ code: UInt8) { bytes.append(code) }
  mutating func mark() { op(0x28) }
  mutating func stop() { op(0x2E) }
  mutating func none() { op(0x4E) }
  mutating func bool(_ v: Bool) { op(v ? 0x88 : 0x89) }
  mutating func emptyDict() {
    op(0x7D)
    put()
  }
  mutating func emptyTuple() { op(0x29) }
  mutating func tuple() { op(0x74) }
  mutating func reduce() { op(0x52) }
  mutating func setItems() { op(0x75) }
  mutating func build() { op(0x62) }
  mutating func persistentID() { op(0x51) }

  /// Stores the top of the stack in the next memo slot.
  mutating func put() {
    if protocol4 {
      op(0x94)
    } else if memoCount < 256 {
      op(0x71)
      bytes.append(UInt8(memoCount))
    } else {
      op(0x72)
      bytes.le32(UInt32(memoCount))
    }
    memoCount += 1
  }

  mutating func get(_ index: Int) {
    if index < 256 {
      op(0x68)
      bytes.append(UInt8(index))
    } else {
      op(0x6A)
      bytes.le32(UInt32(index))
    }
  }

  mutating func string(_ s: String, memoize: Bool = false) {
    if memoize, let index = memoized["s:" + s] {
      get(index)
      return
    }
    let utf8 = Array(s.utf8)
    if protocol4 && utf8.count < 256 {
      op(0x8C)
      bytes.append(UInt8(utf8.count))
    } else {
      op(0x58)
      bytes.le32(UInt32(utf8.count))
    }
    bytes += utf8
    if memoize { memoized["s:" + s] = memoCount }
    put()
  }

  mutating func int(_ v: Int) {
    if v >= 0 && v < 256 {
      op(0x4B)
      bytes.append(UInt8(v))
    } else if v >= 0 && v < 65536 {
      op(0x4D)
      bytes.le16(v)
    } else if v >= Int(Int32.min) && v <= Int(Int32.max) {
      op(0x4A)
      bytes.le32(UInt32(bitPattern: Int32(v)))
    } else {
      op(0x8A)
      bytes.append(8)
      bytes.le64(UInt64(bitPattern: Int64(v)))
    }
  }

  /// A global, memoized after first use as Python's pickler does.
  mutating func global(_ module: String, _ name: String) {
    let key = "g:\(module).\(name)"
    if let index = memoized[key] {
      get(index)
      return
    }
    if protocol4 {
      string(module)
      string(name)
      op(0x93)
    } else {
      op(0x63)
      bytes += Array("\(module)\n\(name)\n".utf8)
    }
    memoized[key] = memoCount
    put()
  }

  mutating func intTuple(_ values: [Int]) {
    switch values.count {
    case 0: emptyTuple()
    case 1...3:
      for v in values { int(v) }
      op([0x85, 0x86, 0x87][values.count - 1])
    default:
      mark()
      for v in values { int(v) }
      tuple()
    }
    put()
  }
}

/// One tensor of a state dict written the way torch.save writes it.
struct TensorRecord {
  var key: String
  var storageKey: String
  var storageType: String = "FloatStorage"
  var storageElements: Int
  var offset: Int = 0
  var size: [Int]
  var stride: [Int]
  /// Wrapped in `_rebuild_parameter`, as `nn.Parameter`s are when a module is saved.
  var parameter = false
}

enum TorchPickle {
  /// `{key: tensor}` as torch.save pickles it. With `orderedDictMetadata` the root is an
  /// OrderedDict carrying `_metadata` (what `model.state_dict()` returns); with `wrapper` it is
  /// nested as `{"state_dict": …, "epoch": 3}`.
  static func stateDict(
    _ tensors: [TensorRecord], orderedDictMetadata: Bool = false, wrapper: Bool = false,
    protocol4: Bool = false
  ) -> [UInt8] {
    var p = PickleBuilder(protocol4: protocol4)
    if wrapper {
      p.emptyDict()
      p.mark()
      p.string("state_dict")
    }
    if orderedDictMetadata {
      p.global("collections", "OrderedDict")
      p.emptyTuple()
      p.reduce()
      p.put()
    } else {
      p.emptyDict()
    }
    p.mark()
    for t in tensors {
      p.string(t.key)
      if t.parameter { p.global("torch._utils", "_rebuild_parameter") }
      p.global("torch._utils", "_rebuild_tensor_v2")
      p.mark()
      p.mark()
      p.string("storage", memoize: true)
      p.global("torch", t.storageType)
      p.string(t.storageKey)
      p.string("cpu", memoize: true)
      p.int(t.storageElements)
      p.tuple()
      p.put()
      p.persistentID()
      p.int(t.offset)
      p.intTuple(t.size)
      p.intTuple(t.stride)
      p.bool(false)
      p.global("collections", "OrderedDict")
      p.emptyTuple()
      p.reduce()
      p.put()
      p.tuple()
      p.put()
      p.reduce()
      p.put()
      if t.parameter {
        // _rebuild_parameter(data, requires_grad, backward_hooks)
        p.bool(true)
        p.global("collections", "OrderedDict")
        p.emptyTuple()
        p.reduce()
        p.op(0x87)  // TUPLE3 (tensor, True, OrderedDict())
        p.put()
        p.reduce()
        p.put()
      }
    }
    p.setItems()
    if orderedDictMetadata {
      // BUILD with {"_metadata": OrderedDict({"": {"version": 1}})}
      p.emptyDict()
      p.string("_metadata")
      p.global("collections", "OrderedDict")
      p.emptyTuple()
      p.reduce()
      p.put()
      p.mark()
      p.string("")
      p.emptyDict()
      p.string("version")
      p.int(1)
      p.op(0x73)  // SETITEM
      p.setItems()
      p.op(0x73)  // SETITEM
      p.build()
    }
    if wrapper {
      p.string("epoch")
      p.int(3)
      p.setItems()
    }
    p.stop()
    return p.bytes
  }

  /// A torch.save archive named `name` holding `pickle` and the given storages.
  static func archive(
    name: String = "model", pickle: [UInt8], storages: [(key: String, bytes: [UInt8])],
    configure: (inout ZipBuilder) -> Void = { _ in }
  ) -> [UInt8] {
    var zip = ZipBuilder()
    zip.add("\(name)/data.pkl", pickle)
    zip.add("\(name)/.format_version", Array("1".utf8))
    zip.add("\(name)/.storage_alignment", Array("64".utf8))
    zip.add("\(name)/byteorder", Array("little".utf8))
    for storage in storages { zip.add("\(name)/data/\(storage.key)", storage.bytes) }
    zip.add("\(name)/version", Array("3\n".utf8))
    zip.add("\(name)/.data/serialization_id", Array("1234567890".utf8))
    configure(&zip)
    return zip.build()
  }
}

func float32Bytes(_ values: [Float]) -> [UInt8] {
  var out: [UInt8] = []
  for v in values { out.le32(v.bitPattern) }
  return out
}

func uint16Bytes(_ values: [UInt16]) -> [UInt8] {
  var out: [UInt8] = []
  for v in values { out.le16(Int(v)) }
  return out
}

func int64Bytes(_ values: [Int64]) -> [UInt8] {
  var out: [UInt8] = []
  for v in values { out.le64(UInt64(bitPattern: v)) }
  return out
}

/// Loads from a file in `dir` so that messages name a real path. `allowNonFinite` is for tests
/// of exact widening, whose inputs include infinities and NaNs on purpose.
func loadFile(
  _ bytes: [UInt8], named name: String, in dir: TemporaryDirectory, allowNonFinite: Bool = false
) throws -> LoadedCheckpoint {
  try LoadedCheckpoint(contentsOf: try dir.file(name, bytes), allowNonFinite: allowNonFinite)
}
