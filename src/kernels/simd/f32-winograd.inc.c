/*
 * Winograd convolution for stride-1 3x3 convs (kiln__conv_ops.winograd),
 * included by f32-kernels.inc.c after act_row() and the GEMM, and so
 * compiled once per ISA.
 */

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------ */

/* Direct-conv FLOPs of one image below which a Winograd layer runs on
 * one thread (measured on the CIFAR-10 CNN at 2 threads). */
#define WINOGRAD_MIN_PARALLEL_FLOPS 2e7

/* The banded schedule (wino_bands()): the fewest bands of tile rows, and
 * the size of the whole plane's V and M above which it is taken. Below
 * that they stay in L2 anyway and the bands only cost (the CIFAR-10 CNN's
 * 32x32 layer, V and M 1 MB: 0.26 -> 0.32 ms for the model at 1 thread).
 * On more than one thread it is also taken when the plane makes at least
 * a band per thread: see winograd(). */
#define WINO_MIN_BANDS       4
#define WINO_BANDS_MIN_BYTES (2u << 20)

typedef struct wino_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, TH, TW;
    int th0, th1;               /* the tile rows V and M hold: [th0, th1) */
    int m, ne;                  /* output tile (2 or 4) and (m + 2)^2 GEMMs */
    size_t T, vstride, mstride; /* floats between V[e], between M[e] */
    const float *xb;            /* this image's input */
    float *V, *M;
    const kiln_epilogue *ep;
    float *yb;       /* this image's output */
    const float *rb; /* this image's residual, or NULL */
    const float *u;  /* the ne packed U[e] */
    size_t u_stride; /* floats between U[e] */
} wino_job;

/* Copies input row ih of channel xc into row, zero-padded to L floats. */
static void wino_fill_row(const kiln_conv2d_shape *s, const float *xc, int ih, int L, float *row)
{
    if (ih < 0 || ih >= s->h_in) {
        memset(row, 0, sizeof(float) * L);
        return;
    }
    int j0 = s->pad_l < L ? s->pad_l : L;
    int j1 = s->pad_l + s->w_in < L ? s->pad_l + s->w_in : L;
    memset(row, 0, sizeof(float) * j0);
    memcpy(row + j0, xc + (size_t)ih * s->w_in + (j0 - s->pad_l), sizeof(float) * (j1 - j0));
    memset(row + j1, 0, sizeof(float) * (L - j1));
}

/*
 * One input channel's transformed tiles on their way into the ne packed
 * V[e]: vectors of VW tiles arrive in order of tile index t (a vector may
 * run past its tile row's end: the next tile row's vector overwrites those
 * lanes), land in st[e][t - base], and each GEMM_NR tiles' panel row is
 * copied into V[e] as whole vectors once the vectors have moved past it.
 * So no store straddles two panels or computes a panel address per
 * element.
 */
#define WINO_STAGE (GEMM_NR + VW) /* floats per e: a panel row and a vector */

/* Copies the staged panel row of tiles [base, base + GEMM_NR) of channel
 * ic into each V[e], then moves the vector that ran past it to the front. */
static void wino_stage_flush(const wino_job *j, size_t ic, float *st, size_t base)
{
    const size_t off = (base / GEMM_NR * j->s->c_in + ic) * GEMM_NR;
    for (int e = 0; e < j->ne; e++) {
        float *src = st + (size_t)e * WINO_STAGE, *dst = j->V + (size_t)e * j->vstride + off;
        for (int q = 0; q < GEMM_NR; q += VW) V_STOREU(dst + q, V_LOADU(src + q));
        V_STOREU(src, V_LOADU(src + GEMM_NR));
    }
}

/* Before the vector of tiles [t, t + VW) is staged: flushes the panel
 * rows it has moved past. */
static inline void wino_stage_advance(const wino_job *j, size_t ic, float *st, size_t *base,
                                      size_t t)
{
    while (t >= *base + GEMM_NR) {
        wino_stage_flush(j, ic, st, *base);
        *base += GEMM_NR;
    }
}

