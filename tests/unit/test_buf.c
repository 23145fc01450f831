/* The server's byte buffer: printf appends of every length, and the
 * printf-free "%.9g" of floats (buf_fmt_g9) against printf itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_printf_lengths(void **state)
{
    (void)state;
    buf b = {0};
    char want[4096] = "";
    size_t wl = 0;
    /* lines shorter and longer than the first try's 64 bytes, across
     * every growth of the buffer */
    for (int n = 0; n < 300; n += 7) {
        char line[400];
        memset(line, 'a' + n % 26, (size_t)n);
        line[n] = 0;
        buf_printf(&b, "%d:%s;", n, line);
        wl += (size_t)snprintf(want + wl, sizeof want - wl, "%d:%s;", n, line);
        if (wl >= sizeof want) break;
        assert_int_equal(b.len, wl);
        assert_memory_equal(b.data, want, wl);
        assert_int_equal(b.data[b.len], 0);
    }
    buf_free(&b);
}

static void test_integers(void **state)
{
    (void)state;
    const long long vals[] = {0,
                              1,
                              -1,
                              9,
                              10,
                              99,
                              100,
                              12345,
                              -12345,
                              2147483647LL,
                              -2147483648LL,
                              4294967296LL,
                              9223372036854775807LL,
                              -9223372036854775807LL - 1};
    buf b = {0};
    char want[64];
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        b.len = 0;
        buf_put_i64(&b, vals[i]);
        snprintf(want, sizeof want, "%lld", vals[i]);
        assert_string_equal(b.data, want);
        b.len = 0;
        buf_put_u64(&b, (unsigned long long)vals[i]);
        snprintf(want, sizeof want, "%llu", (unsigned long long)vals[i]);
        assert_string_equal(b.data, want);
    }
    buf_free(&b);
}

/* buf_fmt_g9(v) must be printf's "%.9g" byte for byte. */
static int same_as_printf(float v)
{
    char want[64], got[32];
    snprintf(want, sizeof want, "%.9g", (double)v);
    int n = buf_fmt_g9(got, v);
    if (n != (int)strlen(got) || strcmp(want, got)) {
        print_error("%a: printf '%s', buf_fmt_g9 '%s' (%d)\n", (double)v, want, got, n);
        return 0;
    }
    return 1;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_g9_special(void **state)
{
    (void)state;
    const float vals[] = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          0.5f,
                          0.1f,
                          0.2f,
                          0.3f,
                          1e-4f,
                          -1e-4f,
                          1e-5f,
                          9.99999e-5f,
                          0.999999999f,
                          0.99999994f,
                          1e9f,
                          999999936.0f,
                          123456789.0f,
                          16777216.0f,
                          16777217.0f,
                          8388608.5f,
                          3.14159265f,
                          1e-3f,
                          0.00123f,
                          1e8f,
                          99999992.0f,
                          1e30f,
                          1e-30f,
                          INFINITY,
                          -INFINITY,
                          NAN,
                          1.17549435e-38f,
                          1.4e-45f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) assert_true(same_as_printf(vals[i]));
    /* around every power of ten in the fast range, and of two */
    for (int e = -22; e <= 9; e++) {
        float p = (float)pow(10.0, e);
        uint32_t u;
        memcpy(&u, &p, sizeof u);
        for (int d = -2000; d <= 2000; d++) assert_true(same_as_printf(from_bits(u + (uint32_t)d)));
    }
    for (int e = -20; e <= 30; e++) {
        float p = ldexpf(1.0f, e);
        uint32_t u;
        memcpy(&u, &p, sizeof u);
        for (int d = -200; d <= 200; d++) assert_true(same_as_printf(from_bits(u + (uint32_t)d)));
    }
}

/* Every float of [0, 1] (probabilities) at a stride, then the whole bit
 * space, both signs, at a coarser one. */
static void test_g9_sweep(void **state)
{
    (void)state;
    const uint32_t one = 0x3f800000u;
    for (uint32_t u = 0; u <= one; u += 331)
        if (!same_as_printf(from_bits(u))) fail();
    for (uint64_t u = 0; u <= 0xffffffffu; u += 4099)
        if (!same_as_printf(from_bits((uint32_t)u))) fail();
    /* a seeded draw of the fast range's floats */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < 300000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const float lo = 1e-21f, hi = 1e9f;
        float v = (float)(lo * pow((double)hi / lo, (double)(x >> 11) / 9007199254740992.0));
        if (!same_as_printf(x & 1 ? -v : v)) fail();
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_printf_lengths),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_g9_special),
        cmocka_unit_test(test_g9_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
