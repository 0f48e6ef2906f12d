/// A restricted pickle machine: enough of the pickle protocol (0x80 … STOP, protocols 2–5) to
/// rebuild what `torch.save` writes for a state dict, and nothing that could run code.
///
/// Like `torch.load(weights_only=True)`, it resolves only an allow-list of globals (see
/// `PickleGlobal`); any other global, and any opcode it does not implement, is an error that
/// names it and its byte offset. Tensors are not decoded here: `_rebuild_tensor_v2` yields a
/// `PickleTensor` describing where the elements live, decoded later only if needed.

/// A storage of a PyTorch archive, as named by a persistent id.
final class PickleStorage {
  let key: String
  let type: TorchStorageType
  let elementCount: Int
  let entry: ZipArchive.Entry

  init(key: String, type: TorchStorageType, elementCount: Int, entry: ZipArchive.Entry) {
    self.key = key
    self.type = type
    self.elementCount = elementCount
    self.entry = entry
  }
}

/// A tensor view into a storage, as `_rebuild_tensor_v2` describes it (offsets in elements).
struct PickleTensor {
  let storage: PickleStorage
  let offset: Int
  let shape: [Int]
  let strides: [Int]
  let elementCount: Int
}

final class PickleList {
  var items: [PickleValue] = []
  /// See `PickleValue.nestingDepth`.
  var depth = 1
  /// Set once the list is placed inside another object.
  var embedded = false
}

/// A dict keeping insertion order (like Python's); string keys are indexed for lookup.
final class PickleDict {
  private(set) var keys: [PickleValue] = []
  private(set) var values: [PickleValue] = []
  private var stringIndex: [String: Int] = [:]
  /// See `PickleValue.nestingDepth`.
  var depth = 1
  /// Set once the dict is placed inside another object.
  var embedded = false

  var count: Int { keys.count }

  func set(_ key: PickleValue, _ value: PickleValue) {
    if case .string(let s) = key {
      if let i = stringIndex[s] {
        values[i] = value
        return
      }
      stringIndex[s] = keys.count
    }
    keys.append(key)
    values.append(value)
  }

  subscript(_ key: String) -> PickleValue? {
    stringIndex[key].map { values[$0] }
  }
}

/// PyTorch's legacy typed storage classes (`torch.FloatStorage`, …), which persistent ids name.
struct TorchStorageType: Equatable {
  let className: String
  let elementName: String
  let byteSize: Int
  /// Nil for element types with no float32 equivalent (complex numbers).
  let dtype: DType?

  static let all: [TorchStorageType] = [
    .init(className: "FloatStorage", elementName: "float32", byteSize: 4, dtype: .float32),
    .init(className: "HalfStorage", elementName: "float16", byteSize: 2, dtype: .float16),
    .init(className: "BFloat16Storage", elementName: "bfloat16", byteSize: 2, dtype: .bfloat16),
    .init(className: "LongStorage", elementName: "int64", byteSize: 8, dtype: .int64),
    .init(className: "DoubleStorage", elementName: "float64", byteSize: 8, dtype: .float64),
    .init(className: "IntStorage", elementName: "int32", byteSize: 4, dtype: .int32),
    .init(className: "ShortStorage", elementName: "int16", byteSize: 2, dtype: .int16),
    .init(className: "CharStorage", elementName: "int8", byteSize: 1, dtype: .int8),
    .init(className: "ByteStorage", elementName: "uint8", byteSize: 1, dtype: .uint8),
    .init(className: "BoolStorage", elementName: "bool", byteSize: 1, dtype: .bool),
    .init(className: "ComplexFloatStorage", elementName: "complex64", byteSize: 8, dtype: nil),
    .init(className: "ComplexDoubleStorage", elementName: "complex128", byteSize: 16, dtype: nil),
  ]
}

/// The globals a weights-only load may reference.
enum PickleGlobal {
  case orderedDict
  case rebuildTensorV2
  case rebuildParameter
  case rebuildParameterWithState
  case rebuildFromTypeV2
  case tensorClass
  case parameterClass
  case codecsEncode
  case storageType(TorchStorageType)

