/*
 * conv2d: the ref oracle against answers worked out by hand and against
 * identities (groups = split convs, dilation = a zero-stuffed kernel), then
 * every optimised ISA table against ref on a grid of shapes and on
 * ResNet50's and MobileNetV2's layers.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"
#include "kernel_check.h"
#include "model_shapes.h"

static size_t conv_in_count(const kiln_conv2d_shape *s)
{
    return (size_t)s->n * s->c_in * s->h_in * s->w_in;
}

static size_t conv_out_count(const kiln_conv2d_shape *s)
{
    int h, w;
    assert_int_equal(kiln_conv2d_out_hw(s, &h, &w), KILN_OK);
    return (size_t)s->n * s->c_out * h * w;
}

static size_t conv_w_count(const kiln_conv2d_shape *s)
{
    return (size_t)s->c_out * (s->c_in / s->groups) * s->k_h * s->k_w;
}

/* Runs table `k` on the shape and returns y (caller frees). */
static float *run_conv(const kiln_kernels *k, const kiln_conv2d_shape *s, const float *x,
                       const float *w, const kiln_epilogue *ep, int threads)
{
    float *packed = kcheck_alloc(kiln_conv2d_packed_size(s) / sizeof(float));
    kiln_conv2d_pack(s, w, packed);
    void *ws = kcheck_workspace(kiln_conv2d_workspace_size(s, threads));
    float *y = kcheck_alloc(conv_out_count(s));
    assert_int_equal(k->conv2d(s, x, packed, ep, y, ws, threads), KILN_OK);
    free(ws);
    free(packed);
    return y;
}

/* Compares every optimised table with ref on one shape, with an epilogue
 * picked from `variant`. Returns the worst nmse seen. */
static double check_conv(const char *name, const kiln_conv2d_shape *s, int variant, kcheck_rng *r)
{
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    size_t nx = conv_in_count(s), ny = conv_out_count(s), nw = conv_w_count(s);
    float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw);
    float *bias = kcheck_alloc(s->c_out), *res = kcheck_alloc(ny);
    kcheck_fill(r, x, nx, -1, 1);
    kcheck_fill(r, w, nw, -1, 1);
    kcheck_fill(r, bias, s->c_out, -1, 1);
    kcheck_fill(r, res, ny, -1, 1);
    static const kiln_act acts[] = {KILN_ACT_NONE, KILN_ACT_RELU, KILN_ACT_CLIP,
                                    KILN_ACT_LEAKY_RELU, KILN_ACT_SIGMOID};
    kiln_epilogue ep = {
        .bias = variant & 1 ? bias : NULL,
        .residual = variant & 2 ? res : NULL,
        .act = acts[(variant >> 2) % 5],
        .alpha = 0.125f,
        .lo = -0.5f,
        .hi = 0.75f,
    };
    float *ref = run_conv(kiln_kernels_for(KILN_ISA_REF), s, x, w, &ep, 1);
    double worst = 0.0;
    for (int i = 0; i < n_isas; i++) {
        int threads = kcheck_threads(1 + (variant & 1));
        float *y = run_conv(isas[i], s, x, w, &ep, threads);
        double e = kcheck_nmse(y, ref, ny);
        if (!(e <= KCHECK_NMSE))
            fail_msg("%s on %s (threads %d, act %d, bias %d, residual %d): nmse %g", name,
                     kiln_isa_name(isas[i]->isa), threads, ep.act, ep.bias != NULL,
                     ep.residual != NULL, e);
        if (e > worst) worst = e;
        free(y);
    }
    free(ref);
    free(x);
    free(w);
    free(bias);
    free(res);
    return worst;
}

static kiln_conv2d_shape conv_shape(int n, int c_in, int h, int w, int c_out, int k, int stride,
                                    int dil, int pad, int groups)
{
    kiln_conv2d_shape s = {n,      c_in, h,   w,   c_out, k,   k,   stride,
                           stride, dil,  dil, pad, pad,   pad, pad, groups};
    return s;
}

static void ref_conv_known_answers(void **state)
{
    (void)state;
    const kiln_kernels *ref = kiln_kernels_for(KILN_ISA_REF);
    /* 3x3 box filter over ones, pad 1: each output counts its in-bounds taps. */
    kiln_conv2d_shape s = conv_shape(1, 1, 3, 3, 1, 3, 1, 1, 1, 1);
    float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, y[9];
    float bias = -5.0f;
    kiln_epilogue ep = {.bias = &bias, .act = KILN_ACT_RELU};
    assert_int_equal(ref->conv2d(&s, ones, ones, NULL, y, NULL, 1), KILN_OK);
    const float box[9] = {4, 6, 4, 6, 9, 6, 4, 6, 4};
    for (int i = 0; i < 9; i++) assert_float_equal(y[i], box[i], 0);
    assert_int_equal(ref->conv2d(&s, ones, ones, &ep, y, NULL, 1), KILN_OK);
    const float box_relu[9] = {0, 1, 0, 1, 4, 1, 0, 1, 0};
    for (int i = 0; i < 9; i++) assert_float_equal(y[i], box_relu[i], 0);

    /* Asymmetric pads (ONNX order t, l, b, r) move the input inside the output. */
    kiln_conv2d_shape a = {1, 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 2, 1};
    int h, w;
    assert_int_equal(kiln_conv2d_out_hw(&a, &h, &w), KILN_OK);
    assert_int_equal(h, 3);
    assert_int_equal(w, 4);
    const float x4[4] = {1, 2, 3, 4}, two = 2.0f;
    float y12[12];
    assert_int_equal(ref->conv2d(&a, x4, &two, NULL, y12, NULL, 1), KILN_OK);
    const float want[12] = {0, 0, 0, 0, 2, 4, 0, 0, 6, 8, 0, 0};
    for (int i = 0; i < 12; i++) assert_float_equal(y12[i], want[i], 0);

    /* 1x1 stride 3 over 1..25 (5x5) samples rows/columns 0 and 3. */
    kiln_conv2d_shape st = conv_shape(1, 1, 5, 5, 1, 1, 3, 1, 0, 1);
    float x25[25], y4[4], one = 1.0f;
    for (int i = 0; i < 25; i++) x25[i] = (float)(i + 1);
    assert_int_equal(ref->conv2d(&st, x25, &one, NULL, y4, NULL, 1), KILN_OK);
    assert_float_equal(y4[0], 1, 0);
    assert_float_equal(y4[1], 4, 0);
    assert_float_equal(y4[2], 16, 0);
    assert_float_equal(y4[3], 19, 0);
}

/* A grouped conv is the groups' convs side by side; a dilated kernel is
 * the undilated one with zeros stuffed between its taps. */
static void ref_conv_identities(void **state)
{
    (void)state;
    const kiln_kernels *ref = kiln_kernels_for(KILN_ISA_REF);
    kcheck_rng r = {42};
    kiln_conv2d_shape g = conv_shape(2, 6, 9, 7, 9, 3, 2, 1, 1, 3);
    size_t nx = conv_in_count(&g), ny = conv_out_count(&g), nw = conv_w_count(&g);
    float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw), *y = kcheck_alloc(ny);
    kcheck_fill(&r, x, nx, -1, 1);
    kcheck_fill(&r, w, nw, -1, 1);
    assert_int_equal(ref->conv2d(&g, x, w, NULL, y, NULL, 1), KILN_OK);
    kiln_conv2d_shape one = conv_shape(1, 2, 9, 7, 3, 3, 2, 1, 1, 1);
    size_t plane_in = 9 * 7, plane_out = ny / (2 * 9);
    float xs[2 * 63], ys[3 * 32];
    assert_true(plane_out <= 32);
    for (int b = 0; b < 2; b++)
        for (int gi = 0; gi < 3; gi++) {
            memcpy(xs, x + (b * 6 + gi * 2) * plane_in, sizeof(float) * 2 * plane_in);
            assert_int_equal(ref->conv2d(&one, xs, w + gi * 3 * 2 * 9, NULL, ys, NULL, 1), KILN_OK);
            const float *yg = y + (b * 9 + gi * 3) * plane_out;
            for (size_t i = 0; i < 3 * plane_out; i++) assert_float_equal(ys[i], yg[i], 1e-5);
        }
    free(x);
    free(w);
    free(y);

    kiln_conv2d_shape d = conv_shape(1, 2, 11, 10, 2, 3, 1, 2, 2, 1);
    kiln_conv2d_shape d5 = conv_shape(1, 2, 11, 10, 2, 5, 1, 1, 2, 1);
    float wd[2 * 2 * 9], w5[2 * 2 * 25] = {0}, xd[2 * 110], y1[2 * 110], y2[2 * 110];
    kcheck_fill(&r, wd, 36, -1, 1);
    kcheck_fill(&r, xd, 220, -1, 1);
    for (int oc = 0; oc < 4; oc++)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++)
                w5[oc * 25 + 2 * kh * 5 + 2 * kw] = wd[oc * 9 + kh * 3 + kw];
    assert_int_equal(ref->conv2d(&d, xd, wd, NULL, y1, NULL, 1), KILN_OK);
    assert_int_equal(ref->conv2d(&d5, xd, w5, NULL, y2, NULL, 1), KILN_OK);
    assert_int_equal(conv_out_count(&d), conv_out_count(&d5));
    for (size_t i = 0; i < conv_out_count(&d); i++) assert_float_equal(y1[i], y2[i], 1e-5);
}

