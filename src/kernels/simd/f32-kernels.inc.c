/*
 * The SIMD kernel table, written once against a small vector vocabulary
 * (vf, VW lanes, V_* macros, v_pow2n/v_hsum/v_hmax/v_load_even) and
 * compiled once per ISA: x86/f32-avx2.c, x86/f32-avx512.c and
 * arm/f32-neon.c each include their vec-*.h and then this file, inside
 * their own static library with their own -m flags.
 *
 * Every function matches the ref kernel of the same name (internal.h);
 * lanes that do not fill a register take the scalar path, with the same
 * arithmetic as the vector lanes except expf (the vector exp is a degree-6
 * polynomial, relative error about 2e-7).
 *
 * All of these run on the calling thread: only the GEMM paths use more
 * than one (OpenBLAS's), so `threads` is ignored here.
 *
 * The conv paths live in files of their own, included below in the order
 * they need each other: f32-gemm.inc.c, f32-depthwise.inc.c,
 * f32-winograd.inc.c, f32-direct.inc.c.
 */
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* ---- activation and epilogue ---------------------------------------------- */

/* exp(x), Cephes' expf polynomial with a range reduction by ln 2. */
static inline vf v_exp(vf x)
{
    x = V_MIN(V_MAX(x, V_SET1(-87.3f)), V_SET1(88.3f));
    vf n = V_ROUND(V_MUL(x, V_SET1(1.44269504088896341f)));
    vf r = V_FMA(n, V_SET1(-0.693359375f), x);
    r = V_FMA(n, V_SET1(2.12194440e-4f), r);
    vf p = V_SET1(1.9875691500e-4f);
    p = V_FMA(p, r, V_SET1(1.3981999507e-3f));
    p = V_FMA(p, r, V_SET1(8.3334519073e-3f));
    p = V_FMA(p, r, V_SET1(4.1665795894e-2f));
    p = V_FMA(p, r, V_SET1(1.6666665459e-1f));
    p = V_FMA(p, r, V_SET1(5.0000001201e-1f));
    vf e = V_FMA(p, V_MUL(r, r), V_ADD(r, V_SET1(1.0f)));
    return V_MUL(e, v_pow2n(n));
}

static inline vf v_act(vf v, kiln_act act, vf alpha, vf lo, vf hi)
{
    switch (act) {
    case KILN_ACT_RELU:
        return V_MAX(v, V_ZERO());
    case KILN_ACT_CLIP:
        return V_MIN(V_MAX(v, lo), hi);
    case KILN_ACT_LEAKY_RELU: /* max(v, 0) + alpha * min(v, 0): exact either side */
        return V_FMA(alpha, V_MIN(v, V_ZERO()), V_MAX(v, V_ZERO()));
    case KILN_ACT_SIGMOID:
        return V_DIV(V_SET1(1.0f), V_ADD(V_SET1(1.0f), v_exp(V_SUB(V_ZERO(), v))));
    default:
        return v;
    }
}

/* Stores the first n (< VW) lanes of v: a row's tail (a masked store
 * where the ISA has one: vec-avx512.h's V_STOREU_PART). */
static inline void v_store_part(float *p, vf v, int n)
{
#ifdef V_STOREU_PART
    V_STOREU_PART(p, v, n);
#else
    float t[VW];
    V_STOREU(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
#endif
}

/* One loop per (residual, bias_vec) combination so the hot loop has no
 * branches but the activation switch, which the compiler unswitches. */
#define ACT_ROW_LOOP(EXTRA_V, EXTRA_S)                            \
    do {                                                          \
        for (; i + VW <= n; i += VW) {                            \
            vf v = V_ADD(V_LOADU(x + i), vb);                     \
            v = EXTRA_V;                                          \
            V_STOREU(y + i, v_act(v, act, va, vlo, vhi));         \
        }                                                         \
        for (; i < n; i++) {                                      \
            float v = x[i] + bias;                                \
            v = EXTRA_S;                                          \
            y[i] = kiln__act1(v, act, ep->alpha, ep->lo, ep->hi); \
        }                                                         \
    } while (0)

static void act_row(size_t n, const float *x, float bias, const float *bias_vec, const float *res,
                    const kiln_epilogue *ep, float *y)
{
    const kiln_act act = ep->act;
    const vf vb = V_SET1(bias), va = V_SET1(ep->alpha), vlo = V_SET1(ep->lo), vhi = V_SET1(ep->hi);
    size_t i = 0;
    if (res && bias_vec)
        ACT_ROW_LOOP(V_ADD(V_ADD(v, V_LOADU(bias_vec + i)), V_LOADU(res + i)),
                     v + bias_vec[i] + res[i]);
    else if (res)
        ACT_ROW_LOOP(V_ADD(v, V_LOADU(res + i)), v + res[i]);
    else if (bias_vec)
        ACT_ROW_LOOP(V_ADD(v, V_LOADU(bias_vec + i)), v + bias_vec[i]);
    else
        ACT_ROW_LOOP(v, v);
}

#include "f32-gemm.inc.c"

static void activation(size_t count, const float *x, float *y, kiln_act act, float alpha, float lo,
                       float hi)
{
    kiln_epilogue ep = {.act = act, .alpha = alpha, .lo = lo, .hi = hi};
    act_row(count, x, 0.0f, NULL, NULL, &ep, y);
}

static void epilogue_apply(int n, int c, size_t hw, const float *x, const kiln_epilogue *ep,
                           float *y)
{
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++) {
            size_t base = ((size_t)b * c + ch) * hw;
            act_row(hw, x + base, ep->bias ? ep->bias[ch] : 0.0f, NULL,
                    ep->residual ? ep->residual + base : NULL, ep, y + base);
        }
}

