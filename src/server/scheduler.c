/* Worker processes per function and the invocations waiting for them
 * (scheduler.h): invocations, dispatch and the life cycle. A worker's own
 * state and pipe are in scheduler_worker.c, starting workers and the zygote
 * in scheduler_spawn.c (scheduler_internal.h). */
#include "scheduler_internal.h"
#include "invlog.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int64_t sched_unix_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* ---- invocations ------------------------------------------------------- */

void inv_unlink(invocation *inv)
{
    fn_state *f = inv->fn;
    if (inv->queued) {
        if (inv->prev)
            inv->prev->next = inv->next;
        else
            f->qhead = inv->next;
        if (inv->next)
            inv->next->prev = inv->prev;
        else
            f->qtail = inv->prev;
        f->queued--;
        inv->queued = 0;
    } else if (inv->w) {
        worker *w = inv->w;
        if (inv->prev)
            inv->prev->next = inv->next;
        else
            w->running = inv->next;
        if (inv->next) inv->next->prev = inv->prev;
        w->inflight--;
        inv->w = NULL;
    }
    inv->prev = inv->next = NULL;
}

static void inv_free(uv_handle_t *h)
{
    free(h->data);
}

/* Ends an invocation: metrics, the log record, the caller's callback. The
 * invocation must already be unlinked from its queue or worker. */
void inv_finish(invocation *inv, int status, const char *ctype, size_t ctype_len, const char *body,
                size_t body_len, const char *error, int worker_pid, int batch)
{
    if (inv->finished) return;
    inv->finished = 1;
    scheduler *s = inv->s;
    uint64_t now = uv_hrtime();
    int reached = inv->dispatched_ns != 0;
    invoke_result r = {
        .status = status,
        .ctype = ctype,
        .ctype_len = ctype_len,
        .body = body,
        .body_len = body_len,
        .cold = reached ? inv->cold : -1,
        .worker_pid = worker_pid,
        .batch = batch,
        .queue_us = ((reached ? inv->dispatched_ns : now) - inv->arrived_ns) / 1000,
        .init_us = reached && inv->cold ? inv->init_us : 0,
        .exec_us = reached ? (now - inv->dispatched_ns) / 1000 : 0,
    };
    double total_s = (double)(now - inv->arrived_ns) / 1e9;
    metrics_invocation(s->m, inv->fn->index, status, total_s, r.cold, (double)r.queue_us / 1e6);
    invocation_record rec = {
        .function = inv->fn->cfg->name,
        .id = inv->id,
        .arrived_unix_us = inv->arrived_unix_us,
        .status = status,
        .cold = r.cold,
        .cancelled = inv->done == NULL,
        .worker_pid = worker_pid,
        .queue_us = r.queue_us,
        .init_us = r.init_us,
        .exec_us = r.exec_us,
        .total_us = (now - inv->arrived_ns) / 1000,
        .request_bytes = inv->body_len,
        .response_bytes = body_len,
        .error = error,
    };
    invlog_emit(&rec);
    if (inv->done) inv->done(inv->arg, &r);
    inv->done = NULL;
    uv_close((uv_handle_t *)&inv->timer, inv_free);
}

