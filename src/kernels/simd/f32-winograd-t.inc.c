/*
 * Winograd F(2x2, 3x3) and F(4x4, 3x3) turned around
 * (kiln__conv2d_is_winograd_t(), kiln__winograd_t_m()),
 * included by f32-kernels.inc.c after f32-gemm-t.inc.c and so compiled
 * once per ISA.
 *
 * The Winograd path of f32-winograd.inc.c puts tiles in the vectors of
 * its transforms and in the columns of its GEMMs. On a small plane (the
 * MNIST CNN's conv2: 14x14, a tile row of 7 tiles) a vector then holds 7
 * of its 16 lanes, and the transforms cost about as much as the GEMMs,
 * which lost it to the direct conv. Here the input channels fill the
 * vectors instead, for every plane size, and the batch's tiles are one
 * set of rows:
 *
 *   1. the batch's input is copied once into a zero-padded NHWC buffer,
 *      so each position's channels are contiguous;
 *   2. per band of slivers (GEMM_MR tiles each): the input transform, a
 *      vector of VW channels of one tile at a time, into V^T[e] as the
 *      GEMM's broadcast rows ([sliver][c_in / VW][GEMM_MR][VW]: a tile's
 *      VW channels are one store); the sixteen GEMMs
 *      M^T[e] (tiles x c_out) = V^T[e] x U^T[e] on the usual 14-row tile,
 *      U^T[e] prepacked in KILN_GEMM_T_NR-channel panels; the output
 *      transform, a vector of VW output channels of one tile at a time,
 *      into an NHWC output buffer. A band's V^T and M^T (one slot per
 *      thread) stay in L2, and U^T (128 KB for 32 -> 64 channels) with
 *      them; a wide conv's U^T (4 MB for 256 -> 256) streams from
 *      memory once a band, its bands as large as L2 allows;
 *   3. the NHWC output goes to NCHW through the epilogue (bias, residual,
 *      activation), 16 channels at a time (gemm_t_store_block()): in each
 *      job, its rows and channels, where its band is whole tile rows
 *      (wt_band_store()), else in a pass of its own after the bands.
 *
 * At stride 2 (kiln__winograd_t_ne() = 25) a tile's 2x2 outputs read a
 * 5x5 input tile (4 apart): in each dimension the even inputs' F(2, 2)
 * with taps w0 and w2 plus the odd inputs times w1, 25 products where the
 * direct conv has 36 (wt_input_s2(), wt_tile_out_s2()).
 *
 * F(4x4, 3x3) (kiln__winograd_t_ne() = 36, on planes of more than 256
 * positions: ResNet50's @56 and @28 3x3 convs) is the same three steps
 * with a 6x6 input tile per 4x4 outputs (wino4_bt() and wino4_at() of the
 * tile-vector path, on vectors of channels; wt_input4(), wt_output4()): 36
 * GEMMs where F(2x2) has 16 per four times the tiles. On the tile-vector
 * path those planes' tile rows (14 and 7 tiles) half-filled the
 * transforms' vectors and the GEMMs' 32-tile panels (49 tiles in 64
 * columns @28), and two threads split 7 tile rows 4 / 3; here a sliver is
 * 14 tiles of any rows, and the bands (one sliver each) split 7 / 7 and
 * 2 / 2. ResNet50, two sessions alternating in one process, one packed
 * for each path (AMD EPYC Zen 4, 40 pairs, 2026-12-06): the 3x3 convs
 * 0.925x the time at 1 thread, 0.905x at 2; the model 0.976x and 0.966x.
 * Its output is stored in parts of KILN_GEMM_T_N_MAX_STRIDED positions
 * and is not pooled in place (conv2d_pool2_ok()).
 *
 * With a fused 2x2/2 max pool (kiln_epilogue.pool2) a tile's 2x2 outputs
 * are one pool window: step 2's output transform applies the epilogue and
 * keeps the window's max (wt_output_pool()), and step 3 only transposes
 * the pooled outputs (wt_store_pooled()). The MNIST CNN at batch 4 ran in
 * 0.89-0.90x the time of pooling in step 3, the CIFAR-10 CNN in 0.96x at
 * 1 thread and 0.92x at 2 (paired runs in one process).
 */

/* Jobs of output channels per thread where a call is split by output
 * channels (kiln__winograd_t_channel_groups()): a thread transforms a
 * band's input once into its slot and runs whichever of the band's
 * channel groups it takes, so the faster thread takes more of them. With
 * one group per thread (two jobs for two), a vCPU slowed by other work
 * left the other idle: ResNet50 at 2 threads (AMD EPYC Zen 4, 2 x 40
 * alternating pairs in one process, 2026-12-06): layer3's 3x3 convs (one
 * band, 8 channel panels) 0.966x the time with four a thread, the model
 * 0.992x; eight a thread measured the same as four. */
