/* The vector vocabulary of simd/f32-kernels.inc.c for aarch64 NEON (4 lanes). */
#ifndef KILN_KERNELS_VEC_NEON_H
#define KILN_KERNELS_VEC_NEON_H

#include <arm_neon.h>

#define KSIMD_ISA      KILN_ISA_NEON
#define KSIMD_TABLE    kiln__kernels_neon
#define KSIMD_FMA_LOOP kiln__fma_loop_neon
#define VW             4
/* Vectors across kiln's GEMM microkernel tile of 14 rows: 14 x 2 accumulators + 2 B vectors + 1
 * broadcast of the 32 q registers. */
#define GEMM_NV 2
typedef float32x4_t vf;

#define V_LOADU(p)     vld1q_f32(p)
#define V_STOREU(p, v) vst1q_f32((p), (v))
#define V_SET1(f)      vdupq_n_f32(f)
#define V_ZERO()       vdupq_n_f32(0.0f)
#define V_ADD(a, b)    vaddq_f32((a), (b))
#define V_SUB(a, b)    vsubq_f32((a), (b))
#define V_MUL(a, b)    vmulq_f32((a), (b))
#define V_DIV(a, b)    vdivq_f32((a), (b))
#define V_FMA(a, b, c) vfmaq_f32((c), (a), (b)) /* a * b + c */
#define V_MAX(a, b)    vmaxq_f32((a), (b))
#define V_MIN(a, b)    vminq_f32((a), (b))
#define V_ROUND(a)     vrndnq_f32(a)

/* 2^n for integral n in [-126, 127]. */
static inline vf v_pow2n(vf n)
{
    int32x4_t e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
    return vreinterpretq_f32_s32(vshlq_n_s32(e, 23));
}

static inline float v_hsum(vf v)
{
    return vaddvq_f32(v);
}

static inline float v_hmax(vf v)
{
    return vmaxvq_f32(v);
}

/* The even elements of p[0 .. 2 * VW): a stride-2 load. */
static inline vf v_load_even(const float *p)
{
    return vld2q_f32(p).val[0];
}

#endif
