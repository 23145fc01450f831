/*
 * The framed protocol between `kiln serve` and its `kiln worker` processes,
 * spoken over one socketpair per worker.
 *
 * Every frame is a 16-byte little-endian header followed by `length` bytes
 * of payload:
 *
 *   offset 0  u32 length     payload bytes (<= PROTO_MAX_PAYLOAD)
 *   offset 4  u8  magic      PROTO_MAGIC
 *   offset 5  u8  type       one of proto_type
 *   offset 6  u16 reserved   must be 0
 *   offset 8  u64 id         request id (READY: the worker's pid; 0 for SHUTDOWN,
 *                            INIT_FAILED)
 *
 * Payloads (all integers little-endian):
 *   READY        u64 init_us                     worker -> server, once
 *   INIT_FAILED  u16 http status, message bytes  worker -> server, then exit
 *   INVOKE       u16 ctype_len, u16 query_len, content type, query, body
 *   RESULT       u16 http status, u16 ctype_len, u16 batch, content type, body
 *                (batch: how many invocations the worker ran in the round
 *                that produced this one, >= 1)
 *   SHUTDOWN     empty                           server -> worker: exit now
 *
 * Between the server and its zygote (a `kiln worker --zygote` process that
 * forks workers so that a cold start skips exec, dynamic linking and
 * library initialisation):
 *   SPAWN        NUL-terminated worker arguments;  server -> zygote, with the
 *                the worker's socket as SCM_RIGHTS; id = the server's worker id
 *   SPAWNED      u32 pid (0: fork failed)          zygote -> server, same id
 *   EXITED       u32 pid, i32 exit status, i32 signal   zygote -> server
 *
 * Decoders validate every length against the bytes actually present; a
 * frame that fails validation is a protocol error and the peer is dropped.
 */
#ifndef KILN_SERVER_PROTO_H
#define KILN_SERVER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_HEADER_SIZE 16
#define PROTO_MAGIC       0x4b /* 'K' */
/* Bodies are bounded by the HTTP limits long before this. */
#define PROTO_MAX_PAYLOAD (256u << 20)

typedef enum proto_type {
    PROTO_READY = 1,
    PROTO_INIT_FAILED = 2,
    PROTO_INVOKE = 3,
    PROTO_RESULT = 4,
    PROTO_SHUTDOWN = 5,
    PROTO_SPAWN = 6,
    PROTO_SPAWNED = 7,
    PROTO_EXITED = 8,
} proto_type;

typedef struct proto_header {
    uint32_t length;
    uint8_t type;
    uint64_t id;
} proto_header;

/* A view into a payload; pointers alias the decoded buffer. */
typedef struct proto_invoke {
    const char *ctype;
    size_t ctype_len;
    const char *query;
    size_t query_len;
    const char *body;
    size_t body_len;
} proto_invoke;

typedef struct proto_result {
    int status;
    int batch; /* invocations in the worker's round, >= 1 */
    const char *ctype;
    size_t ctype_len;
    const char *body;
    size_t body_len;
} proto_result;

/* Writes a header into out[PROTO_HEADER_SIZE]. */
void proto_put_header(uint8_t *out, proto_type type, uint64_t id, uint32_t length);

/* Parses and validates a header. Returns 0, or -1 with a reason in *why
 * (static string) for a bad magic, unknown type, non-zero reserved field or
 * oversized length. */
int proto_get_header(const uint8_t *in, proto_header *h, const char **why);

/* Frame builders: return a malloc'ed buffer holding header + payload and set
 * *len to its size, or NULL when out of memory or a field is too long. */
/* READY carries the worker's pid in its id: a worker forked by the zygote
 * can answer its first request before the zygote's SPAWNED message with
 * that pid reaches the server (seen under ASan: a cold response without
 * X-Kiln-Worker). */
uint8_t *proto_build_ready(uint64_t init_us, uint64_t pid, size_t *len);
uint8_t *proto_build_init_failed(int status, const char *msg, size_t *len);
uint8_t *proto_build_invoke(uint64_t id, const char *ctype, const char *query, const char *body,
                            size_t body_len, size_t *len);
uint8_t *proto_build_result(uint64_t id, int status, int batch, const char *ctype, const char *body,
                            size_t body_len, size_t *len);
/* A RESULT frame's header and payload up to its body, written into
 * out[PROTO_RESULT_HEAD_MAX] so that the body can follow from its own buffer
 * (writev, no copy). Returns the bytes written, or 0 when ctype is longer
 * than PROTO_RESULT_CTYPE_MAX or body_len over the protocol maximum. */
#define PROTO_RESULT_CTYPE_MAX 255
#define PROTO_RESULT_HEAD_MAX  (PROTO_HEADER_SIZE + 6 + PROTO_RESULT_CTYPE_MAX)
size_t proto_result_head(uint8_t *out, uint64_t id, int status, int batch, const char *ctype,
                         size_t body_len);
uint8_t *proto_build_shutdown(size_t *len);
/* args: n NUL-terminated strings. */
uint8_t *proto_build_spawn(uint64_t id, char *const *args, int n, size_t *len);
uint8_t *proto_build_spawned(uint64_t id, uint32_t pid, size_t *len);
uint8_t *proto_build_exited(uint32_t pid, int32_t status, int32_t sig, size_t *len);

/* Payload decoders: 0, or -1 with *why set when the payload is malformed. */
int proto_parse_ready(const uint8_t *p, size_t n, uint64_t *init_us, const char **why);
int proto_parse_init_failed(const uint8_t *p, size_t n, int *status, const char **msg,
                            size_t *msg_len, const char **why);
int proto_parse_invoke(const uint8_t *p, size_t n, proto_invoke *out, const char **why);
int proto_parse_spawned(const uint8_t *p, size_t n, uint32_t *pid, const char **why);
int proto_parse_exited(const uint8_t *p, size_t n, uint32_t *pid, int32_t *status, int32_t *sig,
                       const char **why);
/* Splits a SPAWN payload into at most max arguments (pointers into p, which
 * must end in NUL). Returns the count, or -1. */
int proto_parse_spawn(uint8_t *p, size_t n, char **args, int max, const char **why);
int proto_parse_result(const uint8_t *p, size_t n, proto_result *out, const char **why);

#endif
