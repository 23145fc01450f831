/*
 * The echo kind: answers with the request body and content type. It is the
 * health check of the worker path and, with `faults: true` in its function
 * config, the tests' way to make a worker misbehave:
 *   ?crash=1       the worker kills itself with SIGKILL mid-request
 *   ?sleep_ms=N    the worker sleeps N ms before answering (N <= 600000)
 *   ?spin_ms=N     the worker burns N ms of CPU time first (cpu_limit tests)
 *   ?status=N      answer with HTTP status N (200..599)
 *   ?alloc_mb=N    allocate and touch N MiB first; failing (memory_limit)
 *                  answers 502 and the worker exits to be replaced
 */
#include "backend.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct echo_state {
    int faults;
} echo_state;

static int echo_init(const backend_options *o, void **state, int *status, char *err, size_t errlen)
{
    echo_state *s = calloc(1, sizeof *s);
    if (!s) {
        *status = 500;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->faults = o->faults;
    *state = s;
    return 0;
}

static long param_long(const backend_request *req, const char *key, long dflt)
{
    char v[32];
    if (backend_query_param(req->query, req->query_len, key, v, sizeof v)) return dflt;
    char *end;
    long x = strtol(v, &end, 10);
    return *end || end == v ? -1 : x;
}

static void echo_invoke(void *state, const backend_request *req, backend_response *res)
{
    echo_state *s = state;
    long status = 200;
    if (s->faults) {
        if (param_long(req, "crash", 0) == 1) raise(SIGKILL);
        long ms = param_long(req, "sleep_ms", 0);
        if (ms < 0 || ms > 600000) {
            backend_error(res, 400, "sleep_ms: expected 0..600000");
            return;
        }
        if (ms > 0) {
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts)) {
            }
        }
        long spin = param_long(req, "spin_ms", 0);
        if (spin < 0 || spin > 600000) {
            backend_error(res, 400, "spin_ms: expected 0..600000");
            return;
        }
        if (spin > 0) {
            struct timespec t0, t;
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t0);
            volatile unsigned long x = 0;
            do {
                for (int i = 0; i < 100000; i++) x += (unsigned long)i;
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
            } while ((t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L < spin);
            (void)x; /* burnt CPU is the point; the sum is not */
        }
        long mb = param_long(req, "alloc_mb", 0);
        if (mb < 0 || mb > 65536) {
            backend_error(res, 400, "alloc_mb: expected 0..65536");
            return;
        }
        if (mb > 0) {
            char *p = malloc((size_t)mb << 20);
            if (!p) {
                backend_error(res, 502, "worker out of memory allocating %ld MiB (memory_limit)",
                              mb);
                res->exit_after = 1;
                return;
            }
            memset(p, 1, (size_t)mb << 20);
            free(p);
        }
        status = param_long(req, "status", 200);
        if (status < 200 || status > 599) {
            backend_error(res, 400, "status: expected 200..599");
            return;
        }
    }
    res->status = (int)status;
    size_t cl = req->ctype_len < sizeof res->ctype - 1 ? req->ctype_len : sizeof res->ctype - 1;
    if (cl) {
        memcpy(res->ctype, req->ctype, cl);
        res->ctype[cl] = 0;
    } else {
        snprintf(res->ctype, sizeof res->ctype, "application/octet-stream");
    }
    buf_append(&res->body, req->body, req->body_len);
}

static void echo_fini(void *state)
{
    free(state);
}

const backend_ops backend_echo = {"echo", echo_init, echo_invoke, echo_fini, NULL};
