/* kiln predict: top-k labels for JPEG/PNG images. */
#include "cli.h"
#include "kiln.h"

#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IMAGE_FILE (64u << 20)

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && (unsigned long)n <= MAX_IMAGE_FILE && fseek(f, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)n + 1);
            if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            }
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* Scores as probabilities: softmax unless they already are some. */
static void to_probs(float *y, int n)
{
    double sum = 0;
    int probs = 1;
    for (int i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] > 1) probs = 0;
        sum += y[i];
    }
    if (probs && fabs(sum - 1) < 1e-3) return;
    float mx = y[0];
    for (int i = 1; i < n; i++) mx = y[i] > mx ? y[i] : mx;
    sum = 0;
    for (int i = 0; i < n; i++) sum += (y[i] = expf(y[i] - mx));
    for (int i = 0; i < n; i++) y[i] = (float)(y[i] / sum);
}

int cmd_predict(int argc, char **argv)
{
    static const struct option opts[] = {{"top", required_argument, NULL, 'k'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int top = 5, threads = 1, json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "k:t:jh", opts, NULL)) != -1) {
        if (c == 'k')
            top = atoi(optarg);
        else if (c == 't')
            threads = atoi(optarg);
        else if (c == 'j')
            json = 1;
        else if (c == 'h') {
            printf("usage: kiln predict M.kiln|M.onnx IMAGE... [--top K] [--threads N] [--json]\n"
                   "Decodes each JPEG/PNG image, resizes and normalises it as the model's\n"
                   "metadata says (resize, mean, std) and prints the top-K classes with\n"
                   "their labels (metadata 'labels') and probabilities.\n");
            return KILN_EXIT_OK;
        } else
            return KILN_EXIT_USAGE;
    }
    if (argc - optind < 2 || top < 1 || threads < 1)
        return cli_error(KILN_EXIT_USAGE, "predict", "expects a model and at least one image");
    const char *path = argv[optind];
    size_t plen = strlen(path);
    kiln_model *m = NULL;
    kiln_status st = plen > 5 && !strcmp(path + plen - 5, ".onnx")
                         ? kiln_model_import_onnx(path, &m)
                         : kiln_model_open(path, 0, &m);
    if (st) return cli_error(KILN_EXIT_FAIL, "predict", "%s", kiln_last_error());
    kiln_session *s = NULL;
    kiln_session_options so = {threads, 1};
    int rc = KILN_EXIT_FAIL;
    float *x = NULL, *y = NULL;
    int *order = NULL;
    json_t *results = json ? json_array() : NULL;
    kiln_io_info ii, oi;
    if ((st = kiln_session_create(m, &so, &s))) {
        cli_error(KILN_EXIT_FAIL, "predict", "%s", kiln_last_error());
        goto done;
    }
    kiln_session_input(s, 0, &ii);
    kiln_session_output(s, 0, &oi);
    size_t nx = 1, ny = 1;
    for (int d = 0; d < ii.ndim; d++) nx *= (size_t)ii.dims[d];
    for (int d = 0; d < oi.ndim; d++) ny *= (size_t)oi.dims[d];
    x = malloc(nx * sizeof *x);
    y = malloc(ny * sizeof *y);
    order = malloc(ny * sizeof *order);
    if (!x || !y || !order || kiln_model_output_count(m) != 1) {
        cli_error(KILN_EXIT_FAIL, "predict", "out of memory or not a one-output model");
        goto done;
    }
    if (top > (int)ny) top = (int)ny;
    int failures = 0;
    for (int a = optind + 1; a < argc; a++) {
        size_t len = 0;
        unsigned char *img = read_all(argv[a], &len);
        if (!img) {
            cli_error(KILN_EXIT_FAIL, "predict", "%s: cannot read (or over 64 MiB)", argv[a]);
            failures++;
            continue;
        }
        st = kiln_model_image_input(m, img, len, x, nx);
        free(img);
        const float *ins[1] = {x};
        float *outs[1] = {y};
        if (!st) st = kiln_session_run(s, ins, outs);
        if (st) {
            cli_error(KILN_EXIT_FAIL, "predict", "%s: %s", argv[a], kiln_last_error());
            failures++;
            continue;
        }
        to_probs(y, (int)ny);
        for (size_t i = 0; i < ny; i++) order[i] = (int)i;
        for (int i = 0; i < top; i++) /* partial selection sort: k is small */
            for (size_t j = (size_t)i + 1; j < ny; j++)
                if (y[order[j]] > y[order[i]]) {
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
        json_t *list = json ? json_array() : NULL;
        if (!json) printf("%s\n", argv[a]);
        for (int i = 0; i < top; i++) {
            char label[256];
            if (!kiln_model_label(m, order[i], label, sizeof label))
                snprintf(label, sizeof label, "class %d", order[i]);
            if (json)
                json_array_append_new(list, json_pack("{s:i, s:s, s:f}", "class", order[i], "label",
                                                      label, "probability", (double)y[order[i]]));
            else
                printf("  %6.2f%%  %5d  %s\n", 100.0 * y[order[i]], order[i], label);
        }
        if (json)
            json_array_append_new(results, json_pack("{s:s, s:o}", "image", argv[a], "top", list));
    }
    if (json) {
        char *text = json_dumps(results, JSON_INDENT(2));
        puts(text);
        free(text);
    }
    rc = failures ? KILN_EXIT_FAIL : KILN_EXIT_OK;
done:
    json_decref(results);
    free(x);
    free(y);
    free(order);
    kiln_session_free(s);
    kiln_model_free(m);
    return rc;
}
