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
      TensorRecord(key: "full", storageKey: "0", storageElements: 24, size: [2, 3, 4], stride: [12, 4, 1]),
      // Transposed 4×6 (a .t() of a 6×4 matrix): element (i, j) at j·4 + i.
      TensorRecord(key: "transposed", storageKey: "0", storageElements: 24, size: [4, 6], stride: [1, 4]),
      // Rows 1..2 of a 6×4 matrix: storage offset 4.
      TensorRecord(key: "rows", storageKey: "0", storageElements: 24, offset: 4, size: [2, 4], stride: [4, 1]),
      // Every third element from offset 2, 3-D with a size-1 dimension of odd stride.
      TensorRecord(key: "strided", storageKey: "0", storageElements: 24, offset: 2, size: [3, 1, 2], stride: [6, 99, 3]),
      TensorRecord(key: "scalar", storageKey: "0", storageElements: 24, offset: 23, size: [], stride: []),
      TensorRecord(key: "empty", storageKey: "0", storageElements: 24, offset: 24, size: [0, 5], stride: [5, 1]),
      // An expanded (stride-0) view repeats elements.
      TensorRecord(key: "expanded", storageKey: "0", storageElements: 24, offset: 1, size: [3, 2], stride: [0, 1]),
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
    #expect(loaded.tensors["strided"] == Tensor(shape: [3, 1, 2], storage: [v[2], v[5], v[8], v[11], v[14], v[17]]))
    #expect(loaded.tensors["scalar"] == Tensor(shape: [], storage: [v[23]]))
    #expect(loaded.tensors["empty"] == Tensor(shape: [0, 5], storage: []))
    #expect(loaded.tensors["expanded"] == Tensor(shape: [3, 2], storage: [v[1], v[2], v[1], v[2], v[1], v[2]]))
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
      TensorRecord(key: "half", storageKey: "h", storageType: "HalfStorage", storageElements: 8, size: [8], stride: [1]),
      TensorRecord(key: "halfT", storageKey: "h", storageType: "HalfStorage", storageElements: 8, size: [2, 4], stride: [1, 2]),
      TensorRecord(key: "bf16", storageKey: "b", storageType: "BFloat16Storage", storageElements: 5, size: [5], stride: [1]),
      TensorRecord(key: "bn.num_batches_tracked", storageKey: "l", storageType: "LongStorage", storageElements: 4, offset: 1, size: [], stride: []),
      TensorRecord(key: "longs", storageKey: "l", storageType: "LongStorage", storageElements: 4, size: [4], stride: [1]),
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records),
      storages: [("h", uint16Bytes(halfBits)), ("b", uint16Bytes(bf16Bits)), ("l", int64Bytes(longs))])
    let loaded = try loadFile(bytes, named: "types.pt", in: dir)
    let half = try #require(loaded.tensors["half"])
    #expect(half.storage.map(\.bitPattern) == halfExpected.map(\.bitPattern))
    // Every float16 bit pattern widens exactly as Swift's own conversion does.
    let halfT = try #require(loaded.tensors["halfT"])
    #expect(halfT.storage == [0, 2, 4, 6, 1, 3, 5, 7].map { halfExpected[$0] })
    #expect(loaded.tensors["bf16"]?.storage == bf16Floats.map { Float(bitPattern: $0.bitPattern & 0xFFFF_0000) })
    #expect(loaded.tensors["bn.num_batches_tracked"] == Tensor(shape: [], storage: [7]))
    #expect(loaded.tensors["longs"]?.storage == [0, 7, -3, 0x1p40])
    #expect(loaded.dtypes == ["half": .float16, "halfT": .float16, "bf16": .bfloat16, "bn.num_batches_tracked": .int64, "longs": .int64])
  }

  @Test func everyHalfBitPatternWidensExactly() throws {
    let dir = try TemporaryDirectory()
    let all = (0...0xFFFF).map { UInt16($0) }
    let records = [TensorRecord(key: "all", storageKey: "0", storageType: "HalfStorage", storageElements: all.count, size: [all.count], stride: [1])]
    let bytes = TorchPickle.archive(pickle: TorchPickle.stateDict(records), storages: [("0", uint16Bytes(all))])
    let loaded = try #require(try loadFile(bytes, named: "half.pt", in: dir).tensors["all"])
    var wrong = 0
    for (i, bits) in all.enumerated() {
      let expected = Float(Float16(bitPattern: bits))
      let got = loaded.storage[i]
      let same = expected.isNaN ? (got.isNaN && got.sign == expected.sign) : got.bitPattern == expected.bitPattern
      if !same { wrong += 1 }
    }
    #expect(wrong == 0)
  }

  @Test(arguments: [false, true])
  func orderedDictRootParametersAndWrapper(protocol4: Bool) throws {
    let dir = try TemporaryDirectory()
    let records = [
      TensorRecord(key: "layer.weight", storageKey: "0", storageElements: 6, size: [2, 3], stride: [3, 1], parameter: true),
      TensorRecord(key: "layer.bias", storageKey: "1", storageElements: 2, size: [2], stride: [1], parameter: true),
      TensorRecord(key: "norm.running_mean", storageKey: "2", storageElements: 2, size: [2], stride: [1]),
    ]
    let storages: [(key: String, bytes: [UInt8])] = [
      ("0", float32Bytes([1, 2, 3, 4, 5, 6])), ("1", float32Bytes([-1, -2])), ("2", float32Bytes([0.25, 0.5])),
    ]
    for wrapper in [false, true] {
      let pickle = TorchPickle.stateDict(records, orderedDictMetadata: true, wrapper: wrapper, protocol4: protocol4)
      let loaded = try loadFile(TorchPickle.archive(pickle: pickle, storages: storages), named: "od.pt", in: dir)
      #expect(loaded.keys == ["layer.weight", "layer.bias", "norm.running_mean"])
      #expect(loaded.unwrappedKey == (wrapper ? "state_dict" : nil))
      #expect(loaded.tensors["layer.weight"] == Tensor(shape: [2, 3], storage: [1, 2, 3, 4, 5, 6]))
      #expect(loaded.tensors["layer.bias"] == Tensor(shape: [2], storage: [-1, -2]))
      #expect(loaded.tensors["norm.running_mean"] == Tensor(shape: [2], storage: [0.25, 0.5]))
    }
  }

  @Test func zip64ExtraFieldsAndManyEntries() throws {
    let dir = try TemporaryDirectory()
    // 300 tensors: memo indices pass 255, so LONG_BINPUT / LONG_BINGET are exercised too.
    let records = (0..<300).map {
      TensorRecord(key: "t\($0)", storageKey: "\($0)", storageElements: 3, size: [3], stride: [1])
    }
    let storages = (0..<300).map { i in (key: "\(i)", bytes: float32Bytes([Float(i), Float(-i), 0.5])) }
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
    let records = [TensorRecord(key: "w", storageKey: "0", storageElements: 3, size: [3], stride: [1])]
    let bytes = TorchPickle.archive(pickle: TorchPickle.stateDict(records), storages: [("0", float32Bytes([1, 2, 3]))]) {
      $0.zip64EndRecords = false
      $0.alignment = 3
    }
    #expect(try loadFile(bytes, named: "plain.pt", in: dir).tensors["w"]?.storage == [1, 2, 3])
  }

  @Test func loadingFromMemoryMatchesLoadingFromFile() throws {
    let dir = try TemporaryDirectory()
    let records = [TensorRecord(key: "w", storageKey: "0", storageElements: 2, size: [2], stride: [1])]
    let bytes = TorchPickle.archive(pickle: TorchPickle.stateDict(records), storages: [("0", float32Bytes([4, 5]))])
    let fromFile = try loadFile(bytes, named: "m.pt", in: dir)
    let fromMemory = try LoadedCheckpoint(data: Data(bytes), file: "memory.pt")
    #expect(fromFile.tensors == fromMemory.tensors)
  }
}
