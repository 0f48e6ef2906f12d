// Mask decoder kernels: attention in the token-major layout, and the end of the output
// upscaling.
//
// Attention kernels work in the token-major layout, where the 8 heads of one
// (image token, prompt token) pair are 8 consecutive floats: one AVX2 vector, so every
// softmax over prompt tokens is elementwise across a row's vectors.
//
// Layouts (h = head, c = channel within a head of `d` channels):
//   scores, probabilities: row p (image token), column j·8 + h (prompt token j, head h);
//   "head-interleaved" projections: row p, column c·8 + h (the same row of an nn.Linear output,
//   permuted so that channel c of every head is one vector).
//
// The portable versions are plain loops in the same association order (the AVX2 versions use
// FastMath's exp polynomial and FMA in the dot products, so they agree to rounding).

#include "internal.h"

#include <math.h>

// The GELU below must round exactly like `RowOps.gelu` in Swift, which never fuses a
// multiply and an add.
#pragma STDC FP_CONTRACT OFF

#define H 8

// `RowOps.gelu`: exact GELU with the rational erf (argument clamped to ±4), operation for
// operation.
static inline float gelu_erf_scalar(float x) {
  const float u = x * 0.70710678f;
  const float z = u < -4.0f ? -4.0f : (u > 4.0f ? 4.0f : u);
  const float z2 = z * z;
  float p = -2.7261423e-10f;
  p = p * z2 + 2.7706814e-08f;
  p = p * z2 - 2.101024e-06f;
  p = p * z2 - 5.6925064e-05f;
  p = p * z2 - 7.3499063e-04f;
  p = p * z2 - 2.9546000e-03f;
  p = p * z2 - 1.6096033e-02f;
  float q = -1.4566072e-05f;
  q = q * z2 - 2.1337406e-04f;
  q = q * z2 - 1.682827e-03f;
  q = q * z2 - 7.3733292e-03f;
  q = q * z2 - 1.4264739e-02f;
  return 0.5f * x * (1.0f + z * p / q);
}

static void gelu_dot_portable(const float *z, long rows, long width, const float *bias,
                              const float *h, long count, float *out) {
  float g[256];
  for (long r = 0; r < rows; r++) {
    for (long c = 0; c < width; c++) g[c] = gelu_erf_scalar(z[r * width + c] + bias[c]);
    for (long m = 0; m < count; m++) {
      float s = 0;
      for (long c = 0; c < width; c++) s += g[c] * h[m * width + c];
      out[r * count + m] = s;
    }
  }
}

// FastMath.swift's exp, scalar (the portable twin of evk_exp8 in internal.h).
static inline float exp_scalar(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float shifter = 12582912.0f + 127.0f;
  const float k = x * 1.44269504f + shifter;
  const float n = k - shifter;
  const float r = (x - n * 0.693359375f) + n * 2.1219444e-4f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  union {
    float f;
    unsigned u;
  } bits = {k};
  bits.u <<= 23;
  return p * bits.f;
}

static void fold_layernorm64_gelu_portable(float *y, const float *base, long tokens,
                                           const float *a0, const float *a1, const float *u0,
                                           const float *u1, const float *u2, const float *w,
                                           const float *b, float eps) {
  for (long p = 0; p < tokens; p++) {
    float *row = y + p * 256;
    const float *br = base + p * 256;
    for (long c = 0; c < 256; c++) {
      const float t = a0[p] * (br[c] + u0[c]) + u1[c];
      row[c] = a1[p] * (t + row[c]) + u2[c];
    }
    for (int s = 0; s < 4; s++) {
      float *v = row + 64 * s;
      float mean = 0;
      for (int c = 0; c < 64; c++) mean += v[c];
      mean /= 64.0f;
      float var = 0;
      for (int c = 0; c < 64; c++) var += (v[c] - mean) * (v[c] - mean);
      const float inv = 1.0f / sqrtf(var / 64.0f + eps);
      for (int c = 0; c < 64; c++) v[c] = gelu_erf_scalar((v[c] - mean) * inv * w[c] + b[c]);
    }
  }
}

