/*
 * SHA-256 (FIPS 180-4), incremental. Used by the store to name model blobs by
 * their content and to verify them. Not constant-time; it hashes public data.
 */
#ifndef KILN_SERVER_SHA256_H
#define KILN_SERVER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN 32
#define SHA256_HEX_LEN    64 /* characters, without the terminating NUL */

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t buf[64];
    size_t buf_len; /* 0..63 bytes waiting in buf */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
/* Writes the digest; `c` must be initialised again before reuse. */
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_DIGEST_LEN]);

/* One-shot hash of `len` bytes to a lowercase hex string (65 bytes with NUL). */
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);
/* Lowercase hex of a digest (65 bytes with NUL). */
void sha256_to_hex(const uint8_t digest[SHA256_DIGEST_LEN], char out[SHA256_HEX_LEN + 1]);

#endif
