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

/* What every output row of a separable pooling shares (pool_geom_of()). */
typedef struct pool_geom {
    int h_out, w_out;
    int ow_lo, ow_hi; /* output columns whose whole window lies inside [0, w_in) */
    int tail_vec;     /* a max pool's last vector of inner windows goes in part */
} pool_geom;

/* Widest input row the separable pooling path buffers on the stack;
 * wider rows take the ref kernel. */
#define POOL_ROW_MAX 4096

/* A max pool's last vector of inner windows goes in part (masked), where
 * its lanes past the inner windows read up to 2 VW floats past the row:
 * defined (zeroed in the row buffer once, pool_row_init()), and never
 * stored. The scalar loop took the rest of a row: ResNet50's 3x3/2 pool
 * after the stem, 7 of 56; that pool ran 0.452 -> 0.295 ms (1 thread, 400
 * paired calls, the same floats). Average pools keep the scalar tail: its
 * division is not the vector loop's multiply by the reciprocal. */
static int pool_geom_of(const kiln_pool2d_shape *s, int is_max, pool_geom *g)
{
    if (kiln_pool2d_out_hw(s, &g->h_out, &g->w_out) != KILN_OK) return 0;
    const int W = s->w_in, sw = s->stride_w;
    g->tail_vec = is_max && W + 2 * VW <= POOL_ROW_MAX;
    g->ow_lo = (s->pad_l + sw - 1) / sw;
    const int span = W - 1 + s->pad_l - (s->k_w - 1) * s->dil_w;
    g->ow_hi = span < 0 ? 0 : span / sw + 1;
    if (g->ow_hi > g->w_out) g->ow_hi = g->w_out;
    if (g->ow_lo > g->ow_hi) g->ow_lo = g->ow_hi;
    return 1;
}

/* The slack past a row buffer's w_in floats that tail_vec reads. */
static inline void pool_row_init(const kiln_pool2d_shape *s, const pool_geom *g, float *row)
{
    if (g->tail_vec)
        for (int i = s->w_in; i < s->w_in + 2 * VW; i++) row[i] = 0.0f;
}

/* One output row yr from the `rows` input rows of its window that lie
 * inside, x0 and every ld floats on (rows_pad: those inside the padded
 * input), through the row buffer row (w_in floats and the 2 VW of slack
 * that pool_row_init() set up): the window's rows
 * reduced into one row (contiguous, full vectors), then each window's
 * columns of that row (vectors for strides 1 and 2). The window is a
 * rectangle, so the average's divisor is rows x columns counted. */
