#ifndef EVSAM_CKERNELS_AVX512_VECTOR_H
#define EVSAM_CKERNELS_AVX512_VECTOR_H

// The 16-lane vocabulary of the AVX-512 kernels: masks for partial vectors, horizontal sums,
// and the shared formulas (simd/formulas.h) instantiated for __m512.

#include "../internal.h"
#include "../simd/formulas.h"

#if EVK_X86

/// Lanes 0 ..< n of a 16-float vector set (n clamped to 0 ... 16), for masked loads and stores.
static inline __mmask16 evk_mask16(long n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/// p[0 ..< n] (n ≥ 16: a whole vector), zero in the lanes past n.
EVK_AVX512 static inline __m512 evk_loadn16(const float *p, long n) {
  return _mm512_maskz_loadu_ps(evk_mask16(n), p);
}

/// Stores lanes 0 ..< n of v (n ≥ 16: the whole vector).
EVK_AVX512 static inline void evk_storen16(float *p, __m512 v, long n) {
  _mm512_mask_storeu_ps(p, evk_mask16(n), v);
}

/// v with the lanes past n cleared.
EVK_AVX512 static inline __m512 evk_keepn16(__m512 v, long n) {
  return _mm512_maskz_mov_ps(evk_mask16(n), v);
}

EVK_AVX512 static inline float evk_hsum16(__m512 v) { return _mm512_reduce_add_ps(v); }
EVK_AVX512 static inline float evk_hmax16(__m512 v) { return _mm512_reduce_max_ps(v); }

EVK_DEFINE_EXP(evk_exp16, EVK_AVX512, __m512, _mm512, si512)
EVK_DEFINE_GELU_ERF(evk_gelu_erf16, EVK_AVX512, __m512, _mm512)
EVK_DEFINE_GELU_TANH(evk_gelu_tanh16, EVK_AVX512, __m512, _mm512, evk_exp16)

/// `applyBiasActivation` (Activation.swift) on a vector, for an EVK_EPILOGUE_* code: identity
/// adds a non-zero bias only (adding 0 would turn −0 into +0), ReLU is `y > 0 ? y : 0` (vmaxps
/// returns its second operand for NaN and ±0), GELU always adds the bias first.
EVK_AVX512 static inline __m512 evk_epilogue16(__m512 y, float bias, int act) {
  switch (act) {
    case EVK_EPILOGUE_RELU:
      return _mm512_max_ps(_mm512_add_ps(y, _mm512_set1_ps(bias)), _mm512_setzero_ps());
    case EVK_EPILOGUE_GELU_TANH:
      return evk_gelu_tanh16(_mm512_add_ps(y, _mm512_set1_ps(bias)));
    default:
      return bias != 0 ? _mm512_add_ps(y, _mm512_set1_ps(bias)) : y;
  }
}

#endif

#endif
