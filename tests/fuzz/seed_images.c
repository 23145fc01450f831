/*
 * Writes the small JPEG and PNG seeds of the image fuzz targets into the
 * directory given (make-corpus compiles and runs it, with the encoders of
 * tests/unit/fixtures.c). Pixels are a smooth gradient with a square, so
 * the encoders use more than one DC/AC code.
 */
#include "../unit/fixtures.h"

#include <stdio.h>
#include <stdlib.h>

static void put(const char *dir, const char *name, const uint8_t *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!data || fixture_write(path, data, len)) {
        fprintf(stderr, "seed_images: cannot write %s\n", path);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seed_images DIR\n");
        return 2;
    }
    enum { W = 12, H = 10 };
    uint8_t px[W * H * 4];
    uint16_t px16[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 4; c++) {
                int in = x >= 3 && x < 8 && y >= 2 && y < 6;
                px[(y * W + x) * 4 + c] = (uint8_t)(in ? 255 - 40 * c : x * 20 + y * 5 + c * 30);
            }
    for (int i = 0; i < W * H * 3; i++) px16[i] = (uint16_t)(i * 977);
    size_t len;
    uint8_t *d;
    /* fixture_* take tightly packed pixels of `channels` samples */
    uint8_t g[W * H], rgb[W * H * 3];
    for (int i = 0; i < W * H; i++) {
        g[i] = px[i * 4];
        for (int c = 0; c < 3; c++) rgb[i * 3 + c] = px[i * 4 + c];
    }
    d = fixture_jpeg(g, W, H, 1, 90, 0, &len), put(argv[1], "gray.jpg", d, len), free(d);
    d = fixture_jpeg(rgb, W, H, 3, 75, 0, &len), put(argv[1], "rgb.jpg", d, len), free(d);
    d = fixture_jpeg(rgb, W, H, 3, 50, 1, &len), put(argv[1], "progressive.jpg", d, len), free(d);
    d = fixture_png(g, W, H, 1, 8, 0, 0, &len), put(argv[1], "gray.png", d, len), free(d);
    d = fixture_png(rgb, W, H, 3, 8, 1, 0, &len), put(argv[1], "rgb-interlaced.png", d, len),
    free(d);
    d = fixture_png(px, W, H, 4, 8, 0, 0, &len), put(argv[1], "rgba.png", d, len), free(d);
    d = fixture_png(rgb, W, H, 3, 8, 0, 1, &len), put(argv[1], "palette.png", d, len), free(d);
    d = fixture_png(px16, W, H, 3, 16, 0, 0, &len), put(argv[1], "rgb16.png", d, len), free(d);
    return 0;
}
