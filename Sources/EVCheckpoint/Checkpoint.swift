import EVTensor
import Foundation

/// Loads model weights from any supported checkpoint file, whatever its extension says.
public enum Checkpoint {
  /// All tensors of the checkpoint at `url`, widened to float32: a PyTorch `torch.save` zip
  /// archive (a `{"state_dict": …}` wrapper is unwrapped, as the official loader does) or a
  /// safetensors file. Every problem, from a truncated file to an unsupported dtype or a NaN
  /// weight, is a `CheckpointError` naming the file; nothing is ever loaded partially.
  public static func load(contentsOf url: URL) throws(CheckpointError) -> [String: Tensor] {
    try LoadedCheckpoint(contentsOf: url).tensors
  }

  /// The tensors of the checkpoint at `url`, which must hold exactly the `declared` keys and
  /// shapes (a model's `WeightReader.declared`). The keys and shapes are compared from the
  /// file's index before any tensor is decoded, so a file made for another model, or a tiny
  /// hostile one declaring huge tensors, is refused without allocating their memory; the error
  /// lists every missing, unexpected and misshapen key.
  public static func load(contentsOf url: URL, expecting declared: [WeightReader.Declared])
    throws(CheckpointError) -> [String: Tensor]
  {
    try LoadedCheckpoint(contentsOf: url, expecting: declared).tensors
  }
}

/// What a model declares, checked against a checkpoint's index before anything is decoded.
struct Expectation {
  let declared: [(key: String, shape: [Int])]
  /// The float32 elements the declared tensors hold together: what a matching checkpoint
  /// materialises, and so the most any load against this model may.
  let elementCount: Int

  init(_ declared: [WeightReader.Declared]) {
    self.declared = declared.map { ($0.key, $0.shape) }
    var total = 0
    for d in declared {
      var count = 1
      for size in d.shape {
        let (product, overflow) = count.multipliedReportingOverflow(by: size)
        count = overflow ? .max : product
      }
      let (sum, overflow) = total.addingReportingOverflow(count)
      total = overflow ? .max : sum
    }
    elementCount = total
  }

  /// Throws `verificationFailed` listing every problem when `found` differs from the
  /// declaration, as `WeightReader.finish()` would after a full load.
  func verify(_ found: [(key: String, shape: [Int])], file: String) throws(CheckpointError) {
    var shapes: [String: [Int]] = [:]
    shapes.reserveCapacity(found.count)
    for (key, shape) in found { shapes[key] = shape }
    let problems = LoadProblem.comparing(declared: declared, found: shapes)
    if !problems.isEmpty { throw .verificationFailed(file: file, problems: problems) }
  }
}

/// Refuses a load whose tensors would together take more than `limit` float32 elements,
/// before any of them is allocated; `basis` says where the limit comes from.
func checkMaterialisedSize(
  _ elementCounts: some Sequence<Int>, limit: Int, basis: String, file: String
) throws(CheckpointError) {
  var total = 0
  for count in elementCounts {
    let (sum, overflow) = total.addingReportingOverflow(count)
    guard !overflow, sum <= limit else {
      throw .unsupported(
        file: file,
        reason: "its tensors would take more than the \(limit) float32 elements "
          + "(\(limit / (1 << 18)) MiB) \(basis); refusing to allocate them")
    }
    total = sum
  }
}

/// How many of `values` are NaN or infinite. Integer tests on the exponent bits, so the loop
/// vectorises; one pass over a model's weights costs a small fraction of decoding them.
func nonFiniteCount(_ values: UnsafeBufferPointer<Float>) -> Int {
  var count = 0
  for v in values { count &+= v.bitPattern & 0x7F80_0000 == 0x7F80_0000 ? 1 : 0 }
  return count
}

/// A checkpoint's tensors together with what the file said about them.
public struct LoadedCheckpoint: Sendable {
  public enum Format: String, Sendable, Equatable, CustomStringConvertible {
    /// `torch.save`'s zip archive (`.pt`, `.pth`).
    case pytorch
    case safetensors

    public var description: String {
      switch self {
      case .pytorch: "PyTorch archive"
      case .safetensors: "safetensors"
      }
    }
  }

  /// Every tensor, widened to float32, by state-dict key.
  public let tensors: [String: Tensor]
  /// The keys in the file's order (the state dict's order for PyTorch, data order for
  /// safetensors).
  public let keys: [String]
  /// The element type each tensor was stored with.
  public let dtypes: [String: DType]
  public let format: Format
  /// Safetensors `__metadata__`; empty for PyTorch archives.
  public let metadata: [String: String]
  /// The wrapper key the state dict was found under ("state_dict"), or nil if it was the
  /// file's top-level object.
  public let unwrappedKey: String?

  init(
    tensors: [String: Tensor], keys: [String], dtypes: [String: DType], format: Format,
    metadata: [String: String], unwrappedKey: String?
  ) {
    self.tensors = tensors
    self.keys = keys
    self.dtypes = dtypes
    self.format = format
    self.metadata = metadata
    self.unwrappedKey = unwrappedKey
  }