static void add(size_t count, const float *a, const float *b, float *y)
{
    size_t i = 0;
    for (; i + VW <= count; i += VW) V_STOREU(y + i, V_ADD(V_LOADU(a + i), V_LOADU(b + i)));
    for (; i < count; i++) y[i] = a[i] + b[i];
}

static void batchnorm(int n, int c, size_t hw, const float *x, const float *scale,
                      const float *shift, float *y)
{
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++) {
            size_t base = ((size_t)b * c + ch) * hw, i = 0;
            const vf vs = V_SET1(scale[ch]), vt = V_SET1(shift[ch]);
            for (; i + VW <= hw; i += VW)
                V_STOREU(y + base + i, V_FMA(V_LOADU(x + base + i), vs, vt));
            for (; i < hw; i++) y[base + i] = x[base + i] * scale[ch] + shift[ch];
        }
}

/* ---- softmax ---------------------------------------------------------------- */

static void softmax_row(size_t n, const float *x, float *y)
{
    size_t i = 0;
    float m = -INFINITY;
    if (n >= VW) {
        vf vm = V_LOADU(x);
        for (i = VW; i + VW <= n; i += VW) vm = V_MAX(vm, V_LOADU(x + i));
        m = v_hmax(vm);
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    const vf vmax = V_SET1(m);
    vf vs = V_ZERO();
    float sum = 0.0f;
    for (i = 0; i + VW <= n; i += VW) {
        vf e = v_exp(V_SUB(V_LOADU(x + i), vmax));
        V_STOREU(y + i, e);
        vs = V_ADD(vs, e);
    }
    for (; i < n; i++) {
        y[i] = expf(x[i] - m);
        sum += y[i];
    }
    sum += v_hsum(vs);
    const float inv = 1.0f / sum;
    const vf vinv = V_SET1(inv);
    for (i = 0; i + VW <= n; i += VW) V_STOREU(y + i, V_MUL(V_LOADU(y + i), vinv));
    for (; i < n; i++) y[i] *= inv;
}

static void softmax(size_t outer, size_t axis, size_t inner, const float *x, float *y)
{
    if (inner == 1) {
        for (size_t o = 0; o < outer; o++) softmax_row(axis, x + o * axis, y + o * axis);
        return;
    }
    /* Strided axis: VW independent softmaxes side by side, one per lane. */
    for (size_t o = 0; o < outer; o++) {
        const float *xo = x + o * axis * inner;
        float *yo = y + o * axis * inner;
        size_t j = 0;
        for (; j + VW <= inner; j += VW) {
            vf m = V_LOADU(xo + j);
            for (size_t a = 1; a < axis; a++) m = V_MAX(m, V_LOADU(xo + a * inner + j));
            vf sum = V_ZERO();
            for (size_t a = 0; a < axis; a++) {
                vf e = v_exp(V_SUB(V_LOADU(xo + a * inner + j), m));
                V_STOREU(yo + a * inner + j, e);
                sum = V_ADD(sum, e);
            }
            vf inv = V_DIV(V_SET1(1.0f), sum);
            for (size_t a = 0; a < axis; a++)
                V_STOREU(yo + a * inner + j, V_MUL(V_LOADU(yo + a * inner + j), inv));
        }
        for (; j < inner; j++) {
            float m = -INFINITY, sum = 0.0f;
            for (size_t a = 0; a < axis; a++) m = xo[a * inner + j] > m ? xo[a * inner + j] : m;
            for (size_t a = 0; a < axis; a++) {
                yo[a * inner + j] = expf(xo[a * inner + j] - m);
                sum += yo[a * inner + j];
            }
            for (size_t a = 0; a < axis; a++) yo[a * inner + j] /= sum;
        }
    }
}

/* ---- pooling ---------------------------------------------------------------- */

#include "f32-pool.inc.c"

#include "f32-depthwise.inc.c"

#include "f32-winograd.inc.c"

static const kiln__conv_ops conv_ops = {.act_row = act_row,
                                        .depthwise = depthwise,
                                        .winograd = winograd,
                                        .gemm = gemm,
                                        .gemm_nr = GEMM_NR};

#include "f32-direct.inc.c"

#include "f32-gemm-t.inc.c"

#include "f32-stem.inc.c"

#include "f32-winograd-t.inc.c"

/* A 1x1/1 conv reads B straight from its NCHW input: row k of B is input
 * plane k, so a panel is GEMM_NR columns of each plane, b_step = the
 * plane's size apart. Only the last, partial panel (28x28: 16 of 784
 * columns) is packed, into the workspace; that spares a write and a read
 * of B and, on two threads, B's panels crossing from the core that packed
 * them to the one that multiplies them. Measured (kiln bench kernels,
 * 2026-12-05, Zen 5): 1x1 256->64 @56 0.67 -> 0.53 ms on 1 thread,
 * 0.51 -> 0.29 on 2. */
static int pointwise_unpacked_ok(const kiln_conv2d_shape *s, int h_out, int w_out)
{
    return s->groups == 1 && kiln__conv2d_is_pointwise(s) && kiln__conv2d_is_gemm(s) &&
           h_out * w_out >= GEMM_NR;
}

static void conv2d_pointwise_unpacked(const kiln_conv2d_shape *s, int N, const float *x,
                                      const float *packed, const kiln_epilogue *ep, float *y,
                                      float *ws, int threads)
{
    const int has_ep = ep->bias || ep->residual || ep->act != KILN_ACT_NONE;
    const size_t x_img = (size_t)s->c_in * N, y_img = (size_t)s->c_out * N;
    const int n_full = N / GEMM_NR * GEMM_NR, K = s->c_in;
    const float *Ap = kiln__conv2d_gemm_a(s, packed, 0);
    for (int b = 0; b < s->n; b++) {
        const float *xb = x + b * x_img, *res = ep->residual ? ep->residual + b * y_img : NULL;
        gemm_job j = {.M = s->c_out,
                      .N = n_full,
                      .K = K,
                      .Ap = Ap,
                      .Bp = xb,
                      .C = y + b * y_img,
                      .ldc = (size_t)N,
                      .bias = ep->bias,
                      .res = res,
                      .ep = has_ep ? ep : NULL,
                      .b_step = N,
                      .pf_next = 1};
        gemm_run(&j, threads);
        if (n_full == N) continue;
        kiln__pack_b_rows(xb + n_full, (size_t)N, (size_t)(N - n_full), K, 0, K, GEMM_NR, ws);
        gemm_job t = {.M = s->c_out,
                      .N = N - n_full,
                      .K = K,
                      .Ap = Ap,
                      .Bp = ws,
                      .C = y + b * y_img + n_full,
                      .ldc = (size_t)N,
                      .bias = ep->bias,
                      .res = res ? res + n_full : NULL,
                      .ep = has_ep ? ep : NULL,
                      .split_small = 1};
        gemm_run(&t, threads);
    }
}

/* A 1x1 conv with strides and no padding (ResNet50's downsampling
 * shortcuts, 1x1/2) is a pointwise conv on its input subsampled: each
 * image's input is subsampled once into a contiguous [c_in][h_out*w_out]
 * in the workspace, which conv2d_pointwise_unpacked() then reads as B
 * (the panels packed from the padded planes before held the same
 * values). */
static int pointwise_strided_ok(const kiln_conv2d_shape *s, int h_out, int w_out)
{
    return s->groups == 1 && s->k_h == 1 && s->k_w == 1 && !kiln__conv2d_is_pointwise(s) &&
           (s->pad_t | s->pad_l | s->pad_b | s->pad_r) == 0 && kiln__conv2d_is_gemm(s) &&
           h_out * w_out >= GEMM_NR;
}

typedef struct subsample_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out;
    const float *x; /* one image */
    float *xs;      /* its subsampled planes */
} subsample_job;

