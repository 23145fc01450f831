/* Training kernels: forward against direct loops, backward against central
 * finite differences of a random linear read-out (L = sum(y * r)). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"
#include "train/net.h"
#include "train/train_ops.h"

static uint64_t rng = 1;

static float urand(void) /* in [-1, 1) */
{
    rng = kiln__mix64(rng);
    return (float)((rng >> 40) * (2.0 / 16777216.0) - 1.0);
}

static float *rand_vec(int64_t n)
{
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (int64_t i = 0; i < n; i++) v[i] = urand();
    return v;
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* |a - b| <= tol * max(1, |b|) */
static void assert_close(double a, double b, double tol, const char *what, int64_t i)
{
    if (fabs(a - b) > tol * fmax(1.0, fabs(b)))
        fail_msg("%s[%lld]: analytic %.6f, numeric %.6f", what, (long long)i, a, b);
}

/* Central difference of L(v) in v[i]; L is evaluated by `eval`. */
typedef double (*loss_fn)(void *ctx);
static double numeric(float *v, int64_t i, loss_fn eval, void *ctx, float eps)
{
    float keep = v[i];
    v[i] = keep + eps;
    double up = eval(ctx);
    v[i] = keep - eps;
    double down = eval(ctx);
    v[i] = keep;
    return (up - down) / (2.0 * eps);
}

/* ---- conv ---------------------------------------------------------------- */

typedef struct conv_ctx {
    kt_conv g;
    float *x, *w, *b, *y, *r, *ws;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    kt_conv_forward(&c->g, c->x, c->w, c->b, c->y, c->ws);
    return dot(c->y, c->r, (int64_t)c->g.n * c->g.cout * c->g.oh * c->g.ow);
}

static void conv_matches_direct_and_finite_differences(void **state)
{
    (void)state;
    const int geoms[][5] = {/* k, stride, pad, h, w */
                            {3, 1, 1, 5, 6}, {3, 2, 1, 7, 5}, {1, 1, 0, 4, 3},
                            {2, 2, 0, 6, 6}, {5, 1, 2, 6, 7}, {3, 1, 0, 3, 3}};
    for (size_t t = 0; t < sizeof geoms / sizeof geoms[0]; t++) {
        conv_ctx c = {.g = {.n = 1 + (int)t % 3, /* one sample, or a group of 2 or 3 */
                            .cin = 3,
                            .h = geoms[t][3],
                            .w = geoms[t][4],
                            .cout = 4,
                            .k = geoms[t][0],
                            .stride = geoms[t][1],
                            .pad = geoms[t][2]}};
        assert_int_equal(kt_conv_geom(&c.g), 0);
        const kt_conv *g = &c.g;
        int64_t nx = (int64_t)g->n * g->cin * g->h * g->w,
                nw = (int64_t)g->cout * g->cin * g->k * g->k;
        int64_t ny = (int64_t)g->n * g->cout * g->oh * g->ow;
        c.x = rand_vec(nx), c.w = rand_vec(nw), c.b = rand_vec(g->cout), c.r = rand_vec(ny);
        c.y = malloc(sizeof(float) * ny);
        c.ws = malloc(sizeof(float) * kt_conv_workspace(g));
        kt_conv_forward(g, c.x, c.w, c.b, c.y, c.ws);
        /* direct convolution */
        for (int n = 0; n < g->n; n++)
            for (int o = 0; o < g->cout; o++)
                for (int oy = 0; oy < g->oh; oy++)
                    for (int ox = 0; ox < g->ow; ox++) {
                        double s = c.b[o];
                        for (int i = 0; i < g->cin; i++)
                            for (int ky = 0; ky < g->k; ky++)
                                for (int kx = 0; kx < g->k; kx++) {
                                    int iy = oy * g->stride - g->pad + ky;
                                    int ix = ox * g->stride - g->pad + kx;
                                    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                                    s += (double)c.x[((n * g->cin + i) * g->h + iy) * g->w + ix] *
                                         c.w[((o * g->cin + i) * g->k + ky) * g->k + kx];
                                }
                        assert_close(c.y[((n * g->cout + o) * g->oh + oy) * g->ow + ox], s, 1e-4,
                                     "conv y", o);
                    }
        float *dw = calloc(nw, sizeof(float)), *db = calloc(g->cout, sizeof(float));
        float *dx = malloc(sizeof(float) * nx);
        kt_conv_backward(g, c.x, c.w, c.r, dw, db, dx, c.ws);
        for (int64_t i = 0; i < nx; i++)
            assert_close(dx[i], numeric(c.x, i, conv_loss, &c, 1e-2f), 2e-3, "conv dx", i);
        for (int64_t i = 0; i < nw; i++)
            assert_close(dw[i], numeric(c.w, i, conv_loss, &c, 1e-2f), 2e-3, "conv dw", i);
        for (int i = 0; i < g->cout; i++)
            assert_close(db[i], numeric(c.b, i, conv_loss, &c, 1e-2f), 2e-3, "conv db", i);
        /* the weight gradient accumulates */
        kt_conv_backward(g, c.x, c.w, c.r, dw, NULL, NULL, c.ws);
        assert_close(dw[0], 2 * numeric(c.w, 0, conv_loss, &c, 1e-2f), 2e-3, "conv dw acc", 0);
        free(dw), free(db), free(dx), free(c.x), free(c.w), free(c.b), free(c.r), free(c.y),
            free(c.ws);
    }
}

/* ---- dense --------------------------------------------------------------- */

typedef struct dense_ctx {
    int n, in, out;
    float *x, *w, *b, *y, *r;
} dense_ctx;

static double dense_loss(void *p)
{
    dense_ctx *c = p;
    kt_dense_forward(c->n, c->in, c->out, c->x, c->w, c->b, c->y);
    return dot(c->y, c->r, (int64_t)c->n * c->out);
}

/* The conv layers' route through kiln_conv2d (kt_par_conv_*: forward,
 * and the data gradient as a conv with the flipped, transposed weights)
 * against the im2col kernels above, which the finite differences checked:
 * a Winograd-sized 3x3, a 5x5 with a smaller pad, a 1x1, and a strided
 * conv (whose data gradient stays on im2col). */
static void conv_kernel_route_matches_im2col(void **state)
{
    (void)state;
    const kt_conv shapes[] = {
        {.n = 3, .cin = 5, .h = 14, .w = 12, .cout = 7, .k = 3, .stride = 1, .pad = 1},
        {.n = 2, .cin = 3, .h = 9, .w = 9, .cout = 4, .k = 5, .stride = 1, .pad = 1},
        {.n = 2, .cin = 6, .h = 5, .w = 7, .cout = 8, .k = 1, .stride = 1, .pad = 0},
        {.n = 3, .cin = 4, .h = 9, .w = 8, .cout = 5, .k = 3, .stride = 2, .pad = 1},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        kt_conv g = shapes[si];
        assert_int_equal(kt_conv_geom(&g), 0);
        const int64_t in = (int64_t)g.n * g.cin * g.h * g.w,
                      out = (int64_t)g.n * g.cout * g.oh * g.ow;
        const int64_t nw = (int64_t)g.cout * g.cin * g.k * g.k;
        float *x = rand_vec(in), *w = rand_vec(nw), *b = rand_vec(g.cout), *dy = rand_vec(out);
        float *y0 = calloc(out, sizeof(float)), *y1 = calloc(out, sizeof(float));
        float *dx0 = calloc(in, sizeof(float)), *dx1 = calloc(in, sizeof(float));
        float *dw0 = calloc(nw, sizeof(float)), *dw1 = calloc(nw, sizeof(float));
        float *db0 = calloc(g.cout, sizeof(float)), *db1 = calloc(g.cout, sizeof(float));
        float *ws0 = malloc(sizeof(float) * kt_conv_workspace(&g));
        kt_par p = {.threads = 1, .ws_floats = (size_t)kt_par_conv_workspace(&g)};
        p.ws = aligned_alloc(KILN_ALIGN, p.ws_floats * sizeof(float));
        int64_t pk = kt_par_conv_packed(&g);
        p.pk = aligned_alloc(KILN_ALIGN, (size_t)(pk > 0 ? pk : 16) * sizeof(float));
        p.flip = malloc(sizeof(float) * nw);
        kt_conv_forward(&g, x, w, b, y0, ws0);
        kt_par_conv_forward(&p, &g, x, w, b, y1);
        for (int64_t i = 0; i < out; i++) assert_close(y1[i], y0[i], 1e-4, "kernel conv y", i);
        kt_conv_backward(&g, x, w, dy, dw0, db0, dx0, ws0);
        kt_par_conv_backward(&p, &g, x, w, dy, dw1, db1, dx1);
        for (int64_t i = 0; i < in; i++) assert_close(dx1[i], dx0[i], 1e-4, "kernel conv dx", i);
        for (int64_t i = 0; i < nw; i++) assert_close(dw1[i], dw0[i], 1e-4, "kernel conv dw", i);
        for (int i = 0; i < g.cout; i++) assert_close(db1[i], db0[i], 1e-4, "kernel conv db", i);
        /* the output changes with the weights: a wrong route cannot pass */
        assert_true(dot(y0, y0, out) > 0 && dot(dx0, dx0, in) > 0);
        free(x), free(w), free(b), free(dy), free(y0), free(y1), free(dx0), free(dx1);
        free(dw0), free(dw1), free(db0), free(db1), free(ws0), free(p.ws), free(p.pk), free(p.flip);
    }
}

static void dense_finite_differences(void **state)
{
    (void)state;
    dense_ctx c = {.n = 3, .in = 7, .out = 5};
    c.x = rand_vec(21), c.w = rand_vec(35), c.b = rand_vec(5), c.r = rand_vec(15);
    c.y = malloc(sizeof(float) * 15);
    dense_loss(&c);
    assert_close(c.y[1 * 5 + 2], dot(c.x + 7, c.w + 2 * 7, 7) + c.b[2], 1e-5, "dense y", 7);
    float dw[35] = {0}, db[5] = {0}, dx[21];
    kt_dense_backward(3, 7, 5, c.x, c.w, c.r, dw, db, dx);
    for (int i = 0; i < 21; i++)
        assert_close(dx[i], numeric(c.x, i, dense_loss, &c, 1e-2f), 1e-3, "dense dx", i);
    for (int i = 0; i < 35; i++)
        assert_close(dw[i], numeric(c.w, i, dense_loss, &c, 1e-2f), 1e-3, "dense dw", i);
    for (int i = 0; i < 5; i++)
        assert_close(db[i], numeric(c.b, i, dense_loss, &c, 1e-2f), 1e-3, "dense db", i);
    free(c.x), free(c.w), free(c.b), free(c.r), free(c.y);
}

/* ---- pooling, GAP, ReLU, add ----------------------------------------------- */

typedef struct pool_ctx {
    kt_pool g;
    int max;
    float *x, *y, *r;
    int32_t *am;
} pool_ctx;

static double pool_loss(void *p)
{
    pool_ctx *c = p;
    if (c->max)
        kt_maxpool_forward(&c->g, c->x, c->y, c->am);
    else
        kt_avgpool_forward(&c->g, c->x, c->y);
    return dot(c->y, c->r, (int64_t)c->g.n * c->g.c * c->g.oh * c->g.ow);
}

static void pooling_finite_differences(void **state)
{
    (void)state;
    const int geoms[][3] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {2, 1, 0}};
    for (int max = 0; max <= 1; max++)
        for (size_t t = 0; t < 4; t++) {
            pool_ctx c = {.g = {.n = 2,
                                .c = 2,
                                .h = 5,
                                .w = 6,
                                .k = geoms[t][0],
                                .stride = geoms[t][1],
                                .pad = geoms[t][2]},
                          .max = max};
            assert_int_equal(kt_pool_geom(&c.g), 0);
            int64_t nx = 2 * 2 * 5 * 6, ny = 2 * 2 * c.g.oh * c.g.ow;
            c.x = rand_vec(nx), c.r = rand_vec(ny);
            c.y = malloc(sizeof(float) * ny);
            c.am = malloc(sizeof(int32_t) * ny);
            pool_loss(&c);
            float *dx = malloc(sizeof(float) * nx);
            if (max)
                kt_maxpool_backward(&c.g, c.r, c.am, dx);
            else
                kt_avgpool_backward(&c.g, c.r, dx);
            /* a small step so that no maximum changes owner */
            for (int64_t i = 0; i < nx; i++)
                assert_close(dx[i], numeric(c.x, i, pool_loss, &c, 1e-4f), 2e-2,
                             max ? "maxpool dx" : "avgpool dx", i);
            free(dx), free(c.x), free(c.r), free(c.y), free(c.am);
        }
    /* GAP: every input gets dy / hw */
    float x[12], y[2], dy[2] = {1.0f, -2.0f}, dx[12];
    for (int i = 0; i < 12; i++) x[i] = (float)i;
    kt_gap_forward(1, 2, 6, x, y);
    assert_float_equal(y[0], 2.5f, 1e-6);
    assert_float_equal(y[1], 8.5f, 1e-6);
    kt_gap_backward(1, 2, 6, dy, dx);
    assert_float_equal(dx[0], 1.0f / 6, 1e-7);
    assert_float_equal(dx[11], -2.0f / 6, 1e-7);
}