/* After the channel's last vector: zeros the columns past the last tile
 * (the GEMM reads them) and flushes what is left. */
static void wino_stage_finish(const wino_job *j, size_t ic, float *st, size_t base)
{
    for (; base < j->T; base += GEMM_NR) {
        if (j->T - base < GEMM_NR)
            for (int e = 0; e < j->ne; e++)
                memset(st + (size_t)e * WINO_STAGE + (j->T - base), 0,
                       sizeof(float) * (GEMM_NR - (j->T - base)));
        wino_stage_flush(j, ic, st, base);
    }
}

/* Input transform of input channels [begin, end), written straight into
 * the GEMM's packed B layout through the stage above (so no separate
 * packing pass). A tile row reads four input rows, two of which the next
 * tile row reads again: they are copied once and the row pointers rotate.
 * Vectors of VW tiles run past a tile row's end (ResNet50's @14 rows are
 * 7 tiles), reading up to 2 VW floats of the rows' slack
 * (KILN_WINOGRAD_ROW_MAX leaves 64 past the longest row), zeroed here once. */
static void wino_input(void *ctx, size_t begin, size_t end)
{
    const wino_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const int TW = j->TW, L = 2 * TW + 4; /* padded row length the transforms read */
    const size_t plane_in = (size_t)s->h_in * s->w_in;
    float rb[4][KILN_WINOGRAD_ROW_MAX], st[16 * WINO_STAGE];
    const int slack = KILN_WINOGRAD_ROW_MAX - L < 2 * VW ? KILN_WINOGRAD_ROW_MAX - L : 2 * VW;
    for (int r = 0; r < 4; r++) memset(rb[r] + L, 0, sizeof(float) * slack);
    for (size_t ic = begin; ic < end; ic++) {
        const float *xc = j->xb + ic * plane_in;
        float *rows[4] = {rb[0], rb[1], rb[2], rb[3]};
        size_t base = 0;
        for (int th = j->th0; th < j->th1; th++) {
            if (th == j->th0) {
                for (int r = 0; r < 4; r++) wino_fill_row(s, xc, 2 * th - s->pad_t + r, L, rows[r]);
            } else {
                float *r0 = rows[0], *r1 = rows[1];
                rows[0] = rows[2];
                rows[1] = rows[3];
                rows[2] = r0;
                rows[3] = r1;
                for (int r = 2; r < 4; r++) wino_fill_row(s, xc, 2 * th - s->pad_t + r, L, rows[r]);
            }
            for (int tw = 0; tw < TW; tw += VW) {
                vf c[4][4];
                for (int r = 0; r < 4; r++) {
                    const float *p = rows[r] + 2 * tw;
                    vf d0 = v_load_even(p), d1 = v_load_even(p + 1);
                    vf d2 = v_load_even(p + 2), d3 = v_load_even(p + 3);
                    c[r][0] = V_SUB(d0, d2);
                    c[r][1] = V_ADD(d1, d2);
                    c[r][2] = V_SUB(d2, d1);
                    c[r][3] = V_SUB(d1, d3);
                }
                const size_t t = (size_t)(th - j->th0) * TW + tw;
                wino_stage_advance(j, ic, st, &base, t);
                float *at = st + (t - base);
                for (int k = 0; k < 4; k++) {
                    V_STOREU(at + (0 + k) * WINO_STAGE, V_SUB(c[0][k], c[2][k]));
                    V_STOREU(at + (4 + k) * WINO_STAGE, V_ADD(c[1][k], c[2][k]));
                    V_STOREU(at + (8 + k) * WINO_STAGE, V_SUB(c[2][k], c[1][k]));
                    V_STOREU(at + (12 + k) * WINO_STAGE, V_SUB(c[1][k], c[3][k]));
                }
            }
        }
        wino_stage_finish(j, ic, st, base);
    }
}

