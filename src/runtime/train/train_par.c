/*
 * Conv and dense layers of training split over kiln's thread pool by
 * samples (see train_ops.h, kt_par). Each part runs the one-thread kernels
 * of train_ops.c on its share of the batch with its own im2col workspace,
 * OpenBLAS on one thread inside it; weight gradients of parts after the
 * first go to their own accumulators and are added up at the end.
 *
 * Why not OpenBLAS's own threads: a step makes hundreds of small GEMMs
 * (one per sample and layer), too small to split well, and between them
 * OpenBLAS's idle threads spin in sched_yield, which on a VM costs a
 * system call each time and kept the second core from the element-wise
 * layers: an epoch at 2 threads was slower than at 1.
 */
#include "train_ops.h"

#include "internal.h"
#include "kernels.h"

#include <cblas.h>
#include <string.h>

/* Samples [*s0, *s1) of n for part `part` of `parts`. */
static void share(int n, int part, int parts, int *s0, int *s1)
{
    *s0 = (int)((long)n * part / parts);
    *s1 = (int)((long)n * (part + 1) / parts);
}

/* Whether g's forward pass (and, with `dx`, its data gradient) runs
 * through kiln_conv2d (see kt_par in train_ops.h). */
static int conv_uses_kernels(const kt_conv *g, int dx)
{
    if (g->cin < 2 || kiln_isa_active() == KILN_ISA_REF) return 0;
    return !dx || (g->stride == 1 && g->pad <= g->k - 1 && g->cout > 1);
}

/* The conv of g for kiln_conv2d over n samples. */
static kiln_conv2d_shape fwd_shape(const kt_conv *g, int n)
{
    return (kiln_conv2d_shape){.n = n,
                               .c_in = g->cin,
                               .h_in = g->h,
                               .w_in = g->w,
                               .c_out = g->cout,
                               .k_h = g->k,
                               .k_w = g->k,
                               .stride_h = g->stride,
                               .stride_w = g->stride,
                               .dil_h = 1,
                               .dil_w = 1,
                               .pad_t = g->pad,
                               .pad_l = g->pad,
                               .pad_b = g->pad,
                               .pad_r = g->pad,
                               .groups = 1};
}

/* The data gradient of a stride-1 conv as a conv: dx = dy (cout channels,
 * oh x ow) convolved with the flipped, transposed weights, padded by
 * k - 1 - pad, which gives h x w back. */
static kiln_conv2d_shape dx_shape(const kt_conv *g, int n)
{
    const int q = g->k - 1 - g->pad;
    return (kiln_conv2d_shape){.n = n,
                               .c_in = g->cout,
                               .h_in = g->oh,
                               .w_in = g->ow,
                               .c_out = g->cin,
                               .k_h = g->k,
                               .k_w = g->k,
                               .stride_h = 1,
                               .stride_w = 1,
                               .dil_h = 1,
                               .dil_w = 1,
                               .pad_t = q,
                               .pad_l = q,
                               .pad_b = q,
                               .pad_r = q,
                               .groups = 1};
}

static int64_t round_floats(size_t bytes)
{
    const size_t a = KILN_ALIGN / sizeof(float);
    return (int64_t)(((bytes + sizeof(float) - 1) / sizeof(float) + a - 1) / a * a);
}

/* A thread's share of the batch is at most the whole batch (g->n), and
 * kiln_conv2d()'s workspace may grow with the samples it runs at once
 * (the turned-around Winograd path holds all their tiles). */
int64_t kt_par_conv_workspace(const kt_conv *g)
{
    int64_t f = round_floats((size_t)kt_conv_workspace(g) * sizeof(float));
    if (conv_uses_kernels(g, 0)) {
        kiln_conv2d_shape s = fwd_shape(g, g->n);
        int64_t k = round_floats(kiln_conv2d_workspace_size(&s, 1));
        if (k > f) f = k;
    }
    if (conv_uses_kernels(g, 1)) {
        kiln_conv2d_shape s = dx_shape(g, g->n);
        int64_t k = round_floats(kiln_conv2d_workspace_size(&s, 1));
        if (k > f) f = k;
    }
    return f;
}

int64_t kt_par_conv_packed(const kt_conv *g)
{
    int64_t f = 0;
    if (conv_uses_kernels(g, 0)) {
        kiln_conv2d_shape s = fwd_shape(g, 1);
        f = round_floats(kiln_conv2d_packed_size(&s));
    }
    if (conv_uses_kernels(g, 1)) {
        kiln_conv2d_shape s = dx_shape(g, 1);
        int64_t k = round_floats(kiln_conv2d_packed_size(&s));
        if (k > f) f = k;
    }
    return f;
}

