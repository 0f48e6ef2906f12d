// A linear layer on a handful of rows (the mask decoder's tokens) at 8 lanes, on the weight
// packed by evk_linear_pack (packing.c).

#include "vector.h"

#if EVK_X86

// Few-row linear layer on the weight packed in strips of 32 outputs (evk_linear_pack). Up to
// three rows at a time keep 12 accumulators (3 rows × 32 outputs) in the 16 registers; the
// strip (in × 32 floats) is read once per group of rows, from cache after the first.
EVK_AVX2 __attribute__((always_inline)) static inline void linear_rows8(
    const float *x, long ldx, const int R, long in, const float *strip, const long *n,
    const float *bias, long o, float *y, long ldy, int relu) {
  __m256 a[3][4];
  for (int r = 0; r < R; r++)
    for (int q = 0; q < 4; q++) a[r][q] = _mm256_setzero_ps();
  for (long i = 0; i < in; i++) {
    const float *w = strip + i * 32;
    const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8), w2 = _mm256_loadu_ps(w + 16),
                 w3 = _mm256_loadu_ps(w + 24);
    for (int r = 0; r < R; r++) {
      const __m256 xv = _mm256_broadcast_ss(x + r * ldx + i);
      a[r][0] = _mm256_fmadd_ps(xv, w0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(xv, w1, a[r][1]);
      a[r][2] = _mm256_fmadd_ps(xv, w2, a[r][2]);
      a[r][3] = _mm256_fmadd_ps(xv, w3, a[r][3]);
    }
  }
  for (int q = 0; q < 4; q++) {
    if (n[q] <= 0) continue;
    const __m256 bq = bias ? evk_loadn8(bias + o + 8 * q, n[q]) : _mm256_setzero_ps();
    for (int r = 0; r < R; r++) {
      __m256 v = _mm256_add_ps(a[r][q], bq);
      if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      evk_storen8(y + r * ldy + o + 8 * q, v, n[q]);
    }
  }
}

/// R ≤ 7 rows against 16 outputs (half `half` of a 32-output strip): every row in one pass
/// over the strip, so each weight is read once (the three-row passes above read a strip once
/// per group of rows, from L2 when it does not fit L1).
EVK_AVX2 __attribute__((always_inline)) static inline void linear_rows16(
    const float *x, long ldx, const int R, long in, const float *strip, int half, const long *n,
    const float *bias, long o, float *y, long ldy, int relu) {
  __m256 a[7][2];
  for (int r = 0; r < R; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
  const float *w = strip + 16 * half;
  for (long i = 0; i < in; i++) {
    const __m256 w0 = _mm256_loadu_ps(w + i * 32), w1 = _mm256_loadu_ps(w + i * 32 + 8);
    for (int r = 0; r < R; r++) {
      const __m256 xv = _mm256_broadcast_ss(x + r * ldx + i);
      a[r][0] = _mm256_fmadd_ps(xv, w0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(xv, w1, a[r][1]);
    }
  }
  for (int q = 0; q < 2; q++) {
    const long nq = n[2 * half + q];
    if (nq <= 0) continue;
    const long oq = o + 16 * half + 8 * q;
    const __m256 bq = bias ? evk_loadn8(bias + oq, nq) : _mm256_setzero_ps();
    for (int r = 0; r < R; r++) {
      __m256 v = _mm256_add_ps(a[r][q], bq);
      if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      evk_storen8(y + r * ldy + oq, v, nq);
    }
  }
}

EVK_AVX2 void evk_linear_few_rows_avx2(const float *x, long ldx, long rows, long in,
                                       const float *wt, const float *bias, long out, float *y,
                                       long ldy, int relu) {
  for (long o = 0; o < out; o += 32) {
    const long left = out - o;
    long n[4];
    for (int q = 0; q < 4; q++) {
      const long m = left - 8 * q;
      n[q] = m <= 0 ? 0 : (m >= 8 ? 8 : m);
    }
    const float *strip = wt + o * in;
    long r = 0;
    if (rows >= 4 && rows <= 7) {
      // Four to seven rows (a prompt's tokens): all of them per pass, 16 outputs at a time.
      for (int half = 0; half < 2; half++) {
        if (n[2 * half] <= 0) continue;
        switch (rows) {
          case 4:
            linear_rows16(x, ldx, 4, in, strip, half, n, bias, o, y, ldy, relu);
            break;
          case 5:
            linear_rows16(x, ldx, 5, in, strip, half, n, bias, o, y, ldy, relu);
            break;
          case 6:
            linear_rows16(x, ldx, 6, in, strip, half, n, bias, o, y, ldy, relu);
            break;
          default:
            linear_rows16(x, ldx, 7, in, strip, half, n, bias, o, y, ldy, relu);
            break;
        }
      }
      continue;
    }
    for (; r + 3 <= rows; r += 3)
      linear_rows8(x + r * ldx, ldx, 3, in, strip, n, bias, o, y + r * ldy, ldy, relu);
    if (rows - r == 2)
      linear_rows8(x + r * ldx, ldx, 2, in, strip, n, bias, o, y + r * ldy, ldy, relu);
    if (rows - r == 1)
      linear_rows8(x + r * ldx, ldx, 1, in, strip, n, bias, o, y + r * ldy, ldy, relu);
  }
}

#endif
