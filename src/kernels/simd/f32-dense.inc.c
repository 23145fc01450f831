/*
 * Dense layers (kiln__kernels.dense): GEMV at batch 1, a multi-row GEMV
 * whose rows are bit-identical to batch 1 up to batch
 * KILN_DENSE_EXACT_MAX_BATCH, OpenBLAS SGEMM above; included by
 * f32-kernels.inc.c after act_row() and the GEMM, and so compiled once per
 * ISA.
 */

/* One row's dot product from its vector accumulator over x's first i
 * elements: v_hsum, then the scalar tail in order with fmaf() (not
 * `s += w * x`, which the compiler may or may not contract depending on
 * the loop around it). gemv() and gemv_rows() both end every row here, so a
 * batched row's sum is formed exactly as batch 1 forms it. */
static inline float gemv_finish(vf acc, const float *wr, const float *x, int i, int in)
{
    float sum = v_hsum(acc);
    for (; i < in; i++) sum = fmaf(wr[i], x[i], sum);
    return sum;
}

/* y[o] = dot(w[o], x) for o < out, four rows at a time. */
static void gemv(int out, int in, const float *w, const float *x, float *y)
{
    int o = 0;
    for (; o + 4 <= out; o += 4) {
        const float *w0 = w + (size_t)o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        vf a0 = V_ZERO(), a1 = V_ZERO(), a2 = V_ZERO(), a3 = V_ZERO();
        int i = 0;
        for (; i + VW <= in; i += VW) {
            vf xv = V_LOADU(x + i);
            a0 = V_FMA(V_LOADU(w0 + i), xv, a0);
            a1 = V_FMA(V_LOADU(w1 + i), xv, a1);
            a2 = V_FMA(V_LOADU(w2 + i), xv, a2);
            a3 = V_FMA(V_LOADU(w3 + i), xv, a3);
        }
        y[o] = gemv_finish(a0, w0, x, i, in);
        y[o + 1] = gemv_finish(a1, w1, x, i, in);
        y[o + 2] = gemv_finish(a2, w2, x, i, in);
        y[o + 3] = gemv_finish(a3, w3, x, i, in);
    }
    for (; o < out; o++) {
        const float *wr = w + (size_t)o * in;
        vf a = V_ZERO();
        int i = 0;
        for (; i + VW <= in; i += VW) a = V_FMA(V_LOADU(wr + i), V_LOADU(x + i), a);
        y[o] = gemv_finish(a, wr, x, i, in);
    }
}

/* Up to GEMV_ROWS batch rows at once: y[b][o] = dot(w[o], x[b]) for
 * o < out (at most GEMV_OUT_MAX). Each weight vector is loaded once and
 * FMA'd into every row's accumulator; a row's sum is formed exactly as the
 * batch-1 gemv() forms it (one vector accumulator over the VW-wide chunks
 * in order, v_hsum, then the scalar tail in order), so each row's result
 * is bit-identical to running it alone. The chunks go in spans of
 * GEMV_SPAN floats, the accumulators kept on the stack between spans, so
 * that the batch rows' span stays in L1 while every weight row passes
 * over it (read from L2 for every pair of weight rows, they took most of
 * the time). */