typedef struct conv_job {
    const kt_par *p;
    const kt_conv *g;
    const float *x, *wt, *bias, *dy;
    float *y, *dw, *db, *dx;
    const float *pk; /* packed weights for kiln_conv2d, or NULL: im2col + OpenBLAS */
} conv_job;

/* Samples [s0, s0 + n) of the forward pass with workspace ws. */
static void conv_fwd_part(const conv_job *j, int s0, int n, float *ws)
{
    const size_t in_sz = (size_t)j->g->cin * j->g->h * j->g->w;
    const size_t out_sz = (size_t)j->g->cout * j->g->oh * j->g->ow;
    if (j->pk) {
        kiln_conv2d_shape s = fwd_shape(j->g, n);
        kiln_epilogue ep = {.bias = j->bias};
        kiln_conv2d(&s, j->x + s0 * in_sz, j->pk, &ep, j->y + s0 * out_sz, ws, 1);
        return;
    }
    kt_conv g = *j->g;
    g.n = n;
    kt_conv_forward(&g, j->x + s0 * in_sz, j->wt, j->bias, j->y + s0 * out_sz, ws);
}

static void conv_fwd_parts(void *ctx, size_t begin, size_t end)
{
    const conv_job *j = ctx;
    for (size_t t = begin; t < end; t++) {
        int s0, s1;
        share(j->g->n, (int)t, j->p->threads, &s0, &s1);
        if (s0 < s1) conv_fwd_part(j, s0, s1 - s0, j->p->ws + t * j->p->ws_floats);
    }
}

void kt_par_conv_forward(const kt_par *p, const kt_conv *g, const float *x, const float *wt,
                         const float *bias, float *y)
{
    conv_job j = {p, g, x, wt, bias, NULL, y, NULL, NULL, NULL, NULL};
    if (conv_uses_kernels(g, 0)) {
        kiln_conv2d_shape s = fwd_shape(g, g->n);
        kiln_conv2d_pack(&s, wt, p->pk);
        j.pk = p->pk;
    }
    if (p->threads <= 1 || g->n < 2) {
        conv_fwd_part(&j, 0, g->n, p->ws);
        return;
    }
    kiln__parallel_for(p->threads, (size_t)p->threads, conv_fwd_parts, &j);
}

/* Samples [s0, s0 + n) of the backward pass into dw, db (this part's
 * accumulators) with workspace ws. */
static void conv_bwd_part(const conv_job *j, int s0, int n, float *dw, float *db, float *ws)
{
    const kt_conv *g = j->g;
    const size_t in_sz = (size_t)g->cin * g->h * g->w, out_sz = (size_t)g->cout * g->oh * g->ow;
    kt_conv gg = *g;
    gg.n = n;
    float *dx = j->dx ? j->dx + s0 * in_sz : NULL;
    kt_conv_backward(&gg, j->x + s0 * in_sz, j->wt, j->dy + s0 * out_sz, dw, db, j->pk ? NULL : dx,
                     ws);
    if (j->pk && dx) {
        kiln_conv2d_shape s = dx_shape(g, n);
        kiln_conv2d(&s, j->dy + s0 * out_sz, j->pk, NULL, dx, ws, 1);
    }
}

static void conv_bwd_parts(void *ctx, size_t begin, size_t end)
{
    const conv_job *j = ctx;
    const kt_conv *g = j->g;
    const size_t nw = (size_t)g->cout * g->cin * g->k * g->k;
    for (size_t t = begin; t < end; t++) {
        int s0, s1;
        share(g->n, (int)t, j->p->threads, &s0, &s1);
        float *dw = j->dw, *db = j->db;
        if (t > 0) { /* this part's own accumulators, added up afterwards */
            dw = j->p->acc + (t - 1) * j->p->acc_floats;
            db = db ? dw + nw : NULL;
            memset(dw, 0, (nw + (db ? (size_t)g->cout : 0)) * sizeof(float));
        }
        if (s0 < s1) conv_bwd_part(j, s0, s1 - s0, dw, db, j->p->ws + t * j->p->ws_floats);
    }
}

