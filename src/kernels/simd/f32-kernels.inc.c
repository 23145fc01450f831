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
 */
#include "internal.h"

#include <cblas.h>
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

static void global_avgpool(int n, int c, size_t hw, const float *x, float *y)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        const float *xp = x + p * hw;
        vf acc = V_ZERO();
        size_t i = 0;
        for (; i + VW <= hw; i += VW) acc = V_ADD(acc, V_LOADU(xp + i));
        float sum = v_hsum(acc);
        for (; i < hw; i++) sum += xp[i];
        y[p] = sum / (float)hw;
    }
}

static void global_maxpool(int n, int c, size_t hw, const float *x, float *y)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        const float *xp = x + p * hw;
        float m = -INFINITY;
        size_t i = 0;
        if (hw >= VW) {
            vf vm = V_LOADU(xp);
            for (i = VW; i + VW <= hw; i += VW) vm = V_MAX(vm, V_LOADU(xp + i));
            m = v_hmax(vm);
        }
        for (; i < hw; i++) m = xp[i] > m ? xp[i] : m;
        y[p] = m;
    }
}

/* Widest input row the separable pooling path buffers on the stack;
 * wider rows take the ref kernel. */
#define POOL_ROW_MAX 4096

/* Max/avg pooling, separably: for each output row, reduce the window's
 * input rows into one row (contiguous, full vectors), then reduce each
 * window's columns of that row (vectors for strides 1 and 2). The window
 * is a rectangle, so the average's divisor is rows x columns counted. */
static void pool2d_planes(const kiln_pool2d_shape *s, const float *x, float *y, int is_max,
                          size_t p_begin, size_t p_end)
{
    int h_out, w_out;
    if (kiln_pool2d_out_hw(s, &h_out, &w_out) != KILN_OK) return;
    float row[POOL_ROW_MAX];
    const int W = s->w_in, sw = s->stride_w, dw = s->dil_w, kw_n = s->k_w;
    /* Output columns whose whole window lies inside [0, w_in). */
    int ow_lo = (s->pad_l + sw - 1) / sw;
    int span = W - 1 + s->pad_l - (kw_n - 1) * dw;
    int ow_hi = span < 0 ? 0 : span / sw + 1;
    if (ow_hi > w_out) ow_hi = w_out;
    if (ow_lo > ow_hi) ow_lo = ow_hi;
    for (size_t p = p_begin; p < p_end; p++) {
        const float *xp = x + p * s->h_in * W;
        float *yp = y + p * h_out * w_out;
        for (int oh = 0; oh < h_out; oh++) {
            int ih0 = oh * s->stride_h - s->pad_t, rows = 0, rows_pad = 0;
            for (int kh = 0; kh < s->k_h; kh++) {
                int ih = ih0 + kh * s->dil_h;
                if (ih >= -s->pad_t && ih < s->h_in + s->pad_b) rows_pad++;
                if (ih < 0 || ih >= s->h_in) continue;
                const float *xr = xp + (size_t)ih * W;
                int i = 0;
                if (rows == 0) {
                    memcpy(row, xr, sizeof(float) * W);
                } else if (is_max) {
                    for (; i + VW <= W; i += VW)
                        V_STOREU(row + i, V_MAX(V_LOADU(row + i), V_LOADU(xr + i)));
                    for (; i < W; i++) row[i] = xr[i] > row[i] ? xr[i] : row[i];
                } else {
                    for (; i + VW <= W; i += VW)
                        V_STOREU(row + i, V_ADD(V_LOADU(row + i), V_LOADU(xr + i)));
                    for (; i < W; i++) row[i] += xr[i];
                }
                rows++;
            }
            float *yr = yp + (size_t)oh * w_out;
            const int rows_div = s->count_include_pad ? rows_pad : rows;
            if (rows == 0) { /* the window covers padding only */
                for (int ow = 0; ow < w_out; ow++) yr[ow] = is_max ? -INFINITY : 0.0f;
                continue;
            }
            int ow = ow_lo;
            if (sw <= 2) {
                const vf vdiv = V_SET1(1.0f / (float)(rows_div * kw_n));
                /* stride 2 reads one element past the last window: stop one vector early */
                int end = sw == 1 ? ow_hi : ow_hi - 1;
                for (; ow + VW <= end; ow += VW) {
                    const float *base = row + ow * sw - s->pad_l;
                    vf acc = sw == 1 ? V_LOADU(base) : v_load_even(base);
                    for (int kw = 1; kw < kw_n; kw++) {
                        vf v = sw == 1 ? V_LOADU(base + kw * dw) : v_load_even(base + kw * dw);
                        acc = is_max ? V_MAX(acc, v) : V_ADD(acc, v);
                    }
                    V_STOREU(yr + ow, is_max ? acc : V_MUL(acc, vdiv));
                }
            }
            /* Everything else one window at a time: the edges, the vector
             * loop's tail, strides above 2. */
            for (int o = 0; o < w_out; o++) {
                if (o == ow_lo && ow > ow_lo) o = ow;
                if (o >= w_out) break;
                int iw0 = o * sw - s->pad_l, cols = 0, cols_pad = 0;
                float acc = is_max ? -INFINITY : 0.0f;
                for (int kw = 0; kw < kw_n; kw++) {
                    int iw = iw0 + kw * dw;
                    if (iw >= -s->pad_l && iw < W + s->pad_r) cols_pad++;
                    if (iw < 0 || iw >= W) continue;
                    acc = is_max ? (row[iw] > acc ? row[iw] : acc) : acc + row[iw];
                    cols++;
                }
                if (is_max)
                    yr[o] = acc;
                else {
                    int div = rows_div * (s->count_include_pad ? cols_pad : cols);
                    yr[o] = div ? acc / (float)div : 0.0f;
                }
            }
        }
    }
}