/* Max pooling with the ReLU before it folded in equals ReLU then max
 * pooling, forward and backward, exactly, and with a batch norm folded in
 * too, batch norm, ReLU and pooling: windows that tile the plane
 * (the one-pass backward), windows that leave a row and a column out,
 * and overlapping padded windows. Inputs are half negative, with whole
 * windows below zero. */
static void maxpool_relu_matches_relu_then_maxpool(void **state)
{
    (void)state;
    const int geoms[][5] = {{6, 8, 2, 2, 0}, {5, 7, 2, 2, 0}, {5, 6, 3, 2, 1}};
    for (size_t t = 0; t < 3; t++) {
        kt_pool g = {.n = 2,
                     .c = 3,
                     .h = geoms[t][0],
                     .w = geoms[t][1],
                     .k = geoms[t][2],
                     .stride = geoms[t][3],
                     .pad = geoms[t][4]};
        assert_int_equal(kt_pool_geom(&g), 0);
        const int64_t nx = (int64_t)g.n * g.c * g.h * g.w, ny = (int64_t)g.n * g.c * g.oh * g.ow;
        float *x = rand_vec(nx), *dy = rand_vec(ny);
        for (int64_t i = 0; i < nx / 4; i++) x[i] = -fabsf(x[i]); /* whole negative planes */
        float *r = malloc(sizeof(float) * nx), *y0 = malloc(sizeof(float) * ny);
        float *y1 = malloc(sizeof(float) * ny), *dr = malloc(sizeof(float) * nx);
        float *dx0 = malloc(sizeof(float) * nx), *dx1 = malloc(sizeof(float) * nx);
        int32_t *a0 = malloc(sizeof(int32_t) * ny), *a1 = malloc(sizeof(int32_t) * ny);
        kt_relu_forward(nx, x, r);
        kt_maxpool_forward(&g, r, y0, a0);
        kt_maxpool_relu_forward(&g, x, y1, a1);
        assert_memory_equal(y0, y1, sizeof(float) * ny);
        kt_maxpool_backward(&g, dy, a0, dr);
        kt_relu_backward(nx, r, dr, dx0);
        for (int64_t i = 0; i < nx; i++) dx1[i] = 12345.0f; /* every cell must be written */
        kt_maxpool_relu_backward(&g, dy, y1, a1, dx1);
        assert_memory_equal(dx0, dx1, sizeof(float) * nx);
        /* the plain backward against a scatter written out here */
        for (int64_t i = 0; i < nx; i++) dx1[i] = 12345.0f, dx0[i] = 0.0f;
        for (int64_t j = 0; j < ny; j++) dx0[j / (g.oh * g.ow) * g.h * g.w + a0[j]] += dy[j];
        kt_maxpool_backward(&g, dy, a0, dx1);
        assert_memory_equal(dx0, dx1, sizeof(float) * nx);
        if (g.k == 2) {
            /* batch norm folded in too: statistics without y, then the
             * scale and shift in the pool; against batch norm, ReLU, pool */
            float gamma[3] = {1.5f, -0.7f, 0.9f}, beta[3] = {0.1f, 0.2f, -0.3f};
            float rm[3] = {0}, rv[3] = {1, 1, 1}, rm1[3] = {0}, rv1[3] = {1, 1, 1};
            float sm[3], si[3], sm1[3], si1[3], sc[3], sh[3];
            const int hw = g.h * g.w;
            kt_bn_forward_train(g.n, g.c, hw, x, gamma, beta, 1e-5f, 0.1f, rm, rv, sm, si, r);
            kt_relu_forward(nx, r, r);
            kt_maxpool_forward(&g, r, y0, a0);
            kt_bn_forward_train(g.n, g.c, hw, x, gamma, beta, 1e-5f, 0.1f, rm1, rv1, sm1, si1,
                                NULL);
            assert_memory_equal(sm, sm1, sizeof sm); /* the same code either way */
            assert_memory_equal(rv, rv1, sizeof rv);
            kt_bn_scale_shift(g.c, gamma, beta, sm1, si1, sc, sh);
            kt_bn_relu_maxpool_forward(&g, x, sc, sh, y1, a1);
            /* equal on x86-64; a compiler may fuse x * s + t differently
             * elsewhere, hence the (tiny) tolerance */
            for (int64_t j = 0; j < ny; j++) {
                assert_close(y1[j], y0[j], 1e-6, "bn-relu-maxpool y", j);
                if (y0[j] > 1e-3f) assert_int_equal(a0[j], a1[j]); /* the same winner */
            }
            /* inference mode: the running statistics */
            kt_bn_forward_infer(g.n, g.c, hw, x, gamma, beta, 1e-5f, rm, rv, r);
            kt_relu_forward(nx, r, r);
            kt_maxpool_forward(&g, r, y0, a0);
            kt_bn_scale_shift_infer(g.c, gamma, beta, 1e-5f, rm, rv, sc, sh);
            kt_bn_relu_maxpool_forward(&g, x, sc, sh, y1, a1);
            for (int64_t j = 0; j < ny; j++)
                assert_close(y1[j], y0[j], 1e-6, "bn-relu-maxpool y (inference)", j);
        }
        free(x), free(dy), free(r), free(y0), free(y1), free(dr), free(dx0), free(dx1), free(a0),
            free(a1);
    }
}

