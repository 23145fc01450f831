/* Forward and backward kernels for training (see train_ops.h). */
#include "train_ops.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <string.h>

int kt_conv_geom(kt_conv *g)
{
    if (g->n <= 0 || g->cin <= 0 || g->h <= 0 || g->w <= 0 || g->cout <= 0 || g->k <= 0 ||
        g->stride <= 0 || g->pad < 0)
        return -1;
    int eh = g->h + 2 * g->pad - g->k, ew = g->w + 2 * g->pad - g->k;
    if (eh < 0 || ew < 0) return -1;
    g->oh = eh / g->stride + 1;
    g->ow = ew / g->stride + 1;
    return 0;
}

int64_t kt_conv_workspace(const kt_conv *g)
{
    return (int64_t)g->cin * g->k * g->k * g->oh * g->ow;
}

void kt_im2col(const float *x, int c, int h, int w, int k, int stride, int pad, int oh, int ow,
               float *col)
{
    for (int ch = 0; ch < c; ch++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + (((size_t)ch * k + ky) * k + kx) * oh * ow;
                const float *plane = x + (size_t)ch * h * w;
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * stride - pad + ky;
                    float *r = row + (size_t)oy * ow;
                    if (iy < 0 || iy >= h) {
                        memset(r, 0, (size_t)ow * sizeof *r);
                        continue;
                    }
                    const float *src = plane + (size_t)iy * w;
                    if (stride == 1) {
                        /* a contiguous run, zero edges */
                        int x0 = kx - pad; /* input x of output 0 */
                        int lo = x0 < 0 ? -x0 : 0, hi = w - x0 < ow ? w - x0 : ow;
                        if (lo > ow) lo = ow;
                        if (hi < lo) hi = lo;
                        for (int ox = 0; ox < lo; ox++) r[ox] = 0;
                        if (hi > lo) memcpy(r + lo, src + x0 + lo, (size_t)(hi - lo) * sizeof *r);
                        for (int ox = hi; ox < ow; ox++) r[ox] = 0;
                    } else {
                        for (int ox = 0; ox < ow; ox++) {
                            int ix = ox * stride - pad + kx;
                            r[ox] = (ix >= 0 && ix < w) ? src[ix] : 0.0f;
                        }
                    }
                }
            }
}

void kt_col2im(const float *col, int c, int h, int w, int k, int stride, int pad, int oh, int ow,
               float *x)
{
    for (int ch = 0; ch < c; ch++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = col + (((size_t)ch * k + ky) * k + kx) * oh * ow;
                float *plane = x + (size_t)ch * h * w;
                for (int oy = 0; oy < oh; oy++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= h) continue;
                    const float *r = row + (size_t)oy * ow;
                    float *dst = plane + (size_t)iy * w;
                    if (stride == 1) {
                        /* the outputs whose input x = ox - pad + kx is inside */
                        int x0 = kx - pad;
                        int lo = x0 < 0 ? -x0 : 0, hi = w - x0 < ow ? w - x0 : ow;
                        for (int ox = lo; ox < hi; ox++) dst[x0 + ox] += r[ox];
                        continue;
                    }
                    for (int ox = 0; ox < ow; ox++) {
                        int ix = ox * stride - pad + kx;
                        if (ix >= 0 && ix < w) dst[ix] += r[ox];
                    }
                }
            }
}

void kt_conv_forward(const kt_conv *g, const float *x, const float *wt, const float *bias, float *y,
                     float *ws)
{
    const int ckk = g->cin * g->k * g->k, hw = g->oh * g->ow;
    const size_t in_sz = (size_t)g->cin * g->h * g->w, out_sz = (size_t)g->cout * hw;
    for (int i = 0; i < g->n; i++) {
        const float *xi = x + i * in_sz;
        float *yi = y + i * out_sz;
        const float *col = xi;
        if (!(g->k == 1 && g->stride == 1 && g->pad == 0)) {
            kt_im2col(xi, g->cin, g->h, g->w, g->k, g->stride, g->pad, g->oh, g->ow, ws);
            col = ws;
        }
        for (int o = 0; o < g->cout; o++) {
            float b = bias ? bias[o] : 0.0f;
            float *r = yi + (size_t)o * hw;
            for (int j = 0; j < hw; j++) r[j] = b;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->cout, hw, ckk, 1.0f, wt, ckk, col,
                    hw, 1.0f, yi, hw);
    }
}