/* Output transform and epilogue of output channels [begin, end), in
 * vectors of VW tiles; one past a tile row's end reads the next tile
 * row's (or the workspace's slack, kiln_conv2d_workspace_size()) and its
 * extra lanes are dropped. */
static void wino_output(void *ctx, size_t begin, size_t end)
{
    const wino_job *j = ctx;
    const kiln_epilogue *ep = j->ep;
    const int TW = j->TW, h_out = j->h_out, w_out = j->w_out;
    const size_t mstride = j->mstride, plane_out = (size_t)h_out * w_out;
    float ob[2][KILN_WINOGRAD_ROW_MAX];
    for (size_t oc = begin; oc < end; oc++) {
        const float bias = ep->bias ? ep->bias[oc] : 0.0f;
        const size_t yoff = oc * plane_out;
        for (int th = j->th0; th < j->th1; th++) {
            const float *mt = j->M + oc * j->T + (size_t)(th - j->th0) * TW;
            for (int tw = 0; tw < TW; tw += VW) {
                vf m[16], s0[4], s1[4];
                for (int e = 0; e < 16; e++) m[e] = V_LOADU(mt + e * mstride + tw);
                for (int k = 0; k < 4; k++) {
                    s0[k] = V_ADD(V_ADD(m[k], m[4 + k]), m[8 + k]);
                    s1[k] = V_SUB(V_SUB(m[4 + k], m[8 + k]), m[12 + k]);
                }
                float t[4][VW];
                V_STOREU(t[0], V_ADD(V_ADD(s0[0], s0[1]), s0[2]));
                V_STOREU(t[1], V_SUB(V_SUB(s0[1], s0[2]), s0[3]));
                V_STOREU(t[2], V_ADD(V_ADD(s1[0], s1[1]), s1[2]));
                V_STOREU(t[3], V_SUB(V_SUB(s1[1], s1[2]), s1[3]));
                for (int k = 0; k < VW; k++) {
                    ob[0][2 * (tw + k)] = t[0][k];
                    ob[0][2 * (tw + k) + 1] = t[1][k];
                    ob[1][2 * (tw + k)] = t[2][k];
                    ob[1][2 * (tw + k) + 1] = t[3][k];
                }
            }
            for (int i = 0; i < 2 && 2 * th + i < h_out; i++) {
                size_t off = yoff + (size_t)(2 * th + i) * w_out;
                act_row((size_t)w_out, ob[i], bias, NULL, j->rb ? j->rb + off : NULL, ep,
                        j->yb + off);
            }
        }
    }
}

/* ---- Winograd F(4x4, 3x3) ------------------------------------------------ */

/* Floats of one phase-split input row (below) and of one output row. */
#define WINO4_ROW (KILN_WINOGRAD_ROW_MAX + 4 * VW + 8)

/* The 6-point input transform o = B^T d, with
 * B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *        0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]. */
static inline void wino4_bt(const vf d[6], vf o[6])
{
    const vf c4 = V_SET1(4.0f), cm4 = V_SET1(-4.0f), cm5 = V_SET1(-5.0f);
    const vf t0 = V_FMA(cm4, d[2], d[4]), t1 = V_FMA(cm4, d[1], d[3]);
    const vf t2 = V_SUB(d[4], d[2]), t3 = V_ADD(V_SUB(d[3], d[1]), V_SUB(d[3], d[1]));
    o[0] = V_FMA(c4, d[0], V_FMA(cm5, d[2], d[4]));
    o[1] = V_ADD(t0, t1);
    o[2] = V_SUB(t0, t1);
    o[3] = V_ADD(t2, t3);
    o[4] = V_SUB(t2, t3);
    o[5] = V_FMA(c4, d[1], V_FMA(cm5, d[3], d[5]));
}

/* The 6-point output transform o = A^T m, with
 * A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. */
