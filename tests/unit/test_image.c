/* Image decoding (JPEG, PNG) and preprocessing (resize, crop, normalise). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "fixtures.h"
#include "image.h"

#define U8(v) ((float)(v) * (1.0f / 255.0f))

static float px(const kiln_image *img, int c, int y, int x)
{
    return img->data[((size_t)c * img->height + y) * img->width + x];
}

/* A w x h test pattern with `ch` interleaved 8-bit samples. */
static uint8_t *pattern(int w, int h, int ch)
{
    uint8_t *p = malloc((size_t)w * h * ch);
    for (int i = 0; i < w * h * ch; i++) p[i] = (uint8_t)(i * 37 + 11);
    return p;
}

static void png_8bit_layouts_decode_exactly(void **state)
{
    (void)state;
    const int w = 5, h = 3;
    for (int ch = 1; ch <= 4; ch++) {
        for (int interlace = 0; interlace <= 1; interlace++) {
            uint8_t *pix = pattern(w, h, ch);
            size_t len;
            uint8_t *png = fixture_png(pix, w, h, ch, 8, interlace, 0, &len);
            assert_non_null(png);
            kiln_image img;
            kiln_errbuf err = {{0}};
            assert_int_equal(kiln__image_decode(png, len, 0, 0, &img, &err), KILN_OK);
            int own = ch == 2 ? 1 : ch; /* gray+alpha decodes to gray */
            assert_int_equal(img.channels, own);
            assert_int_equal(img.height, h);
            assert_int_equal(img.width, w);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int c = 0; c < own; c++)
                        assert_true(px(&img, c, y, x) == U8(pix[(y * w + x) * ch + c]));
            kiln__image_free(&img);
            free(png);
            free(pix);
        }
    }
}

static void png_16bit_and_palette_decode_exactly(void **state)
{
    (void)state;
    const int w = 4, h = 2;
    uint16_t p16[4 * 2 * 3];
    for (int i = 0; i < w * h * 3; i++) p16[i] = (uint16_t)(i * 2731 + 5);
    size_t len;
    uint8_t *png = fixture_png(p16, w, h, 3, 16, 0, 0, &len);
    assert_non_null(png);
    kiln_image img;
    assert_int_equal(kiln__image_decode(png, len, 3, 0, &img, NULL), KILN_OK);
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < 3; c++)
            assert_true(px(&img, c, i / w, i % w) == (float)p16[i * 3 + c] * (1.0f / 65535.0f));
    kiln__image_free(&img);
    free(png);

    uint8_t pal[4 * 2 * 3];
    for (int i = 0; i < w * h * 3; i++) pal[i] = (uint8_t)((i % 6) * 40);
    png = fixture_png(pal, w, h, 3, 8, 0, 1, &len);
    assert_non_null(png);
    assert_int_equal(kiln__image_decode(png, len, 0, 0, &img, NULL), KILN_OK);
    assert_int_equal(img.channels, 3);
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < 3; c++) assert_true(px(&img, c, i / w, i % w) == U8(pal[i * 3 + c]));
    kiln__image_free(&img);
    free(png);
}