/* The subsampled planes of input channels [begin, end). */
static void subsample_range(void *ctx, size_t begin, size_t end)
{
    const subsample_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const size_t plane = (size_t)s->h_in * s->w_in, n = (size_t)j->h_out * j->w_out;
    for (size_t ic = begin; ic < end; ic++)
        for (int oh = 0; oh < j->h_out; oh++) {
            const float *src = j->x + ic * plane + (size_t)oh * s->stride_h * s->w_in;
            float *dst = j->xs + ic * n + (size_t)oh * j->w_out;
            if (s->stride_w == 2) /* a constant stride, which the compiler vectorizes */
                for (int ow = 0; ow < j->w_out; ow++) dst[ow] = src[2 * ow];
            else
                for (int ow = 0; ow < j->w_out; ow++) dst[ow] = src[(size_t)ow * s->stride_w];
        }
}

static void conv2d_pointwise_strided(const kiln_conv2d_shape *s, int h_out, int w_out,
                                     const float *x, const float *packed, const kiln_epilogue *ep,
                                     float *y, float *ws, int threads)
{
    const size_t N = (size_t)h_out * w_out, x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t y_img = (size_t)s->c_out * N, align = KILN_ALIGN / sizeof(float);
    float *xs = ws, *rest = ws + ((size_t)s->c_in * N + align - 1) / align * align;
    /* the same conv, stride 1 on the subsampled planes, one image at a time */
    kiln_conv2d_shape s1 = *s;
    s1.n = 1;
    s1.h_in = h_out;
    s1.w_in = w_out;
    s1.stride_h = s1.stride_w = 1;
    for (int b = 0; b < s->n; b++) {
        subsample_job sj = {s, h_out, w_out, x + b * x_img, xs};
        kiln__parallel_for((size_t)s->c_in * N < (1u << 16) ? 1 : threads, (size_t)s->c_in,
                           subsample_range, &sj);
        kiln_epilogue eb = *ep;
        if (ep->residual) eb.residual = ep->residual + b * y_img;
        conv2d_pointwise_unpacked(&s1, (int)N, xs, packed, &eb, y + b * y_img, rest, threads);
    }
}

