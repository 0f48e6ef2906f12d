import EVCheckpoint
import EVTensor
import Foundation
import TestSupport
import Testing

@Suite struct SafeTensorsTests {
  /// A safetensors file from a literal header and data section.
  static func file(header: String, data: [UInt8], pad: Bool = true) -> [UInt8] {
    var h = Array(header.utf8)
    if pad { h += [UInt8](repeating: 0x20, count: (8 - h.count % 8) % 8) }
    var out: [UInt8] = []
    out.le64(UInt64(h.count))
    return out + h + data
  }

  static let sample: [String: Tensor] = [
    "encoder.weight": Tensor(
      shape: [2, 3], storage: [1, -2, 3.5, .pi, -0.0, .leastNonzeroMagnitude]),
    "a/b \"quoted\" \\ é\n": Tensor(shape: [1], storage: [42]),
    "scalar": Tensor(shape: [], storage: [-7.25]),
    "empty": Tensor(shape: [0, 4], storage: []),
    "Z": Tensor(shape: [3], storage: [.infinity, -.infinity, .greatestFiniteMagnitude]),
  ]

  @Test func roundTripIsBitExact() throws {
    let dir = try TemporaryDirectory()
    let url = dir.url.appendingPathComponent("out.safetensors")
    try SafeTensors.write(Self.sample, metadata: ["format": "pt", "note": "tab\there"], to: url)
    let loaded = try LoadedCheckpoint(contentsOf: url, allowNonFinite: true)
    #expect(loaded.format == .safetensors)
    #expect(loaded.metadata == ["format": "pt", "note": "tab\there"])
    #expect(Set(loaded.tensors.keys) == Set(Self.sample.keys))
    for (key, t) in Self.sample {
      #expect(loaded.tensors[key]?.shape == t.shape, "\(key)")
      #expect(
        loaded.tensors[key]?.storage.map(\.bitPattern) == t.storage.map(\.bitPattern), "\(key)")
      #expect(loaded.dtypes[key] == .float32)
    }
    // `encode` produces exactly the file's bytes.
    #expect(
      try SafeTensors.encode(Self.sample, metadata: ["format": "pt", "note": "tab\there"])
        == Data(contentsOf: url))
    // Nothing but the file is left in the folder (no temporary files).
    #expect(dir.contents == ["out.safetensors"])
  }

  @Test func layoutMatchesTheReferenceImplementation() throws {
    let tensors = [
      "b": Tensor(shape: [2], storage: [1, 2]), "a": Tensor(shape: [1, 1], storage: [3]),
      "B": Tensor(shape: [], storage: [4]),
    ]
    let bytes = [UInt8](try SafeTensors.encode(tensors, metadata: ["k": "v"]))
    let n = Int(
      bytes[0..<8].enumerated().reduce(UInt64(0)) {
        $0 | UInt64($1.element) << (8 * UInt64($1.offset))
      })
    #expect(n % 8 == 0)
    let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
    let expected =
      #"{"__metadata__":{"k":"v"},"B":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"#
      + #""a":{"dtype":"F32","shape":[1,1],"data_offsets":[4,8]},"#
      + #""b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#
    #expect(header.trimmingCharacters(in: .whitespaces) == expected)
    #expect(
      header.count == n && header.hasPrefix(expected)
        && header.dropFirst(expected.count).allSatisfy { $0 == " " })
    #expect(Array(bytes[(8 + n)...]) == float32Bytes([4, 3, 1, 2]))
  }

  @Test func writeReplacesAtomicallyAndReportsFailures() throws {
    let dir = try TemporaryDirectory()
    let url = dir.url.appendingPathComponent("emb.safetensors")
    try SafeTensors.write(["x": Tensor(shape: [1], storage: [1])], to: url)
    try SafeTensors.write(["y": Tensor(shape: [2], storage: [2, 3])], to: url)
    #expect(try SafeTensors.read(contentsOf: url) == ["y": Tensor(shape: [2], storage: [2, 3])])
    #expect(dir.contents == ["emb.safetensors"])

    let nowhere = dir.url.appendingPathComponent("no/such/dir/out.safetensors")
    let error = #expect(throws: CheckpointError.self) {
      try SafeTensors.write(["x": Tensor(shape: [1], storage: [1])], to: nowhere)
    }
    if case .unwritable(let file, _)? = error {
      #expect(file == nowhere.path)
    } else {
      Issue.record("expected .unwritable, got \(String(describing: error))")
    }
    #expect(error?.description.contains(nowhere.path) == true)
    #expect(throws: CheckpointError.self) {
      try SafeTensors.write(["__metadata__": Tensor(shape: [1], storage: [1])], to: url)
    }
    // A failed write leaves the previous file intact.
    #expect(try SafeTensors.read(contentsOf: url) == ["y": Tensor(shape: [2], storage: [2, 3])])
  }

  @Test func readsOtherDTypes() throws {
    let dir = try TemporaryDirectory()
    let header =
      #"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"#
      + #""b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]},"#
      + #""n":{"dtype":"I64","shape":[],"data_offsets":[6,14]},"#
      + #""d":{"dtype":"F64","shape":[2],"data_offsets":[14,30]},"#
      + #""i":{"dtype":"I32","shape":[2],"data_offsets":[30,38]},"#
      + #""s":{"dtype":"I16","shape":[2],"data_offsets":[38,42]},"#
      + #""c":{"dtype":"I8","shape":[2],"data_offsets":[42,44]},"#
      + #""u":{"dtype":"U8","shape":[2],"data_offsets":[44,46]},"#
      + #""t":{"dtype":"BOOL","shape":[3],"data_offsets":[46,49]}}"#
    var data = uint16Bytes([0x3C00, 0x0001]) + uint16Bytes([0x4049]) + int64Bytes([12])
    data += int64Bytes([
      Int64(bitPattern: (0.1).bitPattern), Int64(bitPattern: (-1e300).bitPattern),
    ])
    data += float32Bytes([
      Float(bitPattern: UInt32(bitPattern: -70000)), Float(bitPattern: 16_777_217),
    ])
    data += uint16Bytes([UInt16(bitPattern: -300), 300])
    data += [0x80, 0x7F, 0xFF, 0x01, 0, 1, 2]
    let loaded = try loadFile(
      Self.file(header: header, data: data), named: "types.safetensors", in: dir,
      allowNonFinite: true)
    #expect(loaded.tensors["h"]?.storage == [1, 0x1p-24])
    #expect(loaded.tensors["b"]?.storage == [Float(bitPattern: 0x4049_0000)])
    #expect(loaded.tensors["n"] == Tensor(shape: [], storage: [12]))
    // float64 and wide integers round to nearest, as Float(_:) does.
    #expect(loaded.tensors["d"]?.storage == [Float(0.1), -.infinity])
    #expect(loaded.tensors["i"]?.storage == [-70000, 16_777_216])
    #expect(loaded.tensors["s"]?.storage == [-300, 300])
    #expect(loaded.tensors["c"]?.storage == [-128, 127])
    #expect(loaded.tensors["u"]?.storage == [255, 1])
    #expect(loaded.tensors["t"]?.storage == [0, 1, 1])
    #expect(
      loaded.dtypes == [
        "h": .float16, "b": .bfloat16, "n": .int64, "d": .float64, "i": .int32, "s": .int16,
        "c": .int8, "u": .uint8, "t": .bool,
      ])
    #expect(loaded.keys == ["h", "b", "n", "d", "i", "s", "c", "u", "t"])
  }

  @Test func badHeadersAndOffsets() throws {
    let dir = try TemporaryDirectory()
    let eight = float32Bytes([1, 2])
    let cases: [(String, String, [UInt8], BadFileTests.Kind, [String])] = [
      (
        "overlap",
        #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        eight, .malformed, ["overlap", "a", "b"]
      ),
      (
        "gap", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, eight, .malformed,
        ["belong to no tensor"]
      ),
      (
        "past-end", #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, eight, .malformed,
        ["tensor a", "truncated"]
      ),
      (
        "trailing", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, eight, .malformed,
        ["cover only 4"]
      ),
      (
        "size-mismatch", #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, eight,
        .malformed, ["tensor a", "do not fit shape 3"]
      ),
      (
        "reversed", #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, eight, .malformed,
        ["tensor a"]
      ),
      (
        "negative", #"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, eight, .malformed,
        ["non-negative integers"]
      ),
      (
        "fraction", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}}"#, eight, .malformed,
        ["non-negative integers"]
      ),
      (
        "huge-shape",
        #"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#, eight,
        .malformed, ["too many elements"]
      ),
      (
        "no-dtype", #"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, eight, .malformed, ["lacks dtype"]
      ),
      (
        "f8", #"{"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#, eight,
        .unsupported, ["tensor a", "F8_E4M3"]
      ),
      ("not-json", #"{"a": nope}"#, eight, .malformed, ["not valid JSON"]),
      ("array", #"{"a":[1,2]}"#, eight, .malformed, ["lacks dtype"]),
      ("metadata", #"{"__metadata__":{"k":1}}"#, [], .malformed, ["__metadata__"]),
    ]
    for (name, header, data, kind, fragments) in cases {
      let url = try dir.file("\(name).safetensors", Self.file(header: header, data: data))
      BadFileTests.expectFailure(url, kind, fragments)
    }
    // A header length beyond the limit is refused before anything is allocated.
    var huge: [UInt8] = []
    huge.le64(UInt64(SafeTensors.maximumHeaderSize + 1))
    huge += Array(#"{"a":1}"#.utf8)
    BadFileTests.expectFailure(
      try dir.file("huge.safetensors", huge), .malformed, ["neither a PyTorch archive"])
    var overflowing: [UInt8] = []
    overflowing.le64(UInt64.max)
    overflowing += Array(#"{"a":1}"#.utf8)
    BadFileTests.expectFailure(
      try dir.file("max.safetensors", overflowing), .malformed, ["neither a PyTorch archive"])
  }

  @Test func nullMetadataMeansNone() throws {
    let dir = try TemporaryDirectory()
    let header = #"{"__metadata__":null,"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
    let loaded = try loadFile(
      Self.file(header: header, data: float32Bytes([2])), named: "null.safetensors", in: dir)
    #expect(loaded.metadata.isEmpty)
    #expect(loaded.tensors == ["a": Tensor(shape: [1], storage: [2])])
  }

  @Test func emptyFileAndMinimalHeader() throws {
    let dir = try TemporaryDirectory()
    let minimal = try loadFile(
      Self.file(header: "{}", data: [], pad: false), named: "min.safetensors", in: dir)
    #expect(minimal.tensors.isEmpty && minimal.format == .safetensors)
    let url = dir.url.appendingPathComponent("none.safetensors")
    try SafeTensors.write([:], to: url)
    #expect(try SafeTensors.read(contentsOf: url).isEmpty)
  }

  /// The CLI writes embeddings; they must survive a round trip at full size.
  @Test func largeEmbeddingRoundTrip() throws {
    let dir = try TemporaryDirectory()
    var embedding = Tensor(zeros: [1, 256, 64, 64])
    for i in 0..<embedding.count { embedding.storage[i] = Float(i % 9973) * 0.001 - 4 }
    let url = dir.url.appendingPathComponent("embedding.safetensors")
    try SafeTensors.write(["embedding": embedding], metadata: ["model": "l0"], to: url)
    #expect(try Checkpoint.load(contentsOf: url) == ["embedding": embedding])
  }
}
