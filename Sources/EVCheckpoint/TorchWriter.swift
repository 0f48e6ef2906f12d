import EVTensor
import Foundation

/// Writes a state dict as `torch.save` does since PyTorch 1.6, so that PyTorch users load what
/// we train with `torch.load(path, weights_only=True)` and the official model's strict
/// `load_state_dict`: a stored (uncompressed) zip archive whose `archive/data.pkl` is a
/// protocol-2 pickle of an `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls, one
/// storage per tensor in `archive/data/<n>` (64-byte aligned, as PyTorch aligns them), plus
/// `archive/byteorder` and `archive/version`. Only the globals the weights-only unpickler
/// allows are used.
public enum TorchWriter {
  /// One entry of the state dict, in the order it is written. `int64` stores values such as
  /// BatchNorm's `num_batches_tracked`, given as floats.
  public struct Entry: Sendable {
    public var key: String
    public var tensor: Tensor
    public var dtype: DType

    public init(key: String, tensor: Tensor, dtype: DType = .float32) {
      self.key = key
      self.tensor = tensor
      self.dtype = dtype
    }
  }

  /// The archive's bytes.
  public static func archive(_ entries: [Entry]) -> Data {
    var zip = ZipWriter()
    zip.add("archive/data.pkl", pickle(entries))
    zip.add("archive/byteorder", Array("little".utf8))
    for (n, entry) in entries.enumerated() {
      zip.add("archive/data/\(n)", storageBytes(entry))
    }
    zip.add("archive/version", Array("3\n".utf8))
    return Data(zip.finish())
  }

  /// Writes the archive atomically (a temporary file renamed into place).
  public static func write(_ entries: [Entry], to url: URL) throws {
    try archive(entries).write(to: url, options: .atomic)
  }

  private static func storageBytes(_ entry: Entry) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(entry.tensor.count * entry.dtype.byteSize)
    for v in entry.tensor.storage {
      switch entry.dtype {
      case .int64:
        withUnsafeBytes(of: Int64(v).littleEndian) { bytes.append(contentsOf: $0) }
      case .float16:
        withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
      default:
        precondition(entry.dtype == .float32, "TorchWriter: \(entry.dtype) is not written")
        withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
      }
    }
    return bytes
  }

  private static func storageClass(_ dtype: DType) -> String {
    switch dtype {
    case .int64: "LongStorage"
    case .float16: "HalfStorage"
    default: "FloatStorage"
    }
  }

  /// The pickle, opcode by opcode (protocol 2, no memo: the unpickler does not need one).
  static func pickle(_ entries: [Entry]) -> [UInt8] {
    var p: [UInt8] = [0x80, 2]
    func global(_ module: String, _ name: String) {
      p.append(UInt8(ascii: "c"))
      p += Array("\(module)\n\(name)\n".utf8)
    }
    func string(_ s: String) {
      let utf8 = Array(s.utf8)
      p.append(UInt8(ascii: "X"))
      withUnsafeBytes(of: UInt32(utf8.count).littleEndian) { p.append(contentsOf: $0) }
      p += utf8
    }
    func int(_ v: Int) {
      if (0..<256).contains(v) {
        p += [UInt8(ascii: "K"), UInt8(v)]
      } else if (Int(Int32.min)...Int(Int32.max)).contains(v) {
        p.append(UInt8(ascii: "J"))
        withUnsafeBytes(of: Int32(v).littleEndian) { p.append(contentsOf: $0) }
      } else {
        // LONG1: little-endian two's complement in 8 bytes.
        p += [0x8A, 8]
        withUnsafeBytes(of: Int64(v).littleEndian) { p.append(contentsOf: $0) }
      }
    }
    func tuple(_ values: [Int]) {
      p.append(UInt8(ascii: "("))
      for v in values { int(v) }
      p.append(UInt8(ascii: "t"))
    }
    let mark = UInt8(ascii: "(")
    let reduce = UInt8(ascii: "R")
    global("collections", "OrderedDict")
    p += [UInt8(ascii: ")"), reduce, mark]
    for (n, entry) in entries.enumerated() {
      let shape = entry.tensor.shape
      var strides = [Int](repeating: 1, count: shape.count)
      for i in stride(from: shape.count - 2, through: 0, by: -1) {
        strides[i] = strides[i + 1] * shape[i + 1]
      }
      string(entry.key)
      global("torch._utils", "_rebuild_tensor_v2")
      p.append(mark)
      // Persistent id ('storage', torch.FloatStorage, key, location, numel).
      p.append(mark)
      string("storage")
      global("torch", storageClass(entry.dtype))
      string("\(n)")
      string("cpu")
      int(entry.tensor.count)
      p += [UInt8(ascii: "t"), UInt8(ascii: "Q")]
      int(0)
      tuple(shape)
      tuple(strides)
      p.append(0x89)  // NEWFALSE: requires_grad
      global("collections", "OrderedDict")
      p += [UInt8(ascii: ")"), reduce]
      p += [UInt8(ascii: "t"), reduce]
    }
    p += [UInt8(ascii: "u"), UInt8(ascii: ".")]
    return p
  }
}

