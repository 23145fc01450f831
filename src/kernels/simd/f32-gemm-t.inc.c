/*
 * Convs with few output positions through the GEMM turned around
 * (kiln__conv2d_is_gemm_t()), included by f32-kernels.inc.c after
 * f32-gemm.inc.c and so compiled once per ISA.
 *
 * kiln's GEMM puts output positions in the vector columns of its tiles
 * (f32-gemm.inc.c). ResNet50's last stage has 7x7 = 49 of them per
 * channel: two 32-column panels, 49 of 64 columns doing work, and the
 * stage ran at ~135 GFLOP/s of a 232 peak (the 14x14 stage: 196 of 224).
 * Here the roles swap:
 *
 *   C^T[pos][c_out] = X^T[pos][K] x W^T[K][c_out]
 *
 * The positions are the broadcast rows (X^T packed per call as the GEMM's
 * A: slivers of 14 rows, 196 of 196 rows doing work at 14x14; or slivers
 * of 7 run in pairs where that pads fewer rows, 49 of 49 at 7x7, see
 * gemm_h_micro()), the output channels the vector columns (W^T prepacked
 * with the model in panels of KILN_GEMM_T_NR = 32, which 512 or 2048
 * channels fill exactly). The same tile as the GEMM's runs it; the weights, the large operand,
 * stream once per inference a panel at a time, each panel against every sliver of X^T while it is
 * in L2.
 *
 * X^T is packed straight from the input: each input plane is zero-padded
 * once (at most KILN_GEMM_T_PLANE_MAX floats), then for every kernel tap
 * the N positions are gathered through a table of their offsets in it.
 * C^T goes to the workspace, each ISA panel's rows together, and the job
 * that computed a panel's rows writes them to NCHW with the epilogue
 * (bias, residual, activation) right away, 16 channels at a time
 * (gemm_t_store_panel()). A fused pool, which needs whole planes, and the
 * stride-2 path without X^T (gemm_i, f32-gemm-i.inc.c) write C^T row by
 * row and store it in a pass of its own (gemm_t_store_range()).
 */

typedef struct gemm_t_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, N, K;
    const float *x; /* one image */
    float *Ap;      /* packed X^T */
    const float *Ct;
    const kiln_epilogue *ep;
    const float *res; /* one image's residual, NCHW, or NULL */
    float *y;         /* one image's output */
    int mr;           /* rows per sliver of packed X^T: GEMM_MR or GEMM_H_MR */
} gemm_t_job;

/* Rows of X^T padded to whole slivers of mr rows. */
static inline size_t gemm_t_m_pad(int N, int mr)
{
    return (size_t)(N + mr - 1) / mr * mr;
}

/* Rows of X^T per sliver where slivers of 7 pad fewer rows than 14
 * (gemm_h_micro()). */
#define GEMM_H_MR 7

/* One row k of X^T (one kernel tap of one input channel): the N positions
 * from src through their offsets, into each sliver's row k of packed X^T
 * (slivers of mr rows, a constant in each call so the loop unrolls). */
static inline __attribute__((always_inline)) void
gemm_t_gather(float *dst, const float *src, const int *pos_off, int N, size_t m_pad, int kc, int mr)
{
    int pos = 0;
    for (size_t s0 = 0; s0 < m_pad; s0 += mr, dst += (size_t)mr * kc)
        for (int i = 0; i < mr; i++, pos++) dst[i] = pos < N ? src[pos_off[pos]] : 0.0f;
}

/* gemm_t_gather() where position pos is src[pos] (a 1x1 conv at stride 1
 * without padding): each sliver's mr floats are one copy of a constant
 * size, which the compiler turns into a few vector moves. */
static inline __attribute__((always_inline)) void gemm_t_copy(float *dst, const float *src, int N,
                                                              size_t m_pad, int kc, int mr)
{
    int pos = 0;
    for (size_t s0 = 0; s0 < m_pad; s0 += mr, dst += (size_t)mr * kc, pos += mr) {
        if (N - pos >= mr) {
            memcpy(dst, src + pos, sizeof(float) * mr);
        } else {
            for (int i = 0; i < mr; i++) dst[i] = pos + i < N ? src[pos + i] : 0.0f;
        }
    }
}

/* Whether X^T is the input itself, row k of it input plane k: a 1x1
 * conv at stride 1 without padding. */
