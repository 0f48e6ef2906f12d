// The split-invariant small GEMM's tiles at 8 lanes; the blocking around them is smallgemm.c.
// Each element of C is one chain of fused multiply-adds over p in order, starting from 0 or
// from C.

#include "vector.h"

#if EVK_X86

// One tile: R ≤ 6 rows × V ≤ 2 vectors of 8 columns of C, from a panel of B packed as rows of
// 16 floats; C's last vector is masked with `last` (all lanes set for full tiles). A's
// element (r, p) is a[r·rs + p·ks]. R and V are constants in every instantiation, so the
// accumulators stay in registers (12 + 2 for B + 1 broadcast).
EVK_AVX2 __attribute__((always_inline)) static inline void gemm_tile(
    const int R, const int V, const int M, long k, const float *a, long rs, long ks,
    const float *panel, float *c, long ldc, __m256i last, int accumulate) {
  __m256 acc[6][2];
  for (int r = 0; r < R; r++) {
    for (int v = 0; v < V; v++) {
      acc[r][v] = !accumulate       ? _mm256_setzero_ps()
                  : M && v == V - 1 ? _mm256_maskload_ps(c + r * ldc + 8 * v, last)
                                    : _mm256_loadu_ps(c + r * ldc + 8 * v);
    }
  }
  for (long p = 0; p < k; p++) {
    const float *bp = panel + p * 16;
    __m256 bv[2];
    for (int v = 0; v < V; v++) bv[v] = _mm256_loadu_ps(bp + 8 * v);
    const float *ap = a + p * ks;
    for (int r = 0; r < R; r++) {
      const __m256 x = _mm256_broadcast_ss(ap + r * rs);
      for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(x, bv[v], acc[r][v]);
    }
  }
  // Masked stores only for a partial last vector: AMD's are microcoded and slow.
  for (int r = 0; r < R; r++) {
    for (int v = 0; v < V; v++) {
      if (M && v == V - 1) {
        _mm256_maskstore_ps(c + r * ldc + 8 * v, last, acc[r][v]);
      } else {
        _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
      }
    }
  }
}

#define GEMM_ROWS(V, M)                                              \
  switch (rows) {                                                    \
    case 6:                                                          \
      gemm_tile(6, V, M, kc, ai, rs, ks, panel, ci, ldc, last, acc); \
      break;                                                         \
    case 5:                                                          \
      gemm_tile(5, V, M, kc, ai, rs, ks, panel, ci, ldc, last, acc); \
      break;                                                         \
    case 4:                                                          \
      gemm_tile(4, V, M, kc, ai, rs, ks, panel, ci, ldc, last, acc); \
      break;                                                         \
    case 3:                                                          \
      gemm_tile(3, V, M, kc, ai, rs, ks, panel, ci, ldc, last, acc); \
      break;                                                         \
    case 2:                                                          \
      gemm_tile(2, V, M, kc, ai, rs, ks, panel, ci, ldc, last, acc); \
      break;                                                         \
    default:                                                         \
      gemm_tile(1, V, M, kc, ai, rs, ks, panel, ci, ldc, last, acc); \
      break;                                                         \
  }

// All row tiles of one column panel (columns j0 ..< j0 + cols, cols ≤ 16) against rows
// p0 ..< p0 + kc of B, packed in `panel`.
EVK_AVX2 void evk_gemm_panel_avx2(long m, long cols, long kc, const float *a, long rs, long ks,
                                  const float *panel, float *c, long ldc, int acc) {
  const int vectors = cols > 8 ? 2 : 1;
  const __m256i last = evk_mask8(cols - 8 * (vectors - 1));
  for (long i0 = 0; i0 < m; i0 += 6) {
    const long rows = m - i0 < 6 ? m - i0 : 6;
    const float *ai = a + i0 * rs;
    float *ci = c + i0 * ldc;
    if (cols == 16) {
      GEMM_ROWS(2, 0)
    } else if (cols > 8) {
      GEMM_ROWS(2, 1)
    } else if (cols == 8) {
      GEMM_ROWS(1, 0)
    } else {
      GEMM_ROWS(1, 1)
    }
  }
}

#endif
