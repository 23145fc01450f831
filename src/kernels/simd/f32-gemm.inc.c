/*
 * kiln's SGEMM for the conv paths (kiln__gemm_fn in internal.h), included
 * by f32-kernels.inc.c and so compiled once per ISA.
 *
 * BLIS-style: A (the weights) is packed once, when the model is packed,
 * into slivers of GEMM_MR = 14 rows ([KC][14], so the microkernel reads it
 * with one pointer); B arrives packed in panels of GEMM_NR = GEMM_NV
 * vectors of columns. The 14 x GEMM_NR microkernel keeps its accumulators
 * in registers (AVX-512: 14 x 2 of the 32 zmm, a row of B in two more, one
 * broadcast; AVX2: 14 x 1 of the 16 ymm) over all of K, then adds bias and
 * residual and applies the activation as it stores, so C is written once
 * and never re-read for the epilogue.
 *
 * NCHW all the way: C is the output channels' planes, columns are output
 * positions, so a vector is 16 neighbouring pixels of one channel.
 *
 * A model's weights (ResNet50: about 100 MB packed) do not stay in any
 * cache between inferences, so A comes from memory once per layer: the
 * microkernel prefetches the next sliver of A while it computes, and a job
 * runs each sliver against a group of panels that stays in L2 (all of B
 * in the late layers), so A streams once at an even rate.
 *
 * Threads: the M x N work is cut into jobs (an MC row block times a run
 * of panels), taken in order by the threads of kiln's pool; OpenBLAS's
 * threads are not used here, so no two pools run at once.
 */

#ifndef GEMM_NV
#error "the vec-*.h header must define GEMM_NV"
#endif
#define GEMM_MR KILN_GEMM_MR
#define GEMM_NR (GEMM_NV * VW)

/*
 * Jobs [0, n) taken from both ends: the first caller of a parallel region
 * (begin == 0) takes them in order from the front, the others from the
 * back. Jobs are numbered in order of the output positions they write (or
 * of rows of positions), so on two threads each takes a contiguous run of
 * positions, the split falling wherever they meet: the layers agree
 * roughly on which thread holds which positions, and a thread mostly reads
 * what it wrote one layer before instead of a half its partner wrote (the
 * cores of these machines share no L2). Taking jobs one at a time still
 * balances threads of unequal speed (a core shared with other work). The
 * state is the next front job (high half) and the end of the jobs left
 * (low half).
 */
typedef atomic_ullong jobq;

static inline void jobq_init(jobq *q, int n)
{
    atomic_init(q, (unsigned long long)(unsigned)n);
}

