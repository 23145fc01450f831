/*
 * Stride-2 convs of few input channels (a network's stem), included by
 * f32-kernels.inc.c after f32-direct.inc.c and f32-gemm-t.inc.c (whose
 * gemm_i_micro() and stride2_taps() it runs on) and so compiled once per
 * ISA.
 */

/*
 * A stem (a few input channels, a large kernel at stride 2: ResNet's
 * 7x7/2 conv, 147 taps) through gemm_i_micro() a row at a time: each
 * output row's positions in tiles of 14 against W^T panels built from
 * the weights per call (9.4K floats for ResNet50's), into an NHWC row.
 * Unfused, that row goes to y's channel rows through the epilogue. With
 * kiln_epilogue.pool3 the epilogue runs on the NHWC row itself (the same
 * floats: act_row() element by element), and the pool is taken there:
 * the max of a window's three rows, vector by vector, then of each
 * pooled column's three columns; only the pooled row is turned into
 * channel rows (a quarter of the data). A max is exact in any order, so
 * these are MaxPool's floats. The direct stride-2 conv (f32-direct.inc.c)
 * kept positions in the vectors and spent shuffles on the stride; here
 * the stride is only an FMA's broadcast address, and the sum over the
 * taps runs in the direct conv's order: the floats are the same.
 * ResNet50's stem with its pool in the model, 2 x 60 alternating pairs
 * in one process (2026-12-06): 0.79x the time at 1 and at 2 threads.
 */

/* Taps from which a stride-2 conv with few input channels takes this
 * path (MobileNetV2's 3x3/2 stem, 27 taps, stays direct). */
#define STEM_I_K_MIN 96
#define STEM_I_K_MAX 1024

typedef struct stem_i_job {
    const kiln_conv2d_shape *s;
    const kiln_epilogue *ep;
    int h_out, w_out, PW, PH, K, p_h, p_w;
    const float *x;  /* one image */
    float *xp;       /* its zero-padded planes */
    const float *wt; /* W^T in panels of GEMM_NR channels, [panel][K][GEMM_NR] */
    float *y;        /* one image's output (pooled with pool3) */
    const float *res;
    float *slots; /* per caller: stem_i_rows()'s or stem_i_pooled()'s rows */
    size_t slot;
    int units; /* runs of output (or pooled) rows */
    jobq next; /* the units not yet taken */
    int tap[STEM_I_K_MAX];
} stem_i_job;

static size_t stem_i_slot_floats(const kiln_conv2d_shape *s, int w_out)
{
    const size_t align = KILN_ALIGN / sizeof(float);
    return ((size_t)4 * w_out * s->c_out + (size_t)GEMM_T_STORE_BLOCK * w_out + align - 1) / align *
           align;
}

/* Workspace floats: the padded planes with 3 rows of slack, W^T, and a
 * slot per thread. */
static size_t stem_i_workspace_floats(const kiln_conv2d_shape *s, int w_out, int threads)
{
    const size_t align = KILN_ALIGN / sizeof(float);
    const size_t PW = (size_t)s->w_in + s->pad_l + s->pad_r,
                 PH = (size_t)s->h_in + s->pad_t + s->pad_b;
    const size_t planes = ((size_t)s->c_in * PH * PW + 3 * PW + align - 1) / align * align;
    const size_t wt = ((size_t)s->c_in * s->k_h * s->k_w * s->c_out + align - 1) / align * align;
    return planes + wt + (size_t)(threads < 1 ? 1 : threads) * stem_i_slot_floats(s, w_out);
}

/* Whether the conv (and its epilogue) takes this path. Not with a
 * sigmoid: act_row() computes a row's last floats past whole vectors with
 * expf(), so the conv's own rows (the unfused store, by channel) and its
 * NHWC rows (the fused pool's, by position) would differ in the last bit. */