/* Floats of the vertical-reduction buffer of the 2x2/2 path. */
#define POOL2_BUF 4096

/* 2x2 windows, stride 2, no padding or dilation, even height and width
 * (LeNet's and the CIFAR-10 CNN's pools): the planes [p_begin, p_end) are
 * one run of row pairs. Each pair is reduced to one row of buf, row after
 * row; then output element q of the run is op(buf[2q], buf[2q + 1]), so
 * the horizontal step is a flat loop of full vectors however narrow the
 * planes are (16 or 8 columns: the general path's vectors never start
 * there). */
static int pool2x2_ok(const kiln_pool2d_shape *s)
{
    return s->k_h == 2 && s->k_w == 2 && s->stride_h == 2 && s->stride_w == 2 && s->dil_h == 1 &&
           s->dil_w == 1 && !s->pad_t && !s->pad_l && !s->pad_b && !s->pad_r && s->h_in % 2 == 0 &&
           s->w_in % 2 == 0 && s->w_in <= POOL2_BUF;
}

static void pool2x2_planes(const kiln_pool2d_shape *s, const float *x, float *y, int is_max,
                           size_t p_begin, size_t p_end)
{
    float buf[POOL2_BUF + 2 * VW];
    const size_t W = (size_t)s->w_in, pairs_per_buf = POOL2_BUF / W;
    size_t r = p_begin * (size_t)s->h_in / 2;
    const size_t r_end = p_end * (size_t)s->h_in / 2;
    const vf quarter = V_SET1(0.25f);
    /* v_load_even(buf + 2q + 1) of the last vector reads one float past
     * the run: keep it defined. */
    for (int i = 0; i < 2 * VW; i++) buf[POOL2_BUF + i] = 0.0f;
    while (r < r_end) {
        const size_t pairs = r_end - r < pairs_per_buf ? r_end - r : pairs_per_buf;
        for (size_t k = 0; k < pairs; k++) {
            const float *x0 = x + (r + k) * 2 * W, *x1 = x0 + W;
            float *b = buf + k * W;
            size_t i = 0;
            if (is_max) {
                for (; i + VW <= W; i += VW)
                    V_STOREU(b + i, V_MAX(V_LOADU(x0 + i), V_LOADU(x1 + i)));
                for (; i < W; i++) b[i] = x1[i] > x0[i] ? x1[i] : x0[i];
            } else {
                for (; i + VW <= W; i += VW)
                    V_STOREU(b + i, V_ADD(V_LOADU(x0 + i), V_LOADU(x1 + i)));
                for (; i < W; i++) b[i] = x0[i] + x1[i];
            }
        }
        const size_t n = pairs * W / 2;
        float *yr = y + r * W / 2;
        size_t q = 0;
        for (; q + VW <= n; q += VW) {
            vf e = v_load_even(buf + 2 * q), o = v_load_even(buf + 2 * q + 1);
            V_STOREU(yr + q, is_max ? V_MAX(e, o) : V_MUL(V_ADD(e, o), quarter));
        }
        for (; q < n; q++) {
            float e = buf[2 * q], o = buf[2 * q + 1];
            yr[q] = is_max ? (o > e ? o : e) : (e + o) * 0.25f;
        }
        r += pairs;
    }
}

typedef struct pool2d_job {
    const kiln_pool2d_shape *s;
    const float *x;
    float *y;
    int is_max;
} pool2d_job;

static void pool2d_range(void *ctx, size_t begin, size_t end)
{
    pool2d_job *j = ctx;
    (pool2x2_ok(j->s) ? pool2x2_planes : pool2d_planes)(j->s, j->x, j->y, j->is_max, begin, end);
}

/* Planes (image, channel) are independent: split them over threads when
 * there is enough work to pay for waking them. */
static void pool2d(const kiln_pool2d_shape *s, const float *x, float *y, int is_max, int threads)
{
    if (s->w_in > POOL_ROW_MAX) {
        (is_max ? kiln__ref_maxpool2d : kiln__ref_avgpool2d)(s, x, y, 1);
        return;
    }
    size_t planes = (size_t)s->n * s->c;
    size_t work = planes * s->h_in * s->w_in * s->k_h;
    pool2d_job j = {s, x, y, is_max};
    /* CIFAR-10 CNN's first pool (32 planes of 32x32, work 65,536) was
     * slower on two threads than on one. */
    kiln__parallel_for(work < (1 << 18) ? 1 : threads, planes, pool2d_range, &j);
}

static void maxpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    pool2d(s, x, y, 1, threads);
}

