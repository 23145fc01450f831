/*
 * Every kernel but conv2d: ref against hand-worked answers, then every
 * optimised ISA table against ref on shapes with odd sizes and SIMD tails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernel_check.h"

static const kiln_kernels *ref_k(void)
{
    return kiln_kernels_for(KILN_ISA_REF);
}

#define EXPECT_CLOSE(out, ref, n, what, isa)                                        \
    do {                                                                            \
        double e_ = kcheck_nmse((out), (ref), (n));                                 \
        if (!(e_ <= KCHECK_NMSE)) fail_msg("%s on %s: nmse %g", (what), (isa), e_); \
    } while (0)

/* ---- pooling ----------------------------------------------------------- */

static kiln_pool2d_shape pool_shape(int n, int c, int h, int w, int k, int stride, int pad,
                                    int ceil_mode, int include_pad)
{
    kiln_pool2d_shape s = {n, c, h,   w,   k,   k,   stride,    stride,
                           1, 1, pad, pad, pad, pad, ceil_mode, include_pad};
    return s;
}

static void ref_pool_known_answers(void **state)
{
    (void)state;
    float x[25], y[25];
    for (int i = 0; i < 25; i++) x[i] = (float)(i + 1); /* 5x5: 1..25 */
    int h, w;

    /* 2x2/2 over 5x5: floor gives 2x2, ceil gives 3x3 with half windows. */
    kiln_pool2d_shape s = pool_shape(1, 1, 5, 5, 2, 2, 0, 0, 0);
    assert_int_equal(kiln_pool2d_out_hw(&s, &h, &w), KILN_OK);
    assert_int_equal(h * 10 + w, 22);
    s.ceil_mode = 1;
    assert_int_equal(kiln_pool2d_out_hw(&s, &h, &w), KILN_OK);
    assert_int_equal(h * 10 + w, 33);
    ref_k()->maxpool2d(&s, x, y, 1);
    const float mx[9] = {7, 9, 10, 17, 19, 20, 22, 24, 25};
    for (int i = 0; i < 9; i++) assert_float_equal(y[i], mx[i], 0);
    ref_k()->avgpool2d(&s, x, y, 1);
    const float av[9] = {4, 6, 7.5f, 14, 16, 17.5f, 21.5f, 23.5f, 25};
    for (int i = 0; i < 9; i++) assert_float_equal(y[i], av[i], 1e-6);

    /* 3x3/1 pad 1: count_include_pad divides corners by 9, not 4. */
    s = pool_shape(1, 1, 5, 5, 3, 1, 1, 0, 0);
    ref_k()->avgpool2d(&s, x, y, 1);
    assert_float_equal(y[0], (1 + 2 + 6 + 7) / 4.0f, 1e-6);
    s.count_include_pad = 1;
    ref_k()->avgpool2d(&s, x, y, 1);
    assert_float_equal(y[0], (1 + 2 + 6 + 7) / 9.0f, 1e-6);
    assert_float_equal(y[6], 7.0f, 1e-6); /* interior: the plain mean */

    /* Ceil mode with padding over 6x6 (1..36), 3x3/3 pad 1: windows start
     * at -1, 2, 5; the last hangs past the end pad (padded input is
     * [-1, 7)), and only what lies inside the pad is counted. */
    float x36[36];
    for (int i = 0; i < 36; i++) x36[i] = (float)(i + 1);
    s = pool_shape(1, 1, 6, 6, 3, 3, 1, 1, 1);
    assert_int_equal(kiln_pool2d_out_hw(&s, &h, &w), KILN_OK);
    assert_int_equal(h, 3);
    ref_k()->avgpool2d(&s, x36, y, 1);
    assert_float_equal(y[1], (3 + 4 + 5 + 9 + 10 + 11) / 9.0f, 1e-6);
    assert_float_equal(y[2], (6 + 12) / 6.0f, 1e-6); /* 3 rows x cols 5, 6 */
    /* The same sizes over 5x5 drop the last window: it would start at 5,
     * past input + leading pad. */
    s = pool_shape(1, 1, 5, 5, 3, 3, 1, 1, 1);
    assert_int_equal(kiln_pool2d_out_hw(&s, &h, &w), KILN_OK);
    assert_int_equal(h, 2);

    /* Global pools. */
    float g[2];
    ref_k()->global_avgpool(1, 1, 25, x, g);
    assert_float_equal(g[0], 13.0f, 1e-6);
    ref_k()->global_maxpool(1, 1, 25, x, g);
    assert_float_equal(g[0], 25.0f, 0);

    /* Pads as large as the window are refused. */
    s = pool_shape(1, 1, 5, 5, 2, 2, 2, 0, 0);
    assert_int_equal(kiln_maxpool2d(&s, x, y, 1), KILN_ERR_SHAPE);
}

