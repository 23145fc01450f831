/*
 * Shared by the kernel implementations, not by their callers: the ref
 * kernels (each ISA table falls back to them for what it does not
 * specialise), scalar helpers and the per-ISA tables.
 */
#ifndef KILN_KERNELS_INTERNAL_H
#define KILN_KERNELS_INTERNAL_H

#include "kernels.h"

#include <math.h>

/* The scalar activation, the definition every SIMD path must match. */
static inline float kiln__act1(float v, kiln_act act, float alpha, float lo, float hi)
{
    switch (act) {
    case KILN_ACT_RELU:
        return v > 0.0f ? v : 0.0f;
    case KILN_ACT_CLIP:
        return v < lo ? lo : (v > hi ? hi : v);
    case KILN_ACT_LEAKY_RELU:
        return v >= 0.0f ? v : alpha * v;
    case KILN_ACT_SIGMOID:
        return 1.0f / (1.0f + expf(-v));
    default:
        return v;
    }
}

/* First input row/column of output position `o` (may be negative). */
static inline int kiln__win_start(int o, int stride, int pad)
{
    return o * stride - pad;
}

/* ---- ref/ ---------------------------------------------------------------- */

kiln_status kiln__ref_conv2d(const kiln_conv2d_shape *s, const float *x, const float *packed,
                             const kiln_epilogue *ep, float *y, void *workspace, int threads);
kiln_status kiln__ref_dense(const kiln_dense_shape *s, const float *x, const float *packed,
                            const kiln_epilogue *ep, float *y, void *workspace, int threads);
void kiln__ref_maxpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
void kiln__ref_avgpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
void kiln__ref_global_avgpool(int n, int c, size_t hw, const float *x, float *y);
void kiln__ref_global_maxpool(int n, int c, size_t hw, const float *x, float *y);
void kiln__ref_activation(size_t count, const float *x, float *y, kiln_act act, float alpha,
                          float lo, float hi);
void kiln__ref_epilogue_apply(int n, int c, size_t hw, const float *x, const kiln_epilogue *ep,
                              float *y);
void kiln__ref_add(size_t count, const float *a, const float *b, float *y);
void kiln__ref_softmax(size_t outer, size_t axis, size_t inner, const float *x, float *y);
void kiln__ref_batchnorm(int n, int c, size_t hw, const float *x, const float *scale,
                         const float *shift, float *y);
void kiln__ref_concat_channels(int n, size_t hw, int n_inputs, const float *const *inputs,
                               const int *channels, float *y);

extern const kiln_kernels kiln__kernels_ref;

#endif
