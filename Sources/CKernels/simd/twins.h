// Kernels written once for every vector width, included by each level's elementwise.c after it
// defines its vocabulary:
//   EVK_W          lanes per vector          EVK_NAME(f)   f's name at this level (f_avx512)
//   EVK_TARGET     the target attribute      evk_vec       the vector type
//   V_LOAD/STORE   whole vectors             V_LOADN/STOREN(p, n)  lanes 0 ..< n, zero past n
//   V_KEEPN(v, n)  v with lanes past n zero  V_SET1, V_ZERO, V_ADD, V_SUB, V_MUL, V_DIV, V_MAX,
//   V_FMADD(a, b, c) = a·b + c fused         V_HSUM, V_HMAX (horizontal), V_EXP, V_GELU_ERF,
//   V_GELU_TANH    (simd/formulas.h)         V_TO8(v)      v's lanes folded to one __m256
// No include guard: each level includes it once, with its own vocabulary.
//
// The GELUs are bit-for-bit the Swift formulas at every width (lane by lane the same
// operations); the softmaxes and LayerNorms only order their sums by the width.

// dst[i] = gelu_tanh(src[i] + bias); dst may be src.
EVK_TARGET void EVK_NAME(evk_gelu_tanh_bias)(float *dst, const float *src, long n, float bias) {
  const evk_vec b = V_SET1(bias);
  long i = 0;
  for (; i + EVK_W <= n; i += EVK_W) V_STORE(dst + i, V_GELU_TANH(V_ADD(V_LOAD(src + i), b)));
  if (i < n) V_STOREN(dst + i, V_GELU_TANH(V_ADD(V_LOADN(src + i, n - i), b)), n - i);
}

// p[i] = gelu_erf(p[i] + bias[i]) (bias may be NULL).
EVK_TARGET void EVK_NAME(evk_gelu_erf_rational)(float *p, long n, const float *bias) {
  long i = 0;
  for (; i + EVK_W <= n; i += EVK_W) {
    evk_vec x = V_LOAD(p + i);
    if (bias) x = V_ADD(x, V_LOAD(bias + i));
    V_STORE(p + i, V_GELU_ERF(x));
  }
  if (i < n) {
    evk_vec x = V_LOADN(p + i, n - i);
    if (bias) x = V_ADD(x, V_LOADN(bias + i, n - i));
    V_STOREN(p + i, V_GELU_ERF(x), n - i);
  }
}

// One row in place: p ← exp(scale·(p − max)); returns the sum of the exponentials.
EVK_TARGET static inline float EVK_NAME(exp_row)(float *p, long cols, float scale) {
  const evk_vec s = V_SET1(scale);
  evk_vec mv = V_SET1(-INFINITY);
  long j = 0;
  for (; j + EVK_W <= cols; j += EVK_W) mv = V_MAX(mv, V_LOAD(p + j));
  float m = V_HMAX(mv);
  for (; j < cols; j++) m = p[j] > m ? p[j] : m;
  const evk_vec mb = V_SET1(m);
  evk_vec acc = V_ZERO;
  for (j = 0; j + EVK_W <= cols; j += EVK_W) {
    const evk_vec e = V_EXP(V_MUL(V_SUB(V_LOAD(p + j), mb), s));
    V_STORE(p + j, e);
    acc = V_ADD(acc, e);
  }
  if (j < cols) {
    const evk_vec e = V_EXP(V_MUL(V_SUB(V_LOADN(p + j, cols - j), mb), s));
    V_STOREN(p + j, e, cols - j);
    acc = V_ADD(acc, V_KEEPN(e, cols - j));
  }
  return V_HSUM(acc);
}

// Each of `rows` runs of `cols` values (`stride` apart) becomes softmax(scale·(x − max)).
EVK_TARGET void EVK_NAME(evk_softmax_rows)(float *x, long rows, long cols, long stride,
                                           float scale) {
  for (long r = 0; r < rows; r++) {
    float *p = x + r * stride;
    const evk_vec inv = V_SET1(1.0f / EVK_NAME(exp_row)(p, cols, scale));
    long j = 0;
    for (; j + EVK_W <= cols; j += EVK_W) V_STORE(p + j, V_MUL(V_LOAD(p + j), inv));
    if (j < cols) V_STOREN(p + j, V_MUL(V_LOADN(p + j, cols - j), inv), cols - j);
  }
}