#define WT_GROUPS_PER_SLOT 4

/* Bytes of V^T and M^T per band of slivers (at least one sliver). */
#define WT_BAND_BYTES ((size_t)256 * 1024)

typedef struct wt_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, TH, TW, PH, PW;
    int ne;              /* elements per tile: 16, 36 (F(4x4)), or 25 at stride 2 */
    int m, step;         /* outputs per tile side (2 or 4); padded inputs from a tile to the next */
    int C, K, CV;        /* c_in, c_out, c_in / VW */
    int T;               /* tiles of the batch */
    int n_slivers, band; /* slivers of GEMM_MR tiles; per band */
    int groups, group_k; /* output channels in groups of group_k per band */
    const float *x;      /* the batch, NCHW */
    float *xp;           /* the batch zero-padded, NHWC: [n][PH][PW][C] */
    float *yt;           /* the products transformed, NHWC: [n][h_out][w_out][K]; with
                          * `pool`, the pooled outputs: [n][h_out / 2][w_out / 2][K] */
    const kiln_epilogue *ep;
    int pool;         /* the output transform applies the epilogue and the 2x2 max pool */
    const float *ut;  /* U^T[0] */
    size_t ut_stride; /* floats between U^T[e] */
    float *slots;     /* one band's V^T then M^T per caller */
    size_t slot, vstride, mstride;
    float *y;       /* the output, NCHW */
    int band_store; /* each job stores its output rows itself (wt_band_store()) */
    jobq next;      /* the bands not yet taken */
} wt_job;

/* Padded rows [begin, end) of the batch (row r: image r / PH, padded row
 * r % PH) into xp: each input row's C x w_in floats transposed to
 * w_in x C, zeros around. */
static void wt_pad_range(void *ctx, size_t begin, size_t end)
{
    const wt_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const int C = j->C, w_in = s->w_in, l = s->pad_l;
    const size_t plane = (size_t)s->h_in * w_in, row = (size_t)j->PW * C;
    for (size_t r = begin; r < end; r++) {
        const int b = (int)(r / (size_t)j->PH), h = (int)(r % (size_t)j->PH) - s->pad_t;
        float *dst = j->xp + r * row;
        if (h < 0 || h >= s->h_in) {
            memset(dst, 0, sizeof(float) * row);
            continue;
        }
        memset(dst, 0, sizeof(float) * (size_t)l * C);
        memset(dst + (size_t)(l + w_in) * C, 0, sizeof(float) * (size_t)(j->PW - l - w_in) * C);
        const float *src = j->x + (size_t)b * C * plane + (size_t)h * w_in;
        float *d = dst + (size_t)l * C;
        int c0 = 0;
#if defined(V_TRANSPOSE16) && defined(V_LOADU_PART)
        /* 16 channels x 16 columns at a time, transposed in registers */
        for (; c0 + 16 <= C; c0 += 16)
            for (int w0 = 0; w0 < w_in; w0 += 16) {
                const int nw = w_in - w0 < 16 ? w_in - w0 : 16;
                vf v[16];
                for (int i = 0; i < 16; i++)
                    v[i] = V_LOADU_PART(src + (size_t)(c0 + i) * plane + w0, nw);
                V_TRANSPOSE16(v);
                for (int k = 0; k < nw; k++) V_STOREU(d + (size_t)(w0 + k) * C + c0, v[k]);
            }
#endif
        for (; c0 < C; c0++)
            for (int w = 0; w < w_in; w++) d[(size_t)w * C + c0] = src[(size_t)c0 * plane + w];
    }
}

/* Where tile t's VW channels of vector cv go in a band's V^T[e] (lt: the
 * tile's index in the band). */
static inline size_t wt_v_at(const wt_job *j, int lt, int cv)
{
    return (((size_t)(lt / GEMM_MR) * j->CV + cv) * GEMM_MR + lt % GEMM_MR) * VW;
}

/* The stride-2 tile's B^T d B, B^T = [1 0 -1 0 0; 0 0 1 0 0; 0 0 -1 0 1;
 * 0 1 0 0 0; 0 0 0 1 0] (winograd_s2_u() in kernels.c): the 5x5 padded
 * inputs at base (C floats from one column to the next) of VW channels
 * into the 25 V^T[e] at v. */