  /// Reads the checkpoint at `url`, memory-mapped. With `verifyChecksums` (the default) every
  /// PyTorch storage that is loaded is checked against the CRC-32 its archive records.
  ///
  /// - Parameters:
  ///   - declared: when given (a model's `WeightReader.declared`), the file must hold exactly
  ///     these keys and shapes; that is checked from its index before any tensor is decoded,
  ///     and the load may then materialise no more than the declared tensors hold.
  ///   - allowNonFinite: accept NaN and infinite values; by default the first tensor holding
  ///     any is a `nonFiniteValues` error, since weights like that only produce garbage.
  public init(
    contentsOf url: URL, verifyChecksums: Bool = true,
    expecting declared: [WeightReader.Declared]? = nil, allowNonFinite: Bool = false
  ) throws(CheckpointError) {
    let (data, fileBacked) = try mapFile(url)
    try self.init(
      data: data, fileBacked: fileBacked, file: url.path, verifyChecksums: verifyChecksums,
      expecting: declared, allowNonFinite: allowNonFinite)
  }

  /// Reads a checkpoint held in memory; `file` names it in errors. The options are those of
  /// `init(contentsOf:verifyChecksums:expecting:allowNonFinite:)`.
  public init(
    data: Data, file: String, verifyChecksums: Bool = true,
    expecting declared: [WeightReader.Declared]? = nil, allowNonFinite: Bool = false
  ) throws(CheckpointError) {
    try self.init(
      data: data, fileBacked: false, file: file, verifyChecksums: verifyChecksums,
      expecting: declared, allowNonFinite: allowNonFinite)
  }

  private init(
    data: Data, fileBacked: Bool, file: String, verifyChecksums: Bool,
    expecting declared: [WeightReader.Declared]?, allowNonFinite: Bool
  ) throws(CheckpointError) {
    let expectation = declared.map(Expectation.init)
    self = try withBytes(of: data, fileBacked: fileBacked) {
      (bytes) throws(CheckpointError) -> LoadedCheckpoint in
      switch try Self.detectFormat(bytes, file: file) {
      case .pytorch:
        return try TorchArchive.load(
          bytes, file: file, verifyChecksums: verifyChecksums, expecting: expectation,
          requireFinite: !allowNonFinite)
      case .safetensors:
        return try SafeTensors.load(
          bytes, file: file, expecting: expectation, requireFinite: !allowNonFinite)
      }
    }
  }

  /// Every element type present, for reporting ("stored as float16").
  public var storedDTypes: Set<DType> { Set(dtypes.values) }

  /// Decides the format from the first bytes, and explains what a file is when it is neither.
  static func detectFormat(_ bytes: ByteView, file: String) throws(CheckpointError) -> Format {
    guard bytes.count > 0 else {
      throw .malformed(file: file, reason: "the file is empty")
    }
    // Local file header, or the end record of an archive with no entries.
    if bytes.hasBytes([0x50, 0x4B, 0x03, 0x04]) || bytes.hasBytes([0x50, 0x4B, 0x05, 0x06])
      || bytes.hasBytes([0x50, 0x4B, 0x06, 0x06])
    {
      return .pytorch
    }
    // Safetensors: an 8-byte header length, then a JSON object.
    if let length = bytes.u64(0), length >= 2, length <= UInt64(bytes.count - 8),
      bytes.u8(8) == UInt8(ascii: "{")
    {
      return .safetensors
    }
    if bytes.u8(0) == 0x80, let protocolVersion = bytes.u8(1), protocolVersion <= 5 {
      throw .unsupported(
        file: file,
        reason: "this is a bare pickle, the legacy torch.save format of PyTorch before 1.6 "
          + "(or _use_new_zipfile_serialization=False); re-save it with a current PyTorch: "
          + "torch.save(torch.load(path, weights_only=True), new_path)")
    }
    if let length = bytes.u64(0), length > UInt64(bytes.count - 8),
      length <= UInt64(SafeTensors.maximumHeaderSize), bytes.u8(8) == UInt8(ascii: "{")
    {
      throw .malformed(
        file: file,
        reason: "the safetensors header is \(length) bytes long but the file has only "
          + "\(bytes.count) bytes: the file is truncated")
    }
    if bytes.count < 10 {
      throw .malformed(
        file: file,
        reason: "the file is only \(bytes.count) bytes, too short for any checkpoint "
          + "(truncated?)")
    }
    throw .malformed(
      file: file,
      reason: "neither a PyTorch archive (zip) nor a safetensors file; \(describeContent(bytes))")
  }

  /// A guess at what a non-checkpoint file is, so the message helps find the mix-up.
  private static func describeContent(_ bytes: ByteView) -> String {
    let signatures: [([UInt8], String)] = [
      ([0x89, 0x50, 0x4E, 0x47], "it looks like a PNG image"),
      ([0xFF, 0xD8, 0xFF], "it looks like a JPEG image"),
      ([0x1F, 0x8B], "it looks like a gzip file"),
      ([0x89, 0x48, 0x44, 0x46], "it looks like an HDF5 file"),
      ([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59], "it looks like a NumPy .npy file"),
      ([0x3C, 0x21, 0x44, 0x4F, 0x43], "it looks like an HTML page (a failed download?)"),
      ([0x3C, 0x68, 0x74, 0x6D, 0x6C], "it looks like an HTML page (a failed download?)"),
    ]
    for (magic, text) in signatures where bytes.hasBytes(magic) { return text }
    let sample = min(bytes.count, 512)
    var printable = 0
    for i in 0..<sample {
      let b = bytes.buffer[i]
      if b == 0x09 || b == 0x0A || b == 0x0D || (b >= 0x20 && b < 0x7F) || b >= 0x80 {
        printable += 1
      }
    }
    if printable == sample {
      return "it looks like a text file"
    }
    return "it starts with bytes \(hexPrefix(bytes, 8))"
  }
}