static void conv_rejects_bad_shapes(void **state)
{
    (void)state;
    float buf[64] = {0};
    kiln_conv2d_shape s = conv_shape(1, 4, 5, 5, 6, 3, 1, 1, 1, 4); /* 6 % 4 */
    assert_int_equal(kiln_conv2d(&s, buf, buf, NULL, buf, NULL, 1), KILN_ERR_SHAPE);
    s = conv_shape(1, 4, 5, 5, 4, 3, 0, 1, 1, 1);
    assert_int_equal(kiln_conv2d(&s, buf, buf, NULL, buf, NULL, 1), KILN_ERR_INVALID_ARG);
    s = conv_shape(1, 1, 2, 2, 1, 5, 1, 1, 0, 1); /* kernel larger than the input */
    assert_int_equal(kiln_conv2d(&s, buf, buf, NULL, buf, NULL, 1), KILN_ERR_SHAPE);
    assert_int_equal(kiln_conv2d_out_hw(NULL, NULL, NULL), KILN_ERR_INVALID_ARG);
    /* The free function gives the same answer as the active table. */
    s = conv_shape(1, 1, 3, 3, 1, 3, 1, 1, 1, 1);
    float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, y[9];
    void *ws = kcheck_workspace(kiln_conv2d_workspace_size(&s, 1));
    float *packed = kcheck_alloc(kiln_conv2d_packed_size(&s) / sizeof(float));
    kiln_conv2d_pack(&s, ones, packed);
    assert_int_equal(kiln_conv2d(&s, ones, packed, NULL, y, ws, 1), KILN_OK);
    assert_float_equal(y[4], 9, 1e-6);
    assert_float_equal(y[0], 4, 1e-6);
    free(ws);
    free(packed);
}

/* Random shapes over the grid the kernels must cover: odd channels, H/W
 * 1..57, kernels 1/3/5/7/11, strides 1-3, dilations, asymmetric pads,
 * groups and depthwise, batch 1 and 3. */
static void conv_grid_matches_ref(void **state)
{
    (void)state;
    kcheck_rng r = {0x9e3779b97f4a7c15ull};
    static const int ks[] = {1, 3, 5, 7, 11};
    int cases = kcheck_quick() ? 60 : 250, done = 0;
    double worst = 0.0;
    while (done < cases) {
        int k = ks[kcheck_int(&r, 0, 4)];
        int kind = kcheck_int(&r, 0, 3); /* 0 dense, 1 grouped, 2 depthwise, 3 1x1 */
        if (kind == 3) k = 1;
        int cin = kcheck_int(&r, 1, 19), cout = kcheck_int(&r, 1, 21), groups = 1;
        if (kind == 1) {
            groups = kcheck_int(&r, 2, 4);
            cin = groups * kcheck_int(&r, 1, 5);
            cout = groups * kcheck_int(&r, 1, 5);
        } else if (kind == 2) {
            groups = cin = kcheck_int(&r, 1, 37);
            cout = cin * (kcheck_int(&r, 0, 3) ? 1 : 2);
            k = kcheck_int(&r, 0, 2) ? 3 : k;
        }
        int stride = kcheck_int(&r, 1, 3), dil = kcheck_int(&r, 0, 3) ? 1 : 2;
        int h = kcheck_int(&r, 1, 57), w = kcheck_int(&r, 1, 57);
        int pmax = k / 2 + 1;
        kiln_conv2d_shape s = {kcheck_int(&r, 0, 4) ? 1 : 3,
                               cin,
                               h,
                               w,
                               cout,
                               k,
                               k,
                               stride,
                               kcheck_int(&r, 0, 1) ? stride : kcheck_int(&r, 1, 3),
                               dil,
                               dil,
                               kcheck_int(&r, 0, pmax),
                               kcheck_int(&r, 0, pmax),
                               kcheck_int(&r, 0, pmax),
                               kcheck_int(&r, 0, pmax),
                               groups};
        if (kind == 3 && kcheck_int(&r, 0, 1)) s.pad_t = s.pad_l = s.pad_b = s.pad_r = 0;
        if (kiln_conv2d_out_hw(&s, NULL, NULL) != KILN_OK) continue;
        double macs = (double)conv_out_count(&s) * (cin / groups) * k * k;
        if (macs > 4e6) continue;
        char name[160];
        snprintf(name, sizeof name, "grid n%d c%d->%d %dx%d k%d s%d,%d d%d p%d%d%d%d g%d", s.n, cin,
                 cout, h, w, k, s.stride_h, s.stride_w, dil, s.pad_t, s.pad_l, s.pad_b, s.pad_r,
                 groups);
        double e = check_conv(name, &s, kcheck_int(&r, 0, 19), &r);
        if (e > worst) worst = e;
        done++;
    }
    printf("# conv grid: %d shapes, worst nmse %.3g\n", done, worst);
}

/* Depthwise 3x3 (the SIMD path's shape) at every width 1..40 and strides 1
 * and 2, so each row tail length is seen. */
static void conv_depthwise3x3_tails(void **state)
{
    (void)state;
    kcheck_rng r = {7};
    int step = kcheck_quick() ? 3 : 1;
    for (int w = 1; w <= 40; w += step)
        for (int stride = 1; stride <= 2; stride++) {
            kiln_conv2d_shape s = conv_shape(1, 5, 2 + w % 7, w, 5, 3, stride, 1, 1, 5);
            if (w % 3 == 0) s.pad_r = 0;
            if (kiln_conv2d_out_hw(&s, NULL, NULL) != KILN_OK) continue;
            check_conv("dw3x3 tail", &s, w, &r);
        }
    /* Stride 2 with 48 and more output columns takes the split even/odd
     * row path: every tail from 48 to 72 columns, pads 0/1 on each side. */
    for (int w = 94; w <= 146; w += step) {
        kiln_conv2d_shape s = conv_shape(1 + w % 2, 3, 3 + w % 6, w, 3, 3, 2, 1, 1, 3);
        s.pad_l = (w / 2) % 2;
        s.pad_r = (w / 4) % 2;
        s.pad_t = w % 3 == 0 ? 0 : 1;
        if (kiln_conv2d_out_hw(&s, NULL, NULL) != KILN_OK) continue;
        check_conv("dw3x3/2 wide", &s, w, &r);
    }
}

/* Convs with 1-3 input channels (a network's first layer; the SIMD
 * tables' direct path at stride 1): every output width 1..40 (row tails,
 * one and two vectors), asymmetric pads, output channels around the block
 * of 8, batch 3, every epilogue; then the small nets' own first layers and
 * one big enough to be split over threads. */
static void conv_few_input_channels_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {41};
    static const int couts[] = {1, 7, 8, 9, 17};
    int step = kcheck_quick() ? 3 : 1;
    for (int w = 1; w <= 40; w += step) {
        int k = w % 2 ? 3 : 5, c_in = 1 + w % 3;
        kiln_conv2d_shape s =
            conv_shape(w % 4 ? 1 : 3, c_in, 1 + w % 9, w, couts[w % 5], k, 1, 1, w % 3, 1);
        s.pad_l = (w / 3) % 3;
        if (kiln_conv2d_out_hw(&s, NULL, NULL) != KILN_OK) continue;
        check_conv("few input channels", &s, w, &r);
    }
    kiln_conv2d_shape named[] = {
        conv_shape(1, 1, 28, 28, 32, 5, 1, 1, 2, 1), /* LeNet conv1 */
        conv_shape(1, 1, 28, 28, 32, 3, 1, 1, 1, 1), /* MNIST CNN conv1 */
        conv_shape(1, 3, 32, 32, 32, 3, 1, 1, 1, 1), /* CIFAR-10 CNN conv1 */
        conv_shape(3, 3, 32, 32, 32, 5, 1, 1, 2, 1), /* 7.4M MACs: two threads */
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        for (int variant = 0; variant < 20; variant += 5)
            check_conv("few input channels, named", &named[i], variant, &r);
}

/* Convs of up to 32 input channels whose output rows are one vector
 * (8-16 columns: on AVX-512 the direct conv's three-row tile, elsewhere
 * the turned-around GEMM or Winograd): output widths 8 to 16, heights that
 * leave 0-2 rows after the tiles of three, output channels around the
 * block of 8, kernels 3 to 7, asymmetric pads, batch 3, every epilogue;
 * weights that fit the stack at once (the MNIST CNN's conv2) and that do
 * not (LeNet's, 800 taps x 64 channels); two threads. */
