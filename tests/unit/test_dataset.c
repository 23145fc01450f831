/* Data set loaders on fixtures written in the real formats: IDX (plain and
 * gzip'ed), CIFAR-10/100 binary batches, image folders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "dataset.h"
#include "fixtures.h"

static char tmp[512];

static int setup(void **state)
{
    (void)state;
    return fixture_tmpdir(tmp, sizeof tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    fixture_rmtree(tmp);
    return 0;
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

/* IDX bytes: images (n x h x w) when h > 0, else labels (n). */
static uint8_t *idx_bytes(uint32_t n, uint32_t h, uint32_t w, const uint8_t *data, size_t *len)
{
    int nd = h ? 3 : 1;
    size_t body = h ? (size_t)n * h * w : n;
    uint8_t *b = malloc(4 + 4 * nd + body);
    b[0] = b[1] = 0, b[2] = 8, b[3] = (uint8_t)nd;
    be32(b + 4, n);
    if (h) be32(b + 8, h), be32(b + 12, w);
    memcpy(b + 4 + 4 * nd, data, body);
    *len = 4 + 4 * nd + body;
    return b;
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
    gzclose(f);
}

static void write_idx_pair(const char *dir, const char *prefix, uint32_t n, int gz, uint8_t *pix,
                           uint8_t *lab)
{
    size_t il, ll;
    uint8_t *ib = idx_bytes(n, 4, 3, pix, &il), *lb = idx_bytes(n, 0, 0, lab, &ll);
    char p[2048];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    if (gz)
        write_gz(p, ib, il);
    else
        assert_int_equal(fixture_write(p, ib, il), 0);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    if (gz)
        write_gz(p, lb, ll);
    else
        assert_int_equal(fixture_write(p, lb, ll), 0);
    free(ib);
    free(lb);
}

static void idx_plain_and_gzip_load_exactly(void **state)
{
    (void)state;
    const uint32_t n = 7;
    uint8_t pix[7 * 12], lab[7];
    for (size_t i = 0; i < sizeof pix; i++) pix[i] = (uint8_t)(i * 13 + 5);
    for (uint32_t i = 0; i < n; i++) lab[i] = (uint8_t)(i * 3 % 10);
    for (int gz = 0; gz <= 1; gz++) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/idx%d", tmp, gz);
        write_idx_pair(dir, "train", n, gz, pix, lab);
        kiln_dataset ds;
        kiln_errbuf err = {{0}};
        assert_int_equal(kiln__dataset_open(dir, "train", 0, NULL, &ds, &err), KILN_OK);
        assert_int_equal(ds.count, n);
        assert_int_equal(ds.channels, 1);
        assert_int_equal(ds.height, 4);
        assert_int_equal(ds.width, 3);
        assert_int_equal(ds.num_classes, 10); /* labels 0..9 */
        float s[12];
        for (uint32_t i = 0; i < n; i++) {
            assert_int_equal(ds.labels[i], lab[i]);
            assert_int_equal(kiln__dataset_read(&ds, i, s, &err), KILN_OK);
            for (int k = 0; k < 12; k++) assert_float_equal(s[k], pix[i * 12 + k] / 255.0, 1e-6);
        }
        assert_int_equal(kiln__dataset_read(&ds, n, s, &err), KILN_ERR_RANGE);
        kiln__dataset_free(&ds);
        /* no test split in this directory */
        assert_int_equal(kiln__dataset_open(dir, "test", 0, NULL, &ds, &err), KILN_ERR_NOT_FOUND);
    }
}

