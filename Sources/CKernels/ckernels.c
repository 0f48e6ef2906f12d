#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if EVK_X86
#include <immintrin.h>

EVK_AVX512 static void evk_gelu_tanh_bias_avx512(float *dst, const float *src, long n, float bias) {
  const __m512 b = _mm512_set1_ps(bias);
  long i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(dst + i, evk_gelu_tanh(_mm512_add_ps(_mm512_loadu_ps(src + i), b)));
  }
  if (i < n) {
    __mmask16 m = evk_mask16(n - i);
    __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src + i), b);
    _mm512_mask_storeu_ps(dst + i, m, evk_gelu_tanh(x));
  }
}

EVK_AVX512 static void evk_gelu_erf_rational_avx512(float *p, long n, const float *bias) {
  long i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(p + i);
    if (bias) x = _mm512_add_ps(x, _mm512_loadu_ps(bias + i));
    _mm512_storeu_ps(p + i, evk_gelu_erf(x));
  }
  if (i < n) {
    __mmask16 m = evk_mask16(n - i);
    __m512 x = _mm512_maskz_loadu_ps(m, p + i);
    if (bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bias + i));
    _mm512_mask_storeu_ps(p + i, m, evk_gelu_erf(x));
  }
}

// ---- Mask decoder: softmax, LayerNorm and few-row linear layers ---------------------------
// Unlike the GELUs these need not match the portable loops bit for bit: they only reorder sums
// (the golden tests bound the effect), and nothing downstream is as sensitive as the GELU's
// saturated tail.

EVK_AVX512 static inline float evk_hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// One row in place: p ← exp(scale·(p − max)); returns the sum of the exponentials and writes
// the max to *row_max.
EVK_AVX512 static inline float evk_exp_row(float *p, long cols, float scale, float *row_max) {
  const __m512 s = _mm512_set1_ps(scale);
  __m512 mv = _mm512_set1_ps(-INFINITY);
  long j = 0;
  for (; j + 16 <= cols; j += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(p + j));
  float m = _mm512_reduce_max_ps(mv);
  for (; j < cols; j++) m = p[j] > m ? p[j] : m;
  const __m512 mb = _mm512_set1_ps(m);
  __m512 acc = _mm512_setzero_ps();
  for (j = 0; j + 16 <= cols; j += 16) {
    __m512 e = evk_exp(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(p + j), mb), s));
    _mm512_storeu_ps(p + j, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (j < cols) {
    __mmask16 k = evk_mask16(cols - j);
    __m512 e = evk_exp(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + j), mb), s));
    _mm512_mask_storeu_ps(p + j, k, e);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(k, e));
  }
  *row_max = m;
  return evk_hsum(acc);
}

EVK_AVX512 static void evk_softmax_rows_avx512(float *x, long rows, long cols, long stride,
                                               float scale) {
  for (long r = 0; r < rows; r++) {
    float *p = x + r * stride;
    float m;
    const __m512 inv = _mm512_set1_ps(1.0f / evk_exp_row(p, cols, scale, &m));
    long j = 0;
    for (; j + 16 <= cols; j += 16)
      _mm512_storeu_ps(p + j, _mm512_mul_ps(_mm512_loadu_ps(p + j), inv));
    if (j < cols) {
      __mmask16 k = evk_mask16(cols - j);
      _mm512_mask_storeu_ps(p + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + j), inv));
    }
  }
}

