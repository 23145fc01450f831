/*
 * conv2d on OpenBLAS SGEMM, shared by every SIMD table (each lends its
 * epilogue and depthwise microkernels through kiln__conv_ops).
 *
 * Layout stays NCHW end to end: per image and group the output
 * y[c_out/g][h_out*w_out] is W[c_out/g][K] x cols[K][h_out*w_out], with
 * K = c_in/g * k_h * k_w, so the GEMM writes the output in place and no
 * layout transform is paid at the edges of the layer. A 1x1/stride-1
 * conv without padding needs no im2col at all: the input plane is already
 * the [K][h*w] matrix.
 *
 * The epilogue (bias, residual, activation) runs over output channel
 * blocks right after the GEMM that produced them, while they are still in
 * cache: the GEMM is split by output channels into blocks of about
 * EPI_BLOCK_FLOATS floats of output.
 *
 * Threads: the GEMM runs on `threads` OpenBLAS threads; the epilogue and
 * im2col run on the calling thread, so no two pools ever compete.
 */
#include "internal.h"

#include <cblas.h>
#include <string.h>

#define EPI_BLOCK_FLOATS (64 * 1024)

int kiln__conv2d_is_pointwise(const kiln_conv2d_shape *s)
{
    return s->k_h == 1 && s->k_w == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_t == 0 &&
           s->pad_l == 0 && s->pad_b == 0 && s->pad_r == 0;
}

/* Winograd pays where the four-fold fewer multiplies outweigh the
 * transforms and its sixteen smaller GEMMs: enough tiles per GEMM. */
#define WINOGRAD_MIN_TILES 16

int kiln__conv2d_is_winograd(const kiln_conv2d_shape *s)
{
    if (s->k_h != 3 || s->k_w != 3 || s->stride_h != 1 || s->stride_w != 1 || s->dil_h != 1 ||
        s->dil_w != 1 || s->groups != 1 || s->c_in < 4)
        return 0;
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    long tiles = (long)((h_out + 1) / 2) * ((w_out + 1) / 2);
    /* The padded input row buffer: 2 * tiles across + 2, plus vector slack. */
    return tiles >= WINOGRAD_MIN_TILES && 2L * ((w_out + 1) / 2) + 2 + 64 <= KILN_WINOGRAD_ROW_MAX;
}

size_t kiln__winograd_workspace_floats(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    size_t tiles = (size_t)((h_out + 1) / 2) * ((w_out + 1) / 2);
    return 16 * tiles * ((size_t)s->c_in + s->c_out);
}

void kiln__im2col(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x_img, int g,
                  float *cols)
{
    const int cin_g = s->c_in / s->groups;
    const size_t plane = (size_t)s->h_in * s->w_in, n_out = (size_t)h_out * w_out;
    for (int ic = 0; ic < cin_g; ic++) {
        const float *xc = x_img + ((size_t)g * cin_g + ic) * plane;
        for (int kh = 0; kh < s->k_h; kh++)
            for (int kw = 0; kw < s->k_w; kw++) {
                float *row = cols + (((size_t)ic * s->k_h + kh) * s->k_w + kw) * n_out;
                /* Output columns whose input column is inside [0, w_in). */
                int off = kw * s->dil_w - s->pad_l;
                int lo = off < 0 ? (-off + s->stride_w - 1) / s->stride_w : 0;
                int hi = s->w_in - 1 - off < 0 ? 0 : (s->w_in - 1 - off) / s->stride_w + 1;
                if (lo > w_out) lo = w_out;
                if (hi > w_out) hi = w_out;
                if (hi < lo) hi = lo;
                for (int oh = 0; oh < h_out; oh++) {
                    float *r = row + (size_t)oh * w_out;
                    int ih = oh * s->stride_h - s->pad_t + kh * s->dil_h;
                    if (ih < 0 || ih >= s->h_in) {
                        memset(r, 0, sizeof(float) * w_out);
                        continue;
                    }
                    const float *xr = xc + (size_t)ih * s->w_in + off;
                    for (int ow = 0; ow < lo; ow++) r[ow] = 0.0f;
                    if (s->stride_w == 1)
                        memcpy(r + lo, xr + lo, sizeof(float) * (hi - lo));
                    else
                        for (int ow = lo; ow < hi; ow++) r[ow] = xr[(size_t)ow * s->stride_w];
                    for (int ow = hi; ow < w_out; ow++) r[ow] = 0.0f;
                }
            }
    }
}

