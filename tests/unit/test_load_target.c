/* kiln load's target URL: parsing, and the loopback-only rule (numeric
 * addresses only, so no lookup leaves the machine). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "load.h"

static void test_url_parts(void **state)
{
    (void)state;
    load_target t;
    char err[512];
    assert_int_equal(load_target_open(&t, "http://127.0.0.1:8081/base/", false, err, sizeof err),
                     0);
    assert_string_equal(t.host, "127.0.0.1");
    assert_string_equal(t.port, "8081");
    assert_string_equal(t.prefix, "/base");
    assert_string_equal(t.hostport, "127.0.0.1:8081");
    assert_string_equal(t.addr_text, "127.0.0.1");

    assert_int_equal(load_target_open(&t, "http://127.1.2.3", false, err, sizeof err), 0);
    assert_string_equal(t.port, "80");
    assert_string_equal(t.prefix, "");

    assert_int_equal(load_target_open(&t, "HTTP://[::1]:9/", false, err, sizeof err), 0);
    assert_string_equal(t.host, "::1");
    assert_string_equal(t.hostport, "[::1]:9");
    assert_string_equal(t.prefix, "");
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        const char *words;
    } bad[] = {
        {"https://127.0.0.1/", "only http://"},
        {"127.0.0.1:80", "only http://"},
        {"http://", "no host"},
        {"http://127.0.0.1:0/", "port"},
        {"http://127.0.0.1:65536/", "port"},
        {"http://127.0.0.1:8x/", "port"},
        {"http://[::1/", "unterminated"},
        {"http://u:p@127.0.0.1/", "credentials"},
        {"http://127.0.0.1/a?b=1", "the path holds"},
        {"http://127.0.0.1?b=1", "query"},
        {"http://10.0.0.1:8080/", "not a loopback address"},
        {"http://192.168.1.10/", "not a loopback address"},
        {"http://8.8.8.8/", "not a loopback address"},
        {"http://[2001:db8::1]/", "not a loopback address"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        load_target t;
        char err[512] = "";
        int rc = load_target_open(&t, bad[i].url, false, err, sizeof err);
        if (rc != 2 || !strstr(err, bad[i].words)) {
            print_error("%s: rc %d, '%s', want '%s'\n", bad[i].url, rc, err, bad[i].words);
            fail();
        }
    }
    /* --allow-remote lifts only the loopback rule. */
    load_target t;
    char err[512];
    assert_int_equal(load_target_open(&t, "http://10.0.0.1:8080/", true, err, sizeof err), 0);
    assert_int_equal(load_target_open(&t, "https://10.0.0.1/", true, err, sizeof err), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parts),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
