/*
 * Stride-2 convs on the turned-around GEMM without X^T (gemm_i_ok(),
 * gemm_i_image()), included by f32-gemm-t.inc.c where conv2d_gemm_t()
 * needs them: after the GEMM's jobs (mirrored_rc(), gemm_t_store_range())
 * and so compiled once per ISA.
 */

/*
 * Stride-2 convs without X^T: the microkernel broadcasts each position's
 * input straight from the zero-padded input planes (an FMA's memory
 * operand), as ONNX Runtime's NCHWc kernels do, instead of first copying
 * them into packed X^T (9 floats per input float of a 3x3/2 conv; 3.6 MB
 * for ResNet50's l2 3x3/2, which takes the turned-around Winograd; 1.8 MB
 * for its l3 3x3/2). A tile's 14 rows are 14 output columns of one output
 * row, so row i reads the padded plane at 2 i floats from the tap's
 * origin: constant offsets from one pointer. Each tap k (input channel,
 * kernel row, kernel column) is one pointer offset from a table. W^T is
 * the turned-around GEMM's (the same packing), and the sum over k runs in
 * the same order, so the floats are packed X^T's. ResNet50's l3 3x3/2 in
 * the model, 2 x 60 alternating pairs in one process (2026-12-06): 0.94x
 * the time at 1 thread, 0.97x at 2.
 */

typedef struct gemm_i_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, PW, plane; /* padded row length and plane size */
    int K, N, c_out;
    const float *x;  /* one image */
    float *xp;       /* its padded planes */
    const int *tap;  /* K offsets into xp */
    const float *Bt; /* W^T, panels of KILN_GEMM_T_NR */
    float *Ct;       /* [N][c_out] */
    int n_tiles, n_panels;
    int tb, chunk, n_chunks, mirror; /* jobs: tile blocks x panel chunks (gemm_i_parts()) */
    jobq jobs;
} gemm_i_job;

/* Whether a conv the turned-around GEMM takes runs without X^T: stride 2
 * with more than one tap, output rows of at least 14 columns. (At 7x7,
 * tiles of two rows of 7, ResNet50's l4 3x3/2 ran 1.08-1.2x the time of
 * packed X^T: each tap's 14 floats then span 4 cache lines.) */
static int gemm_i_ok(const kiln_conv2d_shape *s, int h_out, int w_out)
{
    const size_t L = (size_t)s->w_in + s->pad_l + s->pad_r,
                 R = (size_t)s->h_in + s->pad_t + s->pad_b;
    const size_t K = (size_t)s->c_in * s->k_h * s->k_w;
    /* the padded planes, 3 rows of slack and the tap table fit where
     * packed X^T would go */
    return s->stride_h == 2 && s->stride_w == 2 && s->dil_h == 1 && s->dil_w == 1 &&
           s->k_h * s->k_w > 1 && w_out >= GEMM_MR &&
           L * R * s->c_in + 3 * L + K <= kiln__gemm_m_pad(h_out * w_out) * K;
}

/* The offset of each tap k (input channel, kernel row, kernel column) from
 * a position's origin in padded planes of PH rows of PW floats. */
static void stride2_taps(const kiln_conv2d_shape *s, int PW, int PH, int *tap)
{
    const int K = s->c_in * s->k_h * s->k_w;
    for (int k = 0; k < K; k++) {
        const int ic = k / (s->k_h * s->k_w), kh = k / s->k_w % s->k_h, kw = k % s->k_w;
        tap[k] = (ic * PH + kh) * PW + kw;
    }
}

/* Pads the input planes [begin, end) into xp (then each tap reads inside it
 * or its slack). */
static void gemm_i_pad_range(void *ctx, size_t begin, size_t end)
{
    const gemm_i_job *j = ctx;
    for (size_t ic = begin; ic < end; ic++)
        pad_plane(j->s, j->x + ic * j->s->h_in * j->s->w_in, j->xp + ic * (size_t)j->plane);
}

