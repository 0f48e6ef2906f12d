// Which instruction-set level runs, and every evk_* kernel entry point.
//
// The convention, for every kernel: the entry point runs the best version the calling thread
// may use (AVX-512, else AVX2 + FMA) and returns 1, or returns 0 without touching anything
// when no vector version applies (a CPU below AVX2, EVSAM_SIMD=portable, a thread capped by
// `SIMDLevel.capped`, or a shape the vector code does not take). On 0 the Swift caller runs
// its plain loop: the portable level, and the reference the tests hold each level against.

#include "internal.h"

#include <stdlib.h>
#include <string.h>

// ---- Levels and per-thread state -----------------------------------------------------------

#if EVK_X86
static int evk_cpu_level(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return EVK_LEVEL_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return EVK_LEVEL_AVX2;
  return EVK_LEVEL_PORTABLE;
}
#else
static int evk_cpu_level(void) { return EVK_LEVEL_PORTABLE; }
#endif

// -1 until the first call; racing first calls all compute the same answer.
static int evk_process_level = -1;
// A cap for the calling thread only (-1: none), so that tests can compare levels without
// changing what kernels on other threads run.
static _Thread_local int evk_thread_cap = -1;

static int evk_compute_process_level(void) {
  int level = evk_cpu_level();
  // EVSAM_SIMD=portable|avx2|avx512 caps the level (for A/B timing and for checking results);
  // EVSAM_NO_AVX512=1 is the older spelling of EVSAM_SIMD=avx2.
  const char *cap = getenv("EVSAM_SIMD");
  const char *off = getenv("EVSAM_NO_AVX512");
  if (off != NULL && off[0] != '\0' && off[0] != '0' && level > EVK_LEVEL_AVX2)
    level = EVK_LEVEL_AVX2;
  if (cap != NULL) {
    int wanted = strcmp(cap, "portable") == 0 ? EVK_LEVEL_PORTABLE
                 : strcmp(cap, "avx2") == 0   ? EVK_LEVEL_AVX2
                                              : EVK_LEVEL_AVX512;
    if (wanted < level) level = wanted;
  }
  return level;
}

int evk_available_simd_level(void) {
  int level = __atomic_load_n(&evk_process_level, __ATOMIC_RELAXED);
  if (level < 0) {
    level = evk_compute_process_level();
    __atomic_store_n(&evk_process_level, level, __ATOMIC_RELAXED);
  }
  return level;
}

int evk_level(void) {
  const int level = evk_available_simd_level();
  const int cap = evk_thread_cap;
  return cap >= 0 && cap < level ? cap : level;
}

int evk_simd_level(void) { return evk_level(); }

int evk_available(void) { return evk_level() > EVK_LEVEL_PORTABLE; }

int evk_thread_simd_cap(void) { return evk_thread_cap; }

int evk_set_thread_simd_cap(int level) {
  const int previous = evk_thread_cap;
  evk_thread_cap = level;
  return previous;
}

// The compute-thread limit of the calling thread (0: none); see ckernels.h.
static _Thread_local int evk_thread_limit = 0;

int evk_thread_compute_limit(void) { return evk_thread_limit; }

int evk_set_thread_compute_limit(int limit) {
  const int previous = evk_thread_limit;
  evk_thread_limit = limit;
  return previous;
}

// ---- Entry points --------------------------------------------------------------------------
// `EVK_RUN(level_ok, call)`: when the calling thread's level allows it, runs `call` and
// returns 1 from the entry point.
#if EVK_X86
#define EVK_RUN(condition, call) \
  if (condition) {               \
    call;                        \
    return 1;                    \
  }
#else
#define EVK_RUN(condition, call)
#endif

#define AVX512_OK (evk_level() >= EVK_LEVEL_AVX512)
#define AVX2_OK (evk_level() >= EVK_LEVEL_AVX2)

// Encoder and decoder elementwise and row kernels.

