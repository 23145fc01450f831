/*
 * libFuzzer target: JPEG and PNG decoding and preprocessing, both paths -
 * the runtime's (src/runtime/image.c + image_ops.c: `kiln predict`, image
 * folders, with resize, centre crop and normalisation) and the server's
 * (src/server/image.c: decode with a pixel limit, then image_to_tensor).
 * The first byte picks the target size and channels, the rest is the file.
 */
#include "../../src/runtime/image.h"
#include "../../src/server/image.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIXELS (4096 * 4096)

static void check_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != x[i]) abort(); /* NaN: mean/std are finite, std > 0 */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned sel = data[0];
    data++, size--;
    int channels = sel & 1 ? 3 : 1;
    int side = 1 + (int)(sel >> 1) % 40; /* 1..40 */
    float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    float *out = malloc((size_t)channels * side * side * sizeof *out);
    if (!out) return 0;

    /* runtime */
    kiln_preprocess p;
    kiln__preprocess_defaults(&p, channels, side, side);
    p.resize = sel & 2 ? side + side / 7 : 0;
    p.antialias = (sel >> 2) & 1;
    p.max_pixels = MAX_PIXELS;
    memcpy(p.mean, mean, sizeof mean);
    memcpy(p.std, std, sizeof std);
    kiln_errbuf err;
    if (kiln__preprocess_encoded(data, size, &p, out, &err) == KILN_OK)
        check_finite(out, (size_t)channels * side * side);
    int h, w, c;
    kiln__image_probe(data, size, &h, &w, &c, &err);

    /* server */
    image_u8 img = {0};
    char msg[256];
    if (image_decode(data, size, channels, MAX_PIXELS, &img, msg, sizeof msg) == 0) {
        if (img.width < 1 || img.height < 1 || img.channels != channels ||
            (uint64_t)img.width * img.height > MAX_PIXELS)
            abort();
        image_to_tensor(&img, side, side, mean, std, out);
        check_finite(out, (size_t)channels * side * side);
        image_free(&img);
    }
    free(out);
    return 0;
}