/* A tile's mr rows of C (ldc apart) x GEMM_NR columns: row i the
 * position whose taps start at a + 2 i, each tap k at tap[k] further, b
 * the panel (b_step floats a k); meanwhile n_pf lines from pf are
 * prefetched, one per step of k. */
static inline void gemm_i_micro(const int *tap, int K, const float *a, const float *b, int b_step,
                                float *c, size_t ldc, int mr, const float *pf, int n_pf)
{
    vf acc[GEMM_MR][GEMM_NV];
#pragma GCC unroll 14
    for (int i = 0; i < GEMM_MR; i++)
#pragma GCC unroll 4
        for (int q = 0; q < GEMM_NV; q++) acc[i][q] = V_ZERO();
    for (int k = 0; k < K; k++) {
        const float *p = a + tap[k];
        if (k < n_pf) __builtin_prefetch(pf + (size_t)k * GEMM_LINE_FLOATS, 0, 3);
        vf bv[GEMM_NV];
#pragma GCC unroll 4
        for (int q = 0; q < GEMM_NV; q++) bv[q] = V_LOADU(b + q * VW);
#pragma GCC unroll 14
        for (int i = 0; i < GEMM_MR; i++) {
            const vf ai = V_SET1(p[2 * i]);
#pragma GCC unroll 4
            for (int q = 0; q < GEMM_NV; q++) acc[i][q] = V_FMA(ai, bv[q], acc[i][q]);
        }
        b += b_step;
    }
#pragma GCC unroll 14
    for (int i = 0; i < GEMM_MR; i++)
        if (i < mr)
#pragma GCC unroll 4
            for (int q = 0; q < GEMM_NV; q++) V_STOREU(c + (size_t)i * ldc + q * VW, acc[i][q]);
}

/* Tile t against ISA panel p; with `next`, part `part` of `parts` of the
 * next stored panel is prefetched meanwhile, a line per step of k. */
static void gemm_i_tile(const gemm_i_job *j, int t, int p, int next, int part, int parts)
{
    const int per = KILN_GEMM_T_NR / GEMM_NR; /* ISA panels per stored panel */
    const size_t panel = (size_t)j->K * KILN_GEMM_T_NR;
    const float *b = j->Bt + (size_t)(p / per) * panel + (size_t)(p % per) * GEMM_NR;
    const size_t col0 = (size_t)p * GEMM_NR;
    /* the next stored panel, only from the last ISA panel of this one */
    const int lines = (int)(panel / GEMM_LINE_FLOATS);
    const int l0 = lines * part / parts;
    int n_pf = next && p % per == per - 1 ? lines * (part + 1) / parts - l0 : 0;
    if (n_pf > j->K) n_pf = j->K;
    const float *pf = j->Bt + (size_t)(p / per + 1) * panel + (size_t)l0 * GEMM_LINE_FLOATS;
    const kiln_conv2d_shape *s = j->s;
    const int per_row = (j->w_out + GEMM_MR - 1) / GEMM_MR;
    const int oh = t / per_row, ow = t % per_row * GEMM_MR;
    const int mr = j->w_out - ow < GEMM_MR ? j->w_out - ow : GEMM_MR;
    const float *a = j->xp + (size_t)(oh * s->stride_h) * j->PW + (size_t)ow * s->stride_w;
    gemm_i_micro(j->tap, j->K, a, b, KILN_GEMM_T_NR,
                 j->Ct + ((size_t)oh * j->w_out + ow) * j->c_out + col0, (size_t)j->c_out, mr, pf,
                 n_pf);
}

/* Takes jobs until none are left: job (tile block, panel chunk) runs each
 * panel of its chunk against every tile of its block while the panel is
 * in L2, prefetching the next panel meanwhile (gemm_t_run_job()'s
 * scheme). */
