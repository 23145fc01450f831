/*
 * Image preprocessing on float CHW images: separable bilinear resize (with
 * optional antialiasing), crop with zero padding, centre crop, per-channel
 * normalisation, and the decode -> resize -> crop -> normalise pipeline a
 * model's kiln_preprocess describes.
 */
#include "image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Taps of a 1-D resampling: output i reads `count` inputs from `start`,
 * weighted by weights[i * max_taps ...]. */
typedef struct resample_taps {
    int *start;
    int *count;
    float *weights;
    int max_taps;
} resample_taps;

static void taps_free(resample_taps *t)
{
    free(t->start);
    free(t->count);
    free(t->weights);
}

/* Triangle-filter taps from `in` samples to `out` samples. Without
 * antialiasing the filter is one input pixel wide, which is plain bilinear
 * interpolation between the two nearest pixel centres; with it, the filter
 * widens by the shrink factor (PIL's resampling scheme). Taps that fall
 * outside the input are dropped and the rest renormalised, which clamps at
 * the edges. */
static kiln_status taps_make(int in, int out, int antialias, resample_taps *t)
{
    memset(t, 0, sizeof *t);
    double scale = (double)in / out;
    double filterscale = antialias && scale > 1.0 ? scale : 1.0;
    double support = filterscale;
    t->max_taps = (int)ceil(support) * 2 + 1;
    t->start = malloc(sizeof(int) * (size_t)out);
    t->count = malloc(sizeof(int) * (size_t)out);
    t->weights = malloc(sizeof(float) * (size_t)out * (size_t)t->max_taps);
    if (!t->start || !t->count || !t->weights) {
        taps_free(t);
        return KILN_ERR_NO_MEMORY;
    }
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)floor(center - support + 0.5);
        int hi = (int)floor(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        if (hi - lo > t->max_taps) hi = lo + t->max_taps;
        float *w = t->weights + (size_t)i * (size_t)t->max_taps;
        double sum = 0.0;
        for (int k = lo; k < hi; k++) {
            double d = fabs((k + 0.5 - center) / filterscale);
            double v = d < 1.0 ? 1.0 - d : 0.0;
            w[k - lo] = (float)v;
            sum += v;
        }
        if (sum <= 0.0) { /* cannot happen for in, out >= 1; keep it safe */
            int k = (int)center;
            lo = k < in ? k : in - 1;
            hi = lo + 1;
            w[0] = 1.0f;
            sum = 1.0;
        }
        for (int k = 0; k < hi - lo; k++) w[k] = (float)(w[k] / sum);
        t->start[i] = lo;
        t->count[i] = hi - lo;
    }
    return KILN_OK;
}

kiln_status kiln__image_resize(const kiln_image *src, int out_h, int out_w, int antialias,
                               kiln_image *dst)
{
    if (!src || !dst || src == dst || !src->data || src->height < 1 || src->width < 1 ||
        out_h < 1 || out_w < 1)
        return KILN_ERR_INVALID_ARG;
    const int C = src->channels, H = src->height, W = src->width;
    resample_taps tx, ty;
    kiln_status st = taps_make(W, out_w, antialias, &tx);
    if (st != KILN_OK) return st;
    if ((st = taps_make(H, out_h, antialias, &ty)) != KILN_OK) {
        taps_free(&tx);
        return st;
    }
    float *tmp = malloc(sizeof(float) * (size_t)H * (size_t)out_w);
    if (!tmp) {
        st = KILN_ERR_NO_MEMORY;
        goto done;
    }
    if ((st = kiln__image_alloc(dst, C, out_h, out_w)) != KILN_OK) goto done;
    for (int c = 0; c < C; c++) {
        const float *in = src->data + (size_t)c * H * W;
        float *out = dst->data + (size_t)c * out_h * out_w;
        for (int y = 0; y < H; y++) { /* horizontal pass: H x W -> H x out_w */
            const float *row = in + (size_t)y * W;
            float *trow = tmp + (size_t)y * out_w;
            for (int x = 0; x < out_w; x++) {
                const float *w = tx.weights + (size_t)x * tx.max_taps;
                const float *p = row + tx.start[x];
                float acc = 0.0f;
                for (int k = 0; k < tx.count[x]; k++) acc += w[k] * p[k];
                trow[x] = acc;
            }
        }
        for (int y = 0; y < out_h; y++) { /* vertical pass: H x out_w -> out_h x out_w */
            const float *w = ty.weights + (size_t)y * ty.max_taps;
            float *orow = out + (size_t)y * out_w;
            for (int x = 0; x < out_w; x++) orow[x] = 0.0f;
            for (int k = 0; k < ty.count[y]; k++) {
                const float *trow = tmp + (size_t)(ty.start[y] + k) * out_w;
                for (int x = 0; x < out_w; x++) orow[x] += w[k] * trow[x];
            }
        }
    }
done:
    free(tmp);
    taps_free(&tx);
    taps_free(&ty);
    return st;
}

