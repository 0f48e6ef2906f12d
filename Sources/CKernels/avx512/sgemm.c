// A general single-precision GEMM in AVX-512, for the encoder's large products (convolutions
// as GEMM, Winograd's batched products, 1×1 convolutions) on CPUs with AVX-512F.
//
// Why our own: OpenBLAS picks its kernels once per process from the CPU *or* from the
// environment (OPENBLAS_CORETYPE), and machines of this project's kind have been seen with
// OPENBLAS_CORETYPE=Haswell set for every process. With that, OpenBLAS runs its AVX2 kernels
// at about half of what the CPU's 512-bit FMAs give (112 against 205–239 GFLOP/s measured on
// one core of a Zen 5). This kernel depends on nothing but the CPU.
//
// The usual three-level blocking (Goto / BLIS): for each block of at most KC rows of op(B) and
// of its columns (≈ 640 KB, for the L2), B is packed into panels of NR = 48 columns. For each
// block of MC rows of A, an 8 × 48 register tile (24 accumulators; 8 × 32 or 8 × 16 for a
// ragged last panel) runs over the block's products with A's 8 rows (read in place; packed
// only when A is transposed or for a ragged last row panel) in the L1 cache.

#include "vector.h"

#include <stdlib.h>

#if EVK_X86

// KC is a cap: a k up to it runs as one block (C is then written once, not read back and
// rewritten per block), a larger k in equal blocks. B's block gets about 640 KB of the L2.
enum { MR = 8, NR = 48, KC = 320, B_BLOCK = 160 * 1024, MC = 256 };

// `count` lanes of a matrix as panels of `width` lanes × `depth` steps: lane l, step p of the
// source is src[l·lane_stride + p·depth_stride], and panel q (q a multiple of width) holds it at
// dst[q·depth + p·width + (l − q)]; lanes past `count` are zero. A's rows (MR lanes) and B's
// columns (NR lanes) both pack this way; the loops run along whichever stride is 1.
static void pack_panels(const float *src, long lane_stride, long depth_stride, long count,
                        long depth, long width, float *dst) {
  for (long q = 0; q < count; q += width) {
    const long live = count - q < width ? count - q : width;
    const float *first = src + q * lane_stride;
    float *panel = dst + q * depth;
    if (lane_stride == 1) {
      for (long p = 0; p < depth; p++) {
        const float *from = first + p * depth_stride;
        float *row = panel + p * width;
        long l = 0;
        for (; l < live; l++) row[l] = from[l];
        for (; l < width; l++) row[l] = 0;
      }
    } else {
      for (long l = 0; l < width; l++) {
        if (l < live) {
          const float *from = first + l * lane_stride;
          for (long p = 0; p < depth; p++) panel[p * width + l] = from[p * depth_stride];
        } else {
          for (long p = 0; p < depth; p++) panel[p * width + l] = 0;
        }
      }
    }
  }
}

// C[rows × cols] (rows ≤ MR, cols ≤ 16·V) = alpha·Ap·Bp + beta·C, or += alpha·Ap·Bp when
// `accumulate`. beta == 0 never reads C, so C may hold garbage or NaN. V (vectors of 16
// columns) is a constant in each instantiation, so a ragged last panel does not pay for the
// full 48 columns and the accumulators stay in registers.
// A's element (r, p) is ap[r·rs + p·ks]: a packed panel (rs = 1, ks = MR) or, for a
// non-transposed A, its rows in place (rs = lda, ks = 1), which saves packing A once per
// column block: that copy of A costs as much as a sixth of the products when n is ~128.
EVK_AVX512 __attribute__((always_inline)) static inline void tile(
    const int V, long kc, const float *ap, long rs, long ks, const float *bp, float *c, long ldc,
    long rows, long cols, float alpha, float beta, int accumulate) {
  __m512 acc[MR][3];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
  for (long p = 0; p < kc; p++) {
    __m512 bv[3];
    for (int v = 0; v < V; v++) bv[v] = _mm512_load_ps(bp + p * NR + 16 * v);
    const float *ar = ap + p * ks;
    for (int r = 0; r < MR; r++) {
      const __m512 x = _mm512_set1_ps(ar[r * rs]);
      for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(x, bv[v], acc[r][v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  __mmask16 masks[3];
  for (int v = 0; v < V; v++) masks[v] = evk_mask16(cols - 16 * v);
  for (int r = 0; r < MR; r++) {
    if (r >= rows) break;
    float *row = c + r * ldc;
    for (int v = 0; v < V; v++) {
      const __mmask16 mk = masks[v];
      __m512 y = alpha == 1.0f ? acc[r][v] : _mm512_mul_ps(va, acc[r][v]);
      if (accumulate) {
        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mk, row + 16 * v));
      } else if (beta != 0.0f) {
        y = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, row + 16 * v), y);
      }
      _mm512_mask_storeu_ps(row + 16 * v, mk, y);
    }
  }
}

