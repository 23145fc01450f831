/* Batch loader: coverage of an epoch, seeded shuffling and augmentation,
 * the same batches on a loader thread as inline, normalisation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"

/* An in-memory data set: n samples of c x h x w, sample i filled with
 * bytes derived from i, label i % 10. */
static void make_ds(kiln_dataset *ds, int n, int c, int h, int w)
{
    memset(ds, 0, sizeof *ds);
    ds->kind = KILN_DATASET_MEMORY;
    ds->count = n;
    ds->channels = c, ds->height = h, ds->width = w;
    ds->num_classes = 10;
    size_t sz = (size_t)c * h * w;
    ds->pixels = malloc(sz * n);
    ds->labels = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) {
        ds->labels[i] = i % 10;
        for (size_t k = 0; k < sz; k++) ds->pixels[i * sz + k] = (uint8_t)(i * 3 + k * 7);
    }
    snprintf(ds->name, sizeof ds->name, "mem");
}

static void augment_crop_and_flip(void **state)
{
    (void)state;
    float src[2 * 3 * 4], dst[2 * 3 * 4];
    for (int i = 0; i < 24; i++) src[i] = (float)(i + 1);
    /* no shift (dy = dx = pad), no flip: identity */
    kiln__augment_sample(src, dst, 2, 3, 4, 2, 2, 2, 0);
    assert_memory_equal(src, dst, sizeof src);
    /* flip only */
    kiln__augment_sample(src, dst, 2, 3, 4, 0, 0, 0, 1);
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 4; x++)
                assert_true(dst[(c * 3 + y) * 4 + x] == src[(c * 3 + y) * 4 + 3 - x]);
    /* shift by (+1, -1): dst(y, x) = src(y + 1, x - 1), zero outside */
    kiln__augment_sample(src, dst, 2, 3, 4, 1, 2, 0, 0);
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 4; x++) {
                int sy = y + 1, sx = x - 1;
                float want = (sy < 3 && sx >= 0) ? src[(c * 3 + sy) * 4 + sx] : 0.0f;
                assert_true(dst[(c * 3 + y) * 4 + x] == want);
            }
}

/* Runs one epoch and records every batch's contents. */
static void run_epoch(kiln_loader_config *cfg, int epoch, float *xs, int32_t *ys, int64_t *idx,
                      int *nbatches)
{
    kiln_loader *l;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__loader_create(cfg, &l, &err), KILN_OK);
    /* start twice: the first epoch is abandoned mid-way */
    assert_int_equal(kiln__loader_start(l, epoch + 7, &err), KILN_OK);
    kiln_batch b;
    assert_int_equal(kiln__loader_next(l, &b, &err), 1);
    assert_int_equal(kiln__loader_start(l, epoch, &err), KILN_OK);
    int64_t sz = kiln__dataset_sample_size(cfg->ds), pos = 0;
    int got, nb = 0;
    while ((got = kiln__loader_next(l, &b, &err)) > 0) {
        assert_int_equal(b.number, nb);
        memcpy(xs + pos * sz, b.x, sizeof(float) * b.n * sz);
        memcpy(ys + pos, b.y, sizeof(int32_t) * b.n);
        memcpy(idx + pos, b.index, sizeof(int64_t) * b.n);
        pos += b.n;
        nb++;
    }
    assert_int_equal(got, 0);
    assert_int_equal(kiln__loader_next(l, &b, &err), 0);
    assert_int_equal(nb, kiln__loader_batches(l));
    *nbatches = nb;
    kiln__loader_destroy(l);
}

static void epoch_covers_every_sample_once_threaded_equals_inline(void **state)
{
    (void)state;
    kiln_dataset ds;
    make_ds(&ds, 53, 3, 5, 6);
    kiln_loader_config cfg;
    kiln__loader_config_defaults(&cfg, &ds);
    cfg.batch = 8;
    cfg.shuffle = 1;
    cfg.seed = 42;
    cfg.pad_crop = 2;
    cfg.hflip = 1;
    for (int c = 0; c < 3; c++) cfg.mean[c] = 0.5f, cfg.std[c] = 0.25f;
    int64_t sz = 3 * 5 * 6;
    float *xa = malloc(sizeof(float) * sz * 53), *xb = malloc(sizeof(float) * sz * 53);
    int32_t ya[53], yb[53];
    int64_t ia[53], ib[53];
    int na, nb;
    cfg.threaded = 1;
    run_epoch(&cfg, 3, xa, ya, ia, &na);
    cfg.threaded = 0;
    run_epoch(&cfg, 3, xb, yb, ib, &nb);
    assert_int_equal(na, 7); /* 6 full batches and a last one of 5 */
    assert_int_equal(na, nb);
    assert_memory_equal(xa, xb, sizeof(float) * sz * 53);
    assert_memory_equal(ya, yb, sizeof ya);
    assert_memory_equal(ia, ib, sizeof ia);
    int seen[53] = {0}, in_order = 1;
    for (int i = 0; i < 53; i++) {
        seen[ia[i]]++;
        assert_int_equal(ya[i], ia[i] % 10);
        if (ia[i] != i) in_order = 0;
    }
    for (int i = 0; i < 53; i++) assert_int_equal(seen[i], 1);
    assert_false(in_order);
    /* another epoch has another order */
    cfg.threaded = 1;
    run_epoch(&cfg, 4, xb, yb, ib, &nb);
    assert_true(memcmp(ia, ib, sizeof ia) != 0);
    free(xa);
    free(xb);
    kiln__dataset_free(&ds);
}

static void plain_batches_are_normalised_samples(void **state)
{
    (void)state;
    kiln_dataset ds;
    make_ds(&ds, 10, 1, 2, 2);
    kiln_loader_config cfg;
    kiln__loader_config_defaults(&cfg, &ds);
    cfg.batch = 4;
    cfg.drop_last = 1;
    cfg.mean[0] = 0.1f;
    cfg.std[0] = 2.0f;
    float x[10 * 4];
    int32_t y[10];
    int64_t idx[10];
    int nb;
    run_epoch(&cfg, 0, x, y, idx, &nb);
    assert_int_equal(nb, 2);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(idx[i], i);
        for (int k = 0; k < 4; k++) {
            float v = (uint8_t)(i * 3 + k * 7) / 255.0f;
            assert_float_equal(x[i * 4 + k], (v - 0.1f) / 2.0f, 1e-6);
        }
    }
    cfg.std[0] = 0;
    kiln_loader *l;
    kiln_errbuf err;
    assert_int_equal(kiln__loader_create(&cfg, &l, &err), KILN_ERR_INVALID_ARG);
    kiln__dataset_free(&ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(augment_crop_and_flip),
        cmocka_unit_test(epoch_covers_every_sample_once_threaded_equals_inline),
        cmocka_unit_test(plain_batches_are_normalised_samples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
