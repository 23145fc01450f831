/* kiln import / inspect / run: model files on the command line. */
#include "cli.h"
#include "kiln.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* A model from a .kiln, .onnx or .yaml file. */
static kiln_status open_any(const char *path, uint64_t seed, kiln_model **m)
{
    if (ends_with(path, ".onnx")) return kiln_model_import_onnx(path, m);
    if (ends_with(path, ".yaml") || ends_with(path, ".yml"))
        return kiln_model_from_yaml(path, seed, m);
    return kiln_model_open(path, 0, m);
}

static int model_error(const char *cmd, kiln_status st)
{
    return cli_error(KILN_EXIT_FAIL, cmd, "%s (%s)", kiln_last_error(), kiln_strerror(st));
}

/* ---- import ------------------------------------------------------------ */

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"compress", no_argument, NULL, 'z'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"labels", required_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *out = NULL, *name = NULL, *labels = NULL;
    uint64_t seed = 1;
    unsigned flags = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:s:zn:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            out = optarg;
            break;
        case 's':
            seed = strtoull(optarg, NULL, 10);
            break;
        case 'z':
            flags |= KILN_SAVE_COMPRESS;
            break;
        case 'n':
            name = optarg;
            break;
        case 'l':
            labels = optarg;
            break;
        case 'h':
            printf("usage: kiln import MODEL.onnx|ARCH.yaml|M.kiln -o OUT.kiln [--seed N]\n"
                   "         [--compress] [--name NAME] [--labels FILE]\n"
                   "Converts a model to .kiln (optimized, weights prepacked). A YAML\n"
                   "architecture gets seeded random weights. --compress writes the zlib\n"
                   "transport form; importing that again writes the plain form.\n"
                   "--labels: a text file with one class label per line.\n");
            return KILN_EXIT_OK;
        default:
            return KILN_EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !out)
        return cli_error(KILN_EXIT_USAGE, "import", "expects one input file and -o OUT.kiln");
    kiln_model *m;
    kiln_status st = open_any(argv[optind], seed, &m);
    if (st) return model_error("import", st);
    if (name) st = kiln_model_set_meta(m, "name", name);
    if (!st && labels) {
        FILE *f = fopen(labels, "rb");
        if (!f) {
            kiln_model_free(m);
            return cli_error(KILN_EXIT_FAIL, "import", "%s: cannot open", labels);
        }
        char *text = calloc(1, 1 << 20);
        size_t n = text ? fread(text, 1, (1 << 20) - 1, f) : 0;
        fclose(f);
        while (n && (text[n - 1] == '\n' || text[n - 1] == '\r')) text[--n] = 0;
        st = text ? kiln_model_set_meta(m, "labels", text) : KILN_ERR_NO_MEMORY;
        free(text);
    }
    if (!st) st = kiln_model_save(m, out, flags);
    kiln_model_free(m);
    if (st) return model_error("import", st);
    return KILN_EXIT_OK;
}

/* ---- inspect ----------------------------------------------------------- */

typedef struct layer_ctx {
    json_t *arr;
} layer_ctx;

