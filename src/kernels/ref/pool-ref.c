/* Reference pooling: one window at a time, padding handled by bounds. */
#include "internal.h"

void kiln__ref_maxpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    (void)threads;
    int h_out, w_out;
    if (kiln_pool2d_out_hw(s, &h_out, &w_out) != KILN_OK) return;
    for (size_t p = 0; p < (size_t)s->n * s->c; p++) {
        const float *xp = x + p * s->h_in * s->w_in;
        float *yp = y + p * h_out * w_out;
        for (int oh = 0; oh < h_out; oh++)
            for (int ow = 0; ow < w_out; ow++) {
                float m = -INFINITY;
                for (int kh = 0; kh < s->k_h; kh++) {
                    int ih = kiln__win_start(oh, s->stride_h, s->pad_t) + kh * s->dil_h;
                    if (ih < 0 || ih >= s->h_in) continue;
                    for (int kw = 0; kw < s->k_w; kw++) {
                        int iw = kiln__win_start(ow, s->stride_w, s->pad_l) + kw * s->dil_w;
                        if (iw < 0 || iw >= s->w_in) continue;
                        float v = xp[(size_t)ih * s->w_in + iw];
                        if (v > m) m = v;
                    }
                }
                yp[(size_t)oh * w_out + ow] = m;
            }
    }
}

void kiln__ref_avgpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    (void)threads;
    int h_out, w_out;
    if (kiln_pool2d_out_hw(s, &h_out, &w_out) != KILN_OK) return;
    for (size_t p = 0; p < (size_t)s->n * s->c; p++) {
        const float *xp = x + p * s->h_in * s->w_in;
        float *yp = y + p * h_out * w_out;
        for (int oh = 0; oh < h_out; oh++)
            for (int ow = 0; ow < w_out; ow++) {
                double sum = 0.0;
                int taps = 0;
                for (int kh = 0; kh < s->k_h; kh++) {
                    int ih = kiln__win_start(oh, s->stride_h, s->pad_t) + kh * s->dil_h;
                    int h_in_pad = ih >= -s->pad_t && ih < s->h_in + s->pad_b;
                    for (int kw = 0; kw < s->k_w; kw++) {
                        int iw = kiln__win_start(ow, s->stride_w, s->pad_l) + kw * s->dil_w;
                        int w_in_pad = iw >= -s->pad_l && iw < s->w_in + s->pad_r;
                        int inside = ih >= 0 && ih < s->h_in && iw >= 0 && iw < s->w_in;
                        if (inside) sum += xp[(size_t)ih * s->w_in + iw];
                        if (s->count_include_pad ? h_in_pad && w_in_pad : inside) taps++;
                    }
                }
                yp[(size_t)oh * w_out + ow] = taps ? (float)(sum / taps) : 0.0f;
            }
    }
}

void kiln__ref_global_avgpool(int n, int c, size_t hw, const float *x, float *y)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        double sum = 0.0;
        for (size_t i = 0; i < hw; i++) sum += x[p * hw + i];
        y[p] = (float)(sum / (double)hw);
    }
}

void kiln__ref_global_maxpool(int n, int c, size_t hw, const float *x, float *y)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        float m = -INFINITY;
        for (size_t i = 0; i < hw; i++)
            if (x[p * hw + i] > m) m = x[p * hw + i];
        y[p] = m;
    }
}