  init?(module: String, name: String) {
    switch (module, name) {
    case ("collections", "OrderedDict"): self = .orderedDict
    case ("torch._utils", "_rebuild_tensor_v2"): self = .rebuildTensorV2
    case ("torch._utils", "_rebuild_parameter"): self = .rebuildParameter
    case ("torch._utils", "_rebuild_parameter_with_state"): self = .rebuildParameterWithState
    case ("torch._tensor", "_rebuild_from_type_v2"): self = .rebuildFromTypeV2
    case ("torch", "Tensor"), ("torch._tensor", "Tensor"): self = .tensorClass
    case ("torch.nn.parameter", "Parameter"), ("torch.nn", "Parameter"): self = .parameterClass
    case ("_codecs", "encode"): self = .codecsEncode
    case ("torch", _):
      guard let type = TorchStorageType.all.first(where: { $0.className == name }) else {
        return nil
      }
      self = .storageType(type)
    default: return nil
    }
  }

  var name: String {
    switch self {
    case .orderedDict: "collections.OrderedDict"
    case .rebuildTensorV2: "torch._utils._rebuild_tensor_v2"
    case .rebuildParameter: "torch._utils._rebuild_parameter"
    case .rebuildParameterWithState: "torch._utils._rebuild_parameter_with_state"
    case .rebuildFromTypeV2: "torch._tensor._rebuild_from_type_v2"
    case .tensorClass: "torch.Tensor"
    case .parameterClass: "torch.nn.parameter.Parameter"
    case .codecsEncode: "_codecs.encode"
    case .storageType(let type): "torch.\(type.className)"
    }
  }
}

indirect enum PickleValue {
  case none
  case bool(Bool)
  case int(Int)
  /// An integer beyond 64 bits: kept opaque, an error only where a tensor field needs it.
  case largeInt
  case float(Double)
  case string(String)
  case bytes([UInt8])
  case tuple([PickleValue], depth: Int)
  case list(PickleList)
  case dict(PickleDict)
  case global(PickleGlobal)
  case storage(PickleStorage)
  case tensor(PickleTensor)

  /// 1 for an empty container, one more than its deepest element otherwise, 0 for scalars.
  /// Bounded while loading, because releasing a structure recurses once per level.
  var nestingDepth: Int {
    switch self {
    case .tuple(_, let depth): depth
    case .list(let list): list.depth
    case .dict(let dict): dict.depth
    default: 0
    }
  }

  /// What the value is, for error messages ("an int", "a tuple of 3 items").
  var kindDescription: String {
    switch self {
    case .none: "None"
    case .bool: "a bool"
    case .int: "an int"
    case .largeInt: "an int wider than 64 bits"
    case .float: "a float"
    case .string: "a string"
    case .bytes: "bytes"
    case .tuple(let items, _): "a tuple of \(items.count) items"
    case .list: "a list"
    case .dict: "a dict"
    case .global(let g): g.name
    case .storage: "a storage"
    case .tensor: "a tensor"
    }
  }
}

/// Names of every pickle opcode (protocols 0–5), so errors can name the unsupported ones.
private let opcodeNames: [UInt8: String] = [
  0x28: "MARK", 0x2E: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT",
  0x49: "INT", 0x4A: "BININT", 0x4B: "BININT1", 0x4C: "LONG", 0x4D: "BININT2", 0x4E: "NONE",
  0x50: "PERSID", 0x51: "BINPERSID", 0x52: "REDUCE", 0x53: "STRING", 0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND", 0x62: "BUILD",
  0x63: "GLOBAL", 0x64: "DICT", 0x7D: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET",
  0x68: "BINGET", 0x69: "INST", 0x6A: "LONG_BINGET", 0x6C: "LIST", 0x5D: "EMPTY_LIST",
  0x6F: "OBJ", 0x70: "PUT", 0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x73: "SETITEM",
  0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT", 0x80: "PROTO",
  0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2",
  0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8A: "LONG1", 0x8B: "LONG4",
  0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x8C: "SHORT_BINUNICODE", 0x8D: "BINUNICODE8",
  0x8E: "BINBYTES8", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
]

struct PickleMachine {
  typealias PersistentLoad = (PickleValue) throws(CheckpointError) -> PickleValue

  private let bytes: ByteView
  private let file: String
  /// The pickle's name inside the archive, for messages ("tiny-l/data.pkl").
  private let source: String
  private let persistentLoad: PersistentLoad

