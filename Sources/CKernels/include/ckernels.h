#ifndef EVSAM_CKERNELS_H
#define EVSAM_CKERNELS_H

// Hot loops in AVX-512 or AVX2 + FMA, picked at run time. Swift compiles for baseline x86-64
// (SSE2), so its own loops run 4 floats wide; these run 16 or 8 wide.
//
// Every kernel returns 1 when it did the work, or 0 when it did nothing because no vector
// version applies (this CPU, EVSAM_SIMD or the thread's cap rules the level out, or the shape
// is one the vector code does not take): the caller then runs its plain loop, which is also
// the reference the tests hold each level against. Sources/CKernels/dispatch.c holds the entry
// points, avx512/ and avx2/ the kernels of each level.

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

#define EVK_LEVEL_PORTABLE 0
#define EVK_LEVEL_AVX2 1
#define EVK_LEVEL_AVX512 2

/// The instruction-set level the kernels use on the calling thread: the best this CPU has
/// (AVX-512F, else AVX2 with FMA, else portable), capped by the environment variable EVSAM_SIMD
/// (portable, avx2, avx512) or EVSAM_NO_AVX512=1 (= avx2), and by the thread's own cap.
int evk_simd_level(void);

/// The best level this process may use: the CPU's, capped by EVSAM_SIMD / EVSAM_NO_AVX512 but
/// not by a thread's cap.
int evk_available_simd_level(void);

/// Caps the level for kernels run on the calling thread (-1 removes the cap); returns the
/// previous cap. For tests that compare levels: other threads are not affected.
int evk_set_thread_simd_cap(int level);

/// The calling thread's cap (-1: none).
int evk_thread_simd_cap(void);

/// The compute-thread limit set for the calling thread (0: none). Swift has no thread-local
/// variables of its own; `ComputeThreads` keeps this one here.
int evk_thread_compute_limit(void);

/// Sets the calling thread's compute-thread limit (0 removes it); returns the previous one.
int evk_set_thread_compute_limit(int limit);

/// 1 when vector kernels (AVX2 or AVX-512) run, else 0.
int evk_available(void);

/// Row softmax in place: each of `rows` runs of `cols` values (`stride` apart) becomes
/// softmax(scale · (x − max)), with FastMath's exp.
int evk_softmax_rows(float *x, long rows, long cols, long stride, float scale);

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

/// glibc only: serve every allocation from the heap (no per-block mappings) and never trim the
/// heap, so freed blocks are reused instead of unmapped and faulted in again. Returns 1 when
/// both settings took, 0 elsewhere (see HeapPolicy.swift).
int evk_retain_freed_memory(void);

/// glibc only: give the free pages of every arena back to the system (malloc_trim(0)), whatever
/// evk_retain_freed_memory set. Returns 1 when some memory was released, 0 otherwise.
int evk_release_free_memory(void);

/// glibc only: at most `count` malloc arenas for the threads started from now on (M_ARENA_MAX).
/// Returns 1 when the setting took, 0 elsewhere.
int evk_limit_arenas(int count);

/// Row-major C (m × n, row stride ldc) = alpha·op(A)·op(B) + beta·C, with op(A) m × k and op(B)
/// k × n (a transposed operand is stored the other way round, row stride lda / ldb). beta == 0
/// never reads C. Then, for each row i, C[i, :] = act(C[i, :] + row_bias[i]) (`row_bias` may be
/// NULL; `activation` is one of EVK_EPILOGUE_*), fused while the rows are in cache. Packed,
/// cache-blocked AVX-512 (see avx512/sgemm.c); returns 0 without doing anything when AVX-512F
/// is not available (or capped by EVSAM_SIMD): the caller then uses BLAS.
int evk_sgemm_large(int trans_a, int trans_b, long m, long n, long k, float alpha, const float *a,
                    long lda, const float *b, long ldb, float beta, float *c, long ldc,
                    const float *row_bias, int activation);

#define EVK_EPILOGUE_NONE 0
#define EVK_EPILOGUE_RELU 1
#define EVK_EPILOGUE_GELU_TANH 2

/// Winograd F(4×4, 3×3) input transform of tiles `first_tile ..< first_tile + count` of one
/// h × w channel plane (tiles_w tiles per row): element ξ of the k-th tile goes to
/// `v[ξ·matrix_stride + k]`. Bit-for-bit `winogradInputTransform` in Winograd.swift; returns 0
/// without doing anything below AVX-512.
int evk_winograd_input(const float *plane, long h, long w, long tiles_w, long first_tile,
                       long count, float *v, long matrix_stride);

/// The output transform of those tiles of one output channel (element ξ of the k-th tile at
/// `m[ξ·matrix_stride + k]`), then act(y + bias) (EVK_EPILOGUE_*), stored into the h × w plane
/// (edge tiles cropped). Bit-for-bit `winogradOutputTransform`; returns 0 below AVX-512.
int evk_winograd_output(const float *m, long matrix_stride, long count, long first_tile,
                        long tiles_w, float bias, int activation, float *plane, long h, long w);

