/* kiln_session_run allocates nothing: every malloc/calloc/realloc in the
 * process (OpenBLAS included) is counted by interposing them, and runs
 * after the first must not add to the count. Skipped under ASan, which
 * owns the allocator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#include "alloc_count.h"

static void runs_allocate_nothing(const char *arch, int batch)
{
    if (!COUNTING) skip();
    char path[4096];
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/models/%s", src ? src : ".", arch);
    kiln_model *m;
    kiln_session *s;
    kiln_session_options so = {1, batch};
    kiln_status st = kiln_model_from_yaml(path, 3, &m);
    if (st) fail_msg("%s", kiln_last_error());
    assert_int_equal(kiln_session_create(m, &so, &s), KILN_OK);
    kiln_io_info in, out;
    kiln_session_input(s, 0, &in);
    kiln_session_output(s, 0, &out);
    size_t nx = 1, ny = 1;
    for (int d = 0; d < in.ndim; d++) nx *= (size_t)in.dims[d];
    for (int d = 0; d < out.ndim; d++) ny *= (size_t)out.dims[d];
    float *x = calloc(nx, sizeof *x), *y = calloc(ny, sizeof *y);
    for (size_t i = 0; i < nx; i++) x[i] = (float)(i % 17) / 17.0f;
    const float *ins[] = {x};
    float *outs[] = {y};
    assert_int_equal(kiln_session_run(s, ins, outs), KILN_OK); /* warm-up */
    long before = atomic_load(&allocs);
    for (int i = 0; i < 3; i++) assert_int_equal(kiln_session_run(s, ins, outs), KILN_OK);
    long after = atomic_load(&allocs);
    assert_int_equal(after - before, 0);
    free(x);
    free(y);
    kiln_session_free(s);
    kiln_model_free(m);
}

static void lenet_runs_allocate_nothing(void **state)
{
    (void)state;
    runs_allocate_nothing("lenet-mnist.yaml", 2);
}

static void cifar_cnn_runs_allocate_nothing(void **state)
{
    (void)state;
    runs_allocate_nothing("cifar10-cnn.yaml", 1);
}

int main(void)
{
    kiln_blas_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lenet_runs_allocate_nothing),
        cmocka_unit_test(cifar_cnn_runs_allocate_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
