/*
 * kiln's conv kernels against XNNPACK (Debian's libxnnpack-dev), the same
 * layer shapes in one process, timed interleaved so both see the same
 * machine load:
 *
 *   build/bench/peers/xnnpack_conv [--threads N] [--set resnet50-3x3|resnet50|
 *                                   mobilenetv2|all] [--rounds R] [--json] [--check]
 *
 * Each library runs in its own layout: kiln NCHW with OIHW weights packed by
 * kiln_conv2d_pack(), XNNPACK NHWC with OHWI weights (its native layout;
 * the transposes are not timed). Both apply bias + ReLU in the same call.
 * Every layer's outputs are compared first (normalised squared error
 * < 1e-9, the kernels' test tolerance), so the times are of the same
 * computation; --check does only that and exits 1 on a mismatch (the unit
 * suite runs it). Times are the median of R rounds; a round runs kiln once
 * and XNNPACK once, in alternating order.
 *
 * Output: a markdown table with the count-weighted total (ResNet50 runs
 * several layers more than once), or JSON lines in bench/peers/compare.py's
 * record format with --json ({"tool": "kiln"|"peer": "xnnpack", "layer":
 * conv_<cin>x<h>x<w>_<cout>_k<k>s<s>p<p>, ...}).
 */
#include "kernels.h"
#include "model_shapes.h"

#include <pthreadpool.h>
#include <xnnpack.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *xalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "xnnpack_conv: out of memory (%zu bytes)\n", n);
        exit(2);
    }
    return p;
}

static float *random_floats(size_t n, unsigned seed)
{
    float *p = xalloc(n * sizeof(float));
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(s >> 8) / (float)(1 << 24) - 0.5f;
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct layer_result {
    double kiln_ms, xnn_ms, flops, nmse;
    int ok;
} layer_result;

/* Runs one layer through both libraries; returns 0 on success. */
static int run_layer(const kiln_named_conv *L, int threads, int rounds, pthreadpool_t pool,
                     layer_result *res)
{
    const kiln_conv2d_shape *s = &L->shape;
    int oh, ow;
    if (kiln_conv2d_out_hw(s, &oh, &ow) != KILN_OK) return -1;
    int cin = s->c_in, cout = s->c_out, g = s->groups, kh = s->k_h, kw = s->k_w;
    int cin_g = cin / g, cout_g = cout / g;
    size_t nx = (size_t)cin * s->h_in * s->w_in, ny = (size_t)cout * oh * ow;
    size_t nw = (size_t)cout * cin_g * kh * kw;

    float *x = random_floats(nx, 1), *w = random_floats(nw, 2), *bias = random_floats(cout, 3);
    float *y = xalloc(ny * sizeof(float));
    float *packed = xalloc(kiln_conv2d_packed_size(s));
    kiln_conv2d_pack(s, w, packed);
    void *ws = xalloc(kiln_conv2d_workspace_size(s, threads) + 64);
    kiln_epilogue ep = {.bias = bias, .act = KILN_ACT_RELU};

    /* XNNPACK: NHWC input/output, [g][cout_g][kh][kw][cin_g] weights. */
    float *x_nhwc = xalloc(nx * sizeof(float)), *y_nhwc = xalloc(ny * sizeof(float));
    float *w_ohwi = xalloc(nw * sizeof(float));
    for (int c = 0; c < cin; c++)
        for (int i = 0; i < s->h_in * s->w_in; i++)
            x_nhwc[(size_t)i * cin + c] = x[(size_t)c * s->h_in * s->w_in + i];
    for (int o = 0; o < cout; o++)
        for (int c = 0; c < cin_g; c++)
            for (int k = 0; k < kh * kw; k++)
                w_ohwi[((size_t)o * kh * kw + k) * cin_g + c] =
                    w[((size_t)o * cin_g + c) * kh * kw + k];
    xnn_operator_t op = NULL;
    if (xnn_create_convolution2d_nhwc_f32(s->pad_t, s->pad_r, s->pad_b, s->pad_l, kh, kw,
                                          s->stride_h, s->stride_w, s->dil_h, s->dil_w, g, cin_g,
                                          cout_g, cin, cout, w_ohwi, bias, 0.0f, INFINITY, 0,
                                          &op) != xnn_status_success ||
        xnn_setup_convolution2d_nhwc_f32(op, 1, s->h_in, s->w_in, x_nhwc, y_nhwc, pool) !=
            xnn_status_success) {
        fprintf(stderr, "xnnpack_conv: XNNPACK rejected %s\n", L->name);
        return -1;
    }

    /* Same computation? */
    if (kiln_conv2d(s, x, packed, &ep, y, ws, threads) != KILN_OK ||
        xnn_run_operator(op, pool) != xnn_status_success) {
        fprintf(stderr, "xnnpack_conv: %s failed to run\n", L->name);
        return -1;
    }
    double num = 0, den = 0;
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < oh * ow; i++) {
            double a = y[(size_t)o * oh * ow + i], b = y_nhwc[(size_t)i * cout + o];
            num += (a - b) * (a - b);
            den += b * b;
        }
    res->nmse = den > 0 ? num / den : num;
    res->ok = res->nmse < 1e-9;
    res->flops = 2.0 * cout * oh * ow * (double)cin_g * kh * kw;

    double *tk = xalloc(rounds * sizeof(double)), *tx = xalloc(rounds * sizeof(double));
    for (int r = 0; r < 2; r++) { /* warm-up */
        kiln_conv2d(s, x, packed, &ep, y, ws, threads);
        xnn_run_operator(op, pool);
    }
    for (int r = 0; r < rounds; r++) {
        for (int side = 0; side < 2; side++) {
            int kiln_turn = (side == 0) == (r % 2 == 0);
            double t0 = now_s();
            if (kiln_turn)
                kiln_conv2d(s, x, packed, &ep, y, ws, threads);
            else
                xnn_run_operator(op, pool);
            (kiln_turn ? tk : tx)[r] = now_s() - t0;
        }
    }
    qsort(tk, rounds, sizeof(double), cmp_double);
    qsort(tx, rounds, sizeof(double), cmp_double);
    res->kiln_ms = tk[rounds / 2] * 1e3;
    res->xnn_ms = tx[rounds / 2] * 1e3;

    xnn_delete_operator(op);
    free(tk), free(tx), free(x), free(w), free(bias), free(y), free(packed), free(ws);
    free(x_nhwc), free(y_nhwc), free(w_ohwi);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: xnnpack_conv [--threads N] [--set resnet50-3x3|resnet50|mobilenetv2|all]\n"
               "                    [--rounds R] [--json] [--check]\n");
}

