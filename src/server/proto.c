/* Encoding and strict decoding of worker protocol frames (see proto.h). */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

void proto_put_header(uint8_t *out, proto_type type, uint64_t id, uint32_t length)
{
    put32(out, length);
    out[4] = PROTO_MAGIC;
    out[5] = (uint8_t)type;
    put16(out + 6, 0);
    put64(out + 8, id);
}

int proto_get_header(const uint8_t *in, proto_header *h, const char **why)
{
    h->length = get32(in);
    h->type = in[5];
    h->id = get64(in + 8);
    if (in[4] != PROTO_MAGIC) {
        *why = "bad frame magic";
        return -1;
    }
    if (h->type < PROTO_READY || h->type > PROTO_EXITED) {
        *why = "unknown frame type";
        return -1;
    }
    if (get16(in + 6) != 0) {
        *why = "reserved header field is not zero";
        return -1;
    }
    if (h->length > PROTO_MAX_PAYLOAD) {
        *why = "frame payload larger than the protocol maximum";
        return -1;
    }
    return 0;
}

/* Allocates header + payload of `payload` bytes; NULL if too large. */
static uint8_t *frame_alloc(proto_type type, uint64_t id, size_t payload, size_t *len)
{
    if (payload > PROTO_MAX_PAYLOAD) return NULL;
    uint8_t *f = malloc(PROTO_HEADER_SIZE + payload);
    if (!f) return NULL;
    proto_put_header(f, type, id, (uint32_t)payload);
    *len = PROTO_HEADER_SIZE + payload;
    return f;
}

uint8_t *proto_build_ready(uint64_t init_us, uint64_t pid, size_t *len)
{
    uint8_t *f = frame_alloc(PROTO_READY, pid, 8, len);
    if (f) put64(f + PROTO_HEADER_SIZE, init_us);
    return f;
}

uint8_t *proto_build_init_failed(int status, const char *msg, size_t *len)
{
    size_t n = strlen(msg);
    uint8_t *f = frame_alloc(PROTO_INIT_FAILED, 0, 2 + n, len);
    if (!f) return NULL;
    put16(f + PROTO_HEADER_SIZE, (uint16_t)status);
    memcpy(f + PROTO_HEADER_SIZE + 2, msg, n);
    return f;
}

uint8_t *proto_build_invoke(uint64_t id, const char *ctype, const char *query, const char *body,
                            size_t body_len, size_t *len)
{
    size_t cl = ctype ? strlen(ctype) : 0, ql = query ? strlen(query) : 0;
    if (cl > UINT16_MAX || ql > UINT16_MAX || body_len > PROTO_MAX_PAYLOAD) return NULL;
    uint8_t *f = frame_alloc(PROTO_INVOKE, id, 4 + cl + ql + body_len, len);
    if (!f) return NULL;
    uint8_t *p = f + PROTO_HEADER_SIZE;
    put16(p, (uint16_t)cl);
    put16(p + 2, (uint16_t)ql);
    if (cl) memcpy(p + 4, ctype, cl);
    if (ql) memcpy(p + 4 + cl, query, ql);
    if (body_len) memcpy(p + 4 + cl + ql, body, body_len);
    return f;
}

size_t proto_result_head(uint8_t *out, uint64_t id, int status, int batch, const char *ctype,
                         size_t body_len)
{
    size_t cl = ctype ? strlen(ctype) : 0;
    if (cl > PROTO_RESULT_CTYPE_MAX || body_len > PROTO_MAX_PAYLOAD - 6 - cl) return 0;
    proto_put_header(out, PROTO_RESULT, id, (uint32_t)(6 + cl + body_len));
    uint8_t *p = out + PROTO_HEADER_SIZE;
    put16(p, (uint16_t)status);
    put16(p + 2, (uint16_t)cl);
    put16(p + 4, (uint16_t)(batch < 1 ? 1 : batch > UINT16_MAX ? UINT16_MAX : batch));
    if (cl) memcpy(p + 6, ctype, cl);
    return PROTO_HEADER_SIZE + 6 + cl;
}

uint8_t *proto_build_result(uint64_t id, int status, int batch, const char *ctype, const char *body,
                            size_t body_len, size_t *len)
{
    uint8_t head[PROTO_RESULT_HEAD_MAX];
    size_t hl = proto_result_head(head, id, status, batch, ctype, body_len);
    if (!hl) return NULL;
    uint8_t *f = malloc(hl + body_len);
    if (!f) return NULL;
    memcpy(f, head, hl);
    if (body_len) memcpy(f + hl, body, body_len);
    *len = hl + body_len;
    return f;
}

uint8_t *proto_build_shutdown(size_t *len)
{
    return frame_alloc(PROTO_SHUTDOWN, 0, 0, len);
}