void kt_conv_backward(const kt_conv *g, const float *x, const float *wt, const float *dy,
                      float *dw_acc, float *db_acc, float *dx, float *ws)
{
    const int ckk = g->cin * g->k * g->k, hw = g->oh * g->ow;
    const size_t in_sz = (size_t)g->cin * g->h * g->w, out_sz = (size_t)g->cout * hw;
    const int direct = g->k == 1 && g->stride == 1 && g->pad == 0;
    for (int i = 0; i < g->n; i++) {
        const float *xi = x + i * in_sz;
        const float *dyi = dy + i * out_sz;
        if (db_acc)
            for (int o = 0; o < g->cout; o++) {
                const float *r = dyi + (size_t)o * hw;
                float s = 0;
                for (int j = 0; j < hw; j++) s += r[j];
                db_acc[o] += s;
            }
        const float *col = xi;
        if (!direct) {
            kt_im2col(xi, g->cin, g->h, g->w, g->k, g->stride, g->pad, g->oh, g->ow, ws);
            col = ws;
        }
        /* dW[Cout, CKK] += dY[Cout, HW] . col[CKK, HW]^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->cout, ckk, hw, 1.0f, dyi, hw, col,
                    hw, 1.0f, dw_acc, ckk);
        if (!dx) continue;
        float *dxi = dx + i * in_sz;
        if (direct) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, hw, g->cout, 1.0f, wt, ckk,
                        dyi, hw, 0.0f, dxi, hw);
        } else {
            /* dcol[CKK, HW] = W^T . dY, then scattered back into dX */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, hw, g->cout, 1.0f, wt, ckk,
                        dyi, hw, 0.0f, ws, hw);
            memset(dxi, 0, in_sz * sizeof *dxi);
            kt_col2im(ws, g->cin, g->h, g->w, g->k, g->stride, g->pad, g->oh, g->ow, dxi);
        }
    }
}

int kt_pool_geom(kt_pool *g)
{
    if (g->n <= 0 || g->c <= 0 || g->h <= 0 || g->w <= 0 || g->k <= 0 || g->stride <= 0 ||
        g->pad < 0 || g->pad >= g->k)
        return -1;
    int eh = g->h + 2 * g->pad - g->k, ew = g->w + 2 * g->pad - g->k;
    if (eh < 0 || ew < 0) return -1;
    g->oh = eh / g->stride + 1;
    g->ow = ew / g->stride + 1;
    return 0;
}

/* 2x2 windows, stride 2, no padding: the common case, without bounds
 * checks; the same winner as the general loop (first maximum in row order).
 * `relu` clamps the outputs at 0. */
static void maxpool_2x2(const kt_pool *g, const float *x, float *y, int32_t *argmax, int relu)
{
    const size_t planes = (size_t)g->n * g->c;
    const int w = g->w, oh = g->oh, ow = g->ow, hw = g->h * g->w;
    const float lo = relu ? 0.0f : -FLT_MAX;
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * hw;
        float *yp = y + p * oh * ow;
        int32_t *ap = argmax ? argmax + p * oh * ow : NULL;
        for (int oy = 0; oy < oh; oy++) {
            const int i0 = 2 * oy * w, i1 = i0 + w;
            /* max and 0/1 arithmetic, not branches: which of four wins is
             * unpredictable */
            for (int ox = 0; ox < ow; ox++) {
                const int a = i0 + 2 * ox, c = i1 + 2 * ox;
                const float va = xp[a], vb = xp[a + 1], vc = xp[c], vd = xp[c + 1];
                const float t = vb > va ? vb : va, u = vd > vc ? vd : vc;
                const int ti = a + (vb > va), ui = c + (vd > vc), low = u > t;
                const float m = u > t ? u : t;
                yp[oy * ow + ox] = m > lo ? m : lo;
                if (ap) ap[oy * ow + ox] = ti + low * (ui - ti);
            }
        }
    }
}

