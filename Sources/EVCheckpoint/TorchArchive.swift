import EVTensor
import Foundation

/// Reads what `torch.save` writes since PyTorch 1.6: a zip archive holding `<name>/data.pkl`
/// (the pickled object, tensors replaced by persistent ids) and one raw little-endian entry
/// `<name>/data/<key>` per storage.
enum TorchArchive {
  /// Views may repeat their storage's elements (stride 0, overlaps), so an archive can ask for
  /// more elements than its file holds; this many extra elements (256 MiB as float32), per view
  /// and for the whole file, are allowed when no model says what to expect.
  static let expansionAllowance = 1 << 26

  static func load(
    _ bytes: ByteView, file: String, verifyChecksums: Bool, expecting expectation: Expectation?,
    requireFinite: Bool
  ) throws(CheckpointError) -> LoadedCheckpoint {
    let archive = try ZipArchive(bytes, file: file)

    // The archive's single top-level folder is named after the file torch.save wrote first.
    guard
      let pickleEntry = archive.entries.first(where: {
        $0.name.hasSuffix("/data.pkl")
          && $0.name.utf8.count(where: { $0 == UInt8(ascii: "/") }) == 1
      }) ?? archive.entry(named: "data.pkl")
    else {
      let names = archive.entries.prefix(5).map(\.name).joined(separator: ", ")
      throw .malformed(
        file: file,
        reason: "the zip archive has no data.pkl, so it is not a PyTorch checkpoint "
          + (archive.entries.isEmpty ? "(the archive is empty)" : "(it holds \(names)…)"))
    }
    let prefix = String(pickleEntry.name.dropLast("data.pkl".count))

    if archive.entry(named: prefix + "constants.pkl") != nil
      || archive.entries.contains(where: { $0.name.hasPrefix(prefix + "code/") })
    {
      throw .unsupported(
        file: file,
        reason: "this is a TorchScript archive (torch.jit.save); save the model's state_dict() "
          + "with torch.save instead")
    }
    if let byteOrder = archive.entry(named: prefix + "byteorder") {
      let text = String(
        decoding: try archive.contents(of: byteOrder, verify: verifyChecksums).buffer, as: UTF8.self
      )
      guard text == "little" else {
        throw .unsupported(
          file: file,
          reason:
            "the storages are stored in \(text.debugDescription) byte order; only little-endian "
            + "checkpoints are supported")
      }
    }

    let pickle = try archive.contents(of: pickleEntry, verify: verifyChecksums)
    var storages: [String: PickleStorage] = [:]
    let root = try PickleMachine.load(
      pickle, file: file, source: pickleEntry.name
    ) { (pid: PickleValue) throws(CheckpointError) -> PickleValue in
      // ('storage', torch.<Type>Storage, key, location, numel)
      guard case .tuple(let fields, _) = pid, fields.count == 5, case .string("storage") = fields[0]
      else {
        throw .malformed(
          file: file, reason: "persistent id \(pid.kindDescription) is not a storage reference")
      }
      guard case .global(let global) = fields[1], case .storageType(let type) = global else {
        throw .unsupported(
          file: file, reason: "storage type \(fields[1].kindDescription) is not supported")
      }
      guard case .string(let key) = fields[2], case .int(let count) = fields[4], count >= 0 else {
        throw .malformed(file: file, reason: "a storage reference has a bad key or element count")
      }
      if let known = storages[key] {
        guard known.type == type, known.elementCount == count else {
          throw .malformed(
            file: file, reason: "storage \(key) is referenced with two different types or sizes")
        }
        return .storage(known)
      }
      let name = prefix + "data/" + key
      guard let entry = archive.entry(named: name) else {
        throw .malformed(
          file: file,
          reason: "storage \(name) is referenced by the pickle but missing from the archive "
            + "(the file is truncated or damaged)")
      }
      let (expected, overflow) = count.multipliedReportingOverflow(by: type.byteSize)
      guard !overflow, entry.uncompressedSize == expected else {
        throw .malformed(
          file: file,
          reason: "storage \(name) holds \(entry.uncompressedSize) bytes but should hold \(count) "
            + "\(type.elementName) elements")
      }
      // Locates the bytes now, so a compressed or misplaced entry is reported at once.
      _ = try archive.contents(of: entry, verify: false)
      let storage = PickleStorage(key: key, type: type, elementCount: count, entry: entry)
      storages[key] = storage
      return .storage(storage)
    }

    // The official loader (efficientvit `load_state_dict_from_file`) unwraps "state_dict".
    guard case .dict(let top) = root else {
      throw .malformed(
        file: file, reason: "the checkpoint holds \(root.kindDescription), not a state dict")
    }
    var stateDict = top
    var unwrappedKey: String? = nil
    if let inner = top["state_dict"] {
      guard case .dict(let dict) = inner else {
        throw .malformed(
          file: file,
          reason: "the checkpoint's \"state_dict\" is \(inner.kindDescription), not a dict")
      }
      stateDict = dict
      unwrappedKey = "state_dict"
    }

    var keys: [String] = []
    var views: [PickleTensor] = []
    keys.reserveCapacity(stateDict.count)
    views.reserveCapacity(stateDict.count)
    var seen: Set<String> = []
    for (key, value) in zip(stateDict.keys, stateDict.values) {
      guard case .string(let name) = key else {
        throw .malformed(
          file: file, reason: "the state dict has a key that is \(key.kindDescription)")
      }
      guard case .tensor(let view) = value else {
        let hint =
          unwrappedKey == nil && top.count < 20
          ? "; its top-level keys are \(topLevelKeys(top)) and only \"state_dict\" is unwrapped"
          : ""
        throw .malformed(
          file: file,
          reason: "entry \(name) of the state dict is \(value.kindDescription), not a tensor\(hint)"
        )
      }
      guard view.storage.type.dtype != nil else {
        throw .unsupported(
          file: file,
          reason: "tensor \(name) is stored as \(view.storage.type.elementName) "
            + "(torch.\(view.storage.type.className)), which has no float32 equivalent")
      }
      guard seen.insert(name).inserted else {
        throw .malformed(file: file, reason: "the state dict has key \(name) twice")
      }
      keys.append(name)
      views.append(view)
    }

    // Keys, shapes and view bounds are known from the pickle alone (makeTensor checked every
    // view against its storage's recorded size, which matched the entry's byte count); nothing
    // is allocated for the tensors before these checks pass.
    if let expectation {
      try expectation.verify(zip(keys, views).map { ($0, $1.shape) }, file: file)
      try checkMaterialisedSize(
        views.lazy.map(\.elementCount), limit: expectation.elementCount,
        basis: "the model declares", file: file)
    } else {
      // Every stored element takes at least a byte, and zip entries may alias each other's
      // bytes, so the file's size (not the storages' summed sizes) bounds honest views.
      try checkMaterialisedSize(
        views.lazy.map(\.elementCount), limit: bytes.count + Self.expansionAllowance,
        basis: "a \(bytes.count)-byte file may hold with \(Self.expansionAllowance) repeated "
          + "elements", file: file)
    }

    // Work per storage: check its CRC once, then decode every tensor viewing it. Storages are
    // independent, so they are spread over the cores, largest first.
    var groupOf: [String: Int] = [:]
    var groups: [(entry: ZipArchive.Entry, data: ByteView, members: [Int])] = []
    for (i, view) in views.enumerated() {
      if let g = groupOf[view.storage.key] {
        groups[g].members.append(i)
      } else {
        groupOf[view.storage.key] = groups.count
        let data = try archive.contents(of: view.storage.entry, verify: false)
        groups.append((view.storage.entry, data, [i]))
      }
    }
    var decoded = [[Float]](repeating: [], count: views.count)
    var nonFinite = [Int](repeating: 0, count: views.count)
    var failures = [CheckpointError?](repeating: nil, count: groups.count)
    decoded.withUnsafeMutableBufferPointer { decoded in
      nonFinite.withUnsafeMutableBufferPointer { nonFinite in
        failures.withUnsafeMutableBufferPointer { failures in
          Parallel.forEach(weights: groups.map { $0.data.count }, minimumTotal: 8 << 20) { g in
            let group = groups[g]
            if verifyChecksums, let error = archive.checksumError(of: group.entry, group.data) {
              failures[g] = error
              return
            }
            for i in group.members {
              let view = views[i]
              // The dtype was checked above for every view.
              guard let dtype = view.storage.type.dtype else { continue }
              decoded[i] = [Float](unsafeUninitializedCapacity: view.elementCount) { out, n in
                // An empty storage has no address, but then the view has no elements.
                if let destination = out.baseAddress, let source = group.data.buffer.baseAddress {
                  gather(view, dtype: dtype, from: source, into: destination)
                }
                n = view.elementCount
              }
              if requireFinite {
                nonFinite[i] = decoded[i].withUnsafeBufferPointer(nonFiniteCount)
              }
            }
            group.data.releasePages()
          }
        }
      }
    }
    if let failure = failures.lazy.compactMap({ $0 }).first { throw failure }
    if let i = nonFinite.firstIndex(where: { $0 > 0 }) {
      throw .nonFiniteValues(file: file, key: keys[i], count: nonFinite[i])
    }

    var tensors: [String: Tensor] = [:]
    var dtypes: [String: DType] = [:]
    tensors.reserveCapacity(keys.count)
    dtypes.reserveCapacity(keys.count)
    for (i, (name, view)) in zip(keys, views).enumerated() {
      tensors[name] = Tensor(shape: view.shape, storage: decoded[i])
      dtypes[name] = view.storage.type.dtype
    }
    return LoadedCheckpoint(
      tensors: tensors, keys: keys, dtypes: dtypes, format: .pytorch, metadata: [:],
      unwrappedKey: unwrappedKey)
  }

