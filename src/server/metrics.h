/*
 * Counters and histograms of the server, and their Prometheus text
 * rendering. Names follow OpenFaaS where they mean the same thing
 * (gateway_function_invocation_total, gateway_functions_seconds); the rest
 * are kiln_*. Only the event loop thread touches these.
 */
#ifndef KILN_SERVER_METRICS_H
#define KILN_SERVER_METRICS_H

#include "buf.h"

#include <stdint.h>

#define METRICS_BUCKETS 15

typedef struct metrics_hist {
    uint64_t buckets[METRICS_BUCKETS]; /* cumulative at render time, not here */
    uint64_t count;
    double sum;
} metrics_hist;

/* Why the HTTP layer turned a request or connection away. */
typedef enum reject_reason {
    REJECT_CONNECTIONS,  /* max_connections reached */
    REJECT_HEADER_SIZE,  /* 431 */
    REJECT_BODY_SIZE,    /* 413 */
    REJECT_MALFORMED,    /* 400 from the parser */
    REJECT_READ_TIMEOUT, /* 408 */
    REJECT_QUEUE_FULL,   /* 429 */
    REJECT_BAD_JSON,     /* 400: invalid or too deep */
    REJECT_REASON_COUNT_,
} reject_reason;

typedef struct fn_metrics {
    uint64_t by_status[600];
    metrics_hist seconds;          /* arrival to result, every outcome */
    uint64_t starts[2];            /* [0] warm, [1] cold */
    metrics_hist start_seconds[2]; /* arrival to dispatch (queue + worker start) */
    metrics_hist init_seconds;     /* worker spawn to ready */
} fn_metrics;

typedef struct metrics {
    fn_metrics *fns;
    int n_fns;
    uint64_t rejected[REJECT_REASON_COUNT_];
    uint64_t http_requests;
    uint64_t worker_crashes;
    uint64_t worker_timeouts;
} metrics;

int metrics_init(metrics *m, int n_functions);
void metrics_free(metrics *m);
void metrics_hist_observe(metrics_hist *h, double seconds);

/* One finished invocation of function `fn`: its status, total seconds, and
 * whether and how it reached a worker (cold: 1, warm: 0, -1: it never did). */
void metrics_invocation(metrics *m, int fn, int status, double seconds, int cold,
                        double start_seconds);

/* The per-function gauges, read from the scheduler at render time. */
typedef struct fn_gauges {
    int starting, idle, busy, stopping;
    int queued;
} fn_gauges;

struct server_config;
/* Appends the Prometheus text exposition (version 0.0.4) of everything. */
void metrics_render(const metrics *m, const struct server_config *cfg, const fn_gauges *gauges,
                    int open_connections, buf *out);

#endif