#define GEMV_ROWS    4
#define GEMV_OUT_MAX 32
#define GEMV_SPAN    512
static void gemv_rows(int rows, int out, int in, const float *w, const float *x, size_t x_stride,
                      float *y, size_t y_stride)
{
    /* Fewer than four rows repeat the last one (its sums are not stored):
     * one code path, its accumulators in registers. */
    const float *xr[GEMV_ROWS];
    for (int k = 0; k < GEMV_ROWS; k++) xr[k] = x + (size_t)(k < rows ? k : rows - 1) * x_stride;
    const float *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3];
    vf acc[GEMV_OUT_MAX][GEMV_ROWS];
    for (int o = 0; o < out; o++)
        for (int k = 0; k < GEMV_ROWS; k++) acc[o][k] = V_ZERO();
    const int whole = in / VW * VW;
    for (int i0 = 0; i0 < whole; i0 += GEMV_SPAN) {
        const int i1 = whole - i0 < GEMV_SPAN ? whole : i0 + GEMV_SPAN;
        int o = 0;
        /* With 32 vector registers, four weight rows x four batch rows:
         * sixteen accumulators (sixteen FMA chains in flight), eight loads
         * per sixteen FMAs. */
        if (VW >= 16)
            for (; o + 4 <= out; o += 4) {
                const float *wr[4];
                vf a[4][GEMV_ROWS];
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                    wr[r] = w + (size_t)(o + r) * in;
#pragma GCC unroll 4
                    for (int k = 0; k < GEMV_ROWS; k++) a[r][k] = acc[o + r][k];
                }
                for (int i = i0; i < i1; i += VW) {
                    vf wv[4];
#pragma GCC unroll 4
                    for (int r = 0; r < 4; r++) wv[r] = V_LOADU(wr[r] + i);
#pragma GCC unroll 4
                    for (int k = 0; k < GEMV_ROWS; k++) {
                        const vf xv = V_LOADU(xr[k] + i);
#pragma GCC unroll 4
                        for (int r = 0; r < 4; r++) a[r][k] = V_FMA(wv[r], xv, a[r][k]);
                    }
                }
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
                    for (int k = 0; k < GEMV_ROWS; k++) acc[o + r][k] = a[r][k];
            }
        /* Two weight rows x four batch rows: eight accumulators, six loads
         * per eight FMAs. */
        for (; o + 2 <= out; o += 2) {
            const float *wa = w + (size_t)o * in, *wb = wa + in;
            vf a0 = acc[o][0], a1 = acc[o][1], a2 = acc[o][2], a3 = acc[o][3];
            vf b0 = acc[o + 1][0], b1 = acc[o + 1][1], b2 = acc[o + 1][2], b3 = acc[o + 1][3];
            for (int i = i0; i < i1; i += VW) {
                vf va = V_LOADU(wa + i), vb = V_LOADU(wb + i), xv = V_LOADU(x0 + i);
                a0 = V_FMA(va, xv, a0);
                b0 = V_FMA(vb, xv, b0);
                xv = V_LOADU(x1 + i);
                a1 = V_FMA(va, xv, a1);
                b1 = V_FMA(vb, xv, b1);
                xv = V_LOADU(x2 + i);
                a2 = V_FMA(va, xv, a2);
                b2 = V_FMA(vb, xv, b2);
                xv = V_LOADU(x3 + i);
                a3 = V_FMA(va, xv, a3);
                b3 = V_FMA(vb, xv, b3);
            }
            acc[o][0] = a0, acc[o][1] = a1, acc[o][2] = a2, acc[o][3] = a3;
            acc[o + 1][0] = b0, acc[o + 1][1] = b1, acc[o + 1][2] = b2, acc[o + 1][3] = b3;
        }
        for (; o < out; o++) {
            const float *wr = w + (size_t)o * in;
            vf a0 = acc[o][0], a1 = acc[o][1], a2 = acc[o][2], a3 = acc[o][3];
            for (int i = i0; i < i1; i += VW) {
                vf wv = V_LOADU(wr + i);
                a0 = V_FMA(wv, V_LOADU(x0 + i), a0);
                a1 = V_FMA(wv, V_LOADU(x1 + i), a1);
                a2 = V_FMA(wv, V_LOADU(x2 + i), a2);
                a3 = V_FMA(wv, V_LOADU(x3 + i), a3);
            }
            acc[o][0] = a0, acc[o][1] = a1, acc[o][2] = a2, acc[o][3] = a3;
        }
    }
    for (int o = 0; o < out; o++)
        for (int k = 0; k < rows; k++)
            y[(size_t)k * y_stride + o] =
                gemv_finish(acc[o][k], w + (size_t)o * in, xr[k], whole, in);
}

typedef struct gemv_rows_job {
    int batch, in, out;
    const float *w, *x;
    float *y;
} gemv_rows_job;

/* Weight rows per block of gemv_rows_range(): every group of GEMV_ROWS
 * batch rows runs against a block while it is in L1/L2 (16 rows of 3136
 * floats: 200 KB), instead of each group streaming the whole matrix (the
 * MNIST model's fc1, 1.6 MB, from L3 twice at batch 8). */
#define GEMV_BLOCK_FLOATS (16 * 3136)

/* Output columns [4 * begin, 4 * end) (the last block takes the remainder)
 * for every batch row, GEMV_ROWS rows per pass over a block of weights. */