static void channel_conversions_follow_the_contract(void **state)
{
    (void)state;
    const uint8_t rgba[2 * 4] = {200, 100, 50, 7, 0, 255, 10, 128};
    size_t len;
    uint8_t *png = fixture_png(rgba, 2, 1, 4, 8, 0, 0, &len);
    kiln_image img;
    /* RGBA -> gray: BT.601 luma, alpha ignored. */
    assert_int_equal(kiln__image_decode(png, len, 1, 0, &img, NULL), KILN_OK);
    assert_int_equal(img.channels, 1);
    assert_float_equal(px(&img, 0, 0, 0), 0.299f * U8(200) + 0.587f * U8(100) + 0.114f * U8(50),
                       1e-6);
    kiln__image_free(&img);
    /* RGBA -> RGB: alpha dropped, not composited. */
    assert_int_equal(kiln__image_decode(png, len, 3, 0, &img, NULL), KILN_OK);
    assert_true(px(&img, 0, 0, 1) == U8(0) && px(&img, 1, 0, 1) == U8(255) &&
                px(&img, 2, 0, 1) == U8(10));
    kiln__image_free(&img);
    free(png);

    /* Gray -> RGB repeats; gray -> RGBA adds opaque alpha. */
    const uint8_t gray[3] = {0, 77, 255};
    png = fixture_png(gray, 3, 1, 1, 8, 0, 0, &len);
    assert_int_equal(kiln__image_decode(png, len, 4, 0, &img, NULL), KILN_OK);
    for (int x = 0; x < 3; x++) {
        for (int c = 0; c < 3; c++) assert_true(px(&img, c, 0, x) == U8(gray[x]));
        assert_true(px(&img, 3, 0, x) == 1.0f);
    }
    kiln__image_free(&img);
    assert_int_equal(kiln__image_decode(png, len, 2, 0, &img, NULL), KILN_ERR_INVALID_ARG);
    free(png);
}

/* A smooth image survives JPEG at quality 100 within a couple of levels. */
static void jpeg_gray_rgb_and_progressive_decode_close(void **state)
{
    (void)state;
    const int w = 24, h = 16;
    for (int ch = 1; ch <= 3; ch += 2) {
        for (int prog = 0; prog <= 1; prog++) {
            uint8_t *pix = malloc((size_t)w * h * ch);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int c = 0; c < ch; c++)
                        pix[(y * w + x) * ch + c] =
                            (uint8_t)(40 + 3 * x + 2 * y + 30 * c); /* <= 199 */
            size_t len;
            uint8_t *jpg = fixture_jpeg(pix, w, h, ch, 100, prog, &len);
            assert_non_null(jpg);
            assert_int_equal(kiln__image_sniff(jpg, len), KILN_IMAGE_JPEG);
            int ph, pw, pc;
            assert_int_equal(kiln__image_probe(jpg, len, &ph, &pw, &pc, NULL), KILN_OK);
            assert_int_equal(ph, h);
            assert_int_equal(pw, w);
            assert_int_equal(pc, ch);
            kiln_image img;
            kiln_errbuf err = {{0}};
            assert_int_equal(kiln__image_decode(jpg, len, 0, 0, &img, &err), KILN_OK);
            assert_int_equal(img.channels, ch);
            float worst = 0;
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    for (int c = 0; c < ch; c++) {
                        float d = fabsf(px(&img, c, y, x) - U8(pix[(y * w + x) * ch + c]));
                        if (d > worst) worst = d;
                    }
            /* 3 levels (aarch64's libjpeg-turbo reaches exactly 3; the float
             * difference then rounds a hair above 3/255) */
            assert_true(worst <= 3.0f / 255.0f + 1e-6f);
            kiln__image_free(&img);
            free(jpg);
            free(pix);
        }
    }
}

static void pixel_limit_is_checked_before_decoding(void **state)
{
    (void)state;
    uint8_t *pix = pattern(100, 100, 3);
    size_t plen, jlen;
    uint8_t *png = fixture_png(pix, 100, 100, 3, 8, 0, 0, &plen);
    uint8_t *jpg = fixture_jpeg(pix, 100, 100, 3, 90, 0, &jlen);
    kiln_image img;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__image_decode(png, plen, 0, 9999, &img, &err), KILN_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "9999"));
    assert_null(img.data);
    assert_int_equal(kiln__image_decode(jpg, jlen, 0, 9999, &img, &err), KILN_ERR_LIMIT);
    assert_int_equal(kiln__image_decode(png, plen, 0, 10000, &img, NULL), KILN_OK);
    kiln__image_free(&img);

    /* Headers that claim 60000 x 60000: refused from the header alone. */
    png[16] = 0, png[17] = 0, png[18] = 0xea, png[19] = 0x60; /* IHDR width */
    png[20] = 0, png[21] = 0, png[22] = 0xea, png[23] = 0x60; /* IHDR height */
    uLong crc = crc32(0, png + 12, 17);
    png[29] = (uint8_t)(crc >> 24), png[30] = (uint8_t)(crc >> 16);
    png[31] = (uint8_t)(crc >> 8), png[32] = (uint8_t)crc;
    assert_int_equal(kiln__image_decode(png, plen, 0, 0, &img, &err), KILN_ERR_LIMIT);
    size_t i = 2;
    while (i + 8 < jlen && !(jpg[i] == 0xff && jpg[i + 1] == 0xc0)) i++;
    assert_true(i + 8 < jlen);
    jpg[i + 5] = 0xea, jpg[i + 6] = 0x60, jpg[i + 7] = 0xea, jpg[i + 8] = 0x60;
    assert_int_equal(kiln__image_decode(jpg, jlen, 0, 0, &img, &err), KILN_ERR_LIMIT);
    free(png);
    free(jpg);
    free(pix);
}