  private var position = 0
  /// Offset and name of the opcode being executed, for messages.
  private var opcodeOffset = 0
  private var opcodeName = ""
  private var stack: [PickleValue] = []
  /// Stack heights at each MARK, as CPython's unpickler keeps them.
  private var marks: [Int] = []
  private var memo: [Int: PickleValue] = [:]

  init(bytes: ByteView, file: String, source: String, persistentLoad: @escaping PersistentLoad) {
    self.bytes = bytes
    self.file = file
    self.source = source
    self.persistentLoad = persistentLoad
  }

  /// Runs the pickle to its STOP and returns the object it built.
  static func load(
    _ bytes: ByteView, file: String, source: String, persistentLoad: @escaping PersistentLoad
  ) throws(CheckpointError) -> PickleValue {
    var machine = PickleMachine(
      bytes: bytes, file: file, source: source, persistentLoad: persistentLoad)
    return try machine.run()
  }

  // MARK: - Errors

  private func malformed(_ reason: String) -> CheckpointError {
    .malformed(
      file: file, reason: "\(source): \(reason) (opcode \(opcodeName) at byte \(opcodeOffset))")
  }

  private func unsupported(_ reason: String) -> CheckpointError {
    .unsupported(
      file: file, reason: "\(source): \(reason) (opcode \(opcodeName) at byte \(opcodeOffset))")
  }

  // MARK: - Reading the opcode stream

  private mutating func read(_ n: Int) throws(CheckpointError) -> ByteView {
    guard let view = bytes.slice(position, length: n) else {
      throw malformed("the pickle ends in the middle of an argument (truncated)")
    }
    position += n
    return view
  }

  private mutating func readU8() throws(CheckpointError) -> UInt8 {
    guard let v = bytes.u8(position) else {
      throw malformed("the pickle ends in the middle of an argument (truncated)")
    }
    position += 1
    return v
  }

  private mutating func readU16() throws(CheckpointError) -> UInt16 {
    guard let v = bytes.u16(position) else {
      throw malformed("the pickle ends in the middle of an argument (truncated)")
    }
    position += 2
    return v
  }

  private mutating func readU32() throws(CheckpointError) -> UInt32 {
    guard let v = bytes.u32(position) else {
      throw malformed("the pickle ends in the middle of an argument (truncated)")
    }
    position += 4
    return v
  }

  private mutating func readU64() throws(CheckpointError) -> UInt64 {
    guard let v = bytes.u64(position) else {
      throw malformed("the pickle ends in the middle of an argument (truncated)")
    }
    position += 8
    return v
  }

  private mutating func readLength(_ raw: UInt64) throws(CheckpointError) -> Int {
    guard raw <= UInt64(bytes.count - position) else {
      throw malformed("an argument of \(raw) bytes runs past the end of the pickle (truncated)")
    }
    return Int(raw)
  }

  private mutating func readUTF8(length: Int) throws(CheckpointError) -> String {
    let view = try read(length)
    guard let s = String(validating: view.buffer, as: UTF8.self) else {
      throw malformed("a string is not valid UTF-8")
    }
    return s
  }

  /// A newline-terminated line (GLOBAL's module and name).
  private mutating func readLine() throws(CheckpointError) -> String {
    var end = position
    while true {
      guard let byte = bytes.u8(end) else {
        throw malformed("the pickle ends in the middle of a GLOBAL name (truncated)")
      }
      if byte == 0x0A { break }
      end += 1
    }
    let line = try readUTF8(length: end - position)
    position += 1
    return line
  }

  // MARK: - Stack

  private mutating func pop() throws(CheckpointError) -> PickleValue {
    guard let value = stack.popLast(), stack.count >= (marks.last ?? 0) else {
      throw malformed("the pickle stack is empty")
    }
    return value
  }

  private func top() throws(CheckpointError) -> PickleValue {
    guard let value = stack.last, stack.count > (marks.last ?? 0) else {
      throw malformed("the pickle stack is empty")
    }
    return value
  }

  /// Pops everything above the last MARK and the mark itself.
  private mutating func popToMark() throws(CheckpointError) -> [PickleValue] {
    guard let mark = marks.popLast() else {
      throw malformed("there is no MARK on the stack")
    }
    let items = Array(stack[mark...])
    stack.removeSubrange(mark...)
    return items
  }

