/*
 * Internals of the scheduler (scheduler.h), shared by its files:
 *   scheduler.c         invocations, dispatch and the life cycle;
 *   scheduler_worker.c  a worker: its state, frames in and out, its exit;
 *   scheduler_spawn.c   starting workers (uv_spawn or the zygote) and the
 *                       zygote itself.
 * Everything runs on the server's loop.
 */
#ifndef KILN_SERVER_SCHEDULER_INTERNAL_H
#define KILN_SERVER_SCHEDULER_INTERNAL_H

#include "buf.h"
#include "proto.h"
#include "scheduler.h"

#include <stdint.h>
#include <uv.h>

/* A worker that fails to start is not restarted for min_warm before this. */
#define START_BACKOFF_MS 1000
/* How often min_warm is topped up (after failures, or workers that left). */
#define MAINTENANCE_MS     500
#define ZYGOTE_PRELOAD_MAX 32 /* models the zygote preloads at the most */

typedef enum worker_state {
    W_STARTING, /* spawned, READY not yet received */
    W_READY,    /* serving */
    W_STOPPING, /* told to exit or killed; waiting for its exit */
} worker_state;

typedef struct fn_state fn_state;
typedef struct worker worker;

struct invocation {
    scheduler *s;
    fn_state *fn;
    uint64_t id;
    uv_timer_t timer; /* the deadline; the invocation is freed when it closes */
    const char *ctype, *query, *body;
    size_t body_len;
    invoke_done_fn done; /* NULL once cancelled */
    void *arg;
    worker *w;  /* the worker running it, or NULL while queued */
    int queued; /* in fn->queue */
    int finished;
    int cold;
    uint64_t arrived_ns, dispatched_ns, init_us;
    int64_t arrived_unix_us;
    invocation *prev, *next; /* in the queue or in w->running */
};

struct worker {
    uv_process_t proc;
    uv_pipe_t pipe; /* the socketpair to the worker (its fd 3) */
    uv_timer_t idle;
    fn_state *fn;
    worker_state state;
    int pid;
    int inflight;
    int handles;     /* open libuv handles; freed at 0 */
    int pipe_closed; /* uv_close called on pipe */
    int killed_for_timeout;
    int zygote;        /* forked by the zygote: no uv_process_t; exits come as EXITED */
    int exited;        /* its exit was handled */
    int exit_deferred; /* exited, but its pipe still holds what it wrote last */
    int exit_sig;
    int64_t exit_status;
    uint64_t seq;     /* the scheduler's id for SPAWN/SPAWNED */
    int told_to_stop; /* scale-down or server stop: its exit is expected */
    uint64_t spawn_ns, ready_ns, init_us;
    int init_status; /* from INIT_FAILED, or 0 */
    char why[256];   /* from INIT_FAILED, or a protocol error */
    buf in;
    /* Frames sent to it this loop turn, written together by the
     * scheduler's flush (worker_send()). */
    uv_buf_t *out;
    int n_out, cap_out;
    int flush_queued;
    worker *flush_next;
    invocation *running;
    worker *prev, *next;
};

struct fn_state {
    scheduler *s;
    int index;
    const fn_config *cfg;
    worker *workers;
    int n_starting, n_ready, n_stopping;
    invocation *qhead, *qtail;
    int queued;
    uint64_t invocations;
    uint64_t backoff_until_ns; /* min_warm waits after a failed start */
};

struct scheduler {
    uv_loop_t *loop;
    const server_config *cfg;
    metrics *m;
    char *exe;
    fn_state *fns;
    int n_fns;
    uint64_t next_id;
    uv_timer_t maint;
    /* Workers with frames to write: flushed once per loop turn, so the
     * invocations dispatched in one turn (about nine per epoll_wait at
     * wrk -c32) reach a worker in one system call, not one each. */
    uv_idle_t flush;
    worker *flush_head;
    int stopping;
    /* The zygote: workers are forked from it while it is up. */
    uv_process_t zproc;
    uv_pipe_t zpipe;
    buf zin;
    int zygote_up;      /* accepting SPAWN */
    int zygote_handles; /* open handles of zproc and zpipe */
    int n_zworkers;     /* zygote workers not yet exited */
    model_resolver resolve;
    void *resolve_ctx;
    uint64_t next_seq;
    char last_error[400];
};

/* ---- scheduler.c ---- */

/* Wall-clock microseconds (for the invocation log). */
int64_t sched_unix_us(void);
/* Takes an invocation off its queue or its worker. */
void inv_unlink(invocation *inv);
/* Ends an invocation: metrics, the log record, the caller's callback. The
 * invocation must already be unlinked from its queue or worker; `batch` is
 * the size of the worker round that ran it (0: none). */
void inv_finish(invocation *inv, int status, const char *ctype, size_t ctype_len, const char *body,
                size_t body_len, const char *error, int worker_pid, int batch);
/* Answers {"error": msg} from the scheduler itself. */
void inv_fail(invocation *inv, int status, const char *msg, int worker_pid);
/* Dispatches what function f has queued to its ready workers and starts
 * workers for the rest, within max_workers (and min_warm). */
void sched_pump(fn_state *f);

/* ---- scheduler_worker.c: a worker and its pipe ---- */

void worker_handle_closed(uv_handle_t *h);
void worker_close_pipe(worker *w);
void worker_signal(worker *w, int sig);
/* Kills a worker whose state can no longer be trusted (timeout, protocol
 * error); its exit fails what it was running. */
void worker_kill(worker *w, const char *why);
/* Sends a frame (taking ownership of it). 0 or -1. */
int worker_send(worker *w, uint8_t *frame, size_t len);
/* The idle callback that writes every queued worker's frames. */
void worker_flush_all(uv_idle_t *h);
void worker_write_failed(worker *w, int err);
/* Tells an idle worker to exit (scale down, or server stop). */
void worker_stop(worker *w);
/* Arms the idle timer (scale to zero) of a ready worker with nothing in
 * flight. */
void worker_became_idle(worker *w);
/* A worker process ended (its uv exit callback, or the zygote's EXITED). */
void worker_exited(worker *w, int64_t status, int sig);
/* libuv callbacks of a spawned worker's process and pipe. */
void worker_on_exit(uv_process_t *p, int64_t status, int sig);
void worker_pipe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
void worker_pipe_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

/* ---- scheduler_spawn.c: starting workers, the zygote ---- */

/* Starts a worker of function f (forked by the zygote when it runs, else
 * uv_spawn). 0, or -1 with s->last_error set. */
int worker_spawn(fn_state *f);
void zygote_start(scheduler *s);
void zygote_close(scheduler *s);

#endif
