/* SHA-256 against the NIST FIPS 180-4 example vectors, and incremental
 * hashing split at every offset against one-shot hashing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static void nist_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrl"
         "mn"
         "opqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[SHA256_HEX_LEN + 1];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        sha256_hex(v[i].msg, strlen(v[i].msg), hex);
        assert_string_equal(hex, v[i].hex);
    }
}

static void million_a(void **state)
{
    (void)state;
    char chunk[1000];
    memset(chunk, 'a', sizeof chunk);
    sha256_ctx c;
    sha256_init(&c);
    for (int i = 0; i < 1000; i++) sha256_update(&c, chunk, sizeof chunk);
    uint8_t d[SHA256_DIGEST_LEN];
    char hex[SHA256_HEX_LEN + 1];
    sha256_final(&c, d);
    sha256_to_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Lengths around the 55/56/64-byte padding edges, split at every offset. */
static void incremental_matches_one_shot(void **state)
{
    (void)state;
    uint8_t msg[200];
    for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)(i * 131 + 7);
    for (size_t len = 0; len <= sizeof msg; len++) {
        char want[SHA256_HEX_LEN + 1], got[SHA256_HEX_LEN + 1];
        sha256_hex(msg, len, want);
        for (size_t cut = 0; cut <= len; cut += (len > 70 ? 7 : 1)) {
            sha256_ctx c;
            uint8_t d[SHA256_DIGEST_LEN];
            sha256_init(&c);
            sha256_update(&c, msg, cut);
            sha256_update(&c, msg + cut, len - cut);
            sha256_final(&c, d);
            sha256_to_hex(d, got);
            assert_string_equal(got, want);
        }
    }
    /* Different lengths give different digests (padding encodes length). */
    char a[SHA256_HEX_LEN + 1], b[SHA256_HEX_LEN + 1];
    sha256_hex(msg, 55, a);
    sha256_hex(msg, 56, b);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nist_vectors),
        cmocka_unit_test(million_a),
        cmocka_unit_test(incremental_matches_one_shot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
