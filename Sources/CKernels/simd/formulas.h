#ifndef EVSAM_CKERNELS_FORMULAS_H
#define EVSAM_CKERNELS_FORMULAS_H

// The formulas the kernels share with the Swift loops, written once for every vector width:
// each EVK_DEFINE_* defines `NAME` with target attribute `TARGET` on vectors `V` whose
// intrinsics start with `P` (_mm512, _mm256) and whose integer casts name `I` (si512, si256).

// a·b + c rounded twice, like the Swift loops (Swift never fuses into FMA): the vector kernels
// then give bit-for-bit the plain loops' results, which the sensitive everything-mode fixtures
// (decisive masks, logits ×150) need.
#define EVK_MULADD_P(P, a, b, c) P##_add_ps(P##_mul_ps((a), (b)), (c))

// e^x exactly as FastMath.swift computes it: clamp to [-87, 88], round x·log2(e) with the
// 1.5·2^23 shifter (which also leaves n + 127 in the low mantissa bits), Cody–Waite reduction,
// degree-7 Taylor series.
#define EVK_DEFINE_EXP(NAME, TARGET, V, P, I)                               \
  TARGET static inline V NAME(V x) {                                        \
    x = P##_min_ps(P##_max_ps(x, P##_set1_ps(-87.0f)), P##_set1_ps(88.0f)); \
    const V shifter = P##_set1_ps(12582912.0f + 127.0f);                    \
    V k = EVK_MULADD_P(P, x, P##_set1_ps(1.44269504f), shifter);            \
    V n = P##_sub_ps(k, shifter);                                           \
    V r = P##_sub_ps(x, P##_mul_ps(n, P##_set1_ps(0.693359375f)));          \
    r = P##_add_ps(r, P##_mul_ps(n, P##_set1_ps(2.1219444e-4f)));           \
    V p = P##_set1_ps(1.0f / 5040);                                         \
    p = EVK_MULADD_P(P, p, r, P##_set1_ps(1.0f / 720));                     \
    p = EVK_MULADD_P(P, p, r, P##_set1_ps(1.0f / 120));                     \
    p = EVK_MULADD_P(P, p, r, P##_set1_ps(1.0f / 24));                      \
    p = EVK_MULADD_P(P, p, r, P##_set1_ps(1.0f / 6));                       \
    p = EVK_MULADD_P(P, p, r, P##_set1_ps(0.5f));                           \
    p = EVK_MULADD_P(P, p, r, P##_set1_ps(1.0f));                           \
    p = EVK_MULADD_P(P, p, r, P##_set1_ps(1.0f));                           \
    V scale = P##_cast##I##_ps(P##_slli_epi32(P##_castps_##I(k), 23));      \
    return P##_mul_ps(p, scale);                                            \
  }

// `RowOps.gelu` (rational erf, argument clamped to ±4), operation for operation.
#define EVK_DEFINE_GELU_ERF(NAME, TARGET, V, P)                                              \
  TARGET static inline V NAME(V x) {                                                         \
    V z = P##_mul_ps(x, P##_set1_ps(0.70710678f));                                           \
    z = P##_min_ps(P##_max_ps(z, P##_set1_ps(-4.0f)), P##_set1_ps(4.0f));                    \
    V z2 = P##_mul_ps(z, z);                                                                 \
    V p = P##_set1_ps(-2.7261423e-10f);                                                      \
    p = EVK_MULADD_P(P, p, z2, P##_set1_ps(2.7706814e-08f));                                 \
    p = EVK_MULADD_P(P, p, z2, P##_set1_ps(-2.101024e-06f));                                 \
    p = EVK_MULADD_P(P, p, z2, P##_set1_ps(-5.6925064e-05f));                                \
    p = EVK_MULADD_P(P, p, z2, P##_set1_ps(-7.3499063e-04f));                                \
    p = EVK_MULADD_P(P, p, z2, P##_set1_ps(-2.9546000e-03f));                                \
    p = EVK_MULADD_P(P, p, z2, P##_set1_ps(-1.6096033e-02f));                                \
    V q = P##_set1_ps(-1.4566072e-05f);                                                      \
    q = EVK_MULADD_P(P, q, z2, P##_set1_ps(-2.1337406e-04f));                                \
    q = EVK_MULADD_P(P, q, z2, P##_set1_ps(-1.682827e-03f));                                 \
    q = EVK_MULADD_P(P, q, z2, P##_set1_ps(-7.3733292e-03f));                                \
    q = EVK_MULADD_P(P, q, z2, P##_set1_ps(-1.4264739e-02f));                                \
    V erf = P##_div_ps(P##_mul_ps(z, p), q);                                                 \
    return P##_mul_ps(P##_mul_ps(P##_set1_ps(0.5f), x), P##_add_ps(P##_set1_ps(1.0f), erf)); \
  }

// The encoder's `geluTanh` (Activation.swift): x / (1 + e^(−2u)), u = √(2/π)·(x + 0.044715·x³)
// written as x·(0.035677408·x² + 0.79788456), with `EXP` the width's EVK_DEFINE_EXP.
#define EVK_DEFINE_GELU_TANH(NAME, TARGET, V, P, EXP)                                              \
  TARGET static inline V NAME(V x) {                                                               \
    V x2 = P##_mul_ps(x, x);                                                                       \
    V u = P##_mul_ps(x, EVK_MULADD_P(P, P##_set1_ps(0.035677408f), x2, P##_set1_ps(0.79788456f))); \
    V e = EXP(P##_mul_ps(P##_set1_ps(-2.0f), u));                                                  \
    return P##_div_ps(x, P##_add_ps(P##_set1_ps(1.0f), e));                                        \
  }

// The mask decoder's GELU (`RowOps.gelu`) on one float, for the leftovers of vector kernels:
// every multiply and add rounded separately, as in Swift.
static inline float evk_gelu_erf_scalar(float x) {
#pragma STDC FP_CONTRACT OFF
  const float u = x * 0.70710678f;
  const float z = u < -4.0f ? -4.0f : (u > 4.0f ? 4.0f : u);
  const float z2 = z * z;
  float p = -2.7261423e-10f;
  p = p * z2 + 2.7706814e-08f;
  p = p * z2 - 2.101024e-06f;
  p = p * z2 - 5.6925064e-05f;
  p = p * z2 - 7.3499063e-04f;
  p = p * z2 - 2.9546000e-03f;
  p = p * z2 - 1.6096033e-02f;
  float q = -1.4566072e-05f;
  q = q * z2 - 2.1337406e-04f;
  q = q * z2 - 1.682827e-03f;
  q = q * z2 - 7.3733292e-03f;
  q = q * z2 - 1.4264739e-02f;
  return 0.5f * x * (1.0f + z * p / q);
}

// out[r·count + m] = Σ_c h[m·width + c] · gelu(z[r·width + c] + bias[c]) in plain loops: the
// rows a vector `evk_gelu_dot32` leaves over (width ≤ 256).
static inline void evk_gelu_dot_scalar(const float *z, long rows, long width, const float *bias,
                                       const float *h, long count, float *out) {
#pragma STDC FP_CONTRACT OFF
  float g[256];
  for (long r = 0; r < rows; r++) {
    for (long c = 0; c < width; c++) g[c] = evk_gelu_erf_scalar(z[r * width + c] + bias[c]);
    for (long m = 0; m < count; m++) {
      float s = 0;
      for (long c = 0; c < width; c++) s += g[c] * h[m * width + c];
      out[r * count + m] = s;
    }
  }
}

#endif
