// A small GEMM for operands that already sit in cache (the mask decoder's slices of image
// tokens), with no packing and no separate pass to clear C.
//
// Every element of C is computed as one chain over p = 0 ..< k in order (fused multiply-adds
// in the AVX2 kernel, multiply-then-add in the portable one), starting from 0 or from C. No
// element's arithmetic depends on the shapes, the tile it falls in or the rows and columns
// around it, so a product split into row or column blocks, on any number of threads, gives
// bit-for-bit the same result. (OpenBLAS's does not: its result depends on the block sizes.)

#include "internal.h"

// Portable: also the reference the AVX2 kernel is tested against (same association order,
// without fusing).
static void gemm_portable(int trans_a, long m, long n, long k, const float *a, long lda,
                          const float *b, long ldb, float *c, long ldc, int accumulate) {
  const long rs = trans_a ? 1 : lda, ks = trans_a ? lda : 1;
  for (long i = 0; i < m; i++) {
    float *row = c + i * ldc;
    if (!accumulate)
      for (long j = 0; j < n; j++) row[j] = 0;
    for (long p = 0; p < k; p++) {
      const float av = a[i * rs + p * ks];
      const float *brow = b + p * ldb;
      for (long j = 0; j < n; j++) row[j] = row[j] + av * brow[j];
    }
  }
}

#if EVK_X86
#include <immintrin.h>
#include <stdint.h>

