/*
 * Pooling (kiln__kernels.global_avgpool, global_maxpool, maxpool2d,
 * avgpool2d, and the 2x2/2 max pool the conv paths fuse into their stores:
 * pool2_shape(), pool2x2_planes()), included by f32-kernels.inc.c and so
 * compiled once per ISA.
 */

static void global_avgpool(int n, int c, size_t hw, const float *x, float *y)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        const float *xp = x + p * hw;
        vf acc = V_ZERO();
        size_t i = 0;
        for (; i + VW <= hw; i += VW) acc = V_ADD(acc, V_LOADU(xp + i));
        float sum = v_hsum(acc);
        for (; i < hw; i++) sum += xp[i];
        y[p] = sum / (float)hw;
    }
}

static void global_maxpool(int n, int c, size_t hw, const float *x, float *y)
{
    for (size_t p = 0; p < (size_t)n * c; p++) {
        const float *xp = x + p * hw;
        float m = -INFINITY;
        size_t i = 0;
        if (hw >= VW) {
            vf vm = V_LOADU(xp);
            for (i = VW; i + VW <= hw; i += VW) vm = V_MAX(vm, V_LOADU(xp + i));
            m = v_hmax(vm);
        }
        for (; i < hw; i++) m = xp[i] > m ? xp[i] : m;
        y[p] = m;
    }
}

/* What every output row of a separable pooling shares (pool_geom_of()). */
typedef struct pool_geom {
    int h_out, w_out;
    int ow_lo, ow_hi; /* output columns whose whole window lies inside [0, w_in) */
    int tail_vec;     /* a max pool's last vector of inner windows goes in part */
} pool_geom;

/* Widest input row the separable pooling path buffers on the stack;
 * wider rows take the ref kernel. */
#define POOL_ROW_MAX 4096

/* A max pool's last vector of inner windows goes in part (masked), where
 * its lanes past the inner windows read up to 2 VW floats past the row:
 * defined (zeroed in the row buffer once, pool_row_init()), and never
 * stored. The scalar loop took the rest of a row: ResNet50's 3x3/2 pool
 * after the stem, 7 of 56; that pool ran 0.452 -> 0.295 ms (1 thread, 400
 * paired calls, the same floats). Average pools keep the scalar tail: its
 * division is not the vector loop's multiply by the reciprocal. */
static int pool_geom_of(const kiln_pool2d_shape *s, int is_max, pool_geom *g)
{
    if (kiln_pool2d_out_hw(s, &g->h_out, &g->w_out) != KILN_OK) return 0;
    const int W = s->w_in, sw = s->stride_w;
    g->tail_vec = is_max && W + 2 * VW <= POOL_ROW_MAX;
    g->ow_lo = (s->pad_l + sw - 1) / sw;
    const int span = W - 1 + s->pad_l - (s->k_w - 1) * s->dil_w;
    g->ow_hi = span < 0 ? 0 : span / sw + 1;
    if (g->ow_hi > g->w_out) g->ow_hi = g->w_out;
    if (g->ow_lo > g->ow_hi) g->ow_lo = g->ow_hi;
    return 1;
}

/* The slack past a row buffer's w_in floats that tail_vec reads. */
static inline void pool_row_init(const kiln_pool2d_shape *s, const pool_geom *g, float *row)
{
    if (g->tail_vec)
        for (int i = s->w_in; i < s->w_in + 2 * VW; i++) row[i] = 0.0f;
}

/* One output row yr from the `rows` input rows of its window that lie
 * inside, x0 and every ld floats on (rows_pad: those inside the padded
 * input), through the row buffer row (w_in floats and the 2 VW of slack
 * that pool_row_init() set up): the window's rows
 * reduced into one row (contiguous, full vectors), then each window's
 * columns of that row (vectors for strides 1 and 2). The window is a
 * rectangle, so the average's divisor is rows x columns counted. */