void kt_par_conv_backward(const kt_par *p, const kt_conv *g, const float *x, const float *wt,
                          const float *dy, float *dw_acc, float *db_acc, float *dx)
{
    conv_job j = {p, g, x, wt, NULL, dy, NULL, dw_acc, db_acc, dx, NULL};
    if (dx && conv_uses_kernels(g, 1)) {
        /* flip[ci][co][ky][kx] = wt[co][ci][k-1-ky][k-1-kx] */
        const int k = g->k, kk = k * k;
        for (int co = 0; co < g->cout; co++)
            for (int ci = 0; ci < g->cin; ci++) {
                const float *src = wt + ((size_t)co * g->cin + ci) * kk;
                float *dst = p->flip + ((size_t)ci * g->cout + co) * kk;
                for (int e = 0; e < kk; e++) dst[e] = src[kk - 1 - e];
            }
        kiln_conv2d_shape s = dx_shape(g, g->n);
        kiln_conv2d_pack(&s, p->flip, p->pk);
        j.pk = p->pk;
    }
    if (p->threads <= 1 || g->n < 2) {
        conv_bwd_part(&j, 0, g->n, dw_acc, db_acc, p->ws);
        return;
    }
    kiln__parallel_for(p->threads, (size_t)p->threads, conv_bwd_parts, &j);
    const size_t nw = (size_t)g->cout * g->cin * g->k * g->k;
    for (int t = 1; t < p->threads; t++) {
        const float *a = p->acc + (size_t)(t - 1) * p->acc_floats;
        for (size_t i = 0; i < nw; i++) dw_acc[i] += a[i];
        if (db_acc)
            for (int o = 0; o < g->cout; o++) db_acc[o] += a[nw + o];
    }
}

typedef struct dense_job {
    const kt_par *p;
    int n, in, out;
    const float *x, *w, *b, *dy;
    float *y, *dw, *db, *dx;
} dense_job;

static void dense_fwd_parts(void *ctx, size_t begin, size_t end)
{
    const dense_job *j = ctx;
    for (size_t t = begin; t < end; t++) {
        int s0, s1;
        share(j->n, (int)t, j->p->threads, &s0, &s1);
        if (s0 < s1)
            kt_dense_forward(s1 - s0, j->in, j->out, j->x + (size_t)s0 * j->in, j->w, j->b,
                             j->y + (size_t)s0 * j->out);
    }
}

void kt_par_dense_forward(const kt_par *p, int n, int in, int out, const float *x, const float *w,
                          const float *b, float *y)
{
    if (p->threads <= 1 || n < 2) {
        kt_dense_forward(n, in, out, x, w, b, y);
        return;
    }
    dense_job j = {p, n, in, out, x, w, b, NULL, y, NULL, NULL, NULL};
    kiln__parallel_for(p->threads, (size_t)p->threads, dense_fwd_parts, &j);
}

/* Part t: rows [o0, o1) of dW and db (all samples), and samples [s0, s1)
 * of dx (all of W). */
static void dense_bwd_parts(void *ctx, size_t begin, size_t end)
{
    const dense_job *j = ctx;
    for (size_t t = begin; t < end; t++) {
        int o0, o1, s0, s1;
        share(j->out, (int)t, j->p->threads, &o0, &o1);
        share(j->n, (int)t, j->p->threads, &s0, &s1);
        if (o0 < o1) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o1 - o0, j->in, j->n, 1.0f,
                        j->dy + o0, j->out, j->x, j->in, 1.0f, j->dw + (size_t)o0 * j->in, j->in);
            if (j->db)
                for (int i = 0; i < j->n; i++)
                    for (int o = o0; o < o1; o++) j->db[o] += j->dy[(size_t)i * j->out + o];
        }
        if (j->dx && s0 < s1)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s1 - s0, j->in, j->out, 1.0f,
                        j->dy + (size_t)s0 * j->out, j->out, j->w, j->in, 0.0f,
                        j->dx + (size_t)s0 * j->in, j->in);
    }
}

void kt_par_dense_backward(const kt_par *p, int n, int in, int out, const float *x, const float *w,
                           const float *dy, float *dw_acc, float *db_acc, float *dx)
{
    if (p->threads <= 1 || n < 2) {
        kt_dense_backward(n, in, out, x, w, dy, dw_acc, db_acc, dx);
        return;
    }
    dense_job j = {p, n, in, out, x, w, NULL, dy, NULL, dw_acc, db_acc, dx};
    kiln__parallel_for(p->threads, (size_t)p->threads, dense_bwd_parts, &j);
}

/* Batch norm: channels are independent, so parts take channel ranges and
 * the results do not depend on the split. */
typedef struct bn_job {
    const kt_par *p;
    int n, c, hw;
    const float *x, *gamma, *beta, *dy, *save_mean_in, *save_invstd_in;
    float eps, momentum;
    float *running_mean, *running_var, *save_mean, *save_invstd, *y, *dgamma, *dbeta, *dx;
} bn_job;

static void bn_fwd_parts(void *ctx, size_t begin, size_t end)
{
    const bn_job *j = ctx;
    for (size_t t = begin; t < end; t++) {
        int c0, c1;
        share(j->c, (int)t, j->p->threads, &c0, &c1);
        kt_bn_forward_train_range(j->n, j->c, c0, c1, j->hw, j->x, j->gamma, j->beta, j->eps,
                                  j->momentum, j->running_mean, j->running_var, j->save_mean,
                                  j->save_invstd, j->y);
    }
}

