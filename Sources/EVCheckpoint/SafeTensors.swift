import EVTensor
import Foundation

/// Reads safetensors files: an 8-byte little-endian header length, a JSON header mapping names
/// to dtype, shape and byte offsets, then the raw little-endian data.
public enum SafeTensors {
  /// All tensors of the file, converted to float32. The file is memory-mapped while reading.
  public static func read(contentsOf url: URL) throws(CheckpointError) -> [String: Tensor] {
    let file = url.path
    let data: Data
    do {
      data = try Data(contentsOf: url, options: .alwaysMapped)
    } catch {
      throw .unreadable(file: file, reason: error.localizedDescription)
    }
    return try read(data, file: file)
  }

  public static func read(_ data: Data, file: String) throws(CheckpointError) -> [String: Tensor] {
    guard data.count >= 8 else {
      throw .malformed(file: file, reason: "file is \(data.count) bytes, too short for a safetensors header")
    }
    var headerLength: UInt64 = 0
    for i in 0..<8 { headerLength |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
    guard headerLength <= UInt64(data.count - 8) else {
      throw .malformed(
        file: file,
        reason: "header length \(headerLength) exceeds the file size \(data.count) (truncated?)")
    }
    let headerStart = data.startIndex + 8
    let dataStart = headerStart + Int(headerLength)
    let headerBytes = data[headerStart..<dataStart]
    guard let header = try? JSONSerialization.jsonObject(with: headerBytes) as? [String: Any] else {
      throw .malformed(file: file, reason: "header is not a JSON object")
    }
    var result: [String: Tensor] = [:]
    for (name, value) in header where name != "__metadata__" {
      guard let entry = value as? [String: Any],
        let dtype = entry["dtype"] as? String,
        let shape = entry["shape"] as? [Int],
        let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
      else {
        throw .malformed(file: file, reason: "header entry for \(name) lacks dtype, shape or data_offsets")
      }
      guard let element = DType(safetensorsName: dtype) else {
        throw .unsupported(file: file, reason: "tensor \(name) has dtype \(dtype)")
      }
      let count = shape.reduce(1, *)
      let begin = offsets[0]
      let end = offsets[1]
      guard shape.allSatisfy({ $0 >= 0 }), begin >= 0, end >= begin,
        end - begin == count * element.byteSize
      else {
        throw .malformed(
          file: file,
          reason: "tensor \(name): offsets \(offsets) do not fit shape \(formatShape(shape)) of \(dtype)")
      }
      guard dataStart + end <= data.endIndex else {
        throw .malformed(file: file, reason: "tensor \(name) extends past the end of the file (truncated?)")
      }
      let bytes = data[(dataStart + begin)..<(dataStart + end)]
      result[name] = Tensor(shape: shape, storage: element.decode(bytes, count: count))
    }
    return result
  }
}