static void conv_direct_rows_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {59};
    static const int couts[] = {7, 8, 9, 17, 64};
    int step = kcheck_quick() ? 3 : 1;
    for (int i = 0; i < 27; i += step) {
        int k = 3 + 2 * (i % 3), w = 8 + i % 9, h = 3 + i % 7;
        kiln_conv2d_shape s =
            conv_shape(i % 4 == 3 ? 3 : 1, 4 + 7 * (i % 5), h + k - 1 - 2 * (k / 2),
                       w + k - 1 - 2 * (k / 2), couts[i % 5], k, 1, 1, k / 2, 1);
        if (i % 2) {
            s.pad_l = 0;
            s.w_in += k / 2;
        }
        int ho, wo;
        assert_int_equal(kiln_conv2d_out_hw(&s, &ho, &wo), KILN_OK);
        assert_int_equal(ho, h);
        assert_int_equal(wo, w);
        check_conv("direct rows", &s, i, &r);
    }
    kiln_conv2d_shape named[] = {
        conv_shape(1, 32, 14, 14, 64, 3, 1, 1, 1, 1), /* MNIST CNN conv2 */
        conv_shape(8, 32, 14, 14, 64, 3, 1, 1, 1, 1), /* its batch of 8 (server rounds) */
        conv_shape(1, 32, 14, 14, 64, 5, 1, 1, 2, 1), /* LeNet conv2: two threads */
        conv_shape(1, 32, 16, 16, 64, 3, 1, 1, 1, 1), /* CIFAR-10 CNN 16x16 conv */
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        for (int variant = (int)i; variant < 20; variant += 4)
            check_conv("direct rows, named", &named[i], variant, &r);
}

/* The direct conv at stride 2 for two or three input channels (on
 * column-parity planes; ResNet50's stem): kernels 3 to 11, even ones too,
 * output rows that end mid-vector and on a vector, asymmetric pads,
 * output channels off the blocks of 8, batch 3, every epilogue. */
static void conv_direct_stride2_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {59};
    static const int ks[] = {3, 4, 5, 7, 11}, couts[] = {1, 7, 8, 9, 17, 64};
    int step = kcheck_quick() ? 3 : 1;
    for (int i = 0; i < 30; i += step) {
        int k = ks[i % 5], c_in = 2 + i % 2, pad = i % 4 < 3 ? i % 4 : k / 2;
        kiln_conv2d_shape s = conv_shape(i % 7 == 6 ? 3 : 1, c_in, 9 + i % 11, 17 + 2 * i,
                                         couts[i % 6], k, 2, 1, pad, 1);
        s.pad_r = (i / 2) % 3;
        s.pad_b = (i / 3) % 2;
        check_conv("direct stride 2", &s, i, &r);
    }
    kiln_conv2d_shape stem = conv_shape(1, 3, 224, 224, 64, 7, 2, 1, 3, 1);
    for (int variant = 0; variant < 20; variant += kcheck_quick() ? 9 : 4)
        check_conv("direct stride 2, stem", &stem, variant, &r);
}

/* Stride-2 convs with few input channels and 96 to 1024 taps (ResNet's
 * 7x7/2 stem) on the row path that broadcasts the input from padded
 * planes (stem_i in simd/f32-stem.inc.c): output rows that end
 * mid-tile (31, 24, 17 columns) and on a tile (28), asymmetric pads,
 * 32 to 96 output channels, 4 input channels at 5x5 (100 taps), batch 2,
 * every epilogue, 1 and 2 threads. */
static void conv_stem_rows_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {61};
    kiln_conv2d_shape t[] = {
        conv_shape(1, 3, 60, 62, 32, 7, 2, 1, 3, 1), /* 30 x 31 */
        conv_shape(2, 4, 45, 47, 64, 5, 2, 1, 2, 1), /* 23 x 24, batch 2 */
        conv_shape(1, 3, 33, 56, 96, 7, 2, 1, 3, 1), /* 17 x 28 */
        conv_shape(1, 3, 40, 38, 32, 7, 2, 1, 2, 1), /* asymmetric pads below */
    };
    t[3].pad_r = 4;
    t[3].pad_b = 1;
    const int step = kcheck_quick() ? 5 : 1;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        for (int variant = (int)i; variant < 20; variant += step)
            check_conv("stem rows", &t[i], variant, &r);
}

/* The turned-around GEMM (kiln__conv2d_is_gemm_t()): output planes of 1
 * to 56 positions (slivers of 14 rows: every remainder), output channels
 * that fill one or several 32-wide panels, kernels 1, 3 and 5, strides 1
 * to 3, pads, dilation 2, batch 3, every epilogue; 1x1 convs whose tiles
 * read the input directly (7, 14, 21, 35, 42, 49, 56 positions; K over
 * several depth blocks, batch 2 and 3); strided 1x1 convs packed (ResNet50's
 * layer3 downsample, strides 3 x 2). */
static void conv_gemm_t_matches_ref(void **state)
{
    (void)state;
    kcheck_rng r = {43};
    int done = 0, step = kcheck_quick() ? 3 : 1;
    for (int i = 0; i < 48; i += step) {
        int hw = 1 + i % 7, k = i % 3 == 0 ? 1 : i % 3 == 1 ? 3 : 5;
        int stride = 1 + i % 3, pad = k / 2, c_out = 32 * (1 + i % 3);
        int dil = i % 7 == 3 ? 2 : 1;
        /* the input that gives an hw x hw output */
        int in = (hw - 1) * stride + dil * (k - 1) + 1 - 2 * pad;
        if (in < 1) continue;
        kiln_conv2d_shape s = conv_shape(i % 5 == 4 ? 3 : 1, (k == 1 ? 64 : 8) + 5 * (i % 4), in,
                                         in + i % 2, c_out, k, stride, dil, pad, 1);
        assert_true(kiln__conv2d_is_gemm_t(&s));
        check_conv("gemm_t", &s, i, &r);
        done++;
    }
    kiln_conv2d_shape named[] = {
        conv_shape(1, 512, 5, 5, 512, 3, 1, 1, 1, 1),     /* 3x3 @5: 9 tiles, no Winograd */
        conv_shape(1, 2048, 7, 7, 512, 1, 1, 1, 0, 1),    /* layer4 1x1 in */
        conv_shape(3, 512, 7, 7, 2048, 1, 1, 1, 0, 1),    /* layer4 1x1 out, batch 3 */
        conv_shape(1, 1024, 14, 14, 2048, 1, 2, 1, 0, 1), /* layer4 downsample */
        conv_shape(1, 1024, 14, 14, 256, 1, 1, 1, 0, 1),  /* layer3 1x1, 196 positions */
        conv_shape(2, 700, 5, 7, 96, 1, 1, 1, 0, 1),      /* 1x1 read directly: 35 = 14 + 14 + 7 */
        conv_shape(1, 512, 28, 28, 1024, 1, 2, 1, 0, 1),  /* layer3 downsample */
        conv_shape(2, 70, 27, 13, 96, 1, 2, 1, 0, 1),     /* 9x7 at strides 3 x 2 below */
        conv_shape(1, 256, 28, 28, 256, 3, 2, 1, 1, 1),   /* layer3 3x3/2 */
        conv_shape(3, 13, 15, 13, 64, 3, 1, 2, 1, 1),     /* 11x9, dilation 2, batch 3 */
        conv_shape(4, 30, 14, 14, 64, 3, 1, 1, 1, 1),     /* MNIST-like, c_in off the 16s */
    };
    named[7].stride_h = 3;
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        assert_true(kiln__conv2d_is_gemm_t(&named[i]));
        assert_false(kiln__conv2d_is_winograd(&named[i]));
        check_conv("gemm_t, named", &named[i], (int)i * 5 + 3, &r);
    }
    printf("# gemm_t: %d grid shapes and %zu named\n", done, sizeof named / sizeof named[0]);
}

/* Strided convs with up to 784 output positions on the turned-around GEMM
 * (the size of ResNet50's l2 3x3/2, 28x28, which with its 128 input
 * channels takes the turned-around Winograd), strides 2 and 3 (3: the scalar gather),
 * odd sizes, asymmetric pads, kernels 3 and 5, batch 3, every epilogue;
 * and strided 1x1 convs without padding (ResNet50's downsampling
 * shortcuts) run as pointwise convs on the subsampled input: strides 2
 * and 3 (also unequal), odd sizes, positions that leave a partial panel,
 * output channels off the slivers and panels, batch 3. */