static void softmax_heads_portable(float *s, long rows, long t, long ld, float scale,
                                   const float *bias) {
  for (long p = 0; p < rows; p++) {
    float *row = s + p * ld;
    for (int h = 0; h < H; h++) {
      float m = -INFINITY;
      for (long j = 0; j < t; j++) {
        const float v = row[j * H + h] + (bias ? bias[j * H + h] : 0.0f);
        m = v > m ? v : m;
      }
      float sum = 0;
      for (long j = 0; j < t; j++) {
        const float e =
            exp_scalar(((row[j * H + h] + (bias ? bias[j * H + h] : 0.0f)) - m) * scale);
        row[j * H + h] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
      for (long j = 0; j < t; j++) row[j * H + h] *= inv;
    }
  }
}

static void head_scores_portable(const float *q, long ldq, long rows, const float *k, long t,
                                 long d, float *out, long ldo) {
  for (long p = 0; p < rows; p++) {
    for (long j = 0; j < t; j++) {
      for (int h = 0; h < H; h++) {
        float s = 0;
        for (long c = 0; c < d; c++) s += q[p * ldq + c * H + h] * k[(j * d + c) * H + h];
        out[p * ldo + j * H + h] = s;
      }
    }
  }
}

static void scale_rows_portable(float *y, long ldy, const float *x, long ldx, long rows, long width,
                                const float *inner, const float *outer, const float *shift,
                                const float *offset, long ldo) {
  for (long r = 0; r < rows; r++) {
    const float a = inner ? inner[r] : 1.0f, b = outer ? outer[r] : 1.0f;
    for (long i = 0; i < width; i++) {
      float v = a * x[r * ldx + i];
      if (shift) v = v + shift[i];
      if (outer) v = b * v;
      if (offset) v = v + offset[r * ldo + i];
      y[r * ldy + i] = v;
    }
  }
}

static void row_dots_portable(const float *a, long lda, const float *b, long ldb, long rows,
                              long cols, float *out) {
  for (long r = 0; r < rows; r++) {
    float s = 0;
    for (long c = 0; c < cols; c++) s += a[r * lda + c] * b[r * ldb + c];
    out[r] = s;
  }
}

static void softmax_columns_partial_portable(float *s, long rows, long cols, long ld, float scale,
                                             float *col_max, float *col_sum) {
  for (long c = 0; c < cols; c++) {
    float m = -INFINITY;
    for (long p = 0; p < rows; p++) m = s[p * ld + c] > m ? s[p * ld + c] : m;
    float sum = 0;
    for (long p = 0; p < rows; p++) {
      const float e = exp_scalar((s[p * ld + c] - m) * scale);
      s[p * ld + c] = e;
      sum += e;
    }
    col_max[c] = m;
    col_sum[c] = sum;
  }
}

static void heads_attend_portable(const float *scores, long rows, long t, long d, const float *v,
                                  long ldv, float *acc) {
  for (long j = 0; j < t; j++) {
    for (long c = 0; c < d; c++) {
      for (int h = 0; h < H; h++) {
        float a = 0;
        for (long p = 0; p < rows; p++) a += scores[(p * t + j) * H + h] * v[p * ldv + c * H + h];
        acc[(j * d + c) * H + h] = a;
      }
    }
  }
}

#if EVK_X86
#include <immintrin.h>

EVK_AVX2 static void softmax_heads_avx2(float *s, long rows, long t, long ld, float scale,
                                        const float *bias) {
  const __m256 sc = _mm256_set1_ps(scale);
  for (long p = 0; p < rows; p++) {
    float *row = s + p * ld;
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (long j = 0; j < t; j++) {
      __m256 v = _mm256_loadu_ps(row + j * H);
      if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j * H));
      m = _mm256_max_ps(m, v);
    }
    __m256 sum = _mm256_setzero_ps();
    for (long j = 0; j < t; j++) {
      __m256 v = _mm256_loadu_ps(row + j * H);
      if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j * H));
      const __m256 e = evk_exp8(_mm256_mul_ps(_mm256_sub_ps(v, m), sc));
      _mm256_storeu_ps(row + j * H, e);
      sum = _mm256_add_ps(sum, e);
    }
    const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
    for (long j = 0; j < t; j++)
      _mm256_storeu_ps(row + j * H, _mm256_mul_ps(_mm256_loadu_ps(row + j * H), inv));
  }
}