static void avgpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    pool2d(s, x, y, 0, threads);
}

/* ---- depthwise conv ------------------------------------------------------- */

/* One output row of one channel: all taps accumulated in registers, then
 * the epilogue on the row while it is in L1. Vectors over output columns
 * for strides 1 and 2 where the whole window is inside the row. */
static void dw_row(const kiln_conv2d_shape *s, int oh, int w_out, const float *xc, const float *w,
                   float *yr)
{
    const int W = s->w_in, sw = s->stride_w, dw = s->dil_w, kh_n = s->k_h, kw_n = s->k_w;
    int ow_lo = (s->pad_l + sw - 1) / sw;
    int span = W - 1 + s->pad_l - (kw_n - 1) * dw;
    int ow_hi = span < 0 ? 0 : span / sw + 1;
    if (ow_hi > w_out) ow_hi = w_out;
    if (ow_lo > ow_hi) ow_lo = ow_hi;
    const int ih0 = oh * s->stride_h - s->pad_t;
    int kh_lo = 0, kh_hi = kh_n;
    while (kh_lo < kh_n && ih0 + kh_lo * s->dil_h < 0) kh_lo++;
    while (kh_hi > kh_lo && ih0 + (kh_hi - 1) * s->dil_h >= s->h_in) kh_hi--;
    int ow = ow_lo;
    if (sw <= 2) {
        int end = sw == 1 ? ow_hi : ow_hi - 1;
        for (; ow + VW <= end; ow += VW) {
            vf acc = V_ZERO();
            for (int kh = kh_lo; kh < kh_hi; kh++) {
                const float *xr = xc + (size_t)(ih0 + kh * s->dil_h) * W + ow * sw - s->pad_l;
                const float *wr = w + kh * kw_n;
                for (int kw = 0; kw < kw_n; kw++) {
                    vf v = sw == 1 ? V_LOADU(xr + kw * dw) : v_load_even(xr + kw * dw);
                    acc = V_FMA(v, V_SET1(wr[kw]), acc);
                }
            }
            V_STOREU(yr + ow, acc);
        }
    }
    for (int o = 0; o < w_out; o++) {
        if (o == ow_lo && ow > ow_lo) o = ow;
        if (o >= w_out) break;
        int iw0 = o * sw - s->pad_l;
        float acc = 0.0f;
        for (int kh = kh_lo; kh < kh_hi; kh++) {
            const float *xr = xc + (size_t)(ih0 + kh * s->dil_h) * W;
            for (int kw = 0; kw < kw_n; kw++) {
                int iw = iw0 + kw * dw;
                if (iw >= 0 && iw < W) acc += xr[iw] * w[kh * kw_n + kw];
            }
        }
        yr[o] = acc;
    }
}

/* Padded row buffers of the depthwise path: k_h rows of this many floats. */
#define DW_ROW_MAX 1024
#define DW_KH_MAX  11

/* Whether the padded-row path takes this shape: strides 1 and 2 and rows
 * that fit the stack buffers. */
static int dw_padded_ok(const kiln_conv2d_shape *s, int w_out)
{
    int nvec = (w_out + VW - 1) / VW;
    long lp = (long)nvec * VW * s->stride_w + (long)(s->k_w - 1) * s->dil_w + 2;
    return s->stride_w <= 2 && s->k_h <= DW_KH_MAX && lp <= DW_ROW_MAX;
}

/* One output row from zero-padded copies of the input rows it reads, so
 * every output column, edges included, is a full vector; the epilogue runs
 * while the row is copied out of `tmp` into y. */
static void dw_row_padded(const kiln_conv2d_shape *s, int oh, int w_out, const float *xc,
                          const float *w, float bias, const float *res, const kiln_epilogue *ep,
                          float *yr)
{
    float pr[DW_KH_MAX][DW_ROW_MAX];
    float tmp[DW_ROW_MAX];
    const int sw = s->stride_w, dw = s->dil_w, kw_n = s->k_w, nvec = (w_out + VW - 1) / VW;
    const int L = nvec * VW * sw + (kw_n - 1) * dw + 2;
    const int ih0 = oh * s->stride_h - s->pad_t;
    int rows[DW_KH_MAX], n_rows = 0;
    for (int kh = 0; kh < s->k_h; kh++) {
        int ih = ih0 + kh * s->dil_h;
        if (ih < 0 || ih >= s->h_in) continue;
        float *row = pr[n_rows];
        int j0 = s->pad_l < L ? s->pad_l : L;
        int j1 = s->pad_l + s->w_in < L ? s->pad_l + s->w_in : L;
        memset(row, 0, sizeof(float) * j0);
        memcpy(row + j0, xc + (size_t)ih * s->w_in + (j0 - s->pad_l), sizeof(float) * (j1 - j0));
        memset(row + j1, 0, sizeof(float) * (L - j1));
        rows[n_rows++] = kh;
    }
    for (int v = 0; v < nvec; v++) {
        const int ow = v * VW;
        vf acc = V_ZERO();
        for (int r = 0; r < n_rows; r++) {
            const float *p = pr[r] + ow * sw, *wr = w + rows[r] * kw_n;
            if (sw == 1)
                for (int kw = 0; kw < kw_n; kw++)
                    acc = V_FMA(V_LOADU(p + kw * dw), V_SET1(wr[kw]), acc);
            else
                for (int kw = 0; kw < kw_n; kw++)
                    acc = V_FMA(v_load_even(p + kw * dw), V_SET1(wr[kw]), acc);
        }
        V_STOREU(tmp + ow, acc);
    }
    act_row((size_t)w_out, tmp, bias, NULL, res, ep, yr);
}

