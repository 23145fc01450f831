/*
 * The invocation log hook. The scheduler emits one record per finished
 * invocation (every outcome: success, 4xx/5xx from the worker, 429, 502,
 * 504, cancelled by the client) on the event loop thread. A sink registered
 * with invlog_set_sink() receives it; the SQLite store registers one that
 * batches rows off the loop. With no sink the records are dropped.
 *
 * The sink must not block: it runs on the loop between requests. The
 * record and its strings are valid only during the call.
 */
#ifndef KILN_SERVER_INVLOG_H
#define KILN_SERVER_INVLOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct invocation_record {
    const char *function;    /* function name */
    uint64_t id;             /* the scheduler's invocation id, unique per server run */
    int64_t arrived_unix_us; /* wall clock at submission */
    int status;              /* HTTP status answered (or that would have been, if cancelled) */
    int cold;                /* 1 cold, 0 warm, -1 never reached a worker */
    int cancelled;           /* 1 when the client went away first */
    int worker_pid;          /* 0 when none */
    uint64_t queue_us;       /* arrival to dispatch on a worker */
    uint64_t init_us;        /* worker spawn to ready, cold starts only */
    uint64_t exec_us;        /* dispatch to result */
    uint64_t total_us;       /* arrival to result */
    size_t request_bytes;
    size_t response_bytes;
    const char *error; /* the reason for a 429/502/504 answered by the server, or NULL */
} invocation_record;

typedef void (*invlog_sink)(void *ctx, const invocation_record *rec);

/* Registers the sink (NULL removes it). */
void invlog_set_sink(invlog_sink sink, void *ctx);

/* Hands one record to the sink, if any. */
void invlog_emit(const invocation_record *rec);

#endif