/* The next job from the front (front != 0) or the back, or -1. */
static inline int jobq_take(jobq *q, int front)
{
    unsigned long long cur = atomic_load_explicit(q, memory_order_relaxed);
    for (;;) {
        const unsigned lo = (unsigned)(cur >> 32), hi = (unsigned)cur;
        if (lo >= hi) return -1;
        const unsigned long long next = front ? (unsigned long long)(lo + 1) << 32 | hi
                                              : (unsigned long long)lo << 32 | (hi - 1);
        if (atomic_compare_exchange_weak_explicit(q, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return front ? (int)lo : (int)(hi - 1);
    }
}

typedef struct gemm_job {
    int M, N, K;
    const float *Ap, *Bp;
    float *C;
    size_t ldc;
    const float *bias, *res;
    const kiln_epilogue *ep;
    int mc; /* rows of A per job, a multiple of GEMM_MR */
    int n_panels, chunk, n_chunks, n_jobs;
    jobq jobs; /* the jobs not yet taken */
    /* Floats from one row of a panel of B to the next: 0 means GEMM_NR
     * (B packed for this ISA); the turned-around GEMM's weight panels are
     * KILN_GEMM_T_NR wide whatever GEMM_NR is (f32-gemm-t.inc.c). */
    int b_step;
    /* Prefetch the next panel of B (the one K * GEMM_NR floats on), part
     * `part` of `parts` of it per call, instead of the next sliver of A:
     * for the turned-around GEMM, whose B is the weights. */
    int pf_b;
    /* Rows of k from one stored panel of B to the next: 0 means K. A GEMM
     * run over a share of K at a time (gemm_t_run()) keeps the whole
     * operands' strides here while K is the share's depth. */
    int k_stride;
    /* Add the products to what C holds instead of overwriting it (the
     * later shares of K; no epilogue then). */
    int accumulate;
    /* B is read unpacked, from activations that are not in any cache
     * (a 1x1 conv's NCHW input, b_step floats from one row to the next):
     * each tile also prefetches its share of the panels that come after
     * its group, into L2, and the next tile's rows of C and of the
     * residual (gemm_run_job()). The hardware prefetchers do not follow
     * B's K rows, each in its own page. */
    int pf_next;
    /* Split over the threads from SPLIT_SMALL_FLOPS instead of 10 MFLOP
     * (gemm_run()): a 1x1 conv's last, partial panel of positions. */
    int split_small;
    /* Runs one job; NULL: gemm_run_job() (whose dir it does not need). */
    void (*run_job)(const struct gemm_job *j, int job);
    /* The turned-around GEMM's C^T panel-major (gemm_t_run()): panel p's
     * M rows of GEMM_NR floats at C + p * M * GEMM_NR (ldc then unused). */
    int panel_major;
    /* Non-NULL: each job writes its rows of each panel to the output
     * through the epilogue as soon as it has computed them (the last share
     * of K; gemm_t_store_panel()). */
    const struct gemm_t_job *store;
    /* Non-zero: A is the input itself, a_ld floats from one k to the
     * next (the turned-around GEMM's 1x1 convs, gemm_d_ok()). */
    size_t a_ld;
} gemm_job;

/* Rows of an unpacked B prefetched ahead of k into L1 (pf_next). ResNet50
 * in one process against no prefetch, 2 x 40 alternating pairs: 1 thread
 * the model 0.991 / 0.996x, layer1's 1x1 convs 0.96x, layer2's 0.98 /
 * 0.99x; 2 threads the model 0.983 / 0.986x, layer1's and layer2's 1x1
 * 0.94-0.96x (2026-12-06). 4 and 16 rows ahead measured no better. */
#define GEMM_B_AHEAD 8

/* What a microkernel call prefetches besides A's next sliver. */
typedef struct gemm_pf {
    const float *b; /* rows of the next panel group's B, b_step apart */
    int b_rows;
    float *c; /* the next tile's rows of C and of the residual */
    const float *r;
    int c_rows;
    int ahead; /* rows of this tile's B ahead of k, into L1, or 0 */
} gemm_pf;

/* Rows of k per stored panel of B (k_stride, or K). */
static inline size_t gemm_panel_rows(const gemm_job *j)
{
    return (size_t)(j->k_stride ? j->k_stride : j->K);
}

/* Where panel p (GEMM_NR columns) of B starts. */
static inline const float *gemm_panel(const gemm_job *j, int p)
{
    const size_t K = gemm_panel_rows(j);
    if (!j->b_step || j->b_step == GEMM_NR) return j->Bp + (size_t)p * K * GEMM_NR;
    const int per = j->b_step / GEMM_NR; /* ISA panels per stored panel */
    return j->Bp + (size_t)(p / per) * K * j->b_step + (size_t)(p % per) * GEMM_NR;
}

/* The tile's accumulators before the first k: zero, or C's rows
 * [0, mr) when the job accumulates (rows past mr are not C's). */
static inline void gemm_acc_init(const gemm_job *j, vf *acc, int rows, size_t row0, size_t col0,
                                 int mr)
{
#pragma GCC unroll 16
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 4
        for (int q = 0; q < GEMM_NV; q++)
            acc[i * GEMM_NV + q] = j->accumulate && i < mr
                                       ? V_LOADU(j->C + (row0 + i) * j->ldc + col0 + q * VW)
                                       : V_ZERO();
}

/* The epilogue and store of one row of the tile: v[] are the row's
 * accumulators, c the row in C, r the row of the residual or NULL. */
static inline void gemm_store_row(vf *v, float *c, const float *r, float bias,
                                  const kiln_epilogue *ep)
{
#pragma GCC unroll 4
    for (int q = 0; q < GEMM_NV; q++) {
        vf x = v[q];
        if (ep) {
            x = V_ADD(x, V_SET1(bias));
            if (r) x = V_ADD(x, V_LOADU(r + q * VW));
            x = v_act(x, ep->act, V_SET1(ep->alpha), V_SET1(ep->lo), V_SET1(ep->hi));
        }
        V_STOREU(c + q * VW, x);
    }
}

/* A whole tile's epilogue and store with the activation a constant
 * (act, with `residual` whether r is used): straight-line code over the
 * accumulators, which then stay in registers. */
static inline __attribute__((always_inline)) void
gemm_store_tile(vf acc[GEMM_MR][GEMM_NV], float *c, const float *r, size_t ldc, const float *bias,
                int has_ep, kiln_act act, int residual)
{
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++) {
        const vf b = V_SET1(bias ? bias[i] : 0.0f);
#pragma GCC unroll 4
        for (int q = 0; q < GEMM_NV; q++) {
            vf x = acc[i][q];
            if (has_ep) {
                x = V_ADD(x, b);
                if (residual) x = V_ADD(x, V_LOADU(r + (size_t)i * ldc + q * VW));
                if (act == KILN_ACT_RELU) x = V_MAX(x, V_ZERO());
            }
            V_STOREU(c + (size_t)i * ldc + q * VW, x);
        }
    }
}

/* A's cache lines per prefetch: 64 bytes on every target this builds for. */
#define GEMM_LINE_FLOATS 16

/*
 * C[row0 .. row0 + mr)[col0 .. col0 + nc) = A's sliver at row0 x the
 * panel b over all of K, then the epilogue. The accumulators stay in
 * registers across K's depth blocks (only A's address jumps between them;
 * the panel is contiguous), so each tile of C is stored once.
 *
 * Meanwhile it prefetches part `part` of `parts` of the next sliver of A
 * (row0 + GEMM_MR), one cache line per step of k: a model's weights do not
 * fit in the caches and come from memory once per inference, and loading
 * the next sliver while this one computes hides that latency (perf: in
 * ResNet50, gemm_micro waited on A's broadcasts, not on its FMAs). Callers
 * that run each sliver against several panels in turn spread the prefetch
 * over those calls (parts > 1), so memory is read at an even rate.
 *
 * pn, if not NULL, names more to prefetch meanwhile, one row of each per
 * step of k: rows of B's panels that come later (into L2), the rows of C
 * and of the residual that the next tile stores and reads, and this
 * tile's B a few rows ahead (an unpacked B's rows are more than the 2 KB
 * apart that the L1 stride prefetcher follows).
 */
static inline __attribute__((always_inline)) void gemm_micro_rows(const gemm_job *j, const float *b,
                                                                  int row0, size_t col0, int mr,
                                                                  int nc, int part, int parts,
                                                                  const gemm_pf *pn, const int ROWS)
{
    vf acc[GEMM_MR][GEMM_NV];
    gemm_acc_init(j, &acc[0][0], ROWS, (size_t)row0, col0, mr);
    const size_t m_pad = kiln__gemm_m_pad(j->M);
    const int prefetch = (size_t)row0 + GEMM_MR < m_pad;
    const int b_step = j->b_step ? j->b_step : GEMM_NR;
    /* B's next panel: its K x GEMM_NR floats in `parts` shares of lines,
     * one line per step of k (so a share must be at most K lines). */
    int b_n = 0;
    const float *b_pf = NULL;
    if (j->pf_b) {
        const int b_lines = j->K * GEMM_NR / GEMM_LINE_FLOATS;
        const int b_l0 = b_lines * part / parts;
        b_n = b_lines * (part + 1) / parts - b_l0;
        b_pf = b + gemm_panel_rows(j) * GEMM_NR + (size_t)b_l0 * GEMM_LINE_FLOATS;
    }
    /* what pn names, read once: each test in the loop below is then a
     * compare of k with a bound */
    const float *pn_b = pn ? pn->b : NULL;
    const int pn_b_rows = pn_b ? pn->b_rows : 0;
    float *pn_c = pn ? pn->c : NULL;
    const float *pn_r = pn_c ? pn->r : NULL;
    const int pn_c_rows = pn_c ? pn->c_rows : 0;
    const int ahead = pn ? pn->ahead : 0;
    const int ahead_end = ahead ? j->K - ahead : 0;
    const size_t ahead_off = (size_t)ahead * b_step, ldc = j->ldc;
    for (int pc = 0; pc < j->K; pc += KILN_GEMM_KC) {
        const int kc = j->K - pc < KILN_GEMM_KC ? j->K - pc : KILN_GEMM_KC;
        const float *a = j->Ap + (size_t)pc * m_pad + (size_t)row0 * kc;
        /* The next sliver's kc x GEMM_MR floats follow this one's; one more
         * line for a sliver that does not start on a line. */
        const int lines = (GEMM_MR * kc + GEMM_LINE_FLOATS - 1) / GEMM_LINE_FLOATS + 1;
        const int l0 = lines * part / parts;
        int n_pf = prefetch ? lines * (part + 1) / parts - l0 : 0;
        const float *pf = a + (size_t)GEMM_MR * kc + (size_t)l0 * GEMM_LINE_FLOATS;
        if (j->pf_b) {
            n_pf = b_n - pc < 0 ? 0 : b_n - pc;
            pf = b_pf + (size_t)pc * GEMM_LINE_FLOATS;
        }
        for (int k = 0; k < kc; k++) {
            const int kk = pc + k;
            if (k < n_pf) __builtin_prefetch(pf + (size_t)k * GEMM_LINE_FLOATS, 0, 3);
            if (kk < pn_b_rows) {
                const float *row = pn_b + (size_t)kk * b_step;
                __builtin_prefetch(row, 0, 2);
                __builtin_prefetch(row + GEMM_NR - 1, 0, 2);
            }
            if (kk < pn_c_rows) {
                float *crow = pn_c + (size_t)kk * ldc;
                __builtin_prefetch(crow, 1, 3);
                __builtin_prefetch(crow + GEMM_NR - 1, 1, 3);
                if (pn_r) {
                    const float *rrow = pn_r + (size_t)kk * ldc;
                    __builtin_prefetch(rrow, 0, 3);
                    __builtin_prefetch(rrow + GEMM_NR - 1, 0, 3);
                }
            }
            if (kk < ahead_end) {
                __builtin_prefetch(b + ahead_off, 0, 3);
                __builtin_prefetch(b + ahead_off + GEMM_NR - 1, 0, 3);
            }
            vf bv[GEMM_NV];
#pragma GCC unroll 4
            for (int q = 0; q < GEMM_NV; q++) bv[q] = V_LOADU(b + q * VW);
#pragma GCC unroll 16
            for (int i = 0; i < ROWS; i++) {
                const vf ai = V_SET1(a[i]);
#pragma GCC unroll 4
                for (int q = 0; q < GEMM_NV; q++) acc[i][q] = V_FMA(ai, bv[q], acc[i][q]);
            }
            a += GEMM_MR;
            b += b_step;
        }
    }
    const kiln_epilogue *ep = j->ep;
    float *c = j->C + (size_t)row0 * j->ldc + col0;
    const float *r = j->res ? j->res + (size_t)row0 * j->ldc + col0 : NULL;
    /* A whole tile, no activation or ReLU (all of ResNet50's): the
     * epilogue written out for each case, so no activation switch runs
     * per vector. 1x1 convs alone 0.98-0.99x the time (2026-12-06, Zen 4,
     * 150 pairs); ResNet50's 1x1 convs 0.996-0.997x. */
    if (ROWS == GEMM_MR && mr == GEMM_MR && nc == GEMM_NR &&
        (!ep || ep->act == KILN_ACT_RELU || ep->act == KILN_ACT_NONE)) {
        const float *bias = j->bias ? j->bias + row0 : NULL;
        if (!ep)
            gemm_store_tile(acc, c, NULL, j->ldc, NULL, 0, KILN_ACT_NONE, 0);
        else if (ep->act == KILN_ACT_RELU && r)
            gemm_store_tile(acc, c, r, j->ldc, bias, 1, KILN_ACT_RELU, 1);
        else if (ep->act == KILN_ACT_RELU)
            gemm_store_tile(acc, c, NULL, j->ldc, bias, 1, KILN_ACT_RELU, 0);
        else if (r)
            gemm_store_tile(acc, c, r, j->ldc, bias, 1, KILN_ACT_NONE, 1);
        else
            gemm_store_tile(acc, c, NULL, j->ldc, bias, 1, KILN_ACT_NONE, 0);
        return;
    }
    if (mr == GEMM_MR && nc == GEMM_NR) {
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++)
            gemm_store_row(acc[i], c + (size_t)i * j->ldc, r ? r + (size_t)i * j->ldc : NULL,
                           j->bias ? j->bias[row0 + i] : 0.0f, ep);
        return;
    }
    /* An edge tile: only the rows and columns that are inside C; without
     * an epilogue (Winograd's products, the turned-around GEMM's C^T)
     * straight from the accumulators, a row's last vector in part. */
    if (!ep) {
        for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
            for (int q = 0; q < GEMM_NV; q++) {
                const int left = nc - q * VW;
                float *ci = c + (size_t)i * j->ldc + q * VW;
                if (left >= VW)
                    V_STOREU(ci, acc[i][q]);
                else if (left > 0)
                    v_store_part(ci, acc[i][q], left);
            }
        return;
    }
    if (nc == GEMM_NR) {
        /* Whole columns, fewer rows (a layer's last sliver: 64 channels
         * are 4 slivers of 14 and one of 8): the epilogue in registers. */
        for (int i = 0; i < mr; i++)
            gemm_store_row(acc[i], c + (size_t)i * j->ldc, r ? r + (size_t)i * j->ldc : NULL,
                           j->bias ? j->bias[row0 + i] : 0.0f, ep);
        return;
    }
    /* Part of the columns, with an epilogue: through a buffer. */
    float t[GEMM_NR];
    for (int i = 0; i < mr; i++) {
        for (int q = 0; q < GEMM_NV; q++) V_STOREU(t + q * VW, acc[i][q]);
        act_row((size_t)nc, t, j->bias ? j->bias[row0 + i] : 0.0f, NULL,
                r ? r + (size_t)i * j->ldc : NULL, ep, c + (size_t)i * j->ldc);
    }
}

