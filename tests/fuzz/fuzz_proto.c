/*
 * libFuzzer target: the worker pipe protocol (src/server/proto.c), the
 * frames `kiln serve`, its zygote and its workers exchange. The input is a
 * byte stream cut into frames as the readers do (16-byte header, then the
 * payload its length names); each payload goes to every decoder, and what
 * decodes is rebuilt and decoded again to the same values.
 */
#include "proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void payload(const proto_header *h, const uint8_t *p, size_t n)
{
    const char *why;
    uint64_t u64;
    uint32_t pid;
    int32_t st, sig;
    int status;
    const char *msg;
    size_t msg_len, len;
    proto_invoke inv;
    proto_result res;
    if (proto_parse_ready(p, n, &u64, &why) == 0) {
        uint8_t *f = proto_build_ready(u64, u64, &len);
        uint64_t again;
        if (f && (proto_parse_ready(f + PROTO_HEADER_SIZE, len - PROTO_HEADER_SIZE, &again, &why) ||
                  again != u64))
            abort();
        free(f);
    }
    if (proto_parse_init_failed(p, n, &status, &msg, &msg_len, &why) == 0 &&
        (msg_len > n ||
         (msg_len && (msg < (const char *)p || msg + msg_len > (const char *)p + n))))
        abort();
    if (proto_parse_invoke(p, n, &inv, &why) == 0) {
        if (inv.ctype_len + inv.query_len + inv.body_len > n) abort();
        /* The builder takes NUL-terminated strings: rebuild when they are. */
        char *ct = strndup(inv.ctype, inv.ctype_len), *q = strndup(inv.query, inv.query_len);
        if (ct && q && strlen(ct) == inv.ctype_len && strlen(q) == inv.query_len) {
            uint8_t *f = proto_build_invoke(h->id, ct, q, inv.body, inv.body_len, &len);
            proto_invoke again;
            if (f &&
                (proto_parse_invoke(f + PROTO_HEADER_SIZE, len - PROTO_HEADER_SIZE, &again, &why) ||
                 again.body_len != inv.body_len || memcmp(again.body, inv.body, inv.body_len)))
                abort();
            free(f);
        }
        free(ct);
        free(q);
    }
    if (proto_parse_result(p, n, &res, &why) == 0 && res.ctype_len + res.body_len > n) abort();
    proto_parse_spawned(p, n, &pid, &why);
    proto_parse_exited(p, n, &pid, &st, &sig, &why);
    /* SPAWN payloads are split in place and must end in NUL. */
    uint8_t *copy = malloc(n + 1);
    if (copy) {
        memcpy(copy, p, n);
        char *args[16];
        int k = proto_parse_spawn(copy, n, args, 16, &why);
        for (int i = 0; i < k; i++)
            if ((uint8_t *)args[i] < copy || (uint8_t *)args[i] >= copy + n) abort();
        free(copy);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    while (size >= PROTO_HEADER_SIZE) {
        proto_header h;
        const char *why;
        if (proto_get_header(data, &h, &why)) return 0; /* the peer is dropped */
        if (h.length > PROTO_MAX_PAYLOAD) abort();
        if (h.length > size - PROTO_HEADER_SIZE) return 0; /* waits for more bytes */
        /* The payload alone in its own buffer, so ASan sees reads past it. */
        uint8_t *p = malloc(h.length ? h.length : 1);
        if (!p) return 0;
        memcpy(p, data + PROTO_HEADER_SIZE, h.length);
        payload(&h, p, h.length);
        free(p);
        data += PROTO_HEADER_SIZE + h.length;
        size -= PROTO_HEADER_SIZE + h.length;
    }
    return 0;
}