static inline void wino4_at(const vf m[6], vf o[4])
{
    const vf a = V_ADD(m[1], m[2]), b = V_SUB(m[1], m[2]);
    const vf c = V_ADD(m[3], m[4]), d = V_SUB(m[3], m[4]);
    o[0] = V_ADD(V_ADD(m[0], a), c);
    o[1] = V_FMA(V_SET1(2.0f), d, b);
    o[2] = V_FMA(V_SET1(4.0f), c, a);
    o[3] = V_ADD(V_FMA(V_SET1(8.0f), d, b), m[5]);
}

/* A^T along each of the six columns of a tile's 6x6 M (element e = 6 a +
 * c at m0 + e * mstride): v[i][c], row i of column c transformed. Then
 * wino4_at(v[i]) gives the tile's output row i. */
static inline void wino4_at_columns(const float *m0, size_t mstride, vf v[4][6])
{
    for (int c = 0; c < 6; c++) {
        vf m[6], o[4];
        for (int a = 0; a < 6; a++) m[a] = V_LOADU(m0 + (6 * a + c) * mstride);
        wino4_at(m, o);
        for (int i = 0; i < 4; i++) v[i][c] = o[i];
    }
}

/* Input row ih of channel xc, zero-padded, split by column phase: tile tw
 * reads the padded columns 4 tw .. 4 tw + 5, which are P0[tw], P1[tw],
 * P2[tw], P3[tw], P0[tw + 1], P1[tw + 1] with Pq = p + q * ph (ph floats
 * per phase), so the transform loads contiguous vectors over tiles.
 * Phases are zero from TW + 1 to ph. */
static void wino4_fill_row(const kiln_conv2d_shape *s, const float *xc, int ih, int TW, int ph,
                           float *restrict lin, float *restrict p)
{
    const int n = TW + 1;
    wino_fill_row(s, xc, ih, 4 * n, lin);
    for (int t = 0; t < n; t++)
        for (int q = 0; q < 4; q++) p[q * ph + t] = lin[4 * t + q];
    for (int q = 0; q < 4; q++) memset(p + q * ph + n, 0, sizeof(float) * (ph - n));
}

/* F(4x4) input transform of input channels [begin, end) into the packed
 * V[36] (as wino_input()): a tile row reads six input rows, the last two
 * of which the next tile row reads again. Per VW tiles: B^T along each
 * row, then along each column, e = 6 * (row index) + column index; the
 * vectors go through the stage above (ResNet50's rows of 14 and 7 tiles
 * end mid-vector and mid-panel). */
static void wino4_input(void *ctx, size_t begin, size_t end)
{
    const wino_job *j = ctx;
    const kiln_conv2d_shape *s = j->s;
    const int TW = j->TW, ph = TW + 1 + VW;
    const size_t plane_in = (size_t)s->h_in * s->w_in;
    float rb[6][WINO4_ROW], lin[WINO4_ROW], st[36 * WINO_STAGE];
    for (size_t ic = begin; ic < end; ic++) {
        const float *xc = j->xb + ic * plane_in;
        float *rows[6] = {rb[0], rb[1], rb[2], rb[3], rb[4], rb[5]};
        size_t base = 0;
        for (int th = j->th0; th < j->th1; th++) {
            int r0 = 0;
            if (th > j->th0) { /* rows 4 and 5 become rows 0 and 1 */
                float *o0 = rows[0], *o1 = rows[1], *o2 = rows[2], *o3 = rows[3];
                rows[0] = rows[4];
                rows[1] = rows[5];
                rows[2] = o0;
                rows[3] = o1;
                rows[4] = o2;
                rows[5] = o3;
                r0 = 2;
            }
            for (int r = r0; r < 6; r++)
                wino4_fill_row(s, xc, 4 * th - s->pad_t + r, TW, ph, lin, rows[r]);
            for (int tw = 0; tw < TW; tw += VW) {
                vf h[6][6]; /* h[r][c]: row r transformed along its columns */
                for (int r = 0; r < 6; r++) {
                    const float *p = rows[r] + tw;
                    const vf d[6] = {V_LOADU(p),          V_LOADU(p + ph), V_LOADU(p + 2 * ph),
                                     V_LOADU(p + 3 * ph), V_LOADU(p + 1),  V_LOADU(p + ph + 1)};
                    wino4_bt(d, h[r]);
                }
                const size_t t = (size_t)(th - j->th0) * TW + tw;
                wino_stage_advance(j, ic, st, &base, t);
                float *at = st + (t - base);
                for (int c = 0; c < 6; c++) {
                    const vf col[6] = {h[0][c], h[1][c], h[2][c], h[3][c], h[4][c], h[5][c]};
                    vf o[6];
                    wino4_bt(col, o);
                    for (int a = 0; a < 6; a++) V_STOREU(at + (6 * a + c) * WINO_STAGE, o[a]);
                }
            }
        }
        wino_stage_finish(j, ic, st, base);
    }
}