int evk_gelu_tanh_bias(float *dst, const float *src, long n, float bias) {
  EVK_RUN(AVX512_OK, evk_gelu_tanh_bias_avx512(dst, src, n, bias))
  EVK_RUN(AVX2_OK, evk_gelu_tanh_bias_avx2(dst, src, n, bias))
  return 0;
}

int evk_gelu_erf_rational(float *p, long n, const float *bias) {
  EVK_RUN(AVX512_OK, evk_gelu_erf_rational_avx512(p, n, bias))
  EVK_RUN(AVX2_OK, evk_gelu_erf_rational_avx2(p, n, bias))
  return 0;
}

int evk_softmax_rows(float *x, long rows, long cols, long stride, float scale) {
  EVK_RUN(AVX512_OK, evk_softmax_rows_avx512(x, rows, cols, stride, scale))
  EVK_RUN(AVX2_OK, evk_softmax_rows_avx2(x, rows, cols, stride, scale))
  return 0;
}

int evk_softmax_columns(float *x, long rows, long cols, long c0, long c1, float scale,
                        const float *row_bias) {
  EVK_RUN(AVX512_OK, evk_softmax_columns_avx512(x, rows, cols, c0, c1, scale, row_bias))
  EVK_RUN(AVX2_OK, evk_softmax_columns_avx2(x, rows, cols, c0, c1, scale, row_bias))
  return 0;
}

int evk_residual_layernorm(float *x, const float *delta, const float *delta_bias, long rows,
                           long dim, const float *weight, const float *bias, float eps,
                           const float *addend, float *sum, float *rstd) {
  EVK_RUN(AVX512_OK && dim % 16 == 0,
          evk_residual_layernorm_avx512(x, delta, delta_bias, rows, dim, weight, bias, eps, addend,
                                        sum, rstd))
  EVK_RUN(AVX2_OK && dim % 8 == 0,
          evk_residual_layernorm_avx2(x, delta, delta_bias, rows, dim, weight, bias, eps, addend,
                                      sum, rstd))
  return 0;
}

int evk_row_affine(float *y, const float *x, long rows, long dim, long ldx, const float *a,
                   const float *u, const float *v) {
  EVK_RUN(AVX512_OK, evk_row_affine_avx512(y, x, rows, dim, ldx, a, u, v))
  EVK_RUN(AVX2_OK, evk_row_affine_avx2(y, x, rows, dim, ldx, a, u, v))
  return 0;
}

int evk_layernorm64_gelu(float *x, long rows, const float *weight, const float *bias, float eps,
                         const float *pre_bias) {
  EVK_RUN(AVX512_OK, evk_layernorm64_gelu_avx512(x, rows, weight, bias, eps, pre_bias))
  EVK_RUN(AVX2_OK, evk_layernorm64_gelu_avx2(x, rows, weight, bias, eps, pre_bias))
  return 0;
}

int evk_linear_few_rows(const float *x, long ldx, long rows, long in, const float *packed,
                        const float *bias, long out, float *y, long ldy, int relu) {
  if (rows < 1 || rows > EVK_FEW_ROWS) return 0;
  EVK_RUN(AVX512_OK, evk_linear_few_rows_avx512(x, ldx, rows, in, packed, bias, out, y, ldy, relu))
  EVK_RUN(AVX2_OK, evk_linear_few_rows_avx2(x, ldx, rows, in, packed, bias, out, y, ldy, relu))
  return 0;
}

// Encoder convolutions: AVX-512 only (below it, BLAS and the Swift Winograd transforms).

int evk_sgemm_large(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a,
                    long lda, const float *b, long ldb, float beta, float *c, long ldc,
                    const float *row_bias, int activation) {
#if EVK_X86
  if (m > 0 && n > 0 && k > 0 && AVX512_OK)
    return evk_sgemm_avx512(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                            row_bias, activation);
#endif
  return 0;
}

int evk_winograd_input(const float *plane, long h, long w, long tiles_w, long first_tile,
                       long count, float *v, long matrix_stride) {
  EVK_RUN(AVX512_OK,
          evk_winograd_input_avx512(plane, h, w, tiles_w, first_tile, count, v, matrix_stride))
  return 0;
}