static void check_pool(const kiln_pool2d_shape *s, kcheck_rng *r)
{
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas), h, w;
    assert_int_equal(kiln_pool2d_out_hw(s, &h, &w), KILN_OK);
    size_t nx = (size_t)s->n * s->c * s->h_in * s->w_in, ny = (size_t)s->n * s->c * h * w;
    float *x = kcheck_alloc(nx), *rm = kcheck_alloc(ny), *ra = kcheck_alloc(ny);
    float *y = kcheck_alloc(ny);
    kcheck_fill(r, x, nx, -4, 4);
    ref_k()->maxpool2d(s, x, rm, 1);
    ref_k()->avgpool2d(s, x, ra, 1);
    for (int i = 0; i < n_isas; i++) {
        char what[160];
        snprintf(what, sizeof what, "pool n%d c%d %dx%d k%dx%d s%d,%d d%d p%d%d%d%d ceil%d inc%d",
                 s->n, s->c, s->h_in, s->w_in, s->k_h, s->k_w, s->stride_h, s->stride_w, s->dil_h,
                 s->pad_t, s->pad_l, s->pad_b, s->pad_r, s->ceil_mode, s->count_include_pad);
        int threads = kcheck_threads(1 + (i & 1) + (s->c & 1));
        isas[i]->maxpool2d(s, x, y, threads);
        EXPECT_CLOSE(y, rm, ny, what, kiln_isa_name(isas[i]->isa));
        isas[i]->avgpool2d(s, x, y, threads);
        EXPECT_CLOSE(y, ra, ny, what, kiln_isa_name(isas[i]->isa));
    }
    free(x);
    free(rm);
    free(ra);
    free(y);
}

static void pool_grid_matches_ref(void **state)
{
    (void)state;
    kcheck_rng r = {11};
    int cases = kcheck_quick() ? 80 : 400, done = 0;
    while (done < cases) {
        int k = kcheck_int(&r, 1, 7), stride = kcheck_int(&r, 1, 3);
        int dil = kcheck_int(&r, 0, 4) ? 1 : 2, ext = (k - 1) * dil + 1, pm = ext - 1;
        if (pm > 3) pm = 3;
        kiln_pool2d_shape s = {kcheck_int(&r, 0, 3) ? 1 : 3,
                               kcheck_int(&r, 1, 9),
                               kcheck_int(&r, 1, 57),
                               kcheck_int(&r, 1, 57),
                               k,
                               kcheck_int(&r, 0, 2) ? k : kcheck_int(&r, 1, 5),
                               stride,
                               kcheck_int(&r, 0, 2) ? stride : kcheck_int(&r, 1, 3),
                               dil,
                               dil,
                               kcheck_int(&r, 0, pm),
                               kcheck_int(&r, 0, pm),
                               kcheck_int(&r, 0, pm),
                               kcheck_int(&r, 0, pm),
                               kcheck_int(&r, 0, 1),
                               kcheck_int(&r, 0, 1)};
        if (kiln_pool2d_out_hw(&s, NULL, NULL) != KILN_OK) continue;
        check_pool(&s, &r);
        done++;
    }
}