static void conv_strided_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {53};
    kiln_conv2d_shape t[] = {
        conv_shape(1, 13, 56, 56, 32, 3, 2, 1, 1, 1),   /* 28x28 */
        conv_shape(3, 8, 41, 37, 64, 3, 2, 1, 1, 1),    /* 21x19, batch 3 */
        conv_shape(1, 5, 50, 47, 96, 5, 2, 1, 2, 1),    /* 25x24 */
        conv_shape(1, 9, 60, 58, 32, 3, 3, 1, 1, 1),    /* 20x20, stride 3 */
        conv_shape(1, 120, 56, 56, 128, 3, 2, 1, 1, 1), /* ResNet50 l2 3x3/2's size */
        conv_shape(1, 9, 33, 35, 32, 3, 2, 1, 0, 1),    /* asymmetric pads below */
    };
    t[5].pad_t = 2;
    t[5].pad_r = 1;
    int n = (int)(sizeof t / sizeof t[0]), step = kcheck_quick() ? 4 : 1;
    for (int i = 0; i < n; i++) {
        assert_true(kiln__conv2d_is_gemm_t(&t[i]));
        for (int variant = i; variant < 20; variant += 3 * step)
            check_conv("gemm_t, strided", &t[i], variant, &r);
    }
    kiln_conv2d_shape p[] = {
        conv_shape(1, 256, 56, 56, 512, 1, 2, 1, 0, 1), /* ResNet50 l2 downsample */
        conv_shape(3, 19, 29, 31, 45, 1, 2, 1, 0, 1),   /* 15x16, batch 3 */
        conv_shape(1, 17, 40, 43, 30, 1, 3, 1, 0, 1),   /* 14x15, stride 3 */
        conv_shape(1, 33, 57, 57, 70, 1, 2, 1, 0, 1),   /* 29x29 */
        conv_shape(1, 8, 23, 61, 14, 1, 2, 1, 0, 1),    /* stride 2 x 3 below */
    };
    p[4].stride_w = 3;
    n = (int)(sizeof p / sizeof p[0]);
    for (int i = 0; i < n; i++) {
        assert_false(kiln__conv2d_is_gemm_t(&p[i]));
        for (int variant = i; variant < 20; variant += 3 * step)
            check_conv("1x1 strided", &p[i], variant, &r);
    }
}

/* The turned-around GEMM on slivers of 7 rows (output planes whose N
 * positions leave 1 to 7 rows over a multiple of 14, like the 7x7 stage's
 * 49): pairs of slivers and an odd last one, a last sliver with 1 or 6
 * rows, K over several depth blocks with a short last one, panel counts
 * odd and even, stride 3 with dilation 2, batch 3, a plane split by rows
 * over two threads, every epilogue on one and two threads. ResNet50's
 * 7x7 layers are among conv_gemm_t_matches_ref's named shapes. */
static void conv_gemm_t_half_slivers_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {53};
    kiln_conv2d_shape shapes[] = {
        conv_shape(3, 37, 7, 7, 160, 3, 1, 1, 1, 1),   /* 49 positions, K 333, batch 3 */
        conv_shape(1, 70, 9, 7, 64, 3, 2, 1, 1, 1),    /* 5x4: 20 = 14 + 6 */
        conv_shape(1, 400, 13, 13, 32, 1, 1, 1, 0, 1), /* 169 = 24 * 7 + 1 */
        conv_shape(1, 60, 3, 2, 96, 3, 1, 1, 1, 1),    /* 6 positions: one short sliver */
        conv_shape(1, 20, 16, 22, 64, 3, 3, 2, 1, 1),  /* 5x7, stride 3, dilation 2 */
    };
    int n = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < n; i++) {
        int h, w;
        assert_int_equal(kiln_conv2d_out_hw(&shapes[i], &h, &w), KILN_OK);
        assert_true(kiln__conv2d_is_gemm_t(&shapes[i]));
        assert_true(h * w % 14 >= 1 && h * w % 14 <= 7);
        for (int variant = 0; variant < 20; variant += kcheck_quick() ? 3 : 1)
            check_conv("gemm_t, 7-row slivers", &shapes[i], variant, &r);
    }
}

/* Convs with a short K over planes too large for the padded-plane packer
 * (more than 8192 floats), like ResNet50's stem: B packed a panel at a
 * time. Strides 1 and 2, asymmetric pads, output channels that are and
 * are not whole slivers, batch 3, every epilogue. */
static void conv_fused_panels_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {47};
    kiln_conv2d_shape shapes[] = {
        conv_shape(1, 3, 100, 100, 17, 3, 1, 1, 1, 1), conv_shape(1, 3, 97, 131, 64, 7, 2, 1, 3, 1),
        conv_shape(3, 2, 95, 90, 8, 5, 2, 1, 2, 1),    conv_shape(1, 5, 92, 93, 29, 3, 2, 1, 0, 1),
        conv_shape(1, 3, 224, 224, 64, 7, 2, 1, 3, 1), /* the stem */
    };
    shapes[3].pad_l = 2;
    shapes[3].pad_b = 1;
    int n = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < n; i++)
        for (int variant = 0; variant < 20; variant += kcheck_quick() ? 7 : 3)
            check_conv("fused panels", &shapes[i], variant + i, &r);
}

/* y written over its own residual (kiln_conv2d_residual_in_place_ok()):
 * ResNet50's 1x1 convs with a residual on every path that admits it
 * (the GEMM from NCHW at 56x56 and at 28x28, whose last 16 columns go
 * through a packed panel; the turned-around GEMM at 14x14 and 7x7; the
 * subsampled 1x1/2), batch 2, 1 and 2 threads, against ref with y apart.
 * Each optimised table must admit them, and the scalar reference every
 * shape. Writing a row's output before reading all its residual (the
 * direct conv's whole last vector) fails it. */
static void conv_residual_in_place_matches_ref(void **state)
{
    (void)state;
    kcheck_rng r = {53};
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    kiln_conv2d_shape shapes[] = {
        conv_shape(2, 64, 56, 56, 256, 1, 1, 1, 0, 1),
        conv_shape(2, 128, 28, 28, 512, 1, 1, 1, 0, 1),
        conv_shape(2, 256, 14, 14, 1024, 1, 1, 1, 0, 1),
        conv_shape(2, 512, 7, 7, 2048, 1, 1, 1, 0, 1),
        conv_shape(2, 256, 56, 56, 512, 1, 2, 1, 0, 1),
    };
    assert_true(kiln_kernels_for(KILN_ISA_REF)->conv2d_residual_in_place_ok(&shapes[0]));
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const kiln_conv2d_shape *s = &shapes[i];
        size_t nx = conv_in_count(s), ny = conv_out_count(s), nw = conv_w_count(s);
        float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw), *bias = kcheck_alloc(s->c_out);
        float *res = kcheck_alloc(ny);
        kcheck_fill(&r, x, nx, -1, 1);
        kcheck_fill(&r, w, nw, -1, 1);
        kcheck_fill(&r, bias, s->c_out, -1, 1);
        kcheck_fill(&r, res, ny, -1, 1);
        kiln_epilogue ep = {.bias = bias, .residual = res, .act = KILN_ACT_RELU};
        float *ref = run_conv(kiln_kernels_for(KILN_ISA_REF), s, x, w, &ep, 1);
        float *packed = kcheck_alloc(kiln_conv2d_packed_size(s) / sizeof(float));
        kiln_conv2d_pack(s, w, packed);
        float *y = kcheck_alloc(ny);
        for (int k = 0; k < n_isas; k++)
            for (int threads = 1; threads <= 2; threads++) {
                if (!isas[k]->conv2d_residual_in_place_ok(s))
                    fail_msg("%s: shape %zu not admitted in place", kiln_isa_name(isas[k]->isa), i);
                memcpy(y, res, ny * sizeof(float));
                kiln_epilogue in_place = ep;
                in_place.residual = y;
                void *ws = kcheck_workspace(kiln_conv2d_workspace_size(s, threads));
                assert_int_equal(isas[k]->conv2d(s, x, packed, &in_place, y, ws, threads), KILN_OK);
                free(ws);
                double e = kcheck_nmse(y, ref, ny);
                if (!(e <= KCHECK_NMSE))
                    fail_msg("in place on %s, shape %zu, %d threads: nmse %g",
                             kiln_isa_name(isas[k]->isa), i, threads, e);
            }
        free(y);
        free(packed);
        free(ref);
        free(x);
        free(w);
        free(bias);
        free(res);
    }
}

/* A model packed by version 3 (packed A where version 4 has W^T panels),
 * or by version 4 for a strided 3x3 conv of 197 to 784 positions (packed A
 * where version 5 has W^T panels), must not be taken for the current
 * version: session.c repacks a layer whose stored size differs from
 * kiln_conv2d_packed_size(), so the sizes must differ. */
