#include "ckernels.h"

#include <stdlib.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#define EVK_AVX512 __attribute__((target("avx512f")))

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

EVK_AVX512 static void evk_gelu_tanh_bias_avx512(float *dst, const float *src, long n, float bias) {
  const __m512 b = _mm512_set1_ps(bias);
  long i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(dst + i, evk_gelu_tanh(_mm512_add_ps(_mm512_loadu_ps(src + i), b)));
  }
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src + i), b);
    _mm512_mask_storeu_ps(dst + i, m, evk_gelu_tanh(x));
  }
}

EVK_AVX512 static inline __m512 evk_gelu_erf(__m512 x) {
  __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678f));
  z = _mm512_min_ps(_mm512_max_ps(z, _mm512_set1_ps(-4.0f)), _mm512_set1_ps(4.0f));
  __m512 z2 = _mm512_mul_ps(z, z);
  __m512 p = _mm512_set1_ps(-2.7261423e-10f);
  p = EVK_MULADD(p, z2, _mm512_set1_ps(2.7706814e-08f));
  p = EVK_MULADD(p, z2, _mm512_set1_ps(-2.101024e-06f));
  p = EVK_MULADD(p, z2, _mm512_set1_ps(-5.6925064e-05f));
  p = EVK_MULADD(p, z2, _mm512_set1_ps(-7.3499063e-04f));
  p = EVK_MULADD(p, z2, _mm512_set1_ps(-2.9546000e-03f));
  p = EVK_MULADD(p, z2, _mm512_set1_ps(-1.6096033e-02f));
  __m512 q = _mm512_set1_ps(-1.4566072e-05f);
  q = EVK_MULADD(q, z2, _mm512_set1_ps(-2.1337406e-04f));
  q = EVK_MULADD(q, z2, _mm512_set1_ps(-1.682827e-03f));
  q = EVK_MULADD(q, z2, _mm512_set1_ps(-7.3733292e-03f));
  q = EVK_MULADD(q, z2, _mm512_set1_ps(-1.4264739e-02f));
  __m512 erf = _mm512_div_ps(_mm512_mul_ps(z, p), q);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

EVK_AVX512 static void evk_gelu_erf_rational_avx512(float *p, long n, const float *bias) {
  long i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(p + i);
    if (bias) x = _mm512_add_ps(x, _mm512_loadu_ps(bias + i));
    _mm512_storeu_ps(p + i, evk_gelu_erf(x));
  }
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    __m512 x = _mm512_maskz_loadu_ps(m, p + i);
    if (bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias + i));
    _mm512_mask_storeu_ps(p + i, m, evk_gelu_erf(x));
  }
}

static int evk_has_avx512(void) {
  // Racing first calls all compute the same answer, so a plain int is enough.
  static int cached = -1;
  if (cached < 0) {
    __builtin_cpu_init();
    // EVSAM_NO_AVX512=1 forces the portable loops, for A/B timing and for checking results.
    const char *off = getenv("EVSAM_NO_AVX512");
    cached = (off == NULL || off[0] == '\0' || off[0] == '0') && __builtin_cpu_supports("avx512f");
  }
  return cached;
}

int evk_gelu_tanh_bias(float *dst, const float *src, long n, float bias) {
  if (!evk_has_avx512()) return 0;
  evk_gelu_tanh_bias_avx512(dst, src, n, bias);
  return 1;
}

int evk_gelu_erf_rational(float *p, long n, const float *bias) {
  if (!evk_has_avx512()) return 0;
  evk_gelu_erf_rational_avx512(p, n, bias);
  return 1;
}

#else

int evk_gelu_erf_rational(float *p, long n, const float *bias) {
  (void)p; (void)n; (void)bias;
  return 0;
}

int evk_gelu_tanh_bias(float *dst, const float *src, long n, float bias) {
  (void)dst; (void)src; (void)n; (void)bias;
  return 0;
}

#endif
