/* Training lenet-mnist at batch 64 allocates nothing per step after the
 * first: batches, forward, backward and the optimizer step all run in
 * buffers made up front. Counts every malloc/calloc/realloc in the process
 * (OpenBLAS included) by interposing them; skipped under ASan, which owns
 * the allocator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "loader.h"
#include "train/net.h"

#include "alloc_count.h"

static void lenet_steps_allocate_nothing(void **state)
{
    (void)state;
    if (!COUNTING) skip();
    /* One BLAS thread: OpenBLAS's multi-threaded GEMM mallocs its job
     * descriptors on every call (measured: one per SGEMM at 2 threads). */
    kiln_init();
    kiln_blas_set_threads(1);
    char path[1024];
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/models/lenet-mnist.yaml", src ? src : ".");
    uint8_t *y;
    size_t len;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__read_file(path, 1 << 20, &y, &len, &err), KILN_OK);
    kt_arch arch;
    assert_int_equal(kt_arch_parse((const char *)y, len, path, &arch, &err), KILN_OK);
    free(y);
    kt_optim opt;
    kt_optim_defaults(&opt);
    /* emulated (qemu) runs take a smaller batch */
    const int batch = getenv("KILN_TEST_QUICK") ? 4 : 64;
    kt_net net;
    assert_int_equal(kt_net_build(&net, &arch, batch, &opt, 1, &err), KILN_OK);

    kiln_dataset ds = {.kind = KILN_DATASET_MEMORY,
                       .count = 256,
                       .channels = 1,
                       .height = 28,
                       .width = 28,
                       .num_classes = 10};
    ds.pixels = malloc(256 * 784);
    ds.labels = malloc(256 * sizeof(int32_t));
    for (int i = 0; i < 256 * 784; i++) ds.pixels[i] = (uint8_t)(i * 7 + i / 784);
    for (int i = 0; i < 256; i++) ds.labels[i] = i % 10;
    kiln_loader_config lc;
    kiln__loader_config_defaults(&lc, &ds);
    lc.batch = batch;
    lc.threaded = !getenv("KILN_TEST_QUICK"); /* qemu-user hangs in pthread_create */
    lc.shuffle = 1;
    lc.pad_crop = 2;
    lc.hflip = 1;
    kiln_loader *ld;
    assert_int_equal(kiln__loader_create(&lc, &ld, &err), KILN_OK);
    assert_int_equal(kiln__loader_start(ld, 0, &err), KILN_OK);
    kiln_batch b;
    long before = 0;
    for (int step = 1; step <= 4; step++) {
        if (step == 2) before = atomic_load(&allocs);
        assert_int_equal(kiln__loader_next(ld, &b, &err), 1);
        kt_net_forward(&net, b.x, b.n, 1);
        int correct;
        kt_net_backward(&net, b.x, b.y, b.n, &correct);
        kt_net_step(&net, 0.01f, step);
    }
    long during = atomic_load(&allocs) - before;
    kiln__loader_destroy(ld);
    assert_int_equal(during, 0);
    /* the counter does count */
    long c0 = atomic_load(&allocs);
    void *volatile p = malloc(16); /* volatile: the pair must not be optimised away */
    free(p);
    assert_true(atomic_load(&allocs) > c0);
    kiln__dataset_free(&ds);
    kt_net_free(&net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lenet_steps_allocate_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