EVK_AVX512 static void evk_softmax_columns_avx512(float *x, long rows, long cols, long c0, long c1,
                                                  float scale, const float *row_bias) {
  const __m512 s = _mm512_set1_ps(scale);
  for (long c = c0; c < c1; c += 16) {
    long w = c1 - c < 16 ? c1 - c : 16;
    __mmask16 k = evk_mask16(w);
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (long r = 0; r < rows; r++) {
      __m512 v = _mm512_maskz_loadu_ps(k, x + r * cols + c);
      if (row_bias) v = _mm512_add_ps(v, _mm512_set1_ps(row_bias[r]));
      m = _mm512_max_ps(m, v);
    }
    __m512 sum = _mm512_setzero_ps();
    for (long r = 0; r < rows; r++) {
      __m512 v = _mm512_maskz_loadu_ps(k, x + r * cols + c);
      if (row_bias) v = _mm512_add_ps(v, _mm512_set1_ps(row_bias[r]));
      __m512 e = evk_exp(_mm512_mul_ps(_mm512_sub_ps(v, m), s));
      _mm512_mask_storeu_ps(x + r * cols + c, k, e);
      sum = _mm512_add_ps(sum, e);
    }
    __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
    for (long r = 0; r < rows; r++) {
      float *p = x + r * cols + c;
      _mm512_mask_storeu_ps(p, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p), inv));
    }
  }
}

EVK_AVX512 static void evk_residual_layernorm_avx512(float *x, const float *delta,
                                                     const float *delta_bias, long rows, long dim,
                                                     const float *w, const float *b, float eps,
                                                     const float *addend, float *sum, float *rstd) {
  for (long r = 0; r < rows; r++) {
    float *p = x + r * dim;
    const float *d = delta + r * dim;
    __m512 acc = _mm512_setzero_ps();
    for (long j = 0; j < dim; j += 16) {
      __m512 v = _mm512_add_ps(_mm512_loadu_ps(p + j), _mm512_loadu_ps(d + j));
      if (delta_bias) v = _mm512_add_ps(v, _mm512_loadu_ps(delta_bias + j));
      _mm512_storeu_ps(p + j, v);
      acc = _mm512_add_ps(acc, v);
    }
    const float mean = evk_hsum(acc) / (float)dim;
    const __m512 mv = _mm512_set1_ps(mean);
    __m512 sq = _mm512_setzero_ps();
    for (long j = 0; j < dim; j += 16) {
      __m512 c = _mm512_sub_ps(_mm512_loadu_ps(p + j), mv);
      sq = _mm512_fmadd_ps(c, c, sq);
    }
    const float inv = 1.0f / sqrtf(evk_hsum(sq) / (float)dim + eps);
    if (rstd) rstd[r] = inv;
    const __m512 iv = _mm512_set1_ps(inv);
    for (long j = 0; j < dim; j += 16) {
      __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(p + j), mv), iv);
      __m512 o = _mm512_fmadd_ps(c, _mm512_loadu_ps(w + j), _mm512_loadu_ps(b + j));
      _mm512_storeu_ps(p + j, o);
      if (sum)
        _mm512_storeu_ps(sum + r * dim + j,
                         _mm512_add_ps(o, _mm512_loadu_ps(addend + r * dim + j)));
    }
  }
}

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

EVK_AVX512 static void evk_linear_few_rows_avx512(const float *x, long ldx, long rows, long in,
                                                  const float *wt, const float *bias, long out,
                                                  float *y, long ldy, int relu) {
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

// y[r] = a[r]·(x[r] + u) + v over rows of `dim` values (u, v: dim vectors, either may be NULL),
// x and y may be the same; a may be NULL (then 1).
EVK_AVX512 static void evk_row_affine_avx512(float *y, const float *x, long rows, long dim,
                                             long ldx, const float *a, const float *u,
                                             const float *v) {
  for (long r = 0; r < rows; r++) {
    const __m512 av = _mm512_set1_ps(a ? a[r] : 1.0f);
    for (long j = 0; j < dim; j += 16) {
      const __mmask16 k = evk_mask16(dim - j);
      __m512 t = _mm512_maskz_loadu_ps(k, x + r * ldx + j);
      if (u) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(k, u + j));
      t = _mm512_mul_ps(t, av);
      if (v) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(k, v + j));
      _mm512_mask_storeu_ps(y + r * dim + j, k, t);
    }
  }
}

