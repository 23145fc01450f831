#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "kiln.h"

static void alloc_is_contiguous_aligned_and_zeroed(void **state)
{
    (void)state;
    kiln_tensor t;
    int64_t shape[] = {2, 3, 5, 7};
    assert_int_equal(kiln_tensor_alloc(&t, KILN_F32, 4, shape), KILN_OK);
    assert_true(((uintptr_t)t.data % KILN_ALIGN) == 0);
    assert_true(t.flags & KILN_TENSOR_OWNS_DATA);
    int64_t strides[] = {105, 35, 7, 1};
    for (int i = 0; i < 4; i++) assert_int_equal(t.strides[i], strides[i]);
    int64_t n, bytes;
    assert_int_equal(kiln_tensor_numel(&t, &n), KILN_OK);
    assert_int_equal(n, 210);
    assert_int_equal(kiln_tensor_nbytes(&t, &bytes), KILN_OK);
    assert_int_equal(bytes, 840);
    for (int64_t i = 0; i < n; i++) assert_true(t.data[i] == 0.0f);
    assert_true(kiln_tensor_is_contiguous(&t));
    kiln_tensor_free(&t);
    assert_null(t.data);
}

static void scalar_and_empty_tensors(void **state)
{
    (void)state;
    kiln_tensor t;
    int64_t n;
    assert_int_equal(kiln_tensor_alloc(&t, KILN_F32, 0, NULL), KILN_OK);
    assert_int_equal(kiln_tensor_numel(&t, &n), KILN_OK);
    assert_int_equal(n, 1);
    t.data[0] = 4.0f;
    assert_true(*kiln_tensor_at(&t, NULL) == 4.0f);
    kiln_tensor_free(&t);

    int64_t shape[] = {3, 0, 2};
    assert_int_equal(kiln_tensor_alloc(&t, KILN_F32, 3, shape), KILN_OK);
    assert_int_equal(kiln_tensor_numel(&t, &n), KILN_OK);
    assert_int_equal(n, 0);
    kiln_tensor_free(&t);
}

static void bad_shapes_are_rejected(void **state)
{
    (void)state;
    kiln_tensor t;
    int64_t neg[] = {2, -1};
    assert_int_equal(kiln_tensor_init(&t, KILN_F32, 2, neg), KILN_ERR_INVALID_ARG);
    int64_t huge[] = {INT64_MAX / 2, 3};
    assert_int_equal(kiln_tensor_init(&t, KILN_F32, 2, huge), KILN_ERR_RANGE);
    /* numel fits but bytes do not: allocation must refuse, not wrap. */
    int64_t big[] = {INT64_MAX / 4 + 1};
    assert_int_equal(kiln_tensor_alloc(&t, KILN_F32, 1, big), KILN_ERR_RANGE);
    int64_t ok[] = {1};
    assert_int_equal(kiln_tensor_init(&t, KILN_F32, KILN_MAX_DIMS + 1, ok), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_tensor_init(&t, (kiln_dtype)7, 1, ok), KILN_ERR_DTYPE);
}

static void fill_iota(kiln_tensor *t)
{
    int64_t n;
    kiln_tensor_numel(t, &n);
    for (int64_t i = 0; i < n; i++) t->data[i] = (float)i;
}

static void slice_views_share_storage(void **state)
{
    (void)state;
    kiln_tensor t, v;
    int64_t shape[] = {4, 6};
    assert_int_equal(kiln_tensor_alloc(&t, KILN_F32, 2, shape), KILN_OK);
    fill_iota(&t);
    /* columns 1, 3, 5 */
    assert_int_equal(kiln_tensor_slice(&t, 1, 1, 6, 2, &v), KILN_OK);
    assert_int_equal(v.shape[0], 4);
    assert_int_equal(v.shape[1], 3);
    assert_false(v.flags & KILN_TENSOR_OWNS_DATA);
    assert_false(kiln_tensor_is_contiguous(&v));
    int64_t idx[] = {2, 1};
    assert_true(*kiln_tensor_at(&v, idx) == 2 * 6 + 3);
    *kiln_tensor_at(&v, idx) = -1.0f;
    assert_true(t.data[15] == -1.0f);
    int64_t oob[] = {4, 0};
    assert_null(kiln_tensor_at(&v, oob));
    /* stop past the end is clamped; start > stop is an error */
    assert_int_equal(kiln_tensor_slice(&t, 0, 2, 100, 1, &v), KILN_OK);
    assert_int_equal(v.shape[0], 2);
    assert_int_equal(kiln_tensor_slice(&t, 0, 3, 2, 1, &v), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_tensor_slice(&t, 2, 0, 1, 1, &v), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_tensor_slice(&t, 0, 0, 1, 0, &v), KILN_ERR_INVALID_ARG);
    kiln_tensor_free(&t);
}

static void reshape_infers_and_checks(void **state)
{
    (void)state;
    kiln_tensor t, v;
    int64_t shape[] = {2, 3, 4};
    assert_int_equal(kiln_tensor_alloc(&t, KILN_F32, 3, shape), KILN_OK);
    int64_t to[] = {6, -1};
    assert_int_equal(kiln_tensor_reshape(&t, 2, to, &v), KILN_OK);
    assert_int_equal(v.shape[1], 4);
    assert_ptr_equal(v.data, t.data);
    int64_t wrong[] = {5, -1};
    assert_int_equal(kiln_tensor_reshape(&t, 2, wrong, &v), KILN_ERR_SHAPE);
    int64_t two_infer[] = {-1, -1};
    assert_int_equal(kiln_tensor_reshape(&t, 2, two_infer, &v), KILN_ERR_INVALID_ARG);
    int64_t bad_count[] = {5, 5};
    assert_int_equal(kiln_tensor_reshape(&t, 2, bad_count, &v), KILN_ERR_SHAPE);
    /* a non-contiguous view cannot be reshaped in place */
    kiln_tensor s;
    assert_int_equal(kiln_tensor_slice(&t, 2, 0, 4, 2, &s), KILN_OK);
    int64_t flat[] = {-1};
    assert_int_equal(kiln_tensor_reshape(&s, 1, flat, &v), KILN_ERR_STATE);
    kiln_tensor_free(&t);
}

static void permute_then_copy_transposes(void **state)
{
    (void)state;
    kiln_tensor a, at, out;
    int64_t shape[] = {3, 5};
    assert_int_equal(kiln_tensor_alloc(&a, KILN_F32, 2, shape), KILN_OK);
    fill_iota(&a);
    int perm[] = {1, 0};
    assert_int_equal(kiln_tensor_permute(&a, perm, &at), KILN_OK);
    int64_t tshape[] = {5, 3};
    assert_int_equal(kiln_tensor_alloc(&out, KILN_F32, 2, tshape), KILN_OK);
    assert_int_equal(kiln_tensor_copy(&out, &at), KILN_OK);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++) assert_true(out.data[i * 3 + j] == (float)(j * 5 + i));
    int badperm[] = {0, 0};
    assert_int_equal(kiln_tensor_permute(&a, badperm, &at), KILN_ERR_INVALID_ARG);
    /* shapes must agree */
    assert_int_equal(kiln_tensor_copy(&a, &out), KILN_ERR_SHAPE);
    kiln_tensor_free(&a);
    kiln_tensor_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(alloc_is_contiguous_aligned_and_zeroed),
        cmocka_unit_test(scalar_and_empty_tensors),
        cmocka_unit_test(bad_shapes_are_rejected),
        cmocka_unit_test(slice_views_share_storage),
        cmocka_unit_test(reshape_infers_and_checks),
        cmocka_unit_test(permute_then_copy_transposes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