static inline void wt_input_s2(const wt_job *j, const float *base, float *v)
{
    const int C = j->C, PW = j->PW;
    vf w[5][5];
    for (int r = 0; r < 5; r++) {
        const float *p = base + (size_t)r * PW * C;
        const vf d0 = V_LOADU(p), d1 = V_LOADU(p + C), d2 = V_LOADU(p + 2 * C);
        const vf d3 = V_LOADU(p + 3 * C), d4 = V_LOADU(p + 4 * C);
        w[r][0] = V_SUB(d0, d2);
        w[r][1] = d2;
        w[r][2] = V_SUB(d4, d2);
        w[r][3] = d1;
        w[r][4] = d3;
    }
    for (int k = 0; k < 5; k++) {
        V_STOREU(v + (0 + k) * j->vstride, V_SUB(w[0][k], w[2][k]));
        V_STOREU(v + (5 + k) * j->vstride, w[2][k]);
        V_STOREU(v + (10 + k) * j->vstride, V_SUB(w[4][k], w[2][k]));
        V_STOREU(v + (15 + k) * j->vstride, w[1][k]);
        V_STOREU(v + (20 + k) * j->vstride, w[3][k]);
    }
}

/* F(4x4, 3x3)'s B^T d B (wino4_bt() along each row, then along each
 * column): the 6x6 padded inputs at base of VW channels into the 36
 * V^T[e] at v, e = 6 (row) + column. */
static inline void wt_input4(const wt_job *j, const float *base, float *v)
{
    const int C = j->C, PW = j->PW;
    vf h[6][6]; /* h[r][c]: input row r transformed along its columns */
    for (int r = 0; r < 6; r++) {
        const float *p = base + (size_t)r * PW * C;
        const vf d[6] = {V_LOADU(p),         V_LOADU(p + C),     V_LOADU(p + 2 * C),
                         V_LOADU(p + 3 * C), V_LOADU(p + 4 * C), V_LOADU(p + 5 * C)};
        wino4_bt(d, h[r]);
    }
    for (int c = 0; c < 6; c++) {
        const vf col[6] = {h[0][c], h[1][c], h[2][c], h[3][c], h[4][c], h[5][c]};
        vf o[6];
        wino4_bt(col, o);
        for (int a = 0; a < 6; a++) V_STOREU(v + (6 * a + c) * j->vstride, o[a]);
    }
}

/* B^T d B (B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; wt_input4() for
 * F(4x4), wt_input_s2() at stride 2) of the band's tiles [t0, t1) into
 * V^T; the rows of the band's last sliver past the batch's last tile are
 * zeros. */
static void wt_input(const wt_job *j, float *V, int t0, int t1)
{
    const int C = j->C, PW = j->PW, per_img = j->TH * j->TW, step = j->step;
    for (int t = t0; t < t1; t++) {
        const int lt = t - t0;
        if (t >= j->T) {
            for (int e = 0; e < j->ne; e++)
                for (int cv = 0; cv < j->CV; cv++)
                    V_STOREU(V + e * j->vstride + wt_v_at(j, lt, cv), V_ZERO());
            continue;
        }
        const int b = t / per_img, th = t % per_img / j->TW, tw = t % j->TW;
        const float *base = j->xp + (((size_t)b * j->PH + step * th) * PW + step * tw) * C;
        if (j->ne == 25) {
            for (int cv = 0; cv < j->CV; cv++)
                wt_input_s2(j, base + cv * VW, V + wt_v_at(j, lt, cv));
            continue;
        }
        if (j->ne == 36) {
            for (int cv = 0; cv < j->CV; cv++) wt_input4(j, base + cv * VW, V + wt_v_at(j, lt, cv));
            continue;
        }
        for (int cv = 0; cv < j->CV; cv++) {
            vf w[4][4];
            for (int r = 0; r < 4; r++) {
                const float *p = base + (size_t)r * PW * C + cv * VW;
                const vf d0 = V_LOADU(p), d1 = V_LOADU(p + C);
                const vf d2 = V_LOADU(p + 2 * C), d3 = V_LOADU(p + 3 * C);
                w[r][0] = V_SUB(d0, d2);
                w[r][1] = V_ADD(d1, d2);
                w[r][2] = V_SUB(d2, d1);
                w[r][3] = V_SUB(d1, d3);
            }
            float *v = V + wt_v_at(j, lt, cv);
            for (int k = 0; k < 4; k++) {
                V_STOREU(v + (0 + k) * j->vstride, V_SUB(w[0][k], w[2][k]));
                V_STOREU(v + (4 + k) * j->vstride, V_ADD(w[1][k], w[2][k]));
                V_STOREU(v + (8 + k) * j->vstride, V_SUB(w[2][k], w[1][k]));
                V_STOREU(v + (12 + k) * j->vstride, V_SUB(w[1][k], w[3][k]));
            }
        }
    }
}