// Columns c0 ..< c1 of a dense rows × cols block: softmax over r of scale·(x[r][c] + row_bias[r]).
EVK_TARGET void EVK_NAME(evk_softmax_columns)(float *x, long rows, long cols, long c0, long c1,
                                              float scale, const float *row_bias) {
  const evk_vec s = V_SET1(scale);
  for (long c = c0; c < c1; c += EVK_W) {
    const long w = c1 - c < EVK_W ? c1 - c : EVK_W;
    evk_vec m = V_SET1(-INFINITY);
    for (long r = 0; r < rows; r++) {
      evk_vec v = V_LOADN(x + r * cols + c, w);
      if (row_bias) v = V_ADD(v, V_SET1(row_bias[r]));
      m = V_MAX(m, v);
    }
    evk_vec sum = V_ZERO;
    for (long r = 0; r < rows; r++) {
      evk_vec v = V_LOADN(x + r * cols + c, w);
      if (row_bias) v = V_ADD(v, V_SET1(row_bias[r]));
      const evk_vec e = V_EXP(V_MUL(V_SUB(v, m), s));
      V_STOREN(x + r * cols + c, e, w);
      sum = V_ADD(sum, e);
    }
    const evk_vec inv = V_DIV(V_SET1(1.0f), sum);
    for (long r = 0; r < rows; r++) {
      float *p = x + r * cols + c;
      V_STOREN(p, V_MUL(V_LOADN(p, w), inv), w);
    }
  }
}

// x[r] ← LayerNorm(x[r] + delta[r] + delta_bias)·w + b for rows of `dim` (a multiple of EVK_W)
// values; optionally sum[r] = x[r] + addend[r] and rstd[r] = 1/σ.
EVK_TARGET void EVK_NAME(evk_residual_layernorm)(float *x, const float *delta,
                                                 const float *delta_bias, long rows, long dim,
                                                 const float *w, const float *b, float eps,
                                                 const float *addend, float *sum, float *rstd) {
  for (long r = 0; r < rows; r++) {
    float *p = x + r * dim;
    const float *d = delta + r * dim;
    evk_vec acc = V_ZERO;
    for (long j = 0; j < dim; j += EVK_W) {
      evk_vec v = V_ADD(V_LOAD(p + j), V_LOAD(d + j));
      if (delta_bias) v = V_ADD(v, V_LOAD(delta_bias + j));
      V_STORE(p + j, v);
      acc = V_ADD(acc, v);
    }
    const evk_vec mv = V_SET1(V_HSUM(acc) / (float)dim);
    evk_vec sq = V_ZERO;
    for (long j = 0; j < dim; j += EVK_W) {
      const evk_vec c = V_SUB(V_LOAD(p + j), mv);
      sq = V_FMADD(c, c, sq);
    }
    const float inv = 1.0f / sqrtf(V_HSUM(sq) / (float)dim + eps);
    if (rstd) rstd[r] = inv;
    const evk_vec iv = V_SET1(inv);
    for (long j = 0; j < dim; j += EVK_W) {
      const evk_vec c = V_MUL(V_SUB(V_LOAD(p + j), mv), iv);
      const evk_vec o = V_FMADD(c, V_LOAD(w + j), V_LOAD(b + j));
      V_STORE(p + j, o);
      if (sum) V_STORE(sum + r * dim + j, V_ADD(o, V_LOAD(addend + r * dim + j)));
    }
  }
}