/* The tile through a kernel of as many rows as it needs: a layer's last
 * sliver (64 channels: 4 of 14 and one of 8; 128: 9 and one of 2) no
 * longer computes 14 rows' FMAs for the few it stores. ResNet50 at 1
 * thread: layer1's 1x1 convs 0.97x, its 3x3 (Winograd, 64 channels) 0.96x,
 * layer2's 1x1 0.98x, the model 0.987x (2026-12-06, paired runs in one
 * process, 30 and 40 pairs); unchanged at 2 threads within the noise. */
static inline void gemm_micro_pfn(const gemm_job *j, const float *b, int row0, size_t col0, int mr,
                                  int nc, int part, int parts, const gemm_pf *pn)
{
    if (mr > 8)
        gemm_micro_rows(j, b, row0, col0, mr, nc, part, parts, pn, GEMM_MR);
    else if (mr > 4)
        gemm_micro_rows(j, b, row0, col0, mr, nc, part, parts, pn, 8);
    else
        gemm_micro_rows(j, b, row0, col0, mr, nc, part, parts, pn, 4);
}

static inline void gemm_micro_pf(const gemm_job *j, const float *b, int row0, size_t col0, int mr,
                                 int nc, int part, int parts)
{
    gemm_micro_pfn(j, b, row0, col0, mr, nc, part, parts, NULL);
}