/*
 * C[0 .. mr) x GEMM_NR = one sliver of V^T ([c_in / VW][GEMM_MR][VW]: row
 * i's channel k at (k / VW) GEMM_MR VW + i VW + k % VW) x the U^T panel b
 * (rows KILN_GEMM_T_NR floats apart), over all c_in, through a kernel of
 * ROWS >= mr rows. The tile of gemm_micro_pf(), with the rows' broadcasts
 * a vector apart. pf, if not NULL, is the panel the next call reads: one
 * of its rows is prefetched into L2 per step of k (a wide conv's U^T
 * comes from memory).
 */
static inline __attribute__((always_inline)) void wt_micro_rows(const float *a, const float *b,
                                                                int CV, float *c, size_t ldc,
                                                                int mr, const float *pf,
                                                                const int ROWS)
{
    vf acc[GEMM_MR][GEMM_NV];
#pragma GCC unroll 16
    for (int i = 0; i < ROWS; i++)
#pragma GCC unroll 4
        for (int q = 0; q < GEMM_NV; q++) acc[i][q] = V_ZERO();
    for (int cv = 0; cv < CV; cv++, a += GEMM_MR * VW)
        for (int l = 0; l < VW; l++, b += KILN_GEMM_T_NR) {
            if (pf) {
                __builtin_prefetch(pf, 0, 2);
                __builtin_prefetch(pf + GEMM_NR - 1, 0, 2);
                pf += KILN_GEMM_T_NR;
            }
            vf bv[GEMM_NV];
#pragma GCC unroll 4
            for (int q = 0; q < GEMM_NV; q++) bv[q] = V_LOADU(b + q * VW);
#pragma GCC unroll 16
            for (int i = 0; i < ROWS; i++) {
                const vf ai = V_SET1(a[i * VW + l]);
#pragma GCC unroll 4
                for (int q = 0; q < GEMM_NV; q++) acc[i][q] = V_FMA(ai, bv[q], acc[i][q]);
            }
        }
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int q = 0; q < GEMM_NV; q++) V_STOREU(c + (size_t)i * ldc + q * VW, acc[i][q]);
}

/* wt_micro_rows() with as many rows as the sliver needs (a batch's last
 * sliver: ResNet50's 14x14 plane, 49 tiles, ends in 7). */
static void wt_micro(const float *a, const float *b, int CV, float *c, size_t ldc, int mr,
                     const float *pf)
{
    if (mr > 8)
        wt_micro_rows(a, b, CV, c, ldc, mr, pf, GEMM_MR);
    else if (mr > 4)
        wt_micro_rows(a, b, CV, c, ldc, mr, pf, 8);
    else
        wt_micro_rows(a, b, CV, c, ldc, mr, pf, 4);
}

/* Where the GEMM_NR output channels at col0 of U^T[e] start. */
static inline const float *wt_panel(const wt_job *j, int e, int col0)
{
    return j->ut + e * j->ut_stride + (size_t)(col0 / KILN_GEMM_T_NR) * j->C * KILN_GEMM_T_NR +
           col0 % KILN_GEMM_T_NR;
}

/* The sixteen GEMMs of the band's slivers [s0, s1) for output channels
 * [k0, k1): each panel of U^T[e] against every sliver while it is in L1
 * (L2 for a wide conv's, whose first sliver prefetches the next panel). */
static void wt_products(const wt_job *j, const float *V, float *M, int s0, int s1, int k0, int k1)
{
    const int K = j->K, wide = kiln__winograd_t_wide(j->s);
    for (int e = 0; e < j->ne; e++) {
        const float *v = V + e * j->vstride;
        float *m = M + e * j->mstride;
        for (int col0 = k0; col0 < k1; col0 += GEMM_NR) {
            const float *bp = wt_panel(j, e, col0), *next = NULL;
            if (wide && col0 + GEMM_NR < k1)
                next = wt_panel(j, e, col0 + GEMM_NR);
            else if (wide && e + 1 < j->ne)
                next = wt_panel(j, e + 1, k0);
            for (int sl = s0; sl < s1; sl++) {
                const int rest = j->T - sl * GEMM_MR, mr = rest < GEMM_MR ? rest : GEMM_MR;
                const size_t ls = (size_t)(sl - s0) * GEMM_MR;
                wt_micro(v + ls * j->C, bp, j->CV, m + ls * K + col0, (size_t)K, mr,
                         sl == s0 ? next : NULL);
            }
        }
    }
}

