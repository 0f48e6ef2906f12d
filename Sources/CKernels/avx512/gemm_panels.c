// The split-invariant small GEMM's tiles at 16 lanes; the blocking around them is smallgemm.c.

#include "vector.h"

#if EVK_X86

// The AVX-512 tile: R ≤ 12 rows × one vector of 16 columns (the whole panel), C's lanes past
// `cols` masked. Each element is still one fused chain over p in order, starting from 0 or
// from C, so the results are bit-for-bit those of the AVX2 tile.
EVK_AVX512 __attribute__((always_inline)) static inline void gemm_tile512(
    const int R, long k, const float *a, long rs, long ks, const float *panel, float *c, long ldc,
    __mmask16 mk, int accumulate) {
  __m512 acc[12];
  for (int r = 0; r < R; r++)
    acc[r] = accumulate ? _mm512_maskz_loadu_ps(mk, c + r * ldc) : _mm512_setzero_ps();
  for (long p = 0; p < k; p++) {
    const __m512 bv = _mm512_loadu_ps(panel + p * 16);
    const float *ap = a + p * ks;
    for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(ap[r * rs]), bv, acc[r]);
  }
  for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(c + r * ldc, mk, acc[r]);
}

#define GEMM512_CASE(R)                                       \
  case R:                                                     \
    gemm_tile512(R, kc, ai, rs, ks, panel, ci, ldc, mk, acc); \
    break;

// All row tiles of one 16-column panel, in tiles of equal height (m = 16 runs as 8 + 8, not
// 12 + 4: a short tile reuses each B load less).
EVK_AVX512 void evk_gemm_panel_avx512(long m, long cols, long kc, const float *a, long rs, long ks,
                                      const float *panel, float *c, long ldc, int acc) {
  const __mmask16 mk = evk_mask16(cols);
  const long tiles = (m + 11) / 12;
  const long height = (m + tiles - 1) / tiles;
  for (long i0 = 0; i0 < m; i0 += height) {
    const long rows = m - i0 < height ? m - i0 : height;
    const float *ai = a + i0 * rs;
    float *ci = c + i0 * ldc;
    switch (rows) {
      GEMM512_CASE(12)
      GEMM512_CASE(11)
      GEMM512_CASE(10)
      GEMM512_CASE(9)
      GEMM512_CASE(8)
      GEMM512_CASE(7)
      GEMM512_CASE(6)
      GEMM512_CASE(5)
      GEMM512_CASE(4)
      GEMM512_CASE(3)
      GEMM512_CASE(2)
      default:
        gemm_tile512(1, kc, ai, rs, ks, panel, ci, ldc, mk, acc);
        break;
    }
  }
}

// Two adjacent panels at once (up to 32 columns): R ≤ 8 rows × two vectors. Each broadcast of A
// feeds two fused multiply-adds instead of one (a broadcast is a load, and loads limited the
// single-panel tile: 75–79 against 100–115 G multiply-adds/s on the decoder's shapes). Taller
// tiles measured slower (11 rows: 47–50). Same chains as above, so the same bits.
EVK_AVX512 __attribute__((always_inline)) static inline void gemm_tile512x2(
    const int R, long k, const float *a, long rs, long ks, const float *panel0, const float *panel1,
    float *c, long ldc, __mmask16 mk, int accumulate) {
  __m512 acc0[8], acc1[8];
  for (int r = 0; r < R; r++) {
    acc0[r] = accumulate ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    acc1[r] = accumulate ? _mm512_maskz_loadu_ps(mk, c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (long p = 0; p < k; p++) {
    const __m512 b0 = _mm512_loadu_ps(panel0 + p * 16), b1 = _mm512_loadu_ps(panel1 + p * 16);
    const float *ap = a + p * ks;
    for (int r = 0; r < R; r++) {
      const __m512 x = _mm512_set1_ps(ap[r * rs]);
      acc0[r] = _mm512_fmadd_ps(x, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(x, b1, acc1[r]);
    }
  }
  for (int r = 0; r < R; r++) {
    _mm512_storeu_ps(c + r * ldc, acc0[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, mk, acc1[r]);
  }
}

#define GEMM512X2_CASE(R)                                                \
  case R:                                                                \
    gemm_tile512x2(R, kc, ai, rs, ks, panel0, panel1, ci, ldc, mk, acc); \
    break;

// All row tiles of two adjacent 16-column panels (the second holding `cols1` ≤ 16 columns).
EVK_AVX512 void evk_gemm_panel2_avx512(long m, long cols1, long kc, const float *a, long rs,
                                       long ks, const float *panel0, const float *panel1, float *c,
                                       long ldc, int acc) {
  const __mmask16 mk = evk_mask16(cols1);
  const long tiles = (m + 7) / 8;
  const long height = (m + tiles - 1) / tiles;
  for (long i0 = 0; i0 < m; i0 += height) {
    const long rows = m - i0 < height ? m - i0 : height;
    const float *ai = a + i0 * rs;
    float *ci = c + i0 * ldc;
    switch (rows) {
      GEMM512X2_CASE(8)
      GEMM512X2_CASE(7)
      GEMM512X2_CASE(6)
      GEMM512X2_CASE(5)
      GEMM512X2_CASE(4)
      GEMM512X2_CASE(3)
      GEMM512X2_CASE(2)
      default:
        gemm_tile512x2(1, kc, ai, rs, ks, panel0, panel1, ci, ldc, mk, acc);
        break;
    }
  }
}

#endif