// LayerNorm over rows of 64 values, then the exact erf GELU (evk_gelu_erf, bit-for-bit the
// portable formula).
EVK_AVX512 static void evk_layernorm64_gelu_avx512(float *x, long rows, const float *w,
                                                   const float *b, float eps,
                                                   const float *pre_bias) {
  const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
               w3 = _mm512_loadu_ps(w + 48);
  const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32),
               b3 = _mm512_loadu_ps(b + 48);
  for (long r = 0; r < rows; r++) {
    float *p = x + r * 64;
    __m512 v0 = _mm512_loadu_ps(p), v1 = _mm512_loadu_ps(p + 16), v2 = _mm512_loadu_ps(p + 32),
           v3 = _mm512_loadu_ps(p + 48);
    if (pre_bias) {
      v0 = _mm512_add_ps(v0, _mm512_loadu_ps(pre_bias));
      v1 = _mm512_add_ps(v1, _mm512_loadu_ps(pre_bias + 16));
      v2 = _mm512_add_ps(v2, _mm512_loadu_ps(pre_bias + 32));
      v3 = _mm512_add_ps(v3, _mm512_loadu_ps(pre_bias + 48));
    }
    const float mean =
        evk_hsum(_mm512_add_ps(_mm512_add_ps(v0, v1), _mm512_add_ps(v2, v3))) / 64.0f;
    const __m512 m = _mm512_set1_ps(mean);
    v0 = _mm512_sub_ps(v0, m);
    v1 = _mm512_sub_ps(v1, m);
    v2 = _mm512_sub_ps(v2, m);
    v3 = _mm512_sub_ps(v3, m);
    __m512 sq = _mm512_mul_ps(v0, v0);
    sq = _mm512_fmadd_ps(v1, v1, sq);
    sq = _mm512_fmadd_ps(v2, v2, sq);
    sq = _mm512_fmadd_ps(v3, v3, sq);
    const __m512 inv = _mm512_set1_ps(1.0f / sqrtf(evk_hsum(sq) / 64.0f + eps));
    _mm512_storeu_ps(p, evk_gelu_erf(_mm512_fmadd_ps(_mm512_mul_ps(v0, inv), w0, b0)));
    _mm512_storeu_ps(p + 16, evk_gelu_erf(_mm512_fmadd_ps(_mm512_mul_ps(v1, inv), w1, b1)));
    _mm512_storeu_ps(p + 32, evk_gelu_erf(_mm512_fmadd_ps(_mm512_mul_ps(v2, inv), w2, b2)));
    _mm512_storeu_ps(p + 48, evk_gelu_erf(_mm512_fmadd_ps(_mm512_mul_ps(v3, inv), w3, b3)));
  }
}

static int evk_cpu_level(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return EVK_LEVEL_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return EVK_LEVEL_AVX2;
  return EVK_LEVEL_PORTABLE;
}

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

static int evk_process_simd_level(void) {
  int level = __atomic_load_n(&evk_process_level, __ATOMIC_RELAXED);
  if (level < 0) {
    level = evk_compute_process_level();
    __atomic_store_n(&evk_process_level, level, __ATOMIC_RELAXED);
  }
  return level;
}

int evk_level(void) {
  const int level = evk_process_simd_level();
  const int cap = evk_thread_cap;
  return cap >= 0 && cap < level ? cap : level;
}

int evk_simd_level(void) { return evk_level(); }

int evk_available_simd_level(void) { return evk_process_simd_level(); }

int evk_thread_simd_cap(void) { return evk_thread_cap; }

int evk_set_thread_simd_cap(int level) {
  const int previous = evk_thread_cap;
  evk_thread_cap = level;
  return previous;
}

// Portable: the compute-thread limit of the calling thread (0: none); see ckernels.h.
static _Thread_local int evk_thread_limit = 0;

int evk_thread_compute_limit(void) { return evk_thread_limit; }