/* The stride-2 tile's A^T M A, A^T = [1 1 0 1 0; 0 1 1 0 1]. */
static inline void wt_tile_out_s2(const float *mt, size_t mstride, vf q[4])
{
    vf s0[5], s1[5];
    for (int k = 0; k < 5; k++) {
        const vf m0 = V_LOADU(mt + (size_t)k * mstride),
                 m1 = V_LOADU(mt + (size_t)(5 + k) * mstride);
        const vf m2 = V_LOADU(mt + (size_t)(10 + k) * mstride);
        const vf m3 = V_LOADU(mt + (size_t)(15 + k) * mstride);
        const vf m4 = V_LOADU(mt + (size_t)(20 + k) * mstride);
        s0[k] = V_ADD(V_ADD(m0, m1), m3);
        s1[k] = V_ADD(V_ADD(m1, m2), m4);
    }
    q[0] = V_ADD(V_ADD(s0[0], s0[1]), s0[3]);
    q[1] = V_ADD(V_ADD(s0[1], s0[2]), s0[4]);
    q[2] = V_ADD(V_ADD(s1[0], s1[1]), s1[3]);
    q[3] = V_ADD(V_ADD(s1[1], s1[2]), s1[4]);
}

/* A^T M A (A^T = [1 1 1 0; 0 1 -1 -1]; at stride 2 wt_tile_out_s2()) of
 * one tile's VW channels at mt (M[e] mstride floats apart): its outputs
 * y00, y01, y10, y11 in q. */
static inline void wt_tile_out(const wt_job *j, const float *mt, size_t mstride, vf q[4])
{
    if (j->ne == 25) {
        wt_tile_out_s2(mt, mstride, q);
        return;
    }
    vf m[16], s0[4], s1[4];
    for (int e = 0; e < 16; e++) m[e] = V_LOADU(mt + e * mstride);
    for (int k = 0; k < 4; k++) {
        s0[k] = V_ADD(V_ADD(m[k], m[4 + k]), m[8 + k]);
        s1[k] = V_SUB(V_SUB(m[4 + k], m[8 + k]), m[12 + k]);
    }
    q[0] = V_ADD(V_ADD(s0[0], s0[1]), s0[2]);
    q[1] = V_SUB(V_SUB(s0[1], s0[2]), s0[3]);
    q[2] = V_ADD(V_ADD(s1[0], s1[1]), s1[2]);
    q[3] = V_SUB(V_SUB(s1[1], s1[2]), s1[3]);
}

/* wt_output() with the epilogue and the fused 2x2/2 max pool (j->pool):
 * a tile's four outputs are one pool window (even sides, tiles from the
 * top left), so each goes through the epilogue in registers, as act_row()
 * would (bias added, then the activation), and the window's max is
 * stored as gemm_t_store_range()'s pool of the full plane would (rows
 * first, then columns): the same floats, one NHWC vector per tile. */
static void wt_output_pool(const wt_job *j, const float *M, int t0, int t1, int k0, int k1)
{
    const kiln_epilogue *ep = j->ep;
    const kiln_act act = ep->act;
    const vf va = V_SET1(ep->alpha), vlo = V_SET1(ep->lo), vhi = V_SET1(ep->hi);
    const int K = j->K;
    for (int t = t0; t < t1; t++) {
        float *y = j->yt + (size_t)t * K; /* tile t is pooled position t */
        const float *mt = M + (size_t)(t - t0) * K;
        for (int o = k0; o < k1; o += VW) {
            vf q[4];
            wt_tile_out(j, mt + o, j->mstride, q);
            const vf vb = ep->bias ? V_LOADU(ep->bias + o) : V_ZERO();
            for (int i = 0; i < 4; i++) q[i] = v_act(V_ADD(q[i], vb), act, va, vlo, vhi);
            V_STOREU(y + o, V_MAX(V_MAX(q[0], q[2]), V_MAX(q[1], q[3])));
        }
    }
}

/* F(4x4, 3x3)'s A^T M A (wino4_at() along each column of M, then along
 * each row) of the tiles [t0, t1) and output channels [k0, k1) into the
 * NHWC output, the 4x4 outputs inside the plane. */
static void wt_output4(const wt_job *j, const float *M, int t0, int t1, int k0, int k1)
{
    const int K = j->K, per_img = j->TH * j->TW;
    const size_t ms = j->mstride;
    for (int t = t0; t < t1; t++) {
        const int b = t / per_img, th = t % per_img / j->TW, tw = t % j->TW;
        const int rows = j->h_out - 4 * th < 4 ? j->h_out - 4 * th : 4;
        const int cols = j->w_out - 4 * tw < 4 ? j->w_out - 4 * tw : 4;
        float *y = j->yt + (((size_t)b * j->h_out + 4 * th) * j->w_out + 4 * tw) * K;
        const float *mt = M + (size_t)(t - t0) * K;
        for (int o = k0; o < k1; o += VW) {
            vf v[4][6]; /* v[i][c]: column c of M transformed, row i */
            wino4_at_columns(mt + o, ms, v);
            for (int i = 0; i < rows; i++) {
                vf q[4];
                wino4_at(v[i], q);
                float *yi = y + (size_t)i * j->w_out * K + o;
                for (int k = 0; k < cols; k++) V_STOREU(yi + (size_t)k * K, q[k]);
            }
        }
    }
}