static void pool_row(const kiln_pool2d_shape *s, const pool_geom *g, const float *x0, size_t ld,
                     int rows, int rows_pad, float *row, float *yr, int is_max)
{
    const int W = s->w_in, sw = s->stride_w, dw = s->dil_w, kw_n = s->k_w, w_out = g->w_out;
    const int tail_vec = g->tail_vec, ow_lo = g->ow_lo, ow_hi = g->ow_hi;
    if (rows == 0) { /* the window covers padding only */
        for (int ow = 0; ow < w_out; ow++) yr[ow] = is_max ? -INFINITY : 0.0f;
        return;
    }
    memcpy(row, x0, sizeof(float) * W);
    for (int r = 1; r < rows; r++) {
        const float *x = x0 + (size_t)r * ld;
        int i = 0;
        if (is_max) {
            for (; i + VW <= W; i += VW) V_STOREU(row + i, V_MAX(V_LOADU(row + i), V_LOADU(x + i)));
            for (; i < W; i++) row[i] = x[i] > row[i] ? x[i] : row[i];
        } else {
            for (; i + VW <= W; i += VW) V_STOREU(row + i, V_ADD(V_LOADU(row + i), V_LOADU(x + i)));
            for (; i < W; i++) row[i] += x[i];
        }
    }
    const int rows_div = s->count_include_pad ? rows_pad : rows;
    int ow = ow_lo;
    if (sw <= 2) {
        const vf vdiv = V_SET1(1.0f / (float)(rows_div * kw_n));
        /* stride 2 reads one element past the last window: stop one vector early */
        int end = sw == 1 ? ow_hi : ow_hi - 1;
        if (tail_vec) end = ow_hi;
        for (; ow < end && (tail_vec || ow + VW <= end); ow += VW) {
            const float *base = row + ow * sw - s->pad_l;
            vf acc = sw == 1 ? V_LOADU(base) : v_load_even(base);
            for (int kw = 1; kw < kw_n; kw++) {
                vf v = sw == 1 ? V_LOADU(base + kw * dw) : v_load_even(base + kw * dw);
                acc = is_max ? V_MAX(acc, v) : V_ADD(acc, v);
            }
            acc = is_max ? acc : V_MUL(acc, vdiv);
            if (ow + VW <= end)
                V_STOREU(yr + ow, acc);
            else
                v_store_part(yr + ow, acc, end - ow);
        }
        if (ow > end) ow = end;
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

/* Max/avg pooling of the planes [p_begin, p_end), separably, a row at a
 * time (pool_row()). */
static void pool2d_planes(const kiln_pool2d_shape *s, const float *x, float *y, int is_max,
                          size_t p_begin, size_t p_end)
{
    pool_geom g;
    if (!pool_geom_of(s, is_max, &g)) return;
    float row[POOL_ROW_MAX];
    pool_row_init(s, &g, row);
    const int W = s->w_in;
    for (size_t p = p_begin; p < p_end; p++) {
        const float *xp = x + p * s->h_in * W;
        float *yp = y + p * g.h_out * g.w_out;
        for (int oh = 0; oh < g.h_out; oh++) {
            int ih0 = oh * s->stride_h - s->pad_t, rows = 0, rows_pad = 0, first = 0;
            for (int kh = 0; kh < s->k_h; kh++) {
                int ih = ih0 + kh * s->dil_h;
                if (ih >= -s->pad_t && ih < s->h_in + s->pad_b) rows_pad++;
                if (ih < 0 || ih >= s->h_in) continue;
                if (!rows++) first = ih;
            }
            pool_row(s, &g, xp + (size_t)first * W, (size_t)s->dil_h * W, rows, rows_pad, row,
                     yp + (size_t)oh * g.w_out, is_max);
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

/* The vertical step's tail of a row pair, columns [i, W), as one masked
 * vector where the ISA has masked loads (28 columns: 12 of them, 14: all),
 * not float by float; returns the first column still to do. */
static inline size_t pool2_tail(float *b, const float *x0, const float *x1, size_t i, size_t W,
                                int is_max)
{
#ifdef V_LOADU_PART
    if (i < W) {
        const int m = (int)(W - i);
        const vf a = V_LOADU_PART(x0 + i, m), c = V_LOADU_PART(x1 + i, m);
        V_STOREU_PART(b + i, is_max ? V_MAX(a, c) : V_ADD(a, c), m);
        return W;
    }
#else
    (void)b, (void)x0, (void)x1, (void)W, (void)is_max;
#endif
    return i;
}

/* The 2x2, stride-2 max pool that kiln_epilogue.pool2 fuses into a conv,
 * over c planes of h x w (f32-direct.inc.c, f32-gemm-t.inc.c). */
static inline kiln_pool2d_shape pool2_shape(int c, int h, int w)
{
    return (kiln_pool2d_shape){.n = 1,
                               .c = c,
                               .h_in = h,
                               .w_in = w,
                               .k_h = 2,
                               .k_w = 2,
                               .stride_h = 2,
                               .stride_w = 2,
                               .dil_h = 1,
                               .dil_w = 1};
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
                i = pool2_tail(b, x0, x1, i, W, 1);
                for (; i < W; i++) b[i] = x1[i] > x0[i] ? x1[i] : x0[i];
            } else {
                for (; i + VW <= W; i += VW)
                    V_STOREU(b + i, V_ADD(V_LOADU(x0 + i), V_LOADU(x1 + i)));
                i = pool2_tail(b, x0, x1, i, W, 0);
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
