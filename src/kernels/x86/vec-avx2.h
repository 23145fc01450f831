/* The vector vocabulary of simd/f32-kernels.inc.c for AVX2 + FMA (8 lanes). */
#ifndef KILN_KERNELS_VEC_AVX2_H
#define KILN_KERNELS_VEC_AVX2_H

#include <immintrin.h>

#define KSIMD_ISA      KILN_ISA_AVX2
#define KSIMD_TABLE    kiln__kernels_avx2
#define KSIMD_FMA_LOOP kiln__fma_loop_avx2
#define VW             8
/* Vectors across kiln's GEMM microkernel tile of 14 rows: 14 x 1 accumulators + 1 B vector + 1
 * broadcast of the 16 ymm. */
#define GEMM_NV 1
typedef __m256 vf;

#define V_LOADU(p)     _mm256_loadu_ps(p)
#define V_STOREU(p, v) _mm256_storeu_ps((p), (v))
#define V_SET1(f)      _mm256_set1_ps(f)
#define V_ZERO()       _mm256_setzero_ps()
#define V_ADD(a, b)    _mm256_add_ps((a), (b))
#define V_SUB(a, b)    _mm256_sub_ps((a), (b))
#define V_MUL(a, b)    _mm256_mul_ps((a), (b))
#define V_DIV(a, b)    _mm256_div_ps((a), (b))
#define V_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c)) /* a * b + c */
#define V_MAX(a, b)    _mm256_max_ps((a), (b))
#define V_MIN(a, b)    _mm256_min_ps((a), (b))
#define V_ROUND(a)     _mm256_round_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* 2^n for integral n in [-126, 127]. */
static inline vf v_pow2n(vf n)
{
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}

static inline float v_hsum(vf v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float v_hmax(vf v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The even elements of p[0 .. 2 * VW): a stride-2 load. */
static inline vf v_load_even(const float *p)
{
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    __m256 t = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Stores the first n (0 <= n <= VW) lanes of v: one masked store. */
#define V_STOREU_PART(p, v, n)                                                                    \
    _mm256_maskstore_ps(                                                                          \
        (p), _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), \
        (v))

#endif