static int gemm_t_identity(const kiln_conv2d_shape *s)
{
    return s->k_h * s->k_w == 1 && s->stride_h == 1 && s->stride_w == 1 &&
           !(s->pad_t | s->pad_l | s->pad_b | s->pad_r);
}

/* Whether X^T's rows are assembled a vector at a time from the padded
 * plane (gemm_t_pack_rows_vec): no dilation, strides 1 or 2, and more than
 * one tap (a 1x1 conv's one row per plane does not repay copying the plane:
 * ResNet50's l3 1x1/2 1.04 -> 1.08 ms). */
static int gemm_t_pack_vec_ok(const kiln_conv2d_shape *s)
{
    return s->dil_h == 1 && s->dil_w == 1 && s->stride_w <= 2 && s->k_h * s->k_w > 1;
}

/* Taps per block of gemm_t_pack_rows_vec: a 3x3 kernel's nine rows of X^T,
 * 9 x 784 floats at most (28 KB, in L1). */
#define GEMM_T_TAP_BLOCK 9
#define GEMM_T_ROW_LEN   (KILN_GEMM_T_N_MAX_STRIDED + GEMM_MR + VW)

/* Stores nt assembled rows of X^T sliver by sliver (mr floats each, a
 * constant in each call so the copy is a few vector moves). */
static inline __attribute__((always_inline)) void gemm_t_store_slivers(float *const *dst,
                                                                       const size_t *step,
                                                                       float (*row)[GEMM_T_ROW_LEN],
                                                                       int nt, size_t m_pad, int mr)
{
    for (size_t s0 = 0, i = 0; s0 < m_pad; s0 += mr, i++)
        for (int t = 0; t < nt; t++) memcpy(dst[t] + i * step[t], row[t] + s0, sizeof(float) * mr);
}

/* X^T's rows for input channels [begin, end): each plane zero-padded
 * once; a block of its taps' rows (N positions each) assembled from it
 * with whole-vector copies of output rows (stride-2 loads across; a
 * vector that runs past an output row is overwritten by the next one),
 * then stored sliver by sliver, where the block's rows are neighbours (14
 * or 7 floats each, one after the other). The scalar gather (below) took a
 * fifth of ResNet50's l2 3x3/2 conv (1152 x 784 floats of X^T); a row
 * stored to its 56 slivers right after it was assembled, a tenth more
 * (reads of a row still in flight to L1). */
static void gemm_t_pack_rows_vec(const gemm_t_job *j, size_t begin, size_t end)
{
    const kiln_conv2d_shape *s = j->s;
    const int L = s->w_in + s->pad_l + s->pad_r, rows = s->h_in + s->pad_t + s->pad_b;
    const int N = j->N, K = j->K, taps = s->k_h * s->k_w, w_out = j->w_out;
    const int mr = j->mr;
    const size_t m_pad = gemm_t_m_pad(N, mr);
    /* the slack after the plane: an output row's last vector, partial,
     * reads up to 2 * VW floats past the row's last tap */
    float pp[KILN_GEMM_T_PLANE_MAX + 2 * VW];
    _Alignas(64) float row[GEMM_T_TAP_BLOCK][GEMM_T_ROW_LEN];
    float *dst[GEMM_T_TAP_BLOCK];
    size_t step[GEMM_T_TAP_BLOCK];
    for (size_t ic = begin; ic < end; ic++) {
        const float *xc = j->x + ic * s->h_in * s->w_in;
        pad_plane(s, xc, pp);
        memset(pp + (size_t)rows * L, 0, sizeof(float) * 2 * VW);
        for (int t0 = 0; t0 < taps; t0 += GEMM_T_TAP_BLOCK) {
            const int nt = taps - t0 < GEMM_T_TAP_BLOCK ? taps - t0 : GEMM_T_TAP_BLOCK;
            for (int t = 0; t < nt; t++) {
                const int kh = (t0 + t) / s->k_w, kw = (t0 + t) % s->k_w;
                for (int oh = 0; oh < j->h_out; oh++) {
                    const float *src = pp + (size_t)(oh * s->stride_h + kh) * L + kw;
                    float *d = row[t] + (size_t)oh * w_out;
                    if (s->stride_w == 1)
                        for (int c = 0; c < w_out; c += VW) V_STOREU(d + c, V_LOADU(src + c));
                    else
                        for (int c = 0; c < w_out; c += VW)
                            V_STOREU(d + c, v_load_even(src + 2 * c));
                }
                for (size_t i = (size_t)N; i < m_pad; i++) row[t][i] = 0.0f;
                /* row k's first sliver, and the floats from one sliver to
                 * the next: mr x its depth block's kc */
                const int k = (int)ic * taps + t0 + t;
                const int pc = k / KILN_GEMM_KC * KILN_GEMM_KC;
                const int kc = K - pc < KILN_GEMM_KC ? K - pc : KILN_GEMM_KC;
                dst[t] = j->Ap + (size_t)pc * m_pad + (size_t)(k - pc) * mr;
                step[t] = (size_t)mr * kc;
            }
            if (mr == GEMM_MR)
                gemm_t_store_slivers(dst, step, row, nt, m_pad, GEMM_MR);
            else
                gemm_t_store_slivers(dst, step, row, nt, m_pad, GEMM_H_MR);
        }
    }
}