static void pool_named_layers_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {3};
    int c = kcheck_quick() ? 8 : 64;
    kiln_pool2d_shape resnet_maxpool = pool_shape(1, c, 112, 112, 3, 2, 1, 0, 0);
    check_pool(&resnet_maxpool, &r);
    kiln_pool2d_shape inception_avg = pool_shape(1, c / 2 + 1, 35, 35, 3, 1, 1, 0, 0);
    check_pool(&inception_avg, &r);
    kiln_pool2d_shape googlenet_ceil = pool_shape(3, 5, 112, 112, 3, 2, 0, 1, 0);
    check_pool(&googlenet_ceil, &r);

    /* 2x2/2 without padding over even sizes (the SIMD tables' flat path):
     * the small nets' pools, every even width 2..40, batch 3. */
    static const int pool2[][4] = {{1, 32, 28, 28}, {1, 64, 14, 14}, {1, 32, 32, 32},
                                   {1, 64, 16, 16}, {1, 128, 8, 8},  {3, 5, 6, 40}};
    for (size_t t = 0; t < sizeof pool2 / sizeof pool2[0]; t++) {
        kiln_pool2d_shape s =
            pool_shape(pool2[t][0], pool2[t][1], pool2[t][2], pool2[t][3], 2, 2, 0, 0, 0);
        check_pool(&s, &r);
    }
    for (int w = 2; w <= 40; w += 2) {
        kiln_pool2d_shape s = pool_shape(w % 3 ? 1 : 3, 1 + w % 5, 2 + w % 6, w, 2, 2, 0, 0, 0);
        check_pool(&s, &r);
    }

    /* ResNet50's GAP (2048 x 7x7) and odd sizes for tails. */
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    static const int hws[] = {1, 7, 15, 16, 17, 49, 63, 64, 65, 3136};
    for (size_t t = 0; t < sizeof hws / sizeof hws[0]; t++) {
        int n = t & 1 ? 3 : 1, ch = hws[t] == 49 ? 2048 : 7;
        size_t nx = (size_t)n * ch * hws[t];
        float *x = kcheck_alloc(nx), *ra = kcheck_alloc(n * ch), *rm = kcheck_alloc(n * ch);
        float *y = kcheck_alloc(n * ch);
        kcheck_fill(&r, x, nx, -3, 5);
        ref_k()->global_avgpool(n, ch, hws[t], x, ra);
        ref_k()->global_maxpool(n, ch, hws[t], x, rm);
        for (int i = 0; i < n_isas; i++) {
            isas[i]->global_avgpool(n, ch, hws[t], x, y);
            EXPECT_CLOSE(y, ra, (size_t)n * ch, "global avgpool", kiln_isa_name(isas[i]->isa));
            isas[i]->global_maxpool(n, ch, hws[t], x, y);
            EXPECT_CLOSE(y, rm, (size_t)n * ch, "global maxpool", kiln_isa_name(isas[i]->isa));
        }
        free(x);
        free(ra);
        free(rm);
        free(y);
    }
}

/* ---- dense --------------------------------------------------------------- */

static void check_dense(const char *name, kiln_dense_shape s, int variant, kcheck_rng *r)
{
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    size_t nx = (size_t)s.batch * s.in, nw = (size_t)s.out * s.in, ny = (size_t)s.batch * s.out;
    float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw), *bias = kcheck_alloc(s.out);
    float *res = kcheck_alloc(ny), *ref = kcheck_alloc(ny), *y = kcheck_alloc(ny);
    float *packed = kcheck_alloc(kiln_dense_packed_size(&s) / sizeof(float));
    kcheck_fill(r, x, nx, -1, 1);
    kcheck_fill(r, w, nw, -1, 1);
    kcheck_fill(r, bias, s.out, -1, 1);
    kcheck_fill(r, res, ny, -1, 1);
    kiln_dense_pack(&s, w, packed);
    kiln_epilogue ep = {.bias = variant & 1 ? bias : NULL,
                        .residual = variant & 2 ? res : NULL,
                        .act = (kiln_act)((variant >> 2) % KILN_ACT_COUNT_),
                        .alpha = 0.2f,
                        .lo = -0.25f,
                        .hi = 0.5f};
    assert_int_equal(ref_k()->dense(&s, x, packed, &ep, ref, NULL, 1), KILN_OK);
    for (int i = 0; i < n_isas; i++) {
        int threads = kcheck_threads(1 + (variant & 1));
        void *ws = kcheck_workspace(kiln_dense_workspace_size(&s, threads));
        assert_int_equal(isas[i]->dense(&s, x, packed, &ep, y, ws, threads), KILN_OK);
        EXPECT_CLOSE(y, ref, ny, name, kiln_isa_name(isas[i]->isa));
        free(ws);
    }
    free(x);
    free(w);
    free(bias);
    free(res);
    free(ref);
    free(y);
    free(packed);
}