// y[r] = a[r]·(x[r] + u) + v over rows of `dim` values (x rows `ldx` apart, y dense; a, u, v
// may each be NULL: 1, 0, 0); y may be x.
EVK_TARGET void EVK_NAME(evk_row_affine)(float *y, const float *x, long rows, long dim, long ldx,
                                         const float *a, const float *u, const float *v) {
  for (long r = 0; r < rows; r++) {
    const evk_vec av = V_SET1(a ? a[r] : 1.0f);
    for (long j = 0; j < dim; j += EVK_W) {
      const long w = dim - j < EVK_W ? dim - j : EVK_W;
      evk_vec t = V_LOADN(x + r * ldx + j, w);
      if (u) t = V_ADD(t, V_LOADN(u + j, w));
      t = V_MUL(t, av);
      if (v) t = V_ADD(t, V_LOADN(v + j, w));
      V_STOREN(y + r * dim + j, t, w);
    }
  }
}

// In place, rows of 64 values: LayerNorm(x + pre_bias)·w + b, then the erf GELU. The mean's sum
// adds the row's vectors pairwise.
EVK_TARGET void EVK_NAME(evk_layernorm64_gelu)(float *x, long rows, const float *w, const float *b,
                                               float eps, const float *pre_bias) {
  enum { N = 64 / EVK_W };
  for (long r = 0; r < rows; r++) {
    float *p = x + r * 64;
    evk_vec v[N], t[N];
    for (int q = 0; q < N; q++) {
      v[q] = V_LOAD(p + EVK_W * q);
      if (pre_bias) v[q] = V_ADD(v[q], V_LOAD(pre_bias + EVK_W * q));
      t[q] = v[q];
    }
    for (int s = 1; s < N; s *= 2)
      for (int q = 0; q + s < N; q += 2 * s) t[q] = V_ADD(t[q], t[q + s]);
    const evk_vec m = V_SET1(V_HSUM(t[0]) / 64.0f);
    evk_vec sq = V_ZERO;
    for (int q = 0; q < N; q++) {
      v[q] = V_SUB(v[q], m);
      sq = V_FMADD(v[q], v[q], sq);
    }
    const evk_vec inv = V_SET1(1.0f / sqrtf(V_HSUM(sq) / 64.0f + eps));
    for (int q = 0; q < N; q++) {
      const evk_vec n = V_FMADD(V_MUL(v[q], inv), V_LOAD(w + EVK_W * q), V_LOAD(b + EVK_W * q));
      V_STORE(p + EVK_W * q, V_GELU_ERF(n));
    }
  }
}

// out[r·count + m] = Σ_c h[m·32 + c]·gelu(z[r·32 + c] + bias[c]) for rows of 32 channels (the
// decoder's last step: the second upscaling convolution's GELU and each mask's hypernetwork
// product). Eight rows at a time: each row's product is folded to 8 lanes and the eight are
// reduced together by an hadd tree, instead of one horizontal sum per row; leftover rows run in
// plain loops. The GELUs are bit for bit `RowOps.gelu`; the sums are ordered by the width.
EVK_TARGET void EVK_NAME(evk_gelu_dot32)(const float *z, long rows, const float *bias,
                                         const float *h, long count, float *out) {
  enum { N = 32 / EVK_W };
  evk_vec b[N];
  for (int q = 0; q < N; q++) b[q] = V_LOAD(bias + EVK_W * q);
  long r = 0;
  for (; r + 8 <= rows; r += 8) {
    evk_vec g[8][N];
    for (int i = 0; i < 8; i++) {
      const float *zr = z + (r + i) * 32;
      for (int q = 0; q < N; q++) g[i][q] = V_GELU_ERF(V_ADD(V_LOAD(zr + EVK_W * q), b[q]));
    }
    for (long m = 0; m < count; m++) {
      evk_vec hv[N];
      for (int q = 0; q < N; q++) hv[q] = V_LOAD(h + m * 32 + EVK_W * q);
      __m256 s[8];
      for (int i = 0; i < 8; i++) {
        evk_vec a = V_MUL(g[i][0], hv[0]);
        for (int q = 1; q < N; q++) a = V_FMADD(g[i][q], hv[q], a);
        s[i] = V_TO8(a);
      }
      evk_row_sums8(s, out + r * count + m, count);
    }
  }
  if (r < rows) evk_gelu_dot_scalar(z + r * 32, rows - r, 32, bias, h, count, out + r * count);
}