/* Every truncation of a valid file is an error with a message; random byte
 * damage never crashes (it may or may not decode). */
static void corrupt_input_is_a_clean_error(void **state)
{
    (void)state;
    uint8_t *pix = pattern(19, 13, 3);
    size_t lens[3];
    uint8_t *files[3] = {fixture_png(pix, 19, 13, 3, 8, 0, 0, &lens[0]),
                         fixture_png(pix, 19, 13, 3, 8, 1, 0, &lens[1]),
                         fixture_jpeg(pix, 19, 13, 3, 80, 1, &lens[2])};
    kiln_image img;
    for (int f = 0; f < 3; f++) {
        assert_non_null(files[f]);
        for (size_t n = 0; n < lens[f]; n++) {
            kiln_errbuf err = {{0}};
            kiln_status st = kiln__image_decode(files[f], n, 0, 0, &img, &err);
            if (st == KILN_OK) fail_msg("file %d cut to %zu of %zu bytes decoded", f, n, lens[f]);
            assert_int_equal(st, KILN_ERR_FORMAT);
            assert_true(strlen(err.msg) > 0);
            assert_null(img.data);
        }
        uint8_t *copy = malloc(lens[f]);
        uint32_t seed = 12345;
        for (int round = 0; round < 300; round++) {
            memcpy(copy, files[f], lens[f]);
            for (int k = 0; k < 4; k++) {
                seed = seed * 1664525u + 1013904223u;
                copy[8 + (seed >> 8) % (lens[f] - 8)] ^= (uint8_t)(1u << (seed % 8));
            }
            if (kiln__image_decode(copy, lens[f], 0, 0, &img, NULL) == KILN_OK) {
                assert_int_equal(img.width, 19);
                kiln__image_free(&img);
            }
        }
        free(copy);
        free(files[f]);
    }
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__image_decode("GIF89a", 6, 0, 0, &img, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not a JPEG or PNG"));
    assert_int_equal(kiln__image_decode(NULL, 0, 0, 0, &img, NULL), KILN_ERR_FORMAT);
    free(pix);
}

static void decode_file_names_the_path(void **state)
{
    (void)state;
    char dir[256], path[300];
    assert_non_null(fixture_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/bad.png", dir);
    assert_int_equal(fixture_write(path, "\x89PNG\r\n\x1a\nxx", 10), 0);
    kiln_image img;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__image_decode_file(path, 0, 0, 0, &img, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "bad.png"));
    snprintf(path, sizeof path, "%s/missing.png", dir);
    assert_int_equal(kiln__image_decode_file(path, 0, 0, 0, &img, &err), KILN_ERR_NOT_FOUND);
    fixture_rmtree(dir);
}

static kiln_image make(int c, int h, int w, const float *v)
{
    kiln_image img;
    assert_int_equal(kiln__image_alloc(&img, c, h, w), KILN_OK);
    memcpy(img.data, v, sizeof(float) * (size_t)(c * h * w));
    return img;
}

static void resize_matches_hand_computed_values(void **state)
{
    (void)state;
    /* 1x2 -> 1x4 (enlarging): centres at -0.25, 0.25, 0.75, 1.25 of the
     * source, clamped: a, 0.75a + 0.25b, 0.25a + 0.75b, b. */
    kiln_image src = make(1, 1, 2, (const float[]){0.0f, 1.0f}), dst;
    for (int aa = 0; aa <= 1; aa++) {
        assert_int_equal(kiln__image_resize(&src, 1, 4, aa, &dst), KILN_OK);
        const float want[4] = {0.0f, 0.25f, 0.75f, 1.0f};
        for (int x = 0; x < 4; x++) assert_float_equal(px(&dst, 0, 0, x), want[x], 1e-6);
        kiln__image_free(&dst);
    }
    kiln__image_free(&src);

    /* 2x2 -> 3x3 at (y, x) = (1, 1): source centre (0.5, 0.5), the mean. */
    src = make(1, 2, 2, (const float[]){1, 2, 3, 4});
    assert_int_equal(kiln__image_resize(&src, 3, 3, 0, &dst), KILN_OK);
    assert_float_equal(px(&dst, 0, 1, 1), 2.5f, 1e-6);
    assert_float_equal(px(&dst, 0, 0, 0), 1.0f, 1e-6);
    /* (0, 1): y clamps to row 0, x at 0.5: 1.5. (0, 2): x at 1.1667 clamps to 1. */
    assert_float_equal(px(&dst, 0, 0, 1), 1.5f, 1e-6);
    assert_float_equal(px(&dst, 0, 0, 2), 2.0f, 1e-6);
    kiln__image_free(&dst);
    kiln__image_free(&src);

    /* 1x4 -> 1x2 shrinking. Plain: mid-points of pairs. Antialiased: the
     * triangle filter 2 pixels wide, weights .75 .75 .25 at the edge over
     * 1.75 (PIL's BILINEAR). */
    src = make(1, 1, 4, (const float[]){1, 2, 3, 4});
    assert_int_equal(kiln__image_resize(&src, 1, 2, 0, &dst), KILN_OK);
    assert_float_equal(px(&dst, 0, 0, 0), 1.5f, 1e-6);
    assert_float_equal(px(&dst, 0, 0, 1), 3.5f, 1e-6);
    kiln__image_free(&dst);
    assert_int_equal(kiln__image_resize(&src, 1, 2, 1, &dst), KILN_OK);
    assert_float_equal(px(&dst, 0, 0, 0), (0.75f * 1 + 0.75f * 2 + 0.25f * 3) / 1.75f, 1e-6);
    assert_float_equal(px(&dst, 0, 0, 1), (0.25f * 2 + 0.75f * 3 + 0.75f * 4) / 1.75f, 1e-6);
    kiln__image_free(&dst);
    /* Same size is the identity; a constant stays constant in every mode. */
    assert_int_equal(kiln__image_resize(&src, 1, 4, 1, &dst), KILN_OK);
    for (int x = 0; x < 4; x++) assert_float_equal(px(&dst, 0, 0, x), x + 1.0f, 1e-6);
    kiln__image_free(&dst);
    kiln__image_free(&src);

    float ones[3 * 7 * 9];
    for (int i = 0; i < 3 * 7 * 9; i++) ones[i] = 0.625f;
    src = make(3, 7, 9, ones);
    for (int aa = 0; aa <= 1; aa++) {
        assert_int_equal(kiln__image_resize(&src, 4, 13, aa, &dst), KILN_OK);
        assert_int_equal(dst.channels, 3);
        for (int i = 0; i < 3 * 4 * 13; i++) assert_float_equal(dst.data[i], 0.625f, 1e-6);
        kiln__image_free(&dst);
    }
    assert_int_equal(kiln__image_resize(&src, 0, 3, 0, &dst), KILN_ERR_INVALID_ARG);
    kiln__image_free(&src);
}

static void crop_pads_and_centre_crop_rounds_like_torchvision(void **state)
{
    (void)state;
    float v[2 * 3 * 4];
    for (int i = 0; i < 24; i++) v[i] = (float)(i + 1);
    kiln_image src = make(2, 3, 4, v), dst;
    /* Window from (-1, 2), 3x3: row -1 and column 4 are padding. */
    assert_int_equal(kiln__image_crop(&src, -1, 2, 3, 3, &dst), KILN_OK);
    const float want0[9] = {0, 0, 0, 3, 4, 0, 7, 8, 0};
    for (int i = 0; i < 9; i++) assert_float_equal(dst.data[i], want0[i], 0);
    for (int i = 0; i < 9; i++)
        assert_float_equal(dst.data[9 + i], want0[i] ? want0[i] + 12 : 0, 0);
    kiln__image_free(&dst);
    assert_int_equal(kiln__image_crop(&src, 10, 10, 2, 2, &dst), KILN_OK);
    for (int i = 0; i < 8; i++) assert_float_equal(dst.data[i], 0, 0);
    kiln__image_free(&dst);

    /* 3x4 centre 1x1: offsets round((3-1)/2)=1, round((4-1)/2)=round(1.5)=2. */
    assert_int_equal(kiln__image_center_crop(&src, 1, 1, &dst), KILN_OK);
    assert_float_equal(dst.data[0], v[1 * 4 + 2], 0);
    kiln__image_free(&dst);
    /* 3x4 centre 1x2: round(2/2)=1 -> columns 1..2. */
    assert_int_equal(kiln__image_center_crop(&src, 1, 2, &dst), KILN_OK);
    assert_float_equal(dst.data[0], v[1 * 4 + 1], 0);
    kiln__image_free(&dst);
    /* Larger than the image: (6-3)//2 = 1 row of padding on top. */
    assert_int_equal(kiln__image_center_crop(&src, 6, 4, &dst), KILN_OK);
    assert_float_equal(dst.data[0], 0, 0);
    assert_float_equal(dst.data[4], v[0], 0);
    assert_float_equal(dst.data[5 * 4], 0, 0);
    kiln__image_free(&dst);
    kiln__image_free(&src);

    int h, w;
    kiln__image_fit_short_side(480, 640, 256, &h, &w);
    assert_int_equal(h, 256);
    assert_int_equal(w, 341);
    kiln__image_fit_short_side(500, 375, 256, &h, &w);
    assert_int_equal(w, 256);
    assert_int_equal(h, 341);
}

static void normalize_and_preprocess_pipeline(void **state)
{
    (void)state;
    kiln_image img = make(2, 1, 2, (const float[]){0.5f, 1.0f, 0.25f, 0.0f});
    const float mean[2] = {0.5f, 0.25f}, std[2] = {0.5f, 0.25f};
    assert_int_equal(kiln__image_normalize(&img, mean, std), KILN_OK);
    assert_float_equal(img.data[0], 0.0f, 1e-6);
    assert_float_equal(img.data[1], 1.0f, 1e-6);
    assert_float_equal(img.data[2], 0.0f, 1e-6);
    assert_float_equal(img.data[3], -1.0f, 1e-6);
    assert_int_equal(kiln__image_normalize(&img, mean, (const float[]){1.0f, 0.0f}),
                     KILN_ERR_INVALID_ARG);
    kiln__image_free(&img);

    /* 4 x 8 RGB PNG; resize the short side to 2 (-> 2 x 4), centre crop
     * 2 x 2 (columns 1..2), normalise. Checked against the same steps. */
    const int w = 8, h = 4;
    uint8_t *pix = pattern(w, h, 3);
    size_t len;
    uint8_t *png = fixture_png(pix, w, h, 3, 8, 0, 0, &len);
    kiln_preprocess p;
    kiln__preprocess_defaults(&p, 3, 2, 2);
    p.resize = 2;
    p.mean[0] = 0.4f, p.mean[1] = 0.5f, p.mean[2] = 0.6f;
    p.std[0] = 0.2f, p.std[1] = 0.3f, p.std[2] = 0.4f;
    float out[12];
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__preprocess_encoded(png, len, &p, out, &err), KILN_OK);
    kiln_image dec, small;
    assert_int_equal(kiln__image_decode(png, len, 3, 0, &dec, NULL), KILN_OK);
    assert_int_equal(kiln__image_resize(&dec, 2, 4, 1, &small), KILN_OK);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 2; x++)
                assert_float_equal(out[(c * 2 + y) * 2 + x],
                                   (px(&small, c, y, x + 1) - p.mean[c]) / p.std[c], 1e-5);
    kiln__image_free(&small);
    kiln__image_free(&dec);

    /* A model with one channel takes the luma of a colour image. */
    kiln__preprocess_defaults(&p, 1, 4, 8);
    float gray[32];
    assert_int_equal(kiln__preprocess_encoded(png, len, &p, gray, NULL), KILN_OK);
    assert_float_equal(gray[0], 0.299f * U8(pix[0]) + 0.587f * U8(pix[1]) + 0.114f * U8(pix[2]),
                       1e-6);
    p.std[0] = -1;
    assert_int_equal(kiln__preprocess_encoded(png, len, &p, gray, &err), KILN_ERR_INVALID_ARG);
    assert_non_null(strstr(err.msg, "std"));
    free(png);
    free(pix);
}