/* Packs the X^T rows of input channels [begin, end) into j->Ap. */
static void gemm_t_pack_range(void *ctx, size_t begin, size_t end)
{
    const gemm_t_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    if (gemm_t_pack_vec_ok(s)) {
        gemm_t_pack_rows_vec(j, begin, end);
        return;
    }
    const int L = s->w_in + s->pad_l + s->pad_r;
    const int N = j->N, K = j->K, taps = s->k_h * s->k_w;
    const int mr = j->mr;
    const size_t m_pad = gemm_t_m_pad(N, mr);
    float pp[KILN_GEMM_T_PLANE_MAX];
    int pos_off[KILN_GEMM_T_N_MAX_STRIDED];
    for (int pos = 0; pos < N; pos++)
        pos_off[pos] = (pos / j->w_out) * s->stride_h * L + (pos % j->w_out) * s->stride_w;
    /* X^T's rows are runs of the input planes (the scalar gather took
     * about 3% of a ResNet50 run), copied where the input cannot be read
     * in place (gemm_d_ok(): positions not a multiple of 7). */
    const int identity = gemm_t_identity(s);
    for (size_t ic = begin; ic < end; ic++) {
        const float *xc = j->x + ic * s->h_in * s->w_in;
        if (s->pad_t | s->pad_l | s->pad_b | s->pad_r) {
            pad_plane(s, xc, pp);
            xc = pp;
        }
        for (int t = 0; t < taps; t++) {
            const int k = (int)ic * taps + t;
            const int pc = k / KILN_GEMM_KC * KILN_GEMM_KC;
            const int kc = K - pc < KILN_GEMM_KC ? K - pc : KILN_GEMM_KC;
            float *dst = j->Ap + (size_t)pc * m_pad + (size_t)(k - pc) * mr;
            const float *src = xc + (t / s->k_w) * s->dil_h * L + (t % s->k_w) * s->dil_w;
            if (identity && mr == GEMM_MR)
                gemm_t_copy(dst, src, N, m_pad, kc, GEMM_MR);
            else if (identity)
                gemm_t_copy(dst, src, N, m_pad, kc, GEMM_H_MR);
            else if (mr == GEMM_MR)
                gemm_t_gather(dst, src, pos_off, N, m_pad, kc, GEMM_MR);
            else
                gemm_t_gather(dst, src, pos_off, N, m_pad, kc, GEMM_H_MR);
        }
    }
}

/* Channels per block of the store pass: one cache line of a C^T row. */
#define GEMM_T_STORE_BLOCK 16

/* Channels [0, nc) of n positions of an NHWC block (position p's channels
 * at src + p * ld_src) into nc planes (channel c's positions at dst + c *
 * ld_dst): sixteen positions' sixteen channels at a time transposed in
 * registers where the ISA can (the scalar copies took about 2% of a
 * ResNet50 run), the rest one float at a time. */
