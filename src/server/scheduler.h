/*
 * The scheduler: worker processes per function, and the invocations that
 * wait for them. Runs on the server's event loop.
 *
 * An invocation that finds a ready worker with a free slot (fewer than
 * `concurrency` in flight) runs there at once: a warm start. Otherwise it
 * waits in the function's FIFO queue: held for a worker that is starting
 * (one is started when fewer than max_workers run) - a cold start - or,
 * when max_workers are busy, queued up to queue_limit; beyond that the
 * invocation is refused (429). Each invocation has a deadline (the
 * function's timeout, queue included): past it a queued invocation gets 504,
 * and a running one gets 504 and its worker is killed. A worker that exits
 * while serving fails its invocations with 502 and is replaced when work is
 * waiting or min_warm asks for it. A ready worker idle for idle_timeout
 * beyond min_warm is told to exit (scale to zero).
 */
#ifndef KILN_SERVER_SCHEDULER_H
#define KILN_SERVER_SCHEDULER_H

#include "config.h"
#include "metrics.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct scheduler scheduler;
typedef struct invocation invocation;

typedef struct invoke_result {
    int status;
    const char *ctype; /* not NUL-terminated; ctype_len bytes */
    size_t ctype_len;
    const char *body;
    size_t body_len;
    int cold;       /* 1 cold, 0 warm, -1 never reached a worker */
    int worker_pid; /* 0 when none */
    int batch;      /* invocations the worker ran in the same round; 0 when none */
    uint64_t queue_us, init_us, exec_us;
} invoke_result;

/* Called exactly once per invocation that was not cancelled; `r` and its
 * pointers are valid only during the call. */
typedef void (*invoke_done_fn)(void *arg, const invoke_result *r);

typedef enum sched_rc {
    SCHED_OK = 0,
    SCHED_NOT_FOUND,  /* no such function */
    SCHED_QUEUE_FULL, /* 429 */
    SCHED_NO_WORKER,  /* a worker could not be started; see scheduler_last_error */
    SCHED_NO_MEMORY,
} sched_rc;

/* `exe` is the kiln binary workers are started from. */
scheduler *scheduler_create(uv_loop_t *loop, const server_config *cfg, metrics *m, const char *exe);

/* Maps a predict function's `model` (NAME[@VERSION]) to a file; 0 and the
 * path, or -1 to let the worker look it up itself. Runs on the loop. */
typedef int (*model_resolver)(void *ctx, const char *model, char *path, size_t len);
void scheduler_set_model_resolver(scheduler *s, model_resolver fn, void *ctx);

/* Starts min_warm workers of every function. 0, or -1 (logged). */
int scheduler_start(scheduler *s);

/* Submits one invocation of function `fn` (fn_len bytes). The strings and
 * body must stay valid until `done` runs or the invocation is cancelled. */
sched_rc scheduler_invoke(scheduler *s, const char *fn, size_t fn_len, const char *ctype,
                          const char *query, const char *body, size_t body_len, invoke_done_fn done,
                          void *arg, invocation **out);

/* The caller no longer wants the result: `done` will not be called. */
void scheduler_cancel(invocation *inv);

const char *scheduler_last_error(const scheduler *s);

/* Workers by state and queue length of function index i. */
void scheduler_gauges(const scheduler *s, int i, fn_gauges *g);
/* Invocations submitted to function i since start. */
uint64_t scheduler_invocations(const scheduler *s, int i);

/* Counts an invocation of function i that the server runs itself (kinds
 * train and models) and returns its id, from the same sequence as the
 * invocations that run on workers. */
uint64_t scheduler_count_local(scheduler *s, int i);

/* Calls each(ctx, function name, pid) for every worker process that has a
 * pid (any state) and once with "zygote" for the zygote when it runs. */
void scheduler_each_process(const scheduler *s, void (*each)(void *, const char *, int), void *ctx);

/* Fails everything waiting, stops every worker; handles close as they exit. */
void scheduler_stop(scheduler *s);
/* Frees the scheduler once the loop has closed its handles. */
void scheduler_destroy(scheduler *s);

#endif