static void relu_and_add(void **state)
{
    (void)state;
    float x[4] = {-1.0f, 0.0f, 0.5f, 2.0f}, y[4], dy[4] = {1, 2, 3, 4}, dx[4];
    kt_relu_forward(4, x, y);
    kt_relu_backward(4, y, dy, dx);
    float want_y[4] = {0, 0, 0.5f, 2.0f}, want_dx[4] = {0, 0, 3, 4};
    assert_memory_equal(y, want_y, sizeof y);
    assert_memory_equal(dx, want_dx, sizeof dx);
    float a[4] = {0}, b[4] = {1, 1, 1, 1}, s[4];
    kt_add_forward(4, x, dy, s);
    assert_float_equal(s[3], 6.0f, 0);
    kt_add_backward(4, dy, a, b);
    assert_float_equal(a[2], 3.0f, 0);
    assert_float_equal(b[2], 4.0f, 0);
}

/* ---- batch norm -------------------------------------------------------------- */

typedef struct bn_ctx {
    int n, c, hw;
    float *x, *gamma, *beta, *rm, *rv, *sm, *si, *y, *r;
} bn_ctx;

static double bn_loss(void *p)
{
    bn_ctx *c = p;
    kt_bn_forward_train(c->n, c->c, c->hw, c->x, c->gamma, c->beta, 1e-5f, 0.1f, c->rm, c->rv,
                        c->sm, c->si, c->y);
    return dot(c->y, c->r, (int64_t)c->n * c->c * c->hw);
}

