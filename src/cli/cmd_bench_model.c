/* kiln bench model: single-stream latency of a model (MLPerf SingleStream
 * style: warm-up, then p50/p90/p99 over the timed runs), plus open+compile
 * time and peak RSS. */
#include "cli.h"
#include "kiln.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* CPU time of the whole process (every thread), in ms. */
static double cpu_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- --layers ---------------------------------------------------------------- */

typedef struct layer_row {
    char name[64], op[40], shape[48];
    int64_t flops;
    double ms;     /* per run, mean */
    double min_ms; /* the fastest run: the steadier number on a shared machine */
} layer_row;

typedef struct layer_table {
    layer_row *rows;
    int n, cap;
} layer_table;

static void collect_layer(void *ctx, const char *name, const char *op, const char *shape,
                          int64_t params, int64_t flops)
{
    (void)params;
    layer_table *t = ctx;
    if (t->n == t->cap) return;
    layer_row *r = &t->rows[t->n++];
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->op, sizeof r->op, "%s", op);
    snprintf(r->shape, sizeof r->shape, "%s", shape);
    r->flops = flops;
}

static int cmp_layer_ms(const void *a, const void *b)
{
    double x = ((const layer_row *)a)->ms, y = ((const layer_row *)b)->ms;
    return x > y ? -1 : x < y;
}

static void count_layer(void *ctx, const char *name, const char *op, const char *shape,
                        int64_t params, int64_t flops)
{
    (void)name, (void)op, (void)shape, (void)params, (void)flops;
    (*(int *)ctx)++;
}

/* Runs s `runs` more times with per-layer timing and fills t, slowest
 * first. 0, or -1 with kiln_last_error() set. */
static int profile_layers(kiln_session *s, float **ins, float **outs, int runs, layer_table *t)
{
    int n = 0;
    kiln_session_layers(s, count_layer, &n);
    uint64_t *prev = calloc((size_t)n + 1, sizeof *prev);
    if (!prev || !(t->rows = calloc((size_t)n + 1, sizeof *t->rows)) ||
        kiln_session_profile(s, 1)) {
        free(prev);
        return -1;
    }
    t->cap = n;
    kiln_session_layers(s, collect_layer, t);
    for (int i = 0; i < t->n; i++) t->rows[i].min_ms = 1e300;
    for (int r = 0; r < runs; r++) {
        if (kiln_session_run(s, (const float *const *)ins, outs)) {
            free(prev);
            return -1;
        }
        /* The totals only grow: this run's share is the difference. */
        for (int i = 0; i < t->n; i++) {
            uint64_t ns = kiln_session_layer_ns(s, i);
            double ms = (double)(ns - prev[i]) / 1e6;
            if (ms < t->rows[i].min_ms) t->rows[i].min_ms = ms;
            prev[i] = ns;
        }
    }
    for (int i = 0; i < t->n; i++) t->rows[i].ms = kiln_session_layer_ns(s, i) / 1e6 / runs;
    free(prev);
    kiln_session_profile(s, 0);
    qsort(t->rows, (size_t)t->n, sizeof *t->rows, cmp_layer_ms);
    return 0;
}