static void nhwc_to_planes(const float *src, size_t ld_src, int n, int nc, float *dst,
                           size_t ld_dst)
{
    int pos = 0;
#ifdef V_TRANSPOSE16
    if (nc == 16)
        for (; pos + 16 <= n; pos += 16) {
            vf r[16];
            for (int i = 0; i < 16; i++) r[i] = V_LOADU(src + (size_t)(pos + i) * ld_src);
            V_TRANSPOSE16(r);
            for (int c = 0; c < 16; c++) V_STOREU(dst + (size_t)c * ld_dst + pos, r[c]);
        }
#endif
    for (; pos < n; pos++) {
        const float *t = src + (size_t)pos * ld_src;
        for (int c = 0; c < nc; c++) dst[(size_t)c * ld_dst + pos] = t[c];
    }
}

/* Channels [c0, c0 + nc) (nc <= GEMM_T_STORE_BLOCK) of positions
 * [r0, r1) from NHWC C^T (src: position r0's channel c0, ld floats from
 * one position to the next) to y (NCHW) through the epilogue (bias,
 * residual, activation). A block's 16 channels of each position are one
 * cache line of C^T, read once and spread over the block's rows; reading a
 * channel's positions down a column instead (2048 floats apart in the
 * last stage) hit one L1 set again and again. */
static void gemm_t_store_block(const gemm_t_job *t, const float *src, size_t ld, int c0, int nc,
                               int r0, int r1)
{
    const kiln_epilogue *ep = t->ep;
    const size_t N = (size_t)t->N;
    float blk[GEMM_T_STORE_BLOCK][KILN_GEMM_T_N_MAX_STRIDED];
    nhwc_to_planes(src, ld, r1 - r0, nc, blk[0], KILN_GEMM_T_N_MAX_STRIDED);
    for (int cc = 0; cc < nc; cc++) {
        const size_t c = (size_t)c0 + cc, at = c * N + r0;
        act_row((size_t)(r1 - r0), blk[cc], ep->bias ? ep->bias[c] : 0.0f, NULL,
                t->res ? t->res + at : NULL, ep, t->y + at);
    }
}

/* gemm_t_store_block() of all positions with the fused 2x2/2 max pool
 * (kiln_epilogue.pool2): the block's planes through the epilogue in place,
 * then pooled into y, which holds the pooled image. */
static void gemm_t_store_block_pooled(const gemm_t_job *t, int c0, int nc)
{
    const kiln_epilogue *ep = t->ep;
    const int N = t->N;
    float blk[GEMM_T_STORE_BLOCK][KILN_GEMM_T_N_MAX_STRIDED];
    nhwc_to_planes(t->Ct + c0, (size_t)t->s->c_out, N, nc, blk[0], KILN_GEMM_T_N_MAX_STRIDED);
    const kiln_pool2d_shape ps = pool2_shape(1, t->h_out, t->w_out);
    for (int cc = 0; cc < nc; cc++) {
        const size_t c = (size_t)c0 + cc;
        act_row((size_t)N, blk[cc], ep->bias ? ep->bias[c] : 0.0f, NULL, NULL, ep, blk[cc]);
        pool2x2_planes(&ps, blk[cc], t->y + c * (size_t)(N / 4), 1, 0, 1);
    }
}

/* Writes the channel blocks [begin, end) of C^T (row-major, c_out floats a
 * position) to y: the pass of its own after the GEMM. */
static void gemm_t_store_range(void *ctx, size_t begin, size_t end)
{
    const gemm_t_job *j = ctx;
    const int c_out = j->s->c_out;
    for (size_t b = begin; b < end; b++) {
        const int c0 = (int)b * GEMM_T_STORE_BLOCK;
        const int nc = c_out - c0 < GEMM_T_STORE_BLOCK ? c_out - c0 : GEMM_T_STORE_BLOCK;
        if (j->ep->pool2)
            gemm_t_store_block_pooled(j, c0, nc);
        else
            gemm_t_store_block(j, j->Ct + c0, (size_t)c_out, c0, nc, 0, j->N);
    }
}

/*
 * Positions [r0, r1) of the GEMM_NR channels at col0 from their panel of a
 * panel-major C^T (blk: the panel's N rows, GEMM_NR floats each) to y
 * through the epilogue. A job of the turned-around GEMM calls it for each
 * panel right after its slivers (gemm_job.store): the panel's rows are
 * still in L1 or L2, where a pass of its own over all of C^T after the
 * GEMM read them back from further away, in a parallel region of its own.
 */