int main(int argc, char **argv)
{
    int threads = 1, rounds = 21, json = 0, check = 0;
    const char *set = "resnet50-3x3";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc)
            set = argv[++i];
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--check"))
            check = 1;
        else if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || rounds < 1 || rounds > 100000) {
        fprintf(stderr, "xnnpack_conv: --threads must be 1..256 and --rounds 1..100000\n");
        return 2;
    }
    int want_r50 = !strcmp(set, "resnet50") || !strcmp(set, "all");
    int want_r50_3x3 = want_r50 || !strcmp(set, "resnet50-3x3");
    int want_mb = !strcmp(set, "mobilenetv2") || !strcmp(set, "all");
    if (!want_r50_3x3 && !want_mb) {
        fprintf(stderr, "xnnpack_conv: unknown --set '%s'\n", set);
        return 2;
    }
    if (xnn_initialize(NULL) != xnn_status_success) {
        fprintf(stderr, "xnnpack_conv: xnn_initialize failed (CPU not supported?)\n");
        return 1;
    }
    kiln_blas_set_threads(threads); /* as kiln's runtime does: OpenBLAS on `threads` */
    pthreadpool_t pool = threads > 1 ? pthreadpool_create(threads) : NULL;
    if (check) rounds = 1;

    struct {
        const kiln_named_conv *v;
        size_t n;
        const char *model;
    } sets[] = {
        {kiln_resnet50_convs, sizeof kiln_resnet50_convs / sizeof *kiln_resnet50_convs, "resnet50"},
        {kiln_mobilenetv2_dwconvs,
         sizeof kiln_mobilenetv2_dwconvs / sizeof *kiln_mobilenetv2_dwconvs, "mobilenetv2"},
    };
    int bad = 0;
    if (!json && !check)
        printf("kiln (%s) vs XNNPACK, batch 1, bias + ReLU, %d thread%s, median of %d rounds\n\n"
               "| layer | count | MFLOP | kiln ms | XNNPACK ms | kiln/XNNPACK |\n"
               "|---|---:|---:|---:|---:|---:|\n",
               kiln_isa_name(kiln_isa_active()), threads, threads == 1 ? "" : "s", rounds);
    for (size_t si = 0; si < 2; si++) {
        if (si == 0 && !want_r50_3x3) continue;
        if (si == 1 && !want_mb) continue;
        double tot_k = 0, tot_x = 0, tot_f = 0;
        for (size_t i = 0; i < sets[si].n; i++) {
            const kiln_named_conv *L = &sets[si].v[i];
            if (si == 0 && !want_r50 && L->shape.k_h != 3) continue;
            layer_result r;
            if (run_layer(L, threads, rounds, pool, &r) != 0) {
                bad++;
                continue;
            }
            if (!r.ok) {
                fprintf(stderr, "xnnpack_conv: %s: outputs differ (nmse %.3g)\n", L->name, r.nmse);
                bad++;
            }
            if (check) continue;
            const kiln_conv2d_shape *s = &L->shape;
            tot_k += r.kiln_ms * L->count;
            tot_x += r.xnn_ms * L->count;
            tot_f += r.flops * L->count;
            if (json) {
                char key[96];
                snprintf(key, sizeof key, "conv_%dx%dx%d_%d_k%ds%dp%d%s", s->c_in, s->h_in, s->w_in,
                         s->c_out, s->k_h, s->stride_h, s->pad_t, s->groups > 1 ? "_dw" : "");
                const char *fmt = "{\"%s\": \"%s\", \"layer\": \"%s\", \"set\": "
                                  "\"%s\", \"threads\": %d, \"batch\": 1, \"count\": %d, "
                                  "\"median_ms\": %.4f, \"gflops\": %.2f, \"nmse\": %.3g}\n";
                printf(fmt, "tool", "kiln", key, sets[si].model, threads, L->count, r.kiln_ms,
                       r.flops / r.kiln_ms * 1e-6, r.nmse);
                printf(fmt, "peer", "xnnpack", key, sets[si].model, threads, L->count, r.xnn_ms,
                       r.flops / r.xnn_ms * 1e-6, r.nmse);
            } else {
                printf("| %s | %d | %.1f | %.3f | %.3f | %.2f |\n", L->name, L->count,
                       r.flops * 1e-6, r.kiln_ms, r.xnn_ms, r.kiln_ms / r.xnn_ms);
            }
            fflush(stdout);
        }
        if (!json && !check && tot_x > 0)
            printf("| **%s total** (count-weighted) | | %.1f | %.3f | %.3f | **%.2f** |\n",
                   sets[si].model, tot_f * 1e-6, tot_k, tot_x, tot_k / tot_x);
    }
    if (pool) pthreadpool_destroy(pool);
    xnn_deinitialize();
    if (check && !bad) printf("xnnpack_conv: every layer matches XNNPACK\n");
    return bad ? 1 : 0;
}
