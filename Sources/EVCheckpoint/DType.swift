import Foundation

/// Element types a checkpoint may store. Everything is converted to float32 on load: exactly
/// for float16, bfloat16, 8- and 16-bit integers and bool (0 or 1); integers of more than 24
/// significant bits and float64 values round to the nearest float32.
public enum DType: Sendable, Equatable, Hashable, CustomStringConvertible {
  case float32, float16, bfloat16, int64
  case float64, int32, int16, int8, uint8, bool

  public var byteSize: Int {
    switch self {
    case .float64, .int64: 8
    case .float32, .int32: 4
    case .float16, .bfloat16, .int16: 2
    case .int8, .uint8, .bool: 1
    }
  }

  /// PyTorch's name for the type ("float32", "int64"), as the manifests print it.
  public var name: String {
    switch self {
    case .float32: "float32"
    case .float16: "float16"
    case .bfloat16: "bfloat16"
    case .int64: "int64"
    case .float64: "float64"
    case .int32: "int32"
    case .int16: "int16"
    case .int8: "int8"
    case .uint8: "uint8"
    case .bool: "bool"
    }
  }

  public var description: String { name }

  init?(safetensorsName: String) {
    switch safetensorsName {
    case "F32": self = .float32
    case "F16": self = .float16
    case "BF16": self = .bfloat16
    case "I64": self = .int64
    case "F64": self = .float64
    case "I32": self = .int32
    case "I16": self = .int16
    case "I8": self = .int8
    case "U8": self = .uint8
    case "BOOL": self = .bool
    default: return nil
    }
  }

  var safetensorsName: String {
    switch self {
    case .float32: "F32"
    case .float16: "F16"
    case .bfloat16: "BF16"
    case .int64: "I64"
    case .float64: "F64"
    case .int32: "I32"
    case .int16: "I16"
    case .int8: "I8"
    case .uint8: "U8"
    case .bool: "BOOL"
    }
  }

  /// Widens `count` little-endian elements to float32: element `i` is read at
  /// `source + i * stride` bytes (unaligned is fine) and written to `destination[i]`.
  ///
  /// One switch per call and plain loops inside, so each case vectorises or at least runs
  /// without per-element dispatch. Callers guarantee the source range is in bounds.
  func widen(
    from source: UnsafeRawPointer, byteStride stride: Int, count: Int,
    into destination: UnsafeMutablePointer<Float>
  ) {
    switch self {
    case .float32:
      #if _endian(little)
        if stride == 4 {
          memcpy(destination, source, count * 4)
          return
        }
      #endif
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: UInt32.self)
        destination[i] = Float(bitPattern: UInt32(littleEndian: bits))
      }
    case .float16:
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: UInt16.self)
        destination[i] = halfToFloat(UInt16(littleEndian: bits))
      }
    case .bfloat16:
      // bfloat16 is the top half of a float32, so widening is a shift and exact.
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: UInt16.self)
        destination[i] = Float(bitPattern: UInt32(UInt16(littleEndian: bits)) << 16)
      }
    case .int64:
      // BatchNorm's num_batches_tracked is an int64 count; Float(_:) rounds to nearest.
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: Int64.self)
        destination[i] = Float(Int64(littleEndian: bits))
      }
    case .float64:
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: UInt64.self)
        destination[i] = Float(Double(bitPattern: UInt64(littleEndian: bits)))
      }
    case .int32:
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: Int32.self)
        destination[i] = Float(Int32(littleEndian: bits))
      }
    case .int16:
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: Int16.self)
        destination[i] = Float(Int16(littleEndian: bits))
      }
    case .int8:
      for i in 0..<count {
        destination[i] = Float(source.load(fromByteOffset: i &* stride, as: Int8.self))
      }
    case .uint8:
      for i in 0..<count {
        destination[i] = Float(source.load(fromByteOffset: i &* stride, as: UInt8.self))
      }
    case .bool:
      // PyTorch writes bools as bytes 0 and 1; any non-zero byte is true.
      for i in 0..<count {
        destination[i] = source.load(fromByteOffset: i &* stride, as: UInt8.self) != 0 ? 1 : 0
      }
    }
  }
}

/// IEEE 754 binary16 → binary32, exact for every input including subnormals, inf and NaN.
@inline(__always)
func halfToFloat(_ h: UInt16) -> Float {
  let sign = UInt32(h & 0x8000) << 16
  let exponent = UInt32(h >> 10) & 0x1F
  let mantissa = UInt32(h & 0x3FF)
  if exponent == 0 {
    // Zero or subnormal: value = mantissa · 2^-24.
    let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
    return sign != 0 ? -magnitude : magnitude
  }
  if exponent == 0x1F {
    return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
  }
  return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}
