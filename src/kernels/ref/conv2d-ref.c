/*
 * Reference conv2d and dense: direct loops with double accumulators, the
 * oracle the optimised paths are tested against. Clear over fast; the
 * packed weights are read through their ONNX-order prefix only.
 */
#include "internal.h"

/* Each output element is computed from x alone, then gets its residual
 * element added as it is stored. */
int kiln__ref_conv2d_residual_in_place_ok(const kiln_conv2d_shape *s)
{
    (void)s;
    return 1;
}

int kiln__ref_conv2d_pool2_ok(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    return kiln_conv2d_out_hw(s, &h_out, &w_out) == KILN_OK && h_out % 2 == 0 && w_out % 2 == 0;
}

int kiln__ref_conv2d_pool3_ok(const kiln_conv2d_shape *s)
{
    return kiln_conv2d_out_hw(s, NULL, NULL) == KILN_OK;
}

kiln_status kiln__ref_conv2d(const kiln_conv2d_shape *s, const float *x, const float *packed,
                             const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    (void)workspace;
    (void)threads;
    int h_out, w_out;
    kiln_status st = kiln_conv2d_out_hw(s, &h_out, &w_out);
    if (st != KILN_OK) return st;
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    const int cin_g = s->c_in / s->groups, cout_g = s->c_out / s->groups;
    const size_t x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t y_plane = (size_t)h_out * w_out, y_img = (size_t)s->c_out * y_plane;
    /* A fused 2x2/2 max pool: each output is the max of its four conv
     * outputs after the epilogue, written as they come. */
    const int pool = ep->pool2;
    if (pool && (!kiln__ref_conv2d_pool2_ok(s) || ep->residual || ep->pool3))
        return KILN_ERR_INVALID_ARG;
    /* A fused 3x3/2 max pool (one pad each side): each pooled output
     * starts at -inf and takes the max of the conv outputs in its window,
     * after the epilogue, as they come. */
    const int pool3 = ep->pool3;
    if (pool3 && (!kiln__ref_conv2d_pool3_ok(s) || ep->residual)) return KILN_ERR_INVALID_ARG;
    const int p3_h = kiln__pool3_side(h_out), p3_w = kiln__pool3_side(w_out);
    const size_t p_plane = pool3 ? (size_t)p3_h * p3_w : y_plane / 4,
                 p_img = (size_t)s->c_out * p_plane;

    for (int b = 0; b < s->n; b++)
        for (int oc = 0; oc < s->c_out; oc++) {
            const int g = oc / cout_g;
            const float *w = packed + (size_t)oc * cin_g * s->k_h * s->k_w;
            const float *xg = x + b * x_img + (size_t)g * cin_g * s->h_in * s->w_in;
            float *yc = pool || pool3 ? y + b * p_img + oc * p_plane : y + b * y_img + oc * y_plane;
            if (pool3)
                for (size_t i = 0; i < p_plane; i++) yc[i] = -INFINITY;
            const float *rc = ep->residual ? ep->residual + b * y_img + oc * y_plane : NULL;
            for (int oh = 0; oh < h_out; oh++)
                for (int ow = 0; ow < w_out; ow++) {
                    double acc = 0.0;
                    for (int ic = 0; ic < cin_g; ic++)
                        for (int kh = 0; kh < s->k_h; kh++) {
                            int ih = kiln__win_start(oh, s->stride_h, s->pad_t) + kh * s->dil_h;
                            if (ih < 0 || ih >= s->h_in) continue;
                            for (int kw = 0; kw < s->k_w; kw++) {
                                int iw = kiln__win_start(ow, s->stride_w, s->pad_l) + kw * s->dil_w;
                                if (iw < 0 || iw >= s->w_in) continue;
                                acc += (double)xg[((size_t)ic * s->h_in + ih) * s->w_in + iw] *
                                       w[(ic * s->k_h + kh) * s->k_w + kw];
                            }
                        }
                    if (ep->bias) acc += ep->bias[oc];
                    size_t i = (size_t)oh * w_out + ow;
                    if (rc) acc += rc[i];
                    const float v = kiln__act1((float)acc, ep->act, ep->alpha, ep->lo, ep->hi);
                    if (pool3) {
                        /* the windows 2 po - 1 .. 2 po + 1 that hold (oh, ow) */
                        for (int po = oh / 2; po <= (oh + 1) / 2 && po < p3_h; po++)
                            for (int pw = ow / 2; pw <= (ow + 1) / 2 && pw < p3_w; pw++) {
                                float *p = yc + (size_t)po * p3_w + pw;
                                if (v > *p) *p = v;
                            }
                    } else if (pool) {
                        float *p = yc + (size_t)(oh / 2) * (w_out / 2) + ow / 2;
                        if ((oh % 2 == 0 && ow % 2 == 0) || v > *p) *p = v;
                    } else {
                        yc[i] = v;
                    }
                }
        }
    return KILN_OK;
}

kiln_status kiln__ref_dense(const kiln_dense_shape *s, const float *x, const float *packed,
                            const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    (void)workspace;
    (void)threads;
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    for (int b = 0; b < s->batch; b++)
        for (int o = 0; o < s->out; o++) {
            const float *w = packed + (size_t)o * s->in;
            const float *xb = x + (size_t)b * s->in;
            double acc = 0.0;
            for (int i = 0; i < s->in; i++) acc += (double)xb[i] * w[i];
            if (ep->bias) acc += ep->bias[o];
            size_t i = (size_t)b * s->out + o;
            if (ep->residual) acc += ep->residual[i];
            y[i] = kiln__act1((float)acc, ep->act, ep->alpha, ep->lo, ep->hi);
        }
    return KILN_OK;
}
