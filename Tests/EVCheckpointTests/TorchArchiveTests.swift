import EVCheckpoint
import EVTensor
import Foundation
import Testing

/// What torch.save can produce beyond the fixtures: views, shared storages, other element
/// types, OrderedDict roots, Parameters, newer pickle protocols, zip64 archives.
@Suite struct TorchArchiveTests {
  static let values: [Float] = (0..<24).map { Float($0) * 0.5 - 3 }

  @Test func viewsWithStridesOffsetsAndSharedStorage() throws {
    let dir = try TemporaryDirectory()
    // One storage of 24 floats, seen four ways.
    let records = [
      TensorRecord(
        key: "full", storageKey: "0", storageElements: 24, size: [2, 3, 4], stride: [12, 4, 1]),
      // Transposed 4×6 (a .t() of a 6×4 matrix): element (i, j) at j·4 + i.
      TensorRecord(
        key: "transposed", storageKey: "0", storageElements: 24, size: [4, 6], stride: [1, 4]),
      // Rows 1..2 of a 6×4 matrix: storage offset 4.
      TensorRecord(
        key: "rows", storageKey: "0", storageElements: 24, offset: 4, size: [2, 4], stride: [4, 1]),
      // Every third element from offset 2, 3-D with a size-1 dimension of odd stride.
      TensorRecord(
        key: "strided", storageKey: "0", storageElements: 24, offset: 2, size: [3, 1, 2],
        stride: [6, 99, 3]),
      TensorRecord(
        key: "scalar", storageKey: "0", storageElements: 24, offset: 23, size: [], stride: []),
      TensorRecord(
        key: "empty", storageKey: "0", storageElements: 24, offset: 24, size: [0, 5],
        stride: [5, 1]),
      // An expanded (stride-0) view repeats elements.
      TensorRecord(
        key: "expanded", storageKey: "0", storageElements: 24, offset: 1, size: [3, 2],
        stride: [0, 1]),
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records), storages: [("0", float32Bytes(Self.values))])
    let loaded = try loadFile(bytes, named: "views.pt", in: dir)
    let v = Self.values
    #expect(loaded.keys == records.map(\.key))
    #expect(loaded.tensors["full"] == Tensor(shape: [2, 3, 4], storage: v))
    var transposed: [Float] = []
    for i in 0..<4 { for j in 0..<6 { transposed.append(v[j * 4 + i]) } }
    #expect(loaded.tensors["transposed"] == Tensor(shape: [4, 6], storage: transposed))
    #expect(loaded.tensors["rows"] == Tensor(shape: [2, 4], storage: Array(v[4..<12])))
    #expect(
      loaded.tensors["strided"]
        == Tensor(shape: [3, 1, 2], storage: [v[2], v[5], v[8], v[11], v[14], v[17]]))
    #expect(loaded.tensors["scalar"] == Tensor(shape: [], storage: [v[23]]))
    #expect(loaded.tensors["empty"] == Tensor(shape: [0, 5], storage: []))
    #expect(
      loaded.tensors["expanded"]
        == Tensor(shape: [3, 2], storage: [v[1], v[2], v[1], v[2], v[1], v[2]]))
  }

  @Test func halfBFloatAndIntegerStoragesWidenExactly() throws {
    let dir = try TemporaryDirectory()
    // float16: 1, -2, 65504 (max), smallest subnormal, largest subnormal, -0, +inf, 1/3 rounded.
    let halfBits: [UInt16] = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x8000, 0x7C00, 0x3555]
    let halfExpected: [Float] = [
      1, -2, 65504, 0x1p-24, 1023 * 0x1p-24, -0.0, .infinity, Float(Float16(bitPattern: 0x3555)),
    ]
    // bfloat16 is the top half of a float32.
    let bf16Floats: [Float] = [1, -2.5, 3.140625, 1e30, -1e-30]
    let bf16Bits = bf16Floats.map { UInt16($0.bitPattern >> 16) }
    let longs: [Int64] = [0, 7, -3, 1 << 40]
    let records = [
      TensorRecord(
        key: "half", storageKey: "h", storageType: "HalfStorage", storageElements: 8, size: [8],
        stride: [1]),
      TensorRecord(
        key: "halfT", storageKey: "h", storageType: "HalfStorage", storageElements: 8,
        size: [2, 4], stride: [1, 2]),
      TensorRecord(
        key: "bf16", storageKey: "b", storageType: "BFloat16Storage", storageElements: 5, size: [5],
        stride: [1]),
      TensorRecord(
        key: "bn.num_batches_tracked", storageKey: "l", storageType: "LongStorage",
        storageElements: 4, offset: 1, size: [], stride: []),
      TensorRecord(
        key: "longs", storageKey: "l", storageType: "LongStorage", storageElements: 4, size: [4],
        stride: [1]),
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records),
      storages: [
        ("h", uint16Bytes(halfBits)), ("b", uint16Bytes(bf16Bits)), ("l", int64Bytes(longs)),
      ])
    let loaded = try loadFile(bytes, named: "types.pt", in: dir, allowNonFinite: true)
    let half = try #require(loaded.tensors["half"])
    #expect(half.storage.map(\.bitPattern) == halfExpected.map(\.bitPattern))
    // Every float16 bit pattern widens exactly as Swift's own conversion does.
    let halfT = try #require(loaded.tensors["halfT"])
    #expect(halfT.storage == [0, 2, 4, 6, 1, 3, 5, 7].map { halfExpected[$0] })
    #expect(
      loaded.tensors["bf16"]?.storage
        == bf16Floats.map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) })
    #expect(loaded.tensors["bn.num_batches_tracked"] == Tensor(shape: [], storage: [7]))
    #expect(loaded.tensors["longs"]?.storage == [0, 7, -3, 0x1p40])
    #expect(
      loaded.dtypes == [
        "half": .float16, "halfT": .float16, "bf16": .bfloat16, "bn.num_batches_tracked": .int64,
        "longs": .int64,
      ])
  }

  @Test func otherRealStorageTypesConvert() throws {
    let dir = try TemporaryDirectory()
    let records = [
      TensorRecord(
        key: "double", storageKey: "d", storageType: "DoubleStorage", storageElements: 2,
        size: [2], stride: [1]),
      TensorRecord(
        key: "int", storageKey: "i", storageType: "IntStorage", storageElements: 2, size: [2],
        stride: [1]),
      TensorRecord(
        key: "short", storageKey: "s", storageType: "ShortStorage", storageElements: 2,
        size: [2], stride: [1]),
      TensorRecord(
        key: "char", storageKey: "c", storageType: "CharStorage", storageElements: 2, size: [2],
        stride: [1]),
      TensorRecord(
        key: "byte", storageKey: "b", storageType: "ByteStorage", storageElements: 4, size: [2],
        stride: [2]),
      TensorRecord(
        key: "mask", storageKey: "m", storageType: "BoolStorage", storageElements: 3, size: [3],
        stride: [1]),
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records),
      storages: [
        (
          "d",
          int64Bytes([Int64(bitPattern: (2.5).bitPattern), Int64(bitPattern: (1e-50).bitPattern)])
        ),
        (
          "i",
          float32Bytes([Float(bitPattern: UInt32(bitPattern: -5)), Float(bitPattern: 1 << 30)])
        ),
        ("s", uint16Bytes([UInt16(bitPattern: -2), 7])),
        ("c", [0xFE, 0x05]),
        ("b", [200, 9, 100, 9]),
        ("m", [1, 0, 1]),
      ])
    let loaded = try loadFile(bytes, named: "ints.pt", in: dir)
    #expect(loaded.tensors["double"]?.storage == [2.5, 0])
    #expect(loaded.tensors["int"]?.storage == [-5, 0x1p30])
    #expect(loaded.tensors["short"]?.storage == [-2, 7])
    #expect(loaded.tensors["char"]?.storage == [-2, 5])
    #expect(loaded.tensors["byte"]?.storage == [200, 100])
    #expect(loaded.tensors["mask"]?.storage == [1, 0, 1])
    #expect(loaded.dtypes["double"] == .float64 && loaded.dtypes["mask"] == .bool)
  }

  @Test func everyHalfBitPatternWidensExactly() throws {
    let dir = try TemporaryDirectory()
    let all = (0...0xFFFF).map { UInt16($0) }
    let records = [
      TensorRecord(
        key: "all", storageKey: "0", storageType: "HalfStorage", storageElements: all.count,
        size: [all.count], stride: [1])
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records), storages: [("0", uint16Bytes(all))])
    let loaded = try #require(
      try loadFile(bytes, named: "half.pt", in: dir, allowNonFinite: true).tensors["all"])
    var wrong = 0
    for (i, bits) in all.enumerated() {
      let expected = Float(Float16(bitPattern: bits))
      let got = loaded.storage[i]
      let same =
        expected.isNaN
        ? (got.isNaN && got.sign == expected.sign) : got.bitPattern == expected.bitPattern
      if !same { wrong += 1 }
    }
    #expect(wrong == 0)
  }

  @Test(arguments: [false, true])
  func orderedDictRootParametersAndWrapper(protocol4: Bool) throws {
    let dir = try TemporaryDirectory()
    let records = [
      TensorRecord(
        key: "layer.weight", storageKey: "0", storageElements: 6, size: [2, 3], stride: [3, 1],
        parameter: true),
      TensorRecord(
        key: "layer.bias", storageKey: "1", storageElements: 2, size: [2], stride: [1],
        parameter: true),
      TensorRecord(
        key: "norm.running_mean", storageKey: "2", storageElements: 2, size: [2], stride: [1]),
    ]
    let storages: [(key: String, bytes: [UInt8])] = [
      ("0", float32Bytes([1, 2, 3, 4, 5, 6])), ("1", float32Bytes([-1, -2])),
      ("2", float32Bytes([0.25, 0.5])),
    ]
    for wrapper in [false, true] {
      let pickle = TorchPickle.stateDict(
        records, orderedDictMetadata: true, wrapper: wrapper, protocol4: protocol4)
      let loaded = try loadFile(
        TorchPickle.archive(pickle: pickle, storages: storages), named: "od.pt", in: dir)
      #expect(loaded.keys == ["layer.weight", "layer.bias", "norm.running_mean"])
      #expect(loaded.unwrappedKey == (wrapper ? "state_dict" : nil))
      #expect(
        loaded.tensors["layer.weight"] == Tensor(shape: [2, 3], storage: [1, 2, 3, 4, 5, 6]))
      #expect(loaded.tensors["layer.bias"] == Tensor(shape: [2], storage: [-1, -2]))
      #expect(loaded.tensors["norm.running_mean"] == Tensor(shape: [2], storage: [0.25, 0.5]))
    }
  }

  /// A training checkpoint: the state dict beside entries of every other kind, which the
  /// loader must parse (each opcode) and then ignore.
  @Test func wrapperEntriesBesidesStateDictAreIgnored() throws {
    let dir = try TemporaryDirectory()
    let inner = TorchPickle.stateDict([
      TensorRecord(key: "w", storageKey: "0", storageElements: 2, size: [2], stride: [1])
    ])
    var p = PickleBuilder()
    p.emptyDict()
    p.mark()
    p.string("lr")
    p.op(0x47)  // BINFLOAT 0.5, big-endian
    p.bytes += [0x3F, 0xE0, 0, 0, 0, 0, 0, 0]
    p.string("nothing")
    p.none()
    p.string("huge")
    p.op(0x8A)  // LONG1: 2^70, wider than 64 bits
    p.bytes += [9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40]
    p.string("long4")
    p.op(0x8B)  // LONG4: -2
    p.bytes += [1, 0, 0, 0, 0xFE]
    p.string("tags")
    p.op(0x5D)  // EMPTY_LIST
    p.string("a")
    p.op(0x61)  // APPEND
    p.mark()
    p.global("_codecs", "encode")
    p.string("\u{00E9}x")
    p.string("latin1")
    p.op(0x86)
    p.reduce()
    p.op(0x43)  // SHORT_BINBYTES
    p.bytes += [2, 0xAB, 0xCD]
    p.op(0x42)  // BINBYTES
    p.bytes += [1, 0, 0, 0, 0x01]
    p.op(0x55)  // SHORT_BINSTRING
    p.bytes += [1, 0x7A]
    p.op(0x65)  // APPENDS
    p.string("optimizer")
    p.mark()
    p.string("step")
    p.int(1000)
    p.string("betas")
    p.mark()
    p.int(9)
    p.int(-70000)
    p.op(0x6C)  // LIST
    p.op(0x64)  // DICT
    p.string("scheduler")
    p.global("collections", "OrderedDict")
    p.emptyTuple()
    p.op(0x81)  // NEWOBJ
    p.op(0x32)  // DUP
    p.op(0x30)  // POP
    p.mark()
    p.int(1)
    p.int(2)
    p.op(0x31)  // POP_MARK
    p.string("flag")
    p.bool(true)
    p.setItems()
    // Splice in the state dict: the inner pickle minus its PROTO header and STOP.
    p.string("state_dict")
    var body = Array(inner.dropFirst(2).dropLast())
    // Its memo indices would collide with ours; shift them past everything used so far.
    body = Self.shiftMemo(body, by: 200)
    p.bytes += body
    p.op(0x73)  // SETITEM
    p.stop()
    let loaded = try loadFile(
      TorchPickle.archive(pickle: p.bytes, storages: [("0", float32Bytes([1.5, -1.5]))]),
      named: "training.pt", in: dir)
    #expect(loaded.unwrappedKey == "state_dict")
    #expect(loaded.tensors == ["w": Tensor(shape: [2], storage: [1.5, -1.5])])
  }

  /// Rewrites BINPUT/BINGET arguments of a builder-made pickle to LONG_ variants offset by `by`.
  static func shiftMemo(_ pickle: [UInt8], by shift: Int) -> [UInt8] {
    // Re-emit by walking the opcodes the builder uses; arguments are copied verbatim.
    var out: [UInt8] = []
    var i = 0
    func copy(_ n: Int) {
      out += pickle[i..<(i + n)]
      i += n
    }
    while i < pickle.count {
      let op = pickle[i]
      i += 1
      switch op {
      case 0x71, 0x68:  // BINPUT, BINGET
        out.append(op == 0x71 ? 0x72 : 0x6A)
        out.le32(UInt32(Int(pickle[i]) + shift))
        i += 1
      case 0x72, 0x6A:
        let v =
          Int(pickle[i]) | Int(pickle[i + 1]) << 8 | Int(pickle[i + 2]) << 16 | Int(pickle[i + 3])
          << 24
        out.append(op)
        out.le32(UInt32(v + shift))
        i += 4
      case 0x58:  // BINUNICODE
        let n =
          Int(pickle[i]) | Int(pickle[i + 1]) << 8 | Int(pickle[i + 2]) << 16 | Int(pickle[i + 3])
          << 24
        out.append(op)
        copy(4 + n)
      case 0x63:  // GLOBAL: two lines
        out.append(op)
        var lines = 0
        while lines < 2 {
          if pickle[i] == 0x0A { lines += 1 }
          copy(1)
        }
      case 0x4B:
        out.append(op)
        copy(1)
      case 0x4D:
        out.append(op)
        copy(2)
      case 0x4A:
        out.append(op)
        copy(4)
      case 0x8A:
        out.append(op)
        copy(1 + Int(pickle[i]))
      default: out.append(op)
      }
    }
    return out
  }

  @Test func wideIntegerAsTensorSizeIsRejected() throws {
    let dir = try TemporaryDirectory()
    var p = PickleBuilder()
    p.emptyDict()
    p.string("x")
    p.global("torch._utils", "_rebuild_tensor_v2")
    p.mark()
    p.mark()
    p.string("storage")
    p.global("torch", "FloatStorage")
    p.string("0")
    p.string("cpu")
    p.int(1)
    p.tuple()
    p.persistentID()
    p.int(0)
    p.op(0x8A)  // size (2^70,)
    p.bytes += [9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40]
    p.op(0x85)
    p.intTuple([1])
    p.bool(false)
    p.none()
    p.tuple()
    p.reduce()
    p.op(0x73)
    p.stop()
    let url = try dir.file(
      "wide.pt", TorchPickle.archive(pickle: p.bytes, storages: [("0", float32Bytes([1]))]))
    BadFileTests.expectFailure(url, .malformed, ["size", "wider than 64 bits"])
  }

  @Test func zip64ExtraFieldsAndManyEntries() throws {
    let dir = try TemporaryDirectory()
    // 300 tensors: memo indices pass 255, so LONG_BINPUT / LONG_BINGET are exercised too.
    let records = (0..<300).map {
      TensorRecord(key: "t\($0)", storageKey: "\($0)", storageElements: 3, size: [3], stride: [1])
    }
    let storages = (0..<300).map { i in
      (key: "\(i)", bytes: float32Bytes([Float(i), Float(-i), 0.5]))
    }
    let bytes = TorchPickle.archive(pickle: TorchPickle.stateDict(records), storages: storages) {
      $0.zip64ExtraFields = true
    }
    let loaded = try loadFile(bytes, named: "zip64.pt", in: dir)
    #expect(loaded.tensors.count == 300)
    for i in [0, 1, 255, 256, 299] {
      #expect(loaded.tensors["t\(i)"]?.storage == [Float(i), Float(-i), 0.5])
    }
  }

  @Test func plainZipWithoutZip64RecordsAndUnalignedData() throws {
    let dir = try TemporaryDirectory()
    let records = [
      TensorRecord(key: "w", storageKey: "0", storageElements: 3, size: [3], stride: [1])
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records), storages: [("0", float32Bytes([1, 2, 3]))]
    ) {
      $0.zip64EndRecords = false
      $0.alignment = 3
    }
    #expect(try loadFile(bytes, named: "plain.pt", in: dir).tensors["w"]?.storage == [1, 2, 3])
  }

  @Test func loadingFromMemoryMatchesLoadingFromFile() throws {
    let dir = try TemporaryDirectory()
    let records = [
      TensorRecord(key: "w", storageKey: "0", storageElements: 2, size: [2], stride: [1])
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records), storages: [("0", float32Bytes([4, 5]))])
    let fromFile = try loadFile(bytes, named: "m.pt", in: dir)
    let fromMemory = try LoadedCheckpoint(data: Data(bytes), file: "memory.pt")
    #expect(fromFile.tensors == fromMemory.tensors)
  }
}