static int stem_i_ok(const kiln_conv2d_shape *s, const kiln_epilogue *ep, int h_out, int w_out,
                     int threads)
{
    const int K = s->c_in * s->k_h * s->k_w;
    return ep->act != KILN_ACT_SIGMOID && s->groups == 1 && s->stride_h == 2 && s->stride_w == 2 &&
           s->dil_h == 1 && s->dil_w == 1 && K >= STEM_I_K_MIN && K <= STEM_I_K_MAX &&
           s->c_out % GEMM_NR == 0 && w_out >= GEMM_MR && w_out <= DC2_POOL_W_MAX &&
           stem_i_workspace_floats(s, w_out, threads) <= (size_t)K * h_out * w_out;
}

/* Padded rows [begin, end) of all the planes (row r: plane r / PH), so
 * that two threads share even a 3-plane input. */
static void stem_i_pad_range(void *ctx, size_t begin, size_t end)
{
    const stem_i_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    for (size_t r = begin; r < end; r++)
        pad_row(s, j->x + r / (size_t)j->PH * s->h_in * s->w_in, (int)(r % (size_t)j->PH),
                j->xp + r * j->PW);
}

/* Output row oh into the NHWC row nhwc ([w_out][c_out]). */
static void stem_i_conv_row(const stem_i_job *j, int oh, float *nhwc)
{
    const int c_out = j->s->c_out, n_panels = c_out / GEMM_NR;
    const float *a0 = j->xp + (size_t)oh * 2 * j->PW;
    for (int p = 0; p < n_panels; p++)
        for (int ow = 0; ow < j->w_out; ow += GEMM_MR) {
            const int mr = j->w_out - ow < GEMM_MR ? j->w_out - ow : GEMM_MR;
            gemm_i_micro(j->tap, j->K, a0 + 2 * (size_t)ow, j->wt + (size_t)p * j->K * GEMM_NR,
                         GEMM_NR, nhwc + (size_t)ow * c_out + (size_t)p * GEMM_NR, (size_t)c_out,
                         mr, NULL, 0);
        }
}

/* The NHWC row's channels [0, c_out), each through the epilogue (its
 * residual row res + c * res_ld, if any) into dst + c * ld. */
static void stem_i_emit(const stem_i_job *j, const float *nhwc, float *dst, size_t ld,
                        const float *res, size_t res_ld, float *blk)
{
    const kiln_epilogue *ep = j->ep;
    const int c_out = j->s->c_out, w_out = j->w_out;
    for (int c0 = 0; c0 < c_out; c0 += GEMM_T_STORE_BLOCK) {
        const int nc = c_out - c0 < GEMM_T_STORE_BLOCK ? c_out - c0 : GEMM_T_STORE_BLOCK;
        nhwc_to_planes(nhwc + c0, (size_t)c_out, w_out, nc, blk, (size_t)w_out);
        for (int cc = 0; cc < nc; cc++) {
            const size_t c = (size_t)c0 + cc;
            act_row((size_t)w_out, blk + (size_t)cc * w_out, ep->bias ? ep->bias[c] : 0.0f, NULL,
                    res ? res + c * res_ld : NULL, ep, dst + c * ld);
        }
    }
}

/* Output row oh into the NHWC row nhwc through the epilogue (bias and
 * activation, which act_row() computes element by element as it does on
 * the channels' rows). */
static void stem_i_conv_act(const stem_i_job *j, int oh, float *nhwc)
{
    const int c_out = j->s->c_out;
    stem_i_conv_row(j, oh, nhwc);
    for (int ow = 0; ow < j->w_out; ow++) {
        float *v = nhwc + (size_t)ow * c_out;
        act_row((size_t)c_out, v, 0.0f, j->ep->bias, NULL, j->ep, v);
    }
}

/* Output rows [oh0, oh1) to y through the epilogue, in the slot at nhwc
 * (an NHWC row, then GEMM_T_STORE_BLOCK rows for the transposes). */