/// A stored zip archive with every entry's data on a 64-byte boundary (an "FB" extra field of
/// padding, as PyTorch's writer makes it); archives stay below 4 GiB (no zip64 records).
struct ZipWriter {
  private var bytes: [UInt8] = []
  private var central: [UInt8] = []
  private var count = 0

  private static func le16(_ v: Int, _ out: inout [UInt8]) {
    out += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)]
  }
  private static func le32(_ v: UInt32, _ out: inout [UInt8]) {
    for i in 0..<4 { out.append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) }
  }

  mutating func add(_ name: String, _ data: [UInt8]) {
    let nameBytes = Array(name.utf8)
    let crc = data.withUnsafeBytes { CRC32.checksum($0) }
    let offset = bytes.count
    let headerEnd = offset + 30 + nameBytes.count
    // Pad with an extra field ("FB", length) so the data starts on a 64-byte boundary.
    let padding = (64 - (headerEnd + 4) % 64) % 64
    let large = data.count >= 0xFFFF_FFFF || offset >= 0xFFFF_FFFF
    precondition(!large, "ZipWriter: entries and offsets beyond 4 GiB are not written")
    var local: [UInt8] = []
    Self.le32(0x0403_4B50, &local)
    Self.le16(20, &local)  // version needed
    Self.le16(0, &local)  // flags
    Self.le16(0, &local)  // stored
    Self.le16(0, &local)  // time
    Self.le16(0x21, &local)  // date (1980-01-01)
    Self.le32(crc, &local)
    Self.le32(UInt32(data.count), &local)
    Self.le32(UInt32(data.count), &local)
    Self.le16(nameBytes.count, &local)
    Self.le16(4 + padding, &local)
    local += nameBytes
    local += [UInt8(ascii: "F"), UInt8(ascii: "B")]
    Self.le16(padding, &local)
    local += [UInt8](repeating: UInt8(ascii: "Z"), count: padding)
    bytes += local
    bytes += data

    Self.le32(0x0201_4B50, &central)
    Self.le16(20, &central)  // made by
    Self.le16(20, &central)  // needed
    Self.le16(0, &central)
    Self.le16(0, &central)
    Self.le16(0, &central)
    Self.le16(0x21, &central)
    Self.le32(crc, &central)
    Self.le32(UInt32(data.count), &central)
    Self.le32(UInt32(data.count), &central)
    Self.le16(nameBytes.count, &central)
    Self.le16(0, &central)  // extra
    Self.le16(0, &central)  // comment
    Self.le16(0, &central)  // disk
    Self.le16(0, &central)  // internal attributes
    Self.le32(0, &central)  // external attributes
    Self.le32(UInt32(offset), &central)
    central += nameBytes
    count += 1
  }

  mutating func finish() -> [UInt8] {
    let start = bytes.count
    bytes += central
    var end: [UInt8] = []
    Self.le32(0x0605_4B50, &end)
    Self.le16(0, &end)
    Self.le16(0, &end)
    Self.le16(count, &end)
    Self.le16(count, &end)
    Self.le32(UInt32(central.count), &end)
    Self.le32(UInt32(start), &end)
    Self.le16(0, &end)
    bytes += end
    return bytes
  }
}
