// A small GEMM for operands that already sit in cache (the mask decoder's slices of image
// tokens), with no packing and no separate pass to clear C.
//
// Every element of C is computed as one chain over p = 0 ..< k in order (fused multiply-adds
// in the AVX2 and AVX-512 tiles, avx2/ and avx512/gemm_panels.c), starting from 0 or from C. No
// element's arithmetic depends on the shapes, the tile it falls in or the rows and columns
// around it, so a product split into row or column blocks, on any number of threads, gives
// bit-for-bit the same result. (OpenBLAS's does not: its result depends on the block sizes.)

#include "internal.h"

#if EVK_X86

// One column panel, in AVX-512 when `wide` (the caller's level, looked up once per product).
static inline void gemm_panel(int wide, long m, long cols, long kc, const float *a, long rs,
                              long ks, const float *panel, float *c, long ldc, int acc) {
  if (wide) {
    evk_gemm_panel_avx512(m, cols, kc, a, rs, ks, panel, c, ldc, acc);
  } else {
    evk_gemm_panel_avx2(m, cols, kc, a, rs, ks, panel, c, ldc, acc);
  }
}

// Rows of B per panel packed on the fly: 256 × 16 floats = 16 KB, half the L1 cache (two
// panels of 128 rows each with AVX-512).
#define GEMM_KC 256

EVK_AVX2 void evk_small_gemm(int wide, int trans_a, long m, long n, long k, const float *a,
                             long lda, const float *b, long ldb, float *c, long ldc,
                             int accumulate) {
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
        evk_gemm_panel2_avx512(m, cols - 16, kc, a + p0 * ks, rs, ks, panel, panel + depth * 16,
                               c + j0, ldc, chained);
      } else {
        gemm_panel(wide, m, cols, kc, a + p0 * ks, rs, ks, panel, c + j0, ldc, chained);
      }
    }
    j0 += cols;
  }
}

EVK_AVX2 void evk_small_gemm_prepacked(int wide, int trans_a, long m, long n, long k,
                                       const float *a, long lda, const float *packed, float *c,
                                       long ldc, int accumulate) {
  const long rs = trans_a ? 1 : lda, ks = trans_a ? lda : 1;
  long j0 = 0;
  if (wide) {
    for (; j0 + 16 < n; j0 += 32) {
      const long cols1 = n - j0 - 16 < 16 ? n - j0 - 16 : 16;
      evk_gemm_panel2_avx512(m, cols1, k, a, rs, ks, packed + j0 * k, packed + (j0 + 16) * k,
                             c + j0, ldc, accumulate);
    }
  }
  for (; j0 < n; j0 += 16) {
    const long cols = n - j0 < 16 ? n - j0 : 16;
    gemm_panel(wide, m, cols, k, a, rs, ks, packed + j0 * k, c + j0, ldc, accumulate);
  }
}

#endif
