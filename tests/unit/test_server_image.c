/* The server's image preprocessing (src/server/image.c): an image of the
 * model's size becomes (pixel / 255 - mean) / std per channel, in NCHW,
 * the same floats with or without the per-call table; a resize stays
 * within the pixels' range. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../src/server/image.h" /* not the runtime's image.h */

static void check_same_size(int c, int h, int w, const float *mean, const float *std)
{
    image_u8 img = {w, h, c, malloc((size_t)w * h * c)};
    for (int i = 0; i < w * h * c; i++) img.pixels[i] = (uint8_t)(i * 37 + 11);
    float *out = malloc(sizeof(float) * (size_t)w * h * c);
    image_to_tensor(&img, h, w, mean, std, out);
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float v = (float)img.pixels[((size_t)y * w + x) * c + k];
                v /= 255.0f;
                if (mean) v -= mean[k];
                if (std) v /= std[k];
                const float got = out[((size_t)k * h + y) * w + x];
                if (memcmp(&got, &v, sizeof v))
                    fail_msg("c %d, %dx%d: channel %d (%d, %d) is %.9g, want %.9g", c, h, w, k, y,
                             x, (double)got, (double)v);
            }
    free(out);
    free(img.pixels);
}

static void test_same_size_is_exact(void **state)
{
    (void)state;
    const float mean1[] = {0.1307f}, std1[] = {0.3081f};
    const float mean3[] = {0.485f, 0.456f, 0.406f}, std3[] = {0.229f, 0.224f, 0.225f};
    check_same_size(1, 28, 28, NULL, NULL);
    check_same_size(1, 28, 28, mean1, std1);
    check_same_size(3, 17, 9, mean3, std3);
    check_same_size(3, 1, 1, NULL, NULL);
}

static void test_resize_stays_in_range(void **state)
{
    (void)state;
    image_u8 img = {40, 30, 3, malloc(40 * 30 * 3)};
    for (int i = 0; i < 40 * 30 * 3; i++) img.pixels[i] = (uint8_t)(i % 251);
    float out[3 * 28 * 28];
    image_to_tensor(&img, 28, 28, NULL, NULL, out);
    for (int i = 0; i < 3 * 28 * 28; i++) {
        assert_true(out[i] >= 0.0f);
        assert_true(out[i] <= 250.0f / 255.0f);
    }
    free(img.pixels);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_size_is_exact),
        cmocka_unit_test(test_resize_stays_in_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