int evk_set_thread_compute_limit(int limit) {
  const int previous = evk_thread_limit;
  evk_thread_limit = limit;
  return previous;
}

int evk_gelu_tanh_bias(float *dst, const float *src, long n, float bias) {
  switch (evk_level()) {
    case EVK_LEVEL_AVX512:
      evk_gelu_tanh_bias_avx512(dst, src, n, bias);
      return 1;
    case EVK_LEVEL_AVX2:
      evk_gelu_tanh_bias_avx2(dst, src, n, bias);
      return 1;
    default:
      return 0;
  }
}

int evk_gelu_erf_rational(float *p, long n, const float *bias) {
  switch (evk_level()) {
    case EVK_LEVEL_AVX512:
      evk_gelu_erf_rational_avx512(p, n, bias);
      return 1;
    case EVK_LEVEL_AVX2:
      evk_gelu_erf_rational_avx2(p, n, bias);
      return 1;
    default:
      return 0;
  }
}

int evk_softmax_rows(float *x, long rows, long cols, long stride, float scale) {
  switch (evk_level()) {
    case EVK_LEVEL_AVX512:
      evk_softmax_rows_avx512(x, rows, cols, stride, scale);
      return 1;
    case EVK_LEVEL_AVX2:
      evk_softmax_rows_avx2(x, rows, cols, stride, scale);
      return 1;
    default:
      return 0;
  }
}

int evk_softmax_columns(float *x, long rows, long cols, long c0, long c1, float scale,
                        const float *row_bias) {
  switch (evk_level()) {
    case EVK_LEVEL_AVX512:
      evk_softmax_columns_avx512(x, rows, cols, c0, c1, scale, row_bias);
      return 1;
    case EVK_LEVEL_AVX2:
      evk_softmax_columns_avx2(x, rows, cols, c0, c1, scale, row_bias);
      return 1;
    default:
      return 0;
  }
}

int evk_residual_layernorm(float *x, const float *delta, const float *delta_bias, long rows,
                           long dim, const float *weight, const float *bias, float eps,
                           const float *addend, float *sum, float *rstd) {
  const int level = evk_level();
  if (level == EVK_LEVEL_AVX512 && dim % 16 == 0) {
    evk_residual_layernorm_avx512(x, delta, delta_bias, rows, dim, weight, bias, eps, addend, sum,
                                  rstd);
    return 1;
  }
  if (level >= EVK_LEVEL_AVX2 && dim % 8 == 0) {
    evk_residual_layernorm_avx2(x, delta, delta_bias, rows, dim, weight, bias, eps, addend, sum,
                                rstd);
    return 1;
  }
  return 0;
}

int evk_available(void) { return evk_level() > EVK_LEVEL_PORTABLE; }

int evk_linear_few_rows(const float *x, long ldx, long rows, long in, const float *packed,
                        const float *bias, long out, float *y, long ldy, int relu) {
  if (rows < 1 || rows > EVK_FEW_ROWS) return 0;
  switch (evk_level()) {
    case EVK_LEVEL_AVX512:
      evk_linear_few_rows_avx512(x, ldx, rows, in, packed, bias, out, y, ldy, relu);
      return 1;
    case EVK_LEVEL_AVX2:
      evk_linear_few_rows_avx2(x, ldx, rows, in, packed, bias, out, y, ldy, relu);
      return 1;
    default:
      return 0;
  }
}

int evk_row_affine(float *y, const float *x, long rows, long dim, long ldx, const float *a,
                   const float *u, const float *v) {
  switch (evk_level()) {
    case EVK_LEVEL_AVX512:
      evk_row_affine_avx512(y, x, rows, dim, ldx, a, u, v);
      return 1;
    case EVK_LEVEL_AVX2:
      evk_row_affine_avx2(y, x, rows, dim, ldx, a, u, v);
      return 1;
    default:
      return 0;
  }
}