/* F(4x4) output transform and epilogue of output channels [begin, end):
 * per VW tiles, A^T along each column of M, then along each row, into
 * four output rows. Vectors past a tile row's end read the next tile
 * row's (or the workspace's slack) and are dropped. */
static void wino4_output(void *ctx, size_t begin, size_t end)
{
    const wino_job *j = ctx;
    const kiln_epilogue *ep = j->ep;
    const int TW = j->TW, h_out = j->h_out, w_out = j->w_out;
    const size_t mstride = j->mstride, plane_out = (size_t)h_out * w_out;
    float ob[4][WINO4_ROW];
    for (size_t oc = begin; oc < end; oc++) {
        const float bias = ep->bias ? ep->bias[oc] : 0.0f;
        const size_t yoff = oc * plane_out;
        for (int th = j->th0; th < j->th1; th++) {
            const float *mt = j->M + oc * j->T + (size_t)(th - j->th0) * TW;
            for (int tw = 0; tw < TW; tw += VW) {
                vf v[4][6]; /* v[i][c]: column c of M transformed, row i */
                wino4_at_columns(mt + tw, mstride, v);
                for (int i = 0; i < 4; i++) {
                    vf o[4];
                    float t[4][VW];
                    wino4_at(v[i], o);
                    for (int k = 0; k < 4; k++) V_STOREU(t[k], o[k]);
                    float *dst = ob[i] + 4 * tw;
                    for (int l = 0; l < VW; l++)
                        for (int k = 0; k < 4; k++) dst[4 * l + k] = t[k][l];
                }
            }
            for (int i = 0; i < 4 && 4 * th + i < h_out; i++) {
                size_t off = yoff + (size_t)(4 * th + i) * w_out;
                act_row((size_t)w_out, ob[i], bias, NULL, j->rb ? j->rb + off : NULL, ep,
                        j->yb + off);
            }
        }
    }
}

/* Output channels [KILN_GEMM_MR * begin, KILN_GEMM_MR * end) (slivers of
 * packed U): the ne GEMMs M[e] = U[e] x V[e] for those rows on the
 * calling thread (each panel of V[e] against every sliver, as gemm() does
 * for one row block), then their output transform and epilogue while M's
 * rows are still in cache. */
static void wino_products(void *ctx, size_t begin, size_t end)
{
    const wino_job *j = ctx;
    const int K = j->s->c_out, C = j->s->c_in, N = (int)j->T;
    const int r0 = (int)begin * GEMM_MR, r1 = (int)end * GEMM_MR < K ? (int)end * GEMM_MR : K;
    const int n_panels = (N + GEMM_NR - 1) / GEMM_NR;
    for (int e = 0; e < j->ne; e++) {
        const gemm_job g = {.M = K,
                            .N = N,
                            .K = C,
                            .Ap = j->u + (size_t)e * j->u_stride,
                            .Bp = j->V + (size_t)e * j->vstride,
                            .C = j->M + (size_t)e * j->mstride,
                            .ldc = j->T};
        for (int p = 0; p < n_panels; p++) {
            const size_t col0 = (size_t)p * GEMM_NR;
            const int nc = N - (int)col0 < GEMM_NR ? N - (int)col0 : GEMM_NR;
            const float *bp = g.Bp + (size_t)p * C * GEMM_NR;
            for (int row = r0; row < r1; row += GEMM_MR)
                gemm_micro(&g, bp, row, col0, r1 - row < GEMM_MR ? r1 - row : GEMM_MR, nc);
        }
    }
    if (j->m == 4)
        wino4_output(ctx, (size_t)r0, (size_t)r1);
    else
        wino_output(ctx, (size_t)r0, (size_t)r1);
}