/* The tile at (row0, col0) with the whole next sliver prefetched: for
 * callers that run the slivers of a panel in turn (Winograd's products). */
static void gemm_micro(const gemm_job *j, const float *b, int row0, size_t col0, int mr, int nc)
{
    gemm_micro_pf(j, b, row0, col0, mr, nc, 0, 1);
}

/* Panels of B per group in a job: about 256 KB of them (a quarter of a
 * 1 MB L2), at least one. */
static int gemm_panel_group(int K)
{
    int g = (int)(256 * 1024 / sizeof(float) / ((size_t)K * GEMM_NR));
    return g < 1 ? 1 : g;
}

/* Panels [*p0, *p1) of job `job` (jobs numbered panel chunk first). */
static void gemm_job_panels(const gemm_job *j, int job, int *p0, int *p1)
{
    const int jc = job / (j->n_jobs / j->n_chunks);
    *p0 = jc * j->chunk;
    *p1 = *p0 + j->chunk < j->n_panels ? *p0 + j->chunk : j->n_panels;
}

/* One job: rows [mb * mc, + mc) times panels [chunk * jc, + chunk), jobs
 * numbered panel chunk first (so in order of output positions). The
 * panels go in groups that stay in L2 (gemm_panel_group()); each sliver of
 * the job's rows runs against every panel of a group before the next
 * sliver starts. So when all of B fits one group (the small late layers
 * of a CNN, whose weights are the large operand), A is read from memory
 * once, one sliver at a time, at an even rate, prefetched a sliver ahead
 * spread over the group's panels; B and the job's rows of A stay in L2.
 * The thread running it takes jobs in direction dir (+1 from the front,
 * -1 from the back: jobq_take()), which pf_next reads. */