/* Answers {"error": msg} from the scheduler itself. */
void inv_fail(invocation *inv, int status, const char *msg, int worker_pid)
{
    buf b = {0};
    buf_puts(&b, "{\"error\":\"");
    for (const char *p = msg; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(&b, "\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            buf_printf(&b, "\\u%04x", *p);
        else
            buf_append(&b, p, 1);
    }
    buf_puts(&b, "\"}");
    static const char ct[] = "application/json";
    if (b.oom)
        inv_finish(inv, status, ct, sizeof ct - 1, "{}", 2, msg, worker_pid, 0);
    else
        inv_finish(inv, status, ct, sizeof ct - 1, b.data, b.len, msg, worker_pid, 0);
    buf_free(&b);
}

/* ---- scheduling -------------------------------------------------------- */

static void on_deadline(uv_timer_t *t)
{
    invocation *inv = t->data;
    fn_state *f = inv->fn;
    char msg[256];
    if (inv->queued) {
        inv_unlink(inv);
        snprintf(msg, sizeof msg,
                 "function '%s' found no free worker within its timeout of %" PRIu64 " ms",
                 f->cfg->name, f->cfg->timeout_ms);
        inv_fail(inv, 504, msg, 0);
        return;
    }
    worker *w = inv->w;
    if (!w) return;
    int pid = w->pid;
    inv_unlink(inv);
    snprintf(msg, sizeof msg,
             "function '%s' did not answer within its timeout of %" PRIu64
             " ms; worker %d was killed",
             f->cfg->name, f->cfg->timeout_ms, pid);
    w->killed_for_timeout = 1;
    f->s->m->worker_timeouts++;
    worker_kill(w, "killed after an invocation timed out");
    inv_fail(inv, 504, msg, pid);
}

/* A ready worker with a free slot: the one with the fewest in flight (with
 * concurrency > 1, work spreads over the workers instead of filling the
 * first one while the others idle), of those the first in spawn order, so
 * that the newest ones go idle and scale down first. */
static worker *pick_worker(fn_state *f)
{
    worker *best = NULL;
    for (worker *w = f->workers; w; w = w->next) /* newest first */
        if (w->state == W_READY && w->inflight < f->cfg->concurrency &&
            (!best || w->inflight <= best->inflight))
            best = w;
    return best;
}

static void dispatch(worker *w, invocation *inv)
{
    size_t len;
    uint8_t *frame =
        proto_build_invoke(inv->id, inv->ctype, inv->query, inv->body, inv->body_len, &len);
    inv->dispatched_ns = uv_hrtime();
    inv->cold = w->ready_ns > inv->arrived_ns;
    inv->init_us = w->init_us;
    inv->w = w;
    inv->next = w->running;
    if (w->running) w->running->prev = inv;
    w->running = inv;
    w->inflight++;
    uv_timer_stop(&w->idle);
    if (!frame) {
        inv_unlink(inv);
        inv_fail(inv, 500, "out of memory building the request for the worker", w->pid);
        worker_became_idle(w);
        return;
    }
    int err = worker_send(w, frame, len);
    if (err) worker_write_failed(w, err);
}

static void maybe_spawn(fn_state *f)
{
    scheduler *s = f->s;
    const fn_config *c = f->cfg;
    if (s->stopping) return;
    /* Enough starting capacity for what waits, within max_workers. */
    while (f->queued > f->n_starting * c->concurrency &&
           f->n_starting + f->n_ready < c->max_workers)
        if (worker_spawn(f)) {
            while (f->qhead && f->n_starting + f->n_ready == 0) {
                invocation *inv = f->qhead;
                inv_unlink(inv);
                inv_fail(inv, 503, s->last_error, 0);
            }
            return;
        }
    if (uv_hrtime() < f->backoff_until_ns) return;
    while (f->n_starting + f->n_ready < c->min_warm)
        if (worker_spawn(f)) return;
}

void sched_pump(fn_state *f)
{
    worker *w;
    while (f->qhead && (w = pick_worker(f))) {
        invocation *inv = f->qhead;
        inv_unlink(inv);
        dispatch(w, inv);
    }
    maybe_spawn(f);
}

sched_rc scheduler_invoke(scheduler *s, const char *fn, size_t fn_len, const char *ctype,
                          const char *query, const char *body, size_t body_len, invoke_done_fn done,
                          void *arg, invocation **out)
{
    fn_state *f = NULL;
    for (int i = 0; i < s->n_fns; i++)
        if (strlen(s->fns[i].cfg->name) == fn_len && !memcmp(s->fns[i].cfg->name, fn, fn_len))
            f = &s->fns[i];
    if (!f) return SCHED_NOT_FOUND;
    if (s->stopping) return SCHED_NO_WORKER;
    const fn_config *c = f->cfg;
    worker *w = pick_worker(f);
    if (!w) {
        /* Waiting beyond what starting workers will take counts against
         * queue_limit; a worker that may still be started takes one more. */
        int pending = f->n_starting * c->concurrency;
        int can_start = f->n_starting + f->n_ready < c->max_workers;
        int excess = f->queued - pending;
        if (!can_start && excess >= c->queue_limit) {
            s->m->rejected[REJECT_QUEUE_FULL]++;
            metrics_invocation(s->m, f->index, 429, 0, -1, 0);
            invocation_record rec = {.function = c->name,
                                     .id = ++s->next_id,
                                     .arrived_unix_us = sched_unix_us(),
                                     .status = 429,
                                     .cold = -1,
                                     .request_bytes = body_len,
                                     .error = "queue full"};
            invlog_emit(&rec);
            return SCHED_QUEUE_FULL;
        }
    }
    invocation *inv = calloc(1, sizeof *inv);
    if (!inv) return SCHED_NO_MEMORY;
    inv->s = s;
    inv->fn = f;
    inv->id = ++s->next_id;
    inv->ctype = ctype ? ctype : "";
    inv->query = query ? query : "";
    inv->body = body;
    inv->body_len = body_len;
    inv->done = done;
    inv->arg = arg;
    inv->arrived_ns = uv_hrtime();
    inv->arrived_unix_us = sched_unix_us();
    inv->timer.data = inv;
    uv_timer_init(s->loop, &inv->timer);
    uv_timer_start(&inv->timer, on_deadline, c->timeout_ms, 0);
    f->invocations++;
    *out = inv;
    if (w) {
        dispatch(w, inv);
        return SCHED_OK;
    }
    inv->queued = 1;
    inv->prev = f->qtail;
    if (f->qtail)
        f->qtail->next = inv;
    else
        f->qhead = inv;
    f->qtail = inv;
    f->queued++;
    maybe_spawn(f);
    return SCHED_OK;
}

void scheduler_cancel(invocation *inv)
{
    inv->done = NULL;
    if (inv->queued) {
        inv_unlink(inv);
        inv_fail(inv, 499, "the client closed the connection", 0);
    }
    /* A running invocation finishes when its worker answers; its result is
     * dropped. The worker is not killed: it may be serving others. */
}

/* ---- life cycle -------------------------------------------------------- */

static void on_maintenance(uv_timer_t *t)
{
    scheduler *s = t->data;
    for (int i = 0; i < s->n_fns; i++) maybe_spawn(&s->fns[i]);
}

scheduler *scheduler_create(uv_loop_t *loop, const server_config *cfg, metrics *m, const char *exe)
{
    scheduler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = loop;
    s->cfg = cfg;
    s->m = m;
    s->exe = strdup(exe);
    s->n_fns = cfg->n_functions;
    s->fns = calloc(cfg->n_functions ? (size_t)cfg->n_functions : 1, sizeof *s->fns);
    if (!s->exe || !s->fns) {
        free(s->exe);
        free(s->fns);
        free(s);
        return NULL;
    }
    for (int i = 0; i < s->n_fns; i++) {
        s->fns[i].s = s;
        s->fns[i].index = i;
        s->fns[i].cfg = &cfg->functions[i];
    }
    uv_timer_init(loop, &s->maint);
    s->maint.data = s;
    uv_idle_init(loop, &s->flush);
    s->flush.data = s;
    return s;
}

int scheduler_start(scheduler *s)
{
    int rc = 0;
    if (s->cfg->zygote) zygote_start(s);
    for (int i = 0; i < s->n_fns; i++) {
        fn_state *f = &s->fns[i];
        while (f->n_starting + f->n_ready < f->cfg->min_warm)
            if (worker_spawn(f)) {
                rc = -1;
                break;
            }
    }
    uv_timer_start(&s->maint, on_maintenance, MAINTENANCE_MS, MAINTENANCE_MS);
    return rc;
}

void scheduler_set_model_resolver(scheduler *s, model_resolver fn, void *ctx)
{
    s->resolve = fn;
    s->resolve_ctx = ctx;
}

const char *scheduler_last_error(const scheduler *s)
{
    return s->last_error[0] ? s->last_error : "no worker could be started";
}

void scheduler_gauges(const scheduler *s, int i, fn_gauges *g)
{
    const fn_state *f = &s->fns[i];
    memset(g, 0, sizeof *g);
    g->starting = f->n_starting;
    g->stopping = f->n_stopping;
    for (const worker *w = f->workers; w; w = w->next)
        if (w->state == W_READY) {
            if (w->inflight)
                g->busy++;
            else
                g->idle++;
        }
    g->queued = f->queued;
}

uint64_t scheduler_invocations(const scheduler *s, int i)
{
    return s->fns[i].invocations;
}

uint64_t scheduler_count_local(scheduler *s, int i)
{
    s->fns[i].invocations++;
    return ++s->next_id;
}

void scheduler_each_process(const scheduler *s, void (*each)(void *, const char *, int), void *ctx)
{
    if (s->zygote_up && s->zproc.pid > 0) each(ctx, "zygote", s->zproc.pid);
    for (int i = 0; i < s->n_fns; i++)
        for (const worker *w = s->fns[i].workers; w; w = w->next)
            if (w->pid > 0 && !w->exited) each(ctx, s->fns[i].cfg->name, w->pid);
}

void scheduler_stop(scheduler *s)
{
    if (s->stopping) return;
    s->stopping = 1;
    uv_timer_stop(&s->maint);
    uv_close((uv_handle_t *)&s->maint, NULL);
    /* from here worker_send() writes at once; what is queued goes now */
    worker_flush_all(&s->flush);
    uv_close((uv_handle_t *)&s->flush, NULL);
    for (int i = 0; i < s->n_fns; i++) {
        fn_state *f = &s->fns[i];
        while (f->qhead) {
            invocation *inv = f->qhead;
            inv_unlink(inv);
            inv_fail(inv, 503, "the server is shutting down", 0);
        }
        for (worker *w = f->workers; w; w = w->next) {
            if (w->state != W_STOPPING) worker_stop(w);
            worker_signal(w, SIGTERM);
            worker_close_pipe(w);
        }
    }
    /* The zygote goes once its workers' exits are reported. */
    if (s->n_zworkers == 0) zygote_close(s);
}

void scheduler_destroy(scheduler *s)
{
    if (!s) return;
    free(s->fns);
    free(s->exe);
    free(s);
}
