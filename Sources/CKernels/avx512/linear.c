// A linear layer on a handful of rows (the mask decoder's tokens) at 16 lanes, on the weight
// packed by evk_linear_pack (packing.c).

#include "vector.h"

#if EVK_X86

// Few-row linear layer on the packed weight (see evk_linear_pack): each 32-output strip of
// the weight is read once, sequentially, and feeds every row's accumulators through
// broadcasts, so nothing needs a horizontal sum. R is a
// compile-time constant in each instantiation (see the switch below), which keeps the 2·R
// accumulators in registers.
EVK_AVX512 __attribute__((always_inline)) static inline void evk_linear_rows_r(
    const float *x, long ldx, const int R, long in, const float *wt, const float *bias, long out,
    float *y, long ldy, int relu) {
  for (long o = 0; o < out; o += 32) {
    const long left = out - o;
    const __mmask16 k0 = evk_mask16(left), k1 = evk_mask16(left - 16);
    __m512 a0[EVK_FEW_ROWS], a1[EVK_FEW_ROWS];
    for (int r = 0; r < R; r++) {
      a0[r] = _mm512_setzero_ps();
      a1[r] = _mm512_setzero_ps();
    }
    const float *strip = wt + o * in;
    for (long i = 0; i < in; i++) {
      const __m512 w0 = _mm512_loadu_ps(strip + i * 32);
      const __m512 w1 = _mm512_loadu_ps(strip + i * 32 + 16);
      for (int r = 0; r < R; r++) {
        const __m512 xv = _mm512_set1_ps(x[r * ldx + i]);
        a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
        a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
      }
    }
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(k0, bias + o) : _mm512_setzero_ps();
    const __m512 b1 = bias ? _mm512_maskz_loadu_ps(k1, bias + o + 16) : _mm512_setzero_ps();
    for (int r = 0; r < R; r++) {
      __m512 v0 = _mm512_add_ps(a0[r], b0), v1 = _mm512_add_ps(a1[r], b1);
      if (relu) {
        v0 = _mm512_max_ps(v0, _mm512_setzero_ps());
        v1 = _mm512_max_ps(v1, _mm512_setzero_ps());
      }
      _mm512_mask_storeu_ps(y + r * ldy + o, k0, v0);
      _mm512_mask_storeu_ps(y + r * ldy + o + 16, k1, v1);
    }
  }
}

EVK_AVX512 void evk_linear_few_rows_avx512(const float *x, long ldx, long rows, long in,
                                           const float *wt, const float *bias, long out, float *y,
                                           long ldy, int relu) {
  // clang-format off
  switch (rows) {
#define EVK_ROWS_CASE(R) \
  case R: evk_linear_rows_r(x, ldx, R, in, wt, bias, out, y, ldy, relu); break;
    EVK_ROWS_CASE(1) EVK_ROWS_CASE(2) EVK_ROWS_CASE(3) EVK_ROWS_CASE(4)
    EVK_ROWS_CASE(5) EVK_ROWS_CASE(6) EVK_ROWS_CASE(7) EVK_ROWS_CASE(8)
    EVK_ROWS_CASE(9) EVK_ROWS_CASE(10) EVK_ROWS_CASE(11) EVK_ROWS_CASE(12)
#undef EVK_ROWS_CASE
    default: break;
  }
  // clang-format on
}

#endif