/* Jobs [begin, end) of (panel, sliver) pairs, panel-major so that
 * consecutive jobs share V's panel: the ne GEMMs of one MR-row sliver of
 * M against one panel of tiles. For layers with few output slivers (64
 * channels are 5), where splitting by slivers alone leaves the threads
 * unequal; the output transform then runs as a region of its own. */
static void wino_products_tiles(void *ctx, size_t begin, size_t end)
{
    const wino_job *j = ctx;
    const int K = j->s->c_out, C = j->s->c_in, N = (int)j->T;
    const size_t n_slivers = (size_t)(K + GEMM_MR - 1) / GEMM_MR;
    for (size_t job = begin; job < end; job++) {
        const size_t p = job / n_slivers, col0 = p * GEMM_NR;
        const int row = (int)(job % n_slivers) * GEMM_MR;
        const int nc = N - (int)col0 < GEMM_NR ? N - (int)col0 : GEMM_NR;
        const int mr = K - row < GEMM_MR ? K - row : GEMM_MR;
        for (int e = 0; e < j->ne; e++) {
            const gemm_job g = {.M = K,
                                .N = N,
                                .K = C,
                                .Ap = j->u + (size_t)e * j->u_stride,
                                .Bp = j->V + (size_t)e * j->vstride,
                                .C = j->M + (size_t)e * j->mstride,
                                .ldc = j->T};
            gemm_micro(&g, g.Bp + p * C * GEMM_NR, row, col0, mr, nc);
        }
    }
}

/* Output transform and epilogue of output channels [begin, end). */
static void wino_transform_out(void *ctx, size_t begin, size_t end)
{
    const wino_job *j = ctx;
    if (j->m == 4)
        wino4_output(ctx, begin, end);
    else
        wino_output(ctx, begin, end);
}

/* ---- bands of tile rows ---------------------------------------------------- */

/*
 * A large plane (ResNet50's @56 layers: 14 x 14 tiles of F(4x4), 64
 * channels) has V and M of 2 MB each, which pass through L3 between the
 * three steps; on two threads the steps split the work differently (input
 * channels, then tiles, then output channels), so most of V and M also
 * crossed from one core to the other, and the layer hardly ran faster on
 * two threads than on one. Here the plane goes in bands of tile rows
 * about one GEMM panel of tiles each: a thread takes the next band and
 * runs all three steps on it, for every channel, in its own V and M
 * (about 0.3 MB each), which stay in its L2. Measured 2026-12-05 (Intel
 * Xeon, 3 alternating rounds of kiln bench kernels --layer "l1 3x3"):
 * 1.10-1.30 -> 1.02-1.09 ms at 1 thread, 0.91-0.96 -> 0.60-0.63 at 2; in
 * ResNet50 (kiln bench model --layers, fastest runs) layer1's three 3x3
 * convs 1.48-1.89 -> 1.08-1.17 ms each at 1 thread, 1.04-1.47 -> 0.65-0.75
 * at 2.
 */
typedef struct wino_band_job {
    const wino_job *j; /* the image's job */
    int band_rows;
    size_t slot_floats; /* workspace floats per concurrent caller */
    size_t vstride;     /* floats between a band's V[e] */
    float *ws;
    jobq next; /* the bands not yet taken */
} wino_band_job;