static void batchnorm_training_mode(void **state)
{
    (void)state;
    bn_ctx c = {.n = 3, .c = 2, .hw = 5};
    int64_t nx = 30;
    c.x = rand_vec(nx), c.gamma = rand_vec(2), c.beta = rand_vec(2), c.r = rand_vec(nx);
    float rm[2] = {0, 0}, rv[2] = {1, 1}, sm[2], si[2];
    c.rm = rm, c.rv = rv, c.sm = sm, c.si = si;
    c.y = malloc(sizeof(float) * nx);
    bn_loss(&c);
    /* running statistics: 0.9 * old + 0.1 * batch (variance unbiased) */
    for (int ch = 0; ch < 2; ch++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) s += c.x[(i * 2 + ch) * 5 + j];
        double mean = s / 15;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) {
                double d = c.x[(i * 2 + ch) * 5 + j] - mean;
                s2 += d * d;
            }
        assert_float_equal(rm[ch], 0.1 * mean, 1e-6);
        assert_float_equal(rv[ch], 0.9 + 0.1 * s2 / 14, 1e-5);
        /* the output has the batch's statistics gamma, beta */
        double ys = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 5; j++) ys += c.y[(i * 2 + ch) * 5 + j];
        assert_float_equal(ys / 15, c.beta[ch], 1e-5);
    }
    float dg[2] = {0}, dbeta[2] = {0}, dx[30];
    kt_bn_backward(3, 2, 5, c.x, c.gamma, sm, si, c.r, dg, dbeta, dx);
    for (int64_t i = 0; i < nx; i++)
        assert_close(dx[i], numeric(c.x, i, bn_loss, &c, 1e-3f), 2e-2, "bn dx", i);
    for (int i = 0; i < 2; i++) {
        assert_close(dg[i], numeric(c.gamma, i, bn_loss, &c, 1e-3f), 1e-2, "bn dgamma", i);
        assert_close(dbeta[i], numeric(c.beta, i, bn_loss, &c, 1e-3f), 1e-2, "bn dbeta", i);
    }
    /* inference with the batch's statistics reproduces the training output */
    float y2[30], var[2];
    for (int ch = 0; ch < 2; ch++) var[ch] = 1.0f / (si[ch] * si[ch]) - 1e-5f;
    kt_bn_forward_infer(3, 2, 5, c.x, c.gamma, c.beta, 1e-5f, sm, var, y2);
    bn_loss(&c);
    for (int i = 0; i < 30; i++) assert_float_equal(y2[i], c.y[i], 1e-4);
    free(c.x), free(c.gamma), free(c.beta), free(c.r), free(c.y);
}