EVK_AVX2 static void head_scores_avx2(const float *q, long ldq, long rows, const float *k, long t,
                                      long d, float *out, long ldo) {
  for (long p = 0; p < rows; p++) {
    const float *qp = q + p * ldq;
    long j = 0;
    // Four prompt tokens at a time: eight independent chains hide the FMA latency (one token's
    // two chains alone wait on it). Each element still sums even and odd channels in two
    // chains, in order, then adds them, as the one-token loop below does.
    for (; j + 4 <= t; j += 4) {
      const float *k0 = k + j * d * H, *k1 = k0 + d * H, *k2 = k1 + d * H, *k3 = k2 + d * H;
      __m256 e0 = _mm256_setzero_ps(), e1 = _mm256_setzero_ps(), e2 = _mm256_setzero_ps(),
             e3 = _mm256_setzero_ps();
      __m256 o0 = _mm256_setzero_ps(), o1 = _mm256_setzero_ps(), o2 = _mm256_setzero_ps(),
             o3 = _mm256_setzero_ps();
      long c = 0;
      for (; c + 2 <= d; c += 2) {
        const __m256 qe = _mm256_loadu_ps(qp + c * H), qo = _mm256_loadu_ps(qp + c * H + H);
        e0 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + c * H), e0);
        e1 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k1 + c * H), e1);
        e2 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k2 + c * H), e2);
        e3 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k3 + c * H), e3);
        o0 = _mm256_fmadd_ps(qo, _mm256_loadu_ps(k0 + c * H + H), o0);
        o1 = _mm256_fmadd_ps(qo, _mm256_loadu_ps(k1 + c * H + H), o1);
        o2 = _mm256_fmadd_ps(qo, _mm256_loadu_ps(k2 + c * H + H), o2);
        o3 = _mm256_fmadd_ps(qo, _mm256_loadu_ps(k3 + c * H + H), o3);
      }
      if (c < d) {
        const __m256 qe = _mm256_loadu_ps(qp + c * H);
        e0 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k0 + c * H), e0);
        e1 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k1 + c * H), e1);
        e2 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k2 + c * H), e2);
        e3 = _mm256_fmadd_ps(qe, _mm256_loadu_ps(k3 + c * H), e3);
      }
      float *op = out + p * ldo + j * H;
      _mm256_storeu_ps(op, _mm256_add_ps(e0, o0));
      _mm256_storeu_ps(op + H, _mm256_add_ps(e1, o1));
      _mm256_storeu_ps(op + 2 * H, _mm256_add_ps(e2, o2));
      _mm256_storeu_ps(op + 3 * H, _mm256_add_ps(e3, o3));
    }
    for (; j < t; j++) {
      const float *kj = k + j * d * H;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      long c = 0;
      for (; c + 2 <= d; c += 2) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp + c * H), _mm256_loadu_ps(kj + c * H), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qp + c * H + H), _mm256_loadu_ps(kj + c * H + H), a1);
      }
      if (c < d) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp + c * H), _mm256_loadu_ps(kj + c * H), a0);
      _mm256_storeu_ps(out + p * ldo + j * H, _mm256_add_ps(a0, a1));
    }
  }
}

EVK_AVX2 static void scale_rows_avx2(float *y, long ldy, const float *x, long ldx, long rows,
                                     long width, const float *inner, const float *outer,
                                     const float *shift, const float *offset, long ldo) {
  for (long r = 0; r < rows; r++) {
    const float a = inner ? inner[r] : 1.0f, b = outer ? outer[r] : 1.0f;
    const __m256 av = _mm256_set1_ps(a), bv = _mm256_set1_ps(b);
    const float *xr = x + r * ldx, *orow = offset ? offset + r * ldo : 0;
    float *yr = y + r * ldy;
    long i = 0;
    for (; i + 8 <= width; i += 8) {
      __m256 v = _mm256_mul_ps(av, _mm256_loadu_ps(xr + i));
      if (shift) v = _mm256_add_ps(v, _mm256_loadu_ps(shift + i));
      if (outer) v = _mm256_mul_ps(bv, v);
      if (orow) v = _mm256_add_ps(v, _mm256_loadu_ps(orow + i));
      _mm256_storeu_ps(yr + i, v);
    }
    for (; i < width; i++) {
      float v = a * xr[i];
      if (shift) v = v + shift[i];
      if (outer) v = b * v;
      if (orow) v = v + orow[i];
      yr[i] = v;
    }
  }
}