void kt_par_bn_forward_train(const kt_par *p, int n, int c, int hw, const float *x,
                             const float *gamma, const float *beta, float eps, float momentum,
                             float *running_mean, float *running_var, float *save_mean,
                             float *save_invstd, float *y)
{
    bn_job j = {.p = p,
                .n = n,
                .c = c,
                .hw = hw,
                .x = x,
                .gamma = gamma,
                .beta = beta,
                .eps = eps,
                .momentum = momentum,
                .running_mean = running_mean,
                .running_var = running_var,
                .save_mean = save_mean,
                .save_invstd = save_invstd,
                .y = y};
    kiln__parallel_for(c < 2 ? 1 : p->threads, (size_t)p->threads, bn_fwd_parts, &j);
}

static void bn_bwd_parts(void *ctx, size_t begin, size_t end)
{
    const bn_job *j = ctx;
    for (size_t t = begin; t < end; t++) {
        int c0, c1;
        share(j->c, (int)t, j->p->threads, &c0, &c1);
        kt_bn_backward_range(j->n, j->c, c0, c1, j->hw, j->x, j->gamma, j->save_mean_in,
                             j->save_invstd_in, j->dy, j->dgamma, j->dbeta, j->dx);
    }
}

void kt_par_bn_backward(const kt_par *p, int n, int c, int hw, const float *x, const float *gamma,
                        const float *save_mean, const float *save_invstd, const float *dy,
                        float *dgamma_acc, float *dbeta_acc, float *dx)
{
    bn_job j = {.p = p,
                .n = n,
                .c = c,
                .hw = hw,
                .x = x,
                .gamma = gamma,
                .dy = dy,
                .save_mean_in = save_mean,
                .save_invstd_in = save_invstd,
                .dgamma = dgamma_acc,
                .dbeta = dbeta_acc,
                .dx = dx};
    kiln__parallel_for(c < 2 ? 1 : p->threads, (size_t)p->threads, bn_bwd_parts, &j);
}

/* Element-wise passes are memory-bound: split only when large. */
static int elementwise_threads(const kt_par *p, int64_t n)
{
    return n < 65536 ? 1 : p->threads;
}

typedef struct pool_job {
    const kt_par *p;
    const kt_pool *g;
    const float *x, *scale, *shift;
    float *y;
    int32_t *argmax;
} pool_job;

static void bn_pool_fwd_parts(void *ctx, size_t begin, size_t end)
{
    const pool_job *j = ctx;
    const size_t in_sz = (size_t)j->g->c * j->g->h * j->g->w;
    const size_t out_sz = (size_t)j->g->c * j->g->oh * j->g->ow;
    for (size_t t = begin; t < end; t++) {
        int s0, s1;
        share(j->g->n, (int)t, j->p->threads, &s0, &s1);
        if (s0 == s1) continue;
        kt_pool g = *j->g;
        g.n = s1 - s0;
        kt_bn_relu_maxpool_forward(&g, j->x + s0 * in_sz, j->scale, j->shift, j->y + s0 * out_sz,
                                   j->argmax + s0 * out_sz);
    }
}

void kt_par_bn_relu_maxpool_forward(const kt_par *p, const kt_pool *g, const float *x,
                                    const float *scale, const float *shift, float *y,
                                    int32_t *argmax)
{
    pool_job j = {p, g, x, scale, shift, y, argmax};
    const int64_t n = (int64_t)g->n * g->c * g->h * g->w;
    kiln__parallel_for(g->n < 2 ? 1 : elementwise_threads(p, n), (size_t)p->threads,
                       bn_pool_fwd_parts, &j);
}

typedef struct relu_job {
    int64_t n;
    const float *x, *y, *dy;
    float *out;
} relu_job;

static void relu_fwd_range(void *ctx, size_t begin, size_t end)
{
    const relu_job *j = ctx;
    kt_relu_forward((int64_t)(end - begin), j->x + begin, j->out + begin);
}

static void relu_bwd_range(void *ctx, size_t begin, size_t end)
{
    const relu_job *j = ctx;
    kt_relu_backward((int64_t)(end - begin), j->y + begin, j->dy + begin, j->out + begin);
}

void kt_par_relu_forward(const kt_par *p, int64_t n, const float *x, float *y)
{
    relu_job j = {n, x, NULL, NULL, y};
    kiln__parallel_for(elementwise_threads(p, n), (size_t)n, relu_fwd_range, &j);
}

void kt_par_relu_backward(const kt_par *p, int64_t n, const float *y, const float *dy, float *dx)
{
    relu_job j = {n, NULL, y, dy, dx};
    kiln__parallel_for(elementwise_threads(p, n), (size_t)n, relu_bwd_range, &j);
}
