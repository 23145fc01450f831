/*
 * ONNX conformance: runs the ONNX node tests and PyTorch-converted tests
 * (Debian's libonnx-testdata) for the operators kiln supports. Each test
 * directory has model.onnx and test_data_set_N/{input,output}_K.pb; the
 * first input is fed at run time, the others (weights, in node tests) are
 * bound as constants. Outputs must match within |got - want| <= atol +
 * rtol * |want|. A test whose model uses something kiln does not support
 * (an operator, attribute or data type) is skipped with the reason; the
 * counts per operator are printed. Exit status 1 when any test fails.
 *
 * usage: onnx_node DIR...   (each DIR holds test directories)
 */
#include "model.h"
#include "onnx_import.h"
#include "optimize.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RTOL 1e-3
#define ATOL 1e-5

static const char *const ops[] = {
    "conv",          "batchnorm",   "relu",
    "clip",          "leakyrelu",   "sigmoid",
    "maxpool",       "averagepool", "globalaveragepool",
    "globalmaxpool", "add",         "mul",
    "concat",        "flatten",     "reshape",
    "gemm",          "matmul",      "softmax",
    "pad",           "identity",    "dropout",
    "constant",
};
#define N_OPS (int)(sizeof ops / sizeof ops[0])

typedef struct counts {
    char op[64];
    int ran, passed, skipped;
} counts;

static counts table[512];
static int n_table;

static counts *bucket(const char *op)
{
    for (int i = 0; i < n_table; i++)
        if (!strcmp(table[i].op, op)) return &table[i];
    if (n_table == 512) return &table[511];
    snprintf(table[n_table].op, sizeof table[n_table].op, "%s", op);
    return &table[n_table++];
}

/* The operator a node test covers ("test_conv_with_strides" -> "conv"), or
 * NULL when it is not one of kiln's. */