EVK_AVX2 static inline __m256i gemm_mask8(long n) {
  static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256((const __m256i *)(bits + 8 - n));
}

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
EVK_AVX2 static void gemm_panel_avx2(long m, long cols, long kc, const float *a, long rs, long ks,
                                     const float *panel, float *c, long ldc, int acc) {
  const int vectors = cols > 8 ? 2 : 1;
  const __m256i last = gemm_mask8(cols - 8 * (vectors - 1));
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
EVK_AVX512 static void gemm_panel_avx512(long m, long cols, long kc, const float *a, long rs,
                                         long ks, const float *panel, float *c, long ldc, int acc) {
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
EVK_AVX512 static void gemm_panel2_avx512(long m, long cols1, long kc, const float *a, long rs,
                                          long ks, const float *panel0, const float *panel1,
                                          float *c, long ldc, int acc) {
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

// One column panel, in AVX-512 when `wide` (the caller's level, looked up once per product).
static inline void gemm_panel(int wide, long m, long cols, long kc, const float *a, long rs,
                              long ks, const float *panel, float *c, long ldc, int acc) {
  if (wide) {
    gemm_panel_avx512(m, cols, kc, a, rs, ks, panel, c, ldc, acc);
  } else {
    gemm_panel_avx2(m, cols, kc, a, rs, ks, panel, c, ldc, acc);
  }
}

// Rows of B per panel packed on the fly: 256 × 16 floats = 16 KB, half the L1 cache (two
// panels of 128 rows each with AVX-512).
#define GEMM_KC 256

EVK_AVX2 static void gemm_avx2(int trans_a, long m, long n, long k, const float *a, long lda,
                               const float *b, long ldb, float *c, long ldc, int accumulate) {
  const int wide = evk_level() >= EVK_LEVEL_AVX512;
  const long rs = trans_a ? 1 : lda, ks = trans_a ? lda : 1;
  // B's panel is copied into contiguous memory first: read in place, its rows may lie a
  // power-of-two stride apart and evict each other from the L1 cache. (Per thread, not on the
  // stack: 16 KB would overrun the guard page of a small thread stack.)
  static _Thread_local float panel[GEMM_KC * 16] __attribute__((aligned(64)));
  for (long j0 = 0; j0 < n;) {
    // With AVX-512, two panels at a time (see `gemm_panel2_avx512`), each of half the rows.
    const int pair = wide && j0 + 16 < n;
    const long width = pair ? 32 : 16, depth = pair ? GEMM_KC / 2 : GEMM_KC;
    const long cols = n - j0 < width ? n - j0 : width;
    // Blocks of `depth` rows of B; later blocks accumulate onto the earlier ones, which keeps
    // each element's chain in order over p.
    for (long p0 = 0; p0 < k; p0 += depth) {
      const long kc = k - p0 < depth ? k - p0 : depth;
      for (long p = 0; p < kc; p++) {
        const float *src = b + (p0 + p) * ldb + j0;
        // Columns 0–15 go to row p of the first panel, 16–31 to row p of the second.
        for (long half = 0; half < width; half += 16) {
          const long valid = cols - half < 16 ? cols - half : 16;
          float *dst = panel + (half >> 4) * depth * 16 + p * 16;
          long j = 0;
          for (; j < valid; j++) dst[j] = src[half + j];
          for (; j < 16; j++) dst[j] = 0;
        }
      }
      const int chained = accumulate || p0 > 0;
      if (pair) {
        gemm_panel2_avx512(m, cols - 16, kc, a + p0 * ks, rs, ks, panel, panel + depth * 16, c + j0,
                           ldc, chained);
      } else {
        gemm_panel(wide, m, cols, kc, a + p0 * ks, rs, ks, panel, c + j0, ldc, chained);
      }
    }
    j0 += cols;
  }
}

EVK_AVX2 static void gemm_prepacked_avx2(int trans_a, long m, long n, long k, const float *a,
                                         long lda, const float *packed, float *c, long ldc,
                                         int accumulate) {
  const long rs = trans_a ? 1 : lda, ks = trans_a ? lda : 1;
  const int wide = evk_level() >= EVK_LEVEL_AVX512;
  long j0 = 0;
  if (wide) {
    for (; j0 + 16 < n; j0 += 32) {
      const long cols1 = n - j0 - 16 < 16 ? n - j0 - 16 : 16;
      gemm_panel2_avx512(m, cols1, k, a, rs, ks, packed + j0 * k, packed + (j0 + 16) * k, c + j0,
                         ldc, accumulate);
    }
  }
  for (; j0 < n; j0 += 16) {
    const long cols = n - j0 < 16 ? n - j0 : 16;
    gemm_panel(wide, m, cols, k, a, rs, ks, packed + j0 * k, c + j0, ldc, accumulate);
  }
}
#endif

void evk_gemm(int trans_a, long m, long n, long k, const float *a, long lda, const float *b,
              long ldb, float *c, long ldc, int accumulate) {
  if (m <= 0 || n <= 0) return;
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2 && k > 0) {
    gemm_avx2(trans_a, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
    return;
  }
#endif
  gemm_portable(trans_a, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
}

long evk_gemm_packed_count(long k, long n) { return (n + 15) / 16 * 16 * k; }

void evk_gemm_pack(long k, long n, const float *b, long ldb, float *packed) {
  for (long j0 = 0; j0 < n; j0 += 16) {
    float *panel = packed + j0 * k;
    for (long p = 0; p < k; p++) {
      for (long j = 0; j < 16; j++) panel[p * 16 + j] = j0 + j < n ? b[p * ldb + j0 + j] : 0.0f;
    }
  }
}

void evk_gemm_prepacked(int trans_a, long m, long n, long k, const float *a, long lda,
                        const float *packed, float *c, long ldc, int accumulate) {
  if (m <= 0 || n <= 0) return;
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2 && k > 0) {
    gemm_prepacked_avx2(trans_a, m, n, k, a, lda, packed, c, ldc, accumulate);
    return;
  }
#endif
  // Portable: panel by panel, so the same loops serve (B's row p of panel j0 is 16 floats).
  for (long j0 = 0; j0 < n; j0 += 16) {
    const long cols = n - j0 < 16 ? n - j0 : 16;
    gemm_portable(trans_a, m, cols, k, a, lda, packed + j0 * k, 16, c + j0, ldc, accumulate);
  }
}
