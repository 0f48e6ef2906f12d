import Foundation

/// Element types a checkpoint may store. Everything is widened to float32 on load.
public enum DType: Sendable, Equatable, Hashable, CustomStringConvertible {
  case float32, float16, bfloat16, int64

  public var byteSize: Int {
    switch self {
    case .float32: 4
    case .float16, .bfloat16: 2
    case .int64: 8
    }
  }

  /// PyTorch's name for the type ("float32", "int64"), as the manifests print it.
  public var name: String {
    switch self {
    case .float32: "float32"
    case .float16: "float16"
    case .bfloat16: "bfloat16"
    case .int64: "int64"
    }
  }

  public var description: String { name }

  init?(safetensorsName: String) {
    switch safetensorsName {
    case "F32": self = .float32
    case "F16": self = .float16
    case "BF16": self = .bfloat16
    case "I64": self = .int64
    default: return nil
    }
  }

  var safetensorsName: String {
    switch self {
    case .float32: "F32"
    case .float16: "F16"
    case .bfloat16: "BF16"
    case .int64: "I64"
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
      // Only BatchNorm's num_batches_tracked is stored as int64; counts fit a float exactly
      // up to 2^24, and beyond that round to nearest as Float(_:) does.
      for i in 0..<count {
        let bits = source.loadUnaligned(fromByteOffset: i &* stride, as: Int64.self)
        destination[i] = Float(Int64(littleEndian: bits))
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
