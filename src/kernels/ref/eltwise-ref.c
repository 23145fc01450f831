/* Reference element-wise kernels: activations, epilogue, add, softmax,
 * batch norm, concat. */
#include "internal.h"

#include <string.h>

void kiln__ref_activation(size_t count, const float *x, float *y, kiln_act act, float alpha,
                          float lo, float hi)
{
    for (size_t i = 0; i < count; i++) y[i] = kiln__act1(x[i], act, alpha, lo, hi);
}

void kiln__ref_epilogue_apply(int n, int c, size_t hw, const float *x, const kiln_epilogue *ep,
                              float *y)
{
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++) {
            size_t base = ((size_t)b * c + ch) * hw;
            float bias = ep->bias ? ep->bias[ch] : 0.0f;
            for (size_t i = 0; i < hw; i++) {
                float v = x[base + i] + bias;
                if (ep->residual) v += ep->residual[base + i];
                y[base + i] = kiln__act1(v, ep->act, ep->alpha, ep->lo, ep->hi);
            }
        }
}

void kiln__ref_add(size_t count, const float *a, const float *b, float *y)
{
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}

void kiln__ref_softmax(size_t outer, size_t axis, size_t inner, const float *x, float *y)
{
    for (size_t o = 0; o < outer; o++)
        for (size_t in = 0; in < inner; in++) {
            const float *xp = x + o * axis * inner + in;
            float *yp = y + o * axis * inner + in;
            float m = -INFINITY;
            for (size_t a = 0; a < axis; a++)
                if (xp[a * inner] > m) m = xp[a * inner];
            double sum = 0.0;
            for (size_t a = 0; a < axis; a++) {
                float e = expf(xp[a * inner] - m);
                yp[a * inner] = e;
                sum += e;
            }
            float inv = (float)(1.0 / sum);
            for (size_t a = 0; a < axis; a++) yp[a * inner] *= inv;
        }
}

void kiln__ref_batchnorm(int n, int c, size_t hw, const float *x, const float *scale,
                         const float *shift, float *y)
{
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++) {
            size_t base = ((size_t)b * c + ch) * hw;
            for (size_t i = 0; i < hw; i++) y[base + i] = x[base + i] * scale[ch] + shift[ch];
        }
}

void kiln__ref_concat_channels(int n, size_t hw, int n_inputs, const float *const *inputs,
                               const int *channels, float *y)
{
    for (int b = 0; b < n; b++)
        for (int i = 0; i < n_inputs; i++) {
            size_t len = (size_t)channels[i] * hw;
            memcpy(y, inputs[i] + b * len, len * sizeof(float));
            y += len;
        }
}

const kiln_kernels kiln__kernels_ref = {
    .isa = KILN_ISA_REF,
    .conv2d = kiln__ref_conv2d,
    .conv2d_pool2_ok = kiln__ref_conv2d_pool2_ok,
    .conv2d_pool3_ok = kiln__ref_conv2d_pool3_ok,
    .conv2d_residual_in_place_ok = kiln__ref_conv2d_residual_in_place_ok,
    .dense = kiln__ref_dense,
    .maxpool2d = kiln__ref_maxpool2d,
    .avgpool2d = kiln__ref_avgpool2d,
    .global_avgpool = kiln__ref_global_avgpool,
    .global_maxpool = kiln__ref_global_maxpool,
    .activation = kiln__ref_activation,
    .epilogue_apply = kiln__ref_epilogue_apply,
    .add = kiln__ref_add,
    .softmax = kiln__ref_softmax,
    .batchnorm = kiln__ref_batchnorm,
    .concat_channels = kiln__ref_concat_channels,
};