/* Tile rows per band: as many as one GEMM panel of tiles holds, at least
 * one row. */
static int wino_band_rows(int TW)
{
    int r = GEMM_NR / TW;
    return r < 1 ? 1 : r;
}

/* Workspace floats of one caller of wino_bands(): V and M for one band. */
static size_t wino_band_slot_floats(const wino_job *j, int band_rows, size_t *vstride)
{
    const size_t Tb = (size_t)band_rows * j->TW, align = KILN_ALIGN / sizeof(float);
    *vstride = kiln__gemm_packed_b_floats(j->s->c_in, Tb) + KILN_WINOGRAD_V_SKEW;
    size_t n = (size_t)j->ne * (*vstride + (size_t)j->s->c_out * Tb) + KILN_GEMM_NR_MAX;
    return (n + align - 1) / align * align;
}

/* Takes bands until none are left, from the front or the back
 * (jobq_take()); `begin` is unique among the callers running at once, so
 * it picks this caller's part of the workspace. */
static void wino_bands(void *ctx, size_t begin, size_t end)
{
    wino_band_job *b = ctx;
    (void)end;
    wino_job j = *b->j;
    j.vstride = b->vstride;
    j.V = b->ws + begin * b->slot_floats;
    j.M = j.V + (size_t)j.ne * j.vstride;
    const size_t n_slivers = (size_t)(j.s->c_out + GEMM_MR - 1) / GEMM_MR;
    for (;;) {
        const int band = jobq_take(&b->next, begin == 0);
        if (band < 0) return;
        j.th0 = band * b->band_rows;
        j.th1 = j.th0 + b->band_rows < j.TH ? j.th0 + b->band_rows : j.TH;
        j.T = (size_t)(j.th1 - j.th0) * j.TW;
        j.mstride = (size_t)j.s->c_out * j.T;
        (j.m == 4 ? wino4_input : wino_input)(&j, 0, (size_t)j.s->c_in);
        wino_products(&j, 0, n_slivers);
    }
}

/*
 * Y = A^T [ (G g G^T) .* (B^T d B) ] A per 2x2 output tile (Lavin & Gray):
 * 16 multiplies per tile and channel pair instead of 36. Per image:
 *   1. input transform: V[16] (c_in x tiles each), vectors over a tile
 *      row's tiles, from zero-padded copies of the four input rows it
 *      covers, stored in the GEMM's packed B panels;
 *   2. sixteen GEMMs M[e] = U[e] (c_out x c_in) x V[e] (c_in x tiles), on
 *      kiln's GEMM microkernel;
 *   3. output transform per channel and tile row into two output rows,
 *      then the epilogue while copying them into y.
 * Two parallel regions per image: step 1 split over input channels, steps
 * 2 and 3 together over output channels (wino_products).
 * B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], A^T = [1 1 1 0; 0 1 -1 -1].
 *
 * F(4x4, 3x3) (where kiln__winograd_tile() says 4: ResNet50's @56 and @28
 * layers) is the same three steps with 4x4 output tiles, 6x6 input tiles
 * and 36 GEMMs: 4x fewer multiplies than a direct conv (against 2.25x),
 * larger transforms, and rounding error about 30x F(2x2)'s (nmse against
 * ref on the ResNet50 shapes about 1e-10, still well inside the tests'
 * 1e-9).
 */