void kiln__image_fit_short_side(int h, int w, int size, int *out_h, int *out_w)
{
    if (h <= 0 || w <= 0 || size <= 0) {
        *out_h = size;
        *out_w = size;
        return;
    }
    if (h <= w) {
        *out_h = size;
        *out_w = (int)((int64_t)size * w / h);
    } else {
        *out_w = size;
        *out_h = (int)((int64_t)size * h / w);
    }
    if (*out_h < 1) *out_h = 1;
    if (*out_w < 1) *out_w = 1;
}

kiln_status kiln__image_crop(const kiln_image *src, int top, int left, int out_h, int out_w,
                             kiln_image *dst)
{
    if (!src || !dst || src == dst || !src->data || out_h < 1 || out_w < 1)
        return KILN_ERR_INVALID_ARG;
    const int C = src->channels, H = src->height, W = src->width;
    kiln_status st = kiln__image_alloc(dst, C, out_h, out_w);
    if (st != KILN_OK) return st;
    /* The rows and columns of the window that lie inside the image. */
    int64_t y0 = top < 0 ? -(int64_t)top : 0, y1 = out_h;
    if ((int64_t)top + y1 > H) y1 = (int64_t)H - top;
    int64_t x0 = left < 0 ? -(int64_t)left : 0, x1 = out_w;
    if ((int64_t)left + x1 > W) x1 = (int64_t)W - left;
    if (y0 >= y1 || x0 >= x1) return KILN_OK; /* all padding */
    for (int c = 0; c < C; c++)
        for (int64_t y = y0; y < y1; y++)
            memcpy(dst->data + ((int64_t)c * out_h + y) * out_w + x0,
                   src->data + ((int64_t)c * H + (top + y)) * W + (left + x0),
                   sizeof(float) * (size_t)(x1 - x0));
    return KILN_OK;
}

/* torchvision's CenterCrop offset along one dimension. */
static int center_offset(int size, int crop)
{
    if (crop > size) return -((crop - size) / 2);
    return (int)nearbyint((size - crop) / 2.0);
}

kiln_status kiln__image_center_crop(const kiln_image *src, int out_h, int out_w, kiln_image *dst)
{
    if (!src) return KILN_ERR_INVALID_ARG;
    return kiln__image_crop(src, center_offset(src->height, out_h),
                            center_offset(src->width, out_w), out_h, out_w, dst);
}

void kiln__normalize_chw(float *data, int channels, int64_t plane, const float *mean,
                         const float *std)
{
    for (int c = 0; c < channels; c++) {
        const float m = mean ? mean[c] : 0.0f, inv = std ? 1.0f / std[c] : 1.0f;
        float *p = data + (int64_t)c * plane;
        for (int64_t i = 0; i < plane; i++) p[i] = (p[i] - m) * inv;
    }
}

kiln_status kiln__image_normalize(kiln_image *img, const float *mean, const float *std)
{
    if (!img || (!img->data && img->channels)) return KILN_ERR_INVALID_ARG;
    for (int c = 0; std && c < img->channels; c++)
        if (!(std[c] > 0.0f)) return KILN_ERR_INVALID_ARG;
    kiln__normalize_chw(img->data, img->channels, (int64_t)img->height * img->width, mean, std);
    return KILN_OK;
}