  private mutating func memoGet(_ index: Int) throws(CheckpointError) -> PickleValue {
    guard let value = memo[index] else {
      throw malformed("memo entry \(index) was never stored")
    }
    return value
  }

  // MARK: - Containers

  /// Deeper structures are refused: releasing one recurses once per level, and nothing
  /// torch.save writes comes near this.
  private static let maximumDepth = 100

  private func tooDeep() -> CheckpointError {
    unsupported("objects are nested more than \(Self.maximumDepth) levels deep")
  }

  private func embed(_ value: PickleValue) {
    switch value {
    case .list(let list): list.embedded = true
    case .dict(let dict): dict.embedded = true
    default: break
    }
  }

  private func tuple(_ items: [PickleValue]) throws(CheckpointError) -> PickleValue {
    var depth = 1
    for item in items {
      depth = max(depth, item.nestingDepth + 1)
      embed(item)
    }
    guard depth <= Self.maximumDepth else { throw tooDeep() }
    return .tuple(items, depth: depth)
  }

  /// The depth a container reaches by holding `items`. A list or dict already inside another
  /// object must not get deeper, or that object's recorded depth would be wrong; Python's
  /// pickler always fills a container before using it, so this only refuses crafted input.
  private func deepened(_ depth: Int, embedded: Bool, by items: [PickleValue])
    throws(CheckpointError) -> Int
  {
    var result = depth
    for item in items {
      result = max(result, item.nestingDepth + 1)
      embed(item)
    }
    guard result <= Self.maximumDepth else { throw tooDeep() }
    if embedded, result > depth {
      throw unsupported("a list or dict gets deeper after being placed in another object")
    }
    return result
  }

  private func append(_ items: [PickleValue], to list: PickleList) throws(CheckpointError) {
    list.depth = try deepened(list.depth, embedded: list.embedded, by: items)
    list.items += items
  }

  /// `items` alternates keys and values.
  private func setItems(_ items: [PickleValue], in dict: PickleDict) throws(CheckpointError) {
    dict.depth = try deepened(dict.depth, embedded: dict.embedded, by: items)
    for i in stride(from: 0, to: items.count - 1, by: 2) { dict.set(items[i], items[i + 1]) }
  }

  // MARK: - The machine

