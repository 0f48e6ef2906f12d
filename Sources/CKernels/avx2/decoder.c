// Mask decoder kernels at 8 lanes: attention in the token-major layout, and the end of the
// output upscaling.
//
// Attention kernels work in the token-major layout, where the 8 heads of one
// (image token, prompt token) pair are 8 consecutive floats: one AVX2 vector, so every
// softmax over prompt tokens is elementwise across a row's vectors (which is why these serve
// the AVX-512 level too).
//
// Layouts (h = head, c = channel within a head of `d` channels):
//   scores, probabilities: row p (image token), column j·8 + h (prompt token j, head h);
//   "head-interleaved" projections: row p, column c·8 + h (the same row of an nn.Linear output,
//   permuted so that channel c of every head is one vector).
//
// The Swift plain loops (HeadAttention.swift) are the reference: these use FastMath's exp
// polynomial, and FMA in the dot products, so they agree to rounding; the GELUs bit for bit.

#include "vector.h"

#if EVK_X86
#include <math.h>

// Scalar leftovers must round like the Swift loops, which never fuse a multiply and an add.
#pragma STDC FP_CONTRACT OFF

#define H 8

EVK_AVX2 void evk_softmax_heads_avx2(float *s, long rows, long t, long ld, float scale,
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

EVK_AVX2 void evk_head_scores_avx2(const float *q, long ldq, long rows, const float *k, long t,
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

EVK_AVX2 void evk_scale_rows_avx2(float *y, long ldy, const float *x, long ldx, long rows,
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

EVK_AVX2 void evk_row_dots_avx2(const float *a, long lda, const float *b, long ldb, long rows,
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

EVK_AVX2 void evk_softmax_columns_partial_avx2(float *s, long rows, long cols, long ld, float scale,
                                               float *col_max, float *col_sum) {
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
    const __m256i k = evk_mask8(cols - c);
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
EVK_AVX2 void evk_heads_attend_avx2(const float *scores, long rows, long t, long d, const float *v,
                                    long ldv, float *acc) {
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
EVK_AVX2 void evk_fold_layernorm64_gelu_avx2(float *y, const float *base, long tokens,
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
