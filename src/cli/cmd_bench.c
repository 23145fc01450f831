/*
 * kiln bench kernels: GFLOP/s of every ResNet50 conv shape, MobileNetV2's
 * depthwise convs, pooling and the fc layer, on each kernel ISA, against
 * the scalar ref kernels and a plain im2col + OpenBLAS SGEMM baseline, and
 * as a fraction of this machine's peak, all measured in the same run: the
 * FMA peak per ISA (kiln_kernels_fma_peak) and a large SGEMM.
 *
 * Each timing is the best of several runs after one warm-up run (best,
 * not mean: the machine is shared, and interference only ever adds time).
 */
#include "cli.h"
#include "kernels.h"
#include "kiln.h"
#include "model_shapes.h"

#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_IMPLS (KILN_ISA_COUNT_ + 1)

typedef struct bench_opts {
    int threads;
    int json;
    int quick;
    int with_ref;
    double min_time;
    const char *filter;                        /* only layers whose name contains this */
    const kiln_kernels *isas[KILN_ISA_COUNT_]; /* optimised tables measured */
    int n_isas;
} bench_opts;

typedef struct bench_ctx {
    bench_opts o;
    double peak;       /* best FMA peak over the measured ISAs, GFLOP/s */
    double sgemm_peak; /* large SGEMM, GFLOP/s */
    json_t *results;
    int step, steps; /* progress */
    int tty;
} bench_ctx;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *xalloc(size_t bytes)
{
    void *p = aligned_alloc(KILN_ALIGN, (bytes + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN + 64);
    if (!p) {
        fprintf(stderr, "kiln bench: out of memory (%zu bytes)\n", bytes);
        exit(KILN_EXIT_FAIL);
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

/* What one measurement runs: fn(arg) once per call. */
typedef void (*bench_fn)(void *arg);

/* Best time of `fn` in seconds: one warm-up, then runs until min_time has
 * passed and at least `min_reps` runs were made. min_reps 1 (the ref
 * kernels, slow enough that a warm-up changes nothing) skips the warm-up. */
static double time_best(bench_fn fn, void *arg, double min_time, int min_reps)
{
    /* Kernels back to back, as in a model run (kiln_session_run does the
     * same): the pool's workers wait for the next call spinning, not asleep. */
    kiln_pool_enter();
    if (min_reps > 1) fn(arg); /* one run (the slow ref kernels) goes cold */
    double best = 1e30, start = now_s();
    for (int r = 0; r < min_reps || now_s() - start < min_time; r++) {
        double t0 = now_s();
        fn(arg);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
        if (r > 10000) break;
    }
    kiln_pool_leave();
    return best;
}

static void progress(bench_ctx *c, const char *what)
{
    c->step++;
    if (!c->tty) return;
    fprintf(stderr, "\r\033[K[%d/%d] %s", c->step, c->steps, what);
    fflush(stderr);
}

static void progress_done(bench_ctx *c)
{
    if (c->tty) fprintf(stderr, "\r\033[K");
}

/* ---- what is measured ------------------------------------------------------ */

typedef struct conv_run {
    const kiln_kernels *k; /* NULL: the im2col baseline */
    kiln_conv2d_shape s;
    const float *x, *packed;
    kiln_epilogue ep;
    float *y;
    void *ws;
    int threads;
} conv_run;

static void run_conv(void *arg)
{
    conv_run *r = arg;
    if (r->k)
        r->k->conv2d(&r->s, r->x, r->packed, &r->ep, r->y, r->ws, r->threads);
    else
        kiln_conv2d_im2col_baseline(&r->s, r->x, r->packed, &r->ep, r->y, r->ws, r->threads);
}

static double conv_flops(const kiln_conv2d_shape *s)
{
    int h, w;
    if (kiln_conv2d_out_hw(s, &h, &w) != KILN_OK) return 0;
    return 2.0 * s->n * s->c_out * h * w * (double)(s->c_in / s->groups) * s->k_h * s->k_w;
}

/* base_seconds > 0: the baseline's time, reported as speedup `vs_key`. */
static void add_result(bench_ctx *c, const char *group, const char *name, const char *impl,
                       double flops, int count, double seconds, double base_seconds,
                       const char *vs_key)
{
    double gf = seconds > 0 ? flops / seconds * 1e-9 : 0;
    json_t *r =
        json_pack("{s:s, s:s, s:s, s:f, s:i, s:f, s:f}", "group", group, "layer", name, "impl",
                  impl, "mflop", flops * 1e-6, "count", count, "ms", seconds * 1e3, "gflops", gf);
    if (c->peak > 0) json_object_set_new(r, "frac_peak", json_real(gf / c->peak));
    if (base_seconds > 0) json_object_set_new(r, vs_key, json_real(base_seconds / seconds));
    json_array_append_new(c->results, r);
    if (c->o.json) return;
    progress_done(c);
    printf("  %-30.30s %9.1f  %-7s %9.3f %9.1f", name, flops * 1e-6, impl, seconds * 1e3, gf);
    if (c->peak > 0)
        printf(" %6.1f%%", 100 * gf / c->peak);
    else
        printf("        ");
    if (base_seconds > 0) printf(" %7.2fx", base_seconds / seconds);
    printf("\n");
}

/* Per impl: total flops and seconds over a model's layers (count-weighted). */
typedef struct totals {
    double flops[MAX_IMPLS + 1], seconds[MAX_IMPLS + 1];
} totals;

/* Impl slots: 0 = im2col baseline, 1..n_isas = optimised tables, last = ref. */
static void bench_convs(bench_ctx *c, const char *group, const kiln_named_conv *layers, size_t n,
                        totals *t)
{
    const bench_opts *o = &c->o;
    if (!o->json) {
        printf("\n%s (batch 1, epilogue bias + ReLU, %d thread%s)\n", group, o->threads,
               o->threads == 1 ? "" : "s");
        printf("  %-30s %9s  %-7s %9s %9s %7s %8s\n", "layer", "MFLOP", "impl", "ms", "GFLOP/s",
               "%peak", "vs im2col");
    }
    for (size_t i = 0; i < n; i++) {
        const kiln_conv2d_shape *s = &layers[i].shape;
        if (o->filter && !strstr(layers[i].name, o->filter)) continue;
        int h, w;
        kiln_conv2d_out_hw(s, &h, &w);
        size_t nx = (size_t)s->n * s->c_in * s->h_in * s->w_in;
        size_t ny = (size_t)s->n * s->c_out * h * w;
        size_t nw = (size_t)s->c_out * (s->c_in / s->groups) * s->k_h * s->k_w;
        float *x = random_floats(nx, 1), *wt = random_floats(nw, 2),
              *bias = random_floats(s->c_out, 3);
        float *packed = xalloc(kiln_conv2d_packed_size(s));
        kiln_conv2d_pack(s, wt, packed);
        float *y = xalloc(ny * sizeof(float));
        size_t ws_bytes = kiln_conv2d_workspace_size(s, o->threads);
        size_t base_bytes = kiln_conv2d_im2col_baseline_workspace_size(s);
        void *ws = xalloc(ws_bytes > base_bytes ? ws_bytes : base_bytes);
        double flops = conv_flops(s);
        conv_run r = {NULL, *s, x, packed, {.bias = bias, .act = KILN_ACT_RELU}, y, ws, o->threads};

        progress(c, layers[i].name);
        double base = time_best(run_conv, &r, o->min_time, 3);
        add_result(c, group, layers[i].name, "im2col", flops, layers[i].count, base, 0, NULL);
        t->flops[0] += flops * layers[i].count;
        t->seconds[0] += base * layers[i].count;
        for (int k = 0; k < o->n_isas; k++) {
            r.k = o->isas[k];
            progress(c, layers[i].name);
            double sec = time_best(run_conv, &r, o->min_time, 3);
            add_result(c, group, layers[i].name, kiln_isa_name(r.k->isa), flops, layers[i].count,
                       sec, base, "speedup_vs_im2col");
            t->flops[1 + k] += flops * layers[i].count;
            t->seconds[1 + k] += sec * layers[i].count;
        }
        if (o->with_ref) {
            r.k = kiln_kernels_for(KILN_ISA_REF);
            progress(c, layers[i].name);
            double sec = time_best(run_conv, &r, 0, 1);
            add_result(c, group, layers[i].name, "ref", flops, layers[i].count, sec, base,
                       "speedup_vs_im2col");
            t->flops[1 + o->n_isas] += flops * layers[i].count;
            t->seconds[1 + o->n_isas] += sec * layers[i].count;
        }
        free(x);
        free(wt);
        free(bias);
        free(packed);
        free(y);
        free(ws);
    }
}

static void print_totals(bench_ctx *c, const char *group, const totals *t)
{
    const bench_opts *o = &c->o;
    if (t->seconds[0] <= 0) return; /* --layer matched none of the group's layers */
    json_t *sum = json_object();
    for (int k = 0; k < 2 + o->n_isas; k++) {
        if (k == 1 + o->n_isas && !o->with_ref) break;
        const char *impl = k == 0               ? "im2col"
                           : k == 1 + o->n_isas ? "ref"
                                                : kiln_isa_name(o->isas[k - 1]->isa);
        double gf = t->seconds[k] > 0 ? t->flops[k] / t->seconds[k] * 1e-9 : 0;
        json_t *e =
            json_pack("{s:f, s:f, s:f}", "ms", t->seconds[k] * 1e3, "gflops", gf,
                      "speedup_vs_im2col", t->seconds[k] > 0 ? t->seconds[0] / t->seconds[k] : 0.0);
        if (c->peak > 0) json_object_set_new(e, "frac_peak", json_real(gf / c->peak));
        if (c->sgemm_peak > 0)
            json_object_set_new(e, "frac_sgemm_peak", json_real(gf / c->sgemm_peak));
        json_object_set_new(sum, impl, e);
        if (!o->json)
            printf("  %-30s %9.1f  %-7s %9.3f %9.1f %6.1f%% %7.2fx  (%.0f%% of SGEMM peak)\n",
                   "TOTAL (count-weighted)", t->flops[k] * 1e-6, impl, t->seconds[k] * 1e3, gf,
                   c->peak > 0 ? 100 * gf / c->peak : 0.0,
                   t->seconds[k] > 0 ? t->seconds[0] / t->seconds[k] : 0.0,
                   c->sgemm_peak > 0 ? 100 * gf / c->sgemm_peak : 0.0);
    }
    json_array_append_new(
        c->results, json_pack("{s:s, s:s, s:o}", "group", group, "layer", "TOTAL", "by_impl", sum));
}

/* ---- pools and dense ------------------------------------------------------- */

typedef struct op_run {
    const kiln_kernels *k;
    int kind; /* 0 maxpool, 1 global avgpool, 2 dense */
    kiln_pool2d_shape pool;
    kiln_dense_shape dense;
    const float *x, *w;
    kiln_epilogue ep;
    float *y;
    int threads;
} op_run;

static void run_op(void *arg)
{
    op_run *r = arg;
    switch (r->kind) {
    case 0:
        r->k->maxpool2d(&r->pool, r->x, r->y, r->threads);
        break;
    case 1:
        r->k->global_avgpool(1, 2048, 49, r->x, r->y);
        break;
    default:
        r->k->dense(&r->dense, r->x, r->w, &r->ep, r->y, NULL, r->threads);
        break;
    }
}

static void bench_ops(bench_ctx *c)
{
    const bench_opts *o = &c->o;
    if (!o->json) {
        printf("\nresnet50 pools and fc (batch 1; pools count one op per tap)\n");
        printf("  %-30s %9s  %-7s %9s %9s %7s %8s\n", "layer", "MFLOP", "impl", "ms", "GFLOP/s",
               "%peak", "vs ref");
    }
    kiln_pool2d_shape mp = {1, 64, 112, 112, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0};
    kiln_dense_shape fc = {1, 2048, 1000};
    float *x = random_floats(64 * 112 * 112, 4), *w = random_floats(2048 * 1000, 5);
    float *bias = random_floats(1000, 6), *y = xalloc(64 * 56 * 56 * sizeof(float));
    float *packed = xalloc(kiln_dense_packed_size(&fc));
    kiln_dense_pack(&fc, w, packed);
    static const char *names[] = {"maxpool 3x3/2 64 @112", "global avgpool 2048 @7",
                                  "fc 2048->1000 (bias)"};
    const double flops[] = {64.0 * 56 * 56 * 9, 2048.0 * 49, 2.0 * 2048 * 1000};
    for (int kind = 0; kind < 3; kind++) {
        if (o->filter && !strstr(names[kind], o->filter)) continue;
        op_run r = {
            kiln_kernels_for(KILN_ISA_REF), kind, mp, fc, x, packed, {.bias = bias}, y, o->threads};
        progress(c, names[kind]);
        double ref = time_best(run_op, &r, o->min_time / 2, 3);
        add_result(c, "resnet50 ops", names[kind], "ref", flops[kind], 1, ref, 0, NULL);
        for (int k = 0; k < o->n_isas; k++) {
            r.k = o->isas[k];
            progress(c, names[kind]);
            double sec = time_best(run_op, &r, o->min_time / 2, 3);
            add_result(c, "resnet50 ops", names[kind], kiln_isa_name(r.k->isa), flops[kind], 1, sec,
                       ref, "speedup_vs_ref");
        }
    }
    free(x);
    free(w);
    free(bias);
    free(y);
    free(packed);
}

/* ---- peaks ------------------------------------------------------------------ */

typedef struct sgemm_run {
    int n;
    const float *a, *b;
    float *c;
} sgemm_run;

static void run_sgemm(void *arg)
{
    sgemm_run *r = arg;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r->n, r->n, r->n, 1.0f, r->a, r->n, r->b,
                r->n, 0.0f, r->c, r->n);
}

static void measure_peaks(bench_ctx *c, json_t *peaks)
{
    const bench_opts *o = &c->o;
    json_t *fma = json_object();
    for (int k = 0; k < o->n_isas; k++) {
        progress(c, "FMA peak");
        double p = kiln_kernels_fma_peak(o->isas[k]->isa, o->threads, o->quick ? 0.1 : 0.5);
        json_object_set_new(fma, kiln_isa_name(o->isas[k]->isa), json_real(p));
        if (p > c->peak) c->peak = p;
    }
    /* The best of three sizes: on small-cache VMs 1024^3 is already
     * memory-bound, on big machines 256^3 is too small to reach peak. */
    static const int sizes[] = {256, 512, 1024};
    json_t *by_n = json_object();
    kiln_blas_set_threads(o->threads);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int n = sizes[i];
        sgemm_run r = {n, random_floats((size_t)n * n, 7), random_floats((size_t)n * n, 8),
                       xalloc((size_t)n * n * sizeof(float))};
        progress(c, "SGEMM peak");
        double sec = time_best(run_sgemm, &r, o->quick ? o->min_time : 2 * o->min_time, 5);
        double gf = 2.0 * n * n * (double)n / sec * 1e-9;
        char key[16];
        snprintf(key, sizeof key, "%d", n);
        json_object_set_new(by_n, key, json_real(gf));
        if (gf > c->sgemm_peak) c->sgemm_peak = gf;
        free((void *)r.a);
        free((void *)r.b);
        free(r.c);
    }
    json_object_set_new(peaks, "fma_gflops", fma);
    json_object_set_new(peaks, "sgemm_gflops", json_real(c->sgemm_peak));
    json_object_set_new(peaks, "sgemm_gflops_by_n", by_n);
    progress_done(c);
    if (o->json) return;
    printf("peak (%d thread%s): FMA", o->threads, o->threads == 1 ? "" : "s");
    const char *key;
    json_t *v;
    json_object_foreach(fma, key, v) printf(" %s %.1f", key, json_real_value(v));
    printf(" GFLOP/s; SGEMM (best of n = 256, 512, 1024) %.1f GFLOP/s\n", c->sgemm_peak);
    printf("%%peak is of the best FMA peak (%.1f GFLOP/s); times are the best of several runs;\n"
           "GFLOP/s count a direct conv's multiply-adds, so Winograd layers can pass 100%%\n",
           c->peak);
}

/* ---- command line ------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kiln bench kernels [--threads N] [--isa ISA] [--json] [--quick] [--no-ref]\n"
            "                          [--min-time SECONDS] [--coretype NAME] [--layer TEXT]\n\n"
            "GFLOP/s of ResNet50's conv layers, MobileNetV2's depthwise convs, pooling and the\n"
            "fc layer on every kernel ISA this CPU runs (or --isa), against the scalar ref\n"
            "kernels and a plain im2col + OpenBLAS SGEMM baseline, as a fraction of this\n"
            "machine's FMA peak and of a large SGEMM, measured in the same run.\n"
            "--coretype NAME runs with OPENBLAS_CORETYPE=NAME (e.g. Haswell, SkylakeX,\n"
            "Cooperlake, Zen): OpenBLAS reads it only at start-up, so kiln restarts itself.\n"
            "--layer TEXT measures only the layers whose name contains TEXT.\n\n"
            "kiln bench model M.kiln|M.onnx|A.yaml [--threads N] [--batch B] [--runs R] [--json]:\n"
            "single-stream latency of one model (see kiln bench model --help).\n\n"
            "kiln bench cold M.kiln [--repeat N] [--threads T] [--drop-cache] [--json]:\n"
            "process start to first result, split into exec, open, compile and first run.\n");
}

static int bench_kernels(int argc, char **argv)
{
    static const struct option opts[] = {
        {"threads", required_argument, NULL, 't'},  {"isa", required_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},           {"quick", no_argument, NULL, 'q'},
        {"no-ref", no_argument, NULL, 'R'},         {"min-time", required_argument, NULL, 'm'},
        {"coretype", required_argument, NULL, 'c'}, {"layer", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},           {0}};
    bench_ctx c = {.o = {.threads = 1, .with_ref = 1, .min_time = 0.2}};
    const char *isa_name = NULL, *coretype = NULL;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "t:i:jqRm:c:l:h", opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 't': {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 256)
                return cli_error(KILN_EXIT_USAGE, "bench", "--threads wants 1..256, not '%s'",
                                 optarg);
            c.o.threads = (int)v;
            break;
        }
        case 'i':
            isa_name = optarg;
            break;
        case 'j':
            c.o.json = 1;
            break;
        case 'q':
            c.o.quick = 1;
            break;
        case 'R':
            c.o.with_ref = 0;
            break;
        case 'm': {
            double v = strtod(optarg, &end);
            if (*end || !(v >= 0 && v <= 60))
                return cli_error(KILN_EXIT_USAGE, "bench", "--min-time wants 0..60 seconds");
            c.o.min_time = v;
            break;
        }
        case 'c':
            coretype = optarg;
            break;
        case 'l':
            c.o.filter = optarg;
            break;
        case 'h':
            usage(stdout);
            return KILN_EXIT_OK;
        default: /* getopt said what was wrong */
            return KILN_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return cli_error(KILN_EXIT_USAGE, "bench", "unexpected argument '%s'", argv[optind]);
    /* OpenBLAS reads its environment once, as it loads: settings that
     * differ restart the process. OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles)
     * makes OpenBLAS's idle threads sleep as soon as a baseline GEMM ends;
     * by default they spin (sched_yield) for about 0.1 s after each call,
     * on the core that kiln's second pool thread needs for the next
     * measurement: that had halved kiln's 2-thread numbers here. */
    const char *cur = getenv("OPENBLAS_CORETYPE");
    if ((coretype && (!cur || strcmp(cur, coretype))) || !getenv("OPENBLAS_THREAD_TIMEOUT")) {
        if (coretype) setenv("OPENBLAS_CORETYPE", coretype, 1);
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
        execv("/proc/self/exe", argv - 2); /* argv[-2] is "kiln" */
        return cli_error(KILN_EXIT_FAIL, "bench", "cannot restart with OpenBLAS's settings");
    }
    kiln_status st = kiln_init();
    if (st != KILN_OK)
        return cli_error(KILN_EXIT_FAIL, "bench", "kernel initialisation: %s (KILN_ISA=%s)",
                         kiln_strerror(st), getenv("KILN_ISA") ? getenv("KILN_ISA") : "");
    if (isa_name) {
        kiln_isa isa;
        if (kiln_isa_parse(isa_name, &isa) != KILN_OK)
            return cli_error(KILN_EXIT_USAGE, "bench", "unknown ISA '%s' (ref, avx2, avx512, neon)",
                             isa_name);
        if (!kiln_isa_supported(isa) || !kiln_kernels_for(isa))
            return cli_error(KILN_EXIT_FAIL, "bench", "ISA '%s' is not available on this CPU/build",
                             isa_name);
        if (isa != KILN_ISA_REF) c.o.isas[c.o.n_isas++] = kiln_kernels_for(isa);
    } else {
        for (int i = KILN_ISA_COUNT_ - 1; i > 0; i--)
            if (kiln_isa_supported((kiln_isa)i) && kiln_kernels_for((kiln_isa)i))
                c.o.isas[c.o.n_isas++] = kiln_kernels_for((kiln_isa)i);
    }
    c.tty = isatty(2);
    c.results = json_array();
    size_t n_res = sizeof kiln_resnet50_convs / sizeof kiln_resnet50_convs[0];
    size_t n_dw = sizeof kiln_mobilenetv2_dwconvs / sizeof kiln_mobilenetv2_dwconvs[0];
    if (c.o.quick) {
        n_res = 6;
        n_dw = 3;
        c.o.min_time /= 4;
    }
    int per_layer = 1 + c.o.n_isas + c.o.with_ref;
    c.steps = c.o.n_isas + 3 + (int)(n_res + n_dw) * per_layer + 3 * (1 + c.o.n_isas);

    kiln_blas_info blas;
    kiln_blas_get_info(&blas);
    const char *preferred = kiln_blas_preferred_coretype();
    /* NULL when OpenBLAS's own pick runs as fast (kiln_blas_preferred_coretype()) */
    int show_pref = preferred != NULL;
    if (!c.o.json)
        printf("kiln bench kernels: %s, %d logical CPUs; OpenBLAS %s core %s%s%s%s\n",
               kiln_cpu_model(), kiln_cpu_count(), blas.version, blas.core,
               getenv("OPENBLAS_CORETYPE") ? " (OPENBLAS_CORETYPE set)" : "",
               show_pref ? "; kiln prefers " : "", show_pref ? preferred : "");
    json_t *peaks = json_object();
    measure_peaks(&c, peaks);

    totals res = {0}, dw = {0};
    bench_convs(&c, "resnet50 conv", kiln_resnet50_convs, n_res, &res);
    print_totals(&c, "resnet50 conv", &res);
    bench_convs(&c, "mobilenetv2 depthwise", kiln_mobilenetv2_dwconvs, n_dw, &dw);
    print_totals(&c, "mobilenetv2 depthwise", &dw);
    bench_ops(&c);
    progress_done(&c);

    /* The machine may be shared: measure the peak again and keep the
     * higher, rewriting the JSON fractions (the text above keeps its). */
    double first_peak = c.peak;
    for (int k = 0; k < c.o.n_isas; k++) {
        double p = kiln_kernels_fma_peak(c.o.isas[k]->isa, c.o.threads, c.o.quick ? 0.1 : 0.5);
        json_t *fma = json_object_get(peaks, "fma_gflops");
        const char *name = kiln_isa_name(c.o.isas[k]->isa);
        if (p > json_real_value(json_object_get(fma, name)))
            json_object_set_new(fma, name, json_real(p));
        if (p > c.peak) c.peak = p;
    }
    if (c.peak > first_peak) {
        size_t i;
        json_t *r;
        json_array_foreach(c.results, i, r)
        {
            json_t *g = json_object_get(r, "gflops");
            if (g) json_object_set_new(r, "frac_peak", json_real(json_real_value(g) / c.peak));
            json_t *by = json_object_get(r, "by_impl");
            const char *key;
            json_t *e;
            if (by)
                json_object_foreach(by, key, e) json_object_set_new(
                    e, "frac_peak",
                    json_real(json_real_value(json_object_get(e, "gflops")) / c.peak));
        }
        if (!c.o.json)
            printf("\nFMA peak measured again at the end: %.1f GFLOP/s (the %%peak above used "
                   "%.1f)\n",
                   c.peak, first_peak);
    }

    if (c.o.json) {
        kiln_blas_get_info(&blas);
        const char *ct = getenv("OPENBLAS_CORETYPE");
        json_t *root =
            json_pack("{s:s, s:s, s:{s:s, s:s, s:i}, s:{s:s, s:s, s:s?, s:s?}, s:i, s:b, s:o, s:o}",
                      "bench", "kernels", "kiln_version", kiln_version(), "cpu", "model",
                      kiln_cpu_model(), "arch", kiln_cpu_arch(), "logical_cpus", kiln_cpu_count(),
                      "openblas", "version", blas.version, "core", blas.core, "coretype_env",
                      ct && *ct ? ct : NULL, "preferred_coretype", preferred, "threads",
                      c.o.threads, "quick", c.o.quick, "peak", peaks, "results", c.results);
        json_dumpf(root, stdout, JSON_INDENT(1));
        printf("\n");
        json_decref(root);
    } else {
        json_decref(peaks);
        json_decref(c.results);
    }
    return KILN_EXIT_OK;
}

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "kernels")) return bench_kernels(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "model")) return cmd_bench_model(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "cold")) return cmd_bench_cold(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return KILN_EXIT_OK;
    }
    return cli_error(KILN_EXIT_USAGE, "bench",
                     "what to measure? (kernels, model or cold; see kiln bench --help)");
}