static void gemm_run_job(const gemm_job *j, int job, int dir)
{
    const int m_blocks = j->n_jobs / j->n_chunks;
    const int r0 = job % m_blocks * j->mc;
    const int rows = j->M - r0 < j->mc ? j->M - r0 : j->mc;
    const int group = gemm_panel_group(j->K), n_sl = (rows + GEMM_MR - 1) / GEMM_MR;
    int p0, p1;
    gemm_job_panels(j, job, &p0, &p1);
    /* pf_next: after the job's last group, the first group of the job
     * this thread likely takes next, unless that has the same panels */
    int q0 = 0, q1 = 0;
    if (j->pf_next && job + dir >= 0 && job + dir < j->n_jobs) {
        gemm_job_panels(j, job + dir, &q0, &q1);
        if (q0 == p0) q1 = q0;
        if (q1 > q0 + group) q1 = q0 + group;
    }
    for (int g0 = p0; g0 < p1; g0 += group) {
        const int g1 = g0 + group < p1 ? g0 + group : p1;
        /* the panels this thread runs after the group: [n0, n1) */
        int n0 = g1, n1 = g1 + group < p1 ? g1 + group : p1;
        if (g1 == p1) n0 = q0, n1 = q1;
        for (int s0 = 0; s0 < rows; s0 += GEMM_MR) {
            const int mr = rows - s0 < GEMM_MR ? rows - s0 : GEMM_MR, si = s0 / GEMM_MR;
            for (int p = g0; p < g1; p++) {
                const size_t col0 = (size_t)p * GEMM_NR;
                const int nc = j->N - (int)col0 < GEMM_NR ? j->N - (int)col0 : GEMM_NR;
                gemm_pf pn = {0};
                pn.ahead = j->pf_next ? GEMM_B_AHEAD : 0;
                if (j->pf_next && n0 + (p - g0) < n1) {
                    /* each sliver a share of the rows of the next panels */
                    const int k0 = j->K * si / n_sl, k1 = j->K * (si + 1) / n_sl;
                    pn.b = gemm_panel(j, n0 + (p - g0)) + (size_t)k0 * j->b_step;
                    pn.b_rows = k1 - k0;
                }
                if (j->pf_next && p + 1 < g1) {
                    const size_t at = (size_t)(r0 + s0) * j->ldc + col0 + GEMM_NR;
                    pn.c = j->C + at;
                    pn.r = j->res ? j->res + at : NULL;
                    pn.c_rows = mr;
                } else if (j->pf_next && s0 + GEMM_MR < rows) {
                    /* the group's last panel: the next sliver's first tile
                     * (1x1 64->256 @56 0.99x the time, 2026-12-06) */
                    const size_t at = (size_t)(r0 + s0 + GEMM_MR) * j->ldc + (size_t)g0 * GEMM_NR;
                    pn.c = j->C + at;
                    pn.r = j->res ? j->res + at : NULL;
                    pn.c_rows = rows - s0 - GEMM_MR < GEMM_MR ? rows - s0 - GEMM_MR : GEMM_MR;
                }
                gemm_micro_pfn(j, gemm_panel(j, p), r0 + s0, col0, mr, nc, p - g0, g1 - g0, &pn);
            }
        }
    }
}