static void dense_matches_ref(void **state)
{
    (void)state;
    const kiln_kernels *ref = ref_k();
    /* Known answer: [1 2; 3 4] . [1 1; 1 -1]^T + [10, 20] */
    kiln_dense_shape s2 = {2, 2, 2};
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, -1}, b[2] = {10, 20};
    float y[4];
    kiln_epilogue ep = {.bias = b};
    assert_int_equal(ref->dense(&s2, x, w, &ep, y, NULL, 1), KILN_OK);
    assert_float_equal(y[0], 13, 0);
    assert_float_equal(y[1], 19, 0);
    assert_float_equal(y[2], 17, 0);
    assert_float_equal(y[3], 19, 0);

    kcheck_rng r = {5};
    int quick = kcheck_quick();
    check_dense("resnet50 fc 2048->1000", (kiln_dense_shape){1, 2048, quick ? 100 : 1000}, 1, &r);
    check_dense("fc batch 3", (kiln_dense_shape){3, 257, 129}, 7, &r);
    for (int i = 0; i < (quick ? 20 : 60); i++) {
        kiln_dense_shape s = {kcheck_int(&r, 0, 2) ? 1 : kcheck_int(&r, 2, 9),
                              kcheck_int(&r, 1, 300), kcheck_int(&r, 1, 70)};
        check_dense("dense grid", s, kcheck_int(&r, 0, 19), &r);
    }
}

/* Batches of 2..8 rows (KILN_DENSE_EXACT_MAX_BATCH): every row bit for bit what that row alone
 * (batch 1) gives, on every ISA and thread count: a batched predict must not change an answer. */
static void check_dense_rows_exact(kiln_dense_shape s, int variant, kcheck_rng *r)
{
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    size_t nx = (size_t)s.batch * s.in, ny = (size_t)s.batch * s.out;
    kiln_dense_shape one = {1, s.in, s.out};
    float *x = kcheck_alloc(nx), *w = kcheck_alloc((size_t)s.out * s.in);
    float *bias = kcheck_alloc(s.out), *y = kcheck_alloc(ny), *y1 = kcheck_alloc(ny);
    float *packed = kcheck_alloc(kiln_dense_packed_size(&s) / sizeof(float));
    kcheck_fill(r, x, nx, -1, 1);
    kcheck_fill(r, w, (size_t)s.out * s.in, -1, 1);
    kcheck_fill(r, bias, s.out, -1, 1);
    kiln_dense_pack(&s, w, packed);
    kiln_epilogue ep = {.bias = variant & 1 ? bias : NULL, .act = variant & 2 ? KILN_ACT_RELU : 0};
    for (int i = 0; i < n_isas; i++) {
        for (int threads = 1; threads <= 2; threads++) {
            void *ws = kcheck_workspace(kiln_dense_workspace_size(&s, threads));
            memset(y, 0xff, ny * sizeof *y);
            assert_int_equal(isas[i]->dense(&s, x, packed, &ep, y, ws, threads), KILN_OK);
            for (int b = 0; b < s.batch; b++)
                assert_int_equal(isas[i]->dense(&one, x + (size_t)b * s.in, packed, &ep,
                                                y1 + (size_t)b * s.out, ws, threads),
                                 KILN_OK);
            if (memcmp(y, y1, ny * sizeof *y) != 0) {
                size_t k = 0;
                while (k < ny && memcmp(&y[k], &y1[k], sizeof *y) == 0) k++;
                fail_msg("%s dense batch %d %d->%d threads %d: element %zu is %.9g batched, "
                         "%.9g alone",
                         kiln_isa_name(isas[i]->isa), s.batch, s.in, s.out, threads, k,
                         (double)y[k], (double)y1[k]);
            }
            free(ws);
        }
    }
    free(x);
    free(w);
    free(bias);
    free(y);
    free(y1);
    free(packed);
}

static void dense_small_batch_bit_identical(void **state)
{
    (void)state;
    kcheck_rng r = {11};
    /* MNIST's fc1 (3136->128 after the convs) and fc2, odd widths that leave
     * vector and row tails, and one big enough to run on two threads. */
    for (int b = 2; b <= 8; b++) {
        check_dense_rows_exact((kiln_dense_shape){b, 3136, 128}, 3, &r);
        check_dense_rows_exact((kiln_dense_shape){b, 128, 10}, 1, &r);
        check_dense_rows_exact((kiln_dense_shape){b, 803, 131}, b & 3, &r);
        check_dense_rows_exact((kiln_dense_shape){b, 5, 3}, 0, &r);
    }
    check_dense_rows_exact((kiln_dense_shape){4, 1024, 1030}, 1, &r);
    check_dense_rows_exact((kiln_dense_shape){7, 1024, 1030}, 0, &r);
}