/* A^T M A of the band's tiles [t0, t1) and output channels [k0, k1) into
 * the NHWC output, the 2x2 outputs inside the plane (wt_output4() for
 * F(4x4)). */
static void wt_output(const wt_job *j, const float *M, int t0, int t1, int k0, int k1)
{
    const int K = j->K, per_img = j->TH * j->TW;
    if (t1 > j->T) t1 = j->T;
    if (j->pool) {
        wt_output_pool(j, M, t0, t1, k0, k1);
        return;
    }
    if (j->ne == 36) {
        wt_output4(j, M, t0, t1, k0, k1);
        return;
    }
    for (int t = t0; t < t1; t++) {
        const int b = t / per_img, th = t % per_img / j->TW, tw = t % j->TW;
        const int rows = j->h_out - 2 * th < 2 ? 1 : 2, cols = j->w_out - 2 * tw < 2 ? 1 : 2;
        float *y = j->yt + (((size_t)b * j->h_out + 2 * th) * j->w_out + 2 * tw) * K;
        const float *mt = M + (size_t)(t - t0) * K;
        for (int o = k0; o < k1; o += VW) {
            vf q[4];
            wt_tile_out(j, mt + o, j->mstride, q);
            V_STOREU(y + o, q[0]);
            if (cols > 1) V_STOREU(y + K + o, q[1]);
            if (rows > 1) {
                float *y1 = y + (size_t)j->w_out * K;
                V_STOREU(y1 + o, q[2]);
                if (cols > 1) V_STOREU(y1 + K + o, q[3]);
            }
        }
    }
}

/* The NHWC output's positions [r0, r1) of image b, channels [k0, k1),
 * through the epilogue to NCHW y, in parts of what gemm_t_store_block()
 * holds. */
static void wt_store_rows(const wt_job *j, size_t b, int r0, int r1, int k0, int k1)
{
    const kiln_epilogue *ep = j->ep;
    const int N = j->h_out * j->w_out, K = j->K;
    const size_t y_img = (size_t)K * N;
    gemm_t_job tj = {.s = j->s,
                     .h_out = j->h_out,
                     .w_out = j->w_out,
                     .N = N,
                     .Ct = j->yt + b * y_img,
                     .ep = ep,
                     .res = ep->residual ? ep->residual + b * y_img : NULL,
                     .y = j->y + b * y_img};
    for (int c0 = k0; c0 < k1; c0 += GEMM_T_STORE_BLOCK) {
        const int nc = k1 - c0 < GEMM_T_STORE_BLOCK ? k1 - c0 : GEMM_T_STORE_BLOCK;
        for (int p0 = r0; p0 < r1; p0 += KILN_GEMM_T_N_MAX_STRIDED) {
            const int p1 =
                r1 - p0 < KILN_GEMM_T_N_MAX_STRIDED ? r1 : p0 + KILN_GEMM_T_N_MAX_STRIDED;
            gemm_t_store_block(&tj, tj.Ct + (size_t)p0 * K + c0, (size_t)K, c0, nc, p0, p1);
        }
    }
}

/* A job whose band is whole tile rows (band_store) stores the output rows
 * its tiles [t0, t1) cover, its channels [k0, k1), right after computing
 * them: what it reads is what it wrote, in its own core's caches. */
static void wt_band_store(const wt_job *j, int t0, int t1, int k0, int k1)
{
    if (t1 > j->T) t1 = j->T;
    const int per_img = j->TH * j->TW;
    while (t0 < t1) {
        const int b = t0 / per_img, end = (b + 1) * per_img < t1 ? (b + 1) * per_img : t1;
        const int th0 = t0 % per_img / j->TW, th1 = (end - 1) % per_img / j->TW + 1;
        const int h1 = j->m * th1 < j->h_out ? j->m * th1 : j->h_out;
        wt_store_rows(j, (size_t)b, j->m * th0 * j->w_out, h1 * j->w_out, k0, k1);
        t0 = end;
    }
}

/* Takes jobs (a band and a group of output channels) until none are left
 * (jobq_take()), each through the three steps in this caller's slot
 * (`begin` is unique among the callers). A band's input transform runs
 * once per group. */
