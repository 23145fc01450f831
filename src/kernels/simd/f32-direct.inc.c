/*
 * The conv paths beside the GEMM's and Winograd's, included by
 * f32-kernels.inc.c after f32-winograd.inc.c (they use conv_ops and the
 * GEMM), and so compiled once per ISA: a direct conv for convs with a few
 * input channels, and the B packing from padded planes for GEMM convs at
 * strides 1 and 2.
 */

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
#define DC_CIN_MAX   3     /* most input channels taken here (but see DC_ROWS) */
#define DC_K_MAX     11    /* largest kernel side */
#define DC_PLANE_MAX 16384 /* floats of the padded input planes (stack) */

/* Floats per padded input row: whole vectors of output columns plus the
 * kernel's reach. */
static int dc_row_len(const kiln_conv2d_shape *s, int w_out)
{
    return (w_out + VW - 1) / VW * VW + s->k_w - 1;
}

/* Input channels the direct conv takes where an output row is one vector
 * (the DC_ROWS tile). */
#define DC_ROWS_CIN_MAX 32
#define DC_ROWS         3 /* output rows per DC_TILE_ROWS tile: 24 accumulators */

static int direct_fits(const kiln_conv2d_shape *s, int w_out, int cin_max)
{
    if (s->groups != 1 || s->c_in > cin_max || s->stride_h != 1 || s->stride_w != 1 ||
        s->dil_h != 1 || s->dil_w != 1 || s->k_h > DC_K_MAX || s->k_w > DC_K_MAX)
        return 0;
    long rows = (long)s->h_in + s->pad_t + s->pad_b;
    return (long)s->c_in * rows * dc_row_len(s, w_out) <= DC_PLANE_MAX;
}

static int direct_ok(const kiln_conv2d_shape *s, int w_out)
{
    return direct_fits(s, w_out, DC_CIN_MAX);
}

/*
 * Convs of up to 32 input channels whose output rows are each one
 * half-to-full vector (8 to 16 columns on AVX-512: LeNet's and the MNIST
 * CNN's conv2 at 14x14, the CIFAR-10 CNN's 16x16 conv) run on the direct
 * conv's DC_ROWS tile ahead of the turned-around GEMM and Winograd: no
 * X^T or transforms to write, and three output rows share each weight
 * broadcast. Only with 32 vector registers (its 24 accumulators).
 * Measured 2026-12-05, 1 thread unless said, alternating with the path
 * before (kiln bench model M --layers): the MNIST CNN's conv2 0.057-0.059
 * -> 0.054 ms at batch 1, 0.444-0.459 -> 0.363-0.370 at batch 8 (the
 * server's rounds); LeNet's conv2 0.151-0.158 -> 0.137-0.139, at 2 threads
 * 0.112-0.127 -> 0.072-0.074; the CIFAR-10 CNN's 16x16 conv even (0.058-0.060).
 * The packed weights stay what kiln__conv2d_is_gemm_t() and the rest say
 * (they do not depend on the ISA); this path reads their ONNX-order prefix.
 */
static int direct_rows_ok(const kiln_conv2d_shape *s, int h_out, int w_out)
{
    return VW >= 16 && w_out <= VW && 2 * w_out >= VW && h_out >= DC_ROWS && s->k_h * s->k_w > 1 &&
           direct_fits(s, w_out, DC_ROWS_CIN_MAX);
}

typedef struct dc_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, n_blocks;
    const float *x, *w;
    const kiln_epilogue *ep;
    float *y;
} dc_job;

/* Floats of a block's output planes that a fused 2x2 max pool
 * (kiln_epilogue.pool2) keeps on the stack before pooling them: DC_OB
 * planes of up to 32 x 32 (the CIFAR-10 CNN's first conv; the MNIST CNN's
 * and LeNet's are 28 x 28 and smaller), 32 KB, in L1. */
#define DC_POOL_MAX (DC_OB * 1024)

/* Output row oh of channels [oc0, oc0 + nb) for the column vectors
 * starting at ow (NV of them), each tap's NV input vectors read from
 * ROW(ic, kh) + TAP(kw): the direct conv's padded planes (DC_TILE) or the
 * stride-2 conv's column-parity planes (DC2_TILE); stored as row OHS of
 * the planes at yb (oh itself, or a row of a fused pool's window). */