static void winograd(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                     const float *u, const kiln_epilogue *ep, float *y, float *ws, int threads)
{
    const int m = kiln__winograd_tile(s), ne = (m + 2) * (m + 2);
    const int TH = (h_out + m - 1) / m, TW = (w_out + m - 1) / m, C = s->c_in, K = s->c_out;
    const size_t T = (size_t)TH * TW;
    const size_t vstride = kiln__gemm_packed_b_floats(C, T) + KILN_WINOGRAD_V_SKEW;
    wino_job j = {.s = s,
                  .h_out = h_out,
                  .w_out = w_out,
                  .TH = TH,
                  .TW = TW,
                  .th0 = 0,
                  .th1 = TH,
                  .m = m,
                  .ne = ne,
                  .T = T,
                  .vstride = vstride,
                  .mstride = (size_t)K * T,
                  .V = ws,
                  .M = ws + ne * vstride,
                  .ep = ep,
                  .u = u,
                  .u_stride = kiln__winograd_u_stride(s)};
    const size_t x_img = (size_t)C * s->h_in * s->w_in, y_img = (size_t)K * h_out * w_out;
    /* A small layer (CIFAR-10 CNN's 16x16 ones: 9 MFLOP as a direct conv)
     * runs faster on one thread than it splits over two. */
    if (18.0 * C * K * h_out * w_out < WINOGRAD_MIN_PARALLEL_FLOPS) threads = 1;
    const size_t n_slivers = (size_t)(K + GEMM_MR - 1) / GEMM_MR;
    const size_t n_panels = (T + GEMM_NR - 1) / GEMM_NR;
    /* Few output slivers (ResNet50's 64-channel layers have 5): split the
     * GEMMs by (panel, sliver) instead, which balances the threads
     * (`kiln bench kernels --threads 2 --layer "3x3 64->64 @56"`: 0.77 ->
     * 0.58 ms; at 10 or more slivers, @28 and @14, the sliver split was as
     * fast or faster). */
    const int by_tiles = threads > 1 && n_slivers < 4 * (size_t)threads;
    /* Bands where the whole plane's V and M would not fit in L2 and the
     * plane makes at least WINO_MIN_BANDS of them, or on more than one
     * thread where it makes a band per thread; and where the workspace
     * holds one band per thread (kiln_conv2d_workspace_size() sizes it so
     * for the call's threads). */
    const int band_rows = wino_band_rows(TW), n_bands = (TH + band_rows - 1) / band_rows;
    const int parts = threads < n_bands ? threads : n_bands;
    size_t vs_band;
    const size_t slot = wino_band_slot_floats(&j, band_rows, &vs_band);
    /* Unbanded, two threads split the steps differently (input channels,
     * then output channels), so half of V crosses from one core to the
     * other, whose caches these VMs do not share; in bands each thread
     * transforms, multiplies and stores its own tiles. ResNet50's
     * @28 and @14 layers (2 bands of 4 and 3 tile rows) at 2 threads, in
     * one process alternating with the unbanded path (2 x 40 pairs):
     * layer2's 3x3 convs 0.82 / 0.85x, layer3's 0.92 / 0.95x, the model
     * 0.975 / 0.986x (2026-12-06). Each thread then reads all of U. */
    const size_t ws_floats = kiln__winograd_threads_workspace_floats(s, threads);
    const int bands =
        ((ws_floats * sizeof(float) > WINO_BANDS_MIN_BYTES && n_bands >= WINO_MIN_BANDS) ||
         (threads > 1 && n_bands >= threads)) &&
        (size_t)parts * slot <= ws_floats;
    for (int b = 0; b < s->n; b++) {
        j.xb = x + b * x_img;
        j.yb = y + b * y_img;
        j.rb = ep->residual ? ep->residual + b * y_img : NULL;
        if (bands) {
            wino_band_job bj = {
                .j = &j, .band_rows = band_rows, .slot_floats = slot, .vstride = vs_band, .ws = ws};
            jobq_init(&bj.next, n_bands);
            kiln__parallel_for(parts, (size_t)parts, wino_bands, &bj);
            continue;
        }
        kiln__parallel_for(threads, (size_t)C, m == 4 ? wino4_input : wino_input, &j);
        if (by_tiles) {
            kiln__parallel_for(threads, n_slivers * n_panels, wino_products_tiles, &j);
            kiln__parallel_for(threads, (size_t)K, wino_transform_out, &j);
        } else {
            kiln__parallel_for(threads, n_slivers, wino_products, &j);
        }
    }
}