static void conv_gemm_t_packed_size_differs_from_v3(void **state)
{
    (void)state;
    for (int c_out = 32; c_out <= 2048; c_out += 32)
        for (int c_in = 16; c_in <= 512; c_in += 31)
            for (int strided = 0; strided < 2; strided++) {
                kiln_conv2d_shape s = strided ? conv_shape(1, c_in, 56, 56, c_out, 3, 2, 1, 1, 1)
                                              : conv_shape(1, c_in, 7, 7, c_out, 1, 1, 1, 0, 1);
                if (!kiln__conv2d_is_gemm_t(&s)) continue;
                const int K = c_in * s.k_h * s.k_w;
                size_t prefix =
                    ((size_t)c_out * K * sizeof(float) + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN;
                size_t packed_a =
                    prefix + kiln__gemm_packed_a_floats(c_out, K) * sizeof(float) + KILN_ALIGN;
                assert_true(kiln_conv2d_packed_size(&s) != packed_a);
            }
}

/* The Winograd F(2x2, 3x3) path: odd and even output sizes (half tiles
 * at the bottom and right), asymmetric pads up to 2, batch 3, and tile
 * rows both shorter and longer than a vector (the larger of these shapes
 * take F(4x4, 3x3), see kiln__winograd_tile(), tested below). */
static void conv_winograd3x3_matches_ref(void **state)
{
    (void)state;
    kcheck_rng r = {23};
    int cases = kcheck_quick() ? 12 : 40, done = 0;
    double worst = 0.0;
    while (done < cases) {
        kiln_conv2d_shape s = {kcheck_int(&r, 0, 3) ? 1 : 3,
                               kcheck_int(&r, 4, 19),
                               kcheck_int(&r, 5, 30),
                               kcheck_int(&r, 5, 57),
                               kcheck_int(&r, 1, 23),
                               3,
                               3,
                               1,
                               1,
                               1,
                               1,
                               kcheck_int(&r, 0, 2),
                               kcheck_int(&r, 0, 2),
                               kcheck_int(&r, 0, 2),
                               kcheck_int(&r, 0, 2),
                               1};
        if (!kiln__conv2d_is_winograd(&s)) continue;
        char name[96];
        snprintf(name, sizeof name, "winograd n%d c%d->%d %dx%d p%d%d%d%d", s.n, s.c_in, s.c_out,
                 s.h_in, s.w_in, s.pad_t, s.pad_l, s.pad_b, s.pad_r);
        double e = check_conv(name, &s, kcheck_int(&r, 0, 19), &r);
        if (e > worst) worst = e;
        done++;
    }
    printf("# winograd: %d shapes, worst nmse %.3g\n", done, worst);
}

/* The Winograd F(4x4, 3x3) path (the shapes kiln__winograd_tile() gives
 * 4): output sizes of every residue mod 4 (tiles cut short at the bottom
 * and right), odd channel counts, asymmetric pads (up to 5 columns, so
 * whole padded groups of four), batch 3, and tile rows shorter and longer
 * than a vector (7 to 20 tiles across). */
static void conv_winograd4x4_tails_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {44};
    int cases = kcheck_quick() ? 8 : 32;
    double worst = 0.0;
    for (int i = 0; i < cases; i++) {
        /* Case i: output height i mod 4 and width i + 1 mod 4 (each cuts
         * 0 to 3 rows/columns off the last tiles), redrawn until F(4x4)
         * takes the shape. */
        kiln_conv2d_shape s;
        do {
            int h_out = kcheck_int(&r, 26, 60), w_out = kcheck_int(&r, 26, 76);
            h_out += (i % 4 - h_out % 4 + 4) % 4;
            w_out += ((i + 1) % 4 - w_out % 4 + 4) % 4;
            int pt = kcheck_int(&r, 0, 2), pl = kcheck_int(&r, 0, 5);
            int pb = kcheck_int(&r, 0, 2), pr = kcheck_int(&r, 0, 5);
            s = (kiln_conv2d_shape){kcheck_int(&r, 0, 3) ? 1 : 3,
                                    kcheck_int(&r, 4, 19),
                                    h_out + 2 - pt - pb,
                                    w_out + 2 - pl - pr,
                                    kcheck_int(&r, 1, 23),
                                    3,
                                    3,
                                    1,
                                    1,
                                    1,
                                    1,
                                    pt,
                                    pl,
                                    pb,
                                    pr,
                                    1};
        } while (kiln__winograd_tile(&s) != 4);
        char name[96];
        snprintf(name, sizeof name, "winograd4 n%d c%d->%d %dx%d p%d%d%d%d", s.n, s.c_in, s.c_out,
                 s.h_in, s.w_in, s.pad_t, s.pad_l, s.pad_b, s.pad_r);
        double e = check_conv(name, &s, kcheck_int(&r, 0, 19), &r);
        if (e > worst) worst = e;
    }
    printf("# winograd F(4x4): %d shapes, worst nmse %.3g\n", cases, worst);
}

/* The Winograd path on two threads in bands of tile rows (each thread its
 * own tiles through all three steps) where the plane makes at least one
 * band per thread: ResNet50's @28 (F(4x4), 2 bands of 4 and 3 tile rows)
 * and @14 (F(2x2), the same) geometry with fewer channels (c_out not a
 * multiple of 32, which the turned-around Winograd does not take), and a 24x24
 * plane of 6 bands taken from both ends of the queue; every epilogue.
 * Large enough (over WINOGRAD_MIN_PARALLEL_FLOPS) to run on two threads. */