static void wt_bands(void *ctx, size_t begin, size_t end)
{
    wt_job *j = ctx;
    (void)end;
    float *V = j->slots + begin * j->slot, *M = V + j->ne * j->vstride;
    int have = -1; /* the band whose input V holds */
    for (;;) {
        const int job = jobq_take(&j->next, begin == 0);
        if (job < 0) return;
        const int band = job / j->groups, k0 = job % j->groups * j->group_k;
        const int k1 = k0 + j->group_k < j->K ? k0 + j->group_k : j->K;
        const int s0 = band * j->band,
                  s1 = s0 + j->band < j->n_slivers ? s0 + j->band : j->n_slivers;
        if (band != have) wt_input(j, V, s0 * GEMM_MR, s1 * GEMM_MR);
        have = band;
        wt_products(j, V, M, s0, s1, k0, k1);
        wt_output(j, M, s0 * GEMM_MR, s1 * GEMM_MR, k0, k1);
        if (j->band_store) wt_band_store(j, s0 * GEMM_MR, s1 * GEMM_MR, k0, k1);
    }
}

typedef struct wt_store_job {
    const wt_job *j; /* its epilogue and output too */
    int blocks;      /* channel blocks per image */
} wt_store_job;

/* Block (image b, channels [c0, c0 + 16)) of the pooled NHWC outputs (the
 * epilogue already applied, wt_output_pool()) to NCHW y. */
static void wt_store_pooled(const wt_job *j, float *y, size_t b, int c0)
{
    const int P = j->TH * j->TW, K = j->K;
    nhwc_to_planes(j->yt + b * (size_t)P * K + c0, (size_t)K, P, GEMM_T_STORE_BLOCK,
                   y + (b * (size_t)K + c0) * P, (size_t)P);
}

/* Blocks [begin, end) of (image, 16 output channels) from the NHWC output
 * to y through the epilogue. */
static void wt_store_range(void *ctx, size_t begin, size_t end)
{
    const wt_store_job *sj = ctx;
    const wt_job *j = sj->j;
    const int N = j->h_out * j->w_out;
    const size_t y_img = (size_t)j->K * N;
    for (size_t i = begin; i < end; i++) {
        const size_t b = i / (size_t)sj->blocks, blk = i % (size_t)sj->blocks;
        if (j->pool) {
            wt_store_pooled(j, j->y, b, (int)blk * GEMM_T_STORE_BLOCK);
            continue;
        }
        const int c0 = (int)blk * GEMM_T_STORE_BLOCK;
        if (!j->ep->pool2) {
            wt_store_rows(j, b, 0, N, c0,
                          c0 + GEMM_T_STORE_BLOCK < j->K ? c0 + GEMM_T_STORE_BLOCK : j->K);
            continue;
        }
        /* pooled after the store: F(2x2) with the sigmoid, at most 256
         * positions */
        gemm_t_job tj = {.s = j->s,
                         .h_out = j->h_out,
                         .w_out = j->w_out,
                         .N = N,
                         .Ct = j->yt + b * y_img,
                         .ep = j->ep,
                         .y = j->y + b * (y_img / 4)};
        gemm_t_store_range(&tj, blk, blk + 1);
    }
}

