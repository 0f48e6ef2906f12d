// The width-generic kernels of simd/twins.h at 8 lanes (AVX2 + FMA).

#include "vector.h"

#if EVK_X86
#include <math.h>

#define EVK_W 8
#define EVK_NAME(f) f##_avx2
#define EVK_TARGET EVK_AVX2
#define evk_vec __m256
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_LOADN evk_loadn8
#define V_STOREN evk_storen8
#define V_KEEPN evk_keepn8
#define V_SET1 _mm256_set1_ps
#define V_ZERO _mm256_setzero_ps()
#define V_ADD _mm256_add_ps
#define V_SUB _mm256_sub_ps
#define V_MUL _mm256_mul_ps
#define V_DIV _mm256_div_ps
#define V_MAX _mm256_max_ps
#define V_FMADD _mm256_fmadd_ps
#define V_HSUM evk_hsum8
#define V_HMAX evk_hmax8
#define V_EXP evk_exp8
#define V_GELU_ERF evk_gelu_erf8
#define V_GELU_TANH evk_gelu_tanh8
#define V_TO8(v) (v)

#include "../simd/twins.h"

#endif