static void idx_bad_files_are_format_errors(void **state)
{
    (void)state;
    uint8_t data[64] = {0};
    size_t len;
    uint8_t *b = idx_bytes(4, 2, 2, data, &len);
    uint32_t dims[3];
    const uint8_t *payload;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__idx_parse(b, len, 3, dims, &payload, "x", &err), KILN_OK);
    assert_int_equal(dims[0], 4);
    /* truncated by one byte, and one trailing byte */
    assert_int_equal(kiln__idx_parse(b, len - 1, 3, dims, &payload, "x", &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, b, len);
    longer[len] = 0;
    assert_int_equal(kiln__idx_parse(longer, len + 1, 3, dims, &payload, "x", &err),
                     KILN_ERR_FORMAT);
    free(longer);
    /* header cut short, wrong type, wrong rank, bad magic, zero dimension */
    assert_int_equal(kiln__idx_parse(b, 10, 3, dims, &payload, "x", &err), KILN_ERR_FORMAT);
    b[2] = 0x0d;
    assert_int_equal(kiln__idx_parse(b, len, 3, dims, &payload, "x", &err), KILN_ERR_FORMAT);
    b[2] = 8;
    assert_int_equal(kiln__idx_parse(b, len, 1, dims, &payload, "x", &err), KILN_ERR_FORMAT);
    b[0] = 1;
    assert_int_equal(kiln__idx_parse(b, len, 3, dims, &payload, "x", &err), KILN_ERR_FORMAT);
    b[0] = 0;
    be32(b + 8, 0);
    assert_int_equal(kiln__idx_parse(b, len, 3, dims, &payload, "x", &err), KILN_ERR_FORMAT);
    free(b);

    /* image and label counts disagree */
    char dir[600], ip[2048], lp[2048];
    snprintf(dir, sizeof dir, "%s/idxbad", tmp);
    uint8_t pix[5 * 12] = {0}, lab[5] = {0};
    size_t il, ll;
    uint8_t *ib = idx_bytes(5, 4, 3, pix, &il), *lb = idx_bytes(4, 0, 0, lab, &ll);
    snprintf(ip, sizeof ip, "%s/i", dir);
    snprintf(lp, sizeof lp, "%s/l", dir);
    assert_int_equal(fixture_write(ip, ib, il), 0);
    assert_int_equal(fixture_write(lp, lb, ll), 0);
    kiln_dataset ds;
    assert_int_equal(kiln__idx_load(ip, lp, NULL, &ds, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "labels"));
    /* a truncated gzip stream */
    write_gz(ip, ib, il);
    FILE *f = fopen(ip, "r+b");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fclose(f);
    assert_int_equal(truncate(ip, sz / 2), 0);
    assert_int_equal(kiln__idx_load(ip, lp, NULL, &ds, &err), KILN_ERR_FORMAT);
    /* the sample limit */
    assert_int_equal(fixture_write(ip, ib, il), 0);
    free(lb);
    lb = idx_bytes(5, 0, 0, lab, &ll);
    assert_int_equal(fixture_write(lp, lb, ll), 0);
    kiln_dataset_limits lim = {.max_samples = 4};
    assert_int_equal(kiln__idx_load(ip, lp, &lim, &ds, &err), KILN_ERR_LIMIT);
    assert_int_equal(kiln__idx_load(ip, lp, NULL, &ds, &err), KILN_OK);
    kiln__dataset_free(&ds);
    free(ib);
    free(lb);
}

/* CIFAR records: label byte(s) then 3072 pixels. */
static uint8_t *cifar_bytes(int n, int cifar100, int seed, size_t *len)
{
    size_t rec = (cifar100 ? 2 : 1) + 3072;
    uint8_t *b = malloc(rec * n);
    for (int r = 0; r < n; r++) {
        uint8_t *p = b + rec * r;
        if (cifar100) *p++ = (uint8_t)((r + seed) % 20);
        *p++ = (uint8_t)((r * 7 + seed) % (cifar100 ? 100 : 10));
        for (int k = 0; k < 3072; k++) p[k] = (uint8_t)(k * 31 + r * 7 + seed);
    }
    *len = rec * n;
    return b;
}

static void cifar10_and_100_batches_load(void **state)
{
    (void)state;
    char dir[600], p[2048];
    snprintf(dir, sizeof dir, "%s/cifar10/cifar-10-batches-bin", tmp);
    size_t len;
    for (int k = 1; k <= 2; k++) {
        uint8_t *b = cifar_bytes(3, 0, k, &len);
        snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, k);
        assert_int_equal(fixture_write(p, b, len), 0);
        free(b);
    }
    uint8_t *b = cifar_bytes(2, 0, 9, &len);
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    assert_int_equal(fixture_write(p, b, len), 0);
    free(b);
    char root[600];
    snprintf(root, sizeof root, "%s/cifar10", tmp);
    kiln_dataset ds;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__dataset_open(root, "train", 0, NULL, &ds, &err), KILN_OK);
    assert_int_equal(ds.count, 6);
    assert_int_equal(ds.channels, 3);
    assert_int_equal(ds.height, 32);
    assert_int_equal(ds.num_classes, 10);
    /* record 1 of batch 2 is sample 4: label (1*7+2)%10, pixel k = k*31+7+2 */
    assert_int_equal(ds.labels[4], 9);
    float s[3072];
    assert_int_equal(kiln__dataset_read(&ds, 4, s, &err), KILN_OK);
    for (int k = 0; k < 3072; k += 101)
        assert_float_equal(s[k], (uint8_t)(k * 31 + 9) / 255.0, 1e-6);
    char nb[16];
    assert_string_equal(kiln__dataset_class_name(&ds, 1, nb, sizeof nb), "automobile");
    kiln__dataset_free(&ds);
    assert_int_equal(kiln__dataset_open(root, "test", 0, NULL, &ds, &err), KILN_OK);
    assert_int_equal(ds.count, 2);
    kiln__dataset_free(&ds);

    /* CIFAR-100: the fine label */
    snprintf(dir, sizeof dir, "%s/cifar100", tmp);
    b = cifar_bytes(4, 1, 3, &len);
    snprintf(p, sizeof p, "%s/train.bin", dir);
    assert_int_equal(fixture_write(p, b, len), 0);
    assert_int_equal(kiln__dataset_open(dir, "train", 0, NULL, &ds, &err), KILN_OK);
    assert_int_equal(ds.count, 4);
    assert_int_equal(ds.num_classes, 100);
    assert_int_equal(ds.labels[2], 17);
    kiln__dataset_free(&ds);
    /* a short file: not a whole number of records */
    assert_int_equal(fixture_write(p, b, len - 5), 0);
    assert_int_equal(kiln__dataset_open(dir, "train", 0, NULL, &ds, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "3074-byte"));
    /* a label out of range */
    b[1] = 200;
    assert_int_equal(fixture_write(p, b, len), 0);
    assert_int_equal(kiln__dataset_open(dir, "train", 0, NULL, &ds, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "label"));
    free(b);
}