static void maxpool_forward(const kt_pool *g, const float *x, float *y, int32_t *argmax, int relu)
{
    if (g->k == 2 && g->stride == 2 && g->pad == 0) {
        maxpool_2x2(g, x, y, argmax, relu);
        return;
    }
    const size_t planes = (size_t)g->n * g->c;
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * g->h * g->w;
        float *yp = y + p * g->oh * g->ow;
        int32_t *ap = argmax ? argmax + p * g->oh * g->ow : NULL;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                float best = -FLT_MAX;
                int32_t at = -1;
                for (int ky = 0; ky < g->k; ky++) {
                    int iy = oy * g->stride - g->pad + ky;
                    if (iy < 0 || iy >= g->h) continue;
                    for (int kx = 0; kx < g->k; kx++) {
                        int ix = ox * g->stride - g->pad + kx;
                        if (ix < 0 || ix >= g->w) continue;
                        float v = xp[iy * g->w + ix];
                        if (at < 0 || v > best) best = v, at = iy * g->w + ix;
                    }
                }
                yp[oy * g->ow + ox] = relu && !(best > 0) ? 0.0f : best;
                if (ap) ap[oy * g->ow + ox] = at;
            }
    }
}

void kt_maxpool_forward(const kt_pool *g, const float *x, float *y, int32_t *argmax)
{
    maxpool_forward(g, x, y, argmax, 0);
}

void kt_maxpool_relu_forward(const kt_pool *g, const float *x, float *y, int32_t *argmax)
{
    maxpool_forward(g, x, y, argmax, 1);
}

/* dx = scatter of dy to the winners, only where y > 0 when y is given. */
static void maxpool_backward(const kt_pool *g, const float *dy, const float *y,
                             const int32_t *argmax, float *dx)
{
    const size_t planes = (size_t)g->n * g->c;
    const int ohw = g->oh * g->ow, hw = g->h * g->w;
    if (g->k == 2 && g->stride == 2 && g->pad == 0 && g->h == 2 * g->oh && g->w == 2 * g->ow) {
        /* the windows tile the plane: each writes its four cells, one pass
         * instead of a memset and a scatter */
        const int w = g->w;
        for (size_t p = 0; p < planes; p++) {
            const float *dyp = dy + p * ohw, *yp = y ? y + p * ohw : NULL;
            const int32_t *ap = argmax + p * ohw;
            float *dxp = dx + p * hw;
            for (int oy = 0; oy < g->oh; oy++) {
                float *r0 = dxp + 2 * oy * w, *r1 = r0 + w;
                for (int ox = 0; ox < g->ow; ox++) {
                    const int j = oy * g->ow + ox;
                    r0[2 * ox] = r0[2 * ox + 1] = r1[2 * ox] = r1[2 * ox + 1] = 0.0f;
                    dxp[ap[j]] = !yp || yp[j] > 0 ? dyp[j] : 0.0f;
                }
            }
        }
        return;
    }
    memset(dx, 0, planes * hw * sizeof *dx);
    for (size_t p = 0; p < planes; p++) {
        const float *dyp = dy + p * ohw, *yp = y ? y + p * ohw : NULL;
        const int32_t *ap = argmax + p * ohw;
        float *dxp = dx + p * hw;
        for (int j = 0; j < ohw; j++)
            if (ap[j] >= 0 && (!yp || yp[j] > 0)) dxp[ap[j]] += dyp[j];
    }
}

void kt_maxpool_backward(const kt_pool *g, const float *dy, const int32_t *argmax, float *dx)
{
    maxpool_backward(g, dy, NULL, argmax, dx);
}