int evk_layernorm64_gelu(float *x, long rows, const float *weight, const float *bias, float eps,
                         const float *pre_bias) {
  switch (evk_level()) {
    case EVK_LEVEL_AVX512:
      evk_layernorm64_gelu_avx512(x, rows, weight, bias, eps, pre_bias);
      return 1;
    case EVK_LEVEL_AVX2:
      evk_layernorm64_gelu_avx2(x, rows, weight, bias, eps, pre_bias);
      return 1;
    default:
      return 0;
  }
}

#else

int evk_level(void) { return EVK_LEVEL_PORTABLE; }
int evk_simd_level(void) { return EVK_LEVEL_PORTABLE; }
int evk_available_simd_level(void) { return EVK_LEVEL_PORTABLE; }
int evk_thread_simd_cap(void) { return -1; }
int evk_set_thread_simd_cap(int level) {
  (void)level;
  return -1;
}

static _Thread_local int evk_thread_limit = 0;

int evk_thread_compute_limit(void) { return evk_thread_limit; }

int evk_set_thread_compute_limit(int limit) {
  const int previous = evk_thread_limit;
  evk_thread_limit = limit;
  return previous;
}
int evk_available(void) { return 0; }

int evk_gelu_erf_rational(float *p, long n, const float *bias) {
  (void)p;
  (void)n;
  (void)bias;
  return 0;
}

int evk_gelu_tanh_bias(float *dst, const float *src, long n, float bias) {
  (void)dst;
  (void)src;
  (void)n;
  (void)bias;
  return 0;
}

int evk_softmax_rows(float *x, long rows, long cols, long stride, float scale) {
  (void)x;
  (void)rows;
  (void)cols;
  (void)stride;
  (void)scale;
  return 0;
}

int evk_softmax_columns(float *x, long rows, long cols, long c0, long c1, float scale,
                        const float *row_bias) {
  (void)x;
  (void)rows;
  (void)cols;
  (void)c0;
  (void)c1;
  (void)scale;
  (void)row_bias;
  return 0;
}

int evk_residual_layernorm(float *x, const float *delta, const float *delta_bias, long rows,
                           long dim, const float *weight, const float *bias, float eps,
                           const float *addend, float *sum, float *rstd) {
  (void)x;
  (void)delta;
  (void)delta_bias;
  (void)rows;
  (void)dim;
  (void)weight;
  (void)bias;
  (void)eps;
  (void)addend;
  (void)sum;
  (void)rstd;
  return 0;
}

int evk_linear_few_rows(const float *x, long ldx, long rows, long in, const float *packed,
                        const float *bias, long out, float *y, long ldy, int relu) {
  (void)x;
  (void)ldx;
  (void)rows;
  (void)in;
  (void)packed;
  (void)bias;
  (void)out;
  (void)y;
  (void)ldy;
  (void)relu;
  return 0;
}

int evk_row_affine(float *y, const float *x, long rows, long dim, long ldx, const float *a,
                   const float *u, const float *v) {
  (void)y;
  (void)x;
  (void)rows;
  (void)dim;
  (void)ldx;
  (void)a;
  (void)u;
  (void)v;
  return 0;
}

int evk_layernorm64_gelu(float *x, long rows, const float *weight, const float *bias, float eps,
                         const float *pre_bias) {
  (void)x;
  (void)rows;
  (void)weight;
  (void)bias;
  (void)eps;
  (void)pre_bias;
  return 0;
}

#endif

// Portable: runs once per layer at load.
void evk_linear_pack(const float *weight, long out, long in, float *packed) {
  for (long o0 = 0; o0 < out; o0 += 32) {
    for (long i = 0; i < in; i++) {
      for (long q = 0; q < 32; q++) {
        packed[o0 * in + i * 32 + q] = o0 + q < out ? weight[(o0 + q) * in + i] : 0.0f;
      }
    }
  }
}