static void gemm_t_store_panel(const gemm_t_job *t, const float *blk, int col0, int r0, int r1)
{
    for (int h = 0; h < GEMM_NR; h += GEMM_T_STORE_BLOCK) {
        const int nc = GEMM_NR - h < GEMM_T_STORE_BLOCK ? GEMM_NR - h : GEMM_T_STORE_BLOCK;
        gemm_t_store_block(t, blk + (size_t)r0 * GEMM_NR + h, GEMM_NR, col0 + h, nc, r0, r1);
    }
}

/* Where panel p's block of a panel-major C^T starts (gemm_job.panel_major). */
static inline float *gemm_t_panel_block(const gemm_job *j, int p)
{
    return j->C + (size_t)p * j->M * GEMM_NR;
}

/* Panel p of job j as the microkernel sees it: j itself, or with C^T
 * panel-major (gemm_job.panel_major) a copy whose C and ldc address the
 * panel's block. */
static inline const gemm_job *gemm_t_panel_job(const gemm_job *j, int p, gemm_job *copy)
{
    if (!j->panel_major) return j;
    *copy = *j;
    copy->C = gemm_t_panel_block(j, p) - (size_t)p * GEMM_NR;
    copy->ldc = GEMM_NR;
    return copy;
}

/* After job j's rows [r0, r1) of panel p: their store, if fused. */
static inline void gemm_t_panel_done(const gemm_job *j, int p, int r0, int r1)
{
    if (j->store) gemm_t_store_panel(j->store, gemm_t_panel_block(j, p), p * GEMM_NR, r0, r1);
}

/* Job `job`'s row block and panel chunk where each row block has
 * n_chunks, the second's numbered from the back with mirror
 * (gemm_i_job.mirror). */
static void mirrored_rc(int job, int n_chunks, int mirror, int *mb, int *jc)
{
    *mb = job / n_chunks;
    *jc = job % n_chunks;
    if (mirror && *mb == 1) *jc = n_chunks - 1 - *jc;
}

/* One job of C^T = X^T W^T: channel panels [job * chunk, + chunk), each
 * against every sliver of X^T while the panel is in L2, the next panel
 * (the weights come from memory once per inference) prefetched meanwhile
 * in as many shares as there are slivers. */
static void gemm_t_run_job(const gemm_job *j, int job)
{
    const int p0 = job * j->chunk;
    const int p1 = p0 + j->chunk < j->n_panels ? p0 + j->chunk : j->n_panels;
    const int r0 = 0, r1 = j->M;
    const int n_slivers = (r1 - r0 + GEMM_MR - 1) / GEMM_MR;
    for (int p = p0; p < p1; p++) {
        const size_t col0 = (size_t)p * GEMM_NR;
        const int nc = j->N - (int)col0 < GEMM_NR ? j->N - (int)col0 : GEMM_NR;
        gemm_job copy;
        const gemm_job *jp = gemm_t_panel_job(j, p, &copy);
        for (int s = 0; s < n_slivers; s++) {
            const int row0 = r0 + s * GEMM_MR;
            const int mr = r1 - row0 < GEMM_MR ? r1 - row0 : GEMM_MR;
            gemm_micro_pf(jp, gemm_panel(j, p), row0, col0, mr, nc, s, n_slivers);
        }
        gemm_t_panel_done(j, p, r0, r1);
    }
}

/*
 * X^T packed in slivers of 7 rows (GEMM_H_MR), run two at a time through
 * the usual 14-row tile (one A pointer per half) and an odd last one
 * through a 7-row tile: a 7x7 output plane (49 positions) is then 3 tiles
 * of 14 rows and one of 7, no padded rows, where slivers of 14 compute 56.
 */

/* Whether N positions need fewer rows in slivers of 7 than of 14. */
static inline int gemm_h_better(int N)
{
    return gemm_t_m_pad(N, GEMM_H_MR) < kiln__gemm_m_pad(N);
}

/*
 * C^T rows [row0, row0 + mr) x the GEMM_NR columns at col0 = the
 * sliver(s) at row0 (halves of 7 rows: 2, or 1 for an odd last sliver) x
 * the W^T panel b over all of K. Meanwhile part `part` of `parts` of the
 * next panel is prefetched, one line per step of k. With gemm_job.a_ld,
 * the rows are read from the input itself (gemm_d_ok()).
 */
