/*
 * Images as float32 CHW arrays: decoding JPEG and PNG from memory, and the
 * preprocessing a model's input needs (bilinear resize, crop, per-channel
 * normalisation).
 *
 * Pixel values: a decoded image holds intensities in [0, 1] (8-bit samples
 * divided by 255, 16-bit PNG samples by 65535). Normalisation then maps them
 * to (x - mean[c]) / std[c], with mean and std on that [0, 1] scale (the
 * usual ImageNet values are mean 0.485 0.456 0.406, std 0.229 0.224 0.225).
 *
 * Limits: decoding reads the image's header first and refuses an image with
 * more than `max_pixels` pixels (KILN_ERR_LIMIT) before allocating anything
 * for its pixels, so a small file cannot claim a huge picture. Corrupt or
 * truncated input is KILN_ERR_FORMAT with a message, never a crash.
 *
 * Thread safety: no shared state; distinct images may be used by distinct
 * threads at once.
 */
#ifndef KILN_RUNTIME_IMAGE_H
#define KILN_RUNTIME_IMAGE_H

#include "errbuf.h"
#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

/* Used when a caller passes max_pixels <= 0: 8192 x 8192. */
#define KILN_IMAGE_DEFAULT_MAX_PIXELS ((int64_t)8192 * 8192)

/* An image: `channels` planes of height x width floats, row-major, owned.
 * Invariant: data holds channels * height * width floats (or is NULL when
 * all three are 0). */
typedef struct kiln_image {
    float *data;
    int channels; /* 1 (gray), 3 (RGB) or 4 (RGBA) */
    int height;
    int width;
} kiln_image;

/* An image of the given size, zero-filled. */
kiln_status kiln__image_alloc(kiln_image *img, int channels, int height, int width);
/* Frees the pixels and clears the descriptor; safe on a cleared image. */
void kiln__image_free(kiln_image *img);

typedef enum kiln_image_format {
    KILN_IMAGE_UNKNOWN = 0,
    KILN_IMAGE_JPEG,
    KILN_IMAGE_PNG,
} kiln_image_format;

/* The format named by the first bytes of `buf` (magic numbers). */
kiln_image_format kiln__image_sniff(const void *buf, size_t len);

/*
 * Decodes a JPEG or PNG held in memory into `out` (which the call fills;
 * free it with kiln__image_free()).
 *
 * `channels` is what the caller wants: 1 (gray), 3 (RGB), 4 (RGBA), or 0 for
 * the image's own layout (gray and gray+alpha give 1, colour gives 3,
 * colour+alpha gives 4). Conversions: colour to gray uses ITU-R BT.601 luma
 * (0.299 R + 0.587 G + 0.114 B); gray to colour repeats the plane; alpha is
 * dropped (not composited), and added as 1.0 when asked for. Palette PNGs
 * are expanded; CMYK JPEGs (Adobe, inverted) are converted to RGB.
 *
 * Errors: KILN_ERR_FORMAT (not JPEG/PNG, corrupt, truncated), KILN_ERR_LIMIT
 * (more than max_pixels pixels; <= 0 means KILN_IMAGE_DEFAULT_MAX_PIXELS),
 * KILN_ERR_INVALID_ARG, KILN_ERR_NO_MEMORY. On error `out` is cleared.
 */
kiln_status kiln__image_decode(const void *buf, size_t len, int channels, int64_t max_pixels,
                               kiln_image *out, kiln_errbuf *err);

/* Reads the file at `path` (at most max_file_bytes bytes; <= 0 means 256 MiB)
 * and decodes it as kiln__image_decode() does. Messages name the path. */
kiln_status kiln__image_decode_file(const char *path, int channels, int64_t max_pixels,
                                    int64_t max_file_bytes, kiln_image *out, kiln_errbuf *err);

/* Width and height from the header only, without decoding the pixels. */
kiln_status kiln__image_probe(const void *buf, size_t len, int *height, int *width, int *channels,
                              kiln_errbuf *err);

/*
 * Bilinear resize of every plane to out_h x out_w into `dst` (allocated by
 * the call; `dst` must not be `src`). Sample positions use pixel centres
 * (src = (dst + 0.5) * in/out - 0.5, edges clamped), as OpenCV's
 * INTER_LINEAR and PyTorch's interpolate(align_corners=False) do. With
 * `antialias` set, shrinking widens the triangle filter to the scale factor
 * so every source pixel contributes, as PIL's BILINEAR (and torchvision's
 * Resize) do; enlarging is the same either way.
 */
kiln_status kiln__image_resize(const kiln_image *src, int out_h, int out_w, int antialias,
                               kiln_image *dst);

/* The size that scales the shorter side of h x w to `size` and keeps the
 * aspect ratio (the longer side truncated, as torchvision's Resize(int)). */
void kiln__image_fit_short_side(int h, int w, int size, int *out_h, int *out_w);

/*
 * The out_h x out_w window of `src` whose top-left corner is (top, left)
 * into `dst` (allocated). The window may extend past the image (negative
 * top/left, or beyond the far edge): pixels outside are 0, which is zero
 * padding.
 */
kiln_status kiln__image_crop(const kiln_image *src, int top, int left, int out_h, int out_w,
                             kiln_image *dst);

/* A centred out_h x out_w crop (torchvision's CenterCrop: the offset is
 * (size - crop) / 2 rounded half to even; a crop larger than the image pads
 * with zeros). */
kiln_status kiln__image_center_crop(const kiln_image *src, int out_h, int out_w, kiln_image *dst);

/* In place: x = (x - mean[c]) / std[c] on plane c. std[c] must be > 0. */
kiln_status kiln__image_normalize(kiln_image *img, const float *mean, const float *std);

/* Per-channel normalisation of a CHW array (the same as above, for data
 * that is not in a kiln_image, such as a batch slot). */
void kiln__normalize_chw(float *data, int channels, int64_t plane, const float *mean,
                         const float *std);

/*
 * How a model wants its input image, stored with the model: decode to
 * `channels`, resize, centre-crop to height x width, normalise.
 *
 *   resize > 0: scale the shorter side to `resize` (aspect kept), then take
 *               a centred height x width crop (ImageNet style: 256 -> 224);
 *   resize = 0: resize straight to height x width (aspect not kept; MNIST,
 *               CIFAR style).
 */
typedef struct kiln_preprocess {
    int channels;       /* 1 or 3 */
    int height, width;  /* the model's input size */
    int resize;         /* see above */
    int antialias;      /* kiln__image_resize()'s flag */
    float mean[4];      /* per channel, on the [0, 1] scale */
    float std[4];       /* per channel, > 0; 1 = no scaling */
    int64_t max_pixels; /* decode limit; <= 0 = default */
} kiln_preprocess;

/* mean 0, std 1, no resize, antialias on, default limit. */
void kiln__preprocess_defaults(kiln_preprocess *p, int channels, int height, int width);

/* Checks a kiln_preprocess (sizes positive, std > 0, channels 1 or 3). */
kiln_status kiln__preprocess_check(const kiln_preprocess *p, kiln_errbuf *err);

/* Applies `p` to an already decoded image, writing channels*height*width
 * floats to `out` (CHW). */
kiln_status kiln__preprocess_image(const kiln_image *img, const kiln_preprocess *p, float *out,
                                   kiln_errbuf *err);

/* Decodes an encoded image (JPEG/PNG in memory) and applies `p`. */
kiln_status kiln__preprocess_encoded(const void *buf, size_t len, const kiln_preprocess *p,
                                     float *out, kiln_errbuf *err);

#endif