static void gemv_rows_range(void *ctx, size_t begin, size_t end)
{
    const gemv_rows_job *j = ctx;
    int o0 = (int)(4 * begin), o1 = (int)(4 * end);
    if (o1 > j->out || j->out - o1 < 4) o1 = j->out;
    int ob = GEMV_BLOCK_FLOATS / j->in / 2 * 2;
    if (ob < 2) ob = 2;
    if (ob > GEMV_OUT_MAX) ob = GEMV_OUT_MAX;
    for (int o = o0; o < o1; o += ob) {
        const int n = o1 - o < ob ? o1 - o : ob;
        for (int b = 0; b < j->batch; b += GEMV_ROWS) {
            int rows = j->batch - b < GEMV_ROWS ? j->batch - b : GEMV_ROWS;
            gemv_rows(rows, n, j->in, j->w + (size_t)o * j->in, j->x + (size_t)b * j->in,
                      (size_t)j->in, j->y + (size_t)b * j->out + o, (size_t)j->out);
        }
    }
}

typedef struct gemv_job {
    int in;
    const float *w, *x;
    float *y;
} gemv_job;

/* Rows [4 * begin, 4 * end) of the GEMV (blocks of four rows). */
static void gemv_range(void *ctx, size_t begin, size_t end)
{
    const gemv_job *j = ctx;
    gemv((int)(4 * (end - begin)), j->in, j->w + 4 * begin * j->in, j->x, j->y + 4 * begin);
}

/* Weights from which a GEMV splits its rows over the threads. Each thread
 * takes the same rows at every run, so its share of the weights can stay
 * in its own L2 between runs where all of them do not fit one: the
 * CIFAR-10 CNN's fc1 (0.5M weights, 2 MB) took 0.062-0.068 ms on one
 * thread and 0.016 on two (Intel Xeon, 2 MB L2 a core, 3 alternating
 * rounds of kiln bench model --threads 2 --layers; the model 0.23-0.25 ->
 * 0.17-0.21 ms). Under 1 MB one thread's L2 holds them already. */
#define DENSE_MIN_PARALLEL ((size_t)1 << 18)

/* Batch 1: the SIMD GEMV above, its row blocks split over kiln's pool
 * (memory-bound: more threads help only as far as bandwidth does).
 * Larger batches: one SGEMM on `threads` OpenBLAS threads. Then the
 * epilogue. */
static kiln_status dense(const kiln_dense_shape *s, const float *x, const float *packed,
                         const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    (void)workspace;
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    if (s->batch == 1) {
        size_t blocks = (size_t)s->out / 4, work = (size_t)s->out * s->in;
        gemv_job j = {s->in, packed, x, y};
        /* Memory-bound: two threads pay from DENSE_MIN_PARALLEL weights. */
        kiln__parallel_for(work < DENSE_MIN_PARALLEL ? 1 : threads, blocks, gemv_range, &j);
        gemv(s->out - (int)(4 * blocks), s->in, packed + 4 * blocks * s->in, x, y + 4 * blocks);
    } else if (s->batch <= KILN_DENSE_EXACT_MAX_BATCH) {
        /* Small batches: every row bit-identical to batch 1 (a batched
         * predict must answer what a single one does), and the weights are
         * read once per GEMV_ROWS rows. */
        size_t blocks = (size_t)s->out / 4, work = (size_t)s->out * s->in;
        gemv_rows_job j = {s->batch, s->in, s->out, packed, x, y};
        if (blocks == 0) {
            gemv_rows_range(&j, 0, 1);
        } else {
            kiln__parallel_for(work < DENSE_MIN_PARALLEL ? 1 : threads, blocks, gemv_rows_range,
                               &j);
        }
    } else {
        kiln_blas_set_threads(threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->batch, s->out, s->in, 1.0f, x,
                    s->in, packed, s->in, 0.0f, y, s->out);
    }
    if (!ep->bias && !ep->residual && ep->act == KILN_ACT_NONE) return KILN_OK;
    for (int b = 0; b < s->batch; b++) {
        size_t off = (size_t)b * s->out;
        act_row((size_t)s->out, y + off, 0.0f, ep->bias, ep->residual ? ep->residual + off : NULL,
                ep, y + off);
    }
    return KILN_OK;
}
