#ifndef EVSAM_CKERNELS_INTERNAL_H
#define EVSAM_CKERNELS_INTERNAL_H

// What dispatch.c and the per-level files share: whether this is an x86-64 build, the target
// attributes, the level in force, and every per-level kernel dispatch.c may call.
//
// Layout of this target:
//   dispatch.c       CPU detection, EVSAM_SIMD and per-thread caps, every evk_* entry point
//   smallgemm.c      the blocking of the split-invariant small GEMM (its tiles are per level)
//   packing.c        weight layouts the kernels read (run once, at load)
//   heap.c           glibc's heap policy
//   simd/formulas.h  exp and the GELUs, written once for every vector width
//   simd/twins.h     kernels written once for every vector width, instantiated per level
//   avx512/, avx2/   one folder per instruction-set level: its vector vocabulary (vector.h),
//                    the twins' instantiation (elementwise.c) and the kernels only that level has
//
// There is no portable C: below AVX2 every entry point returns 0 and the Swift caller runs its
// plain loop, which is also the reference the tests hold every level against.

#include "include/ckernels.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define EVK_X86 1
#else
#define EVK_X86 0
#endif

/// The level the kernels use on the calling thread: EVK_LEVEL_PORTABLE, _AVX2 or _AVX512.
int evk_level(void);

#if EVK_X86
#include <immintrin.h>

#define EVK_AVX2 __attribute__((target("avx2,fma")))
#define EVK_AVX512 __attribute__((target("avx512f")))

// ---- One prototype per kernel and level, named <kernel>_<level> ----------------------------

// Kernels both vector levels have: the twins of simd/twins.h (elementwise.c) and the few-row
// linear layer and decoder epilogues each level blocks its own way (linear.c, decoder.c).
#define EVK_LEVEL_PROTOTYPES(L)                                                                    \
  void evk_gelu_tanh_bias_##L(float *dst, const float *src, long n, float bias);                   \
  void evk_gelu_erf_rational_##L(float *p, long n, const float *bias);                             \
  void evk_softmax_rows_##L(float *x, long rows, long cols, long stride, float scale);             \
  void evk_softmax_columns_##L(float *x, long rows, long cols, long c0, long c1, float scale,      \
                               const float *row_bias);                                             \
  void evk_residual_layernorm_##L(float *x, const float *delta, const float *delta_bias,           \
                                  long rows, long dim, const float *w, const float *b, float eps,  \
                                  const float *addend, float *sum, float *rstd);                   \
  void evk_row_affine_##L(float *y, const float *x, long rows, long dim, long ldx, const float *a, \
                          const float *u, const float *v);                                         \
  void evk_layernorm64_gelu_##L(float *x, long rows, const float *w, const float *b, float eps,    \
                                const float *pre_bias);                                            \
  void evk_linear_few_rows_##L(const float *x, long ldx, long rows, long in, const float *packed,  \
                               const float *bias, long out, float *y, long ldy, int relu);         \
  void evk_gelu_dot32_##L(const float *z, long rows, const float *bias, const float *h,            \
                          long count, float *out);                                                 \
  void evk_fold_layernorm64_gelu_##L(float *y, const float *base, long tokens, const float *a0,    \
                                     const float *a1, const float *u0, const float *u1,            \
                                     const float *u2, const float *w, const float *b, float eps);

EVK_LEVEL_PROTOTYPES(avx512)
EVK_LEVEL_PROTOTYPES(avx2)
#undef EVK_LEVEL_PROTOTYPES

// Mask decoder attention in the token-major layout (avx2/decoder.c): the 8 heads of a pair of
// tokens are one 8-float vector, so these are AVX2 at both vector levels.
void evk_softmax_heads_avx2(float *s, long rows, long t, long ld, float scale, const float *bias);
void evk_head_scores_avx2(const float *q, long ldq, long rows, const float *k, long t, long d,
                          float *out, long ldo);
void evk_scale_rows_avx2(float *y, long ldy, const float *x, long ldx, long rows, long width,
                         const float *inner, const float *outer, const float *shift,
                         const float *offset, long ldo);
void evk_row_dots_avx2(const float *a, long lda, const float *b, long ldb, long rows, long cols,
                       float *out);
void evk_softmax_columns_partial_avx2(float *s, long rows, long cols, long ld, float scale,
                                      float *col_max, float *col_sum);
void evk_heads_attend_avx2(const float *scores, long rows, long t, long d, const float *v, long ldv,
                           float *acc);

// The small GEMM's tiles (avx2/ and avx512/gemm_panels.c) and its blocking (smallgemm.c): all
// row tiles of one column panel of `cols` ≤ 16 columns (two adjacent panels for panel2, the
// second with `cols1` ≤ 16), against `kc` rows of B packed as rows of 16 floats. A's element
// (r, p) is a[r·rs + p·ks]; `acc` adds onto C instead of overwriting it.
void evk_gemm_panel_avx2(long m, long cols, long kc, const float *a, long rs, long ks,
                         const float *panel, float *c, long ldc, int acc);
void evk_gemm_panel_avx512(long m, long cols, long kc, const float *a, long rs, long ks,
                           const float *panel, float *c, long ldc, int acc);
void evk_gemm_panel2_avx512(long m, long cols1, long kc, const float *a, long rs, long ks,
                            const float *panel0, const float *panel1, float *c, long ldc, int acc);
void evk_small_gemm(int wide, int trans_a, long m, long n, long k, const float *a, long lda,
                    const float *b, long ldb, float *c, long ldc, int accumulate);
void evk_small_gemm_prepacked(int wide, int trans_a, long m, long n, long k, const float *a,
                              long lda, const float *packed, float *c, long ldc, int accumulate);

// AVX-512 only: the large GEMM (avx512/sgemm.c; 0 when its buffers cannot be allocated) and
// the Winograd transforms (avx512/winograd.c).
int evk_sgemm_avx512(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a,
                     long lda, const float *b, long ldb, float beta, float *c, long ldc,
                     const float *row_bias, int act);
void evk_winograd_input_avx512(const float *plane, long h, long w, long tiles_w, long first_tile,
                               long count, float *v, long matrix_stride);
void evk_winograd_output_avx512(const float *m, long matrix_stride, long count, long first_tile,
                                long tiles_w, float bias, int act, float *plane, long h, long w);
#endif

#endif