kiln_status kiln__conv2d_gemm(const kiln_conv2d_shape *s, const float *x, const float *packed,
                              const kiln_epilogue *ep, float *y, void *workspace, int threads,
                              const kiln__conv_ops *ops)
{
    int h_out, w_out;
    kiln_status st = kiln_conv2d_out_hw(s, &h_out, &w_out);
    if (st != KILN_OK) return st;
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    const int cin_g = s->c_in / s->groups, cout_g = s->c_out / s->groups;
    if (cin_g == 1) {
        ops->depthwise(s, h_out, w_out, x, packed, ep, y, threads);
        return KILN_OK;
    }
    const int pointwise = kiln__conv2d_is_pointwise(s);
    if (!pointwise && !workspace) return KILN_ERR_INVALID_ARG;
    if (ops->winograd && kiln__conv2d_is_winograd(s)) {
        ops->winograd(s, h_out, w_out, x, kiln__winograd_u(s, packed), ep, y, workspace, threads);
        return KILN_OK;
    }
    const int K = cin_g * s->k_h * s->k_w;
    const size_t n_out = (size_t)h_out * w_out, x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t y_img = (size_t)s->c_out * n_out;
    /* At least 64 rows per GEMM, or re-packing the B matrix for each
     * block costs more than the epilogue's cache misses save. */
    int block = (int)(EPI_BLOCK_FLOATS / n_out);
    if (block < 64) block = 64;
    if (block > cout_g) block = cout_g;
    kiln_blas_set_threads(threads);
    for (int b = 0; b < s->n; b++)
        for (int g = 0; g < s->groups; g++) {
            const float *B;
            if (pointwise) {
                B = x + b * x_img + (size_t)g * cin_g * n_out;
            } else {
                kiln__im2col(s, h_out, w_out, x + b * x_img, g, workspace);
                B = workspace;
            }
            for (int m0 = 0; m0 < cout_g; m0 += block) {
                int m = cout_g - m0 < block ? cout_g - m0 : block;
                int oc0 = g * cout_g + m0;
                float *C = y + b * y_img + (size_t)oc0 * n_out;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, (int)n_out, K, 1.0f,
                            packed + (size_t)oc0 * K, K, B, (int)n_out, 0.0f, C, (int)n_out);
                if (!ep->bias && !ep->residual && ep->act == KILN_ACT_NONE) continue;
                for (int i = 0; i < m; i++) {
                    float *row = C + (size_t)i * n_out;
                    const float *res = ep->residual ? ep->residual + (row - y) : NULL;
                    ops->act_row(n_out, row, ep->bias ? ep->bias[oc0 + i] : 0.0f, NULL, res, ep,
                                 row);
                }
            }
        }
    return KILN_OK;
}

/* The benchmark's baseline: im2col for every shape (1x1 too), one SGEMM
 * per image and group, then the epilogue as separate scalar passes. */
kiln_status kiln_conv2d_im2col_baseline(const kiln_conv2d_shape *s, const float *x,
                                        const float *packed, const kiln_epilogue *ep, float *y,
                                        void *workspace, int threads)
{
    int h_out, w_out;
    kiln_status st = kiln_conv2d_out_hw(s, &h_out, &w_out);
    if (st != KILN_OK) return st;
    if (!workspace) return KILN_ERR_INVALID_ARG;
    const int cin_g = s->c_in / s->groups, cout_g = s->c_out / s->groups;
    const int K = cin_g * s->k_h * s->k_w;
    const size_t n_out = (size_t)h_out * w_out, x_img = (size_t)s->c_in * s->h_in * s->w_in;
    kiln_blas_set_threads(threads);
    for (int b = 0; b < s->n; b++)
        for (int g = 0; g < s->groups; g++) {
            kiln__im2col(s, h_out, w_out, x + b * x_img, g, workspace);
            float *C = y + ((size_t)b * s->c_out + (size_t)g * cout_g) * n_out;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout_g, (int)n_out, K, 1.0f,
                        packed + (size_t)g * cout_g * K, K, workspace, (int)n_out, 0.0f, C,
                        (int)n_out);
        }
    if (!ep) return KILN_OK;
    /* The epilogue the unfused way: one plain pass per part. */
    const size_t total = (size_t)s->n * s->c_out * n_out;
    if (ep->bias)
        for (int b = 0; b < s->n; b++)
            for (int c = 0; c < s->c_out; c++) {
                float *yc = y + ((size_t)b * s->c_out + c) * n_out;
                for (size_t i = 0; i < n_out; i++) yc[i] += ep->bias[c];
            }
    if (ep->residual)
        for (size_t i = 0; i < total; i++) y[i] += ep->residual[i];
    if (ep->act == KILN_ACT_RELU) /* a loop the compiler vectorizes */
        for (size_t i = 0; i < total; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    else if (ep->act != KILN_ACT_NONE)
        kiln__ref_activation(total, y, y, ep->act, ep->alpha, ep->lo, ep->hi);
    return KILN_OK;
}

size_t kiln_conv2d_im2col_baseline_workspace_size(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    size_t k = (size_t)(s->c_in / s->groups) * s->k_h * s->k_w;
    return (k * h_out * w_out * sizeof(float) + KILN_ALIGN - 1) & ~(size_t)(KILN_ALIGN - 1);
}