static void print_layer(void *ctx, const char *name, const char *op, const char *shape,
                        int64_t params, int64_t flops)
{
    layer_ctx *c = ctx;
    if (c->arr) {
        json_array_append_new(c->arr, json_pack("{s:s, s:s, s:s, s:I, s:I}", "name", name, "op", op,
                                                "shape", shape, "params", (json_int_t)params,
                                                "flops", (json_int_t)flops));
        return;
    }
    printf("  %-28s %-22s %-18s %10lld %12lld\n", name, op, shape, (long long)params,
           (long long)flops);
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"batch", required_argument, NULL, 'b'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int json = 0, c;
    kiln_session_options so = {1, 0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "jb:t:h", opts, NULL)) != -1) {
        if (c == 'j')
            json = 1;
        else if (c == 'b')
            so.batch = atoi(optarg);
        else if (c == 't')
            so.threads = atoi(optarg);
        else if (c == 'h') {
            printf("usage: kiln inspect M.kiln|M.onnx|A.yaml [--batch N] [--threads N] [--json]\n"
                   "Layers after optimization (fused ops shown as Conv+add+relu), output\n"
                   "shapes, parameters, FLOPs, metadata and the planned arena size.\n");
            return KILN_EXIT_OK;
        } else
            return KILN_EXIT_USAGE;
    }
    if (optind != argc - 1 || so.batch < 0 || so.threads < 0)
        return cli_error(KILN_EXIT_USAGE, "inspect", "expects one model file");
    kiln_model *m;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kiln_status st = open_any(argv[optind], 1, &m);
    kiln_session *s = NULL;
    if (!st) st = kiln_session_create(m, &so, &s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st) {
        kiln_model_free(m);
        return model_error("inspect", st);
    }
    double load_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    layer_ctx lc = {json ? json_array() : NULL};
    json_t *meta = json_object(), *ins = json_array(), *outs = json_array();
    for (int i = 0; i < kiln_model_meta_count(m); i++) {
        const char *k = kiln_model_meta_key(m, i);
        json_object_set_new(meta, k, json_string(kiln_model_meta(m, k)));
    }
    for (int io = 0; io < 2; io++) {
        int n = io ? kiln_model_output_count(m) : kiln_model_input_count(m);
        for (int i = 0; i < n; i++) {
            kiln_io_info info;
            (io ? kiln_session_output : kiln_session_input)(s, i, &info);
            json_t *dims = json_array();
            for (int d = 0; d < info.ndim; d++)
                json_array_append_new(dims, json_integer(info.dims[d]));
            json_array_append_new(io ? outs : ins,
                                  json_pack("{s:s, s:o}", "name", info.name, "shape", dims));
        }
    }
    if (!json) {
        printf("model      %s\n", argv[optind]);
        for (int i = 0; i < kiln_model_meta_count(m); i++) {
            const char *k = kiln_model_meta_key(m, i);
            const char *v = kiln_model_meta(m, k);
            if (!strcmp(k, "labels"))
                printf("%-10s %d labels\n", k, kiln_model_label_count(m));
            else
                printf("%-10s %s\n", k, v);
        }
        char *is = json_dumps(ins, JSON_COMPACT), *os = json_dumps(outs, JSON_COMPACT);
        printf("inputs     %s\noutputs    %s\n", is, os);
        free(is);
        free(os);
        printf("\n  %-28s %-22s %-18s %10s %12s\n", "layer", "op", "output", "params", "flops");
    }
    kiln_session_layers(s, print_layer, &lc);
    int64_t params = kiln_model_param_count(m), flops = kiln_model_flops(m);
    size_t arena = kiln_session_arena_bytes(s);
    if (json) {
        json_t *o =
            json_pack("{s:s, s:o, s:o, s:o, s:o, s:i, s:I, s:I, s:I, s:f}", "model", argv[optind],
                      "meta", meta, "inputs", ins, "outputs", outs, "layers", lc.arr, "layer_count",
                      kiln_model_layer_count(m), "params", (json_int_t)params, "flops",
                      (json_int_t)flops, "arena_bytes", (json_int_t)arena, "load_ms", load_ms);
        char *text = json_dumps(o, JSON_INDENT(2));
        puts(text);
        free(text);
        json_decref(o);
    } else {
        printf("\nlayers %d  params %lld  GFLOPs %.3f (batch %s)  arena %.2f MB  open+compile "
               "%.1f ms\n",
               kiln_model_layer_count(m), (long long)params, (double)flops / 1e9,
               so.batch ? "as given" : "of the model", arena / 1048576.0, load_ms);
        json_decref(meta);
        json_decref(ins);
        json_decref(outs);
    }
    kiln_session_free(s);
    kiln_model_free(m);
    return KILN_EXIT_OK;
}

/* ---- run --------------------------------------------------------------- */

/* Reads a little-endian float32 C-order .npy file. */
static float *npy_read(const char *path, int *ndim, int64_t *dims, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    unsigned char pre[10];
    float *data = NULL;
    char hdr[4096];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) {
        snprintf(err, errlen, "%s: not a .npy file", path);
        goto done;
    }
    size_t hl = pre[8] | (size_t)pre[9] << 8;
    if (pre[6] != 1) {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) goto bad;
        hl |= (size_t)more[0] << 16 | (size_t)more[1] << 24;
    }
    if (hl >= sizeof hdr || fread(hdr, 1, hl, f) != hl) goto bad;
    hdr[hl] = 0;
    if (!strstr(hdr, "'<f4'") || strstr(hdr, "'fortran_order': True")) {
        snprintf(err, errlen, "%s: only little-endian float32 C-order arrays are read", path);
        goto done;
    }
    char *sh = strstr(hdr, "'shape': (");
    if (!sh) goto bad;
    sh += 10;
    *ndim = 0;
    int64_t total = 1;
    while (*sh && *sh != ')') {
        char *end;
        long long v = strtoll(sh, &end, 10);
        if (end == sh) break;
        if (*ndim == KILN_MAX_DIMS || v < 0 || v > (1LL << 32)) goto bad;
        dims[(*ndim)++] = v;
        total *= v;
        if (total > (1LL << 32)) goto bad;
        sh = end;
        while (*sh == ',' || *sh == ' ') sh++;
    }
    data = malloc((size_t)(total ? total : 1) * sizeof(float));
    if (!data || fread(data, sizeof(float), (size_t)total, f) != (size_t)total) {
        free(data);
        data = NULL;
        goto bad;
    }
    goto done;
bad:
    snprintf(err, errlen, "%s: malformed or truncated .npy file", path);
done:
    fclose(f);
    return data;
}