void kt_maxpool_relu_backward(const kt_pool *g, const float *dy, const float *y,
                              const int32_t *argmax, float *dx)
{
    maxpool_backward(g, dy, y, argmax, dx);
}

/* The window of output (oy, ox), clipped to the image. */
static void pool_window(const kt_pool *g, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    *y0 = oy * g->stride - g->pad;
    *x0 = ox * g->stride - g->pad;
    *y1 = *y0 + g->k;
    *x1 = *x0 + g->k;
    if (*y0 < 0) *y0 = 0;
    if (*x0 < 0) *x0 = 0;
    if (*y1 > g->h) *y1 = g->h;
    if (*x1 > g->w) *x1 = g->w;
}

void kt_avgpool_forward(const kt_pool *g, const float *x, float *y)
{
    const size_t planes = (size_t)g->n * g->c;
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * g->h * g->w;
        float *yp = y + p * g->oh * g->ow;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int y0, y1, x0, x1;
                pool_window(g, oy, ox, &y0, &y1, &x0, &x1);
                float s = 0;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) s += xp[iy * g->w + ix];
                int cnt = (y1 - y0) * (x1 - x0);
                yp[oy * g->ow + ox] = cnt > 0 ? s / (float)cnt : 0.0f;
            }
    }
}

void kt_avgpool_backward(const kt_pool *g, const float *dy, float *dx)
{
    const size_t planes = (size_t)g->n * g->c;
    memset(dx, 0, planes * g->h * g->w * sizeof *dx);
    for (size_t p = 0; p < planes; p++) {
        const float *dyp = dy + p * g->oh * g->ow;
        float *dxp = dx + p * g->h * g->w;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int y0, y1, x0, x1;
                pool_window(g, oy, ox, &y0, &y1, &x0, &x1);
                int cnt = (y1 - y0) * (x1 - x0);
                if (cnt <= 0) continue;
                float v = dyp[oy * g->ow + ox] / (float)cnt;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) dxp[iy * g->w + ix] += v;
            }
    }
}

void kt_gap_forward(int n, int c, int hw, const float *x, float *y)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        double s = 0;
        for (int j = 0; j < hw; j++) s += x[p * hw + j];
        y[p] = (float)(s / hw);
    }
}

void kt_gap_backward(int n, int c, int hw, const float *dy, float *dx)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        float v = dy[p] / (float)hw;
        for (int j = 0; j < hw; j++) dx[p * hw + j] = v;
    }
}

void kt_dense_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                      float *y)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) y[(size_t)i * out + o] = b ? b[o] : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 1.0f, y,
                out);
}

void kt_dense_backward(int n, int in, int out, const float *x, const float *w, const float *dy,
                       float *dw_acc, float *db_acc, float *dx)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f,
                dw_acc, in);
    if (db_acc)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) db_acc[o] += dy[(size_t)i * out + o];
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in,
                    0.0f, dx, in);
}

void kt_relu_forward(int64_t n, const float *x, float *y)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

void kt_relu_backward(int64_t n, const float *y, const float *dy, float *dx)
{
    /* dy read unconditionally, so the loop is a vectorised select, not a branch */
    for (int64_t i = 0; i < n; i++) {
        float d = dy[i];
        dx[i] = y[i] > 0 ? d : 0.0f;
    }
}

void kt_add_forward(int64_t n, const float *a, const float *b, float *y)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void kt_add_backward(int64_t n, const float *dy, float *da_acc, float *db_acc)
{
    for (int64_t i = 0; i < n; i++) {
        da_acc[i] += dy[i];
        db_acc[i] += dy[i];
    }
}

/*
 * Per-plane sums with eight partial sums in a fixed order: the compiler
 * vectorises them (a single running sum it may not reorder), and the result
 * is the same on every run. Planes are summed into doubles by the callers.
 */
