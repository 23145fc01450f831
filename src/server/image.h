/*
 * Decoding a request's image (JPEG or PNG) into the float tensor a model
 * takes: resized to the model's height and width (bilinear), grey or RGB to
 * match its channels, scaled to [0, 1] and normalised with the model's
 * per-channel mean and std, in NCHW layout.
 *
 * Input is untrusted: the declared size is checked against max_pixels
 * before any pixel is decoded, and decoder errors are returned, never
 * fatal.
 */
#ifndef KILN_SERVER_IMAGE_H
#define KILN_SERVER_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct image_u8 {
    int width, height, channels; /* channels 1 (grey) or 3 (RGB) */
    uint8_t *pixels;             /* height * width * channels, row-major, interleaved */
} image_u8;

/* Detects JPEG or PNG from the first bytes. 0, or -1 with a reason. The
 * decoded image has 1 channel when want_channels is 1, else 3. */
int image_decode(const void *data, size_t len, int want_channels, uint64_t max_pixels,
                 image_u8 *out, char *err, size_t errlen);
void image_free(image_u8 *img);

/* Resizes and normalises into out[channels * h * w] (NCHW, one image).
 * mean/std hold `channels` values (NULL: 0 and 1). */
void image_to_tensor(const image_u8 *img, int h, int w, const float *mean, const float *std,
                     float *out);

#endif
