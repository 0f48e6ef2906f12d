// AVX2 + FMA twins of the AVX-512 kernels in ckernels.c, for the many x86-64 CPUs without
// AVX-512 (every x86-64 CPU since 2013–2017 has AVX2 and FMA). On AMD Zen 2–4 a 256-bit FMA
// has the same throughput per element as a 512-bit one, so these lose little even there.
//
// The GELUs are bit-for-bit the portable Swift formulas (multiply, then add: never fused),
// like their AVX-512 twins; the softmaxes and LayerNorms only reorder sums.

#include "internal.h"

#if EVK_X86
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/// Lanes 0 ..< n (0 ≤ n ≤ 8) set, for maskload / maskstore.
EVK_AVX2 static inline __m256i tail_mask8(long n) {
  static const int32_t bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256((const __m256i *)(bits + 8 - n));
}

// AMD's masked stores are slow (microcoded), so whole vectors go through plain ones.
EVK_AVX2 static inline __m256 load8(const float *p, long n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask8(n));
}

EVK_AVX2 static inline void store8(float *p, __m256 v, long n) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, tail_mask8(n), v);
  }
}

EVK_AVX2 static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

EVK_AVX2 static inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

EVK_AVX2 static inline __m256 gelu_tanh8(__m256 x) {
  __m256 x2 = _mm256_mul_ps(x, x);
  __m256 u =
      _mm256_mul_ps(x, EVK_MULADD8(_mm256_set1_ps(0.035677408f), x2, _mm256_set1_ps(0.79788456f)));
  __m256 e = evk_exp8(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

EVK_AVX2 void evk_gelu_tanh_bias_avx2(float *dst, const float *src, long n, float bias) {
  const __m256 b = _mm256_set1_ps(bias);
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, gelu_tanh8(_mm256_add_ps(_mm256_loadu_ps(src + i), b)));
  }
  if (i < n) {
    const __m256i m = tail_mask8(n - i);
    __m256 x = _mm256_add_ps(_mm256_maskload_ps(src + i, m), b);
    _mm256_maskstore_ps(dst + i, m, gelu_tanh8(x));
  }
}

EVK_AVX2 void evk_gelu_erf_rational_avx2(float *p, long n, const float *bias) {
  long i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(p + i);
    if (bias) x = _mm256_add_ps(x, _mm256_loadu_ps(bias + i));
    _mm256_storeu_ps(p + i, evk_gelu_erf8(x));
  }
  if (i < n) {
    const __m256i m = tail_mask8(n - i);
    __m256 x = _mm256_maskload_ps(p + i, m);
    if (bias) x = _mm256_add_ps(x, _mm256_maskload_ps(bias + i, m));
    _mm256_maskstore_ps(p + i, m, evk_gelu_erf8(x));
  }
}

// One row in place: p ← exp(scale·(p − max)); returns the sum and writes the max.
EVK_AVX2 static inline float exp_row8(float *p, long cols, float scale, float *row_max) {
  const __m256 s = _mm256_set1_ps(scale);
  __m256 mv = _mm256_set1_ps(-INFINITY);
  long j = 0;
  for (; j + 8 <= cols; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(p + j));
  float m = hmax8(mv);
  for (; j < cols; j++) m = p[j] > m ? p[j] : m;
  const __m256 mb = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  for (j = 0; j + 8 <= cols; j += 8) {
    __m256 e = evk_exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p + j), mb), s));
    _mm256_storeu_ps(p + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (j < cols) {
    const __m256i k = tail_mask8(cols - j);
    __m256 e = evk_exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(p + j, k), mb), s));
    _mm256_maskstore_ps(p + j, k, e);
    acc = _mm256_add_ps(acc, _mm256_and_ps(e, _mm256_castsi256_ps(k)));
  }
  *row_max = m;
  return hsum8(acc);
}

EVK_AVX2 void evk_softmax_rows_avx2(float *x, long rows, long cols, long stride, float scale) {
  for (long r = 0; r < rows; r++) {
    float *p = x + r * stride;
    float m;
    const __m256 inv = _mm256_set1_ps(1.0f / exp_row8(p, cols, scale, &m));
    long j = 0;
    for (; j + 8 <= cols; j += 8)
      _mm256_storeu_ps(p + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), inv));
    if (j < cols) {
      const __m256i k = tail_mask8(cols - j);
      _mm256_maskstore_ps(p + j, k, _mm256_mul_ps(_mm256_maskload_ps(p + j, k), inv));
    }
  }
}

EVK_AVX2 void evk_softmax_columns_avx2(float *x, long rows, long cols, long c0, long c1,
                                       float scale, const float *row_bias) {
  const __m256 s = _mm256_set1_ps(scale);
  for (long c = c0; c < c1; c += 8) {
    const long w = c1 - c < 8 ? c1 - c : 8;
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (long r = 0; r < rows; r++) {
      __m256 v = load8(x + r * cols + c, w);
      if (row_bias) v = _mm256_add_ps(v, _mm256_set1_ps(row_bias[r]));
      m = _mm256_max_ps(m, v);
    }
    __m256 sum = _mm256_setzero_ps();
    for (long r = 0; r < rows; r++) {
      __m256 v = load8(x + r * cols + c, w);
      if (row_bias) v = _mm256_add_ps(v, _mm256_set1_ps(row_bias[r]));
      __m256 e = evk_exp8(_mm256_mul_ps(_mm256_sub_ps(v, m), s));
      store8(x + r * cols + c, e, w);
      sum = _mm256_add_ps(sum, e);
    }
    __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
    for (long r = 0; r < rows; r++) {
      float *p = x + r * cols + c;
      store8(p, _mm256_mul_ps(load8(p, w), inv), w);
    }
  }
}

