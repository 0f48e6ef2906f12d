#ifndef EVSAM_CKERNELS_H
#define EVSAM_CKERNELS_H

// Hot elementwise loops in AVX-512, picked at run time. Swift compiles for baseline x86-64
// (SSE2), so its own loops run 4 floats wide; these run 16 wide on CPUs that have AVX-512F.
// Every function returns 1 when it did the work and 0 when this CPU lacks the instructions
// (the caller then runs its portable loop).

#ifdef __cplusplus
extern "C" {
#endif

/// dst[i] = gelu_tanh(src[i] + bias) for i < n; dst may equal src. The Swift `geluTanh`
/// (x / (1 + e^(-2u)), u = sqrt(2/pi)(x + 0.044715 x^3), FastMath's exp) operation for
/// operation, so the results are bit-for-bit the same.
int evk_gelu_tanh_bias(float *dst, const float *src, long n, float bias);

/// p[i] = gelu_erf(p[i] + (bias ? bias[i] : 0)) for i < n: `RowOps.gelu` (rational erf,
/// argument clamped to ±4, the mask decoder's GELU) operation for operation, bit-for-bit.
int evk_gelu_erf_rational(float *p, long n, const float *bias);

/// 1 when the AVX-512 kernels run on this CPU (and EVSAM_NO_AVX512 is not set), else 0.
int evk_available(void);

/// Row softmax in place: each of `rows` runs of `cols` values (`stride` apart) becomes
/// softmax(scale · (x − max)), with FastMath's exp.
int evk_softmax_rows(float *x, long rows, long cols, long stride, float scale);

/// Unnormalised row softmax in place: x ← exp(scale · (x − max)) for `rows` runs of `cols`
/// values (`stride` apart), writing each row's max and sum of the exponentials.
int evk_softmax_partial(float *x, long rows, long cols, long stride, float scale, float *row_max,
                        float *row_sum);

/// Softmax down the columns `c0 ..< c1` of a contiguous `rows` × `cols` block: column c becomes
/// softmax over r of scale · (x[r][c] + row_bias[r]) (`row_bias` may be NULL).
int evk_softmax_columns(float *x, long rows, long cols, long c0, long c1, float scale,
                        const float *row_bias);

/// `x[r] ← LayerNorm(x[r] + delta[r] + delta_bias) · weight + bias` (biased variance) for rows
/// of `dim` values (a multiple of 16); `delta_bias` may be NULL; optionally
/// `sum[r] = x[r] + addend[r]` and `rstd[r] = 1/σ`.
int evk_residual_layernorm(float *x, const float *delta, const float *delta_bias, long rows,
                           long dim, const float *weight, const float *bias, float eps,
                           const float *addend, float *sum, float *rstd);

/// `y[r] = a[r] · (x[r] + u) + v` for rows of `dim` values (x rows `ldx` apart, y dense);
/// `a`, `u`, `v` may each be NULL (1, 0, 0).
int evk_row_affine(float *y, const float *x, long rows, long dim, long ldx, const float *a,
                   const float *u, const float *v);

/// In place, rows of 64 values: LayerNorm(x + pre_bias) · weight + bias, then the exact erf
/// GELU of `evk_gelu_erf_rational` (`pre_bias` may be NULL).
int evk_layernorm64_gelu(float *x, long rows, const float *weight, const float *bias, float eps,
                         const float *pre_bias);

/// Rows the few-row linear kernel takes at most.
#define EVK_FEW_ROWS 12

/// Floats `evk_linear_pack` writes for an out × in weight.
#define EVK_LINEAR_PACKED_COUNT(out, in) ((((out) + 31) / 32) * 32 * (in))

/// Packs an out × in weight (row-major, as nn.Linear stores it) for `evk_linear_few_rows`:
/// strips of 32 outputs, each in × 32, zero-padded.
void evk_linear_pack(const float *weight, long out, long in, float *packed);

/// `y[r][o] = Σ_i x[r][i] · weight[o][i] + bias[o]` (then ReLU when `relu`) for
/// 1…EVK_FEW_ROWS rows, with the weight packed by `evk_linear_pack`: a linear layer on a
/// handful of tokens, streaming the weight once instead of packing it for every call as a GEMM
/// would. `bias` may be NULL.
int evk_linear_few_rows(const float *x, long ldx, long rows, long in, const float *packed,
                        const float *bias, long out, float *y, long ldy, int relu);

#ifdef __cplusplus
}
#endif

#endif
