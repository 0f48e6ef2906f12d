// Weight layouts the vector kernels read, written once per layer at load: plain loops, the
// same at every level.

#include "internal.h"

void evk_linear_pack(const float *weight, long out, long in, float *packed) {
  for (long o0 = 0; o0 < out; o0 += 32) {
    for (long i = 0; i < in; i++) {
      for (long q = 0; q < 32; q++) {
        packed[o0 * in + i * 32 + q] = o0 + q < out ? weight[(o0 + q) * in + i] : 0.0f;
      }
    }
  }
}

long evk_gemm_packed_count(long k, long n) { return (n + 15) / 16 * 16 * k; }

void evk_gemm_pack(long k, long n, const float *b, long ldb, float *packed) {
  for (long j0 = 0; j0 < n; j0 += 16) {
    float *panel = packed + j0 * k;
    for (long p = 0; p < k; p++) {
      for (long j = 0; j < 16; j++) panel[p * 16 + j] = j0 + j < n ? b[p * ldb + j0 + j] : 0.0f;
    }
  }
}