// ---- Mask decoder: split-invariant products and token-major attention --------------------

/// C (m × n, row stride ldc) = op(A)·B, or C + op(A)·B with `accumulate`. op(A) is m × k: A
/// row-major with row stride lda, or with `trans_a` A stored k × m (row stride lda); B is k × n
/// row-major (row stride ldb). Every element is one chain over p = 0 ..< k in order, so splitting
/// a product into row or column blocks never changes its result (see smallgemm.c). Meant for
/// operands already in cache: nothing is packed. AVX2 and up, k > 0.
int evk_gemm(int trans_a, long m, long n, long k, const float *a, long lda, const float *b,
             long ldb, float *c, long ldc, int accumulate);

/// Floats `evk_gemm_pack` writes for a k × n matrix B.
long evk_gemm_packed_count(long k, long n);

/// Packs B (k × n, row stride ldb) for `evk_gemm_prepacked`: panels of 16 columns, each k rows
/// of 16 floats (zero-padded). For a B that many products share.
void evk_gemm_pack(long k, long n, const float *b, long ldb, float *packed);

/// `evk_gemm` with B packed by `evk_gemm_pack`; the same results.
int evk_gemm_prepacked(int trans_a, long m, long n, long k, const float *a, long lda,
                       const float *packed, float *c, long ldc, int accumulate);

/// Softmax over prompt tokens, per head, in place: row p of `s` (row stride `ld`) holds `t`
/// groups of 8 heads; each head's t values become softmax(scale·(x + bias)) (`bias`: t·8 values,
/// may be NULL).
int evk_softmax_heads(float *s, long rows, long t, long ld, float scale, const float *bias);

/// out[p][j·8 + h] = Σ_c q[p][c·8 + h] · k[j][c·8 + h] for p < rows, j < t, c < d: per-head
/// dot products of head-interleaved rows (q rows `ldq` apart; k dense, t × d·8; out rows `ldo`
/// apart).
int evk_head_scores(const float *q, long ldq, long rows, const float *k, long t, long d, float *out,
                    long ldo);

/// y[r][i] = outer[r]·(inner[r]·x[r][i] + shift[i]) + offset[r][i] for r < rows, i < width
/// (rows `ldy`, `ldx`, `ldo` apart; inner and outer default to 1, shift and offset to 0 when
/// NULL; y may be x): per-row scales with shared and per-row offsets, one pass.
int evk_scale_rows(float *y, long ldy, const float *x, long ldx, long rows, long width,
                   const float *inner, const float *outer, const float *shift, const float *offset,
                   long ldo);

/// out[r] = Σ_c a[r][c] · b[r][c] for r < rows, c < cols (rows `lda` and `ldb` apart): row-wise
/// dot products, e.g. quadratic forms x·(G·x) row by row.
int evk_row_dots(const float *a, long lda, const float *b, long ldb, long rows, long cols,
                 float *out);

/// One slice of a softmax down the columns of `s` (rows × cols, row stride ld), unnormalised:
/// s ← exp(scale·(s − m_c)) with m_c the column's max over these rows; col_max and col_sum
/// receive m_c and the column sums, from which slices combine into the full softmax.
int evk_softmax_columns_partial(float *s, long rows, long cols, long ld, float scale,
                                float *col_max, float *col_sum);

/// acc[j][c·8 + h] = Σ_p scores[p][j·8 + h] · v[p][c·8 + h] over p < rows: the weighted sum of
/// head-interleaved values (`scores` dense rows of t·8, `v` rows `ldv` apart; acc: t × d·8).
int evk_heads_attend(const float *scores, long rows, long t, long d, const float *v, long ldv,
                     float *acc);

/// out[r·count + m] = Σ_c h[m·width + c] · gelu(z[r·width + c] + bias[c]) for r < rows,
/// m < count, with `RowOps.gelu` (bit-for-bit; the sums may be fused). width ≤ 256. The mask
/// decoder's last step: the second upscaling convolution's GELU and each mask's
/// hypernetwork product.
int evk_gelu_dot(const float *z, long rows, long width, const float *bias, const float *h,
                 long count, float *out);

/// The end of the folded first upscaling convolution and what follows it, in place on `y`
/// (`tokens` rows of 256 = 4 sub-pixels × 64 channels, holding the folded product): per row p,
/// v = a1[p]·(a0[p]·(base[p] + u0) + u1 + y[p]) + u2 (u0, u1, u2: 256 values), then per
/// sub-pixel a LayerNorm over its 64 channels (w, b: 64 values) and the erf GELU of
/// `evk_gelu_erf_rational`, bit for bit.
int evk_fold_layernorm64_gelu(float *y, const float *base, long tokens, const float *a0,
                              const float *a1, const float *u0, const float *u1, const float *u2,
                              const float *w, const float *b, float eps);

#ifdef __cplusplus
}
#endif

#endif
