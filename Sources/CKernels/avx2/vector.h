#ifndef EVSAM_CKERNELS_AVX2_VECTOR_H
#define EVSAM_CKERNELS_AVX2_VECTOR_H

// The 8-lane vocabulary of the AVX2 + FMA kernels: masks for partial vectors, horizontal sums,
// and the shared formulas (simd/formulas.h) instantiated for __m256. AVX2 has no mask
// registers: partial vectors go through vmaskmov, and whole ones through plain loads and stores
// because AMD's masked stores are microcoded and slow.

#include "../internal.h"
#include "../simd/formulas.h"

#if EVK_X86
#include <stdint.h>

/// Lanes 0 ..< n (0 ≤ n ≤ 8) set, for maskload / maskstore.
EVK_AVX2 static inline __m256i evk_mask8(long n) {
  static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256((const __m256i *)(bits + 8 - n));
}

/// p[0 ..< n] (n ≥ 8: a whole vector), zero in the lanes past n.
EVK_AVX2 static inline __m256 evk_loadn8(const float *p, long n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, evk_mask8(n));
}

/// Stores lanes 0 ..< n of v (n ≥ 8: the whole vector).
EVK_AVX2 static inline void evk_storen8(float *p, __m256 v, long n) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, evk_mask8(n), v);
  }
}

/// v with the lanes past n cleared.
EVK_AVX2 static inline __m256 evk_keepn8(__m256 v, long n) {
  return n >= 8 ? v : _mm256_and_ps(v, _mm256_castsi256_ps(evk_mask8(n)));
}

EVK_AVX2 static inline float evk_hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

EVK_AVX2 static inline float evk_hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// out[i·stride] = the sum of s[i]'s lanes, for eight vectors at once (an hadd tree).
EVK_AVX2 static inline void evk_row_sums8(const __m256 s[8], float *out, long stride) {
  const __m256 t01 = _mm256_hadd_ps(s[0], s[1]), t23 = _mm256_hadd_ps(s[2], s[3]);
  const __m256 t45 = _mm256_hadd_ps(s[4], s[5]), t67 = _mm256_hadd_ps(s[6], s[7]);
  const __m256 u0 = _mm256_hadd_ps(t01, t23), u1 = _mm256_hadd_ps(t45, t67);
  // u0 = [r0 r1 r2 r3 | r0 r1 r2 r3] halves (low, high 128-bit lanes), likewise u1 for r4..7.
  const __m256 lo = _mm256_permute2f128_ps(u0, u1, 0x20), hi = _mm256_permute2f128_ps(u0, u1, 0x31);
  float lane[8];
  _mm256_storeu_ps(lane, _mm256_add_ps(lo, hi));
  for (int i = 0; i < 8; i++) out[i * stride] = lane[i];
}

EVK_DEFINE_EXP(evk_exp8, EVK_AVX2, __m256, _mm256, si256)
EVK_DEFINE_GELU_ERF(evk_gelu_erf8, EVK_AVX2, __m256, _mm256)
EVK_DEFINE_GELU_TANH(evk_gelu_tanh8, EVK_AVX2, __m256, _mm256, evk_exp8)

#endif

#endif
