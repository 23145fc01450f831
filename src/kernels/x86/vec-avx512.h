/* The vector vocabulary of simd/f32-kernels.inc.c for AVX-512F (16 lanes). */
#ifndef KILN_KERNELS_VEC_AVX512_H
#define KILN_KERNELS_VEC_AVX512_H

#include <immintrin.h>

#define KSIMD_ISA      KILN_ISA_AVX512
#define KSIMD_TABLE    kiln__kernels_avx512
#define KSIMD_FMA_LOOP kiln__fma_loop_avx512
#define VW             16
/* Vectors across kiln's GEMM microkernel tile of 14 rows: 14 x 2 accumulators + 2 B vectors + 1
 * broadcast of the 32 zmm. */
#define GEMM_NV 2
typedef __m512 vf;

#define V_LOADU(p)     _mm512_loadu_ps(p)
#define V_STOREU(p, v) _mm512_storeu_ps((p), (v))
#define V_SET1(f)      _mm512_set1_ps(f)
#define V_ZERO()       _mm512_setzero_ps()
#define V_ADD(a, b)    _mm512_add_ps((a), (b))
#define V_SUB(a, b)    _mm512_sub_ps((a), (b))
#define V_MUL(a, b)    _mm512_mul_ps((a), (b))
#define V_DIV(a, b)    _mm512_div_ps((a), (b))
#define V_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c)) /* a * b + c */
#define V_MAX(a, b)    _mm512_max_ps((a), (b))
#define V_MIN(a, b)    _mm512_min_ps((a), (b))
#define V_ROUND(a)     _mm512_roundscale_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* 2^n for integral n in [-126, 127]. */
static inline vf v_pow2n(vf n)
{
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}

static inline float v_hsum(vf v)
{
    return _mm512_reduce_add_ps(v);
}

static inline float v_hmax(vf v)
{
    return _mm512_reduce_max_ps(v);
}

/* The mask of the first n (0 <= n <= VW) lanes. */
#define V_MASK_FIRST(n) ((__mmask16)((1u << (n)) - 1u))
/* Stores the first n (0 <= n <= VW) lanes of v: one masked store. */
#define V_STOREU_PART(p, v, n) _mm512_mask_storeu_ps((p), V_MASK_FIRST(n), (v))
/* The first n (0 <= n <= VW) floats at p, zeros after: one masked load,
 * which reads nothing past p + n. */
#define V_LOADU_PART(p, n) _mm512_maskz_loadu_ps(V_MASK_FIRST(n), (p))

/* Transposes the 16 x 16 floats in r[0..15] (r[i] = row i) in registers:
 * 32-bit, then 64-bit unpacks, then two rounds of 128-bit lane shuffles. */
static inline void v_transpose16(vf r[16])
{
    vf t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* u[4 i + k] holds rows 4i..4i+3 of columns k, k + 4, k + 8, k + 12 */
    for (int k = 0; k < 4; k++) {
        const vf v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], _MM_SHUFFLE(2, 0, 2, 0));
        const vf v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], _MM_SHUFFLE(3, 1, 3, 1));
        const vf w0 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], _MM_SHUFFLE(2, 0, 2, 0));
        const vf w1 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], _MM_SHUFFLE(3, 1, 3, 1));
        r[k] = _mm512_shuffle_f32x4(v0, w0, _MM_SHUFFLE(2, 0, 2, 0));
        r[k + 8] = _mm512_shuffle_f32x4(v0, w0, _MM_SHUFFLE(3, 1, 3, 1));
        r[k + 4] = _mm512_shuffle_f32x4(v1, w1, _MM_SHUFFLE(2, 0, 2, 0));
        r[k + 12] = _mm512_shuffle_f32x4(v1, w1, _MM_SHUFFLE(3, 1, 3, 1));
    }
}
#define V_TRANSPOSE16(r) v_transpose16(r)

/* Lane i: the larger of lanes 2i and 2i + 1 of a then b (a 2:1 max pool
 * across 32 neighbouring columns). */
static inline vf v_pair_max(vf a, vf b)
{
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd =
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_max_ps(_mm512_permutex2var_ps(a, even, b), _mm512_permutex2var_ps(a, odd, b));
}
#define V_HAS_PAIR_MAX 1

/* The even elements of p[0 .. 2 * VW): a stride-2 load. */
static inline vf v_load_even(const float *p)
{
    const __m512i idx =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 16));
}

#endif