static float plane_sum(const float *p, int n)
{
    float a[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) a[k] += p[j + k];
    float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    for (; j < n; j++) s += p[j];
    return s;
}

static float plane_sq_dev(const float *p, int n, float mean)
{
    float a[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) {
            float d = p[j + k] - mean;
            a[k] += d * d;
        }
    float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    for (; j < n; j++) s += (p[j] - mean) * (p[j] - mean);
    return s;
}

/* sum(dy) and sum(dy * (x - mean)) over a plane. */
static void plane_dy_sums(const float *d, const float *p, int n, float mean, float *sdy,
                          float *sdyx)
{
    float a[8] = {0}, b[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) {
            a[k] += d[j + k];
            b[k] += d[j + k] * (p[j + k] - mean);
        }
    float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    float t = ((b[0] + b[4]) + (b[1] + b[5])) + ((b[2] + b[6]) + (b[3] + b[7]));
    for (; j < n; j++) s += d[j], t += d[j] * (p[j] - mean);
    *sdy = s, *sdyx = t;
}

void kt_bn_forward_train(int n, int c, int hw, const float *x, const float *gamma,
                         const float *beta, float eps, float momentum, float *running_mean,
                         float *running_var, float *save_mean, float *save_invstd, float *y)
{
    kt_bn_forward_train_range(n, c, 0, c, hw, x, gamma, beta, eps, momentum, running_mean,
                              running_var, save_mean, save_invstd, y);
}

void kt_bn_forward_train_range(int n, int c, int c0, int c1, int hw, const float *x,
                               const float *gamma, const float *beta, float eps, float momentum,
                               float *running_mean, float *running_var, float *save_mean,
                               float *save_invstd, float *y)
{
    const double m = (double)n * hw;
    for (int ch = c0; ch < c1; ch++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < n; i++) s += plane_sum(x + ((size_t)i * c + ch) * hw, hw);
        double mean = s / m;
        for (int i = 0; i < n; i++)
            s2 += plane_sq_dev(x + ((size_t)i * c + ch) * hw, hw, (float)mean);
        double var = s2 / m;
        float invstd = (float)(1.0 / sqrt(var + eps));
        save_mean[ch] = (float)mean;
        save_invstd[ch] = invstd;
        double unbiased = m > 1 ? s2 / (m - 1) : var;
        running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * (float)mean;
        running_var[ch] = (1 - momentum) * running_var[ch] + momentum * (float)unbiased;
        if (!y) continue; /* statistics only */
        float a = gamma[ch] * invstd, b = beta[ch] - (float)mean * a;
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            float *q = y + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) q[j] = p[j] * a + b;
        }
    }
}

void kt_bn_forward_infer(int n, int c, int hw, const float *x, const float *gamma,
                         const float *beta, float eps, const float *running_mean,
                         const float *running_var, float *y)
{
    for (int ch = 0; ch < c; ch++) {
        float a = gamma[ch] / sqrtf(running_var[ch] + eps), b = beta[ch] - running_mean[ch] * a;
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            float *q = y + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) q[j] = p[j] * a + b;
        }
    }
}

void kt_bn_backward(int n, int c, int hw, const float *x, const float *gamma,
                    const float *save_mean, const float *save_invstd, const float *dy,
                    float *dgamma_acc, float *dbeta_acc, float *dx)
{
    kt_bn_backward_range(n, c, 0, c, hw, x, gamma, save_mean, save_invstd, dy, dgamma_acc,
                         dbeta_acc, dx);
}