/* ---- softmax + cross-entropy --------------------------------------------------- */

typedef struct xent_ctx {
    float *z;
    int32_t *y;
} xent_ctx;

static double xent_loss(void *p)
{
    xent_ctx *c = p;
    return kt_softmax_xent(4, 5, c->z, c->y, NULL, NULL, NULL);
}

static void softmax_cross_entropy(void **state)
{
    (void)state;
    int32_t y[4] = {0, 3, 4, 1};
    xent_ctx c = {.z = rand_vec(20), .y = y};
    for (int i = 0; i < 20; i++) c.z[i] *= 3;
    c.z[5 + 3] = 10; /* row 1 is right */
    float dz[20], prob[20];
    int correct;
    double loss = kt_softmax_xent(4, 5, c.z, y, dz, prob, &correct);
    double want = 0;
    for (int i = 0; i < 4; i++) {
        double s = 0;
        for (int j = 0; j < 5; j++) s += exp(c.z[i * 5 + j]);
        want += log(s) - c.z[i * 5 + y[i]];
        double ps = 0;
        for (int j = 0; j < 5; j++) ps += prob[i * 5 + j];
        assert_float_equal(ps, 1.0, 1e-5);
    }
    assert_float_equal(loss, want / 4, 1e-5);
    assert_true(correct >= 1);
    for (int i = 0; i < 20; i++)
        assert_close(dz[i], numeric(c.z, i, xent_loss, &c, 1e-3f), 1e-2, "xent dz", i);
    /* a huge logit does not overflow */
    c.z[0] = 1e4f;
    assert_true(isfinite(kt_softmax_xent(4, 5, c.z, y, dz, NULL, NULL)));
    free(c.z);
}

