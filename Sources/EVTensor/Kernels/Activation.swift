import CKernels

/// The activations EfficientViT-SAM uses; kernels that produce a tensor fuse them into their
/// output pass so the data is touched once.
public enum Activation: Sendable, Equatable {
  case identity, relu, geluTanh, geluErf, hardswish
}

public func activate(_ x: Tensor, _ act: Activation) -> Tensor {
  var y = x
  activateInPlace(&y, act)
  return y
}

public func activateInPlace(_ x: inout Tensor, _ act: Activation) {
  guard act != .identity, x.count > 0 else { return }
  x.withUnsafeMutableBufferPointer { buffer in
    let p = buffer.baseAddress!
    Parallel.forRanges(count: buffer.count, costPerItem: act.cost) { r in
      applyBiasActivation(p + r.lowerBound, count: r.count, bias: 0, act)
    }
  }
}

extension Activation {
  /// Rough cost in element-operations, for deciding when to split work across cores.
  var cost: Int {
    switch self {
    case .identity, .relu: 1
    case .hardswish: 2
    case .geluTanh, .geluErf: 16
    }
  }
}

/// `p[i] = act(p[i] + bias)` for a contiguous run: the fused epilogue of conv and linear.
/// The switch sits outside the loops so each loop body is branch-free and vectorises.
@inline(__always)
func applyBiasActivation(
  _ p: UnsafeMutablePointer<Float>, count: Int, bias: Float, _ act: Activation
) {
  switch act {
  case .identity:
    if bias != 0 { for i in 0..<count { p[i] += bias } }
  case .relu:
    for i in 0..<count { p[i] = relu(p[i] + bias) }
  case .geluTanh:
    // GELU is the encoder's costliest elementwise op (≈ 60 M evaluations per L0 pass); the
    // vector versions (AVX-512, AVX2) run 16 or 8 wide instead of SSE's 4.
    if evk_gelu_tanh_bias(p, p, count, bias) != 0 { return }
    for i in 0..<count { p[i] = geluTanh(p[i] + bias) }
  case .geluErf:
    for i in 0..<count { p[i] = geluErf(p[i] + bias) }
  case .hardswish:
    for i in 0..<count { p[i] = hardswish(p[i] + bias) }
  }
}

/// `dst[i] = act(src[i] + bias)`: the epilogue when the sums sit in a scratch buffer.
@inline(__always)
func storeBiasActivation(
  _ dst: UnsafeMutablePointer<Float>, from src: UnsafePointer<Float>, count: Int, bias: Float,
  _ act: Activation
) {
  switch act {
  case .identity:
    for i in 0..<count { dst[i] = src[i] + bias }
  case .relu:
    for i in 0..<count { dst[i] = relu(src[i] + bias) }
  case .geluTanh:
    if evk_gelu_tanh_bias(dst, src, count, bias) != 0 { return }
    for i in 0..<count { dst[i] = geluTanh(src[i] + bias) }
  case .geluErf:
    for i in 0..<count { dst[i] = geluErf(src[i] + bias) }
  case .hardswish:
    for i in 0..<count { dst[i] = hardswish(src[i] + bias) }
  }
}

/// `p[i] = act(p[i] + bias[i])` for a contiguous run: the epilogue of `linear` (bias per column).
@inline(__always)
func applyBiasVectorActivation(
  _ p: UnsafeMutablePointer<Float>, count: Int, bias: UnsafePointer<Float>?, _ act: Activation
) {
  guard let bias else {
    applyBiasActivation(p, count: count, bias: 0, act)
    return
  }
  switch act {
  case .identity:
    for i in 0..<count { p[i] += bias[i] }
  case .relu:
    for i in 0..<count { p[i] = relu(p[i] + bias[i]) }
  case .geluTanh:
    for i in 0..<count { p[i] = geluTanh(p[i] + bias[i]) }
  case .geluErf:
    for i in 0..<count { p[i] = geluErf(p[i] + bias[i]) }
  case .hardswish:
    for i in 0..<count { p[i] = hardswish(p[i] + bias[i]) }
  }
}

extension Activation {
  /// The fused epilogue of `evk_sgemm_large` that computes this activation exactly as
  /// `applyBiasActivation` does; nil where the C kernel has none.
  var epilogueCode: Int32? {
    switch self {
    case .identity: Int32(EVK_EPILOGUE_NONE)
    case .relu: Int32(EVK_EPILOGUE_RELU)
    case .geluTanh: Int32(EVK_EPILOGUE_GELU_TANH)
    case .geluErf, .hardswish: nil
    }
  }
}