static void pool_row(const kiln_pool2d_shape *s, const pool_geom *g, const float *x0, size_t ld,
                     int rows, int rows_pad, float *row, float *yr, int is_max)
{
    const int W = s->w_in, sw = s->stride_w, dw = s->dil_w, kw_n = s->k_w, w_out = g->w_out;
    const int tail_vec = g->tail_vec, ow_lo = g->ow_lo, ow_hi = g->ow_hi;
    if (rows == 0) { /* the window covers padding only */
        for (int ow = 0; ow < w_out; ow++) yr[ow] = is_max ? -INFINITY : 0.0f;
        return;
    }
    memcpy(row, x0, sizeof(float) * W);
    for (int r = 1; r < rows; r++) {
        const float *x = x0 + (size_t)r * ld;
        int i = 0;
        if (is_max) {
            for (; i + VW <= W; i += VW) V_STOREU(row + i, V_MAX(V_LOADU(row + i), V_LOADU(x + i)));
            for (; i < W; i++) row[i] = x[i] > row[i] ? x[i] : row[i];
        } else {
            for (; i + VW <= W; i += VW) V_STOREU(row + i, V_ADD(V_LOADU(row + i), V_LOADU(x + i)));
            for (; i < W; i++) row[i] += x[i];
        }
    }
    const int rows_div = s->count_include_pad ? rows_pad : rows;
    int ow = ow_lo;
    if (sw <= 2) {
        const vf vdiv = V_SET1(1.0f / (float)(rows_div * kw_n));
        /* stride 2 reads one element past the last window: stop one vector early */
        int end = sw == 1 ? ow_hi : ow_hi - 1;
        if (tail_vec) end = ow_hi;
        for (; ow < end && (tail_vec || ow + VW <= end); ow += VW) {
            const float *base = row + ow * sw - s->pad_l;
            vf acc = sw == 1 ? V_LOADU(base) : v_load_even(base);
            for (int kw = 1; kw < kw_n; kw++) {
                vf v = sw == 1 ? V_LOADU(base + kw * dw) : v_load_even(base + kw * dw);
                acc = is_max ? V_MAX(acc, v) : V_ADD(acc, v);
            }
            acc = is_max ? acc : V_MUL(acc, vdiv);
            if (ow + VW <= end)
                V_STOREU(yr + ow, acc);
            else
                v_store_part(yr + ow, acc, end - ow);
        }
        if (ow > end) ow = end;
    }
    /* Everything else one window at a time: the edges, the vector
     * loop's tail, strides above 2. */
    for (int o = 0; o < w_out; o++) {
        if (o == ow_lo && ow > ow_lo) o = ow;
        if (o >= w_out) break;
        int iw0 = o * sw - s->pad_l, cols = 0, cols_pad = 0;
        float acc = is_max ? -INFINITY : 0.0f;
        for (int kw = 0; kw < kw_n; kw++) {
            int iw = iw0 + kw * dw;
            if (iw >= -s->pad_l && iw < W + s->pad_r) cols_pad++;
            if (iw < 0 || iw >= W) continue;
            acc = is_max ? (row[iw] > acc ? row[iw] : acc) : acc + row[iw];
            cols++;
        }
        if (is_max)
            yr[o] = acc;
        else {
            int div = rows_div * (s->count_include_pad ? cols_pad : cols);
            yr[o] = div ? acc / (float)div : 0.0f;
        }
    }
}

/* Max/avg pooling of the planes [p_begin, p_end), separably, a row at a
 * time (pool_row()). */
static void pool2d_planes(const kiln_pool2d_shape *s, const float *x, float *y, int is_max,
                          size_t p_begin, size_t p_end)
{
    pool_geom g;
    if (!pool_geom_of(s, is_max, &g)) return;
    float row[POOL_ROW_MAX];
    pool_row_init(s, &g, row);
    const int W = s->w_in;
    for (size_t p = p_begin; p < p_end; p++) {
        const float *xp = x + p * s->h_in * W;
        float *yp = y + p * g.h_out * g.w_out;
        for (int oh = 0; oh < g.h_out; oh++) {
            int ih0 = oh * s->stride_h - s->pad_t, rows = 0, rows_pad = 0, first = 0;
            for (int kh = 0; kh < s->k_h; kh++) {
                int ih = ih0 + kh * s->dil_h;
                if (ih >= -s->pad_t && ih < s->h_in + s->pad_b) rows_pad++;
                if (ih < 0 || ih >= s->h_in) continue;
                if (!rows++) first = ih;
            }
            pool_row(s, &g, xp + (size_t)first * W, (size_t)s->dil_h * W, rows, rows_pad, row,
                     yp + (size_t)oh * g.w_out, is_max);
        }
    }
}

/* Floats of the vertical-reduction buffer of the 2x2/2 path. */
#define POOL2_BUF 4096

/* 2x2 windows, stride 2, no padding or dilation, even height and width
 * (LeNet's and the CIFAR-10 CNN's pools): the planes [p_begin, p_end) are
 * one run of row pairs. Each pair is reduced to one row of buf, row after
 * row; then output element q of the run is op(buf[2q], buf[2q + 1]), so
 * the horizontal step is a flat loop of full vectors however narrow the
 * planes are (16 or 8 columns: the general path's vectors never start
 * there). */
static int pool2x2_ok(const kiln_pool2d_shape *s)
{
    return s->k_h == 2 && s->k_w == 2 && s->stride_h == 2 && s->stride_w == 2 && s->dil_h == 1 &&
           s->dil_w == 1 && !s->pad_t && !s->pad_l && !s->pad_b && !s->pad_r && s->h_in % 2 == 0 &&
           s->w_in % 2 == 0 && s->w_in <= POOL2_BUF;
}

/* The vertical step's tail of a row pair, columns [i, W), as one masked
 * vector where the ISA has masked loads (28 columns: 12 of them, 14: all),
 * not float by float; returns the first column still to do. */
