#ifndef EVSAM_CKERNELS_INTERNAL_H
#define EVSAM_CKERNELS_INTERNAL_H

// Shared by the kernel files: which instruction-set level runs (see evk_simd_level), and the
// AVX2 implementations that ckernels.c dispatches to.

#include "include/ckernels.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define EVK_X86 1
#else
#define EVK_X86 0
#endif

/// The level the dispatchers use: EVK_LEVEL_PORTABLE, EVK_LEVEL_AVX2 or EVK_LEVEL_AVX512.
int evk_level(void);

#if EVK_X86
#include <immintrin.h>

#define EVK_AVX2 __attribute__((target("avx2,fma")))
#define EVK_AVX512 __attribute__((target("avx512f")))

/// Lanes 0 ..< n of a 16-float vector set (n clamped to 0 ... 16), for masked loads and stores.
static inline __mmask16 evk_mask16(long n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

// a·b + c rounded twice, like the Swift loops (Swift never fuses into FMA): the vector kernels
// then give bit-for-bit the portable loops' results, which the sensitive everything-mode
// fixtures (decisive masks, logits ×150) need. `P` is a vector width's intrinsics prefix.
#define EVK_MULADD_P(P, a, b, c) P##_add_ps(P##_mul_ps((a), (b)), (c))
#define EVK_MULADD(a, b, c) EVK_MULADD_P(_mm512, a, b, c)

// The two formulas the kernels share with the Swift loops, written once for both vector widths:
// `NAME` is defined with target attribute `TARGET` on vectors `V` whose intrinsics start with
// `P` (and whose integer casts name `I`: si512, si256).
//
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

EVK_DEFINE_EXP(evk_exp, EVK_AVX512, __m512, _mm512, si512)
EVK_DEFINE_GELU_ERF(evk_gelu_erf, EVK_AVX512, __m512, _mm512)

EVK_AVX512 static inline __m512 evk_gelu_tanh(__m512 x) {
  __m512 x2 = _mm512_mul_ps(x, x);
  __m512 u =
      _mm512_mul_ps(x, EVK_MULADD(_mm512_set1_ps(0.035677408f), x2, _mm512_set1_ps(0.79788456f)));
  __m512 e = evk_exp(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/// `applyBiasActivation` (Activation.swift) on a vector, for an EVK_EPILOGUE_* code: identity
/// adds a non-zero bias only (adding 0 would turn −0 into +0), ReLU is `y > 0 ? y : 0` (vmaxps
/// returns its second operand for NaN and ±0), GELU always adds the bias first.
EVK_AVX512 static inline __m512 evk_epilogue16(__m512 y, float bias, int act) {
  switch (act) {
    case EVK_EPILOGUE_RELU:
      return _mm512_max_ps(_mm512_add_ps(y, _mm512_set1_ps(bias)), _mm512_setzero_ps());
    case EVK_EPILOGUE_GELU_TANH:
      return evk_gelu_tanh(_mm512_add_ps(y, _mm512_set1_ps(bias)));
    default:
      return bias != 0 ? _mm512_add_ps(y, _mm512_set1_ps(bias)) : y;
  }
}

// The AVX2 twins: EVK_MULADD on 8 lanes, FastMath.swift's exp and `RowOps.gelu`.
#define EVK_MULADD8(a, b, c) EVK_MULADD_P(_mm256, a, b, c)
EVK_DEFINE_EXP(evk_exp8, EVK_AVX2, __m256, _mm256, si256)
EVK_DEFINE_GELU_ERF(evk_gelu_erf8, EVK_AVX2, __m256, _mm256)

void evk_gelu_tanh_bias_avx2(float *dst, const float *src, long n, float bias);
void evk_gelu_erf_rational_avx2(float *p, long n, const float *bias);
void evk_softmax_rows_avx2(float *x, long rows, long cols, long stride, float scale);
void evk_softmax_columns_avx2(float *x, long rows, long cols, long c0, long c1, float scale,
                              const float *row_bias);
void evk_residual_layernorm_avx2(float *x, const float *delta, const float *delta_bias, long rows,
                                 long dim, const float *w, const float *b, float eps,
                                 const float *addend, float *sum, float *rstd);
void evk_linear_few_rows_avx2(const float *x, long ldx, long rows, long in, const float *packed,
                              const float *bias, long out, float *y, long ldy, int relu);
void evk_row_affine_avx2(float *y, const float *x, long rows, long dim, long ldx, const float *a,
                         const float *u, const float *v);
void evk_layernorm64_gelu_avx2(float *x, long rows, const float *w, const float *b, float eps,
                               const float *pre_bias);
#endif

#endif