  mutating func run() throws(CheckpointError) -> PickleValue {
    while true {
      opcodeOffset = position
      guard let opcode = bytes.u8(position) else {
        opcodeName = "end of data"
        throw malformed("the pickle ends without a STOP opcode (truncated)")
      }
      position += 1
      guard let name = opcodeNames[opcode] else {
        opcodeName = String(format: "0x%02X", opcode)
        throw malformed(
          "byte 0x\(String(format: "%02X", opcode)) is not a pickle opcode (corrupt data)")
      }
      opcodeName = name

      switch opcode {
      case 0x80:  // PROTO
        let version = try readU8()
        guard version >= 2, version <= 5 else {
          throw unsupported("pickle protocol \(version) is not supported (2 to 5 are)")
        }
      case 0x95:  // FRAME: a length prefix for buffering; the opcodes inside are ordinary.
        _ = try readU64()
      case 0x2E:  // STOP
        let result = try pop()
        return result
      case 0x28:  // MARK
        marks.append(stack.count)
      case 0x30:  // POP
        _ = try pop()
      case 0x31:  // POP_MARK
        _ = try popToMark()
      case 0x32:  // DUP
        stack.append(try top())

      case 0x4E: stack.append(.none)
      case 0x88: stack.append(.bool(true))
      case 0x89: stack.append(.bool(false))
      case 0x4A:  // BININT: signed 32-bit
        stack.append(.int(Int(Int32(bitPattern: try readU32()))))
      case 0x4B: stack.append(.int(Int(try readU8())))
      case 0x4D: stack.append(.int(Int(try readU16())))
      case 0x8A:  // LONG1
        let n = Int(try readU8())
        stack.append(try readLong(length: n))
      case 0x8B:  // LONG4
        let n = Int(Int32(bitPattern: try readU32()))
        guard n >= 0 else { throw malformed("LONG4 has a negative length") }
        stack.append(try readLong(length: n))
      case 0x47:  // BINFLOAT: big-endian double
        let bits = try read(8)
        var raw: UInt64 = 0
        for i in 0..<8 { raw = raw << 8 | UInt64(bits.buffer[i]) }
        stack.append(.float(Double(bitPattern: raw)))

      case 0x58:  // BINUNICODE
        let n = try readLength(UInt64(try readU32()))
        stack.append(.string(try readUTF8(length: n)))
      case 0x8C:  // SHORT_BINUNICODE
        let n = Int(try readU8())
        stack.append(.string(try readUTF8(length: n)))
      case 0x8D:  // BINUNICODE8
        let n = try readLength(try readU64())
        stack.append(.string(try readUTF8(length: n)))
      case 0x54:  // BINSTRING: Python 2 str; torch's own pickles never contain one.
        let n = Int(Int32(bitPattern: try readU32()))
        guard n >= 0 else { throw malformed("BINSTRING has a negative length") }
        stack.append(.bytes(Array(try read(try readLength(UInt64(n))).buffer)))
      case 0x55:  // SHORT_BINSTRING
        let n = Int(try readU8())
        stack.append(.bytes(Array(try read(n).buffer)))
      case 0x42:  // BINBYTES
        let n = try readLength(UInt64(try readU32()))
        stack.append(.bytes(Array(try read(n).buffer)))
      case 0x43:  // SHORT_BINBYTES
        let n = Int(try readU8())
        stack.append(.bytes(Array(try read(n).buffer)))
      case 0x8E:  // BINBYTES8
        let n = try readLength(try readU64())
        stack.append(.bytes(Array(try read(n).buffer)))

      case 0x7D: stack.append(.dict(PickleDict()))
      case 0x5D: stack.append(.list(PickleList()))
      case 0x29: stack.append(.tuple([], depth: 1))
      case 0x64:  // DICT
        let items = try popToMark()
        guard items.count % 2 == 0 else { throw malformed("DICT has an odd number of items") }
        let dict = PickleDict()
        try setItems(items, in: dict)
        stack.append(.dict(dict))
      case 0x6C:  // LIST
        let list = PickleList()
        try append(try popToMark(), to: list)
        stack.append(.list(list))
      case 0x74: stack.append(try tuple(try popToMark()))
      case 0x85:
        let a = try pop()
        stack.append(try tuple([a]))
      case 0x86:
        let b = try pop()
        let a = try pop()
        stack.append(try tuple([a, b]))
      case 0x87:
        let c = try pop()
        let b = try pop()
        let a = try pop()
        stack.append(try tuple([a, b, c]))

      case 0x71: memo[Int(try readU8())] = try top()  // BINPUT
      case 0x72: memo[Int(try readU32())] = try top()  // LONG_BINPUT
      case 0x94: memo[memo.count] = try top()  // MEMOIZE
      case 0x68: stack.append(try memoGet(Int(try readU8())))  // BINGET
      case 0x6A: stack.append(try memoGet(Int(try readU32())))  // LONG_BINGET

      case 0x73:  // SETITEM
        let value = try pop()
        let key = try pop()
        guard case .dict(let dict) = try top() else {
          throw malformed("SETITEM on \(try top().kindDescription), not a dict")
        }
        try setItems([key, value], in: dict)
      case 0x75:  // SETITEMS
        let items = try popToMark()
        guard items.count % 2 == 0 else { throw malformed("SETITEMS has an odd number of items") }
        guard case .dict(let dict) = try top() else {
          throw malformed("SETITEMS on \(try top().kindDescription), not a dict")
        }
        try setItems(items, in: dict)
      case 0x61:  // APPEND
        let value = try pop()
        guard case .list(let list) = try top() else {
          throw malformed("APPEND on \(try top().kindDescription), not a list")
        }
        try append([value], to: list)
      case 0x65:  // APPENDS
        let items = try popToMark()
        guard case .list(let list) = try top() else {
          throw malformed("APPENDS on \(try top().kindDescription), not a list")
        }
        try append(items, to: list)

      case 0x63:  // GLOBAL "module\nname\n"
        let module = try readLine()
        let name = try readLine()
        stack.append(.global(try resolveGlobal(module: module, name: name)))
      case 0x93:  // STACK_GLOBAL
        let name = try pop()
        let module = try pop()
        guard case .string(let m) = module, case .string(let n) = name else {
          throw malformed("STACK_GLOBAL needs two strings")
        }
        stack.append(.global(try resolveGlobal(module: m, name: n)))
      case 0x52:  // REDUCE
        let arguments = try pop()
        let callable = try pop()
        guard case .tuple(let args, _) = arguments else {
          throw malformed("REDUCE arguments are \(arguments.kindDescription), not a tuple")
        }
        stack.append(try call(callable, args))
      case 0x81:  // NEWOBJ: cls.__new__(cls, *args)
        let arguments = try pop()
        let cls = try pop()
        guard case .tuple(let args, _) = arguments else {
          throw malformed("NEWOBJ arguments are \(arguments.kindDescription), not a tuple")
        }
        guard case .global(.orderedDict) = cls else {
          throw unsupported("NEWOBJ of \(cls.kindDescription) is not supported")
        }
        stack.append(try call(cls, args))
      case 0x62:  // BUILD: sets attributes (state) on the object below it.
        let state = try pop()
        let target = try top()
        switch target {
        case .dict, .tensor:
          // An OrderedDict state dict carries `_metadata` (per-module versions) as an
          // attribute; tensors carry Python attributes. Neither affects the weights.
          break
        default:
          throw unsupported(
            "BUILD on \(target.kindDescription) with \(state.kindDescription) is not supported")
        }
      case 0x51:  // BINPERSID
        let pid = try pop()
        do throws(CheckpointError) {
          stack.append(try persistentLoad(pid))
        } catch {
          // Persistent-load errors are about the archive; add where the pickle asked for it.
          switch error {
          case .malformed(let f, let reason):
            throw .malformed(file: f, reason: "\(reason) (\(source) byte \(opcodeOffset))")
          case .unsupported(let f, let reason):
            throw .unsupported(file: f, reason: "\(reason) (\(source) byte \(opcodeOffset))")
          default: throw error
          }
        }

      default:
        throw unsupported(
          "pickle opcode \(name) (0x\(String(format: "%02X", opcode))) is not supported; "
            + "torch.save never writes it for a state dict")
      }
    }
  }