static void conv_winograd_bands_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {61};
    const kiln_conv2d_shape shapes[] = {
        {1, 64, 28, 28, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        {1, 144, 14, 14, 80, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        {2, 64, 24, 24, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
    };
    int runs = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        assert_true(kiln__conv2d_is_winograd(&shapes[i]));
        for (int v = 1; v < 40; v += 6) { /* odd: bias and two threads */
            char name[96];
            snprintf(name, sizeof name, "winograd bands n%d c%d->%d %dx%d", shapes[i].n,
                     shapes[i].c_in, shapes[i].c_out, shapes[i].h_in, shapes[i].w_in);
            check_conv(name, &shapes[i], v, &r);
            runs++;
        }
    }
    printf("# winograd bands: %d runs on %d thread(s)\n", runs, kcheck_threads(2));
}

/* Winograd turned around (kiln__conv2d_is_winograd_t()): the MNIST CNN's
 * conv2 at batch 1, 4 and 8 and the CIFAR-10 CNN's 16x16 and 8x8 convs;
 * then odd output sizes (a last tile cut short at the bottom, right or
 * both), pads 0 to 2 on each side, tiny planes (one tile; a batch whose
 * tiles leave a short last sliver), c_in 16 to 128, c_out 32 to 160,
 * batch 3; the wide shapes (c_in over 128 up to 512, 16 tiles or more:
 * ResNet50's 14x14 and 7x7 stages, a batch of them, odd planes; split
 * by output channels on two threads);
 * every epilogue, on one and two threads (check_conv() picks 2 for odd
 * variants: bands, or output channel groups when the tiles are few or
 * the conv wide); F(4x4) (more than 256 positions: ResNet50's @56 and
 * @28 3x3 convs, tiles cut short at the bottom and right, batches). */
static void conv_winograd_t_matches_ref(void **state)
{
    (void)state;
    kcheck_rng r = {61};
    kiln_conv2d_shape named[] = {
        conv_shape(1, 32, 14, 14, 64, 3, 1, 1, 1, 1),   /* MNIST CNN conv2 */
        conv_shape(4, 32, 14, 14, 64, 3, 1, 1, 1, 1),   /* the server's rounds */
        conv_shape(8, 32, 14, 14, 64, 3, 1, 1, 1, 1),   /* max_batch 8 */
        conv_shape(1, 32, 16, 16, 64, 3, 1, 1, 1, 1),   /* CIFAR-10 CNN */
        conv_shape(1, 64, 8, 8, 128, 3, 1, 1, 1, 1),    /* CIFAR-10 CNN */
        conv_shape(2, 128, 8, 8, 32, 3, 1, 1, 1, 1),    /* deepest c_in */
        conv_shape(3, 16, 13, 11, 96, 3, 1, 1, 1, 1),   /* odd: 13x11 */
        conv_shape(1, 48, 2, 2, 32, 3, 1, 1, 1, 1),     /* one tile */
        conv_shape(3, 16, 3, 3, 160, 3, 1, 1, 0, 1),    /* 1x1 out, 3 tiles */
        conv_shape(1, 16, 16, 16, 32, 3, 1, 1, 0, 1),   /* 14x14, no pad */
        conv_shape(1, 256, 14, 14, 256, 3, 1, 1, 1, 1), /* ResNet50 layer3 */
        conv_shape(2, 160, 12, 12, 64, 3, 1, 1, 1, 1),  /* wide, batch 2 */
        conv_shape(1, 192, 11, 13, 96, 3, 1, 1, 1, 1),  /* wide, odd: 6x7 tiles */
        conv_shape(1, 512, 7, 7, 512, 3, 1, 1, 1, 1),   /* ResNet50 layer4: 16 tiles */
        conv_shape(2, 144, 8, 8, 64, 3, 1, 1, 1, 1),    /* wide, 16 tiles, batch 2 */
        conv_shape(1, 272, 14, 14, 288, 3, 1, 1, 1, 1), /* wide, over 256 */
        conv_shape(1, 128, 56, 56, 128, 3, 2, 1, 1, 1), /* ResNet50 layer2.0, stride 2 */
        conv_shape(1, 64, 28, 28, 256, 3, 2, 1, 1, 1),  /* stride 2, 256 out */
        conv_shape(3, 32, 15, 17, 64, 3, 2, 1, 1, 1),   /* stride 2, odd: 8x9 out */
        conv_shape(2, 16, 9, 9, 32, 3, 2, 1, 0, 1),     /* stride 2, no pad: 4x4 */
        conv_shape(1, 48, 3, 3, 32, 3, 2, 1, 1, 1),     /* stride 2, one tile */
        conv_shape(1, 64, 56, 56, 64, 3, 1, 1, 1, 1),   /* F(4x4): ResNet50 layer1 */
        conv_shape(1, 128, 28, 28, 128, 3, 1, 1, 1, 1), /* F(4x4): ResNet50 layer2 */
        conv_shape(2, 48, 19, 18, 96, 3, 1, 1, 1, 1),   /* F(4x4), odd: 3 and 2 short */
        conv_shape(3, 64, 17, 21, 32, 3, 1, 1, 0, 1),   /* F(4x4), no pad: 15x19 */
        conv_shape(1, 128, 29, 30, 256, 3, 1, 1, 1, 1), /* F(4x4), 256 out */
    };
    int n = (int)(sizeof named / sizeof named[0]), step = kcheck_quick() ? 3 : 1, f4 = 0;
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        assert_true(kiln__conv2d_is_winograd_t(&named[i]));
        f4 += kiln__winograd_t_ne(&named[i]) == 36;
        assert_false(kiln__conv2d_is_winograd(&named[i]));
        assert_false(kiln__conv2d_is_gemm_t(&named[i]));
        /* the wide and large shapes' reference convs are the slow ones:
         * fewer variants */
        const int vstep = named[i].c_in > 128 || named[i].h_in > 32 ? 5 * step : step;
        for (int variant = i % 2; variant < 20; variant += vstep) {
            char name[96];
            snprintf(name, sizeof name, "winograd_t n%d c%d->%d %dx%d", named[i].n, named[i].c_in,
                     named[i].c_out, named[i].h_in, named[i].w_in);
            double e = check_conv(name, &named[i], variant, &r);
            if (e > worst) worst = e;
        }
    }
    assert_int_equal(f4, 5); /* the last five named: F(4x4) */
    /* stride 2 with asymmetric pads: TensorFlow's SAME (one more row and
     * column at the bottom and right) and an odd mix */
    kiln_conv2d_shape asym[] = {conv_shape(1, 32, 16, 16, 64, 3, 2, 1, 0, 1),
                                conv_shape(2, 16, 13, 11, 32, 3, 2, 1, 0, 1)};
    asym[0].pad_b = asym[0].pad_r = 1;
    asym[1].pad_t = 2;
    asym[1].pad_l = 1;
    asym[1].pad_r = 2;
    for (int i = 0; i < 2; i++) {
        assert_true(kiln__conv2d_is_winograd_t(&asym[i]));
        for (int variant = i; variant < 20; variant += 3 * step) {
            double e = check_conv("winograd_t stride 2, asymmetric pads", &asym[i], variant, &r);
            if (e > worst) worst = e;
        }
    }
    int cases = kcheck_quick() ? 12 : 40, done = 0;
    while (done < cases) {
        int pt = kcheck_int(&r, 0, 2), pl = kcheck_int(&r, 0, 2);
        int pb = kcheck_int(&r, 0, 2), pr = kcheck_int(&r, 0, 2);
        kiln_conv2d_shape s = {kcheck_int(&r, 0, 3) ? 1 : 3,
                               16 * kcheck_int(&r, 1, done % 4 ? 8 : 16),
                               kcheck_int(&r, 3, 17),
                               kcheck_int(&r, 3, 17),
                               32 * kcheck_int(&r, 1, 5),
                               3,
                               3,
                               1,
                               1,
                               1,
                               1,
                               pt,
                               pl,
                               pb,
                               pr,
                               1};
        if (!kiln__conv2d_is_winograd_t(&s)) continue;
        char name[96];
        snprintf(name, sizeof name, "winograd_t n%d c%d->%d %dx%d p%d%d%d%d", s.n, s.c_in, s.c_out,
                 s.h_in, s.w_in, s.pad_t, s.pad_l, s.pad_b, s.pad_r);
        double e = check_conv(name, &s, kcheck_int(&r, 0, 19), &r);
        if (e > worst) worst = e;
        done++;
    }
    /* off the path: c_in not a multiple of 16, c_out not of 32, too many
     * positions, wide with too few tiles (6x6 and 5x5: 9), c_in or c_out
     * over 512; at stride 2 ResNet50's layer3.0 and layer4.0 (256 and 512
     * input channels), too many positions, stride 3, dilation 2 */
    kiln_conv2d_shape off[] = {
        conv_shape(1, 30, 14, 14, 64, 3, 1, 1, 1, 1),
        conv_shape(1, 32, 14, 14, 48, 3, 1, 1, 1, 1),
        conv_shape(1, 32, 17, 17, 64, 3, 1, 1, 1, 1),
        conv_shape(1, 144, 6, 6, 64, 3, 1, 1, 1, 1),
        conv_shape(1, 512, 5, 5, 512, 3, 1, 1, 1, 1),
        conv_shape(1, 528, 7, 7, 64, 3, 1, 1, 1, 1),
        conv_shape(1, 256, 14, 14, 544, 3, 1, 1, 1, 1),
        conv_shape(1, 512, 14, 14, 512, 3, 2, 1, 1, 1),
        conv_shape(1, 256, 28, 28, 256, 3, 2, 1, 1, 1),
        conv_shape(1, 32, 58, 58, 64, 3, 2, 1, 1, 1),
        conv_shape(1, 32, 14, 14, 64, 3, 3, 1, 1, 1),
        conv_shape(1, 32, 14, 14, 64, 3, 2, 2, 2, 1),
        conv_shape(1, 32, 56, 56, 64, 3, 1, 1, 1, 1),   /* F(4x4) from 48 input channels */
        conv_shape(1, 64, 57, 56, 64, 3, 1, 1, 1, 1),   /* F(4x4) up to 56x56 */
        conv_shape(1, 256, 28, 28, 256, 3, 1, 1, 1, 1), /* F(4x4) up to 128 input channels */
    };
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
        assert_false(kiln__conv2d_is_winograd_t(&off[i]));
    printf("# winograd_t: %d named shapes (%d F(4x4)) and %d drawn, worst nmse %.3g\n", n, f4, done,
           worst);
}

/* The server runs a round of requests as one batch and promises the same
 * bytes as one request alone: the turned-around Winograd path (the batch's
 * tiles share its GEMMs) gives each image of a batch of 4 exactly its
 * batch-1 output, on one thread and two, on every table. */
static void conv_winograd_t_batch_bit_identical(void **state)
{
    (void)state;
    kcheck_rng r = {67};
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    kiln_conv2d_shape s4 = conv_shape(4, 32, 14, 14, 64, 3, 1, 1, 1, 1), s1 = s4;
    s1.n = 1;
    assert_true(kiln__conv2d_is_winograd_t(&s4));
    size_t nx = conv_in_count(&s4), ny = conv_out_count(&s4), nw = conv_w_count(&s4);
    float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw), *bias = kcheck_alloc(64);
    kcheck_fill(&r, x, nx, -1, 1);
    kcheck_fill(&r, w, nw, -1, 1);
    kcheck_fill(&r, bias, 64, -1, 1);
    kiln_epilogue ep = {.bias = bias, .act = KILN_ACT_RELU};
    for (int i = 0; i < n_isas; i++)
        for (int threads = 1; threads <= 2; threads++) {
            float *y4 = run_conv(isas[i], &s4, x, w, &ep, threads);
            for (int b = 0; b < 4; b++) {
                float *y1 = run_conv(isas[i], &s1, x + b * nx / 4, w, &ep, threads);
                if (memcmp(y1, y4 + b * ny / 4, sizeof(float) * ny / 4) != 0)
                    fail_msg("winograd_t on %s, %d threads: image %d of 4 differs from batch 1",
                             kiln_isa_name(isas[i]->isa), threads, b);
                free(y1);
            }
            free(y4);
        }
    free(x);
    free(w);
    free(bias);
}

/* What check_fused_pool() runs on: one conv case's buffers. */
typedef struct fused_pool_case {
    const kiln_conv2d_shape *cs;
    const kiln_pool2d_shape *ps; /* the pool fused */
    const float *x, *packed;
    void *ws;
    float *y, *want, *got; /* got: np + 1 floats */
    size_t np, c;          /* pooled floats; the case's index */
} fused_pool_case;

/* The conv with epilogue ep on table k, stored into y; then with pool2
 * (or pool3) set either refused, where the table says it cannot fuse the
 * shape (ok == 0), or the very floats of the table's MaxPool of y,
 * writing nothing past them, and refused with a residual. Returns
 * whether it fused. */
static int check_fused_pool(const kiln_kernels *k, const fused_pool_case *f, kiln_epilogue ep,
                            int pool3, int ok, int threads)
{
    assert_int_equal(k->conv2d(f->cs, f->x, f->packed, &ep, f->y, f->ws, threads), KILN_OK);
    if (pool3)
        ep.pool3 = 1;
    else
        ep.pool2 = 1;
    if (!ok) {
        assert_int_equal(k->conv2d(f->cs, f->x, f->packed, &ep, f->got, f->ws, threads),
                         KILN_ERR_INVALID_ARG);
        return 0;
    }
    k->maxpool2d(f->ps, f->y, f->want, 1);
    f->got[f->np] = 12345.0f; /* nothing past the pooled output is written */
    assert_int_equal(k->conv2d(f->cs, f->x, f->packed, &ep, f->got, f->ws, threads), KILN_OK);
    if (memcmp(f->got, f->want, sizeof(float) * f->np) != 0)
        fail_msg("%s, case %zu, %d threads: the fused pool differs from conv + MaxPool",
                 kiln_isa_name(k->isa), f->c, threads);
    assert_true(f->got[f->np] == 12345.0f);
    ep.residual = f->y; /* with a residual, the pool is refused */
    assert_int_equal(k->conv2d(f->cs, f->x, f->packed, &ep, f->got, f->ws, threads),
                     KILN_ERR_INVALID_ARG);
    return 1;
}