static void stem_i_rows(const stem_i_job *j, int oh0, int oh1, float *nhwc)
{
    const int w_out = j->w_out;
    const size_t plane = (size_t)j->h_out * w_out;
    float *blk = nhwc + (size_t)w_out * j->s->c_out;
    for (int oh = oh0; oh < oh1; oh++) {
        stem_i_conv_row(j, oh, nhwc);
        const size_t off = (size_t)oh * w_out;
        stem_i_emit(j, nhwc, j->y + off, plane, j->res ? j->res + off : NULL, plane, blk);
    }
}

/* Pooled rows [p0, p1) (kiln_epilogue.pool3) in the slot at nhwc: three
 * NHWC rows after the epilogue, then the pooled row. Pooled row po is the
 * max of conv rows 2 po - 1 .. 2 po + 1 (those inside), then of columns
 * 2 pw - 1 .. 2 pw + 1; its last conv row is the next one's first. */
static void stem_i_pooled(const stem_i_job *j, int p0, int p1, float *nhwc)
{
    const int w_out = j->w_out, h_out = j->h_out, c_out = j->s->c_out;
    const size_t n = (size_t)w_out * c_out;
    float *rb[3] = {nhwc, nhwc + n, nhwc + 2 * n};
    float *prow = nhwc + 3 * n;
    const size_t p_plane = (size_t)j->p_h * j->p_w;
    int held = -1; /* the conv row in rb[0], if any */
    for (int po = p0; po < p1; po++) {
        const int lo = 2 * po - 1, mid = 2 * po, hi = 2 * po + 1 < h_out ? 2 * po + 1 : mid;
        /* rb[0]: row lo (none at the top), rb[1]: mid, rb[2]: hi */
        if (lo >= 0 && held != lo) stem_i_conv_act(j, lo, rb[0]);
        stem_i_conv_act(j, mid, rb[1]);
        if (hi > mid) stem_i_conv_act(j, hi, rb[2]);
        for (size_t i = 0; i < n; i += VW) {
            vf m = V_LOADU(rb[1] + i);
            if (lo >= 0) m = V_MAX(m, V_LOADU(rb[0] + i));
            if (hi > mid) m = V_MAX(m, V_LOADU(rb[2] + i));
            V_STOREU(rb[1] + i, m);
        }
        /* each pooled column: the max of columns 2 pw - 1 .. 2 pw + 1 */
        for (int pw = 0; pw < j->p_w; pw++) {
            const int c_lo = 2 * pw - 1 < 0 ? 0 : 2 * pw - 1;
            const int c_hi = 2 * pw + 1 < w_out ? 2 * pw + 1 : w_out - 1;
            for (int c = 0; c < c_out; c += VW) {
                vf m = V_LOADU(rb[1] + (size_t)c_lo * c_out + c);
                for (int col = c_lo + 1; col <= c_hi; col++)
                    m = V_MAX(m, V_LOADU(rb[1] + (size_t)col * c_out + c));
                V_STOREU(prow + (size_t)pw * c_out + c, m);
            }
        }
        for (int c0 = 0; c0 < c_out; c0 += GEMM_T_STORE_BLOCK) {
            const int nc = c_out - c0 < GEMM_T_STORE_BLOCK ? c_out - c0 : GEMM_T_STORE_BLOCK;
            nhwc_to_planes(prow + c0, (size_t)c_out, j->p_w, nc,
                           j->y + (size_t)c0 * p_plane + (size_t)po * j->p_w, p_plane);
        }
        /* row hi is the next window's row lo */
        float *t = rb[0];
        rb[0] = rb[2];
        rb[2] = t;
        held = hi > mid ? hi : -1;
    }
}

/* Takes units (runs of output rows, or of pooled rows with pool3) from
 * the front (the caller) or the back until none are left, in the slot of
 * part `begin`. */
