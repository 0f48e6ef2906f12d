// The width-generic kernels of simd/twins.h at 16 lanes.

#include "vector.h"
#include "../avx2/vector.h"

#if EVK_X86
#include <math.h>

#define EVK_W 16
#define EVK_NAME(f) f##_avx512
#define EVK_TARGET EVK_AVX512
#define evk_vec __m512
#define V_LOAD _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_LOADN evk_loadn16
#define V_STOREN evk_storen16
#define V_KEEPN evk_keepn16
#define V_SET1 _mm512_set1_ps
#define V_ZERO _mm512_setzero_ps()
#define V_ADD _mm512_add_ps
#define V_SUB _mm512_sub_ps
#define V_MUL _mm512_mul_ps
#define V_DIV _mm512_div_ps
#define V_MAX _mm512_max_ps
#define V_FMADD _mm512_fmadd_ps
#define V_HSUM evk_hsum16
#define V_HMAX evk_hmax16
#define V_EXP evk_exp16
#define V_GELU_ERF evk_gelu_erf16
#define V_GELU_TANH evk_gelu_tanh16
#define V_TO8(v)                           \
  _mm256_add_ps(_mm512_castps512_ps256(v), \
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))

#include "../simd/twins.h"

#endif