/* Each thread takes the next job until none are left (jobq_take()): jobs
 * differ in size (edge tiles, row blocks) and threads in speed (a core
 * shared with other work), so a fixed split left one thread waiting for
 * the other. */
static void gemm_parts(void *ctx, size_t begin, size_t end)
{
    gemm_job *j = ctx;
    (void)end;
    for (;;) {
        const int job = jobq_take(&j->jobs, begin == 0);
        if (job < 0) return;
        if (j->run_job)
            j->run_job(j, job);
        else
            gemm_run_job(j, job, begin == 0 ? 1 : -1);
    }
}

static void gemm_run(gemm_job *jp, int threads);

/* A split_small job's FLOPs from which it runs on all the threads. ResNet50's
 * 28x28 1x1 convs' last panels (16 of 784 positions, 1-2 MFLOP) had one
 * thread idle while the other ran them: 0.6 ms of a 56 ms run at 2 threads
 * in one slow minute, 9 calls. */
#define SPLIT_SMALL_FLOPS 5e5

static void gemm(int M, int N, int K, const float *Ap, const float *Bp, float *C, size_t ldc,
                 const float *bias, const float *res, const kiln_epilogue *ep, int threads)
{
    gemm_job j = {.M = M,
                  .N = N,
                  .K = K,
                  .Ap = Ap,
                  .Bp = Bp,
                  .C = C,
                  .ldc = ldc,
                  .bias = bias,
                  .res = res,
                  .ep = ep};
    gemm_run(&j, threads);
}