/* Floats of the stack buffer that holds a whole zero-padded input plane. */
#define DW_PLANE_MAX 16384

/* The padded-row path's row length for this shape. */
static int dw_row_len(const kiln_conv2d_shape *s, int w_out)
{
    return (w_out + VW - 1) / VW * VW * s->stride_w + (s->k_w - 1) * s->dil_w + 2;
}

/* A whole output plane from one zero-padded copy of its input plane: each
 * input row is copied once (not once per output row that reads it), which
 * is most of the cost on the small planes of a network's later layers. */
static void dw_plane_padded(const kiln_conv2d_shape *s, int h_out, int w_out, const float *xc,
                            const float *w, float bias, const float *res, const kiln_epilogue *ep,
                            float *yp)
{
    float pp[DW_PLANE_MAX];
    float tmp[DW_ROW_MAX];
    const int sw = s->stride_w, dw = s->dil_w, kw_n = s->k_w, nvec = (w_out + VW - 1) / VW;
    const int L = dw_row_len(s, w_out), H = s->h_in + s->pad_t + s->pad_b;
    const int j0 = s->pad_l < L ? s->pad_l : L;
    const int j1 = s->pad_l + s->w_in < L ? s->pad_l + s->w_in : L;
    /* One memset, then inline row copies: on 7x7 and 14x14 planes, a
     * library call per row costs more than the convolution. */
    memset(pp, 0, sizeof(float) * H * L);
    for (int ih = 0; ih < s->h_in; ih++) {
        float *row = pp + (size_t)(ih + s->pad_t) * L + j0;
        const float *src = xc + (size_t)ih * s->w_in + (j0 - s->pad_l);
        for (int i = 0; i < j1 - j0; i++) row[i] = src[i];
    }
    /* 3x3, stride 1, no dilation (most depthwise layers): the nine
     * weights stay in registers. */
    const int k3s1 =
        s->k_h == 3 && kw_n == 3 && sw == 1 && s->stride_h == 1 && dw == 1 && s->dil_h == 1;
    vf wv[9];
    for (int t = 0; t < 9; t++) wv[t] = V_SET1(k3s1 ? w[t] : 0.0f);
    for (int oh = 0; oh < h_out; oh++) {
        for (int v = 0; v < nvec; v++) {
            const int ow = v * VW;
            vf acc = V_ZERO();
            if (k3s1) {
                const float *p0 = pp + (size_t)oh * L + ow, *p1 = p0 + L, *p2 = p1 + L;
                acc = V_FMA(V_LOADU(p0), wv[0], acc);
                acc = V_FMA(V_LOADU(p0 + 1), wv[1], acc);
                acc = V_FMA(V_LOADU(p0 + 2), wv[2], acc);
                acc = V_FMA(V_LOADU(p1), wv[3], acc);
                acc = V_FMA(V_LOADU(p1 + 1), wv[4], acc);
                acc = V_FMA(V_LOADU(p1 + 2), wv[5], acc);
                acc = V_FMA(V_LOADU(p2), wv[6], acc);
                acc = V_FMA(V_LOADU(p2 + 1), wv[7], acc);
                acc = V_FMA(V_LOADU(p2 + 2), wv[8], acc);
            }
            for (int kh = 0; kh < (k3s1 ? 0 : s->k_h); kh++) {
                const float *p = pp + (size_t)(oh * s->stride_h + kh * s->dil_h) * L + ow * sw;
                const float *wr = w + kh * kw_n;
                if (sw == 1)
                    for (int kw = 0; kw < kw_n; kw++)
                        acc = V_FMA(V_LOADU(p + kw * dw), V_SET1(wr[kw]), acc);
                else
                    for (int kw = 0; kw < kw_n; kw++)
                        acc = V_FMA(v_load_even(p + kw * dw), V_SET1(wr[kw]), acc);
            }
            float *yr = yp + (size_t)oh * w_out;
            if (ow + VW <= w_out) {
                V_STOREU(yr + ow, acc);
            } else { /* the row's tail */
                V_STOREU(tmp, acc);
                for (int i = 0; i < w_out - ow; i++) yr[ow + i] = tmp[i];
            }
        }
    }
    /* The epilogue once over the plane, still in cache: one call, not one
     * per row. */
    if (bias != 0.0f || res || ep->act != KILN_ACT_NONE)
        act_row((size_t)h_out * w_out, yp, bias, NULL, res, ep, yp);
}

typedef struct dw_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out;
    const float *x, *w;
    const kiln_epilogue *ep;
    float *y;
} dw_job;