/* ---- element-wise ---------------------------------------------------------- */

static void ref_eltwise_known_answers(void **state)
{
    (void)state;
    const kiln_kernels *k = ref_k();
    const float x[5] = {-2, -0.5f, 0, 1, 8};
    float y[5];
    k->activation(5, x, y, KILN_ACT_RELU, 0, 0, 0);
    assert_float_equal(y[0], 0, 0);
    assert_float_equal(y[4], 8, 0);
    k->activation(5, x, y, KILN_ACT_CLIP, 0, 0, 6);
    assert_float_equal(y[4], 6, 0);
    assert_float_equal(y[3], 1, 0);
    k->activation(5, x, y, KILN_ACT_LEAKY_RELU, 0.1f, 0, 0);
    assert_float_equal(y[0], -0.2f, 1e-7);
    k->activation(5, x, y, KILN_ACT_SIGMOID, 0, 0, 0);
    assert_float_equal(y[2], 0.5f, 1e-7);
    k->activation(5, x, y, KILN_ACT_NONE, 0, 0, 0);
    assert_memory_equal(x, y, sizeof x);

    /* Softmax: stable for large inputs, rows sum to 1, over a middle axis. */
    const float big[6] = {1000, 1001, 1002, -1000, 0, 1000};
    float sm[6];
    k->softmax(1, 3, 2, big, sm); /* axis of 3, inner 2 */
    /* inner 0 sees {1000, 1002, 0}, inner 1 sees {1001, -1000, 1000} */
    assert_float_equal(sm[0] + sm[2] + sm[4], 1.0f, 1e-6);
    assert_float_equal(sm[2], 1.0f / (1.0f + expf(-2)), 1e-6);
    assert_float_equal(sm[4], 0.0f, 1e-6);
    assert_float_equal(sm[1], 1.0f / (1.0f + expf(-1)), 1e-6);
    assert_float_equal(sm[3], 0.0f, 1e-6);

    /* Batch norm folding: (x - mean) / sqrt(var + eps) * gamma + beta. */
    const float gamma[2] = {2, 1}, beta[2] = {1, 0}, mean[2] = {3, -1}, var[2] = {4 - 1e-3f, 1};
    float scale[2], shift[2], xb[4] = {3, 5, -1, 0}, yb[4];
    kiln_batchnorm_fold(2, gamma, beta, mean, var, 1e-3f, scale, shift);
    k->batchnorm(1, 2, 2, xb, scale, shift, yb);
    assert_float_equal(yb[0], 1.0f, 1e-5);
    assert_float_equal(yb[1], 3.0f, 1e-5);
    assert_float_equal(yb[2], 0.0f, 1e-3);
    assert_float_equal(yb[3], 1.0f, 1e-3);

    /* Concat of [2][1][2] and [2][2][2] on channels. */
    const float a[4] = {1, 2, 3, 4}, b[8] = {5, 6, 7, 8, 9, 10, 11, 12};
    const float *ins[2] = {a, b};
    const int chans[2] = {1, 2};
    float cat[12];
    k->concat_channels(2, 2, 2, ins, chans, cat);
    const float want[12] = {1, 2, 5, 6, 7, 8, 3, 4, 9, 10, 11, 12};
    assert_memory_equal(cat, want, sizeof want);
}

