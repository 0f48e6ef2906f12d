import EVCheckpoint
import EVTensor
import Foundation
import Testing

/// Small files that describe far more than they hold (stride-0 views, huge shapes and offsets)
/// and weights that are NaN or infinite: each must be refused with a clear error before any
/// large allocation, never loaded into a model that then returns garbage.
@Suite struct HostileCheckpointTests {
  /// A toy model's declaration, as a model's construction would record it.
  static func declared() -> [WeightReader.Declared] {
    let reader = WeightReader.declaringOnly()
    let encoder = reader.root["image_encoder"]
    _ = encoder["conv"].take("weight", shape: [2, 3, 2, 2])
    _ = encoder["conv"].take("bias", shape: [2])
    _ = encoder["norm"].take("num_batches_tracked", shape: [], buffer: true, dtype: .int64)
    _ = reader.root["mask_decoder"]["iou_token"].take("weight", shape: [1, 4])
    return reader.declared
  }

  /// Tensors matching `declared()`, as a torch.save archive describes them.
  static let records = [
    TensorRecord(
      key: "image_encoder.conv.weight", storageKey: "0", storageElements: 24, size: [2, 3, 2, 2],
      stride: [12, 4, 2, 1]),
    TensorRecord(
      key: "image_encoder.conv.bias", storageKey: "1", storageElements: 2, size: [2], stride: [1]),
    TensorRecord(
      key: "image_encoder.norm.num_batches_tracked", storageKey: "2", storageType: "LongStorage",
      storageElements: 1, size: [], stride: []),
    TensorRecord(
      key: "mask_decoder.iou_token.weight", storageKey: "3", storageElements: 4, size: [1, 4],
      stride: [4, 1]),
  ]

  static func storages(iouToken: [Float] = [0.5, -1, 2, 0.25]) -> [(key: String, bytes: [UInt8])] {
    [
      ("0", float32Bytes((0..<24).map { Float($0) / 8 })), ("1", float32Bytes([1, -1])),
      ("2", int64Bytes([9])), ("3", float32Bytes(iouToken)),
    ]
  }

  static func archive(_ records: [TensorRecord] = records, iouToken: [Float] = [0.5, -1, 2, 0.25])
    -> [UInt8]
  {
    TorchPickle.archive(
      pickle: TorchPickle.stateDict(records), storages: storages(iouToken: iouToken))
  }