/* Output planes [begin, end) of the (image, channel) planes. */
static void depthwise_range(void *ctx, size_t begin, size_t end)
{
    const dw_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const kiln_epilogue *ep = j->ep;
    const int mult = s->c_out / s->groups, h_out = j->h_out, w_out = j->w_out;
    const float *x = j->x, *w = j->w;
    float *y = j->y;
    const size_t plane_in = (size_t)s->h_in * s->w_in, plane_out = (size_t)h_out * w_out;
    const size_t taps = (size_t)s->k_h * s->k_w;
    for (size_t p = begin; p < end; p++) {
        const int b = (int)(p / s->c_out), oc = (int)(p % s->c_out);
        const float *xc = x + ((size_t)b * s->c_in + oc / mult) * plane_in;
        size_t yoff = ((size_t)b * s->c_out + oc) * plane_out;
        const int padded = dw_padded_ok(s, w_out);
        if (padded &&
            (long)(s->h_in + s->pad_t + s->pad_b) * dw_row_len(s, w_out) <= DW_PLANE_MAX) {
            dw_plane_padded(s, h_out, w_out, xc, w + oc * taps, ep->bias ? ep->bias[oc] : 0.0f,
                            ep->residual ? ep->residual + yoff : NULL, ep, y + yoff);
            continue;
        }
        for (int oh = 0; oh < h_out; oh++) {
            float *yr = y + yoff + (size_t)oh * w_out;
            if (padded) {
                const float *res = ep->residual ? ep->residual + yoff + (size_t)oh * w_out : NULL;
                dw_row_padded(s, oh, w_out, xc, w + oc * taps, ep->bias ? ep->bias[oc] : 0.0f, res,
                              ep, yr);
                continue;
            }
            dw_row(s, oh, w_out, xc, w + oc * taps, yr);
            const float *res = ep->residual ? ep->residual + yoff + (size_t)oh * w_out : NULL;
            if (ep->bias || res || ep->act != KILN_ACT_NONE)
                act_row(w_out, yr, ep->bias ? ep->bias[oc] : 0.0f, NULL, res, ep, yr);
        }
    }
}

static void depthwise(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                      const float *w, const kiln_epilogue *ep, float *y, int threads)
{
    dw_job j = {s, h_out, w_out, x, w, ep, y};
    size_t planes = (size_t)s->n * s->c_out;
    size_t work = planes * h_out * w_out * s->k_h * s->k_w;
    kiln__parallel_for(work < 65536 ? 1 : threads, planes, depthwise_range, &j);
}

#include "f32-winograd.inc.c"

static const kiln__conv_ops conv_ops = {.act_row = act_row,
                                        .depthwise = depthwise,
                                        .winograd = winograd,
                                        .gemm = gemm,
                                        .gemm_nr = GEMM_NR};

/* ---- direct conv for a few input channels ------------------------------- */

/* A network's first conv (1 to 3 input channels: LeNet's and the MNIST
 * CNN's 1, the CIFAR-10 CNN's 3) has too short a GEMM depth K to repay
 * packing its im2col panels, and with one input channel the general code
 * takes it for a depthwise conv with a channel multiplier, which pads the
 * same input plane again for every output channel and loads one input
 * vector per FMA. Here the input planes are zero-padded once per image and
 * each input vector loaded feeds DC_OB output channels x 2 vectors of
 * output columns held in registers. Stride 1, no dilation, groups 1. */
#define DC_OB        8     /* output channels per block */
#define DC_CIN_MAX   3     /* most input channels taken here */
#define DC_K_MAX     11    /* largest kernel side */
#define DC_PLANE_MAX 16384 /* floats of the padded input planes (stack) */

/* Floats per padded input row: whole vectors of output columns plus the
 * kernel's reach. */
static int dc_row_len(const kiln_conv2d_shape *s, int w_out)
{
    return (w_out + VW - 1) / VW * VW + s->k_w - 1;
}

static int direct_ok(const kiln_conv2d_shape *s, int w_out)
{
    if (s->groups != 1 || s->c_in > DC_CIN_MAX || s->stride_h != 1 || s->stride_w != 1 ||
        s->dil_h != 1 || s->dil_w != 1 || s->k_h > DC_K_MAX || s->k_w > DC_K_MAX)
        return 0;
    long rows = (long)s->h_in + s->pad_t + s->pad_b;
    return (long)s->c_in * rows * dc_row_len(s, w_out) <= DC_PLANE_MAX;
}

typedef struct dc_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, n_blocks;
    const float *x, *w;
    const kiln_epilogue *ep;
    float *y;
} dc_job;

/* Output row oh of channels [oc0, oc0 + nb) for the column vectors
 * starting at ow (NV of them, 1 or 2), from the padded planes pp. */
