import Foundation

/// Element types a checkpoint may store. Everything is widened to float32 on load.
public enum DType: Sendable, Equatable {
  case float32, float16, bfloat16, int64

  public var byteSize: Int {
    switch self {
    case .float32: 4
    case .float16, .bfloat16: 2
    case .int64: 8
    }
  }

  init?(safetensorsName: String) {
    switch safetensorsName {
    case "F32": self = .float32
    case "F16": self = .float16
    case "BF16": self = .bfloat16
    case "I64": self = .int64
    default: return nil
    }
  }

  /// Decodes `count` little-endian elements from `bytes` (which may be unaligned).
  func decode(_ bytes: Data, count: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: count) { out, n in
      bytes.withUnsafeBytes { raw in
        switch self {
        case .float32:
          for i in 0..<count {
            out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
          }
        case .float16:
          for i in 0..<count {
            out[i] = halfToFloat(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
          }
        case .bfloat16:
          for i in 0..<count {
            let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            out[i] = Float(bitPattern: UInt32(bits) << 16)
          }
        case .int64:
          for i in 0..<count {
            out[i] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
          }
        }
      }
      n = count
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