EVK_AVX2 static void row_dots_avx2(const float *a, long lda, const float *b, long ldb, long rows,
                                   long cols, float *out) {
  for (long r = 0; r < rows; r++) {
    const float *ar = a + r * lda, *br = b + r * ldb;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    long c = 0;
    for (; c + 16 <= cols; c += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + c), _mm256_loadu_ps(br + c), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + c + 8), _mm256_loadu_ps(br + c + 8), a1);
    }
    if (c + 8 <= cols) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(ar + c), _mm256_loadu_ps(br + c), a0);
      c += 8;
    }
    a0 = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; c < cols; c++) s += ar[c] * br[c];
    out[r] = s;
  }
}

EVK_AVX2 static void softmax_columns_partial_avx2(float *s, long rows, long cols, long ld,
                                                  float scale, float *col_max, float *col_sum) {
  static const int bits[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m256 sc = _mm256_set1_ps(scale);
  long c = 0;
  // Whole vectors with plain loads and stores (AMD's masked stores are microcoded and slow).
  for (; c + 8 <= cols; c += 8) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (long p = 0; p < rows; p++) m = _mm256_max_ps(m, _mm256_loadu_ps(s + p * ld + c));
    __m256 sum = _mm256_setzero_ps();
    for (long p = 0; p < rows; p++) {
      const __m256 e =
          evk_exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(s + p * ld + c), m), sc));
      _mm256_storeu_ps(s + p * ld + c, e);
      sum = _mm256_add_ps(sum, e);
    }
    _mm256_storeu_ps(col_max + c, m);
    _mm256_storeu_ps(col_sum + c, sum);
  }
  if (c < cols) {
    const __m256i k = _mm256_loadu_si256((const __m256i *)(bits + 8 - (cols - c)));
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (long p = 0; p < rows; p++) m = _mm256_max_ps(m, _mm256_maskload_ps(s + p * ld + c, k));
    __m256 sum = _mm256_setzero_ps();
    for (long p = 0; p < rows; p++) {
      const __m256 e =
          evk_exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(s + p * ld + c, k), m), sc));
      _mm256_maskstore_ps(s + p * ld + c, k, e);
      sum = _mm256_add_ps(sum, e);
    }
    _mm256_maskstore_ps(col_max + c, k, m);
    _mm256_maskstore_ps(col_sum + c, k, sum);
  }
}

// acc[j][c] (one vector of 8 heads) = Σ_p scores[p][j] ⊙ v[p][c]: eight accumulators per pass
// over the rows, so they stay in registers.
EVK_AVX2 static void heads_attend_avx2(const float *scores, long rows, long t, long d,
                                       const float *v, long ldv, float *acc) {
  for (long j = 0; j < t; j++) {
    for (long c0 = 0; c0 < d; c0 += 8) {
      const long cn = d - c0 < 8 ? d - c0 : 8;
      __m256 a[8];
      for (int q = 0; q < 8; q++) a[q] = _mm256_setzero_ps();
      if (cn == 8) {
        for (long p = 0; p < rows; p++) {
          const __m256 e = _mm256_loadu_ps(scores + (p * t + j) * H);
          const float *vp = v + p * ldv + c0 * H;
          for (int q = 0; q < 8; q++) a[q] = _mm256_fmadd_ps(e, _mm256_loadu_ps(vp + q * H), a[q]);
        }
      } else {
        for (long p = 0; p < rows; p++) {
          const __m256 e = _mm256_loadu_ps(scores + (p * t + j) * H);
          const float *vp = v + p * ldv + c0 * H;
          for (long q = 0; q < cn; q++)
            a[q] = _mm256_fmadd_ps(e, _mm256_loadu_ps(vp + q * H), a[q]);
        }
      }
      for (long q = 0; q < cn; q++) _mm256_storeu_ps(acc + (j * d + c0 + q) * H, a[q]);
    }
  }
}