/* ---- a whole net ------------------------------------------------------------------ */

typedef struct net_ctx {
    kt_net *net;
    float *x;
    int32_t *y;
    int n;
} net_ctx;

static double net_loss(void *p)
{
    net_ctx *c = p;
    const float *z = kt_net_forward(c->net, c->x, c->n, 1);
    return kt_softmax_xent(c->n, c->net->num_classes, z, c->y, NULL, NULL, NULL);
}

static void net_parameter_gradients(void **state)
{
    (void)state;
    const char *yaml = "name: t\n"
                       "input: {channels: 2, height: 6, width: 6}\n"
                       "layers:\n"
                       "  - {type: conv, filters: 3, kernel: 3, pad: 1}\n"
                       "  - {type: batchnorm}\n"
                       "  - {type: relu}\n"
                       "  - {type: maxpool, size: 2}\n"
                       "  - {type: conv, filters: 4, kernel: 3, stride: 2, pad: 1, bias: false}\n"
                       "  - {type: relu}\n"
                       "  - {type: avgpool, size: 2}\n"
                       "  - {type: dense, units: 5}\n"
                       "  - relu\n"
                       "  - {type: dense, units: 3}\n";
    kt_arch arch;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_arch_parse(yaml, strlen(yaml), "t", &arch, &err), KILN_OK);
    kt_optim opt;
    kt_optim_defaults(&opt);
    kt_net net;
    assert_int_equal(kt_net_build(&net, &arch, 4, &opt, 7, &err), KILN_OK);
    assert_int_equal(net.num_classes, 3);
    net_ctx c = {.net = &net, .x = rand_vec(4 * 72), .n = 4};
    int32_t y[4] = {0, 1, 2, 1};
    c.y = y;
    net_loss(&c);
    int correct;
    kt_net_backward(&net, c.x, y, 4, &correct);
    float *g = malloc(sizeof(float) * net.nparams);
    memcpy(g, net.grads, sizeof(float) * net.nparams);
    int checked = 0;
    for (int k = 0; k < net.ngroups; k++) {
        kt_param *p = &net.groups[k];
        for (int64_t i = 0; i < p->n; i += 1 + p->n / 12, checked++)
            assert_close(g[p->value - net.params + i], numeric(p->value, i, net_loss, &c, 2e-3f),
                         3e-2, "net grad", p->value - net.params + i);
    }
    assert_true(checked > 40);
    free(g);
    free(c.x);
    kt_net_free(&net);

    /* errors name the layer */
    const char *bad = "input: {channels: 1, height: 4, width: 4}\nlayers:\n"
                      "  - {type: conv, filters: 2, kernel: 7}\n  - {type: dense, units: 2}\n";
    assert_int_equal(kt_arch_parse(bad, strlen(bad), "b", &arch, &err), KILN_OK);
    assert_int_equal(kt_net_build(&net, &arch, 1, &opt, 1, &err), KILN_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "layer 1"));
    const char *unk = "input: {channels: 1, height: 4, width: 4}\nlayers:\n  - {type: lstm}\n";
    assert_int_equal(kt_arch_parse(unk, strlen(unk), "u", &arch, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "lstm"));
}