static inline __attribute__((always_inline)) void gemm_h_micro(const gemm_job *j, const float *b,
                                                               int row0, size_t col0, int mr,
                                                               int halves, int part, int parts)
{
    vf acc[2 * GEMM_H_MR][GEMM_NV];
    gemm_acc_init(j, &acc[0][0], halves * GEMM_H_MR, (size_t)row0, col0, mr);
    const size_t m_pad = gemm_t_m_pad(j->M, GEMM_H_MR);
    const int b_step = j->b_step;
    const int b_lines = j->K * GEMM_NR / GEMM_LINE_FLOATS;
    const int b_l0 = b_lines * part / parts, b_n = b_lines * (part + 1) / parts - b_l0;
    const float *b_pf = b + gemm_panel_rows(j) * GEMM_NR + (size_t)b_l0 * GEMM_LINE_FLOATS;
    for (int pc = 0; pc < j->K; pc += KILN_GEMM_KC) {
        const int kc = j->K - pc < KILN_GEMM_KC ? j->K - pc : KILN_GEMM_KC;
        /* a sliver's k-th 7 floats, and from one k to the next */
        const float *a0 = j->a_ld ? j->Ap + (size_t)pc * j->a_ld + row0
                                  : j->Ap + (size_t)pc * m_pad + (size_t)row0 * kc;
        const float *a1 = a0 + (j->a_ld ? GEMM_H_MR : (size_t)GEMM_H_MR * kc);
        const size_t a_step = j->a_ld ? j->a_ld : GEMM_H_MR;
        const int n_pf = j->pf_b ? (b_n - pc < 0 ? 0 : b_n - pc) : 0;
        const float *pf = b_pf + (size_t)pc * GEMM_LINE_FLOATS;
        for (int k = 0; k < kc; k++) {
            if (k < n_pf) __builtin_prefetch(pf + (size_t)k * GEMM_LINE_FLOATS, 0, 3);
            vf bv[GEMM_NV];
#pragma GCC unroll 4
            for (int q = 0; q < GEMM_NV; q++) bv[q] = V_LOADU(b + q * VW);
#pragma GCC unroll 14
            for (int i = 0; i < halves * GEMM_H_MR; i++) {
                const vf ai = V_SET1(i < GEMM_H_MR ? a0[i] : a1[i - GEMM_H_MR]);
#pragma GCC unroll 4
                for (int q = 0; q < GEMM_NV; q++) acc[i][q] = V_FMA(ai, bv[q], acc[i][q]);
            }
            a0 += a_step;
            a1 += a_step;
            b += b_step;
        }
    }
    float *c = j->C + (size_t)row0 * j->ldc + col0;
#pragma GCC unroll 14
    for (int i = 0; i < halves * GEMM_H_MR; i++)
        if (i < mr)
#pragma GCC unroll 4
            for (int q = 0; q < GEMM_NV; q++) V_STOREU(c + (size_t)i * j->ldc + q * VW, acc[i][q]);
}

/* One job of the 7-row-sliver path: the panels [job * chunk, + chunk),
 * each against every sliver, pairs first. */
static void gemm_h_run_job(const gemm_job *j, int job)
{
    const int p0 = job * j->chunk;
    const int p1 = p0 + j->chunk < j->n_panels ? p0 + j->chunk : j->n_panels;
    const int r0 = 0, r1 = j->M;
    const int s0 = r0 / GEMM_H_MR, s1 = (r1 + GEMM_H_MR - 1) / GEMM_H_MR;
    const int calls = (s1 - s0 + 1) / 2;
    for (int p = p0; p < p1; p++) {
        const size_t col0 = (size_t)p * GEMM_NR;
        const float *b = gemm_panel(j, p);
        gemm_job copy;
        const gemm_job *jp = gemm_t_panel_job(j, p, &copy);
        int s = s0;
        for (; s + 1 < s1; s += 2) {
            const int row0 = s * GEMM_H_MR;
            const int mr = r1 - row0 < 2 * GEMM_H_MR ? r1 - row0 : 2 * GEMM_H_MR;
            gemm_h_micro(jp, b, row0, col0, mr, 2, (s - s0) / 2, calls);
        }
        if (s < s1)
            gemm_h_micro(jp, b, s * GEMM_H_MR, col0, r1 - s * GEMM_H_MR, 1, calls - 1, calls);
        gemm_t_panel_done(j, p, r0, r1);
    }
}

