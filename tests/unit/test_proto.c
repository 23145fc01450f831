/* The worker protocol's frames: round trips and rejection of bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "proto.h"

static void test_invoke_round_trip(void **state)
{
    (void)state;
    size_t len;
    const char body[] = "a\0b";
    uint8_t *f = proto_build_invoke(42, "text/plain", "x=1", body, 3, &len);
    assert_non_null(f);
    assert_int_equal(len, PROTO_HEADER_SIZE + 4 + 10 + 3 + 3);
    proto_header h;
    const char *why = NULL;
    assert_int_equal(proto_get_header(f, &h, &why), 0);
    assert_int_equal(h.type, PROTO_INVOKE);
    assert_int_equal(h.id, 42);
    assert_int_equal(h.length, len - PROTO_HEADER_SIZE);
    proto_invoke inv;
    assert_int_equal(proto_parse_invoke(f + PROTO_HEADER_SIZE, h.length, &inv, &why), 0);
    assert_int_equal(inv.ctype_len, 10);
    assert_memory_equal(inv.ctype, "text/plain", 10);
    assert_int_equal(inv.query_len, 3);
    assert_memory_equal(inv.query, "x=1", 3);
    assert_int_equal(inv.body_len, 3);
    assert_memory_equal(inv.body, body, 3);
    free(f);
}

static void test_result_round_trip(void **state)
{
    (void)state;
    size_t len;
    uint8_t *f = proto_build_result(UINT64_C(1) << 40, 404, 3, "application/json", "{}", 2, &len);
    assert_non_null(f);
    proto_header h;
    const char *why;
    assert_int_equal(proto_get_header(f, &h, &why), 0);
    assert_true(h.id == UINT64_C(1) << 40);
    proto_result r;
    assert_int_equal(proto_parse_result(f + PROTO_HEADER_SIZE, h.length, &r, &why), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(r.batch, 3);
    assert_int_equal(r.ctype_len, 16);
    assert_memory_equal(r.body, "{}", 2);
    assert_int_equal(r.body_len, 2);
    free(f);
}

static void test_bad_headers_are_rejected(void **state)
{
    (void)state;
    uint8_t hdr[PROTO_HEADER_SIZE];
    proto_header h;
    const char *why = NULL;
    proto_put_header(hdr, PROTO_READY, 0, 8);
    assert_int_equal(proto_get_header(hdr, &h, &why), 0);
    hdr[4] = 'X'; /* magic */
    assert_int_equal(proto_get_header(hdr, &h, &why), -1);
    assert_non_null(why);
    proto_put_header(hdr, PROTO_READY, 0, 8);
    hdr[5] = 99; /* type */
    assert_int_equal(proto_get_header(hdr, &h, &why), -1);
    proto_put_header(hdr, PROTO_READY, 0, 8);
    hdr[6] = 1; /* reserved */
    assert_int_equal(proto_get_header(hdr, &h, &why), -1);
    proto_put_header(hdr, PROTO_READY, 0, PROTO_MAX_PAYLOAD + 1);
    assert_int_equal(proto_get_header(hdr, &h, &why), -1);
}

static void test_truncated_payloads_are_rejected(void **state)
{
    (void)state;
    const char *why;
    proto_invoke inv;
    proto_result r;
    uint64_t us;
    int status;
    const char *msg;
    size_t ml;
    /* ctype_len 200 but only 2 bytes follow */
    const uint8_t inv_bad[] = {200, 0, 0, 0, 'a', 'b'};
    assert_int_equal(proto_parse_invoke(inv_bad, sizeof inv_bad, &inv, &why), -1);
    assert_int_equal(proto_parse_invoke(inv_bad, 3, &inv, &why), -1);
    const uint8_t res_bad[] = {200, 0, 9, 0, 1, 0, 'x'};
    assert_int_equal(proto_parse_result(res_bad, sizeof res_bad, &r, &why), -1);
    const uint8_t res_status[] = {0x39, 0x05, 0, 0, 1, 0}; /* 1337 */
    assert_int_equal(proto_parse_result(res_status, sizeof res_status, &r, &why), -1);
    const uint8_t res_batch0[] = {200, 0, 0, 0, 0, 0};
    assert_int_equal(proto_parse_result(res_batch0, sizeof res_batch0, &r, &why), -1);
    const uint8_t res_short[] = {200, 0, 0, 0, 1};
    assert_int_equal(proto_parse_result(res_short, sizeof res_short, &r, &why), -1);
    const uint8_t res_ctl[] = {200, 0, 1, 0, 1, 0, '\n'};
    assert_int_equal(proto_parse_result(res_ctl, sizeof res_ctl, &r, &why), -1);
    assert_int_equal(proto_parse_ready((const uint8_t *)"1234567", 7, &us, &why), -1);
    assert_int_equal(proto_parse_init_failed((const uint8_t *)"x", 1, &status, &msg, &ml, &why),
                     -1);
    /* Every prefix of a valid frame either parses or is rejected, never
     * read past its end (run under ASan). */
    size_t len;
    uint8_t *f = proto_build_invoke(1, "ct", "q", "body", 4, &len);
    for (size_t n = 0; n <= len - PROTO_HEADER_SIZE; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, f + PROTO_HEADER_SIZE, n);
        int rc = proto_parse_invoke(copy, n, &inv, &why);
        if (rc == 0) assert_true(inv.body_len <= n);
        free(copy);
    }
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invoke_round_trip),
        cmocka_unit_test(test_result_round_trip),
        cmocka_unit_test(test_bad_headers_are_rejected),
        cmocka_unit_test(test_truncated_payloads_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