#define DC_TILE(NV)                                                                           \
    do {                                                                                      \
        vf acc[NV][DC_OB];                                                                    \
        for (int v = 0; v < NV; v++)                                                          \
            for (int b = 0; b < DC_OB; b++) acc[v][b] = V_ZERO();                             \
        const float *wt = wb;                                                                 \
        for (int ic = 0; ic < s->c_in; ic++)                                                  \
            for (int kh = 0; kh < s->k_h; kh++) {                                             \
                const float *p = pp + ((size_t)ic * rows + oh + kh) * L + ow;                 \
                for (int kw = 0; kw < s->k_w; kw++, wt += DC_OB) {                            \
                    vf xv[NV];                                                                \
                    for (int v = 0; v < NV; v++) xv[v] = V_LOADU(p + kw + v * VW);            \
                    for (int b = 0; b < DC_OB; b++) {                                         \
                        const vf wv = V_SET1(wt[b]);                                          \
                        for (int v = 0; v < NV; v++) acc[v][b] = V_FMA(xv[v], wv, acc[v][b]); \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        for (int b = 0; b < nb; b++)                                                          \
            for (int v = 0; v < NV; v++)                                                      \
                dc_store(acc[v][b], ow + v * VW, w_out, h_out, yb + (size_t)b * plane_out,    \
                         res ? res + (size_t)b * plane_out : NULL, oh, bias[b], ep);          \
    } while (0)

/* One vector of an output row, the epilogue in registers. A row's last,
 * partial vector is stored whole too where the plane has room (its extra
 * lanes land in the plane's next rows, computed later, which overwrite
 * them); at the plane's end it goes through a buffer. */
static inline void dc_store(vf acc, int ow, int w_out, int h_out, float *yp, const float *rp,
                            int oh, float bias, const kiln_epilogue *ep)
{
    float *yr = yp + (size_t)oh * w_out + ow;
    const float *rr = rp ? rp + (size_t)oh * w_out + ow : NULL;
    const int n = w_out - ow < VW ? w_out - ow : VW;
    if (n <= 0) return;
    const int whole = (long)oh * w_out + ow + VW <= (long)h_out * w_out;
    float tmp[VW];
    vf v = V_ADD(acc, V_SET1(bias));
    if (rr && whole) {
        v = V_ADD(v, V_LOADU(rr));
    } else if (rr) {
        for (int i = 0; i < VW; i++) tmp[i] = i < n ? rr[i] : 0.0f;
        v = V_ADD(v, V_LOADU(tmp));
    }
    v = v_act(v, ep->act, V_SET1(ep->alpha), V_SET1(ep->lo), V_SET1(ep->hi));
    if (whole) {
        V_STOREU(yr, v);
    } else {
        V_STOREU(tmp, v);
        for (int i = 0; i < n; i++) yr[i] = tmp[i];
    }
}

/* Blocks [begin, end) of (image, DC_OB output channels). */
static void direct_range(void *ctx, size_t begin, size_t end)
{
    const dc_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const kiln_epilogue *ep = j->ep;
    const int h_out = j->h_out, w_out = j->w_out, L = dc_row_len(s, w_out);
    const int rows = s->h_in + s->pad_t + s->pad_b, K = s->c_in * s->k_h * s->k_w;
    const size_t plane_in = (size_t)s->h_in * s->w_in, plane_out = (size_t)h_out * w_out;
    float pp[DC_PLANE_MAX];
    float wb[DC_CIN_MAX * DC_K_MAX * DC_K_MAX * DC_OB];
    int padded = -1; /* the image pp holds */
    for (size_t blk = begin; blk < end; blk++) {
        const int img = (int)(blk / (size_t)j->n_blocks);
        const int oc0 = (int)(blk % (size_t)j->n_blocks) * DC_OB;
        const int nb = s->c_out - oc0 < DC_OB ? s->c_out - oc0 : DC_OB;
        if (img != padded) {
            const int j0 = s->pad_l, j1 = s->pad_l + s->w_in;
            memset(pp, 0, sizeof(float) * (size_t)s->c_in * rows * L);
            for (int ic = 0; ic < s->c_in; ic++) {
                const float *xc = j->x + ((size_t)img * s->c_in + ic) * plane_in;
                for (int ih = 0; ih < s->h_in; ih++) {
                    float *row = pp + ((size_t)ic * rows + ih + s->pad_t) * L;
                    for (int i = j0; i < j1; i++) row[i] = xc[(size_t)ih * s->w_in + i - j0];
                }
            }
            padded = img;
        }
        /* The block's weights tap-major, DC_OB per tap (zeros past c_out). */
        for (int t = 0; t < K; t++)
            for (int b = 0; b < DC_OB; b++)
                wb[t * DC_OB + b] = b < nb ? j->w[(size_t)(oc0 + b) * K + t] : 0.0f;
        float bias[DC_OB];
        for (int b = 0; b < DC_OB; b++) bias[b] = ep->bias && b < nb ? ep->bias[oc0 + b] : 0.0f;
        const size_t yoff = ((size_t)img * s->c_out + oc0) * plane_out;
        float *yb = j->y + yoff;
        const float *res = ep->residual ? ep->residual + yoff : NULL;
        for (int oh = 0; oh < h_out; oh++) {
            int ow = 0;
            for (; ow + VW < w_out; ow += 2 * VW) DC_TILE(2);
            for (; ow < w_out; ow += VW) DC_TILE(1);
        }
    }
}

static void conv2d_direct(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                          const float *w, const kiln_epilogue *ep, float *y, int threads)
{
    const int n_blocks = (s->c_out + DC_OB - 1) / DC_OB;
    dc_job j = {s, h_out, w_out, n_blocks, x, w, ep, y};
    size_t macs = (size_t)s->n * s->c_out * h_out * w_out * s->c_in * s->k_h * s->k_w;
    /* Under about 4M multiply-adds (all three small nets' first convs) a
     * second thread costs more to wake than it saves. */
    kiln__parallel_for(macs < (1u << 22) ? 1 : threads, (size_t)s->n * n_blocks, direct_range, &j);
}

/* ---- GEMM convs at strides 1 and 2: packing B from padded planes ------- */

/* The GEMM's B for a conv is its im2col matrix, row k = (ic, kh, kw), in
 * panels of GEMM_NR columns. Without dilation, row k is input plane ic,
 * zero-padded, read from (kh, kw) with the conv's strides: so each plane
 * is padded once, each row is assembled contiguously with whole-vector
 * copies (stride-2 loads across) of output rows (a vector that runs past
 * an output row is overwritten by the next one), then stored to its panels
 * a vector at a time. The general packer (kiln__pack_b_conv) copies every
 * output row's inside part and edges into each panel separately: on
 * LeNet's conv2 (K 800, 14x14 outputs) that was as slow as the GEMM itself;
 * ResNet50's 3x3/2 layers gain 10-18%. Same B, so the same results. */
#define PK_PLANE_MAX 8192 /* floats of one padded input plane (stack) */
#define PK_ROW_MAX   8192 /* floats of one assembled row of B (stack) */

static int pack_padded_ok(const kiln_conv2d_shape *s, int h_out, int w_out)
{
    if (s->groups != 1 || s->stride_w > 2 || s->dil_h != 1 || s->dil_w != 1 ||
        kiln__conv2d_is_pointwise(s) || !kiln__conv2d_is_gemm(s) || kiln__conv2d_is_winograd(s))
        return 0;
    long plane = ((long)s->h_in + s->pad_t + s->pad_b) * (s->w_in + s->pad_l + s->pad_r);
    long row = (long)h_out * w_out;
    return plane + 2 * VW <= PK_PLANE_MAX && row + GEMM_NR + VW <= PK_ROW_MAX;
}

typedef struct pk_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out;
    const float *x; /* one image */
    float *Bp;
} pk_job;

/* Rows of B for input channels [begin, end). */
static void pack_padded_range(void *ctx, size_t begin, size_t end)
{
    const pk_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const int h_out = j->h_out, w_out = j->w_out, K = s->c_in * s->k_h * s->k_w;
    const int L = s->w_in + s->pad_l + s->pad_r, rows = s->h_in + s->pad_t + s->pad_b;
    const size_t N = (size_t)h_out * w_out, n_panels = (N + GEMM_NR - 1) / GEMM_NR;
    float pp[PK_PLANE_MAX], row[PK_ROW_MAX];
    for (size_t ic = begin; ic < end; ic++) {
        /* the slack after the plane: the last output row's vectors read it */
        memset(pp, 0, sizeof(float) * ((size_t)rows * L + 2 * VW));
        const float *xc = j->x + ic * s->h_in * s->w_in;
        for (int ih = 0; ih < s->h_in; ih++) {
            float *dst = pp + (size_t)(ih + s->pad_t) * L + s->pad_l;
            const float *src = xc + (size_t)ih * s->w_in;
            for (int i = 0; i < s->w_in; i++) dst[i] = src[i];
        }
        for (int kh = 0; kh < s->k_h; kh++)
            for (int kw = 0; kw < s->k_w; kw++) {
                const size_t k = (ic * s->k_h + kh) * s->k_w + kw;
                for (int oh = 0; oh < h_out; oh++) {
                    const float *src = pp + (size_t)(oh * s->stride_h + kh) * L + kw;
                    float *dst = row + (size_t)oh * w_out;
                    if (s->stride_w == 1)
                        for (int c = 0; c < w_out; c += VW) V_STOREU(dst + c, V_LOADU(src + c));
                    else
                        for (int c = 0; c < w_out; c += VW)
                            V_STOREU(dst + c, v_load_even(src + 2 * c));
                }
                for (size_t i = N; i < n_panels * GEMM_NR; i++) row[i] = 0.0f;
                for (size_t p = 0; p < n_panels; p++) {
                    float *dst = j->Bp + (p * K + k) * GEMM_NR;
                    for (int q = 0; q < GEMM_NR; q += VW)
                        V_STOREU(dst + q, V_LOADU(row + p * GEMM_NR + q));
                }
            }
    }
}

/* The conv as kiln__conv2d_gemm's own-GEMM path runs it, with B packed by
 * pack_padded_range. */
static void conv2d_padded_gemm(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                               const float *packed, const kiln_epilogue *ep, float *y, float *ws,
                               int threads)
{
    const size_t N = (size_t)h_out * w_out, x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const int K = s->c_in * s->k_h * s->k_w;
    const int has_ep = ep->bias || ep->residual || ep->act != KILN_ACT_NONE;
    for (int b = 0; b < s->n; b++) {
        pk_job j = {s, h_out, w_out, x + b * x_img, ws};
        /* Under about 256K elements of B (LeNet's conv2: 157K) one thread
         * packs faster than two. */
        kiln__parallel_for((size_t)K * N < (1u << 18) ? 1 : threads, (size_t)s->c_in,
                           pack_padded_range, &j);
        const size_t c_off = (size_t)b * s->c_out * N;
        gemm(s->c_out, (int)N, K, kiln__conv2d_gemm_a(s, packed, 0), ws, y + c_off, N, ep->bias,
             ep->residual ? ep->residual + c_off : NULL, has_ep ? ep : NULL, threads);
    }
}

static kiln_status conv2d(const kiln_conv2d_shape *s, const float *x, const float *packed,
                          const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    int h_out, w_out;
    kiln_status st = kiln_conv2d_out_hw(s, &h_out, &w_out);
    if (st != KILN_OK) return st;
    if (direct_ok(s, w_out)) {
        static const kiln_epilogue none = {0};
        /* packed starts with the weights in ONNX order (kernels.c) */
        conv2d_direct(s, h_out, w_out, x, packed, ep ? ep : &none, y, threads);
        return KILN_OK;
    }
    if (workspace && pack_padded_ok(s, h_out, w_out)) {
        static const kiln_epilogue none = {0};
        conv2d_padded_gemm(s, h_out, w_out, x, packed, ep ? ep : &none, y, workspace, threads);
        return KILN_OK;
    }
    return kiln__conv2d_gemm(s, x, packed, ep, y, workspace, threads, &conv_ops);
}

/* ---- dense ------------------------------------------------------------------ */

/* y[o] = dot(w[o], x) for o < out, four rows at a time. */
static void gemv(int out, int in, const float *w, const float *x, float *y)
{
    int o = 0;
    for (; o + 4 <= out; o += 4) {
        const float *w0 = w + (size_t)o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        vf a0 = V_ZERO(), a1 = V_ZERO(), a2 = V_ZERO(), a3 = V_ZERO();
        int i = 0;
        for (; i + VW <= in; i += VW) {
            vf xv = V_LOADU(x + i);
            a0 = V_FMA(V_LOADU(w0 + i), xv, a0);
            a1 = V_FMA(V_LOADU(w1 + i), xv, a1);
            a2 = V_FMA(V_LOADU(w2 + i), xv, a2);
            a3 = V_FMA(V_LOADU(w3 + i), xv, a3);
        }
        float s0 = v_hsum(a0), s1 = v_hsum(a1), s2 = v_hsum(a2), s3 = v_hsum(a3);
        for (; i < in; i++) {
            s0 += w0[i] * x[i];
            s1 += w1[i] * x[i];
            s2 += w2[i] * x[i];
            s3 += w3[i] * x[i];
        }
        y[o] = s0;
        y[o + 1] = s1;
        y[o + 2] = s2;
        y[o + 3] = s3;
    }
    for (; o < out; o++) {
        const float *wr = w + (size_t)o * in;
        vf a = V_ZERO();
        int i = 0;
        for (; i + VW <= in; i += VW) a = V_FMA(V_LOADU(wr + i), V_LOADU(x + i), a);
        float sum = v_hsum(a);
        for (; i < in; i++) sum += wr[i] * x[i];
        y[o] = sum;
    }
}

typedef struct gemv_job {
    int in;
    const float *w, *x;
    float *y;
} gemv_job;

/* Rows [4 * begin, 4 * end) of the GEMV (blocks of four rows). */
static void gemv_range(void *ctx, size_t begin, size_t end)
{
    const gemv_job *j = ctx;
    gemv((int)(4 * (end - begin)), j->in, j->w + 4 * begin * j->in, j->x, j->y + 4 * begin);
}

/* Batch 1: the SIMD GEMV above, its row blocks split over kiln's pool
 * (memory-bound: more threads help only as far as bandwidth does).
 * Larger batches: one SGEMM on `threads` OpenBLAS threads. Then the
 * epilogue. */
static kiln_status dense(const kiln_dense_shape *s, const float *x, const float *packed,
                         const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    (void)workspace;
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    if (s->batch == 1) {
        size_t blocks = (size_t)s->out / 4, work = (size_t)s->out * s->in;
        gemv_job j = {s->in, packed, x, y};
        /* Memory-bound: two threads pay from about 1M weights (LeNet's fc,
         * 3.2M, gains; the CIFAR-10 CNN's 0.5M did not). */
        kiln__parallel_for(work < (1 << 20) ? 1 : threads, blocks, gemv_range, &j);
        gemv(s->out - (int)(4 * blocks), s->in, packed + 4 * blocks * s->in, x, y + 4 * blocks);
    } else {
        kiln_blas_set_threads(threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->batch, s->out, s->in, 1.0f, x,
                    s->in, packed, s->in, 0.0f, y, s->out);
    }
    if (!ep->bias && !ep->residual && ep->act == KILN_ACT_NONE) return KILN_OK;
    for (int b = 0; b < s->batch; b++) {
        size_t off = (size_t)b * s->out;
        act_row((size_t)s->out, y + off, 0.0f, ep->bias, ep->residual ? ep->residual + off : NULL,
                ep, y + off);
    }
    return KILN_OK;
}

const kiln_kernels KSIMD_TABLE = {
    .isa = KSIMD_ISA,
    .conv2d = conv2d,
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
