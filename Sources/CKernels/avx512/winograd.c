#include "vector.h"

// Winograd F(4×4, 3×3) input and output transforms (see Winograd.swift) in AVX-512: 16 tiles
// of one tile row per vector. The Swift loops run 4 wide and gather each 6×6 patch element by
// element; here a patch row of 16 tiles is four loads and a stride-4 de-interleave, and an
// output row of 16 tiles is a re-interleave and four stores. Every formula performs the Swift
// operations in the same order without FMA, so the results are bit-for-bit the Swift path's.

#if EVK_X86

// The next group of tiles, starting at tile t with `left` tiles of the run to go: at most 16,
// all in t's tile row (ty, tx); returns how many.
static inline long next_group(long t, long left, long tiles_w, long *ty, long *tx) {
  *ty = t / tiles_w;
  *tx = t % tiles_w;
  long n = tiles_w - *tx;
  if (n > 16) n = 16;
  return n < left ? n : left;
}

// Lanes of `row[x0 + 16q + e]` that lie inside 0 ..< w.
static inline __mmask16 row_mask(long x0, long q, long w) {
  const long lo = -(x0 + 16 * q), hi = w - (x0 + 16 * q);
  return (__mmask16)(evk_mask16(hi) & ~evk_mask16(lo));
}

// d[j][l] = row[x0 + 4l + j] for j < 6, l < 16, zero outside the row.
EVK_AVX512 static void load_patch_row(const float *row, long x0, long w, __m512 d[6]) {
  __m512 z[4];
  for (int q = 0; q < 4; q++) z[q] = _mm512_maskz_loadu_ps(row_mask(x0, q, w), row + x0 + 16 * q);
  for (int j = 0; j < 4; j++) {
    // Element 4l + j of z0:z1 for l < 8, and of z2:z3 for l ≥ 8.
    const __m512i idx = _mm512_setr_epi32(j, 4 + j, 8 + j, 12 + j, 16 + j, 20 + j, 24 + j, 28 + j,
                                          0, 0, 0, 0, 0, 0, 0, 0);
    const __m512 lo = _mm512_permutex2var_ps(z[0], idx, z[1]);
    const __m512 hi = _mm512_permutex2var_ps(z[2], idx, z[3]);
    d[j] = _mm512_shuffle_f32x4(lo, hi, 0x44);
  }
  // Columns 4 and 5 are columns 0 and 1 of the next tile; lane 15 takes x0 + 64 and x0 + 65.
  const long x = x0 + 64;
  const __m512 next0 = _mm512_set1_ps(x >= 0 && x < w ? row[x] : 0);
  const __m512 next1 = _mm512_set1_ps(x + 1 >= 0 && x + 1 < w ? row[x + 1] : 0);
  d[4] = _mm512_castsi512_ps(
      _mm512_alignr_epi32(_mm512_castps_si512(next0), _mm512_castps_si512(d[0]), 1));
  d[5] = _mm512_castsi512_ps(
      _mm512_alignr_epi32(_mm512_castps_si512(next1), _mm512_castps_si512(d[1]), 1));
}

// Bᵀ·(d0 … d5), the Swift expressions operation for operation.
EVK_AVX512 static inline void input_formula(const __m512 d[6], long s, __m512 *r) {
  const __m512 four = _mm512_set1_ps(4), five = _mm512_set1_ps(5), two = _mm512_set1_ps(2);
  const __m512 m4 = _mm512_set1_ps(-4), m2 = _mm512_set1_ps(-2);
  const __m512 d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
  r[0] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d0), _mm512_mul_ps(five, d2)), d4);
  r[s] = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(m4, _mm512_add_ps(d1, d2)), d3), d4);
  r[2 * s] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, _mm512_sub_ps(d1, d2)), d3), d4);
  const __m512 d13 = _mm512_sub_ps(d1, d3);
  r[3 * s] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(m2, d13), d2), d4);
  r[4 * s] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(two, d13), d2), d4);
  r[5 * s] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d1), _mm512_mul_ps(five, d3)), d5);
}