static void conv2d_winograd_t(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                              const float *packed, const kiln_epilogue *ep, float *y, float *ws,
                              int threads)
{
    const int m = kiln__winograd_t_m(s), C = s->c_in, K = s->c_out;
    int TH, TW;
    kiln__winograd_t_tiles(s, h_out, w_out, &TH, &TW);
    wt_job j = {.s = s,
                .h_out = h_out,
                .w_out = w_out,
                .TH = TH,
                .TW = TW,
                .ne = kiln__winograd_t_ne(s),
                .m = m,
                .step = m * s->stride_h,
                .C = C,
                .K = K,
                .CV = C / VW,
                .T = s->n * TH * TW,
                .x = x,
                .ut = kiln__winograd_t_u(s, packed),
                .ut_stride = kiln__winograd_t_u_stride(s),
                .ep = ep,
                /* the sigmoid's scalar form (act_row()'s tails) is not
                 * bit for bit its vector form: it pools after the store */
                .pool = ep->pool2 && ep->act != KILN_ACT_SIGMOID && m == 2};
    j.n_slivers = (j.T + GEMM_MR - 1) / GEMM_MR;
    kiln__winograd_t_padded(s, h_out, w_out, &j.PH, &j.PW);
    /* The workspace's parts (kiln__winograd_t_workspace_floats()): the
     * last holds V^T and M^T for all the slivers, which the bands' slots
     * share, or one band per thread of a wide or channel-split call. */
    size_t xp_floats, yt_floats;
    const size_t room = kiln__winograd_t_workspace_floats(s, threads, &xp_floats, &yt_floats) -
                        xp_floats - yt_floats;
    j.xp = ws;
    j.yt = ws + xp_floats;
    j.slots = j.yt + yt_floats;
    j.groups = 1;
    const int channel_groups = kiln__winograd_t_channel_groups(s, threads);
    if (channel_groups || kiln__winograd_t_wide(s)) {
        /* Few tiles (the CIFAR-10 CNN's 8x8 conv: 16, a sliver and 2
         * rows): one band, its output channels split in whole panels,
         * each thread transforming the band's input for itself into its
         * own slot (kiln_conv2d_workspace_size() holds one per thread;
         * sized for one, this ran on one thread). The CIFAR-10 CNN at 2
         * threads, alternating with the one-thread split in one process
         * (2 x 3000 pairs): that conv 0.56 / 0.58x, the model 0.77 /
         * 0.80x (2026-12-06). A wide or strided conv's U^T (4.2 MB for
         * ResNet50's 14x14 convs, 1.6 MB for its stride-2 one) is read from
         * memory: bands of as many slivers as fit 2 MB (ResNet50's 49
         * tiles: one band), so that U^T is read once a band; split the
         * same way on several threads (kiln__winograd_t_channel_groups()). */
        j.band = kiln__winograd_t_band(s);
        if (channel_groups) j.groups = WT_GROUPS_PER_SLOT * channel_groups;
    } else {
        const size_t per_sliver = (size_t)j.ne * GEMM_MR * (C + K) * sizeof(float);
        j.band = (int)(WT_BAND_BYTES / per_sliver);
        if (j.band < 1) j.band = 1;
        /* at least two bands a thread */
        if (threads > 1 && j.band > (j.n_slivers + 2 * threads - 1) / (2 * threads))
            j.band = (j.n_slivers + 2 * threads - 1) / (2 * threads);
    }
    if (j.band > j.n_slivers) j.band = j.n_slivers;
    const int n_bands = (j.n_slivers + j.band - 1) / j.band;
    j.group_k = (K / KILN_GEMM_T_NR + j.groups - 1) / j.groups * KILN_GEMM_T_NR;
    j.groups = (K + j.group_k - 1) / j.group_k;
    j.vstride = (size_t)j.band * GEMM_MR * C + KILN_WINOGRAD_V_SKEW;
    j.mstride = (size_t)j.band * GEMM_MR * K + KILN_WINOGRAD_V_SKEW;
    j.slot = (size_t)j.ne * (j.vstride + j.mstride);
    const int n_jobs = n_bands * j.groups;
    int parts = threads < n_jobs ? threads : n_jobs;
    if (parts < 1) parts = 1;
    while (parts > 1 && (size_t)parts * j.slot > room) parts--;
    const size_t pad_floats = (size_t)s->n * j.PH * j.PW * C;
    kiln__parallel_for(pad_floats < (1u << 16) ? 1 : threads, (size_t)s->n * j.PH, wt_pad_range,
                       &j);
    /* Where a band is whole tile rows (one band, or slivers that end on
     * tile rows: F(4x4) on ResNet50's planes, 14 and 7 tiles a row) each
     * job stores its own rows and channels: what it reads is what it
     * wrote, in its core's caches, where the pass of its own below reads
     * half of what the other thread wrote. When the VM's two vCPUs are
     * far apart (a round trip between them 320-350 ns instead of 55, which
     * came and went from minute to minute on the AMD EPYC Zen 4 VM),
     * ResNet50 at 2 threads ran 0.99x the time (its 3x3 convs 0.96-0.975x);
     * when close, 1.00x (in one process alternating with the pass, 2 x 20
     * pairs each, 2026-12-06). The same floats, but for the sigmoid,
     * whose scalar form (act_row()'s tails, which then fall elsewhere) is
     * not bit for bit its vector form: it keeps the pass. */
    j.y = y;
    j.band_store = !j.pool && !ep->pool2 && ep->act != KILN_ACT_SIGMOID &&
                   ((j.band * GEMM_MR) % TW == 0 || j.band >= j.n_slivers);
    jobq_init(&j.next, n_jobs);
    kiln__parallel_for(parts, (size_t)parts, wt_bands, &j);
    if (j.band_store) return;
    wt_store_job sj = {&j, (K + GEMM_T_STORE_BLOCK - 1) / GEMM_T_STORE_BLOCK};
    kiln__parallel_for(yt_floats < (1u << 14) ? 1 : threads, (size_t)s->n * sj.blocks,
                       wt_store_range, &sj);
}