/* kiln_epilogue.pool2 is taken by the paths that store a block of output
 * planes from L1: the direct conv (at most DC_POOL_MAX floats a block) and
 * the turned-around GEMM and Winograd (their store pass,
 * gemm_t_store_range()); so the conv's output never goes to memory
 * unpooled. The checks follow conv2d()'s order of paths, whatever the
 * workspace. */
static int conv2d_pool2_ok(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK || h_out % 2 || w_out % 2) return 0;
    const int direct_fits_pool = h_out * w_out <= DC_POOL_MAX / DC_OB;
    /* F(4x4)'s planes are larger than the pooled store holds */
    if (kiln__conv2d_is_winograd_t(s)) return kiln__winograd_t_m(s) == 2;
    if (direct_rows_ok(s, h_out, w_out)) return direct_fits_pool;
    if (kiln__conv2d_is_gemm_t(s)) return 1;
    if (pointwise_unpacked_ok(s, h_out, w_out) || pointwise_strided_ok(s, h_out, w_out)) return 0;
    return direct_fits_pool && direct_ok(s, w_out);
}

/* kiln_epilogue.pool3 is taken by the stride-2 direct conv (a network's
 * stem: ResNet's 7x7/2 and its 3x3/2 max pool), which computes a pool
 * window's conv rows into L1 (dc2_pool3_rows()). The checks follow
 * conv2d()'s order of paths, so the fused conv runs the unfused one's. */
static int conv2d_pool3_ok(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK || w_out > DC2_POOL_W_MAX) return 0;
    if (kiln__conv2d_is_winograd_t(s) || direct_rows_ok(s, h_out, w_out) ||
        kiln__conv2d_is_gemm_t(s) || pointwise_unpacked_ok(s, h_out, w_out) ||
        pointwise_strided_ok(s, h_out, w_out) || direct_ok(s, w_out))
        return 0;
    return direct2_ok(s, h_out, w_out);
}

