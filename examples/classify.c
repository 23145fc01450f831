/*
 * classify: the smallest complete use of libkiln. Opens a model, makes a
 * session, turns a JPEG/PNG into the model's input (resize and normalise
 * as its metadata says), runs it and prints the top 5 classes.
 *
 * Build against an installed libkiln:
 *     cc -O2 classify.c $(pkg-config --cflags --libs kiln) -o classify
 *     ./classify model.kiln /usr/share/darknet/data/dog.jpg
 */
#include <kiln.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return buf;
}

static size_t elements(const kiln_io_info *info)
{
    size_t n = 1;
    for (int d = 0; d < info->ndim; d++) n *= (size_t)info->dims[d];
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: classify MODEL.kiln IMAGE\n");
        return 2;
    }
    kiln_model *model;
    kiln_session *session;
    kiln_session_options opts = {.threads = 1, .batch = 1};
    if (kiln_model_open(argv[1], 0, &model) != KILN_OK) {
        fprintf(stderr, "classify: %s\n", kiln_last_error());
        return 1;
    }
    if (kiln_session_create(model, &opts, &session) != KILN_OK) {
        fprintf(stderr, "classify: %s\n", kiln_last_error());
        return 1;
    }
    kiln_io_info in, out;
    kiln_session_input(session, 0, &in);
    kiln_session_output(session, 0, &out);
    size_t n_in = elements(&in), n_out = elements(&out);
    float *x = malloc(n_in * sizeof *x), *y = malloc(n_out * sizeof *y);
    size_t len = 0;
    unsigned char *image = read_file(argv[2], &len);
    if (!x || !y || !image) {
        fprintf(stderr, "classify: cannot read %s\n", argv[2]);
        return 1;
    }
    const float *inputs[] = {x};
    float *outputs[] = {y};
    if (kiln_model_image_input(model, image, len, x, n_in) != KILN_OK ||
        kiln_session_run(session, inputs, outputs) != KILN_OK) {
        fprintf(stderr, "classify: %s\n", kiln_last_error());
        return 1;
    }
    /* probabilities (the output may be logits) */
    float max = y[0];
    double sum = 0;
    for (size_t i = 1; i < n_out; i++) max = y[i] > max ? y[i] : max;
    for (size_t i = 0; i < n_out; i++) sum += exp(y[i] - max);
    for (int k = 0; k < 5 && k < (int)n_out; k++) {
        size_t best = 0;
        for (size_t i = 1; i < n_out; i++)
            if (y[i] > y[best]) best = i;
        char label[128];
        if (!kiln_model_label(model, (int)best, label, sizeof label))
            snprintf(label, sizeof label, "class %zu", best);
        printf("%6.2f%%  %s\n", 100.0 * exp(y[best] - max) / sum, label);
        y[best] = -INFINITY;
    }
    free(image);
    free(x);
    free(y);
    kiln_session_free(session);
    kiln_model_free(model);
    return 0;
}