void kt_bn_backward_range(int n, int c, int c0, int c1, int hw, const float *x, const float *gamma,
                          const float *save_mean, const float *save_invstd, const float *dy,
                          float *dgamma_acc, float *dbeta_acc, float *dx)
{
    const double m = (double)n * hw;
    for (int ch = c0; ch < c1; ch++) {
        const float mean = save_mean[ch], inv = save_invstd[ch];
        double sdy = 0, sdyx = 0;
        for (int i = 0; i < n; i++) {
            float a, b;
            plane_dy_sums(dy + ((size_t)i * c + ch) * hw, x + ((size_t)i * c + ch) * hw, hw, mean,
                          &a, &b);
            sdy += a, sdyx += b;
        }
        sdyx *= inv;
        dgamma_acc[ch] += (float)sdyx;
        dbeta_acc[ch] += (float)sdy;
        /* dx = gamma * inv / m * (m dy - sum dy - xhat sum(dy xhat)) */
        const float k = gamma[ch] * inv, mdy = (float)(sdy / m), mdyx = (float)(sdyx / m);
        for (int i = 0; i < n; i++) {
            const float *p = x + ((size_t)i * c + ch) * hw;
            const float *d = dy + ((size_t)i * c + ch) * hw;
            float *q = dx + ((size_t)i * c + ch) * hw;
            for (int j = 0; j < hw; j++) {
                float xhat = (p[j] - mean) * inv;
                q[j] = k * (d[j] - mdy - xhat * mdyx);
            }
        }
    }
}

void kt_bn_scale_shift(int c, const float *gamma, const float *beta, const float *mean,
                       const float *invstd, float *scale, float *shift)
{
    for (int ch = 0; ch < c; ch++) {
        float a = gamma[ch] * invstd[ch];
        scale[ch] = a, shift[ch] = beta[ch] - mean[ch] * a;
    }
}

void kt_bn_scale_shift_infer(int c, const float *gamma, const float *beta, float eps,
                             const float *running_mean, const float *running_var, float *scale,
                             float *shift)
{
    for (int ch = 0; ch < c; ch++) {
        float a = gamma[ch] / sqrtf(running_var[ch] + eps);
        scale[ch] = a, shift[ch] = beta[ch] - running_mean[ch] * a;
    }
}

void kt_bn_relu_maxpool_forward(const kt_pool *g, const float *x, const float *scale,
                                const float *shift, float *y, int32_t *argmax)
{
    const size_t planes = (size_t)g->n * g->c;
    const int w = g->w, oh = g->oh, ow = g->ow, hw = g->h * g->w;
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x + p * hw;
        const float s = scale[p % g->c], t = shift[p % g->c];
        float *yp = y + p * oh * ow;
        int32_t *ap = argmax + p * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const int i0 = 2 * oy * w, i1 = i0 + w;
            for (int ox = 0; ox < ow; ox++) { /* as maxpool_2x2, on x * s + t */
                const int a = i0 + 2 * ox, c = i1 + 2 * ox;
                const float va = xp[a] * s + t, vb = xp[a + 1] * s + t, vc = xp[c] * s + t,
                            vd = xp[c + 1] * s + t;
                const float m0 = vb > va ? vb : va, m1 = vd > vc ? vd : vc;
                const int ti = a + (vb > va), ui = c + (vd > vc), low = m1 > m0;
                const float m = m1 > m0 ? m1 : m0;
                yp[oy * ow + ox] = m > 0 ? m : 0.0f;
                ap[oy * ow + ox] = ti + low * (ui - ti);
            }
        }
    }
}

double kt_softmax_xent(int n, int k, const float *logits, const int32_t *labels, float *dlogits,
                       float *prob, int *correct)
{
    double loss = 0;
    int right = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        int arg = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > z[arg]) arg = j;
        float mx = z[arg];
        double s = 0;
        for (int j = 0; j < k; j++) s += exp((double)(z[j] - mx));
        double lse = log(s) + mx;
        int y = labels[i];
        loss += lse - z[y];
        if (arg == y) right++;
        for (int j = 0; j < k; j++) {
            float p = (float)exp((double)z[j] - lse);
            if (prob) prob[(size_t)i * k + j] = p;
            if (dlogits) dlogits[(size_t)i * k + j] = (p - (j == y ? 1.0f : 0.0f)) / (float)n;
        }
    }
    if (correct) *correct = right;
    return n > 0 ? loss / n : 0.0;
}