/* A real photograph: darknet's dog.jpg, from Debian's package if installed,
 * else from the copy scripts/deps unpacked into $KILN_PHOTOS. */
static void real_photo_decodes(void **state)
{
    (void)state;
    char path[4096] = "/usr/share/darknet/data/dog.jpg";
    const char *dir = getenv("KILN_PHOTOS");
    if (access(path, R_OK) != 0 && dir) snprintf(path, sizeof path, "%s/dog.jpg", dir);
    if (access(path, R_OK) != 0) {
        print_message("skipped: %s not present (scripts/deps fetches darknet's photos)\n", path);
        skip();
    }
    kiln_image img;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__image_decode_file(path, 3, 0, 0, &img, &err), KILN_OK);
    assert_int_equal(img.width, 768);
    assert_int_equal(img.height, 576);
    double sum = 0, lo = 1, hi = 0;
    for (size_t i = 0; i < (size_t)3 * 576 * 768; i++) {
        sum += img.data[i];
        if (img.data[i] < lo) lo = img.data[i];
        if (img.data[i] > hi) hi = img.data[i];
    }
    double mean = sum / (3.0 * 576 * 768);
    assert_true(mean > 0.1 && mean < 0.9);
    assert_true(lo >= 0.0 && hi <= 1.0 && hi - lo > 0.5);
    kiln_preprocess p;
    kiln__preprocess_defaults(&p, 3, 224, 224);
    p.resize = 256;
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    assert_int_equal(kiln__preprocess_image(&img, &p, out, &err), KILN_OK);
    free(out);
    kiln__image_free(&img);
    assert_int_equal(kiln__image_decode_file(path, 3, 1000, 0, &img, &err), KILN_ERR_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(png_8bit_layouts_decode_exactly),
        cmocka_unit_test(png_16bit_and_palette_decode_exactly),
        cmocka_unit_test(channel_conversions_follow_the_contract),
        cmocka_unit_test(jpeg_gray_rgb_and_progressive_decode_close),
        cmocka_unit_test(pixel_limit_is_checked_before_decoding),
        cmocka_unit_test(corrupt_input_is_a_clean_error),
        cmocka_unit_test(decode_file_names_the_path),
        cmocka_unit_test(resize_matches_hand_computed_values),
        cmocka_unit_test(crop_pads_and_centre_crop_rounds_like_torchvision),
        cmocka_unit_test(normalize_and_preprocess_pipeline),
        cmocka_unit_test(real_photo_decodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