int evk_winograd_output(const float *m, long matrix_stride, long count, long first_tile,
                        long tiles_w, float bias, int activation, float *plane, long h, long w) {
  EVK_RUN(AVX512_OK, evk_winograd_output_avx512(m, matrix_stride, count, first_tile, tiles_w, bias,
                                                activation, plane, h, w))
  return 0;
}

// Mask decoder: the split-invariant small GEMM and token-major attention.

int evk_gemm(int trans_a, long m, long n, long k, const float *a, long lda, const float *b,
             long ldb, float *c, long ldc, int accumulate) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  EVK_RUN(AVX2_OK, evk_small_gemm(AVX512_OK, trans_a, m, n, k, a, lda, b, ldb, c, ldc, accumulate))
  return 0;
}

int evk_gemm_prepacked(int trans_a, long m, long n, long k, const float *a, long lda,
                       const float *packed, float *c, long ldc, int accumulate) {
  if (m <= 0 || n <= 0 || k <= 0) return 0;
  EVK_RUN(AVX2_OK,
          evk_small_gemm_prepacked(AVX512_OK, trans_a, m, n, k, a, lda, packed, c, ldc, accumulate))
  return 0;
}

int evk_softmax_heads(float *s, long rows, long t, long ld, float scale, const float *bias) {
  EVK_RUN(AVX2_OK, evk_softmax_heads_avx2(s, rows, t, ld, scale, bias))
  return 0;
}

int evk_head_scores(const float *q, long ldq, long rows, const float *k, long t, long d, float *out,
                    long ldo) {
  EVK_RUN(AVX2_OK, evk_head_scores_avx2(q, ldq, rows, k, t, d, out, ldo))
  return 0;
}

int evk_scale_rows(float *y, long ldy, const float *x, long ldx, long rows, long width,
                   const float *inner, const float *outer, const float *shift, const float *offset,
                   long ldo) {
  EVK_RUN(AVX2_OK,
          evk_scale_rows_avx2(y, ldy, x, ldx, rows, width, inner, outer, shift, offset, ldo))
  return 0;
}

int evk_row_dots(const float *a, long lda, const float *b, long ldb, long rows, long cols,
                 float *out) {
  EVK_RUN(AVX2_OK, evk_row_dots_avx2(a, lda, b, ldb, rows, cols, out))
  return 0;
}

int evk_softmax_columns_partial(float *s, long rows, long cols, long ld, float scale,
                                float *col_max, float *col_sum) {
  EVK_RUN(AVX2_OK, evk_softmax_columns_partial_avx2(s, rows, cols, ld, scale, col_max, col_sum))
  return 0;
}

int evk_heads_attend(const float *scores, long rows, long t, long d, const float *v, long ldv,
                     float *acc) {
  EVK_RUN(AVX2_OK, evk_heads_attend_avx2(scores, rows, t, d, v, ldv, acc))
  return 0;
}

int evk_gelu_dot(const float *z, long rows, long width, const float *bias, const float *h,
                 long count, float *out) {
  EVK_RUN(AVX512_OK && width == 32, evk_gelu_dot32_avx512(z, rows, bias, h, count, out))
  EVK_RUN(AVX2_OK && width == 32, evk_gelu_dot32_avx2(z, rows, bias, h, count, out))
  return 0;
}

int evk_fold_layernorm64_gelu(float *y, const float *base, long tokens, const float *a0,
                              const float *a1, const float *u0, const float *u1, const float *u2,
                              const float *w, const float *b, float eps) {
  EVK_RUN(AVX512_OK,
          evk_fold_layernorm64_gelu_avx512(y, base, tokens, a0, a1, u0, u1, u2, w, b, eps))
  EVK_RUN(AVX2_OK, evk_fold_layernorm64_gelu_avx2(y, base, tokens, a0, a1, u0, u1, u2, w, b, eps))
  return 0;
}