static void eltwise_matches_ref(void **state)
{
    (void)state;
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    kcheck_rng r = {9};
    static const size_t counts[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 1001, 4099};
    for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
        size_t n = counts[t];
        float *x = kcheck_alloc(n), *b = kcheck_alloc(n), *ref = kcheck_alloc(n);
        float *y = kcheck_alloc(n);
        kcheck_fill(&r, x, n, -12, 12);
        kcheck_fill(&r, b, n, -3, 3);
        for (int i = 0; i < n_isas; i++) {
            const char *isa = kiln_isa_name(isas[i]->isa);
            for (int a = 0; a < KILN_ACT_COUNT_; a++) {
                ref_k()->activation(n, x, ref, (kiln_act)a, 0.3f, -1.5f, 6.0f);
                isas[i]->activation(n, x, y, (kiln_act)a, 0.3f, -1.5f, 6.0f);
                EXPECT_CLOSE(y, ref, n, "activation", isa);
                memcpy(y, x, n * sizeof(float)); /* in place */
                isas[i]->activation(n, y, y, (kiln_act)a, 0.3f, -1.5f, 6.0f);
                EXPECT_CLOSE(y, ref, n, "activation in place", isa);
            }
            ref_k()->add(n, x, b, ref);
            isas[i]->add(n, x, b, y);
            EXPECT_CLOSE(y, ref, n, "add", isa);
            ref_k()->softmax(1, n, 1, x, ref);
            isas[i]->softmax(1, n, 1, x, y);
            EXPECT_CLOSE(y, ref, n, "softmax last axis", isa);
        }
        free(x);
        free(b);
        free(ref);
        free(y);
    }

    /* Shaped kernels: [n][c][hw] with odd hw for tails. */
    static const int shapes[][3] = {{1, 1, 1},    {1, 3, 17},   {3, 5, 33}, {2, 16, 49},
                                    {1, 7, 1000}, {1, 1000, 1}, {3, 4, 65}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int n = shapes[t][0], c = shapes[t][1];
        size_t hw = (size_t)shapes[t][2], cnt = (size_t)n * c * hw;
        float *x = kcheck_alloc(cnt), *res = kcheck_alloc(cnt), *ref = kcheck_alloc(cnt);
        float *y = kcheck_alloc(cnt), *bias = kcheck_alloc(c), *shift = kcheck_alloc(c);
        kcheck_fill(&r, x, cnt, -5, 5);
        kcheck_fill(&r, res, cnt, -2, 2);
        kcheck_fill(&r, bias, c, -1, 1);
        kcheck_fill(&r, shift, c, -1, 1);
        for (int i = 0; i < n_isas; i++) {
            const char *isa = kiln_isa_name(isas[i]->isa);
            for (int v = 0; v < 4 * KILN_ACT_COUNT_; v++) {
                kiln_epilogue ep = {.bias = v & 1 ? bias : NULL,
                                    .residual = v & 2 ? res : NULL,
                                    .act = (kiln_act)(v >> 2),
                                    .alpha = 0.01f,
                                    .lo = 0,
                                    .hi = 6};
                ref_k()->epilogue_apply(n, c, hw, x, &ep, ref);
                isas[i]->epilogue_apply(n, c, hw, x, &ep, y);
                EXPECT_CLOSE(y, ref, cnt, "epilogue", isa);
            }
            ref_k()->batchnorm(n, c, hw, x, bias, shift, ref);
            isas[i]->batchnorm(n, c, hw, x, bias, shift, y);
            EXPECT_CLOSE(y, ref, cnt, "batchnorm", isa);
            /* softmax over channels (axis 1 of NCHW) */
            ref_k()->softmax(n, c, hw, x, ref);
            isas[i]->softmax(n, c, hw, x, y);
            EXPECT_CLOSE(y, ref, cnt, "softmax channels", isa);
            const float *ins[3] = {x, res, x};
            int chans[3] = {c, c, c};
            float *cat = kcheck_alloc(3 * cnt), *cat_ref = kcheck_alloc(3 * cnt);
            ref_k()->concat_channels(n, hw, 3, ins, chans, cat_ref);
            isas[i]->concat_channels(n, hw, 3, ins, chans, cat);
            EXPECT_CLOSE(cat, cat_ref, 3 * cnt, "concat", isa);
            free(cat);
            free(cat_ref);
        }
        free(x);
        free(res);
        free(ref);
        free(y);
        free(bias);
        free(shift);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ref_pool_known_answers),
        cmocka_unit_test(pool_grid_matches_ref),
        cmocka_unit_test(pool_named_layers_match_ref),
        cmocka_unit_test(dense_matches_ref),
        cmocka_unit_test(dense_small_batch_bit_identical),
        cmocka_unit_test(ref_eltwise_known_answers),
        cmocka_unit_test(eltwise_matches_ref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