/* Cuts the job's M x N into jobs and runs them: j's operands, C, epilogue
 * and b_step are set, the rest is filled in here. */
static void gemm_run(gemm_job *jp, int threads)
{
    gemm_job j = *jp;
    const int M = j.M, N = j.N, K = j.K;
    if (M <= 0 || N <= 0) return;
    /* A job's rows of A: about 384 KB of them (half of a 1 MB L2), at
     * least one sliver, at most KILN_GEMM_MC rows. */
    int mc = (int)(384 * 1024 / sizeof(float) / (size_t)K) / GEMM_MR * GEMM_MR;
    j.mc = mc < GEMM_MR ? GEMM_MR : mc > KILN_GEMM_MC ? KILN_GEMM_MC : mc;
    j.n_panels = (N + GEMM_NR - 1) / GEMM_NR;
    /* One thread: each row block sweeps every panel. More: about sixteen
     * jobs per thread, for balance (eight left the faster thread waiting
     * longer for the other's last job: ResNet50 at 2 threads, paired in one
     * process, 2 x 40 pairs: layer2's 1x1 convs 0.965 / 0.970x the time,
     * the model 0.994 / 0.992x; 2026-12-06), cut from the rows first, so that each
     * thread reads its own rows of A (in the late layers the large operand,
     * from memory) rather than two threads streaming the same rows against
     * different panels. When all of B fits one panel group (L2), the row
     * blocks shrink to make the jobs; otherwise the panels are cut as far
     * as the row blocks fall short. */
    int n_chunks = 1;
    if (threads > 1) {
        const int target = 16 * threads;
        if (j.n_panels <= gemm_panel_group(K)) {
            int mc_split = ((M + target - 1) / target + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
            if (mc_split < j.mc) j.mc = mc_split;
        }
        n_chunks = target / ((M + j.mc - 1) / j.mc);
        if (n_chunks < 1) n_chunks = 1;
        if (n_chunks > j.n_panels) n_chunks = j.n_panels;
    }
    const int m_blocks = (M + j.mc - 1) / j.mc;
    j.chunk = (j.n_panels + n_chunks - 1) / n_chunks;
    j.n_chunks = (j.n_panels + j.chunk - 1) / j.chunk;
    j.n_jobs = m_blocks * j.n_chunks;
    const double flops = 2.0 * M * N * K;
    /* Below 10 MFLOP (the CIFAR-10 CNN's 8x8 layer: 9.4) one thread beats
     * two: the split costs more than it saves. Not so for a 1x1 conv's
     * last panel, which runs right after the conv's other panels on all
     * the threads: split_small. */
    int parts = threads < 1 || flops < (j.split_small ? SPLIT_SMALL_FLOPS : 1e7) ? 1 : threads;
    if (parts > j.n_jobs) parts = j.n_jobs;
    jobq_init(&j.jobs, j.n_jobs);
    kiln__parallel_for(parts, (size_t)parts, gemm_parts, &j);
}
