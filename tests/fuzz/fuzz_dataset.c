/*
 * libFuzzer target: the training data loaders (src/runtime/dataset.c and
 * fileio.c): IDX images + labels (plain or gzip'ed, as MNIST and
 * Fashion-MNIST ship) and CIFAR-10/100 binary batches, with the default
 * limits `kiln train` uses. A set that opens must keep the invariants
 * dataset.h states; its first samples are read.
 *
 * Input: one mode byte, then
 *   mode 0: IDX bytes, parsed in memory as an images file and a labels file
 *   mode 1: u32 little-endian n, n bytes of images file, then the labels file
 *   mode 2: a CIFAR-10 batch          mode 3: a CIFAR-100 batch
 * The loaders read paths: files are memfds opened as /proc/self/fd/N.
 */
#include "dataset.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int memfile(const uint8_t *p, size_t n, char *path, size_t len)
{
    int fd = memfd_create("fuzz.data", MFD_CLOEXEC);
    if (fd < 0) return -1;
    if (write(fd, p, n) != (ssize_t)n) {
        close(fd);
        return -1;
    }
    snprintf(path, len, "/proc/self/fd/%d", fd);
    return fd;
}

static void check(const kiln_dataset *ds)
{
    int64_t size = kiln__dataset_sample_size(ds);
    if (ds->count < 0 || ds->num_classes < 1 || ds->num_classes > KILN_DATASET_MAX_CLASSES ||
        size <= 0)
        abort();
    for (int64_t i = 0; i < ds->count; i++)
        if (ds->labels[i] < 0 || ds->labels[i] >= ds->num_classes) abort();
    float *x = malloc((size_t)size * sizeof *x);
    if (!x) return;
    kiln_errbuf err;
    for (int64_t i = 0; i < ds->count && i < 8; i++) {
        if (kiln__dataset_read(ds, i, x, &err) != KILN_OK) abort();
        for (int64_t k = 0; k < size; k++)
            if (!(x[k] >= 0 && x[k] <= 1)) abort();
    }
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int mode = data[0] % 4;
    data++, size--;
    kiln_errbuf err;
    kiln_dataset ds;
    kiln_dataset_limits lim = {0};
    if (mode == 0) {
        uint32_t dims[3];
        const uint8_t *payload;
        for (int ndim = 1; ndim <= 3; ndim += 2)
            if (kiln__idx_parse(data, size, ndim, dims, &payload, "fuzz", &err) == KILN_OK &&
                (payload < data || payload > data + size))
                abort();
        return 0;
    }
    char p1[64], p2[64];
    int fd1 = -1, fd2 = -1;
    memset(&ds, 0, sizeof ds);
    if (mode == 1) {
        if (size < 4) return 0;
        uint32_t n = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                     (uint32_t)data[3] << 24;
        data += 4, size -= 4;
        if (n > size) n = (uint32_t)size;
        fd1 = memfile(data, n, p1, sizeof p1);
        fd2 = memfile(data + n, size - n, p2, sizeof p2);
        if (fd1 >= 0 && fd2 >= 0 && kiln__idx_load(p1, p2, &lim, &ds, &err) == KILN_OK) {
            check(&ds);
            kiln__dataset_free(&ds);
        }
    } else {
        fd1 = memfile(data, size, p1, sizeof p1);
        const char *paths[2] = {p1, p1};
        /* One batch, and the same batch twice (concatenated). */
        for (int n = 1; fd1 >= 0 && n <= 2; n++) {
            if (kiln__cifar_load(paths, n, mode == 3, &lim, &ds, &err) == KILN_OK) {
                check(&ds);
                kiln__dataset_free(&ds);
            }
        }
    }
    if (fd1 >= 0) close(fd1);
    if (fd2 >= 0) close(fd2);
    return 0;
}