static int npy_write(const char *path, int ndim, const int64_t *dims, const float *data)
{
    char shape[256] = "";
    size_t used = 0;
    int64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        used += (size_t)snprintf(shape + used, sizeof shape - used, "%lld,%s", (long long)dims[i],
                                 i + 1 < ndim ? " " : "");
        total *= dims[i];
    }
    if (ndim > 1) shape[used - 1] = 0;
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }",
                     shape);
    int pad = 64 - (10 + n + 1) % 64;
    if (pad == 64) pad = 0;
    memset(hdr + n, ' ', (size_t)pad);
    hdr[n + pad] = '\n';
    int hl = n + pad + 1;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned char pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)hl, (unsigned char)(hl >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)hl, f) == (size_t)hl &&
             fwrite(data, sizeof(float), (size_t)total, f) == (size_t)total;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"input", required_argument, NULL, 'i'},   {"output", required_argument, NULL, 'o'},
        {"threads", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},          {0}};
    const char *in = NULL, *out = NULL;
    int threads = 1, json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "i:o:t:jh", opts, NULL)) != -1) {
        if (c == 'i')
            in = optarg;
        else if (c == 'o')
            out = optarg;
        else if (c == 't')
            threads = atoi(optarg);
        else if (c == 'j')
            json = 1;
        else if (c == 'h') {
            printf("usage: kiln run M.kiln|M.onnx --input X.npy [--output Y.npy] [--threads N]\n"
                   "         [--json]\n"
                   "Runs the model on a float32 .npy tensor (any batch size: the first\n"
                   "dimension). Writes the first output to --output, or prints it as JSON.\n");
            return KILN_EXIT_OK;
        } else
            return KILN_EXIT_USAGE;
    }
    if (optind != argc - 1 || !in || threads < 1)
        return cli_error(KILN_EXIT_USAGE, "run", "expects a model and --input X.npy");
    char err[256];
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    float *x = npy_read(in, &ndim, dims, err, sizeof err);
    if (!x) return cli_error(KILN_EXIT_FAIL, "run", "%s", err);
    kiln_model *m;
    kiln_status st = open_any(argv[optind], 1, &m);
    if (st) {
        free(x);
        return model_error("run", st);
    }
    int rc = KILN_EXIT_FAIL;
    kiln_session *s = NULL;
    float *y = NULL;
    kiln_io_info ii, oi;
    if (kiln_model_input_count(m) != 1) {
        cli_error(KILN_EXIT_FAIL, "run", "the model has %d inputs; run takes one",
                  kiln_model_input_count(m));
        goto done;
    }
    kiln_model_input(m, 0, &ii);
    int same = ndim == ii.ndim && ndim > 0;
    for (int d = 1; same && d < ndim; d++) same = dims[d] == ii.dims[d];
    if (!same || dims[0] < 1) {
        cli_error(KILN_EXIT_FAIL, "run", "input '%s' needs shape Nx... matching the model's",
                  ii.name);
        goto done;
    }
    kiln_session_options so = {threads, (int)dims[0]};
    if ((st = kiln_session_create(m, &so, &s))) {
        rc = model_error("run", st);
        goto done;
    }
    kiln_session_output(s, 0, &oi);
    int64_t total = 1;
    for (int d = 0; d < oi.ndim; d++) total *= oi.dims[d];
    int n_out = kiln_model_output_count(m);
    float **outs = calloc((size_t)n_out, sizeof *outs);
    for (int i = 0; outs && i < n_out; i++) {
        kiln_io_info info;
        kiln_session_output(s, i, &info);
        int64_t t = 1;
        for (int d = 0; d < info.ndim; d++) t *= info.dims[d];
        outs[i] = malloc((size_t)t * sizeof(float));
        if (!outs[i]) st = KILN_ERR_NO_MEMORY;
    }
    const float *ins[1] = {x};
    if (!outs)
        st = KILN_ERR_NO_MEMORY;
    else if (!st)
        st = kiln_session_run(s, ins, outs);
    y = outs ? outs[0] : NULL;
    for (int i = 1; outs && i < n_out; i++) free(outs[i]);
    free(outs);
    if (st) {
        rc = model_error("run", st);
        goto done;
    }
    if (out && npy_write(out, oi.ndim, oi.dims, y)) {
        cli_error(KILN_EXIT_FAIL, "run", "%s: cannot write", out);
        goto done;
    }
    if (json || !out) {
        json_t *shape = json_array(), *vals = json_array();
        for (int d = 0; d < oi.ndim; d++) json_array_append_new(shape, json_integer(oi.dims[d]));
        for (int64_t i = 0; i < total; i++) json_array_append_new(vals, json_real(y[i]));
        json_t *o = json_pack("{s:s, s:o, s:o}", "name", oi.name, "shape", shape, "data", vals);
        char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
        puts(text);
        free(text);
        json_decref(o);
    }
    rc = KILN_EXIT_OK;
done:
    free(y);
    free(x);
    kiln_session_free(s);
    kiln_model_free(m);
    return rc;
}