  /// A little-endian two's-complement integer of `length` bytes (LONG1/LONG4).
  private mutating func readLong(length: Int) throws(CheckpointError) -> PickleValue {
    let view = try read(try readLength(UInt64(length)))
    guard length > 0 else { return .int(0) }
    // Beyond 8 bytes the value only fits an Int if the extra bytes are sign extension.
    let negative = view.buffer[length - 1] & 0x80 != 0
    if length > 8 {
      for i in 8..<length where view.buffer[i] != (negative ? 0xFF : 0) { return .largeInt }
    }
    var raw: UInt64 = negative ? UInt64.max : 0
    for i in (0..<min(length, 8)).reversed() {
      raw = raw << 8 | UInt64(view.buffer[i])
    }
    let value = Int64(bitPattern: raw)
    if length > 8, (value < 0) != negative { return .largeInt }
    return .int(Int(value))
  }

  private func resolveGlobal(module: String, name: String) throws(CheckpointError) -> PickleGlobal {
    guard let global = PickleGlobal(module: module, name: name) else {
      throw unsupported(
        "the pickle references the global \(module).\(name), which is not allowed in a weights-only "
          + "load (only tensors, storages and OrderedDict are)")
    }
    return global
  }

  // MARK: - Calls

  private func call(_ callable: PickleValue, _ args: [PickleValue]) throws(CheckpointError)
    -> PickleValue
  {
    guard case .global(let global) = callable else {
      throw malformed("cannot call \(callable.kindDescription)")
    }
    switch global {
    case .orderedDict:
      // torch.save (like Python's pickler) writes OrderedDict() and fills it by SETITEMS.
      guard args.isEmpty else {
        throw unsupported("OrderedDict called with \(args.count) arguments")
      }
      return .dict(PickleDict())

    case .rebuildTensorV2:
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      guard args.count == 6 || args.count == 7 else {
        throw malformed("_rebuild_tensor_v2 called with \(args.count) arguments instead of 6 or 7")
      }
      guard case .storage(let storage) = args[0] else {
        throw malformed("_rebuild_tensor_v2 storage is \(args[0].kindDescription)")
      }
      guard case .int(let offset) = args[1] else {
        throw malformed("_rebuild_tensor_v2 storage offset is \(args[1].kindDescription)")
      }
      let shape = try intTuple(args[2], what: "size")
      let strides = try intTuple(args[3], what: "stride")
      return .tensor(try makeTensor(storage, offset: offset, shape: shape, strides: strides))

    case .rebuildParameter, .rebuildParameterWithState:
      // (data, requires_grad, backward_hooks[, state])
      let expected = global == .rebuildParameter ? 3 : 4
      guard args.count == expected, case .tensor = args[0] else {
        throw malformed("\(global.name) called with unexpected arguments")
      }
      return args[0]

    case .rebuildFromTypeV2:
      // (func, new_type, args, state): a tensor subclass rebuilt by func(*args).
      guard args.count == 4, case .tuple(let inner, _) = args[2] else {
        throw malformed("\(global.name) called with unexpected arguments")
      }
      // Nesting it in itself would only recurse.
      if case .global(.rebuildFromTypeV2) = args[0] {
        throw unsupported("\(global.name) nested in itself is not supported")
      }
      guard case .global(let type) = args[1], type == .tensorClass || type == .parameterClass
      else {
        throw unsupported("tensors of type \(args[1].kindDescription) are not supported")
      }
      return try call(args[0], inner)

    case .codecsEncode:
      // Protocol 2 pickles Python bytes as _codecs.encode(text, "latin1").
      guard args.count == 2, case .string(let text) = args[0], case .string(let codec) = args[1],
        codec == "latin1" || codec == "latin-1"
      else {
        throw unsupported("_codecs.encode called with arguments other than (text, 'latin1')")
      }
      var out: [UInt8] = []
      for scalar in text.unicodeScalars {
        guard scalar.value < 256 else {
          throw malformed("latin1 text has a character above U+00FF")
        }
        out.append(UInt8(scalar.value))
      }
      return .bytes(out)

    case .tensorClass, .parameterClass, .storageType:
      throw unsupported("calling \(global.name) is not supported")
    }
  }