/*
 * A 1x1 conv at stride 1 without padding needs no X^T: position pos of
 * input channel k is x[k * N + pos], so a tile's rows, consecutive
 * positions, are one run of each input plane, broadcast from there
 * (gemm_job.a_ld: gemm_h_micro()'s two halves of 7 rows, 7 floats apart,
 * in the 7-row-sliver path's order). The pack was a copy of the whole
 * input, which both threads then read: ResNet50's 1x1 convs at 14x14 and
 * 7x7 take this path.
 * Measured in one process against the packed X^T, alternating (AMD EPYC
 * Zen 4, 30 pairs a run, 2026-12-07): at 1 thread the model 0.997x, its
 * layer3 0.982x; at 2 threads the model 0.986-0.988x, layer3 0.963x, and
 * with the vCPUs far apart (bench/peers/vcpu_pingpong) 0.969-0.988x,
 * layer3 0.93-0.97x: the pack overwrote lines the other core had read,
 * each write then waiting for the other core to drop its copy
 * (bench/peers/vcpu_overwrite: 6.5x the time of a local overwrite with
 * the vCPUs near, 18-27x far).
 * A tile of 14 rows, or of 7 for the last of N = 7 (mod 14) positions
 * (gemm_d_ok()), never reads past the last plane. The sums run over k in
 * the same order as on packed X^T: the same floats. gemm_d_ok(): whether
 * a conv the turned-around GEMM takes reads its input so.
 */
static int gemm_d_ok(const kiln_conv2d_shape *s, int N)
{
    return gemm_t_identity(s) && N % GEMM_H_MR == 0;
}

/* Panel chunks per tile block on two threads (gemm_i_run()). */
#define GEMM_T_MIRROR_CHUNKS 8

/* Bytes of X^T per share of the depth (gemm_t_run()). */
#ifndef GEMM_T_SHARE_BYTES
#define GEMM_T_SHARE_BYTES ((size_t)256 * 1024)
#endif

/* C^T = X^T W^T on slivers of 14 rows, or of 7 run in pairs (halves), or
 * with `direct` on Ap, the input itself (gemm_d_ok()). */