EVK_AVX512 void evk_winograd_input_avx512(const float *plane, long h, long w, long tiles_w,
                                          long first_tile, long count, float *v, long stride) {
  __m512 d[36], r[36];
  long i = 0;
  while (i < count) {
    long ty, tx;
    const long n = next_group(first_tile + i, count - i, tiles_w, &ty, &tx);
    const long y0 = ty * 4 - 1, x0 = tx * 4 - 1;
    for (int a = 0; a < 6; a++) {
      const long y = y0 + a;
      if (y < 0 || y >= h) {
        for (int b = 0; b < 6; b++) d[a * 6 + b] = _mm512_setzero_ps();
      } else {
        load_patch_row(plane + y * w, x0, w, d + a * 6);
      }
    }
    // Lanes past the n tiles hold neighbouring pixels; they are computed but never stored.
    for (int b = 0; b < 6; b++) input_formula(d + b, 6, r + b);
    const __mmask16 keep = evk_mask16(n);
    for (int a = 0; a < 6; a++) {
      __m512 out[6];
      input_formula(r + a * 6, 1, out);
      for (int b = 0; b < 6; b++) _mm512_mask_storeu_ps(v + (a * 6 + b) * stride + i, keep, out[b]);
    }
    i += n;
  }
}

// Aᵀ·(m0 … m5), the Swift expressions operation for operation.
EVK_AVX512 static inline void output_formula(const __m512 *m, long s, __m512 *r, long rs) {
  const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), eight = _mm512_set1_ps(8);
  const __m512 s12 = _mm512_add_ps(m[s], m[2 * s]), d12 = _mm512_sub_ps(m[s], m[2 * s]);
  const __m512 s34 = _mm512_add_ps(m[3 * s], m[4 * s]), d34 = _mm512_sub_ps(m[3 * s], m[4 * s]);
  r[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  r[rs] = _mm512_add_ps(d12, _mm512_mul_ps(two, d34));
  r[2 * rs] = _mm512_add_ps(s12, _mm512_mul_ps(four, s34));
  r[3 * rs] = _mm512_add_ps(_mm512_add_ps(d12, _mm512_mul_ps(eight, d34)), m[5 * s]);
}

// out[q][e] = y[(16q + e) % 4][(16q + e) / 4]: four rows of 16 tiles' 4 values back into 64
// consecutive pixels.
EVK_AVX512 static void interleave4(const __m512 y[4], __m512 out[4]) {
  const __m512 a = _mm512_unpacklo_ps(y[0], y[1]), b = _mm512_unpackhi_ps(y[0], y[1]);
  const __m512 c = _mm512_unpacklo_ps(y[2], y[3]), d = _mm512_unpackhi_ps(y[2], y[3]);
  // w_r: 128-bit lane q holds tile 4q + r's four values.
  const __m512 w0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
  const __m512 w1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
  const __m512 w2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
  const __m512 w3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
  const __m512 x0 = _mm512_shuffle_f32x4(w0, w1, 0x44), x1 = _mm512_shuffle_f32x4(w2, w3, 0x44);
  const __m512 x2 = _mm512_shuffle_f32x4(w0, w1, 0xEE), x3 = _mm512_shuffle_f32x4(w2, w3, 0xEE);
  out[0] = _mm512_shuffle_f32x4(x0, x1, 0x88);
  out[1] = _mm512_shuffle_f32x4(x0, x1, 0xDD);
  out[2] = _mm512_shuffle_f32x4(x2, x3, 0x88);
  out[3] = _mm512_shuffle_f32x4(x2, x3, 0xDD);
}

EVK_AVX512 void evk_winograd_output_avx512(const float *m, long stride, long count, long first_tile,
                                           long tiles_w, float bias, int act, float *plane, long h,
                                           long w) {
  __m512 mv[36], r[24];
  long i = 0;
  while (i < count) {
    long ty, tx;
    const long n = next_group(first_tile + i, count - i, tiles_w, &ty, &tx);
    const __mmask16 keep = evk_mask16(n);
    for (int e = 0; e < 36; e++) mv[e] = _mm512_maskz_loadu_ps(keep, m + e * stride + i);
    for (int b = 0; b < 6; b++) output_formula(mv + b, 6, r + b, 6);
    const long oy = ty * 4, ox = tx * 4;
    for (int a = 0; a < 4 && oy + a < h; a++) {
      __m512 y[4], out[4];
      output_formula(r + a * 6, 1, y, 1);
      for (int b = 0; b < 4; b++) y[b] = evk_epilogue16(y[b], bias, act);
      interleave4(y, out);
      float *dst = plane + (oy + a) * w + ox;
      // Pixels of the n tiles that lie inside the plane.
      long valid = 4 * n;
      if (valid > w - ox) valid = w - ox;
      for (int q = 0; q < 4; q++)
        _mm512_mask_storeu_ps(dst + 16 * q, evk_mask16(valid - 16 * q), out[q]);
    }
    i += n;
  }
}

#endif
