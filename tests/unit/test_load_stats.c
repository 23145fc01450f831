/* kiln load's statistics: exact percentiles with linear interpolation
 * between closest ranks (numpy's default and k6's), and the trend summary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "load.h"

static void test_percentile_small(void **state)
{
    (void)state;
    uint64_t v[] = {10, 20, 30, 40};
    /* rank = p/100 * (n-1) */
    assert_float_equal(load_percentile_sorted(v, 4, 0), 10, 1e-9);
    assert_float_equal(load_percentile_sorted(v, 4, 100), 40, 1e-9);
    assert_float_equal(load_percentile_sorted(v, 4, 50), 25, 1e-9);
    assert_float_equal(load_percentile_sorted(v, 4, 90), 37, 1e-9);
    assert_float_equal(load_percentile_sorted(v, 4, 95), 38.5, 1e-9);
    assert_float_equal(load_percentile_sorted(v, 4, 99), 39.7, 1e-9);
    assert_float_equal(load_percentile_sorted(v, 4, 100.0 / 3), 20, 1e-9);
}

static void test_percentile_edges(void **state)
{
    (void)state;
    uint64_t one[] = {7};
    assert_float_equal(load_percentile_sorted(NULL, 0, 50), 0, 0);
    for (int p = 0; p <= 100; p += 10) assert_float_equal(load_percentile_sorted(one, 1, p), 7, 0);
    uint64_t same[] = {5, 5, 5, 5, 5};
    assert_float_equal(load_percentile_sorted(same, 5, 99), 5, 0);
    /* Large values stay exact (microseconds of a day). */
    uint64_t big[] = {86400000000ull, 86400000002ull};
    assert_float_equal(load_percentile_sorted(big, 2, 50), 86400000001.0, 1e-3);
}

/* 1..100 shuffled: the median is 50.5, p(90) 90.1, p(99) 99.01. */
static void test_trend_of_shuffled(void **state)
{
    (void)state;
    uint64_t v[100];
    for (int i = 0; i < 100; i++) v[i] = (uint64_t)i + 1;
    srand(42);
    for (int i = 99; i > 0; i--) {
        int j = rand() % (i + 1);
        uint64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    load_trend t;
    load_trend_of(v, 100, &t);
    assert_int_equal(t.count, 100);
    assert_float_equal(t.min, 1, 0);
    assert_float_equal(t.max, 100, 0);
    assert_float_equal(t.avg, 50.5, 1e-9);
    assert_float_equal(t.med, 50.5, 1e-9);
    assert_float_equal(t.p90, 90.1, 1e-9);
    assert_float_equal(t.p95, 95.05, 1e-9);
    assert_float_equal(t.p99, 99.01, 1e-9);
    for (int i = 1; i < 100; i++) assert_true(v[i - 1] <= v[i]);
}

static void test_trend_empty(void **state)
{
    (void)state;
    load_trend t;
    load_trend_of(NULL, 0, &t);
    assert_int_equal(t.count, 0);
    assert_float_equal(t.avg, 0, 0);
    assert_float_equal(t.p99, 0, 0);
}

static void test_samples_grow(void **state)
{
    (void)state;
    load_samples s = {0};
    for (uint64_t i = 0; i < 5000; i++) assert_int_equal(load_samples_push(&s, 5000 - i), 0);
    assert_int_equal(s.n, 5000);
    load_trend t;
    load_trend_of(s.v, s.n, &t);
    assert_float_equal(t.min, 1, 0);
    assert_float_equal(t.max, 5000, 0);
    assert_float_equal(t.med, 2500.5, 1e-9);
    load_samples_free(&s);
    assert_null(s.v);
}

static void test_parse_duration(void **state)
{
    (void)state;
    assert_int_equal(load_parse_duration("250ms"), 250000);
    assert_int_equal(load_parse_duration("2s"), 2000000);
    assert_int_equal(load_parse_duration("1m30s"), 90000000);
    assert_int_equal(load_parse_duration("1.5s"), 1500000);
    assert_int_equal(load_parse_duration("1h"), 3600000000ll);
    assert_int_equal(load_parse_duration("3"), 3000000);
    assert_int_equal(load_parse_duration("800us"), 800);
    assert_int_equal(load_parse_duration(""), -1);
    assert_int_equal(load_parse_duration("s"), -1);
    assert_int_equal(load_parse_duration("5x"), -1);
    assert_int_equal(load_parse_duration("-1s"), -1);
    assert_int_equal(load_parse_duration("nan"), -1);
    assert_int_equal(load_parse_duration("1s "), -1);
    assert_int_equal(load_parse_duration("99999999h"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_percentile_small),  cmocka_unit_test(test_percentile_edges),
        cmocka_unit_test(test_trend_of_shuffled), cmocka_unit_test(test_trend_empty),
        cmocka_unit_test(test_samples_grow),      cmocka_unit_test(test_parse_duration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
