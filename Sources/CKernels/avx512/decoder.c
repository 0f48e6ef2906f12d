// The mask decoder's folded upscaling epilogue at 16 lanes (the attention kernels are 8 heads
// wide and live in avx2/decoder.c; the hypernetwork product is a twin, simd/twins.h).

#include "vector.h"

#if EVK_X86
#include <math.h>

#pragma STDC FP_CONTRACT OFF

// evk_fold_layernorm64_gelu_avx2 on 16 lanes: the affine maps and the GELU are the same operations
// lane by lane; the LayerNorm's two sums over 64 channels are ordered differently.
EVK_AVX512 void evk_fold_layernorm64_gelu_avx512(float *y, const float *base, long tokens,
                                                 const float *a0, const float *a1, const float *u0,
                                                 const float *u1, const float *u2, const float *w,
                                                 const float *b, float eps) {
  for (long p = 0; p < tokens; p++) {
    float *row = y + p * 256;
    const float *br = base + p * 256;
    const __m512 s0 = _mm512_set1_ps(a0[p]), s1 = _mm512_set1_ps(a1[p]);
    // All four sub-pixels' statistics side by side: their reductions are independent chains.
    __m512 v[16];
    float mean[4], inv[4];
    for (int c = 0; c < 16; c++) {
      const __m512 t = _mm512_add_ps(_mm512_mul_ps(s0, _mm512_add_ps(_mm512_loadu_ps(br + 16 * c),
                                                                     _mm512_loadu_ps(u0 + 16 * c))),
                                     _mm512_loadu_ps(u1 + 16 * c));
      v[c] = _mm512_add_ps(_mm512_mul_ps(s1, _mm512_add_ps(t, _mm512_loadu_ps(row + 16 * c))),
                           _mm512_loadu_ps(u2 + 16 * c));
    }
    for (int s = 0; s < 4; s++) {
      const __m512 *x = v + 4 * s;
      mean[s] = _mm512_reduce_add_ps(
                    _mm512_add_ps(_mm512_add_ps(x[0], x[1]), _mm512_add_ps(x[2], x[3]))) /
                64.0f;
    }
    for (int s = 0; s < 4; s++) {
      const __m512 m = _mm512_set1_ps(mean[s]);
      __m512 sq = _mm512_setzero_ps();
      for (int q = 0; q < 4; q++) {
        v[4 * s + q] = _mm512_sub_ps(v[4 * s + q], m);
        sq = _mm512_fmadd_ps(v[4 * s + q], v[4 * s + q], sq);
      }
      inv[s] = 1.0f / sqrtf(_mm512_reduce_add_ps(sq) / 64.0f + eps);
    }
    for (int s = 0; s < 4; s++) {
      const __m512 k = _mm512_set1_ps(inv[s]);
      for (int q = 0; q < 4; q++) {
        const __m512 n = _mm512_fmadd_ps(_mm512_mul_ps(v[4 * s + q], k),
                                         _mm512_loadu_ps(w + 16 * q), _mm512_loadu_ps(b + 16 * q));
        _mm512_storeu_ps(row + 64 * s + 16 * q, evk_gelu_erf16(n));
      }
    }
  }
}

#endif