  /// The growth of this process's peak resident memory while `body` runs, in bytes (Linux;
  /// nil elsewhere). Resetting the peak first makes earlier tests' peaks irrelevant.
  static func peakGrowth(_ body: () -> Void) -> Int? {
    #if os(Linux)
      func statusKilobytes(_ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") })
        else { return nil }
        return Int(line.split(separator: " ").dropFirst().first ?? "")
      }
      // Without the reset, the peak could be an earlier test's.
      guard
        (try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8))
          != nil,
        let before = statusKilobytes("VmRSS")
      else {
        body()
        return nil
      }
      body()
      guard let peak = statusKilobytes("VmHWM") else { return nil }
      return (peak - before) * 1024
    #else
      body()
      return nil
    #endif
  }

  /// The problems a strict load of `url` against `declared()` reports; nil (and an issue) when
  /// it loads or fails otherwise.
  static func verificationProblems(
    _ url: URL, sourceLocation: SourceLocation = #_sourceLocation
  ) -> [LoadProblem]? {
    do {
      _ = try LoadedCheckpoint(contentsOf: url, expecting: declared())
      Issue.record("\(url.lastPathComponent) loaded", sourceLocation: sourceLocation)
    } catch {
      if case .verificationFailed(let file, let problems) = error, file == url.path {
        return problems
      }
      Issue.record("expected verificationFailed, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
  }

  @Test func toyArchiveLoadsAgainstItsDeclaration() throws {
    let dir = try TemporaryDirectory()
    let url = try dir.file("toy.pt", Self.archive())
    let loaded = try LoadedCheckpoint(contentsOf: url, expecting: Self.declared())
    #expect(loaded.tensors["mask_decoder.iou_token.weight"]?.storage == [0.5, -1, 2, 0.25])
    #expect(try Checkpoint.load(contentsOf: url, expecting: Self.declared()).count == 4)
  }

  /// The reported attack: a 2 KB archive of stride-0 views, each 2^26 elements (256 MiB as
  /// float32, the most one view may repeat), under keys the model never declares. It used to
  /// allocate every view before the keys were compared (3.2 GB for a dozen of them).
  @Test func expandedViewsAreRefusedBeforeTheyAreMaterialised() throws {
    let dir = try TemporaryDirectory()
    var records = Self.records
    for i in 0..<12 {
      records.append(
        TensorRecord(
          key: "image_encoder.extra.\(i).weight", storageKey: "1", storageElements: 2,
          size: [8192, 8192], stride: [0, 0]))
    }
    let bytes = Self.archive(records)
    #expect(bytes.count < 8192)
    let url = try dir.file("expanded.pt", bytes)

    var problems: [LoadProblem]?
    let growth = Self.peakGrowth { problems = Self.verificationProblems(url) }
    #expect(problems?.count == 12)
    #expect(
      problems?.contains(.unexpected(key: "image_encoder.extra.11.weight", found: [8192, 8192]))
        == true)
    // A dozen 256 MiB views would be 3 GiB; the index alone is a few kilobytes.
    if let growth { #expect(growth < 1 << 30, "peak memory grew by \(growth >> 20) MiB") }

    // Without a model to compare against, the views together still may not exceed what a file
    // of this size can hold plus one view's worth of repetition.
    var unchecked: Result<LoadedCheckpoint, CheckpointError>?
    let uncheckedGrowth = Self.peakGrowth {
      unchecked = Result { () throws(CheckpointError) in try LoadedCheckpoint(contentsOf: url) }
    }
    guard case .failure(.unsupported(_, let reason)) = unchecked else {
      Issue.record("expected the size limit, got \(String(describing: unchecked))")
      return
    }
    #expect(reason.contains("refusing to allocate"), "\(reason)")
    if let uncheckedGrowth {
      #expect(uncheckedGrowth < 1 << 30, "peak memory grew by \(uncheckedGrowth >> 20) MiB")
    }
  }

  /// Declared keys with huge shapes are shape mismatches found from the index, and the error
  /// still names every missing, unexpected and misshapen key at once.
  @Test func strictLoadReportsEveryProblemBeforeDecoding() throws {
    let dir = try TemporaryDirectory()
    var records = Self.records
    records[0] = TensorRecord(
      key: "image_encoder.conv.weight", storageKey: "0", storageElements: 24, size: [8192, 8192],
      stride: [0, 0])
    records.remove(at: 1)
    records.append(
      TensorRecord(
        key: "module.head.bias", storageKey: "1", storageElements: 2, size: [2], stride: [1]))
    let url = try dir.file("wrong.pt", Self.archive(records))
    #expect(
      Self.verificationProblems(url) == [
        .missing(key: "image_encoder.conv.bias", expected: [2]),
        .shapeMismatch(
          key: "image_encoder.conv.weight", expected: [2, 3, 2, 2], found: [8192, 8192]),
        .unexpected(key: "module.head.bias", found: [2]),
      ])

    // The same problems in safetensors: its header is compared before the data is read.
    var tensors: [String: Tensor] = [:]
    for d in Self.declared() { tensors[d.key] = Tensor(zeros: d.shape) }
    tensors["image_encoder.conv.bias"] = nil
    tensors["image_encoder.conv.weight"] = Tensor(zeros: [3, 2, 2, 2])
    tensors["module.head.bias"] = Tensor(zeros: [2])
    let st = try dir.file("wrong.safetensors", try SafeTensors.encode(tensors))
    #expect(
      Self.verificationProblems(st) == [
        .missing(key: "image_encoder.conv.bias", expected: [2]),
        .shapeMismatch(
          key: "image_encoder.conv.weight", expected: [2, 3, 2, 2], found: [3, 2, 2, 2]),
        .unexpected(key: "module.head.bias", found: [2]),
      ])
  }

  /// Shapes whose element count overflows Int, and views or storages reaching past the bytes
  /// that back them, are errors: none may trap or allocate.
  @Test func overflowingShapesAndOutOfRangeViewsAreErrors() throws {
    let dir = try TemporaryDirectory()
    let cases: [(String, TensorRecord, String)] = [
      (
        "overflow-shape",
        TensorRecord(
          key: "x", storageKey: "1", storageElements: 2, size: [Int.max / 2, 4, 3],
          stride: [0, 0, 0]), "too many elements"
      ),
      (
        "overflow-offset",
        TensorRecord(
          key: "x", storageKey: "1", storageElements: 2, offset: Int.max - 1, size: [2, 2],
          stride: [Int.max / 2, 1]), "overflows"
      ),
      (
        "past-storage",
        TensorRecord(
          key: "x", storageKey: "1", storageElements: 2, offset: 1, size: [2], stride: [1]),
        "reaches element 2 of storage 1"
      ),
      (
        "storage-larger-than-its-bytes",
        TensorRecord(key: "x", storageKey: "9", storageElements: 1 << 40, size: [2], stride: [1]),
        "holds 8 bytes"
      ),
      (
        "storage-size-overflows",
        TensorRecord(
          key: "x", storageKey: "9", storageElements: Int.max / 2, size: [2], stride: [1]),
        "holds 8 bytes"
      ),
    ]
    for (name, record, fragment) in cases {
      let bytes = TorchPickle.archive(
        pickle: TorchPickle.stateDict(Self.records + [record]),
        storages: Self.storages() + [("9", float32Bytes([1, 2]))])
      let url = try dir.file("\(name).pt", bytes)
      for declared in [nil, Self.declared()] {
        let error = #expect(throws: CheckpointError.self, "\(name)") {
          try LoadedCheckpoint(contentsOf: url, expecting: declared)
        }
        #expect(error?.description.contains(fragment) == true, "\(String(describing: error))")
      }
    }

    // Safetensors: a shape whose product overflows, and offsets past the end of the file.
    let headers = [
      (#"{"x":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, "too many"),
      (
        #"{"x":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}"#,
        "truncated"
      ),
      (
        #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[9223372036854775800,9223372036854775808]}}"#,
        "not non-negative integers"
      ),
    ]
    for (i, (header, fragment)) in headers.enumerated() {
      let url = try dir.file(
        "bad\(i).safetensors", SafeTensorsTests.file(header: header, data: float32Bytes([1, 2])))
      let error = #expect(throws: CheckpointError.self) { try LoadedCheckpoint(contentsOf: url) }
      #expect(error?.description.contains(fragment) == true, "\(String(describing: error))")
    }
  }

  // MARK: - Non-finite weights

  /// Expects `.nonFiniteValues` naming `key` with `count`, and the message a user sees.
  static func expectNonFinite(
    _ url: URL, key: String, count: Int, sourceLocation: SourceLocation = #_sourceLocation
  ) {
    for declared in [nil, Self.declared()] {
      let error = #expect(throws: CheckpointError.self, sourceLocation: sourceLocation) {
        try LoadedCheckpoint(contentsOf: url, expecting: declared)
      }
      #expect(
        error == .nonFiniteValues(file: url.path, key: key, count: count),
        sourceLocation: sourceLocation)
      #expect(
        error?.description
          == "\(url.path): checkpoint tensor '\(key)' has \(count) non-finite values (NaN/inf)",
        sourceLocation: sourceLocation)
    }
    // Asked for explicitly, the values load as stored.
    #expect(throws: Never.self, sourceLocation: sourceLocation) {
      try LoadedCheckpoint(contentsOf: url, allowNonFinite: true)
    }
  }

  @Test func nonFiniteFloat32WeightsAreNamed() throws {
    let dir = try TemporaryDirectory()
    let pt = try dir.file("nan.pt", Self.archive(iouToken: [.nan, 1, .infinity, -.infinity]))
    Self.expectNonFinite(pt, key: "mask_decoder.iou_token.weight", count: 3)

    var tensors: [String: Tensor] = [:]
    for d in Self.declared() { tensors[d.key] = Tensor(repeating: 1, shape: d.shape) }
    tensors["image_encoder.conv.weight"]?.storage[7] = -.nan
    let st = try dir.file("nan.safetensors", try SafeTensors.encode(tensors))
    Self.expectNonFinite(st, key: "image_encoder.conv.weight", count: 1)
  }

  @Test func nonFiniteFloat16WeightsAreNamed() throws {
    let dir = try TemporaryDirectory()
    // float16 +inf, a NaN, -inf and a finite 1.
    let halfBits: [UInt16] = [0x7C00, 0x7E01, 0xFC00, 0x3C00]
    var records = Self.records
    records[3] = TensorRecord(
      key: "mask_decoder.iou_token.weight", storageKey: "3", storageType: "HalfStorage",
      storageElements: 4, size: [1, 4], stride: [4, 1])
    var storages = Self.storages()
    storages[3] = ("3", uint16Bytes(halfBits))
    let pt = try dir.file(
      "nan16.pt",
      TorchPickle.archive(pickle: TorchPickle.stateDict(records), storages: storages))
    Self.expectNonFinite(pt, key: "mask_decoder.iou_token.weight", count: 3)

    // The same in safetensors' F16, laid out by hand (the writer only writes F32).
    let header =
      #"{"image_encoder.conv.bias":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"#
      + #""image_encoder.conv.weight":{"dtype":"F32","shape":[2,3,2,2],"data_offsets":[4,100]},"#
      + #""image_encoder.norm.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[100,108]},"#
      + #""mask_decoder.iou_token.weight":{"dtype":"F16","shape":[1,4],"data_offsets":[108,116]}}"#
    let data =
      uint16Bytes([0x3C00, 0x7C00]) + float32Bytes([Float](repeating: 1, count: 24))
      + int64Bytes([3]) + uint16Bytes(halfBits)
    let st = try dir.file("nan16.safetensors", SafeTensorsTests.file(header: header, data: data))
    // The first tensor in the file's data order is named.
    Self.expectNonFinite(st, key: "image_encoder.conv.bias", count: 1)
  }
}