/* Residual blocks (basic and bottleneck, identity and strided 1x1
 * projection shortcuts, batch norm in training mode, global average
 * pooling): every parameter's gradient against finite differences. */
static void residual_net_gradients(void **state)
{
    (void)state;
    const char *yaml = "name: r\n"
                       "input: {channels: 2, height: 6, width: 6}\n"
                       "layers:\n"
                       "  - {type: basic, filters: 3, stride: 1}\n"
                       "  - {type: basic, filters: 3}\n"
                       "  - {type: bottleneck, mid: 2, out: 4, stride: 2}\n"
                       "  - {type: gap}\n"
                       "  - {type: dense, units: 3}\n";
    kt_arch arch;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_arch_parse(yaml, strlen(yaml), "r", &arch, &err), KILN_OK);
    /* basic(proj: 2 -> 3 channels) 5 + 2 + 2 layers, basic 5 + 2, bottleneck 8 + 2 + 2 */
    int adds = 0, projections = 0;
    for (int i = 0; i < arch.nlayers; i++) {
        adds += arch.layers[i].kind == KT_ADD;
        projections += arch.layers[i].kind == KT_CONV && arch.layers[i].src != i - 1;
    }
    assert_int_equal(adds, 3);
    assert_int_equal(projections, 2);
    assert_int_equal(arch.layers[0].src, -1);
    /* the stored form parses back to the same layers */
    char *text = kt_arch_to_yaml(&arch);
    kt_arch back;
    assert_int_equal(kt_arch_parse(text, strlen(text), "back", &back, &err), KILN_OK);
    free(text);
    assert_int_equal(back.nlayers, arch.nlayers);
    assert_memory_equal(back.layers, arch.layers, sizeof(kt_layer_spec) * arch.nlayers);

    kt_optim opt;
    kt_optim_defaults(&opt);
    kt_net net;
    assert_int_equal(kt_net_build(&net, &arch, 4, &opt, 11, &err), KILN_OK);
    net_ctx c = {.net = &net, .x = rand_vec(4 * 72), .n = 4};
    int32_t y[4] = {2, 0, 1, 1};
    c.y = y;
    net_loss(&c);
    int correct;
    kt_net_backward(&net, c.x, y, 4, &correct);
    float *g = malloc(sizeof(float) * net.nparams);
    memcpy(g, net.grads, sizeof(float) * net.nparams);
    int checked = 0;
    for (int k = 0; k < net.ngroups; k++) {
        kt_param *p = &net.groups[k];
        for (int64_t i = 0; i < p->n; i += 1 + p->n / 6, checked++)
            assert_close(g[p->value - net.params + i], numeric(p->value, i, net_loss, &c, 2e-3f),
                         3e-2, "residual grad", p->value - net.params + i);
    }
    assert_true(checked > 80);
    free(g);

    /* a few steps of SGD on this batch drive its loss down */
    double first = net_loss(&c), last = first;
    for (int t = 1; t <= 30; t++) {
        kt_net_forward(&net, c.x, 4, 1);
        last = kt_net_backward(&net, c.x, y, 4, &correct);
        kt_net_step(&net, 0.05f, t);
    }
    assert_true(last < 0.25 * first);
    assert_int_equal(correct, 4);
    free(c.x);
    kt_net_free(&net);

    /* an add whose inputs differ in shape names the layer */
    const char *bad = "input: {channels: 1, height: 4, width: 4}\nlayers:\n"
                      "  - {type: conv, filters: 2, kernel: 3, stride: 2}\n"
                      "  - {type: add, skip: -1}\n  - {type: dense, units: 2}\n";
    assert_int_equal(kt_arch_parse(bad, strlen(bad), "b", &arch, &err), KILN_OK);
    assert_int_equal(kt_net_build(&net, &arch, 1, &opt, 1, &err), KILN_ERR_SHAPE);
    assert_non_null(strstr(err.msg, "layer 2 (add)"));
}