static kiln_status conv2d(const kiln_conv2d_shape *s, const float *x, const float *packed,
                          const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    int h_out, w_out;
    kiln_status st = kiln_conv2d_out_hw(s, &h_out, &w_out);
    if (st != KILN_OK) return st;
    /* every path below reads the epilogue's fields: none is all zeros */
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    /* pool2 goes down the path conv2d_pool2_ok() found below */
    if (ep->pool2 && (!conv2d_pool2_ok(s) || ep->residual || ep->pool3))
        return KILN_ERR_INVALID_ARG;
    if (ep->pool3) {
        if (!conv2d_pool3_ok(s) || ep->residual || !workspace) return KILN_ERR_INVALID_ARG;
        conv2d_stride2_few(s, h_out, w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    if (kiln__conv2d_is_winograd_t(s)) {
        if (!workspace) return KILN_ERR_INVALID_ARG;
        conv2d_winograd_t(s, h_out, w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    if (direct_rows_ok(s, h_out, w_out)) {
        conv2d_direct(s, h_out, w_out, x, packed, ep, y, threads);
        return KILN_OK;
    }
    if (kiln__conv2d_is_gemm_t(s)) {
        if (!workspace) return KILN_ERR_INVALID_ARG;
        conv2d_gemm_t(s, h_out, w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    if (pointwise_unpacked_ok(s, h_out, w_out) && workspace) {
        conv2d_pointwise_unpacked(s, h_out * w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    if (pointwise_strided_ok(s, h_out, w_out) && workspace) {
        conv2d_pointwise_strided(s, h_out, w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    if (direct_ok(s, w_out)) {
        /* packed starts with the weights in ONNX order (kernels.c) */
        conv2d_direct(s, h_out, w_out, x, packed, ep, y, threads);
        return KILN_OK;
    }
    if (workspace && direct2_ok(s, h_out, w_out)) {
        conv2d_stride2_few(s, h_out, w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    if (workspace && pack_fused_ok(s, h_out, w_out)) {
        conv2d_fused_gemm(s, h_out, w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    if (workspace && pack_padded_ok(s, h_out, w_out)) {
        conv2d_padded_gemm(s, h_out, w_out, x, packed, ep, y, workspace, threads);
        return KILN_OK;
    }
    return kiln__conv2d_gemm(s, x, packed, ep, y, workspace, threads, &conv_ops);
}

/* conv2d() takes a 1x1 conv to one of these three (given a workspace),
 * each of which adds a tile's or a row's residual as it stores it, element
 * by element (gemm_store_row(), act_row()); the others may not (the direct
 * conv stores a row's last vector whole into the next row, the OpenBLAS
 * path writes all of y before it adds the residual). */
static int conv2d_residual_in_place_ok(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK || s->k_h != 1 || s->k_w != 1) return 0;
    return kiln__conv2d_is_gemm_t(s) || pointwise_unpacked_ok(s, h_out, w_out) ||
           pointwise_strided_ok(s, h_out, w_out);
}

/* ---- dense ------------------------------------------------------------------ */

#include "f32-dense.inc.c"

const kiln_kernels KSIMD_TABLE = {
    .isa = KSIMD_ISA,
    .conv2d = conv2d,
    .conv2d_pool2_ok = conv2d_pool2_ok,
    .conv2d_pool3_ok = conv2d_pool3_ok,
    .conv2d_residual_in_place_ok = conv2d_residual_in_place_ok,
    .dense = dense,
    .maxpool2d = maxpool2d,
    .avgpool2d = avgpool2d,
    .global_avgpool = global_avgpool,
    .global_maxpool = global_maxpool,
    .activation = activation,
    .epilogue_apply = epilogue_apply,
    .add = add,
    .softmax = softmax,
    .batchnorm = batchnorm,
    .concat_channels = kiln__ref_concat_channels,
};

/* ---- peak ------------------------------------------------------------------- */

/* `iters` rounds of 12 independent FMAs (enough in flight to cover the
 * latency on every core kiln targets); returns the flops done. */
double KSIMD_FMA_LOOP(long iters)
{
    vf a[12];
    for (int k = 0; k < 12; k++) a[k] = V_SET1(1.0f + k * 1e-3f);
    const vf m = V_SET1(0.9999999f), c = V_SET1(1e-7f);
    for (long i = 0; i < iters; i++) {
        a[0] = V_FMA(a[0], m, c);
        a[1] = V_FMA(a[1], m, c);
        a[2] = V_FMA(a[2], m, c);
        a[3] = V_FMA(a[3], m, c);
        a[4] = V_FMA(a[4], m, c);
        a[5] = V_FMA(a[5], m, c);
        a[6] = V_FMA(a[6], m, c);
        a[7] = V_FMA(a[7], m, c);
        a[8] = V_FMA(a[8], m, c);
        a[9] = V_FMA(a[9], m, c);
        a[10] = V_FMA(a[10], m, c);
        a[11] = V_FMA(a[11], m, c);
    }
    vf s = a[0];
    for (int k = 1; k < 12; k++) s = V_ADD(s, a[k]);
    volatile float sink = v_hsum(s);
    (void)sink;
    return (double)iters * 12 * 2 * VW;
}
