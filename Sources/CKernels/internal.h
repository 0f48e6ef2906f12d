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
// fixtures (decisive masks, logits ×150) need.
#define EVK_MULADD(a, b, c) _mm512_add_ps(_mm512_mul_ps((a), (b)), (c))

/// e^x exactly as FastMath.swift computes it: clamp to [-87, 88], round x·log2(e) with the 1.5·2^23 shifter (which
/// also leaves n + 127 in the low mantissa bits), Cody–Waite reduction, degree-7 Taylor series.
EVK_AVX512 static inline __m512 evk_exp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 shifter = _mm512_set1_ps(12582912.0f + 127.0f);
  __m512 k = EVK_MULADD(x, _mm512_set1_ps(1.44269504f), shifter);
  __m512 n = _mm512_sub_ps(k, shifter);
  __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
  r = _mm512_add_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(2.1219444e-4f)));
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = EVK_MULADD(p, r, _mm512_set1_ps(1.0f / 720));
  p = EVK_MULADD(p, r, _mm512_set1_ps(1.0f / 120));
  p = EVK_MULADD(p, r, _mm512_set1_ps(1.0f / 24));
  p = EVK_MULADD(p, r, _mm512_set1_ps(1.0f / 6));
  p = EVK_MULADD(p, r, _mm512_set1_ps(0.5f));
  p = EVK_MULADD(p, r, _mm512_set1_ps(1.0f));
  p = EVK_MULADD(p, r, _mm512_set1_ps(1.0f));
  __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(k), 23));
  return _mm512_mul_ps(p, scale);
}

EVK_AVX512 static inline __m512 evk_gelu_tanh(__m512 x) {
  __m512 x2 = _mm512_mul_ps(x, x);
  __m512 u = _mm512_mul_ps(x, EVK_MULADD(_mm512_set1_ps(0.035677408f), x2, _mm512_set1_ps(0.79788456f)));
  __m512 e = evk_exp(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

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