static double pct(const double *sorted, int n, double p)
{
    int i = (int)(p * (n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

int cmd_bench_model(int argc, char **argv)
{
    static const struct option opts[] = {{"threads", required_argument, NULL, 't'},
                                         {"batch", required_argument, NULL, 'b'},
                                         {"warmup", required_argument, NULL, 'w'},
                                         {"runs", required_argument, NULL, 'r'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"layers", optional_argument, NULL, 'l'},
                                         {"preload", no_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int threads = 1, batch = 1, warmup = 5, runs = 20, json = 0, layers = 0, preload = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:b:w:r:jh", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            threads = atoi(optarg);
            break;
        case 'b':
            batch = atoi(optarg);
            break;
        case 'w':
            warmup = atoi(optarg);
            break;
        case 'r':
            runs = atoi(optarg);
            break;
        case 'j':
            json = 1;
            break;
        case 'p':
            preload = 1;
            break;
        case 'l':
            layers = optarg ? atoi(optarg) : 1000000;
            if (layers < 1)
                return cli_error(KILN_EXIT_USAGE, "bench model", "--layers=N: N at least 1");
            break;
        case 'h':
            printf("usage: kiln bench model M.kiln|M.onnx|A.yaml [--threads N] [--batch B]\n"
                   "         [--warmup W] [--runs R] [--layers[=N]] [--preload] [--json]\n"
                   "Single-stream latency after warm-up (p50/p90/p99; p90 is the headline),\n"
                   "open+compile time (a .kiln is mapped, its weights trusted) and peak RSS.\n"
                   "--layers: then R more runs timing each layer; prints the N slowest\n"
                   "(default all) with their share of the run, GFLOP/s and fastest run.\n"
                   "--preload: a .kiln's weights are read into huge pages first\n"
                   "(kiln_model_preload, what kiln serve's zygote_preload does) instead of\n"
                   "mapped from the file in 4 KiB pages; open+compile then excludes the read.\n");
            return KILN_EXIT_OK;
        default:
            return KILN_EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || threads < 1 || threads > 256 || batch < 1 || warmup < 0 || runs < 1 ||
        runs > 100000)
        return cli_error(KILN_EXIT_USAGE, "bench model", "expects one model and sane options");
    /* OpenBLAS starts its threads as it loads, and an idle one spins
     * (sched_yield) for about 0.1 s before it sleeps: through the whole
     * timed loop of a small model, doubling its CPU time per run, although
     * no OpenBLAS call is made. OPENBLAS_THREAD_TIMEOUT=4 (read only at
     * load, hence the restart) makes them sleep at once, as in
     * `kiln bench kernels`. */
    if (!getenv("OPENBLAS_THREAD_TIMEOUT")) {
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
        execv("/proc/self/exe", argv - 2); /* argv[-2] is "kiln" */
        return cli_error(KILN_EXIT_FAIL, "bench model", "cannot restart with OpenBLAS's settings");
    }
    const char *path = argv[optind];
    size_t len = strlen(path);
    int is_kiln =
        !(len > 5 && (!strcmp(path + len - 5, ".onnx") || !strcmp(path + len - 5, ".yaml")));
    if (preload && !is_kiln)
        return cli_error(KILN_EXIT_USAGE, "bench model", "--preload takes a .kiln file");
    kiln_model *m = NULL;
    kiln_session *s = NULL;
    double t0 = now_ms();
    kiln_status st;
    if (len > 5 && !strcmp(path + len - 5, ".onnx"))
        st = kiln_model_import_onnx(path, &m);
    else if (len > 5 && !strcmp(path + len - 5, ".yaml"))
        st = kiln_model_from_yaml(path, 1, &m);
    else {
        /* Preloading reads the whole file: done before the clock starts,
         * like the zygote's, which happens before any worker exists. */
        if (preload && (st = kiln_model_preload(path, 0)))
            return cli_error(KILN_EXIT_FAIL, "bench model", "%s", kiln_last_error());
        t0 = now_ms();
        st = kiln_model_open(path, KILN_OPEN_TRUST_WEIGHTS, &m);
    }
    kiln_session_options so = {threads, batch};
    if (!st) st = kiln_session_create(m, &so, &s);
    double load_ms = now_ms() - t0;
    if (st) {
        kiln_model_free(m);
        return cli_error(KILN_EXIT_FAIL, "bench model", "%s", kiln_last_error());
    }
    int n_in = kiln_model_input_count(m), n_out = kiln_model_output_count(m);
    float **ins = calloc((size_t)n_in, sizeof *ins), **outs = calloc((size_t)n_out, sizeof *outs);
    double *lat = calloc((size_t)runs, sizeof *lat);
    int rc = KILN_EXIT_FAIL;
    uint64_t seed = 42;
    for (int io = 0; io < 2 && ins && outs; io++)
        for (int i = 0; i < (io ? n_out : n_in); i++) {
            kiln_io_info info;
            (io ? kiln_session_output : kiln_session_input)(s, i, &info);
            size_t n = 1;
            for (int d = 0; d < info.ndim; d++) n *= (size_t)info.dims[d];
            float *p = malloc(n * sizeof *p);
            if (!p) goto done;
            for (size_t k = 0; k < n; k++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                p[k] = (float)((seed >> 40) & 0xffff) / 65536.0f;
            }
            (io ? outs : ins)[i] = p;
        }
    if (!lat) goto done;
    /* CPU time of the timed runs, all threads: on a shared machine it is
     * the steadier number (wall time includes waiting for a CPU). */
    double cpu0 = 0;
    for (int i = 0; i < warmup + runs; i++) {
        if (i == warmup) cpu0 = cpu_ms();
        double a = now_ms();
        if ((st = kiln_session_run(s, (const float *const *)ins, outs))) {
            cli_error(KILN_EXIT_FAIL, "bench model", "%s", kiln_last_error());
            goto done;
        }
        if (i >= warmup) lat[i - warmup] = now_ms() - a;
    }
    double cpu_per_run = (cpu_ms() - cpu0) / runs;
    qsort(lat, (size_t)runs, sizeof *lat, cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double flops = (double)kiln_model_flops(m) * batch;
    kiln_io_info in0;
    kiln_model_input(m, 0, &in0);
    if (in0.dims[0] > 0) flops /= (double)in0.dims[0];
    double p50 = pct(lat, runs, 0.5), p90 = pct(lat, runs, 0.9), p99 = pct(lat, runs, 0.99);
    layer_table lt = {NULL, 0, 0};
    if (layers && profile_layers(s, ins, outs, runs, &lt)) {
        cli_error(KILN_EXIT_FAIL, "bench model", "%s", kiln_last_error());
        free(lt.rows);
        goto done;
    }
    double layers_ms = 0, layers_min_ms = 0;
    for (int i = 0; i < lt.n; i++) layers_ms += lt.rows[i].ms, layers_min_ms += lt.rows[i].min_ms;
    if (lt.n > layers) lt.n = layers;
    if (json) {
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:f, s:I, "
            "s:s, s:b}",
            "peer", "kiln", "version", kiln_version(), "model", path, "threads", threads, "batch",
            batch, "runs", runs, "median_ms", p50, "p90_ms", p90, "p99_ms", p99, "min_ms", lat[0],
            "cpu_ms", cpu_per_run, "load_ms", load_ms, "gflops", flops / (p50 * 1e6), "arena_bytes",
            (json_int_t)kiln_session_arena_bytes(s), "peak_rss_mb", ru.ru_maxrss / 1024.0, "flops",
            (json_int_t)flops, "isa", kiln_isa_name(kiln_isa_active()), "preload", preload);
        if (layers) {
            json_t *a = json_array();
            for (int i = 0; i < lt.n; i++) {
                const layer_row *r = &lt.rows[i];
                json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:f, s:f, s:I, s:f}", "name",
                                                   r->name, "op", r->op, "shape", r->shape, "ms",
                                                   r->ms, "min_ms", r->min_ms, "flops",
                                                   (json_int_t)r->flops, "gflops",
                                                   r->ms > 0 ? r->flops / (r->ms * 1e6) : 0.0));
            }
            json_object_set_new(o, "layers", a);
            json_object_set_new(o, "layers_ms", json_real(layers_ms));
            json_object_set_new(o, "layers_min_ms", json_real(layers_min_ms));
        }
        char *text = json_dumps(o, JSON_COMPACT);
        puts(text);
        free(text);
        json_decref(o);
    } else {
        printf("%s: batch %d, %d threads, %s kernels, %d runs after %d warm-up%s\n", path, batch,
               threads, kiln_isa_name(kiln_isa_active()), runs, warmup,
               preload ? ", weights preloaded" : "");
        printf("  latency ms  p50 %.3f  p90 %.3f  p99 %.3f  min %.3f  (%.1f GFLOP/s at p50)\n", p50,
               p90, p99, lat[0], flops / (p50 * 1e6));
        printf("  CPU time per run %.3f ms (all threads)\n", cpu_per_run);
        printf("  open+compile %.2f ms   arena %.2f MB   peak RSS %.1f MB\n", load_ms,
               kiln_session_arena_bytes(s) / 1048576.0, ru.ru_maxrss / 1024.0);
        if (layers) {
            printf("  layers, %d more runs, slowest first (sum %.3f ms per run, of the fastest "
                   "runs %.3f):\n",
                   runs, layers_ms, layers_min_ms);
            printf("  %-28s %-22s %-18s %9s %6s %8s %9s\n", "layer", "op", "output", "ms", "%",
                   "GFLOP/s", "min ms");
            for (int i = 0; i < lt.n; i++) {
                const layer_row *r = &lt.rows[i];
                printf("  %-28.28s %-22.22s %-18.18s %9.3f %5.1f%% %8.1f %9.3f\n", r->name, r->op,
                       r->shape, r->ms, layers_ms > 0 ? 100 * r->ms / layers_ms : 0.0,
                       r->ms > 0 ? r->flops / (r->ms * 1e6) : 0.0, r->min_ms);
            }
        }
    }
    free(lt.rows);
    rc = KILN_EXIT_OK;
done:
    for (int i = 0; ins && i < n_in; i++) free(ins[i]);
    for (int i = 0; outs && i < n_out; i++) free(outs[i]);
    free(ins);
    free(outs);
    free(lat);
    kiln_session_free(s);
    kiln_model_free(m);
    return rc;
}
