import EVCheckpoint
import EVTensor
import Foundation
import TestSupport
import Testing

/// Damaged, hostile and wrong files: each must give the right error case, a message naming
/// the file and the problem, and never a crash or a partial load.
@Suite struct BadFileTests {
  enum Kind { case unreadable, malformed, unsupported }

  /// Expects loading `url` to fail with `kind`, the file's path in the description, and each
  /// of `fragments` in it (case-insensitive).
  static func expectFailure(
    _ url: URL, _ kind: Kind, _ fragments: [String],
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    do {
      let loaded = try LoadedCheckpoint(contentsOf: url)
      Issue.record(
        "\(url.lastPathComponent) loaded \(loaded.tensors.count) tensors instead of failing",
        sourceLocation: sourceLocation)
    } catch {
      let matches =
        switch (error, kind) {
        case (.unreadable, .unreadable), (.malformed, .malformed), (.unsupported, .unsupported):
          true
        default: false
        }
      #expect(matches, "wrong error case: \(error)", sourceLocation: sourceLocation)
      #expect(error.file == url.path, sourceLocation: sourceLocation)
      let text = error.description.lowercased()
      #expect(text.contains(url.path.lowercased()), "\(error)", sourceLocation: sourceLocation)
      for fragment in fragments {
        #expect(
          text.contains(fragment.lowercased()), "missing \"\(fragment)\" in: \(error)",
          sourceLocation: sourceLocation)
      }
    }
  }

  /// A small valid archive and its pieces, for corrupting.
  static let records = [
    TensorRecord(
      key: "a.weight", storageKey: "0", storageElements: 6, size: [2, 3], stride: [3, 1]),
    TensorRecord(key: "a.bias", storageKey: "1", storageElements: 2, size: [2], stride: [1]),
    TensorRecord(
      key: "bn.num_batches_tracked", storageKey: "2", storageType: "LongStorage",
      storageElements: 1, size: [], stride: []),
  ]
  static let storages: [(key: String, bytes: [UInt8])] = [
    ("0", float32Bytes([1, 2, 3, 4, 5, 6])), ("1", float32Bytes([7, 8])), ("2", int64Bytes([5])),
  ]
  static var pickle: [UInt8] { TorchPickle.stateDict(records) }

  @Test func validBaseArchiveLoads() throws {
    let dir = try TemporaryDirectory()
    let loaded = try loadFile(
      TorchPickle.archive(pickle: Self.pickle, storages: Self.storages), named: "ok.pt", in: dir)
    #expect(loaded.tensors["a.bias"]?.storage == [7, 8])
    #expect(loaded.tensors["bn.num_batches_tracked"]?.storage == [5])
  }

  @Test func truncatedArchives() throws {
    let dir = try TemporaryDirectory()
    let original = try Data(contentsOf: try Fixtures.url("models/tiny-l.pt"))
    let n = original.count
    for cut in [4, 29, 1000, 48_000, n / 2, n - 200, n - 98, n - 42, n - 22, n - 1] {
      let url = try dir.file("tiny-l.cut\(cut).pt", original.prefix(cut))
      Self.expectFailure(url, .malformed, ["truncated"])
    }
  }

  @Test func truncatedSafetensors() throws {
    let dir = try TemporaryDirectory()
    let original = try Data(contentsOf: try Fixtures.url("models/tiny-l.safetensors"))
    let n = original.count
    for cut in [3, 8, 9, 500, n / 2, n - 4] {
      let url = try dir.file("tiny-l.cut\(cut).safetensors", original.prefix(cut))
      Self.expectFailure(url, .malformed, ["truncated"])
    }
  }

  @Test func byteFlippedPickleFailsItsChecksum() throws {
    let dir = try TemporaryDirectory()
    var zip = ZipBuilder()
    var pickle = Self.pickle
    let crc = referenceCRC32(pickle)
    pickle[pickle.count / 2] ^= 0x20
    zip.entries.append(.init(name: "model/data.pkl", data: pickle, recordedCRC: crc))
    for s in Self.storages { zip.add("model/data/\(s.key)", s.bytes) }
    let url = try dir.file("flipped.pt", zip.build())
    Self.expectFailure(url, .malformed, ["model/data.pkl", "corrupt", "crc"])
  }

  @Test func byteFlippedStorageFailsItsChecksum() throws {
    let dir = try TemporaryDirectory()
    var zip = ZipBuilder()
    zip.add("model/data.pkl", Self.pickle)
    var weights = Self.storages[0].bytes
    let crc = referenceCRC32(weights)
    weights[5] ^= 0x01
    zip.entries.append(.init(name: "model/data/0", data: weights, recordedCRC: crc))
    for s in Self.storages.dropFirst() { zip.add("model/data/\(s.key)", s.bytes) }
    let url = try dir.file("flipped-storage.pt", zip.build())
    Self.expectFailure(url, .malformed, ["model/data/0", "crc"])
    // With checksums off the same bytes load, flipped value and all.
    let unchecked = try LoadedCheckpoint(contentsOf: url, verifyChecksums: false)
    #expect(unchecked.tensors["a.weight"]?.storage[1] != 2)
  }

  /// Every single-byte corruption of the pickle, with a matching checksum (as if the file had
  /// been written wrong): the loader must answer with an error or a complete load, never crash.
  @Test func everyPickleByteCorruptionIsHandled() throws {
    let pickle = Self.pickle
    var errors = 0
    var loads = 0
    for position in 0..<pickle.count {
      for mask: UInt8 in [0xFF, 0x01, 0x80] {
        var corrupted = pickle
        corrupted[position] ^= mask
        let bytes = TorchPickle.archive(pickle: corrupted, storages: Self.storages)
        do {
          let loaded = try LoadedCheckpoint(data: Data(bytes), file: "fuzz.pt")
          // A surviving load is complete: every tensor has its full element count.
          for (key, t) in loaded.tensors { #expect(t.count == t.shape.reduce(1, *), "\(key)") }
          loads += 1
        } catch {
          #expect(error.file == "fuzz.pt")
          errors += 1
        }
      }
    }
    #expect(errors > pickle.count)
    #expect(loads > 0)  // flips inside key strings still give a valid, if renamed, state dict
  }

  @Test func unsupportedOpcodeIsNamedWithItsOffset() throws {
    let dir = try TemporaryDirectory()
    // An INST opcode (protocol 0 object construction) right after PROTO 2.
    var pickle: [UInt8] = [0x80, 0x02]
    pickle += Array("ibuiltins\nobject\n".utf8)
    pickle += [0x2E]
    let url = try dir.file("inst.pt", TorchPickle.archive(pickle: pickle, storages: []))
    Self.expectFailure(url, .unsupported, ["opcode INST", "byte 2", "model/data.pkl"])

    // An EXT1 inside an otherwise normal state dict.
    var p = Self.pickle
    p.insert(contentsOf: [0x82, 0x01], at: p.count - 1)
    let url2 = try dir.file("ext1.pt", TorchPickle.archive(pickle: p, storages: Self.storages))
    Self.expectFailure(url2, .unsupported, ["EXT1", "byte \(p.count - 3)"])
  }

  @Test func nonAllowListedGlobalsAreRefused() throws {
    let dir = try TemporaryDirectory()
    var p = PickleBuilder()
    p.global("os", "system")
    p.string("echo hi")
    p.op(0x85)
    p.reduce()
    p.stop()
    let url = try dir.file("evil.pt", TorchPickle.archive(pickle: p.bytes, storages: []))
    Self.expectFailure(url, .unsupported, ["os.system", "not allowed"])

    var q = PickleBuilder(protocol4: true)
    q.global("builtins", "eval")
    q.stop()
    let url2 = try dir.file("evil4.pt", TorchPickle.archive(pickle: q.bytes, storages: []))
    Self.expectFailure(url2, .unsupported, ["builtins.eval", "STACK_GLOBAL"])
  }

  @Test func notACheckpoint() throws {
    let dir = try TemporaryDirectory()
    let text = try dir.file(
      "notes.pt", Array("These are my notes about the model.\nNothing else.\n".utf8))
    Self.expectFailure(text, .malformed, ["neither a PyTorch archive", "text"])
    let png = try dir.file("image.pt", try Data(contentsOf: try Fixtures.url("images/chelsea.png")))
    Self.expectFailure(png, .malformed, ["neither a PyTorch archive", "PNG"])
    let json = try dir.file("config.safetensors", Array("{\"a\": 1, \"b\": [1, 2, 3]}".utf8))
    Self.expectFailure(json, .malformed, ["neither a PyTorch archive"])
    let empty = try dir.file("empty.pt", [UInt8]())
    Self.expectFailure(empty, .malformed, ["empty"])
    let tiny = try dir.file("tiny.pt", [0x01, 0x02, 0x03])
    Self.expectFailure(tiny, .malformed, ["only 3 bytes"])
    Self.expectFailure(dir.url.appendingPathComponent("absent.pt"), .unreadable, ["no such file"])
    Self.expectFailure(dir.url, .unreadable, ["directory"])
  }

  @Test func legacyPickleCheckpointAsksToResave() throws {
    let dir = try TemporaryDirectory()
    // torch.save(_use_new_zipfile_serialization=False) starts with the pickled magic number.
    let legacy: [UInt8] = [
      0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E,
    ]
    let url = try dir.file("old.pth", legacy + [UInt8](repeating: 0, count: 64))
    Self.expectFailure(url, .unsupported, ["legacy", "re-save"])
  }

  @Test func archiveStructureProblems() throws {
    let dir = try TemporaryDirectory()

    let missing = TorchPickle.archive(
      pickle: Self.pickle, storages: Array(Self.storages.dropFirst()))
    Self.expectFailure(
      try dir.file("missing.pt", missing), .malformed, ["model/data/0", "missing"])

    let compressed = TorchPickle.archive(pickle: Self.pickle, storages: Self.storages) {
      $0.entries[$0.entries.firstIndex { $0.name == "model/data/1" }!].method = 8
    }
    Self.expectFailure(
      try dir.file("deflate.pt", compressed), .unsupported,
      ["model/data/1", "compressed", "deflate"])

    let compressedPickle = TorchPickle.archive(pickle: Self.pickle, storages: Self.storages) {
      $0.entries[0].method = 8
    }
    Self.expectFailure(
      try dir.file("deflate-pkl.pt", compressedPickle), .unsupported, ["data.pkl", "compressed"])

    var wrongSize = Self.storages
    wrongSize[1].bytes.removeLast(4)
    let short = TorchPickle.archive(pickle: Self.pickle, storages: wrongSize)
    Self.expectFailure(
      try dir.file("short.pt", short), .malformed, ["model/data/1", "4 bytes", "2 float32"])

    var zip = ZipBuilder()
    zip.add("weights/readme.txt", Array("hello".utf8))
    Self.expectFailure(
      try dir.file("other.zip", zip.build()), .malformed, ["no data.pkl", "weights/readme.txt"])

    let bigEndian = TorchPickle.archive(pickle: Self.pickle, storages: Self.storages) {
      $0.entries[$0.entries.firstIndex { $0.name == "model/byteorder" }!].data = Array("big".utf8)
    }
    Self.expectFailure(try dir.file("be.pt", bigEndian), .unsupported, ["byte order"])

    let torchScript = TorchPickle.archive(pickle: Self.pickle, storages: Self.storages) {
      $0.add("model/constants.pkl", [0x80, 0x02, 0x29, 0x2E])
      $0.add("model/code/__torch__.py", Array("class M: pass".utf8))
    }
    Self.expectFailure(try dir.file("script.pt", torchScript), .unsupported, ["TorchScript"])
  }

  @Test func unsupportedStorageType() throws {
    let dir = try TemporaryDirectory()
    let records = [
      TensorRecord(
        key: "c", storageKey: "0", storageType: "ComplexFloatStorage", storageElements: 2,
        size: [2], stride: [1])
    ]
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict(records), storages: [("0", [UInt8](repeating: 0, count: 16))])
    Self.expectFailure(
      try dir.file("complex.pt", bytes), .unsupported,
      ["tensor c", "complex64", "ComplexFloatStorage", "no float32 equivalent"])

    let qint = [
      TensorRecord(
        key: "q", storageKey: "0", storageType: "QInt8Storage", storageElements: 2, size: [2],
        stride: [1])
    ]
    let bytes2 = TorchPickle.archive(
      pickle: TorchPickle.stateDict(qint), storages: [("0", [0, 0])])
    Self.expectFailure(try dir.file("qint.pt", bytes2), .unsupported, ["torch.QInt8Storage"])
  }

  @Test func viewsOutsideTheirStorage() throws {
    let dir = try TemporaryDirectory()
    let cases: [(String, TensorRecord)] = [
      (
        "past-end",
        TensorRecord(
          key: "x", storageKey: "0", storageElements: 6, offset: 1, size: [2, 3], stride: [3, 1])
      ),
      (
        "big-stride",
        TensorRecord(key: "x", storageKey: "0", storageElements: 6, size: [2, 3], stride: [4, 1])
      ),
      (
        "overflow",
        TensorRecord(
          key: "x", storageKey: "0", storageElements: 6, size: [2, 3], stride: [Int.max / 2, 1])
      ),
    ]
    for (name, record) in cases {
      let bytes = TorchPickle.archive(
        pickle: TorchPickle.stateDict([record]),
        storages: [("0", float32Bytes([1, 2, 3, 4, 5, 6]))])
      Self.expectFailure(try dir.file("\(name).pt", bytes), .malformed, ["storage 0"])
    }
    // A stride-0 view may repeat elements, but not into a huge allocation from a tiny file.
    let expanded = TensorRecord(
      key: "x", storageKey: "0", storageElements: 6, size: [1 << 20, 1 << 20], stride: [0, 0])
    let expandedBytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict([expanded]),
      storages: [("0", float32Bytes([1, 2, 3, 4, 5, 6]))])
    Self.expectFailure(
      try dir.file("expanded.pt", expandedBytes), .unsupported, ["1099511627776 elements"])

    let negative = TensorRecord(
      key: "x", storageKey: "0", storageElements: 6, size: [2, -3], stride: [3, 1])
    let bytes = TorchPickle.archive(
      pickle: TorchPickle.stateDict([negative]),
      storages: [("0", float32Bytes([1, 2, 3, 4, 5, 6]))])
    Self.expectFailure(try dir.file("negative.pt", bytes), .malformed, ["invalid"])
  }

  @Test func wrapperWithoutStateDictIsExplained() throws {
    let dir = try TemporaryDirectory()
    // {"model": {...}, "epoch": 3}: the official loader only unwraps "state_dict".
    var p = PickleBuilder()
    p.emptyDict()
    p.mark()
    p.string("model")
    p.emptyDict()
    p.string("epoch")
    p.int(3)
    p.setItems()
    p.stop()
    let url = try dir.file("model-wrapper.pt", TorchPickle.archive(pickle: p.bytes, storages: []))
    Self.expectFailure(url, .malformed, ["entry model", "not a tensor", "\"epoch\"", "state_dict"])
  }

  /// Hostile nesting: deep structures (whose release would recurse once per level) and lists
  /// changed after being nested, which could hide depth, are refused; self-reference is harmless.
  @Test func deepOrSelfReferentialStructures() throws {
    let dir = try TemporaryDirectory()
    var deep = PickleBuilder()
    deep.int(1)
    for _ in 0..<100_000 { deep.op(0x85) }  // TUPLE1
    deep.stop()
    let url = try dir.file("deep.pt", TorchPickle.archive(pickle: deep.bytes, storages: []))
    Self.expectFailure(url, .unsupported, ["nested more than 100 levels"])

    var grown = PickleBuilder()
    grown.op(0x5D)  // EMPTY_LIST
    grown.put()
    grown.op(0x85)  // (list,)
    grown.get(0)
    grown.op(0x5D)
    grown.op(0x61)  // list.append([]) after the list was nested in the tuple
    grown.stop()
    let url2 = try dir.file("grown.pt", TorchPickle.archive(pickle: grown.bytes, storages: []))
    Self.expectFailure(url2, .unsupported, ["gets deeper"])

    var cycle = PickleBuilder()
    cycle.op(0x5D)
    cycle.put()
    cycle.get(0)
    cycle.op(0x61)  // the list contains itself
    cycle.stop()
    let url3 = try dir.file("cycle.pt", TorchPickle.archive(pickle: cycle.bytes, storages: []))
    Self.expectFailure(url3, .malformed, ["holds a list, not a state dict"])
  }

  @Test func pickleWithoutStopIsTruncated() throws {
    let dir = try TemporaryDirectory()
    let p = Array(Self.pickle.dropLast(1))
    let url = try dir.file("nostop.pt", TorchPickle.archive(pickle: p, storages: Self.storages))
    Self.expectFailure(url, .malformed, ["without a STOP", "truncated"])
  }
}