static inline size_t pool2_tail(float *b, const float *x0, const float *x1, size_t i, size_t W,
                                int is_max)
{
#ifdef V_LOADU_PART
    if (i < W) {
        const int m = (int)(W - i);
        const vf a = V_LOADU_PART(x0 + i, m), c = V_LOADU_PART(x1 + i, m);
        V_STOREU_PART(b + i, is_max ? V_MAX(a, c) : V_ADD(a, c), m);
        return W;
    }
#else
    (void)b, (void)x0, (void)x1, (void)W, (void)is_max;
#endif
    return i;
}

/* The 2x2, stride-2 max pool that kiln_epilogue.pool2 fuses into a conv,
 * over c planes of h x w (f32-direct.inc.c, f32-gemm-t.inc.c). */
static inline kiln_pool2d_shape pool2_shape(int c, int h, int w)
{
    return (kiln_pool2d_shape){.n = 1,
                               .c = c,
                               .h_in = h,
                               .w_in = w,
                               .k_h = 2,
                               .k_w = 2,
                               .stride_h = 2,
                               .stride_w = 2,
                               .dil_h = 1,
                               .dil_w = 1};
}

static void pool2x2_planes(const kiln_pool2d_shape *s, const float *x, float *y, int is_max,
                           size_t p_begin, size_t p_end)
{
    float buf[POOL2_BUF + 2 * VW];
    const size_t W = (size_t)s->w_in, pairs_per_buf = POOL2_BUF / W;
    size_t r = p_begin * (size_t)s->h_in / 2;
    const size_t r_end = p_end * (size_t)s->h_in / 2;
    const vf quarter = V_SET1(0.25f);
    /* v_load_even(buf + 2q + 1) of the last vector reads one float past
     * the run: keep it defined. */
    for (int i = 0; i < 2 * VW; i++) buf[POOL2_BUF + i] = 0.0f;
    while (r < r_end) {
        const size_t pairs = r_end - r < pairs_per_buf ? r_end - r : pairs_per_buf;
        for (size_t k = 0; k < pairs; k++) {
            const float *x0 = x + (r + k) * 2 * W, *x1 = x0 + W;
            float *b = buf + k * W;
            size_t i = 0;
            if (is_max) {
                for (; i + VW <= W; i += VW)
                    V_STOREU(b + i, V_MAX(V_LOADU(x0 + i), V_LOADU(x1 + i)));
                i = pool2_tail(b, x0, x1, i, W, 1);
                for (; i < W; i++) b[i] = x1[i] > x0[i] ? x1[i] : x0[i];
            } else {
                for (; i + VW <= W; i += VW)
                    V_STOREU(b + i, V_ADD(V_LOADU(x0 + i), V_LOADU(x1 + i)));
                i = pool2_tail(b, x0, x1, i, W, 0);
                for (; i < W; i++) b[i] = x0[i] + x1[i];
            }
        }
        const size_t n = pairs * W / 2;
        float *yr = y + r * W / 2;
        size_t q = 0;
        for (; q + VW <= n; q += VW) {
            vf e = v_load_even(buf + 2 * q), o = v_load_even(buf + 2 * q + 1);
            V_STOREU(yr + q, is_max ? V_MAX(e, o) : V_MUL(V_ADD(e, o), quarter));
        }
        for (; q < n; q++) {
            float e = buf[2 * q], o = buf[2 * q + 1];
            yr[q] = is_max ? (o > e ? o : e) : (e + o) * 0.25f;
        }
        r += pairs;
    }
}

typedef struct pool2d_job {
    const kiln_pool2d_shape *s;
    const float *x;
    float *y;
    int is_max;
} pool2d_job;

static void pool2d_range(void *ctx, size_t begin, size_t end)
{
    pool2d_job *j = ctx;
    (pool2x2_ok(j->s) ? pool2x2_planes : pool2d_planes)(j->s, j->x, j->y, j->is_max, begin, end);
}

/* Planes (image, channel) are independent: split them over threads when
 * there is enough work to pay for waking them. */
static void pool2d(const kiln_pool2d_shape *s, const float *x, float *y, int is_max, int threads)
{
    if (s->w_in > POOL_ROW_MAX) {
        (is_max ? kiln__ref_maxpool2d : kiln__ref_avgpool2d)(s, x, y, 1);
        return;
    }
    size_t planes = (size_t)s->n * s->c;
    size_t work = planes * s->h_in * s->w_in * s->k_h;
    pool2d_job j = {s, x, y, is_max};
    /* CIFAR-10 CNN's first pool (32 planes of 32x32, work 65,536) was
     * slower on two threads than on one. */
    kiln__parallel_for(work < (1 << 18) ? 1 : threads, planes, pool2d_range, &j);
}

static void maxpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    pool2d(s, x, y, 1, threads);
}

static void avgpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    pool2d(s, x, y, 0, threads);
}