int proto_parse_ready(const uint8_t *p, size_t n, uint64_t *init_us, const char **why)
{
    if (n != 8) {
        *why = "READY payload is not 8 bytes";
        return -1;
    }
    *init_us = get64(p);
    return 0;
}

static int status_ok(int s)
{
    return s >= 100 && s <= 599;
}

int proto_parse_init_failed(const uint8_t *p, size_t n, int *status, const char **msg,
                            size_t *msg_len, const char **why)
{
    if (n < 2) {
        *why = "INIT_FAILED payload shorter than its status";
        return -1;
    }
    *status = get16(p);
    if (!status_ok(*status)) {
        *why = "INIT_FAILED status is not an HTTP status";
        return -1;
    }
    *msg = (const char *)p + 2;
    *msg_len = n - 2;
    return 0;
}

int proto_parse_invoke(const uint8_t *p, size_t n, proto_invoke *out, const char **why)
{
    if (n < 4) {
        *why = "INVOKE payload shorter than its lengths";
        return -1;
    }
    size_t cl = get16(p), ql = get16(p + 2);
    if (4 + cl + ql > n) {
        *why = "INVOKE field lengths exceed the payload";
        return -1;
    }
    out->ctype = (const char *)p + 4;
    out->ctype_len = cl;
    out->query = (const char *)p + 4 + cl;
    out->query_len = ql;
    out->body = (const char *)p + 4 + cl + ql;
    out->body_len = n - 4 - cl - ql;
    return 0;
}

int proto_parse_result(const uint8_t *p, size_t n, proto_result *out, const char **why)
{
    if (n < 6) {
        *why = "RESULT payload shorter than its status and lengths";
        return -1;
    }
    out->status = get16(p);
    if (!status_ok(out->status)) {
        *why = "RESULT status is not an HTTP status";
        return -1;
    }
    size_t cl = get16(p + 2);
    out->batch = get16(p + 4);
    if (out->batch < 1) {
        *why = "RESULT batch is 0";
        return -1;
    }
    if (6 + cl > n) {
        *why = "RESULT content-type length exceeds the payload";
        return -1;
    }
    for (size_t i = 0; i < cl; i++) {
        unsigned char c = p[6 + i];
        if (c < 0x20 || c == 0x7f) {
            *why = "RESULT content type holds a control character";
            return -1;
        }
    }
    out->ctype = (const char *)p + 6;
    out->ctype_len = cl;
    out->body = (const char *)p + 6 + cl;
    out->body_len = n - 6 - cl;
    return 0;
}

uint8_t *proto_build_spawn(uint64_t id, char *const *args, int n, size_t *len)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += strlen(args[i]) + 1;
    uint8_t *f = frame_alloc(PROTO_SPAWN, id, total, len);
    if (!f) return NULL;
    uint8_t *p = f + PROTO_HEADER_SIZE;
    for (int i = 0; i < n; i++) {
        size_t k = strlen(args[i]) + 1;
        memcpy(p, args[i], k);
        p += k;
    }
    return f;
}

uint8_t *proto_build_spawned(uint64_t id, uint32_t pid, size_t *len)
{
    uint8_t *f = frame_alloc(PROTO_SPAWNED, id, 4, len);
    if (f) put32(f + PROTO_HEADER_SIZE, pid);
    return f;
}

uint8_t *proto_build_exited(uint32_t pid, int32_t status, int32_t sig, size_t *len)
{
    uint8_t *f = frame_alloc(PROTO_EXITED, 0, 12, len);
    if (!f) return NULL;
    put32(f + PROTO_HEADER_SIZE, pid);
    put32(f + PROTO_HEADER_SIZE + 4, (uint32_t)status);
    put32(f + PROTO_HEADER_SIZE + 8, (uint32_t)sig);
    return f;
}

int proto_parse_spawned(const uint8_t *p, size_t n, uint32_t *pid, const char **why)
{
    if (n != 4) {
        *why = "SPAWNED payload is not 4 bytes";
        return -1;
    }
    *pid = get32(p);
    return 0;
}

int proto_parse_exited(const uint8_t *p, size_t n, uint32_t *pid, int32_t *status, int32_t *sig,
                       const char **why)
{
    if (n != 12) {
        *why = "EXITED payload is not 12 bytes";
        return -1;
    }
    *pid = get32(p);
    *status = (int32_t)get32(p + 4);
    *sig = (int32_t)get32(p + 8);
    return 0;
}

int proto_parse_spawn(uint8_t *p, size_t n, char **args, int max, const char **why)
{
    if (n == 0 || p[n - 1] != 0) {
        *why = "SPAWN payload does not end in NUL";
        return -1;
    }
    int k = 0;
    for (size_t i = 0; i < n;) {
        if (k == max) {
            *why = "SPAWN has too many arguments";
            return -1;
        }
        args[k++] = (char *)p + i;
        i += strlen((char *)p + i) + 1;
    }
    return k;
}