/* kiln_epilogue.pool2: the conv with its 2x2/2 max pool fused gives the
 * very floats of the conv, stored, then the table's own MaxPool, on every
 * table (ref included) with each activation at 1 and 2 threads; where a table cannot pool a
 * shape (odd output sides, paths that do not store from L1) it says so in
 * conv2d_pool2_ok() and conv2d() refuses pool2. The small nets' first
 * convs (direct) and the MNIST CNN's conv2 (turned-around Winograd) must
 * take the fused path on every table. */
static void conv_pool2_matches_unfused(void **state)
{
    (void)state;
    kcheck_rng r = {71};
    const kiln_kernels *tables[KILN_ISA_COUNT_ + 1];
    int n = kcheck_isas(tables);
    tables[n++] = kiln_kernels_for(KILN_ISA_REF);
    static const struct {
        int n, c_in, h, w, c_out, k, pad, must; /* must: every table fuses it */
        int stride;
    } cases[] = {
        {1, 1, 28, 28, 32, 3, 1, 1, 1},  /* the MNIST CNN's conv1 */
        {2, 1, 28, 28, 32, 5, 2, 1, 1},  /* LeNet's conv1 */
        {1, 3, 32, 32, 32, 3, 1, 1, 1},  /* the CIFAR-10 CNN's conv1 */
        {3, 2, 20, 18, 13, 3, 0, 0, 1},  /* 18 x 16 out, 13 channels: partial blocks */
        {1, 3, 12, 22, 6, 3, 1, 0, 1},   /* 22 columns, 6 channels */
        {1, 1, 10, 34, 5, 3, 1, 0, 1},   /* 34 columns */
        {1, 32, 14, 14, 64, 5, 0, 0, 1}, /* LeNet's conv2: the rows tile */
        {1, 3, 19, 21, 9, 3, 1, 0, 1},   /* odd sides: never fused */
        {2, 32, 14, 14, 64, 3, 1, 1, 1}, /* the MNIST CNN's conv2 (Winograd) */
        {2, 16, 16, 16, 32, 3, 1, 0, 2}, /* 3x3/2: the turned-around GEMM */
        {1, 64, 9, 9, 64, 3, 1, 0, 1},   /* 9 x 9, odd: never fused */
    };
    static const kiln_act acts[] = {KILN_ACT_RELU, KILN_ACT_NONE, KILN_ACT_SIGMOID,
                                    KILN_ACT_LEAKY_RELU, KILN_ACT_CLIP};
    int fused = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kiln_conv2d_shape cs =
            conv_shape(cases[c].n, cases[c].c_in, cases[c].h, cases[c].w, cases[c].c_out,
                       cases[c].k, cases[c].stride, 1, cases[c].pad, 1);
        int h_out, w_out;
        assert_int_equal(kiln_conv2d_out_hw(&cs, &h_out, &w_out), KILN_OK);
        const kiln_pool2d_shape ps = {.n = cs.n,
                                      .c = cs.c_out,
                                      .h_in = h_out,
                                      .w_in = w_out,
                                      .k_h = 2,
                                      .k_w = 2,
                                      .stride_h = 2,
                                      .stride_w = 2,
                                      .dil_h = 1,
                                      .dil_w = 1};
        size_t nx = conv_in_count(&cs), ny = conv_out_count(&cs), nw = conv_w_count(&cs);
        size_t np = (size_t)cs.n * cs.c_out * (h_out / 2) * (w_out / 2);
        float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw), *bias = kcheck_alloc(cs.c_out);
        kcheck_fill(&r, x, nx, -1, 1);
        kcheck_fill(&r, w, nw, -1, 1);
        kcheck_fill(&r, bias, cs.c_out, -1, 1);
        float *packed = kcheck_alloc(kiln_conv2d_packed_size(&cs) / sizeof(float));
        kiln_conv2d_pack(&cs, w, packed);
        void *ws = kcheck_workspace(kiln_conv2d_workspace_size(&cs, 2));
        float *y = kcheck_alloc(ny), *want = kcheck_alloc(np + 1), *got = kcheck_alloc(np + 1);
        const fused_pool_case fc = {&cs, &ps, x, packed, ws, y, want, got, np, c};
        for (int t = 0; t < n; t++)
            for (int run = 0; run < 10; run++) { /* each activation at 1 and 2 threads */
                const int threads = 1 + run % 2;
                const kiln_kernels *k = tables[t];
                kiln_epilogue ep = {.bias = bias,
                                    .act = acts[(c + (size_t)t + (size_t)run / 2) % 5],
                                    .alpha = 0.125f,
                                    .lo = -0.25f,
                                    .hi = 0.5f};
                const int ok = k->conv2d_pool2_ok(&cs);
                if (cases[c].must && !ok)
                    fail_msg("%s does not fuse case %zu", kiln_isa_name(k->isa), c);
                if (h_out % 2 || w_out % 2) assert_false(ok);
                fused += check_fused_pool(k, &fc, ep, 0, ok, threads);
            }
        free(x);
        free(w);
        free(bias);
        free(packed);
        free(ws);
        free(y);
        free(want);
        free(got);
    }
    printf("# pool2: %d fused runs compared\n", fused);
}

/* kiln_epilogue.pool3: the conv with its 3x3/2 max pool (one pad each
 * side, floor) fused gives the very floats of the conv, stored, then the
 * table's own MaxPool, on every table (ref included) with each activation
 * at 1 and 2 threads, odd sides and partial channel blocks included; the
 * ref's fused pool also matches the SIMD tables' to the conv's tolerance.
 * Where a table cannot pool a shape it says so in conv2d_pool3_ok() and
 * conv2d() refuses pool3. ResNet50's stem must take the fused path on
 * every table; so must its quick stand-in. */