#define TILE_VARIANT(NAME, V, RS, KS)                                                        \
  EVK_AVX512 static void NAME(long kc, const float *ap, long lda, const float *bp, float *c, \
                              long ldc, long rows, long cols, float alpha, float beta,       \
                              int accumulate) {                                              \
    (void)lda;                                                                               \
    tile(V, kc, ap, RS, KS, bp, c, ldc, rows, cols, alpha, beta, accumulate);                \
  }
TILE_VARIANT(packed_48, 3, 1, MR)
TILE_VARIANT(packed_32, 2, 1, MR)
TILE_VARIANT(packed_16, 1, 1, MR)
TILE_VARIANT(rows_48, 3, lda, 1)
TILE_VARIANT(rows_32, 2, lda, 1)
TILE_VARIANT(rows_16, 1, lda, 1)

// The fused epilogue of a finished row segment, while it is still in the L1 cache: the same
// operations as the separate pass it replaces (`applyBiasActivation`), so results do not change.
EVK_AVX512 static void row_epilogue(float *p, long n, float bias, int act) {
  if (act == EVK_EPILOGUE_NONE && bias == 0) return;
  for (long i = 0; i < n; i += 16) {
    const __mmask16 k = evk_mask16(n - i);
    _mm512_mask_storeu_ps(p + i, k, evk_epilogue16(_mm512_maskz_loadu_ps(k, p + i), bias, act));
  }
}

// Per-thread packing buffers, grown on demand and kept: the workers that call this live for
// the whole process, and a fresh allocation per call would cost page faults on every product.
static _Thread_local float *pack_a_buf, *pack_b_buf;

EVK_AVX512 int evk_sgemm_avx512(int trans_a, int trans_b, long m, long n, long k, float alpha,
                                const float *a, long lda, const float *b, long ldb, float beta,
                                float *c, long ldc, const float *row_bias, int act) {
  if (!pack_a_buf) pack_a_buf = aligned_alloc(64, sizeof(float) * MC * KC);
  if (!pack_b_buf) pack_b_buf = aligned_alloc(64, sizeof(float) * (B_BLOCK + KC * NR));
  if (!pack_a_buf || !pack_b_buf) return 0;
  const long k_blocks = (k + KC - 1) / KC;
  const long kc_max = (k + k_blocks - 1) / k_blocks;
  long nc_max = B_BLOCK / kc_max / NR * NR;
  if (nc_max < NR) nc_max = NR;
  for (long j0 = 0; j0 < n; j0 += nc_max) {
    const long nc = n - j0 < nc_max ? n - j0 : nc_max;
    for (long p0 = 0; p0 < k; p0 += kc_max) {
      const long kc = k - p0 < kc_max ? k - p0 : kc_max;
      // op(B)'s columns j0 ..< j0 + nc over rows p0 ..< p0 + kc.
      if (trans_b) {
        pack_panels(b + j0 * ldb + p0, ldb, 1, nc, kc, NR, pack_b_buf);
      } else {
        pack_panels(b + p0 * ldb + j0, 1, ldb, nc, kc, NR, pack_b_buf);
      }
      for (long i0 = 0; i0 < m; i0 += MC) {
        const long mc = m - i0 < MC ? m - i0 : MC;
        // Only a transposed A, or the ragged last panel, is packed.
        const long in_place = trans_a ? 0 : mc / MR * MR;
        if (in_place < mc) {
          const long i = i0 + in_place;  // op(A)'s rows i ..< i0 + mc over columns p0 ..< p0 + kc
          if (trans_a) {
            pack_panels(a + p0 * lda + i, 1, lda, mc - in_place, kc, MR,
                        pack_a_buf + in_place * kc);
          } else {
            pack_panels(a + i * lda + p0, lda, 1, mc - in_place, kc, MR,
                        pack_a_buf + in_place * kc);
          }
        }
        for (long ir = 0; ir < mc; ir += MR) {
          const long rows = mc - ir < MR ? mc - ir : MR;
          const int packed = ir >= in_place;
          const float *ap = packed ? pack_a_buf + ir * kc : a + (i0 + ir) * lda + p0;
          for (long jr = 0; jr < nc; jr += NR) {
            const long cols = nc - jr < NR ? nc - jr : NR;
            const float *bp = pack_b_buf + jr * kc;
            float *cij = c + (i0 + ir) * ldc + j0 + jr;
            const int acc = p0 > 0;
            if (cols > 32) {
              (packed ? packed_48 : rows_48)(kc, ap, lda, bp, cij, ldc, rows, cols, alpha, beta,
                                             acc);
            } else if (cols > 16) {
              (packed ? packed_32 : rows_32)(kc, ap, lda, bp, cij, ldc, rows, cols, alpha, beta,
                                             acc);
            } else {
              (packed ? packed_16 : rows_16)(kc, ap, lda, bp, cij, ldc, rows, cols, alpha, beta,
                                             acc);
            }
            if (p0 + kc == k && (row_bias || act != EVK_EPILOGUE_NONE)) {
              for (long r = 0; r < rows; r++)
                row_epilogue(cij + r * ldc, cols, row_bias ? row_bias[i0 + ir + r] : 0, act);
            }
          }
        }
      }
    }
  }
  return 1;
}
#endif