/* The vocabulary of the architecture files in models/. */
static void architecture_files(void **state)
{
    (void)state;
    const char *lenet =
        "name: lenet-mnist\n"
        "input: {name: image, shape: [1, 1, 28, 28]}\n"
        "meta: {input_layout: NCHW}\n"
        "layers:\n"
        "  - {name: conv1, type: conv, filters: 32, kernel: 5, pad: same, act: relu}\n"
        "  - {name: pool1, type: maxpool, kernel: 2, stride: 2}\n"
        "  - {name: conv2, type: conv, filters: 8, kernel: 3, pad: valid, bn: true}\n"
        "  - {type: dropout}\n"
        "  - {name: fc1, type: dense, units: 16, act: relu}\n"
        "  - {name: fc2, type: dense, units: 10}\n"
        "  - {name: prob, type: softmax}\n";
    kt_arch a;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_arch_parse(lenet, strlen(lenet), "l", &a, &err), KILN_OK);
    assert_int_equal(a.channels, 1);
    assert_int_equal(a.height, 28);
    assert_true(a.softmax);
    const kt_layer_kind want[] = {KT_CONV,    KT_RELU,  KT_MAXPOOL, KT_CONV, KT_BN,
                                  KT_FLATTEN, KT_DENSE, KT_RELU,    KT_DENSE};
    assert_int_equal(a.nlayers, 9);
    for (int i = 0; i < 9; i++) assert_int_equal(a.layers[i].kind, want[i]);
    assert_int_equal(a.layers[0].pad, 2);
    assert_int_equal(a.layers[0].bias, 1);
    assert_int_equal(a.layers[3].pad, 0);
    assert_int_equal(a.layers[3].bias, 0); /* batch norm follows */
    /* the canonical form parses back to the same layers */
    char *y = kt_arch_to_yaml(&a);
    kt_arch b;
    assert_int_equal(kt_arch_parse(y, strlen(y), "y", &b, &err), KILN_OK);
    free(y);
    assert_int_equal(b.nlayers, a.nlayers);
    assert_memory_equal(b.layers, a.layers, sizeof(kt_layer_spec) * a.nlayers);
    assert_int_equal(b.softmax, 1);
    const char *bad[] = {
        "input: {shape: [1, 1, 8, 8]}\nlayers:\n  - {type: bottleneck, mid: 0}\n",
        "input: {shape: [1, 1, 8, 8]}\nlayers:\n  - {type: add}\n",
        "input: {shape: [1, 1, 8, 8]}\nlayers:\n  - {type: relu, src: 3}\n",
        "input: {shape: [1, 1, 8, 8]}\nlayers:\n  - {type: conv, filters: 2, kernel: 3, act: "
        "relu6}\n",
        "input: {shape: [1, 1, 8, 8]}\nlayers:\n  - {type: softmax}\n  - {type: relu}\n",
        "input: {shape: [1, 1, 8]}\nlayers:\n  - {type: relu}\n",
        "input: {shape: [1, 1, 8, 8]}\nlayers:\n  - {type: conv, filters: 2, kernel: 2, pad: "
        "same}\n",
        "layers: [\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(kt_arch_parse(bad[i], strlen(bad[i]), "b", &a, &err), KILN_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conv_matches_direct_and_finite_differences),
        cmocka_unit_test(conv_kernel_route_matches_im2col),
        cmocka_unit_test(dense_finite_differences),
        cmocka_unit_test(pooling_finite_differences),
        cmocka_unit_test(maxpool_relu_matches_relu_then_maxpool),
        cmocka_unit_test(relu_and_add),
        cmocka_unit_test(batchnorm_training_mode),
        cmocka_unit_test(softmax_cross_entropy),
        cmocka_unit_test(net_parameter_gradients),
        cmocka_unit_test(residual_net_gradients),
        cmocka_unit_test(architecture_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