static void stem_i_units(void *ctx, size_t begin, size_t end)
{
    stem_i_job *j = ctx;
    (void)end;
    float *slot = j->slots + begin * j->slot;
    for (int u; (u = jobq_take(&j->next, begin == 0)) >= 0;) {
        const int rows = j->ep->pool3 ? j->p_h : j->h_out;
        const int r0 = rows * u / j->units, r1 = rows * (u + 1) / j->units;
        if (j->ep->pool3)
            stem_i_pooled(j, r0, r1, slot);
        else
            stem_i_rows(j, r0, r1, slot);
    }
}

/* Runs of rows per thread: the first conv row of each pooled run is
 * computed twice. */
#define STEM_I_RUNS_PER_THREAD 2

static void conv2d_stem_i(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                          const float *w, const kiln_epilogue *ep, float *y, float *ws, int threads)
{
    const size_t align = KILN_ALIGN / sizeof(float);
    const int K = s->c_in * s->k_h * s->k_w, c_out = s->c_out;
    const int PW = s->w_in + s->pad_l + s->pad_r, PH = s->h_in + s->pad_t + s->pad_b;
    const size_t planes = ((size_t)s->c_in * PH * PW + 3 * (size_t)PW + align - 1) / align * align;
    const size_t wt_floats = ((size_t)K * c_out + align - 1) / align * align;
    float *wt = ws + planes;
    /* W^T: panel p, tap k, channel p * GEMM_NR + c */
    for (int p = 0; p < c_out / GEMM_NR; p++)
        for (int k = 0; k < K; k++)
            for (int c = 0; c < GEMM_NR; c++)
                wt[((size_t)p * K + k) * GEMM_NR + c] = w[(size_t)(p * GEMM_NR + c) * K + k];
    /* the slack rows a row's last, partial tile reads past the planes */
    memset(ws + (size_t)s->c_in * PH * PW, 0, sizeof(float) * 3 * (size_t)PW);
    const int p_h = kiln__pool3_side(h_out), p_w = kiln__pool3_side(w_out);
    const size_t x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t y_img = ep->pool3 ? (size_t)c_out * p_h * p_w : (size_t)c_out * h_out * w_out;
    const size_t macs = (size_t)c_out * h_out * w_out * K;
    const int parts = macs < (1u << 22) || threads < 1 ? 1 : threads;
    stem_i_job j = {.s = s,
                    .ep = ep,
                    .h_out = h_out,
                    .w_out = w_out,
                    .PW = PW,
                    .PH = PH,
                    .K = K,
                    .p_h = p_h,
                    .p_w = p_w,
                    .xp = ws,
                    .wt = wt,
                    .slots = wt + wt_floats,
                    .slot = stem_i_slot_floats(s, w_out),
                    .units = STEM_I_RUNS_PER_THREAD * parts};
    stride2_taps(s, PW, PH, j.tap);
    for (int b = 0; b < s->n; b++) {
        j.x = x + b * x_img;
        j.y = y + b * y_img;
        j.res = ep->residual ? ep->residual + b * y_img : NULL;
        kiln__parallel_for(parts, (size_t)s->c_in * PH, stem_i_pad_range, &j);
        jobq_init(&j.next, j.units);
        /* a slot per caller: begin is unique among them (parts units a
         * call at most, one chunk each) */
        kiln__parallel_for(parts, (size_t)parts, stem_i_units, &j);
    }
}

/* A stride-2 conv of few input channels (direct2_ok(); with pool3,
 * conv2d_pool3_ok()): the row path where it takes the conv and its
 * epilogue, else the direct conv (f32-direct.inc.c). Both read the
 * weights in ONNX order at the start of packed (kernels.c). */
static void conv2d_stride2_few(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                               const float *packed, const kiln_epilogue *ep, float *y, float *ws,
                               int threads)
{
    if (stem_i_ok(s, ep, h_out, w_out, threads))
        conv2d_stem_i(s, h_out, w_out, x, packed, ep, y, ws, threads);
    else
        conv2d_direct2(s, h_out, w_out, x, packed, ep, y, ws, threads);
}