static const char *node_op(const char *test)
{
    const char *best = NULL;
    size_t best_len = 0;
    if (strncmp(test, "test_", 5)) return NULL;
    const char *rest = test + 5;
    for (int i = 0; i < N_OPS; i++) {
        size_t k = strlen(ops[i]);
        if (!strncmp(rest, ops[i], k) && (rest[k] == 0 || rest[k] == '_') && k > best_len) {
            best = ops[i];
            best_len = k;
        }
    }
    return best;
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* 0 pass, 1 fail, 2 skip */
static int run_set(const char *model, const char *set, char *why, size_t why_len)
{
    char path[4200], err[KG_ERRLEN] = "";
    float *in[16] = {0}, *want[16] = {0}, *got[16] = {0};
    int64_t *ints[16] = {0};
    kx_bound bound[16];
    char names[16][256];
    int n_in = 0, n_out = 0, rc = 1;
    int in_nd[16];
    int64_t in_dims[16][KILN_MAX_DIMS];
    kg_graph *g = NULL;
    kg_meta meta = {0};
    kiln_model *m = NULL;
    kiln_session *s = NULL;
    for (; n_in < 16; n_in++) {
        snprintf(path, sizeof path, "%s/input_%d.pb", set, n_in);
        if (!exists(path)) break;
        if (kx_read_tensor(path, &in[n_in], n_in ? &ints[n_in] : NULL, &in_nd[n_in], in_dims[n_in],
                           names[n_in], 256, err)) {
            snprintf(why, why_len, "input %d: %s", n_in, err);
            rc = 2;
            goto done;
        }
    }
    for (int i = 1; i < n_in; i++) {
        bound[i - 1] =
            (kx_bound){.name = names[i], .ndim = in_nd[i], .data = in[i], .ints = ints[i]};
        memcpy(bound[i - 1].dims, in_dims[i], sizeof in_dims[i]);
    }
    kiln_status st = kx_import(model, bound, n_in ? n_in - 1 : 0, &g, &meta, err);
    if (st) {
        snprintf(why, why_len, "%s", err);
        rc = (st == KILN_ERR_UNSUPPORTED || st == KILN_ERR_DTYPE) ? 2 : 1;
        goto done;
    }
    if ((st = km_finish(g, &meta, &m, model))) {
        snprintf(why, why_len, "%s", kiln_last_error());
        rc = (st == KILN_ERR_UNSUPPORTED || st == KILN_ERR_DTYPE) ? 2 : 1;
        goto done;
    }
    if (kiln_model_input_count(m) != 1) {
        snprintf(why, why_len, "model has %d runtime inputs", kiln_model_input_count(m));
        rc = 2;
        goto done;
    }
    kiln_session_options so = {1, in_nd[0] ? (int)in_dims[0][0] : 0};
    if ((st = kiln_session_create(m, &so, &s))) {
        snprintf(why, why_len, "session: %s", kiln_last_error());
        rc = st == KILN_ERR_UNSUPPORTED ? 2 : 1;
        goto done;
    }
    n_out = kiln_model_output_count(m);
    for (int i = 0; i < n_out; i++) {
        kiln_io_info info;
        kiln_session_output(s, i, &info);
        int64_t t = 1;
        for (int d = 0; d < info.ndim; d++) t *= info.dims[d];
        got[i] = calloc((size_t)t + 1, sizeof(float));
        int wnd;
        int64_t wd[KILN_MAX_DIMS];
        snprintf(path, sizeof path, "%s/output_%d.pb", set, i);
        if (kx_read_tensor(path, &want[i], NULL, &wnd, wd, NULL, 0, err)) {
            snprintf(why, why_len, "output %d: %s", i, err);
            rc = 2;
            goto done;
        }
        int64_t wt = 1;
        for (int d = 0; d < wnd; d++) wt *= wd[d];
        if (wt != t) {
            snprintf(why, why_len, "output %d has %lld elements, expected %lld", i, (long long)t,
                     (long long)wt);
            goto done;
        }
    }
    const float *ins[1] = {in[0]};
    if ((st = kiln_session_run(s, ins, got))) {
        snprintf(why, why_len, "run: %s", kiln_last_error());
        goto done;
    }
    for (int i = 0; i < n_out; i++) {
        kiln_io_info info;
        kiln_session_output(s, i, &info);
        int64_t t = 1;
        for (int d = 0; d < info.ndim; d++) t *= info.dims[d];
        for (int64_t k = 0; k < t; k++) {
            double a = got[i][k], b = want[i][k];
            if (!(fabs(a - b) <= ATOL + RTOL * fabs(b)) && !(isinf(a) && a == b)) {
                snprintf(why, why_len, "output %d[%lld] = %.7g, expected %.7g", i, (long long)k, a,
                         b);
                goto done;
            }
        }
    }
    rc = 0;
done:
    kiln_session_free(s);
    kiln_model_free(m);
    for (int i = 0; i < 16; i++) {
        free(in[i]);
        free(ints[i]);
        free(want[i]);
        free(got[i]);
    }
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int failed = 0, total_ran = 0, total_skipped = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: onnx_node DIR...\n");
        return 2;
    }
    kiln_init();
    for (int a = 1; a < argc; a++) {
        int node_suite = strstr(argv[a], "/node") != NULL;
        DIR *d = opendir(argv[a]);
        if (!d) {
            printf("SKIP %s: not found (install libonnx-testdata)\n", argv[a]);
            continue;
        }
        char *list[4096];
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) && n < 4096)
            if (e->d_name[0] != '.') list[n++] = strdup(e->d_name);
        closedir(d);
        qsort(list, (size_t)n, sizeof *list, cmp_str);
        for (int i = 0; i < n; i++) {
            char model[4096], set[4000], opname[64];
            const char *op;
            if (node_suite) {
                op = node_op(list[i]);
                if (!op) goto next;
            } else {
                /* pytorch-converted/test_Conv2d_depthwise -> Conv2d */
                snprintf(opname, sizeof opname, "%s",
                         list[i] + (strncmp(list[i], "test_", 5) ? 0 : 5));
                opname[strcspn(opname, "_")] = 0;
                op = opname;
            }
            snprintf(model, sizeof model, "%s/%s/model.onnx", argv[a], list[i]);
            if (!exists(model)) goto next;
            counts *c = bucket(op);
            for (int k = 0; k < 8; k++) {
                snprintf(set, sizeof set, "%s/%s/test_data_set_%d", argv[a], list[i], k);
                if (!exists(set)) break;
                char why[512] = "";
                int r = run_set(model, set, why, sizeof why);
                if (r == 2) {
                    c->skipped++;
                    total_skipped++;
                    printf("SKIP %s/%d: %s\n", list[i], k, why);
                    break;
                }
                c->ran++;
                total_ran++;
                if (r == 0) {
                    c->passed++;
                } else {
                    failed++;
                    printf("FAIL %s/%d: %s\n", list[i], k, why);
                }
            }
        next:
            free(list[i]);
        }
    }
    printf("\n%-22s %5s %7s %8s\n", "operator", "ran", "passed", "skipped");
    for (int i = 0; i < n_table; i++)
        printf("%-22s %5d %7d %8d\n", table[i].op, table[i].ran, table[i].passed, table[i].skipped);
    printf("\n%d test sets ran, %d failed, %d skipped\n", total_ran, failed, total_skipped);
    return failed ? 1 : 0;
}
