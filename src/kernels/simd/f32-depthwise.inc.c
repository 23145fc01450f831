/*
 * Depthwise convs (groups == channels: MobileNetV2's 3x3), included by
 * f32-kernels.inc.c after the activations and the GEMM, and so compiled
 * once per ISA.
 */

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

/* acc + one kernel row's kw_n taps: weights wr, inputs from p, dw apart,
 * each a vector of output columns at stride sw (1 or 2). */
static inline vf dw_taps(const float *p, const float *wr, int kw_n, int dw, int sw, vf acc)
{
    if (sw == 1)
        for (int kw = 0; kw < kw_n; kw++) acc = V_FMA(V_LOADU(p + kw * dw), V_SET1(wr[kw]), acc);
    else
        for (int kw = 0; kw < kw_n; kw++)
            acc = V_FMA(v_load_even(p + kw * dw), V_SET1(wr[kw]), acc);
    return acc;
}
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
            acc = dw_taps(p, wr, kw_n, dw, sw, acc);
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

/*
 * 3x3 stride 2 (MobileNetV2's downsampling depthwise layers): each padded
 * input row is stored split into its even and its odd columns, [E | O],
 * L / 2 floats each, so that the three taps of a kernel row are plain loads
 * E[ow], O[ow], E[ow + 1] of a vector of output columns. Gathering the even
 * columns once per input row (two permutes per 2 * VW inputs) replaces
 * nine gathers per output vector; an input row is read by 1.5 output rows
 * on average.
 */
static void dw_plane_3x3s2(const kiln_conv2d_shape *s, int h_out, int w_out, const float *xc,
                           const float *w, float bias, const float *res, const kiln_epilogue *ep,
                           float *yp)
{
    /* VW floats of slack: the last row's odd half is written in whole vectors. */
    float pp[DW_PLANE_MAX + 16];
    float row[DW_ROW_MAX + 6 * 16]; /* Lr <= L + 4 * VW - 2, zeroed in whole vectors */
    const int nvec = (w_out + VW - 1) / VW;
    const int L = dw_row_len(s, w_out), half = L / 2, H = s->h_in + s->pad_t + s->pad_b;
    /* The padded row as far as the even/odd gathers read it. */
    const int n_gather = (half + VW - 1) / VW, Lr = 2 * n_gather * VW + 2 * VW;
    const int j0 = s->pad_l < Lr ? s->pad_l : Lr;
    const int j1 = s->pad_l + s->w_in < Lr ? s->pad_l + s->w_in : Lr;
    /* Rows in order: a row's whole-vector writes that run past its half
     * (into O, or into the next row) are overwritten by what comes next. */
    for (int r = 0; r < H; r++) {
        float *E = pp + (size_t)r * L, *O = E + half;
        const int ih = r - s->pad_t;
        if (ih < 0 || ih >= s->h_in) {
            memset(E, 0, sizeof(float) * L);
            continue;
        }
        const float *src = xc + (size_t)ih * s->w_in + (j0 - s->pad_l);
        for (int i = 0; i < j0; i++) row[i] = 0.0f;
        for (int i = 0; i < j1 - j0; i++) row[j0 + i] = src[i];
        for (int i = j1; i < Lr; i += VW) V_STOREU(row + i, V_ZERO());
        for (int g = 0; g < n_gather; g++) V_STOREU(E + g * VW, v_load_even(row + 2 * g * VW));
        for (int g = 0; g < n_gather; g++) V_STOREU(O + g * VW, v_load_even(row + 2 * g * VW + 1));
    }
    vf wv[9];
    for (int t = 0; t < 9; t++) wv[t] = V_SET1(w[t]);
    for (int oh = 0; oh < h_out; oh++) {
        const float *e0 = pp + (size_t)(2 * oh) * L, *e1 = e0 + L, *e2 = e1 + L;
        float *yr = yp + (size_t)oh * w_out;
        for (int v = 0; v < nvec; v++) {
            const int ow = v * VW;
            vf acc = V_MUL(V_LOADU(e0 + ow), wv[0]);
            acc = V_FMA(V_LOADU(e0 + half + ow), wv[1], acc);
            acc = V_FMA(V_LOADU(e0 + ow + 1), wv[2], acc);
            acc = V_FMA(V_LOADU(e1 + ow), wv[3], acc);
            acc = V_FMA(V_LOADU(e1 + half + ow), wv[4], acc);
            acc = V_FMA(V_LOADU(e1 + ow + 1), wv[5], acc);
            acc = V_FMA(V_LOADU(e2 + ow), wv[6], acc);
            acc = V_FMA(V_LOADU(e2 + half + ow), wv[7], acc);
            acc = V_FMA(V_LOADU(e2 + ow + 1), wv[8], acc);
            if (ow + VW <= w_out)
                V_STOREU(yr + ow, acc);
            else
                v_store_part(yr + ow, acc, w_out - ow);
        }
    }
    if (bias != 0.0f || res || ep->act != KILN_ACT_NONE)
        act_row((size_t)h_out * w_out, yp, bias, NULL, res, ep, yp);
}

/* A whole output plane from one zero-padded copy of its input plane: each
 * input row is copied once (not once per output row that reads it), which
 * is most of the cost on the small planes of a network's later layers. */
static void dw_plane_padded(const kiln_conv2d_shape *s, int h_out, int w_out, const float *xc,
                            const float *w, float bias, const float *res, const kiln_epilogue *ep,
                            float *yp)
{
    float pp[DW_PLANE_MAX];
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
                acc = dw_taps(p, wr, kw_n, dw, sw, acc);
            }
            float *yr = yp + (size_t)oh * w_out;
            if (ow + VW <= w_out)
                V_STOREU(yr + ow, acc);
            else /* the row's tail */
                v_store_part(yr + ow, acc, w_out - ow);
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
    /* Below 48 output columns the split rows cost about what the gathers
     * they save did (measured on MobileNetV2's 14x14 and 28x28 layers). */
    const int k3s2 = s->k_h == 3 && s->k_w == 3 && s->stride_h == 2 && s->stride_w == 2 &&
                     s->dil_h == 1 && s->dil_w == 1 && w_out >= 48;
    for (size_t p = begin; p < end; p++) {
        const int b = (int)(p / s->c_out), oc = (int)(p % s->c_out);
        const float *xc = x + ((size_t)b * s->c_in + oc / mult) * plane_in;
        size_t yoff = ((size_t)b * s->c_out + oc) * plane_out;
        const int padded = dw_padded_ok(s, w_out);
        if (padded &&
            (long)(s->h_in + s->pad_t + s->pad_b) * dw_row_len(s, w_out) <= DW_PLANE_MAX) {
            (k3s2 ? dw_plane_3x3s2 : dw_plane_padded)(
                s, h_out, w_out, xc, w + oc * taps, ep->bias ? ep->bias[oc] : 0.0f,
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
