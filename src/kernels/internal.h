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

/* ---- threads (threadpool.c) ------------------------------------------------ */

typedef void (*kiln__range_fn)(void *ctx, size_t begin, size_t end);
/* Splits [0, n) into up to `threads` contiguous ranges and runs fn on each,
 * one on the calling thread, the rest on kiln's pool; returns when all are
 * done. threads <= 1, or a pool busy with another caller's job, runs
 * fn(ctx, 0, n) on the calling thread. */
void kiln__parallel_for(int threads, size_t n, kiln__range_fn fn, void *ctx);

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
extern const kiln_kernels kiln__kernels_avx2;
extern const kiln_kernels kiln__kernels_avx512;
extern const kiln_kernels kiln__kernels_neon;

/* The FMA peak loops (simd/f32-kernels.inc.c): `iters` rounds of 12
 * independent vector FMAs; each returns the flops it did. */
double kiln__fma_loop_avx2(long iters);
double kiln__fma_loop_avx512(long iters);
double kiln__fma_loop_neon(long iters);

/* ---- the fast conv driver (conv2d-gemm.c) and what an ISA lends it ------ */

/*
 * y[i] = act(x[i] + bias + bias_vec[i] + res[i]) for i < count, where a
 * NULL bias_vec or res contributes nothing. y may be x.
 */
typedef void (*kiln__act_row_fn)(size_t count, const float *x, float bias, const float *bias_vec,
                                 const float *res, const kiln_epilogue *ep, float *y);
/* Direct conv for c_in / groups == 1 (depthwise, with any channel
 * multiplier), epilogue included. */
typedef void (*kiln__conv_direct_fn)(const kiln_conv2d_shape *s, int h_out, int w_out,
                                     const float *x, const float *w, const kiln_epilogue *ep,
                                     float *y, int threads);

/* Winograd F(2x2, 3x3) conv for shapes kiln__conv2d_is_winograd() takes;
 * `u` is the transformed weights (kiln__winograd_u()), `workspace` holds
 * kiln__winograd_workspace_floats() floats. */
typedef void (*kiln__conv_winograd_fn)(const kiln_conv2d_shape *s, int h_out, int w_out,
                                       const float *x, const float *u, const kiln_epilogue *ep,
                                       float *y, float *workspace, int threads);

typedef struct kiln__conv_ops {
    kiln__act_row_fn act_row;
    kiln__conv_direct_fn depthwise;
    kiln__conv_winograd_fn winograd;
} kiln__conv_ops;

/* Widest padded input row the Winograd path buffers on the stack. */
#define KILN_WINOGRAD_ROW_MAX 1024
/* Whether conv2d takes the Winograd F(2x2, 3x3) path: 3x3, stride 1, no
 * dilation, one group, and enough output tiles for its GEMMs to pay. */
int kiln__conv2d_is_winograd(const kiln_conv2d_shape *s);
/* The transformed weights U[16][c_out][c_in] inside a packed buffer. */
const float *kiln__winograd_u(const kiln_conv2d_shape *s, const float *packed);
size_t kiln__winograd_workspace_floats(const kiln_conv2d_shape *s);

/* conv2d through SGEMM: 1x1/stride 1/no pad as one GEMM per image and
 * group, everything else im2col + GEMM; c_in/groups == 1 through
 * ops->depthwise. The epilogue runs on each GEMM output right after it. */
kiln_status kiln__conv2d_gemm(const kiln_conv2d_shape *s, const float *x, const float *packed,
                              const kiln_epilogue *ep, float *y, void *workspace, int threads,
                              const kiln__conv_ops *ops);
/* Whether kiln__conv2d_gemm() takes the GEMM-without-im2col path. */
int kiln__conv2d_is_pointwise(const kiln_conv2d_shape *s);
/* cols [c_in/groups * k_h * k_w][h_out * w_out] for group g of image x. */
void kiln__im2col(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x_img, int g,
                  float *cols);

#endif
