/* Image -> model input, by the model's preprocessing metadata. */
#include "image.h"
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses up to `max` comma-separated floats; returns how many. */
static int parse_floats(const char *s, float *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        float v = strtof(s, &end);
        if (end == s) return -1;
        out[n++] = v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    return n;
}

kiln_status kiln_model_image_input(const kiln_model *m, const void *buf, size_t len, float *out,
                                   size_t count)
{
    if (!m || !buf || !out) return km_error(KILN_ERR_INVALID_ARG, "null argument");
    kiln_io_info in;
    kiln_status st = kiln_model_input(m, 0, &in);
    if (st) return st;
    if (in.ndim != 4 || (in.dims[1] != 1 && in.dims[1] != 3))
        return km_error(KILN_ERR_SHAPE, "input '%s' is not an image (N x 1|3 x H x W)", in.name);
    kiln_preprocess p;
    kiln__preprocess_defaults(&p, (int)in.dims[1], (int)in.dims[2], (int)in.dims[3]);
    if ((size_t)(p.channels * p.height * p.width) > count)
        return km_error(KILN_ERR_RANGE, "output holds %zu floats; the input needs %d", count,
                        p.channels * p.height * p.width);
    const char *r = kiln_model_meta(m, "resize");
    if (r) p.resize = atoi(r);
    float v[4];
    for (int k = 0; k < 2; k++) {
        const char *txt = kiln_model_meta(m, k ? "std" : "mean");
        if (!txt) continue;
        int n = parse_floats(txt, v, 4);
        if (n != 1 && n != p.channels)
            return km_error(KILN_ERR_FORMAT, "metadata '%s' has %d values for %d channels",
                            k ? "std" : "mean", n, p.channels);
        for (int c = 0; c < p.channels; c++) (k ? p.std : p.mean)[c] = v[n == 1 ? 0 : c];
    }
    kiln_errbuf err = {""};
    if ((st = kiln__preprocess_check(&p, &err)) ||
        (st = kiln__preprocess_encoded(buf, len, &p, out, &err)))
        return km_error(st, "%s", err.msg);
    return KILN_OK;
}