  private static func topLevelKeys(_ dict: PickleDict) -> String {
    dict.keys.map { key -> String in
      if case .string(let s) = key { return "\"\(s)\"" }
      return key.kindDescription
    }.joined(separator: ", ")
  }

  /// Copies a (possibly strided, offset or overlapping) view into contiguous row-major order.
  /// `makeTensor` has checked that every index it reads lies inside the storage.
  static func gather(
    _ view: PickleTensor, dtype: DType, from storage: UnsafeRawPointer,
    into destination: UnsafeMutablePointer<Float>
  ) {
    let count = view.elementCount
    guard count > 0 else { return }
    let size = dtype.byteSize
    let base = storage + view.offset * size
    let rank = view.shape.count
    if rank == 0 {
      dtype.widen(from: base, byteStride: size, count: 1, into: destination)
      return
    }
    // Contiguous unless some dimension longer than 1 has a stride other than row-major's.
    var contiguous = true
    var expected = 1
    for d in stride(from: rank - 1, through: 0, by: -1) {
      if view.shape[d] != 1, view.strides[d] != expected { contiguous = false }
      expected *= view.shape[d]
    }
    if contiguous {
      dtype.widen(from: base, byteStride: size, count: count, into: destination)
      return
    }
    // Rows along the last dimension, walked with an odometer over the leading ones.
    let rowLength = view.shape[rank - 1]
    let rowStride = view.strides[rank - 1] * size
    var index = [Int](repeating: 0, count: rank - 1)
    var written = 0
    while written < count {
      var offset = 0
      for d in 0..<(rank - 1) { offset += index[d] * view.strides[d] }
      dtype.widen(
        from: base + offset * size, byteStride: rowStride, count: rowLength,
        into: destination + written)
      written += rowLength
      var d = rank - 2
      while d >= 0 {
        index[d] += 1
        if index[d] < view.shape[d] { break }
        index[d] = 0
        d -= 1
      }
    }
  }
}
