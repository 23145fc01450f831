#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>

#include "kiln.h"

static void allocations_are_aligned_and_bounded(void **state)
{
    (void)state;
    kiln_arena *a;
    assert_int_equal(kiln_arena_create(1000, &a), KILN_OK);
    assert_int_equal(kiln_arena_capacity(a), 1000);
    char *p = kiln_arena_alloc(a, 10, 0);
    assert_non_null(p);
    assert_true((uintptr_t)p % KILN_ALIGN == 0);
    char *q = kiln_arena_alloc(a, 10, 0);
    assert_true((uintptr_t)q % KILN_ALIGN == 0);
    assert_true(q >= p + 10);
    char *r = kiln_arena_alloc(a, 3, 1);
    assert_ptr_equal(r, q + 10);
    /* what is left cannot satisfy a request bigger than the rest */
    assert_null(kiln_arena_alloc(a, 1000, 1));
    assert_null(kiln_arena_alloc(a, SIZE_MAX, 1));
    assert_null(kiln_arena_alloc(a, 1, 3)); /* not a power of two */
    kiln_arena_destroy(a);
}

static void mark_and_reset_reuse_space_and_keep_peak(void **state)
{
    (void)state;
    kiln_arena *a;
    assert_int_equal(kiln_arena_create(4096, &a), KILN_OK);
    void *first = kiln_arena_alloc(a, 100, 64);
    size_t m = kiln_arena_mark(a);
    void *second = kiln_arena_alloc(a, 1000, 64);
    assert_non_null(second);
    size_t peak = kiln_arena_peak(a);
    kiln_arena_reset(a, m);
    assert_int_equal(kiln_arena_used(a), m);
    assert_ptr_equal(kiln_arena_alloc(a, 1000, 64), second);
    kiln_arena_reset(a, 0);
    assert_ptr_equal(kiln_arena_alloc(a, 100, 64), first);
    assert_int_equal(kiln_arena_peak(a), peak);
    kiln_arena_destroy(a);
}

static void tensors_and_planned_offsets(void **state)
{
    (void)state;
    kiln_arena *a;
    assert_int_equal(kiln_arena_create(1 << 16, &a), KILN_OK);
    kiln_tensor t;
    int64_t shape[] = {1, 3, 8, 8};
    assert_int_equal(kiln_arena_tensor(a, &t, KILN_F32, 4, shape), KILN_OK);
    assert_false(t.flags & KILN_TENSOR_OWNS_DATA);
    assert_true(kiln_arena_used(a) >= 3 * 8 * 8 * 4);
    int64_t too_big[] = {1 << 20};
    assert_int_equal(kiln_arena_tensor(a, &t, KILN_F32, 1, too_big), KILN_ERR_NO_MEMORY);
    assert_non_null(kiln_arena_at(a, 0, 1 << 16));
    assert_null(kiln_arena_at(a, 1, 1 << 16));
    assert_null(kiln_arena_at(a, SIZE_MAX, 2));
    kiln_arena_destroy(a);
}

static void wrapped_buffer_is_not_freed(void **state)
{
    (void)state;
    void *buf = aligned_alloc(KILN_ALIGN, 256);
    kiln_arena *a;
    assert_int_equal(kiln_arena_wrap(buf, 256, &a), KILN_OK);
    assert_ptr_equal(kiln_arena_alloc(a, 16, 0), buf);
    kiln_arena_destroy(a);
    assert_int_equal(kiln_arena_wrap((char *)buf + 1, 16, &a), KILN_ERR_INVALID_ARG);
    assert_null(a);
    free(buf); /* still ours: a double free would abort here */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allocations_are_aligned_and_bounded),
        cmocka_unit_test(mark_and_reset_reuse_space_and_keep_peak),
        cmocka_unit_test(tensors_and_planned_offsets),
        cmocka_unit_test(wrapped_buffer_is_not_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