static void conv_pool3_matches_unfused(void **state)
{
    (void)state;
    kcheck_rng r = {73};
    const kiln_kernels *tables[KILN_ISA_COUNT_ + 1];
    int n = kcheck_isas(tables);
    tables[n++] = kiln_kernels_for(KILN_ISA_REF);
    const kiln_kernels *ref = tables[n - 1];
    const int quick = kcheck_quick();
    static const struct {
        int n, c_in, h, w, c_out, k, pad, stride, must; /* must: every table fuses it */
    } cases[] = {
        {1, 3, 224, 224, 64, 7, 3, 2, 1}, /* ResNet50's stem (not in quick mode) */
        {1, 3, 64, 64, 16, 7, 3, 2, 1},   /* its shape, smaller: 32 x 32 -> 16 x 16 */
        {1, 3, 60, 62, 32, 7, 3, 2, 1},   /* 32 channels (stem rows): 30 x 31 -> 15 x 16 */
        {2, 3, 37, 41, 13, 7, 3, 2, 1},   /* odd sides 19 x 21 -> 10 x 11, 13 channels */
        {1, 2, 30, 18, 8, 3, 1, 2, 1},    /* 15 x 9 -> 8 x 5 */
        {1, 3, 3, 64, 9, 3, 1, 2, 1},     /* two conv rows: 2 x 32 -> 1 x 16 */
        {1, 3, 600, 600, 8, 3, 1, 2, 0},  /* 300 columns: past DC2_POOL_W_MAX */
        {1, 16, 20, 20, 32, 3, 1, 2, 0},  /* 16 input channels: not the direct conv */
        {1, 3, 32, 32, 16, 3, 1, 1, 0},   /* stride 1: not the stride-2 direct conv */
    };
    static const kiln_act acts[] = {KILN_ACT_RELU, KILN_ACT_NONE, KILN_ACT_SIGMOID,
                                    KILN_ACT_LEAKY_RELU, KILN_ACT_CLIP};
    int fused = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (quick && c == 0) continue;
        kiln_conv2d_shape cs =
            conv_shape(cases[c].n, cases[c].c_in, cases[c].h, cases[c].w, cases[c].c_out,
                       cases[c].k, cases[c].stride, 1, cases[c].pad, 1);
        int h_out, w_out;
        assert_int_equal(kiln_conv2d_out_hw(&cs, &h_out, &w_out), KILN_OK);
        const kiln_pool2d_shape ps = {.n = cs.n,
                                      .c = cs.c_out,
                                      .h_in = h_out,
                                      .w_in = w_out,
                                      .k_h = 3,
                                      .k_w = 3,
                                      .stride_h = 2,
                                      .stride_w = 2,
                                      .dil_h = 1,
                                      .dil_w = 1,
                                      .pad_t = 1,
                                      .pad_l = 1,
                                      .pad_b = 1,
                                      .pad_r = 1};
        int p_h, p_w;
        assert_int_equal(kiln_pool2d_out_hw(&ps, &p_h, &p_w), KILN_OK);
        assert_int_equal(p_h, (h_out - 1) / 2 + 1);
        assert_int_equal(p_w, (w_out - 1) / 2 + 1);
        size_t nx = conv_in_count(&cs), ny = conv_out_count(&cs), nw = conv_w_count(&cs);
        size_t np = (size_t)cs.n * cs.c_out * p_h * p_w;
        float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw), *bias = kcheck_alloc(cs.c_out);
        kcheck_fill(&r, x, nx, -1, 1);
        kcheck_fill(&r, w, nw, -1, 1);
        kcheck_fill(&r, bias, cs.c_out, -1, 1);
        float *packed = kcheck_alloc(kiln_conv2d_packed_size(&cs) / sizeof(float));
        kiln_conv2d_pack(&cs, w, packed);
        void *ws = kcheck_workspace(kiln_conv2d_workspace_size(&cs, 2));
        float *y = kcheck_alloc(ny), *want = kcheck_alloc(np + 1), *got = kcheck_alloc(np + 1);
        float *ref_got = kcheck_alloc(np);
        const fused_pool_case fc = {&cs, &ps, x, packed, ws, y, want, got, np, c};
        /* the ref tables' fused pool, ReLU (the stem's), to compare the others with */
        const int big = (double)ny * cs.c_in * cs.k_h * cs.k_w > 4e7;
        kiln_epilogue rep = {.bias = bias, .act = KILN_ACT_RELU, .pool3 = 1};
        if (!big) assert_int_equal(ref->conv2d(&cs, x, packed, &rep, ref_got, ws, 1), KILN_OK);
        for (int t = 0; t < n; t++) {
            const kiln_kernels *k = tables[t];
            if (k == ref && big) continue;       /* the stem at full size: the SIMD tables only */
            for (int run = 0; run < 10; run++) { /* each activation at 1 and 2 threads */
                const int threads = 1 + run % 2;
                kiln_epilogue ep = {.bias = bias,
                                    .act = acts[(c + (size_t)t + (size_t)run / 2) % 5],
                                    .alpha = 0.125f,
                                    .lo = -0.25f,
                                    .hi = 0.5f};
                const int ok = k->conv2d_pool3_ok(&cs);
                if (cases[c].must && !ok)
                    fail_msg("%s does not fuse case %zu", kiln_isa_name(k->isa), c);
                if (k != ref && !cases[c].must) assert_false(ok);
                if (!check_fused_pool(k, &fc, ep, 1, ok, threads)) continue;
                fused++;
                if (ep.act == KILN_ACT_RELU && !big) {
                    const double e = kcheck_nmse(got, ref_got, np);
                    if (!(e <= KCHECK_NMSE))
                        fail_msg("%s, case %zu: fused pool nmse %.3g against ref's",
                                 kiln_isa_name(k->isa), c, e);
                }
                /* with pool2 too, pool3 is refused */
                ep.pool3 = 1;
                ep.pool2 = 1;
                assert_int_equal(k->conv2d(&cs, x, packed, &ep, got, ws, threads),
                                 KILN_ERR_INVALID_ARG);
            }
        }
        free(x);
        free(w);
        free(bias);
        free(packed);
        free(ws);
        free(y);
        free(want);
        free(got);
        free(ref_got);
    }
    printf("# pool3: %d fused runs compared\n", fused);
}

static double check_named(const kiln_named_conv *cases, size_t n, kcheck_rng *r)
{
    int quick = kcheck_quick();
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        kiln_conv2d_shape s = cases[i].shape;
        if (quick) { /* same geometry, fewer channels */
            int div = s.groups == s.c_in ? 16 : 8;
            s.c_in = s.c_in > 3 ? s.c_in / div : s.c_in;
            s.c_out /= div;
            if (s.groups > 1) s.groups = s.c_in;
        }
        double e = check_conv(cases[i].name, &s, (int)i * 5 + 1, r);
        if (e > worst) worst = e;
        if (kiln__winograd_tile(&s))
            printf("# %s: Winograd F(%dx%d, 3x3), nmse %.3g\n", cases[i].name,
                   kiln__winograd_tile(&s), kiln__winograd_tile(&s), e);
        if (getenv("KILN_TEST_SLOW")) { /* the slow suite adds batch 3 */
            s.n = 3;
            e = check_conv(cases[i].name, &s, (int)i * 5 + 2, r);
            if (e > worst) worst = e;
        }
    }
    return worst;
}

static void conv_resnet50_layers_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {50};
    double worst = check_named(kiln_resnet50_convs,
                               sizeof kiln_resnet50_convs / sizeof kiln_resnet50_convs[0], &r);
    printf("# resnet50 convs: worst nmse %.3g\n", worst);
}

static void conv_mobilenetv2_depthwise_match_ref(void **state)
{
    (void)state;
    kcheck_rng r = {2};
    check_named(kiln_mobilenetv2_dwconvs,
                sizeof kiln_mobilenetv2_dwconvs / sizeof kiln_mobilenetv2_dwconvs[0], &r);
}

/* Two callers at once, each asking for two threads: one gets the pool,
 * the other runs on its own thread; both must match ref. Skipped in quick
 * mode: under qemu-user the test's own pthread_create never returned. */
typedef struct concurrent_arg {
    const kiln_kernels *k;
    kiln_conv2d_shape s;
    const float *x, *packed;
    float *y;
} concurrent_arg;

static void *concurrent_conv(void *p)
{
    concurrent_arg *a = p;
    for (int i = 0; i < 20; i++)
        a->k->conv2d(&a->s, a->x, a->packed, NULL, a->y, NULL, kcheck_threads(2));
    return NULL;
}

static void conv_concurrent_callers_match_ref(void **state)
{
    (void)state;
    if (kcheck_quick()) skip(); /* qemu-user stalls in pthread_create here */
    const kiln_kernels *isas[KILN_ISA_COUNT_];
    int n_isas = kcheck_isas(isas);
    kcheck_rng r = {77};
    kiln_conv2d_shape s = conv_shape(1, 24, 40, 40, 24, 3, 1, 1, 1, 24); /* depthwise */
    size_t nx = conv_in_count(&s), ny = conv_out_count(&s), nw = conv_w_count(&s);
    float *x = kcheck_alloc(nx), *w = kcheck_alloc(nw);
    kcheck_fill(&r, x, nx, -1, 1);
    kcheck_fill(&r, w, nw, -1, 1);
    float *ref = run_conv(kiln_kernels_for(KILN_ISA_REF), &s, x, w, NULL, 1);
    float *packed = kcheck_alloc(kiln_conv2d_packed_size(&s) / sizeof(float));
    kiln_conv2d_pack(&s, w, packed);
    for (int i = 0; i < n_isas; i++) {
        concurrent_arg a[2];
        pthread_t t[2];
        for (int j = 0; j < 2; j++) {
            a[j] = (concurrent_arg){isas[i], s, x, packed, kcheck_alloc(ny)};
            assert_int_equal(pthread_create(&t[j], NULL, concurrent_conv, &a[j]), 0);
        }
        for (int j = 0; j < 2; j++) {
            pthread_join(t[j], NULL);
            double e = kcheck_nmse(a[j].y, ref, ny);
            if (!(e <= KCHECK_NMSE))
                fail_msg("concurrent depthwise on %s: nmse %g", kiln_isa_name(isas[i]->isa), e);
            free(a[j].y);
        }
    }
    free(x);
    free(w);
    free(ref);
    free(packed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ref_conv_known_answers),
        cmocka_unit_test(ref_conv_identities),
        cmocka_unit_test(conv_rejects_bad_shapes),
        cmocka_unit_test(conv_grid_matches_ref),
        cmocka_unit_test(conv_depthwise3x3_tails),
        cmocka_unit_test(conv_few_input_channels_match_ref),
        cmocka_unit_test(conv_direct_stride2_match_ref),
        cmocka_unit_test(conv_stem_rows_match_ref),
        cmocka_unit_test(conv_winograd3x3_matches_ref),
        cmocka_unit_test(conv_winograd4x4_tails_match_ref),
        cmocka_unit_test(conv_winograd_bands_match_ref),
        cmocka_unit_test(conv_winograd_t_matches_ref),
        cmocka_unit_test(conv_winograd_t_batch_bit_identical),
        cmocka_unit_test(conv_pool2_matches_unfused),
        cmocka_unit_test(conv_pool3_matches_unfused),
        cmocka_unit_test(conv_gemm_t_matches_ref),
        cmocka_unit_test(conv_gemm_t_half_slivers_match_ref),
        cmocka_unit_test(conv_gemm_t_packed_size_differs_from_v3),
        cmocka_unit_test(conv_residual_in_place_matches_ref),
        cmocka_unit_test(conv_fused_panels_match_ref),
        cmocka_unit_test(conv_strided_match_ref),
        cmocka_unit_test(conv_direct_rows_match_ref),
        cmocka_unit_test(conv_resnet50_layers_match_ref),
        cmocka_unit_test(conv_mobilenetv2_depthwise_match_ref),
        cmocka_unit_test(conv_concurrent_callers_match_ref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