#define DC_TILE_AT(NV, ROW, TAP, OHS)                                                         \
    do {                                                                                      \
        vf acc[NV][DC_OB];                                                                    \
        for (int v = 0; v < NV; v++)                                                          \
            for (int b = 0; b < DC_OB; b++) acc[v][b] = V_ZERO();                             \
        const float *wt = wb;                                                                 \
        for (int ic = 0; ic < s->c_in; ic++)                                                  \
            for (int kh = 0; kh < s->k_h; kh++) {                                             \
                const float *p = (ROW);                                                       \
                for (int kw = 0; kw < s->k_w; kw++, wt += DC_OB) {                            \
                    const float *q = p + (TAP);                                               \
                    vf xv[NV];                                                                \
                    for (int v = 0; v < NV; v++) xv[v] = V_LOADU(q + v * VW);                 \
                    for (int b = 0; b < DC_OB; b++) {                                         \
                        const vf wv = V_SET1(wt[b]);                                          \
                        for (int v = 0; v < NV; v++) acc[v][b] = V_FMA(xv[v], wv, acc[v][b]); \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        for (int b = 0; b < nb; b++)                                                          \
            for (int v = 0; v < NV; v++)                                                      \
                dc_store(acc[v][b], ow + v * VW, w_out, oh_lim, yb + (size_t)b * plane_out,   \
                         res ? res + (size_t)b * plane_out : NULL, OHS, bias[b], ep);         \
    } while (0)

#define DC_TILE(NV) DC_TILE_AT(NV, pp + ((size_t)ic * rows + oh + kh) * L + ow, kw, oh)

/* Output rows [oh, oh + DC_ROWS) of channels [oc0, oc0 + nb), where an
 * output row is one vector (w_out <= VW): each weight broadcast feeds
 * DC_ROWS FMAs (DC_TILE(1)'s one FMA per broadcast is load-bound). */
#define DC_TILE_ROWS()                                                                             \
    do {                                                                                           \
        vf acc[DC_ROWS][DC_OB];                                                                    \
        for (int r = 0; r < DC_ROWS; r++)                                                          \
            for (int b = 0; b < DC_OB; b++) acc[r][b] = V_ZERO();                                  \
        const float *wt = wb;                                                                      \
        for (int ic = 0; ic < s->c_in; ic++)                                                       \
            for (int kh = 0; kh < s->k_h; kh++) {                                                  \
                const float *p = pp + ((size_t)ic * rows + oh + kh) * L;                           \
                for (int kw = 0; kw < s->k_w; kw++, wt += DC_OB) {                                 \
                    vf xv[DC_ROWS];                                                                \
                    for (int r = 0; r < DC_ROWS; r++) xv[r] = V_LOADU(p + (size_t)r * L + kw);     \
                    for (int b = 0; b < DC_OB; b++) {                                              \
                        const vf wv = V_SET1(wt[b]);                                               \
                        for (int r = 0; r < DC_ROWS; r++) acc[r][b] = V_FMA(xv[r], wv, acc[r][b]); \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        for (int b = 0; b < nb; b++)                                                               \
            for (int r = 0; r < DC_ROWS; r++)                                                      \
                dc_store(acc[r][b], 0, w_out, h_out, yb + (size_t)b * plane_out,                   \
                         res ? res + (size_t)b * plane_out : NULL, oh + r, bias[b], ep);           \
    } while (0)

/* One vector of an output row, the epilogue in registers. A row's last,
 * partial vector is stored whole too where rows [0, h_out) have room (its
 * extra lanes land in the next rows, which the same caller computes later
 * and so overwrites them); past them it goes through a buffer. */
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
    if (whole)
        V_STOREU(yr, v);
    else
        v_store_part(yr, v, n);
}

#ifdef V_HAS_PAIR_MAX
/* Channels per pass of dc_pool_tile(): 2 rows x 2 vectors x 4 = 16
 * accumulators. */
#define DC_POOL_OB 4

/*
 * Output rows oh and oh + 1 (one or two vectors each: VW < w_out <= 2 VW)
 * of channels [4 half, 4 half + nb) of a block, pooled 2x2 in registers
 * into row oh / 2 of the pooled planes yp: each accumulator gets the
 * epilogue exactly as dc_store() gives it, then the max of the four, so
 * the floats are those of the conv, stored, then MaxPool (the unfused
 * path), with a quarter of the stores and no second pass.
 */
static inline void dc_pool_tile(const kiln_conv2d_shape *s, const float *pp, int rows, int L,
                                int oh, int w_out, const float *wb, int half, const float *bias,
                                int nb, const kiln_epilogue *ep, float *yp, size_t pplane)
{
    vf acc[2][2][DC_POOL_OB];
    for (int r = 0; r < 2; r++)
        for (int v = 0; v < 2; v++)
            for (int b = 0; b < DC_POOL_OB; b++) acc[r][v][b] = V_ZERO();
    const float *wt = wb + half * DC_POOL_OB;
    for (int ic = 0; ic < s->c_in; ic++)
        for (int kh = 0; kh < s->k_h; kh++) {
            const float *p0 = pp + ((size_t)ic * rows + oh + kh) * L, *p1 = p0 + L;
            for (int kw = 0; kw < s->k_w; kw++, wt += DC_OB) {
                const vf x00 = V_LOADU(p0 + kw), x01 = V_LOADU(p0 + kw + VW);
                const vf x10 = V_LOADU(p1 + kw), x11 = V_LOADU(p1 + kw + VW);
                for (int b = 0; b < DC_POOL_OB; b++) {
                    const vf wv = V_SET1(wt[b]);
                    acc[0][0][b] = V_FMA(x00, wv, acc[0][0][b]);
                    acc[0][1][b] = V_FMA(x01, wv, acc[0][1][b]);
                    acc[1][0][b] = V_FMA(x10, wv, acc[1][0][b]);
                    acc[1][1][b] = V_FMA(x11, wv, acc[1][1][b]);
                }
            }
        }
    const int n = w_out / 2;
    const vf alpha = V_SET1(ep->alpha), lo = V_SET1(ep->lo), hi = V_SET1(ep->hi);
    float *yr = yp + (size_t)(oh / 2) * n;
    for (int b = 0; b < nb; b++) {
        const vf bv = V_SET1(bias[half * DC_POOL_OB + b]);
        vf e[2][2];
        for (int r = 0; r < 2; r++)
            for (int v = 0; v < 2; v++)
                e[r][v] = v_act(V_ADD(acc[r][v][b], bv), ep->act, alpha, lo, hi);
        const vf m = v_pair_max(V_MAX(e[0][0], e[1][0]), V_MAX(e[0][1], e[1][1]));
        if (n == VW)
            V_STOREU(yr + (size_t)b * pplane, m);
        else
            v_store_part(yr + (size_t)b * pplane, m, n);
    }
}
#endif

/* Floats of re-laid weights direct_range() keeps on its stack (128 KB):
 * at least one block of the largest kernel. */
#define DC_W_MAX 32768
_Static_assert(DC_W_MAX >= DC_ROWS_CIN_MAX * DC_K_MAX * DC_K_MAX * DC_OB, "one block must fit");

/* Output-channel block ob's weights tap-major, DC_OB per tap, zeros past
 * c_out. */
static void dc_lay_weights(const dc_job *j, int ob, float *wb)
{
    const kiln_conv2d_shape *s = j->s;
    const int K = s->c_in * s->k_h * s->k_w, oc0 = ob * DC_OB;
    const int nb = s->c_out - oc0 < DC_OB ? s->c_out - oc0 : DC_OB;
    for (int b = 0; b < DC_OB; b++)
        for (int t = 0; t < K; t++)
            wb[t * DC_OB + b] = b < nb ? j->w[(size_t)(oc0 + b) * K + t] : 0.0f;
}

/* Blocks [begin, end) of (image, DC_OB output channels). */
static void direct_range(void *ctx, size_t begin, size_t end)
{
    const dc_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const kiln_epilogue *ep = j->ep;
    const int h_out = j->h_out, w_out = j->w_out, L = dc_row_len(s, w_out), oh_lim = h_out;
    const int rows = s->h_in + s->pad_t + s->pad_b, K = s->c_in * s->k_h * s->k_w;
    const size_t plane_in = (size_t)s->h_in * s->w_in, plane_out = (size_t)h_out * w_out;
    float pp[DC_PLANE_MAX];
    float pool_buf[DC_POOL_MAX];
    /* The weights tap-major, DC_OB per tap (zeros past c_out): every
     * block's at once when they fit, else the current block's. */
    float wall[DC_W_MAX];
    const size_t blk_floats = (size_t)K * DC_OB;
    const int all = blk_floats * j->n_blocks <= DC_W_MAX;
    int laid = -1; /* the block wall holds, when not all */
    if (all)
        for (int ob = 0; ob < j->n_blocks; ob++) dc_lay_weights(j, ob, wall + ob * blk_floats);
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
        const int ob = oc0 / DC_OB;
        if (!all && laid != ob) {
            dc_lay_weights(j, ob, wall);
            laid = ob;
        }
        const float *wb = all ? wall + ob * blk_floats : wall;
        float bias[DC_OB];
        for (int b = 0; b < DC_OB; b++) bias[b] = ep->bias && b < nb ? ep->bias[oc0 + b] : 0.0f;
        const size_t yoff = ((size_t)img * s->c_out + oc0) * plane_out;
        /* Pooled: the block's planes go to pool_buf, then through the 2x2
         * pool into y; so y's floats are MaxPool's of the unfused output. */
        float *yb = ep->pool2 ? pool_buf : j->y + yoff;
        const float *res = ep->residual ? ep->residual + yoff : NULL;
#ifdef V_HAS_PAIR_MAX
        if (ep->pool2 && w_out > VW && w_out <= 2 * VW) {
            /* pooled in registers, two rows at a time (h_out is even) */
            float *yp = j->y + yoff / 4;
            const size_t pplane = plane_out / 4;
            for (int oh = 0; oh < h_out; oh += 2)
                for (int half = 0; half * DC_POOL_OB < nb; half++) {
                    const int left = nb - half * DC_POOL_OB;
                    dc_pool_tile(s, pp, rows, L, oh, w_out, wb, half, bias,
                                 left < DC_POOL_OB ? left : DC_POOL_OB, ep,
                                 yp + (size_t)half * DC_POOL_OB * pplane, pplane);
                }
            continue;
        }
#endif
        int oh = 0;
        if (VW >= 16 && w_out <= VW)
            for (; oh + DC_ROWS <= h_out; oh += DC_ROWS) DC_TILE_ROWS();
        for (; oh < h_out; oh++) {
            int ow = 0;
            for (; ow + VW < w_out; ow += 2 * VW) DC_TILE(2);
            for (; ow < w_out; ow += VW) DC_TILE(1);
        }
        if (ep->pool2) {
            const kiln_pool2d_shape ps = pool2_shape(nb, h_out, w_out);
            pool2x2_planes(&ps, pool_buf, j->y + yoff / 4, 1, 0, (size_t)nb);
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

/* ---- direct conv at stride 2 for a few input channels ------------------ */

/* ResNet50's stem (7x7/2, 3 -> 64 channels at 224x224) went through the
 * GEMM with B packed a panel at a time (conv2d_fused_gemm below): with
 * K = 147 and 64 rows of A per panel, packing took about a quarter of its
 * time. Here it runs like the direct conv above, on the padded input
 * planes split by column parity once per image: column 2c + ph of a
 * padded row is column c of phase ph, so kernel column kw of output
 * column ow reads column ow + kw / 2 of phase kw % 2, and a vector of
 * neighbouring outputs is one contiguous load. The phase planes go to the
 * workspace (the stem's: 3 x 2 x 230 x 120 floats, 650 KB). */
static int dc2_half_len(const kiln_conv2d_shape *s, int w_out)
{
    return (w_out + VW - 1) / VW * VW + s->k_w / 2;
}

static int direct2_ok(const kiln_conv2d_shape *s, int h_out, int w_out)
{
    /* one input channel: no workspace (kiln_conv2d_workspace_size()) */
    if (s->groups != 1 || s->c_in < 2 || s->c_in > DC_CIN_MAX || s->stride_h != 2 ||
        s->stride_w != 2 || s->dil_h != 1 || s->dil_w != 1 || s->k_h > DC_K_MAX ||
        s->k_w > DC_K_MAX || direct_ok(s, w_out))
        return 0;
    /* The phase planes and their slack in the workspace, which holds at
     * least the im2col matrix (K x N floats). */
    const long K = (long)s->c_in * s->k_h * s->k_w, N = (long)h_out * w_out;
    const long rows = (long)s->h_in + s->pad_t + s->pad_b;
    return 2L * s->c_in * rows * dc2_half_len(s, w_out) + 2 * VW <= K * N;
}

/* The same from the phase planes ph: tap kw of output column ow is
 * column ow + kw / 2 of the plane of parity kw & 1. */
#define DC2_TILE(NV)                                                    \
    DC_TILE_AT(NV, ph + ((size_t)ic * 2 * rows + 2 * oh + kh) * H + ow, \
               (size_t)(kw & 1) * rows * H + (kw >> 1), oh_st)

typedef struct dc2_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, n_blocks;
    const float *ph; /* one image's phase planes */
    const float *w;
    const kiln_epilogue *ep;
    float *y;         /* one image's output (with pool3: pooled) */
    const float *res; /* and its residual, or NULL */
    int p_h, p_w;     /* pool3: the pooled output's sides */
} dc2_job;

/* Each block of DC_OB output channels goes in this many runs of output
 * rows (with pool3: of pooled rows), for kiln__parallel_for() to balance
 * threads of unequal speed (the stem's 64 channels are only 8 blocks). */
#define DC2_ROW_RUNS 4

/* Widest output row a fused 3x3/2 max pool (kiln_epilogue.pool3) takes:
 * its window of three conv rows of a block lives on the stack. */
#define DC2_POOL_W_MAX 256

/* Output row oh of a block's nb channels (weights wb, DC_OB per tap;
 * bias[DC_OB]) into row oh_st of the planes at yb, plane_out floats
 * apart, whose rows [0, oh_lim) a row's last vector may spill into (rows
 * the caller computes later). */
static inline void dc2_row(const dc2_job *j, const float *wb, const float *bias, int nb, int oh,
                           float *yb, size_t plane_out, const float *res, int oh_st, int oh_lim)
{
    const kiln_conv2d_shape *s = j->s;
    const kiln_epilogue *ep = j->ep;
    const int w_out = j->w_out, H = dc2_half_len(s, w_out);
    const int rows = s->h_in + s->pad_t + s->pad_b;
    const float *ph = j->ph;
    int ow = 0;
    if (VW >= 16) /* 24 accumulators: AVX-512's 32 registers hold them */
        for (; ow + 2 * VW < w_out; ow += 3 * VW) DC2_TILE(3);
    for (; ow + VW < w_out; ow += 2 * VW) DC2_TILE(2);
    for (; ow < w_out; ow += VW) DC2_TILE(1);
}

/*
 * A fused 3x3/2 max pool with one row and column of padding each side
 * (kiln_epilogue.pool3; ResNet's after its stem): pooled rows [p0, p1)
 * of a block. Pooled row po is the max over conv rows 2 po - 1 .. 2 po + 1
 * (those inside) of the same columns' windows, so its three rows are
 * computed into a window on the stack and pooled from there
 * (pool_row(), the MaxPool kernel's own row code, so the floats are
 * MaxPool's), and the window's last row is the next one's first: each
 * conv row is computed once, but for the first of each run. The conv's
 * full output, ResNet50's largest activation (3.2 MB), is never written.
 */
static void dc2_pool3_rows(const dc2_job *j, const float *wb, const float *bias, int nb, int oc0,
                           int p0, int p1)
{
    const int w_out = j->w_out, h_out = j->h_out;
    const size_t plane = (size_t)3 * w_out; /* one channel's window */
    float win[DC_OB * 3 * DC2_POOL_W_MAX], row[DC2_POOL_W_MAX + 2 * VW];
    kiln_pool2d_shape ps = {.n = 1,
                            .c = 1,
                            .h_in = 3,
                            .w_in = w_out,
                            .k_h = 3,
                            .k_w = 3,
                            .stride_h = 2,
                            .stride_w = 2,
                            .dil_h = 1,
                            .dil_w = 1,
                            .pad_l = 1,
                            .pad_r = 1};
    pool_geom g; /* the same columns for every window */
    pool_geom_of(&ps, 1, &g);
    pool_row_init(&ps, &g, row);
    int last = -2; /* the conv row in the window's row 2, if any */
    for (int po = p0; po < p1; po++) {
        const int lo = 2 * po - 1, hi = 2 * po + 1 < h_out ? 2 * po + 1 : h_out - 1;
        int r = lo < 0 ? 0 : lo; /* the first conv row still to compute */
        if (last == lo && lo >= 0) {
            for (int b = 0; b < nb; b++)
                memcpy(win + b * plane, win + b * plane + 2 * (size_t)w_out,
                       sizeof(float) * (size_t)w_out);
            r = lo + 1;
        }
        for (; r <= hi; r++) dc2_row(j, wb, bias, nb, r, win, plane, NULL, r - lo, 3);
        last = hi;
        const int first = lo < 0 ? 0 : lo;
        for (int b = 0; b < nb; b++)
            pool_row(&ps, &g, win + b * plane + (size_t)(first - lo) * w_out, (size_t)w_out,
                     hi - first + 1, 3, row, j->y + ((size_t)(oc0 + b) * j->p_h + po) * j->p_w, 1);
    }
}

/* Units [begin, end) of one image: unit u is block u / DC2_ROW_RUNS of
 * DC_OB output channels, run u % DC2_ROW_RUNS of its output rows. */
static void direct2_range(void *ctx, size_t begin, size_t end)
{
    const dc2_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const kiln_epilogue *ep = j->ep;
    const int h_out = j->h_out, w_out = j->w_out, K = s->c_in * s->k_h * s->k_w;
    const size_t plane_out = (size_t)h_out * w_out;
    float wb[DC_CIN_MAX * DC_K_MAX * DC_K_MAX * DC_OB];
    for (size_t u = begin; u < end; u++) {
        const size_t blk = u / DC2_ROW_RUNS, run = u % DC2_ROW_RUNS;
        const int oc0 = (int)blk * DC_OB;
        const int nb = s->c_out - oc0 < DC_OB ? s->c_out - oc0 : DC_OB;
        for (int t = 0; t < K; t++)
            for (int b = 0; b < DC_OB; b++)
                wb[t * DC_OB + b] = b < nb ? j->w[(size_t)(oc0 + b) * K + t] : 0.0f;
        float bias[DC_OB];
        for (int b = 0; b < DC_OB; b++) bias[b] = ep->bias && b < nb ? ep->bias[oc0 + b] : 0.0f;
        if (ep->pool3) {
            dc2_pool3_rows(j, wb, bias, nb, oc0, (int)(j->p_h * run / DC2_ROW_RUNS),
                           (int)(j->p_h * (run + 1) / DC2_ROW_RUNS));
            continue;
        }
        const int oh0 = (int)(h_out * run / DC2_ROW_RUNS),
                  oh1 = (int)(h_out * (run + 1) / DC2_ROW_RUNS);
        float *yb = j->y + (size_t)oc0 * plane_out;
        const float *res = j->res ? j->res + (size_t)oc0 * plane_out : NULL;
        /* a row's last vector spills only into rows of this run, which
         * this thread computes after it (dc_store()) */
        for (int oh = oh0; oh < oh1; oh++)
            dc2_row(j, wb, bias, nb, oh, yb, plane_out, res, oh, oh1);
    }
}

static void conv2d_direct2(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                           const float *w, const kiln_epilogue *ep, float *y, float *ws,
                           int threads)
{
    const int H = dc2_half_len(s, w_out), rows = s->h_in + s->pad_t + s->pad_b;
    const size_t x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t y_img = ep->pool3
                             ? (size_t)s->c_out * kiln__pool3_side(h_out) * kiln__pool3_side(w_out)
                             : (size_t)s->c_out * h_out * w_out;
    const int n_blocks = (s->c_out + DC_OB - 1) / DC_OB;
    const size_t macs = (size_t)s->c_out * h_out * w_out * s->c_in * s->k_h * s->k_w;
    for (int b = 0; b < s->n; b++) {
        /* zero-padded phase planes [c_in][2][rows][H], and slack for the
         * last vector loads */
        memset(ws, 0, sizeof(float) * ((size_t)s->c_in * 2 * rows * H + 2 * VW));
        for (int ic = 0; ic < s->c_in; ic++)
            for (int ih = 0; ih < s->h_in; ih++) {
                const float *src = x + b * x_img + ((size_t)ic * s->h_in + ih) * s->w_in;
                for (int p = 0; p < 2; p++) {
                    /* the first input column whose padded column has parity p */
                    const int iw0 = (p - s->pad_l % 2 + 2) % 2;
                    float *dst = ws + (((size_t)ic * 2 + p) * rows + ih + s->pad_t) * H +
                                 (s->pad_l + iw0) / 2;
                    for (int iw = iw0, c = 0; iw < s->w_in; iw += 2, c++) dst[c] = src[iw];
                }
            }
        dc2_job j = {s,
                     h_out,
                     w_out,
                     n_blocks,
                     ws,
                     w,
                     ep,
                     y + b * y_img,
                     ep->residual ? ep->residual + b * y_img : NULL,
                     kiln__pool3_side(h_out),
                     kiln__pool3_side(w_out)};
        kiln__parallel_for(macs < (1u << 22) ? 1 : threads, (size_t)n_blocks * DC2_ROW_RUNS,
                           direct2_range, &j);
    }
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
#define PK_PLANE_MAX        8192 /* floats of one padded input plane (stack) */
#define PK_ROW_MAX          8192 /* floats of one assembled row of B (stack) */
#define PK_ONE_THREAD_FLOPS 3e7

/* Padded row pr of input plane xc (row pr - pad_t, or zeros) into d:
 * w_in + pad_l + pad_r floats. */
static void pad_row(const kiln_conv2d_shape *s, const float *xc, int pr, float *d)
{
    const int ih = pr - s->pad_t;
    if (ih < 0 || ih >= s->h_in) {
        memset(d, 0, sizeof(float) * (size_t)(s->w_in + s->pad_l + s->pad_r));
        return;
    }
    memset(d, 0, sizeof(float) * s->pad_l);
    memcpy(d + s->pad_l, xc + (size_t)ih * s->w_in, sizeof(float) * s->w_in);
    memset(d + s->pad_l + s->w_in, 0, sizeof(float) * s->pad_r);
}

/* Input plane xc zero-padded into pp: (h_in + pad_t + pad_b) rows of
 * w_in + pad_l + pad_r floats. */
static void pad_plane(const kiln_conv2d_shape *s, const float *xc, float *pp)
{
    const int L = s->w_in + s->pad_l + s->pad_r, rows = s->h_in + s->pad_t + s->pad_b;
    for (int pr = 0; pr < rows; pr++) pad_row(s, xc, pr, pp + (size_t)pr * L);
}

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
        pad_plane(s, j->x + ic * s->h_in * s->w_in, pp);
        memset(pp + (size_t)rows * L, 0, sizeof(float) * 2 * VW);
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
    /* Under PK_ONE_THREAD_FLOPS per image one thread runs the whole conv:
     * LeNet's conv2 (20 MFLOP, B 627 KB) took 0.22 ms on two threads and
     * 0.15 on one (2026-12-05, Zen 5 VM). Packing B on both threads, each
     * its own panels, still took 0.17: two threads packing at once ran
     * 2-4x slower each than one alone, for reasons not found. */
    if (2.0 * s->c_out * (double)N * K < PK_ONE_THREAD_FLOPS) threads = 1;
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

/* ---- GEMM convs with a short K over a large plane: B a panel at a time -- */

/* ResNet50's stem (7x7/2, 3 -> 64 channels at 224x224) has K = 147 and
 * 12544 output positions: its whole packed B is 7.4 MB, written and then
 * read back from beyond L2 (and, on two threads, by the other core), for
 * a GEMM with only 64 rows. Here the input planes are zero-padded once
 * into the workspace, and each thread packs one panel of B at a time on
 * its stack (K x GEMM_NR floats, from the padded planes with whole-vector
 * copies, stride-2 loads across) and runs every sliver of A against it at
 * once, so B never leaves L1/L2. Same B, so the same results. Measured
 * (2026-12-05, Zen 5, ResNet50 in the model, three interleaved rounds):
 * the stem 2.14-2.24 -> 1.81-1.86 ms at 1 thread, 1.40-1.47 -> 1.18-1.25
 * at 2; alone (kiln bench kernels) no faster, its B then stays in L3.
 * The stem now takes the direct conv at stride 2 above (1.70 -> 1.24 ms
 * alone); convs with more than three input channels still come here. */
#define PF_K_MAX 256 /* rows of a panel on the stack */

static int pack_fused_ok(const kiln_conv2d_shape *s, int h_out, int w_out)
{
    const long K = (long)s->c_in * s->k_h * s->k_w, N = (long)h_out * w_out;
    if (s->groups != 1 || s->stride_w > 2 || s->dil_h != 1 || s->dil_w != 1 || K > PF_K_MAX ||
        N < 8 * GEMM_NR || kiln__conv2d_is_pointwise(s) || !kiln__conv2d_is_gemm(s) ||
        kiln__conv2d_is_winograd(s) || pack_padded_ok(s, h_out, w_out))
        return 0;
    /* The padded planes and their slack must fit the workspace, which
     * holds at least the im2col matrix (K x N). */
    long plane = ((long)s->h_in + s->pad_t + s->pad_b) * (s->w_in + s->pad_l + s->pad_r);
    return s->c_in * plane + 4 * VW <= K * N;
}

typedef struct pf_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, L, rows;
    const float *pp; /* the padded input planes */
    gemm_job g;
    int chunk, n_chunks;
    jobq chunks; /* the chunks of panels not yet taken */
} pf_job;

/* Packs columns [col0, col0 + nc) of B into bp ([K][GEMM_NR], zero past
 * nc), one output-row segment at a time. A vector copy may run past its
 * segment into the next one, which is written after it; bp has a vector
 * of slack after its last row. */
static void pf_pack_panel(const pf_job *j, size_t col0, int nc, float *bp)
{
    const kiln_conv2d_shape *s = j->s;
    const int taps = s->k_h * s->k_w, K = s->c_in * taps;
    if (nc < GEMM_NR)
        for (int k = 0; k < K; k++) memset(bp + (size_t)k * GEMM_NR, 0, sizeof(float) * GEMM_NR);
    for (int k = 0; k < K; k++) {
        const int ic = k / taps, kh = k % taps / s->k_w, kw = k % s->k_w;
        const float *plane = j->pp + (size_t)ic * j->rows * j->L + kw;
        float *row = bp + (size_t)k * GEMM_NR;
        for (int c = 0; c < nc;) {
            const size_t pos = col0 + (size_t)c;
            const int oh = (int)(pos / (size_t)j->w_out), ow = (int)(pos % (size_t)j->w_out);
            const int len = j->w_out - ow < nc - c ? j->w_out - ow : nc - c;
            const float *src =
                plane + (size_t)(oh * s->stride_h + kh) * j->L + (size_t)ow * s->stride_w;
            float *dst = row + c;
            if (s->stride_w == 1)
                for (int q = 0; q < len; q += VW) V_STOREU(dst + q, V_LOADU(src + q));
            else
                for (int q = 0; q < len; q += VW) V_STOREU(dst + q, v_load_even(src + 2 * q));
            c += len;
        }
    }
}

static void pf_range(void *ctx, size_t begin, size_t end)
{
    pf_job *j = ctx;
    (void)end;
    _Alignas(64) float bp[PF_K_MAX * GEMM_NR + 2 * VW];
    for (;;) {
        const int job = jobq_take(&j->chunks, begin == 0);
        if (job < 0) return;
        const int p0 = job * j->chunk;
        const int p1 = p0 + j->chunk < j->g.n_panels ? p0 + j->chunk : j->g.n_panels;
        for (int p = p0; p < p1; p++) {
            const size_t col0 = (size_t)p * GEMM_NR;
            const int nc = j->g.N - (int)col0 < GEMM_NR ? j->g.N - (int)col0 : GEMM_NR;
            pf_pack_panel(j, col0, nc, bp);
            for (int row0 = 0; row0 < j->g.M; row0 += GEMM_MR) {
                const int mr = j->g.M - row0 < GEMM_MR ? j->g.M - row0 : GEMM_MR;
                gemm_micro_pf(&j->g, bp, row0, col0, mr, nc, 0, 1);
            }
        }
    }
}

static void conv2d_fused_gemm(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                              const float *packed, const kiln_epilogue *ep, float *y, float *ws,
                              int threads)
{
    const int N = h_out * w_out, K = s->c_in * s->k_h * s->k_w;
    const int L = s->w_in + s->pad_l + s->pad_r, rows = s->h_in + s->pad_t + s->pad_b;
    const size_t x_img = (size_t)s->c_in * s->h_in * s->w_in, y_img = (size_t)s->c_out * N;
    const int has_ep = ep->bias || ep->residual || ep->act != KILN_ACT_NONE;
    const size_t padded = (size_t)s->c_in * rows * L;
    for (int b = 0; b < s->n; b++) {
        /* zero-padded planes, and slack for the last vector loads */
        for (int ic = 0; ic < s->c_in; ic++)
            pad_plane(s, x + b * x_img + (size_t)ic * s->h_in * s->w_in,
                      ws + (size_t)ic * rows * L);
        memset(ws + padded, 0, sizeof(float) * 4 * VW);
        pf_job j = {.s = s,
                    .h_out = h_out,
                    .w_out = w_out,
                    .L = L,
                    .rows = rows,
                    .pp = ws,
                    .g = {.M = s->c_out,
                          .N = N,
                          .K = K,
                          .Ap = kiln__conv2d_gemm_a(s, packed, 0),
                          .C = y + b * y_img,
                          .ldc = (size_t)N,
                          .bias = ep->bias,
                          .res = ep->residual ? ep->residual + b * y_img : NULL,
                          .ep = has_ep ? ep : NULL,
                          .n_panels = (N + GEMM_NR - 1) / GEMM_NR}};
        /* about sixteen chunks of panels a thread, taken in turn */
        j.n_chunks = threads > 1 ? 16 * threads : 1;
        if (j.n_chunks > j.g.n_panels) j.n_chunks = j.g.n_panels;
        j.chunk = (j.g.n_panels + j.n_chunks - 1) / j.n_chunks;
        j.n_chunks = (j.g.n_panels + j.chunk - 1) / j.chunk;
        jobq_init(&j.chunks, j.n_chunks);
        kiln__parallel_for(threads > j.n_chunks ? j.n_chunks : threads, (size_t)threads, pf_range,
                           &j);
    }
}