static void image_folder_with_labels_file(void **state)
{
    (void)state;
    char root[600], p[2048];
    snprintf(root, sizeof root, "%s/folder", tmp);
    const char *classes[] = {"zebra", "apple"}; /* labels.txt order, not sorted */
    uint8_t pix[4 * 4 * 3];
    int made = 0;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2 + c; i++) {
            for (int k = 0; k < 48; k++) pix[k] = (uint8_t)(c * 100 + i * 10 + k);
            size_t len;
            uint8_t *png = fixture_png(pix, 4, 4, 3, 8, 0, 0, &len);
            snprintf(p, sizeof p, "%s/train/%s/img%d.png", root, classes[c], i);
            assert_int_equal(fixture_write(p, png, len), 0);
            free(png);
            made++;
        }
    snprintf(p, sizeof p, "%s/train/apple/notes.txt", root);
    assert_int_equal(fixture_write(p, "x", 1), 0);
    snprintf(p, sizeof p, "%s/labels.txt", root);
    assert_int_equal(fixture_write(p, "zebra\napple\n", 12), 0);
    kiln_dataset ds;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__dataset_open(root, "train", 4, NULL, &ds, &err), KILN_OK);
    assert_int_equal(ds.count, made);
    assert_int_equal(ds.num_classes, 2);
    assert_int_equal(ds.labels[0], 0);
    assert_int_equal(ds.labels[4], 1);
    char nb[16];
    assert_string_equal(kiln__dataset_class_name(&ds, 0, nb, sizeof nb), "zebra");
    float s[48];
    assert_int_equal(kiln__dataset_read(&ds, 3, s, &err), KILN_OK); /* apple img1 */
    /* CHW: channel 1, pixel 0 is interleaved sample 1 */
    assert_float_equal(s[16], (uint8_t)(100 + 10 + 1) / 255.0, 1e-6);
    kiln__dataset_free(&ds);
    /* a corrupt image is an error on read naming the file */
    snprintf(p, sizeof p, "%s/train/zebra/img0.png", root);
    assert_int_equal(fixture_write(p, "\x89PNG\r\n\x1a\nbroken", 14), 0);
    assert_int_equal(kiln__dataset_open(root, "train", 4, NULL, &ds, &err), KILN_OK);
    assert_int_equal(kiln__dataset_read(&ds, 0, s, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "img0.png"));
    kiln__dataset_free(&ds);
    /* a class named in labels.txt without a folder */
    snprintf(p, sizeof p, "%s/labels.txt", root);
    assert_int_equal(fixture_write(p, "zebra\napple\nmango\n", 18), 0);
    assert_int_equal(kiln__dataset_open(root, "train", 4, NULL, &ds, &err), KILN_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "mango"));
    /* without labels.txt: sorted folder names */
    unlink(p);
    assert_int_equal(kiln__dataset_open(root, "train", 4, NULL, &ds, &err), KILN_OK);
    assert_string_equal(kiln__dataset_class_name(&ds, 0, nb, sizeof nb), "apple");
    assert_int_equal(ds.labels[0], 0);
    kiln__dataset_free(&ds);
}

static void unknown_directory_and_split(void **state)
{
    (void)state;
    kiln_dataset ds;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__dataset_open(tmp, "train", 0, NULL, &ds, &err), KILN_ERR_NOT_FOUND);
    assert_int_equal(kiln__dataset_open(tmp, "valid", 0, NULL, &ds, &err), KILN_ERR_INVALID_ARG);
    char p[2048];
    snprintf(p, sizeof p, "%s/nope", tmp);
    assert_int_equal(kiln__dataset_open(p, "train", 0, NULL, &ds, &err), KILN_ERR_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(idx_plain_and_gzip_load_exactly),
        cmocka_unit_test(idx_bad_files_are_format_errors),
        cmocka_unit_test(cifar10_and_100_batches_load),
        cmocka_unit_test(image_folder_with_labels_file),
        cmocka_unit_test(unknown_directory_and_split),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
