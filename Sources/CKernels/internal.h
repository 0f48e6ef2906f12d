#ifndef EVSAM_CKERNELS_INTERNAL_H
#define EVSAM_CKERNELS_INTERNAL_H

// Shared by the kernel files: which instruction-set level runs (see evk_simd_level), and the
// AVX2 implementations that ckernels.c dispatches to.

#include "include/ckernels.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define EVK_X86 1
#else
#define EVK_X86 0
#endif

/// The level the dispatchers use: EVK_LEVEL_PORTABLE, EVK_LEVEL_AVX2 or EVK_LEVEL_AVX512.
int evk_level(void);

#if EVK_X86
#include <immintrin.h>

#define EVK_AVX2 __attribute__((target("avx2,fma")))
#define EVK_AVX512 __attribute__((target("avx512f")))

/// Lanes 0 ..< n of a 16-float vector set (n clamped to 0 ... 16), for masked loads and stores.
static inline __mmask16 evk_mask16(long n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

void evk_gelu_tanh_bias_avx2(float *dst, const float *src, long n, float bias);
void evk_gelu_erf_rational_avx2(float *p, long n, const float *bias);
void evk_softmax_rows_avx2(float *x, long rows, long cols, long stride, float scale);
void evk_softmax_columns_avx2(float *x, long rows, long cols, long c0, long c1, float scale,
                              const float *row_bias);
void evk_residual_layernorm_avx2(float *x, const float *delta, const float *delta_bias, long rows,
                                 long dim, const float *w, const float *b, float eps,
                                 const float *addend, float *sum, float *rstd);
void evk_linear_few_rows_avx2(const float *x, long ldx, long rows, long in, const float *packed,
                              const float *bias, long out, float *y, long ldy, int relu);
void evk_row_affine_avx2(float *y, const float *x, long rows, long dim, long ldx, const float *a,
                         const float *u, const float *v);
void evk_layernorm64_gelu_avx2(float *x, long rows, const float *w, const float *b, float eps,
                               const float *pre_bias);
#endif

#endif