// out[i·stride] = the sum of s[i]'s lanes, for the eight vectors at once (an hadd tree).
EVK_AVX2 static inline void row_sums8(const __m256 s[8], float *out, long stride) {
  const __m256 t01 = _mm256_hadd_ps(s[0], s[1]), t23 = _mm256_hadd_ps(s[2], s[3]);
  const __m256 t45 = _mm256_hadd_ps(s[4], s[5]), t67 = _mm256_hadd_ps(s[6], s[7]);
  const __m256 u0 = _mm256_hadd_ps(t01, t23), u1 = _mm256_hadd_ps(t45, t67);
  // u0 = [r0 r1 r2 r3 | r0 r1 r2 r3] halves (low, high 128-bit lanes), likewise u1 for r4..7.
  const __m256 lo = _mm256_permute2f128_ps(u0, u1, 0x20), hi = _mm256_permute2f128_ps(u0, u1, 0x31);
  float lane[8];
  _mm256_storeu_ps(lane, _mm256_add_ps(lo, hi));
  for (int i = 0; i < 8; i++) out[i * stride] = lane[i];
}

// Eight rows at a time: the eight per-row dot products of one mask are reduced together
// (hadd tree), instead of one horizontal sum per row.
EVK_AVX2 static void gelu_dot32_avx2(const float *z, long rows, const float *bias, const float *h,
                                     long count, float *out) {
  const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8),
               b2 = _mm256_loadu_ps(bias + 16), b3 = _mm256_loadu_ps(bias + 24);
  long r = 0;
  for (; r + 8 <= rows; r += 8) {
    __m256 g[8][4];
    for (int i = 0; i < 8; i++) {
      const float *zr = z + (r + i) * 32;
      g[i][0] = evk_gelu_erf8(_mm256_add_ps(_mm256_loadu_ps(zr), b0));
      g[i][1] = evk_gelu_erf8(_mm256_add_ps(_mm256_loadu_ps(zr + 8), b1));
      g[i][2] = evk_gelu_erf8(_mm256_add_ps(_mm256_loadu_ps(zr + 16), b2));
      g[i][3] = evk_gelu_erf8(_mm256_add_ps(_mm256_loadu_ps(zr + 24), b3));
    }
    for (long m = 0; m < count; m++) {
      const float *hm = h + m * 32;
      const __m256 h0 = _mm256_loadu_ps(hm), h1 = _mm256_loadu_ps(hm + 8),
                   h2 = _mm256_loadu_ps(hm + 16), h3 = _mm256_loadu_ps(hm + 24);
      __m256 s[8];
      for (int i = 0; i < 8; i++) {
        __m256 a = _mm256_mul_ps(g[i][0], h0);
        a = _mm256_fmadd_ps(g[i][1], h1, a);
        a = _mm256_fmadd_ps(g[i][2], h2, a);
        s[i] = _mm256_fmadd_ps(g[i][3], h3, a);
      }
      row_sums8(s, out + r * count + m, count);
    }
  }
  if (r < rows) gelu_dot_portable(z + r * 32, rows - r, 32, bias, h, count, out + r * count);
}
// gelu_dot32_avx2 on 16 lanes: a row's two GELU vectors are its whole 32 channels, and each
// row's product is folded to 8 lanes (its two 256-bit halves added) before the same hadd tree.
// The GELUs are the same operations lane by lane, so the same bits; only the dot products'
// sums are ordered differently.
EVK_AVX512 static void gelu_dot32_avx512(const float *z, long rows, const float *bias,
                                         const float *h, long count, float *out) {
  const __m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
  long r = 0;
  for (; r + 8 <= rows; r += 8) {
    __m512 g[8][2];
    for (int i = 0; i < 8; i++) {
      const float *zr = z + (r + i) * 32;
      g[i][0] = evk_gelu_erf(_mm512_add_ps(_mm512_loadu_ps(zr), b0));
      g[i][1] = evk_gelu_erf(_mm512_add_ps(_mm512_loadu_ps(zr + 16), b1));
    }
    for (long m = 0; m < count; m++) {
      const float *hm = h + m * 32;
      const __m512 h0 = _mm512_loadu_ps(hm), h1 = _mm512_loadu_ps(hm + 16);
      __m256 s[8];
      for (int i = 0; i < 8; i++) {
        const __m512 a = _mm512_fmadd_ps(g[i][1], h1, _mm512_mul_ps(g[i][0], h0));
        s[i] = _mm256_add_ps(_mm512_castps512_ps256(a),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
      }
      row_sums8(s, out + r * count + m, count);
    }
  }
  if (r < rows) gelu_dot_portable(z + r * 32, rows - r, 32, bias, h, count, out + r * count);
}

// fold_layernorm64_gelu_avx2 on 16 lanes: the affine maps and the GELU are the same operations
// lane by lane; the LayerNorm's two sums over 64 channels are ordered differently.
EVK_AVX512 static void fold_layernorm64_gelu_avx512(float *y, const float *base, long tokens,
                                                    const float *a0, const float *a1,
                                                    const float *u0, const float *u1,
                                                    const float *u2, const float *w, const float *b,
                                                    float eps) {
  for (long p = 0; p < tokens; p++) {
    float *row = y + p * 256;
    const float *br = base + p * 256;
    const __m512 s0 = _mm512_set1_ps(a0[p]), s1 = _mm512_set1_ps(a1[p]);
    // All four sub-pixels' statistics side by side: their reductions are independent chains.
    __m512 v[16];
    float mean[4], inv[4];
    for (int c = 0; c < 16; c++) {
      const __m512 t = _mm512_add_ps(_mm512_mul_ps(s0, _mm512_add_ps(_mm512_loadu_ps(br + 16 * c),
                                                                     _mm512_loadu_ps(u0 + 16 * c))),
                                     _mm512_loadu_ps(u1 + 16 * c));
      v[c] = _mm512_add_ps(_mm512_mul_ps(s1, _mm512_add_ps(t, _mm512_loadu_ps(row + 16 * c))),
                           _mm512_loadu_ps(u2 + 16 * c));
    }
    for (int s = 0; s < 4; s++) {
      const __m512 *x = v + 4 * s;
      mean[s] = _mm512_reduce_add_ps(
                    _mm512_add_ps(_mm512_add_ps(x[0], x[1]), _mm512_add_ps(x[2], x[3]))) /
                64.0f;
    }
    for (int s = 0; s < 4; s++) {
      const __m512 m = _mm512_set1_ps(mean[s]);
      __m512 sq = _mm512_setzero_ps();
      for (int q = 0; q < 4; q++) {
        v[4 * s + q] = _mm512_sub_ps(v[4 * s + q], m);
        sq = _mm512_fmadd_ps(v[4 * s + q], v[4 * s + q], sq);
      }
      inv[s] = 1.0f / sqrtf(_mm512_reduce_add_ps(sq) / 64.0f + eps);
    }
    for (int s = 0; s < 4; s++) {
      const __m512 k = _mm512_set1_ps(inv[s]);
      for (int q = 0; q < 4; q++) {
        const __m512 n = _mm512_fmadd_ps(_mm512_mul_ps(v[4 * s + q], k),
                                         _mm512_loadu_ps(w + 16 * q), _mm512_loadu_ps(b + 16 * q));
        _mm512_storeu_ps(row + 64 * s + 16 * q, evk_gelu_erf(n));
      }
    }
  }
}

EVK_AVX2 static void fold_layernorm64_gelu_avx2(float *y, const float *base, long tokens,
                                                const float *a0, const float *a1, const float *u0,
                                                const float *u1, const float *u2, const float *w,
                                                const float *b, float eps) {
  for (long p = 0; p < tokens; p++) {
    float *row = y + p * 256;
    const float *br = base + p * 256;
    const __m256 s0 = _mm256_set1_ps(a0[p]), s1 = _mm256_set1_ps(a1[p]);
    for (int s = 0; s < 4; s++) {
      __m256 v[8];
      __m256 acc = _mm256_setzero_ps();
      for (int q = 0; q < 8; q++) {
        const long c = 64 * s + 8 * q;
        const __m256 t = _mm256_add_ps(
            _mm256_mul_ps(s0, _mm256_add_ps(_mm256_loadu_ps(br + c), _mm256_loadu_ps(u0 + c))),
            _mm256_loadu_ps(u1 + c));
        v[q] = _mm256_add_ps(_mm256_mul_ps(s1, _mm256_add_ps(t, _mm256_loadu_ps(row + c))),
                             _mm256_loadu_ps(u2 + c));
        acc = _mm256_add_ps(acc, v[q]);
      }
      __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      h = _mm_add_ss(h, _mm_movehdup_ps(h));
      const __m256 m = _mm256_set1_ps(_mm_cvtss_f32(h) / 64.0f);
      __m256 sq = _mm256_setzero_ps();
      for (int q = 0; q < 8; q++) {
        v[q] = _mm256_sub_ps(v[q], m);
        sq = _mm256_fmadd_ps(v[q], v[q], sq);
      }
      h = _mm_add_ps(_mm256_castps256_ps128(sq), _mm256_extractf128_ps(sq, 1));
      h = _mm_add_ps(h, _mm_movehl_ps(h, h));
      h = _mm_add_ss(h, _mm_movehdup_ps(h));
      const __m256 inv = _mm256_set1_ps(1.0f / sqrtf(_mm_cvtss_f32(h) / 64.0f + eps));
      for (int q = 0; q < 8; q++) {
        const __m256 n = _mm256_fmadd_ps(_mm256_mul_ps(v[q], inv), _mm256_loadu_ps(w + 8 * q),
                                         _mm256_loadu_ps(b + 8 * q));
        _mm256_storeu_ps(row + 64 * s + 8 * q, evk_gelu_erf8(n));
      }
    }
  }
}
#endif

void evk_gelu_dot(const float *z, long rows, long width, const float *bias, const float *h,
                  long count, float *out) {
#if EVK_X86
  if (width == 32 && evk_level() >= EVK_LEVEL_AVX512) {
    gelu_dot32_avx512(z, rows, bias, h, count, out);
    return;
  }
  if (width == 32 && evk_level() >= EVK_LEVEL_AVX2) {
    gelu_dot32_avx2(z, rows, bias, h, count, out);
    return;
  }
#endif
  gelu_dot_portable(z, rows, width, bias, h, count, out);
}

void evk_fold_layernorm64_gelu(float *y, const float *base, long tokens, const float *a0,
                               const float *a1, const float *u0, const float *u1, const float *u2,
                               const float *w, const float *b, float eps) {
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX512) {
    fold_layernorm64_gelu_avx512(y, base, tokens, a0, a1, u0, u1, u2, w, b, eps);
    return;
  }
  if (evk_level() >= EVK_LEVEL_AVX2) {
    fold_layernorm64_gelu_avx2(y, base, tokens, a0, a1, u0, u1, u2, w, b, eps);
    return;
  }
#endif
  fold_layernorm64_gelu_portable(y, base, tokens, a0, a1, u0, u1, u2, w, b, eps);
}