static void gemm_t_run(int N, int M, int K, const float *Ap, const float *Bt, float *Ct,
                       int threads, int halves, int direct, const gemm_t_job *store)
{
    gemm_job j = {.M = N,
                  .N = M,
                  .K = K,
                  .Ap = Ap,
                  .Bp = Bt,
                  .C = Ct,
                  .ldc = (size_t)M,
                  .n_panels = (M + GEMM_NR - 1) / GEMM_NR,
                  .b_step = KILN_GEMM_T_NR,
                  /* the next panel is K * GEMM_NR floats on only when
                   * the stored panels are this ISA's */
                  .pf_b = GEMM_NR == KILN_GEMM_T_NR,
                  .run_job = direct || halves ? gemm_h_run_job : gemm_t_run_job,
                  .a_ld = direct ? (size_t)N : 0,
                  .panel_major = store != NULL};
    /* From 4 MFLOP on two threads: the CIFAR-10 CNN's 8x8 conv (9.4)
     * 0.065 -> ~0.05 ms, the model 0.148 -> 0.133 ms; LeNet's conv2
     * (20) 0.151 -> 0.081 ms (2026-12-05, interleaved runs). */
    int parts = threads < 1 || 2.0 * M * N * K < 4e6 ? 1 : threads;
    /* floats from one row k of X^T to the next, per KC block */
    const size_t m_pad = direct   ? (size_t)N
                         : halves ? gemm_t_m_pad(N, GEMM_H_MR)
                                  : kiln__gemm_m_pad(N);
    /* On more than one thread the panels are cut, about four jobs a
     * thread, each job's panels against every sliver of X^T: each thread
     * streams its own share of the weights (the large operand) once, and
     * both read all of X^T. Cutting the rows instead (each thread its own
     * rows of X^T against every panel, in panel chunks numbered from both
     * ends) had each thread stream all of the weights. AMD EPYC (Zen 4),
     * ResNet50 at 2 threads, 2 x 30 alternating pairs in one process
     * (2026-12-06): its 1x1 convs 0.972x the time with the panels cut, the
     * model 0.980x; eight or two jobs a thread instead of four 1.00x. */
    j.n_chunks = parts == 1 ? 1 : 4 * parts < j.n_panels ? 4 * parts : j.n_panels;
    j.chunk = (j.n_panels + j.n_chunks - 1) / j.n_chunks;
    j.n_chunks = (j.n_panels + j.chunk - 1) / j.chunk;
    j.n_jobs = j.n_chunks; /* every job runs all the rows */
    if (parts > j.n_jobs) parts = j.n_jobs;
    /* Depth in shares of whole KC blocks whose X^T fits GEMM_T_SHARE_BYTES:
     * each share's X^T then stays in L2 against every panel, and each
     * panel's share against every sliver, where the whole of a deep conv's
     * (l4 3x3 @7: 49 x 4608 floats, 903 KB, beside a 590 KB panel) did
     * not. C^T takes the later shares' products added. Measured
     * 2026-12-05 (Intel Xeon, 1 thread, best of 6 alternating rounds of
     * kiln bench kernels): l4 3x3 @7 1.605 -> 1.487 ms, l4 3x3/2 1.586 ->
     * 1.345, l4 ds 1x1/2 1.238 -> 1.109 (512 KB shares: 1.523, 1.466,
     * 1.294); in ResNet50, layer4's 3x3 convs 1.93-2.08 -> 1.74-1.85 ms. */
    const size_t block = m_pad * KILN_GEMM_KC * sizeof(float);
    int share = (int)(GEMM_T_SHARE_BYTES / block) * KILN_GEMM_KC;
    if (share < KILN_GEMM_KC) share = KILN_GEMM_KC;
    j.k_stride = K;
    for (int k0 = 0; k0 < K; k0 += share) {
        gemm_job jk = j;
        jk.K = K - k0 < share ? K - k0 : share;
        jk.Ap = Ap + (size_t)k0 * m_pad;
        jk.Bp = Bt + (size_t)k0 * KILN_GEMM_T_NR;
        jk.accumulate = k0 > 0;
        jk.store = k0 + share >= K ? store : NULL;
        jobq_init(&jk.jobs, jk.n_jobs);
        kiln__parallel_for(parts, (size_t)parts, gemm_parts, &jk);
    }
}

#include "f32-gemm-i.inc.c"

static void conv2d_gemm_t(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                          const float *packed, const kiln_epilogue *ep, float *y, float *ws,
                          int threads)
{
    const int N = h_out * w_out, K = s->c_in * s->k_h * s->k_w, M = s->c_out;
    const size_t align = KILN_ALIGN / sizeof(float);
    float *Ap = ws;
    float *Ct = ws + (kiln__gemm_m_pad(N) * K + align - 1) / align * align;
    const size_t x_img = (size_t)s->c_in * s->h_in * s->w_in, y_img = (size_t)M * N;
    const int halves = gemm_h_better(N);
    for (int b = 0; b < s->n; b++) {
        gemm_t_job tj = {s,
                         h_out,
                         w_out,
                         N,
                         K,
                         x + b * x_img,
                         Ap,
                         Ct,
                         ep,
                         ep->residual ? ep->residual + b * y_img : NULL,
                         y + b * (ep->pool2 ? y_img / 4 : y_img),
                         halves ? GEMM_H_MR : GEMM_MR};
        if (gemm_i_ok(s, h_out, w_out)) {
            gemm_i_image(s, h_out, w_out, tj.x, kiln__conv2d_gemm_t_b(s, packed), Ap, Ct, threads);
        } else {
            const int direct = gemm_d_ok(s, N);
            if (!direct)
                kiln__parallel_for((size_t)K * N < (1u << 16) ? 1 : threads, (size_t)s->c_in,
                                   gemm_t_pack_range, &tj);
            /* the store fused into the GEMM's jobs, except where a pool
             * needs whole planes */
            const int fused = !ep->pool2;
            gemm_t_run(N, M, K, direct ? tj.x : Ap, kiln__conv2d_gemm_t_b(s, packed), Ct, threads,
                       halves, direct, fused ? &tj : NULL);
            if (fused) continue;
        }
        kiln__parallel_for(y_img < (1u << 14) ? 1 : threads,
                           (size_t)(M + GEMM_T_STORE_BLOCK - 1) / GEMM_T_STORE_BLOCK,
                           gemm_t_store_range, &tj);
    }
}
