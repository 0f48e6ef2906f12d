/// Branch-free scalar math that LLVM can vectorise inside plain loops (libm's `expf`, `tanhf`
/// and `erff` are opaque calls and keep a loop scalar).

/// e^x to about 2 ulp for x in [-87, 88]; inputs outside are clamped, so the result is always a
/// finite normal number (large negative x gives ≈1.6e-38 instead of 0, large positive ≈1.65e38).
@inline(__always)
@inlinable package func fastExp(_ x: Float) -> Float {
  let x = x < -87 ? -87 : (x > 88 ? 88 : x)
  // Adding 1.5·2²³ (+127, the exponent bias) rounds x·log2(e) to the nearest integer n and leaves
  // n + 127 in the low mantissa bits, from which 2ⁿ is built without a float→int conversion.
  let shifter: Float = 12_582_912 + 127
  let k = x * 1.442_695_04 + shifter
  let n = k - shifter
  // Cody–Waite: ln 2 split so that n·ln2Hi is exact for |n| < 2⁹.
  let r = (x - n * 0.693_359_375) + n * 2.121_944_4e-4
  // Taylor series to degree 7 on |r| ≤ ln2/2: truncation error < 6e-9 relative.
  var p: Float = 1.0 / 5040
  p = p * r + 1.0 / 720
  p = p * r + 1.0 / 120
  p = p * r + 1.0 / 24
  p = p * r + 1.0 / 6
  p = p * r + 0.5
  p = p * r + 1
  p = p * r + 1
  return p * Float(bitPattern: k.bitPattern &<< 23)
}

/// GELU with PyTorch's tanh approximation, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
/// Written as x·σ(2u) = x / (1 + e^(−2u)), which is the same function but has no cancellation in
/// 1 + tanh for negative inputs, so it stays accurate in relative terms everywhere.
@inline(__always)
func geluTanh(_ x: Float) -> Float {
  let u = x * (0.797_884_56 + 0.035_677_408 * (x * x))
  return x / (1 + fastExp(-2 * u))
}

/// Exact GELU, 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(−x/√2).
/// erfc(|z|) uses the Chebyshev-fitted form t·exp(−z² + P(t)), t = 1/(1 + z/2), whose fractional
/// error is below 1.2e-7 for all z ≥ 0; for positive x, erfc(−z) = 2 − erfc(z). Working with erfc
/// keeps the tiny values at negative x accurate in relative terms, which 1 + erf(z) would not.
@inline(__always)
func geluErf(_ x: Float) -> Float {
  let z = (x < 0 ? -x : x) * 0.707_106_78
  let t = 1 / (1 + 0.5 * z)
  var p: Float = 0.170_872_77
  p = p * t - 0.822_152_23
  p = p * t + 1.488_515_87
  p = p * t - 1.135_203_98
  p = p * t + 0.278_868_07
  p = p * t - 0.186_288_06
  p = p * t + 0.096_784_18
  p = p * t + 0.374_091_96
  p = p * t + 1.000_023_68
  p = p * t - 1.265_512_23
  let erfcAbs = t * fastExp(p - z * z)
  let erfcNeg = x < 0 ? erfcAbs : 2 - erfcAbs
  return 0.5 * x * erfcNeg
}

/// PyTorch's hardswish: x·min(max(x + 3, 0), 6) / 6.
@inline(__always)
func hardswish(_ x: Float) -> Float {
  let r = x + 3
  let c: Float = r < 0 ? 0 : (r > 6 ? 6 : r)
  return x * c / 6
}

@inline(__always)
func relu(_ x: Float) -> Float { x > 0 ? x : 0 }