void evk_softmax_heads(float *s, long rows, long t, long ld, float scale, const float *bias) {
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2) {
    softmax_heads_avx2(s, rows, t, ld, scale, bias);
    return;
  }
#endif
  softmax_heads_portable(s, rows, t, ld, scale, bias);
}

void evk_head_scores(const float *q, long ldq, long rows, const float *k, long t, long d,
                     float *out, long ldo) {
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2) {
    head_scores_avx2(q, ldq, rows, k, t, d, out, ldo);
    return;
  }
#endif
  head_scores_portable(q, ldq, rows, k, t, d, out, ldo);
}

void evk_scale_rows(float *y, long ldy, const float *x, long ldx, long rows, long width,
                    const float *inner, const float *outer, const float *shift, const float *offset,
                    long ldo) {
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2) {
    scale_rows_avx2(y, ldy, x, ldx, rows, width, inner, outer, shift, offset, ldo);
    return;
  }
#endif
  scale_rows_portable(y, ldy, x, ldx, rows, width, inner, outer, shift, offset, ldo);
}

void evk_row_dots(const float *a, long lda, const float *b, long ldb, long rows, long cols,
                  float *out) {
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2) {
    row_dots_avx2(a, lda, b, ldb, rows, cols, out);
    return;
  }
#endif
  row_dots_portable(a, lda, b, ldb, rows, cols, out);
}

void evk_softmax_columns_partial(float *s, long rows, long cols, long ld, float scale,
                                 float *col_max, float *col_sum) {
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2) {
    softmax_columns_partial_avx2(s, rows, cols, ld, scale, col_max, col_sum);
    return;
  }
#endif
  softmax_columns_partial_portable(s, rows, cols, ld, scale, col_max, col_sum);
}

void evk_heads_attend(const float *scores, long rows, long t, long d, const float *v, long ldv,
                      float *acc) {
#if EVK_X86
  if (evk_level() >= EVK_LEVEL_AVX2) {
    heads_attend_avx2(scores, rows, t, d, v, ldv, acc);
    return;
  }
#endif
  heads_attend_portable(scores, rows, t, d, v, ldv, acc);
}