/* ---- the model's input pipeline --------------------------------------- */

void kiln__preprocess_defaults(kiln_preprocess *p, int channels, int height, int width)
{
    memset(p, 0, sizeof *p);
    p->channels = channels;
    p->height = height;
    p->width = width;
    p->antialias = 1;
    for (int c = 0; c < 4; c++) p->std[c] = 1.0f;
}

kiln_status kiln__preprocess_check(const kiln_preprocess *p, kiln_errbuf *err)
{
    if (!p) return kiln__fail(err, KILN_ERR_INVALID_ARG, "preprocess: none given");
    if (p->channels != 1 && p->channels != 3)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "preprocess: %d channels (want 1 or 3)",
                          p->channels);
    if (p->height < 1 || p->width < 1 || p->height > 65535 || p->width > 65535)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "preprocess: input size %dx%d", p->width,
                          p->height);
    if (p->resize < 0 || p->resize > 65535)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "preprocess: resize %d", p->resize);
    for (int c = 0; c < p->channels; c++)
        if (!(p->std[c] > 0.0f) || !isfinite(p->std[c]) || !isfinite(p->mean[c]))
            return kiln__fail(err, KILN_ERR_INVALID_ARG,
                              "preprocess: channel %d mean %g std %g (std must be > 0)", c,
                              (double)p->mean[c], (double)p->std[c]);
    return KILN_OK;
}

kiln_status kiln__preprocess_image(const kiln_image *img, const kiln_preprocess *p, float *out,
                                   kiln_errbuf *err)
{
    kiln_status st = kiln__preprocess_check(p, err);
    if (st != KILN_OK) return st;
    if (!img || !img->data || !out)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "preprocess: no image or output");
    if (img->channels != p->channels)
        return kiln__fail(err, KILN_ERR_SHAPE, "preprocess: image has %d channels, model wants %d",
                          img->channels, p->channels);
    kiln_image resized = {0}, cropped = {0};
    const kiln_image *cur = img;
    if (p->resize > 0) {
        int rh, rw;
        kiln__image_fit_short_side(img->height, img->width, p->resize, &rh, &rw);
        if (rh != img->height || rw != img->width) {
            if ((st = kiln__image_resize(img, rh, rw, p->antialias, &resized)) != KILN_OK)
                goto fail;
            cur = &resized;
        }
        if (cur->height != p->height || cur->width != p->width) {
            if ((st = kiln__image_center_crop(cur, p->height, p->width, &cropped)) != KILN_OK)
                goto fail;
            cur = &cropped;
        }
    } else if (img->height != p->height || img->width != p->width) {
        if ((st = kiln__image_resize(img, p->height, p->width, p->antialias, &resized)) != KILN_OK)
            goto fail;
        cur = &resized;
    }
    const int64_t plane = (int64_t)p->height * p->width;
    memcpy(out, cur->data, sizeof(float) * (size_t)(plane * p->channels));
    kiln__normalize_chw(out, p->channels, plane, p->mean, p->std);
    kiln__image_free(&resized);
    kiln__image_free(&cropped);
    return KILN_OK;
fail:
    kiln__image_free(&resized);
    kiln__image_free(&cropped);
    return kiln__fail(err, st, "preprocess: %dx%d -> %dx%d: %s", img->width, img->height, p->width,
                      p->height, kiln_strerror(st));
}

kiln_status kiln__preprocess_encoded(const void *buf, size_t len, const kiln_preprocess *p,
                                     float *out, kiln_errbuf *err)
{
    kiln_status st = kiln__preprocess_check(p, err);
    if (st != KILN_OK) return st;
    kiln_image img;
    if ((st = kiln__image_decode(buf, len, p->channels, p->max_pixels, &img, err)) != KILN_OK)
        return st;
    st = kiln__preprocess_image(&img, p, out, err);
    kiln__image_free(&img);
    return st;
}