EVK_AVX2 void evk_residual_layernorm_avx2(float *x, const float *delta, const float *delta_bias,
                                          long rows, long dim, const float *w, const float *b,
                                          float eps, const float *addend, float *sum, float *rstd) {
  for (long r = 0; r < rows; r++) {
    float *p = x + r * dim;
    const float *d = delta + r * dim;
    __m256 acc = _mm256_setzero_ps();
    for (long j = 0; j < dim; j += 8) {
      __m256 v = _mm256_add_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(d + j));
      if (delta_bias) v = _mm256_add_ps(v, _mm256_loadu_ps(delta_bias + j));
      _mm256_storeu_ps(p + j, v);
      acc = _mm256_add_ps(acc, v);
    }
    const float mean = hsum8(acc) / (float)dim;
    const __m256 mv = _mm256_set1_ps(mean);
    __m256 sq = _mm256_setzero_ps();
    for (long j = 0; j < dim; j += 8) {
      __m256 c = _mm256_sub_ps(_mm256_loadu_ps(p + j), mv);
      sq = _mm256_fmadd_ps(c, c, sq);
    }
    const float inv = 1.0f / sqrtf(hsum8(sq) / (float)dim + eps);
    if (rstd) rstd[r] = inv;
    const __m256 iv = _mm256_set1_ps(inv);
    for (long j = 0; j < dim; j += 8) {
      __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(p + j), mv), iv);
      __m256 o = _mm256_fmadd_ps(c, _mm256_loadu_ps(w + j), _mm256_loadu_ps(b + j));
      _mm256_storeu_ps(p + j, o);
      if (sum)
        _mm256_storeu_ps(sum + r * dim + j,
                         _mm256_add_ps(o, _mm256_loadu_ps(addend + r * dim + j)));
    }
  }
}

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
    const __m256 bq = bias ? load8(bias + o + 8 * q, n[q]) : _mm256_setzero_ps();
    for (int r = 0; r < R; r++) {
      __m256 v = _mm256_add_ps(a[r][q], bq);
      if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      store8(y + r * ldy + o + 8 * q, v, n[q]);
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
    const __m256 bq = bias ? load8(bias + oq, nq) : _mm256_setzero_ps();
    for (int r = 0; r < R; r++) {
      __m256 v = _mm256_add_ps(a[r][q], bq);
      if (relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      store8(y + r * ldy + oq, v, nq);
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

EVK_AVX2 void evk_row_affine_avx2(float *y, const float *x, long rows, long dim, long ldx,
                                  const float *a, const float *u, const float *v) {
  for (long r = 0; r < rows; r++) {
    const __m256 av = _mm256_set1_ps(a ? a[r] : 1.0f);
    for (long j = 0; j < dim; j += 8) {
      const long w = dim - j >= 8 ? 8 : dim - j;
      __m256 t = load8(x + r * ldx + j, w);
      if (u) t = _mm256_add_ps(t, load8(u + j, w));
      t = _mm256_mul_ps(t, av);
      if (v) t = _mm256_add_ps(t, load8(v + j, w));
      store8(y + r * dim + j, t, w);
    }
  }
}

EVK_AVX2 void evk_layernorm64_gelu_avx2(float *x, long rows, const float *w, const float *b,
                                        float eps, const float *pre_bias) {
  for (long r = 0; r < rows; r++) {
    float *p = x + r * 64;
    __m256 v[8];
    __m256 acc = _mm256_setzero_ps();
    for (int q = 0; q < 8; q++) {
      v[q] = _mm256_loadu_ps(p + 8 * q);
      if (pre_bias) v[q] = _mm256_add_ps(v[q], _mm256_loadu_ps(pre_bias + 8 * q));
      acc = _mm256_add_ps(acc, v[q]);
    }
    const __m256 m = _mm256_set1_ps(hsum8(acc) / 64.0f);
    __m256 sq = _mm256_setzero_ps();
    for (int q = 0; q < 8; q++) {
      v[q] = _mm256_sub_ps(v[q], m);
      sq = _mm256_fmadd_ps(v[q], v[q], sq);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / sqrtf(hsum8(sq) / 64.0f + eps));
    for (int q = 0; q < 8; q++) {
      const __m256 n = _mm256_fmadd_ps(_mm256_mul_ps(v[q], inv), _mm256_loadu_ps(w + 8 * q),
                                       _mm256_loadu_ps(b + 8 * q));
      _mm256_storeu_ps(p + 8 * q, evk_gelu_erf8(n));
    }
  }
}

#endif
