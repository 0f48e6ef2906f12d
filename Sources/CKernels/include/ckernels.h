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

#ifdef __cplusplus
}
#endif

#endif
