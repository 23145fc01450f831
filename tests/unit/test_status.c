#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "kiln.h"

static void every_status_has_a_distinct_message(void **state)
{
    (void)state;
    for (int i = 0; i < KILN_STATUS_COUNT_; i++) {
        const char *m = kiln_strerror((kiln_status)i);
        assert_non_null(m);
        assert_true(strlen(m) > 0);
        assert_string_not_equal(m, "unknown status");
        for (int j = 0; j < i; j++) assert_string_not_equal(m, kiln_strerror((kiln_status)j));
    }
    assert_string_equal(kiln_strerror(KILN_OK), "success");
    assert_string_equal(kiln_status_name(KILN_ERR_SHAPE), "ERR_SHAPE");
}

static void out_of_range_status_is_named_unknown(void **state)
{
    (void)state;
    assert_string_equal(kiln_strerror((kiln_status)KILN_STATUS_COUNT_), "unknown status");
    assert_string_equal(kiln_strerror((kiln_status)-1), "unknown status");
    assert_string_equal(kiln_status_name((kiln_status)9999), "UNKNOWN");
}

static void version_matches_header_and_build(void **state)
{
    (void)state;
    assert_string_equal(kiln_version(), KILN_VERSION_STRING);
    assert_string_equal(kiln_version(), KILN_MESON_VERSION);
    assert_int_equal(kiln_version_hex(), KILN_VERSION_HEX);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", KILN_VERSION_MAJOR, KILN_VERSION_MINOR,
             KILN_VERSION_PATCH);
    assert_string_equal(buf, KILN_VERSION_STRING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_status_has_a_distinct_message),
        cmocka_unit_test(out_of_range_status_is_named_unknown),
        cmocka_unit_test(version_matches_header_and_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