static void gemm_i_parts(void *ctx, size_t begin, size_t end)
{
    gemm_i_job *j = ctx;
    (void)end;
    for (;;) {
        const int job = jobq_take(&j->jobs, begin == 0);
        if (job < 0) return;
        int mb, jc;
        mirrored_rc(job, j->n_chunks, j->mirror, &mb, &jc);
        const int p0 = jc * j->chunk,
                  p1 = p0 + j->chunk < j->n_panels ? p0 + j->chunk : j->n_panels;
        const int t0 = mb * j->tb, t1 = t0 + j->tb < j->n_tiles ? t0 + j->tb : j->n_tiles;
        for (int p = p0; p < p1; p++)
            for (int t = t0; t < t1; t++)
                gemm_i_tile(j, t, p, p + 1 < j->n_panels, t - t0, t1 - t0);
    }
}

/* C^T of one image: pad, then the tiles; the store pass is gemm_t's. On
 * two threads with enough tiles each thread takes its own half of them
 * (the rows of its part of the input then stay in its L2) against the
 * panels in chunks, the second half's numbered from the back (the
 * vCPUs run at unequal speeds, and whichever finishes its half first
 * takes the other's last chunks); otherwise the panels are cut. Cutting
 * the panels at 2 threads too (as gemm_t_run() does) measured the same
 * for ResNet50's l3 3x3/2 (1.00x, Zen 4, 2026-12-06). */
static void gemm_i_run(gemm_i_job *j, int threads)
{
    const kiln_conv2d_shape *s = j->s;
    kiln__parallel_for((size_t)j->plane * s->c_in < (1u << 16) ? 1 : threads, (size_t)s->c_in,
                       gemm_i_pad_range, j);
    const double flops = 2.0 * j->K * j->N * j->c_out;
    const int parts = threads < 1 || flops < 4e6 ? 1 : threads;
    int m_blocks = 1;
    j->n_chunks = 1;
    j->mirror = 0;
    if (parts == 2 && j->n_tiles >= 4) {
        m_blocks = 2;
        j->n_chunks = GEMM_T_MIRROR_CHUNKS < j->n_panels ? GEMM_T_MIRROR_CHUNKS : j->n_panels;
        j->mirror = 1;
    } else if (parts > 1) {
        j->n_chunks = 4 * parts < j->n_panels ? 4 * parts : j->n_panels;
    }
    j->tb = (j->n_tiles + m_blocks - 1) / m_blocks;
    j->chunk = (j->n_panels + j->n_chunks - 1) / j->n_chunks;
    j->n_chunks = (j->n_panels + j->chunk - 1) / j->chunk;
    jobq_init(&j->jobs, m_blocks * j->n_chunks);
    kiln__parallel_for(parts, (size_t)parts, gemm_i_parts, j);
}

/* C^T = X^T W^T of image x without X^T (gemm_i_ok()): the padded planes,
 * their slack and the tap table in ws, where packed X^T would go. */
static void gemm_i_image(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                         const float *Bt, float *ws, float *Ct, int threads)
{
    const int L = s->w_in + s->pad_l + s->pad_r, R = s->h_in + s->pad_t + s->pad_b;
    const int K = s->c_in * s->k_h * s->k_w;
    gemm_i_job j = {.s = s,
                    .h_out = h_out,
                    .w_out = w_out,
                    .PW = L,
                    .plane = L * R,
                    .K = K,
                    .N = h_out * w_out,
                    .c_out = s->c_out,
                    .x = x,
                    .xp = ws,
                    .Bt = Bt,
                    .Ct = Ct,
                    .n_tiles = h_out * ((w_out + GEMM_MR - 1) / GEMM_MR),
                    .n_panels = (s->c_out + GEMM_NR - 1) / GEMM_NR};
    /* a row's last, partial tile reads up to 2 rows past the last plane */
    float *slack = ws + (size_t)j.plane * s->c_in;
    memset(slack, 0, sizeof(float) * 3 * (size_t)L);
    int *tap = (int *)(slack + 3 * (size_t)L);
    stride2_taps(s, L, R, tap);
    j.tap = tap;
    gemm_i_run(&j, threads);
}