  private func intTuple(_ value: PickleValue, what: String) throws(CheckpointError) -> [Int] {
    guard case .tuple(let items, _) = value else {
      throw malformed("tensor \(what) is \(value.kindDescription), not a tuple")
    }
    var out: [Int] = []
    out.reserveCapacity(items.count)
    for item in items {
      guard case .int(let v) = item else {
        throw malformed("tensor \(what) contains \(item.kindDescription)")
      }
      out.append(v)
    }
    return out
  }

  /// Checks that the view stays inside its storage, with overflow-safe arithmetic.
  private func makeTensor(_ storage: PickleStorage, offset: Int, shape: [Int], strides: [Int])
    throws(CheckpointError) -> PickleTensor
  {
    let describe = "tensor view (offset \(offset), size \(shape), stride \(strides))"
    guard shape.count == strides.count, offset >= 0, shape.allSatisfy({ $0 >= 0 }),
      strides.allSatisfy({ $0 >= 0 })
    else {
      throw malformed("\(describe) is invalid")
    }
    var count = 1
    var lastIndex = offset
    for (size, stride) in zip(shape, strides) {
      let (c, o1) = count.multipliedReportingOverflow(by: size)
      guard !o1 else { throw malformed("\(describe) has too many elements") }
      count = c
      if size > 0 {
        let (extent, o2) = (size - 1).multipliedReportingOverflow(by: stride)
        let (sum, o3) = lastIndex.addingReportingOverflow(extent)
        guard !o2, !o3 else { throw malformed("\(describe) overflows") }
        lastIndex = sum
      }
    }
    if count > 0, lastIndex >= storage.elementCount {
      throw malformed(
        "\(describe) reaches element \(lastIndex) of storage \(storage.key), which has only "
          + "\(storage.elementCount)")
    }
    // Only overlapping (stride-0, expanded) views have more elements than their storage;
    // bounding them keeps a tiny hostile file from demanding a huge allocation.
    guard count <= storage.elementCount || count <= TorchArchive.expansionAllowance else {
      throw unsupported("\(describe) has \(count) elements, more than a checkpoint load allows")
    }
    return PickleTensor(
      storage: storage, offset: offset, shape: shape, strides: strides, elementCount: count)
  }
}

extension PickleGlobal: Equatable {}
