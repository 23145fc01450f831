/* The scheduler's workers (scheduler_internal.h): states, frames to and
 * from a worker over its socketpair, idle timers, kills, and what a
 * worker's exit does to its invocations. */
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

/* ---- workers ----------------------------------------------------------- */

void worker_handle_closed(uv_handle_t *h)
{
    worker *w = h->data;
    if (--w->handles > 0) return;
    buf_free(&w->in);
    free(w->out);
    free(w);
}

static void worker_set_state(worker *w, worker_state st)
{
    fn_state *f = w->fn;
    if (w->state == st) return;
    if (w->state == W_STARTING)
        f->n_starting--;
    else if (w->state == W_READY)
        f->n_ready--;
    else
        f->n_stopping--;
    if (st == W_STARTING)
        f->n_starting++;
    else if (st == W_READY)
        f->n_ready++;
    else
        f->n_stopping++;
    w->state = st;
}

static int worker_flush(worker *w);
static void flush_unlink(worker *w);

void worker_close_pipe(worker *w)
{
    if (w->pipe_closed) return;
    /* what was sent before the close goes first, as it did when each
     * frame was written at once (a shutdown frame, then the close) */
    flush_unlink(w);
    worker_flush(w);
    w->pipe_closed = 1;
    uv_close((uv_handle_t *)&w->pipe, worker_handle_closed);
    if (w->exit_deferred) worker_exited(w, w->exit_status, w->exit_sig);
}

void worker_signal(worker *w, int sig)
{
    if (w->exited) return;
    if (!w->zygote)
        uv_process_kill(&w->proc, sig);
    else if (w->pid > 0)
        kill(w->pid, sig);
}

/* Kills a worker whose state can no longer be trusted (timeout, protocol
 * error); its exit fails what it was running. */
void worker_kill(worker *w, const char *why)
{
    if (why && !w->why[0]) snprintf(w->why, sizeof w->why, "%s", why);
    worker_set_state(w, W_STOPPING);
    uv_timer_stop(&w->idle);
    worker_signal(w, SIGKILL);
    worker_close_pipe(w);
}

typedef struct write_req {
    uv_write_t req;
    int n;
    uint8_t *frames[]; /* owned, freed when the write completes */
} write_req;

/* A write to the worker failed with err. A closed peer (EPIPE,
 * ECONNRESET) is a worker on its way out, e.g. after a backend asked for a
 * fresh process with its last result: it is not killed, so that its exit
 * status decides — a clean exit requeues what was sent to it, since it read
 * nothing after that result; a crash fails it. Any other error leaves the
 * worker's state unknown: it is killed. */
void worker_write_failed(worker *w, int err)
{
    if (err == UV_EPIPE || err == UV_ECONNRESET || err == UV_ENOTCONN) {
        worker_set_state(w, W_STOPPING);
        uv_timer_stop(&w->idle);
        worker_close_pipe(w);
        return;
    }
    worker_kill(w, "cannot write to the worker");
}

static void write_done(uv_write_t *r, int status)
{
    write_req *wr = (write_req *)r;
    worker *w = r->data;
    for (int i = 0; i < wr->n; i++) free(wr->frames[i]);
    free(wr);
    if (status < 0 && status != UV_ECANCELED && w->state != W_STOPPING)
        worker_write_failed(w, status);
}

static void free_out(worker *w)
{
    for (int i = 0; i < w->n_out; i++) free(w->out[i].base);
    w->n_out = 0;
}

/* Writes w's queued frames: usually all at once (one writev, no write
 * request, whose completion would cost an epoll_ctl), else what is left
 * through a write request that owns them. 0 or a negative libuv error. */
static int worker_flush(worker *w)
{
    if (w->n_out == 0) return 0;
    if (w->pipe_closed) {
        free_out(w);
        return UV_EPIPE;
    }
    size_t total = 0;
    for (int i = 0; i < w->n_out; i++) total += w->out[i].len;
    int n = uv_try_write((uv_stream_t *)&w->pipe, w->out, (unsigned)w->n_out);
    if ((n >= 0 && (size_t)n == total) || (n < 0 && n != UV_EAGAIN)) {
        free_out(w);
        return n < 0 ? n : 0;
    }
    write_req *wr = malloc(sizeof *wr + (size_t)w->n_out * sizeof(uint8_t *));
    uv_buf_t rest[64], *bufs = w->n_out <= 64 ? rest : malloc((size_t)w->n_out * sizeof *bufs);
    if (!wr || !bufs) {
        free(wr);
        if (bufs != rest) free(bufs);
        free_out(w);
        return UV_ENOMEM;
    }
    /* the frames not yet written, the first maybe in part */
    size_t done = n > 0 ? (size_t)n : 0;
    int nb = 0;
    wr->n = w->n_out;
    for (int i = 0; i < w->n_out; i++) {
        wr->frames[i] = (uint8_t *)w->out[i].base;
        const size_t len = w->out[i].len;
        if (done >= len) {
            done -= len;
            continue;
        }
        bufs[nb++] = uv_buf_init(w->out[i].base + done, (unsigned)(len - done));
        done = 0;
    }
    w->n_out = 0;
    wr->req.data = w;
    int err = uv_write(&wr->req, (uv_stream_t *)&w->pipe, bufs, (unsigned)nb, write_done);
    if (bufs != rest) free(bufs);
    if (err) {
        for (int i = 0; i < wr->n; i++) free(wr->frames[i]);
        free(wr);
    }
    return err;
}

static void flush_unlink(worker *w)
{
    if (!w->flush_queued) return;
    scheduler *s = w->fn->s;
    for (worker **p = &s->flush_head; *p; p = &(*p)->flush_next)
        if (*p == w) {
            *p = w->flush_next;
            break;
        }
    w->flush_queued = 0;
    w->flush_next = NULL;
}

void worker_flush_all(uv_idle_t *h)
{
    scheduler *s = h->data;
    uv_idle_stop(h);
    while (s->flush_head) {
        worker *w = s->flush_head;
        flush_unlink(w); /* the head: no walk */
        int err = worker_flush(w);
        if (err && w->state != W_STOPPING) worker_write_failed(w, err);
    }
}

/* Sends a frame (taking ownership of it): queued, and written with the
 * others of this loop turn before the loop next waits (the scheduler's
 * idle handle; at once while the scheduler stops). 0, or a negative libuv
 * error (UV_EPIPE once the pipe is closed). */
int worker_send(worker *w, uint8_t *frame, size_t len)
{
    if (w->pipe_closed) {
        free(frame);
        return UV_EPIPE;
    }
    if (w->n_out == w->cap_out) {
        const int cap = w->cap_out ? 2 * w->cap_out : 8;
        uv_buf_t *out = realloc(w->out, (size_t)cap * sizeof *out);
        if (!out) {
            free(frame);
            return UV_ENOMEM;
        }
        w->out = out;
        w->cap_out = cap;
    }
    w->out[w->n_out++] = uv_buf_init((char *)frame, (unsigned)len);
    scheduler *s = w->fn->s;
    if (s->stopping) return worker_flush(w);
    if (!w->flush_queued) {
        w->flush_queued = 1;
        w->flush_next = s->flush_head;
        s->flush_head = w;
        uv_idle_start(&s->flush, worker_flush_all);
    }
    return 0;
}

/* Tells an idle worker to exit (scale down, or server stop). */
void worker_stop(worker *w)
{
    size_t len;
    uint8_t *f = proto_build_shutdown(&len);
    w->told_to_stop = 1;
    worker_set_state(w, W_STOPPING);
    uv_timer_stop(&w->idle);
    if (!f || worker_send(w, f, len)) worker_signal(w, SIGTERM);
}

static void on_idle(uv_timer_t *t)
{
    worker *w = t->data;
    fn_state *f = w->fn;
    if (w->state != W_READY || w->inflight) return;
    if (f->n_ready + f->n_starting <= f->cfg->min_warm) return;
    worker_stop(w);
}

void worker_became_idle(worker *w)
{
    if (w->state == W_READY && w->inflight == 0)
        uv_timer_start(&w->idle, on_idle, w->fn->cfg->idle_timeout_ms, 0);
}

/* A worker process ended (its uv exit callback, or the zygote's EXITED). */
void worker_exited(worker *w, int64_t status, int sig)
{
    fn_state *f = w->fn;
    if (w->exited) return;
    if (!w->pipe_closed) {
        /* Its last frames (a RESULT, INIT_FAILED) may still be unread: the
         * pipe's EOF finishes the exit. */
        w->exit_deferred = 1;
        w->exit_status = status;
        w->exit_sig = sig;
        return;
    }
    w->exited = 1;
    scheduler *s = f->s;
    char reason[400];
    int was_starting = w->ready_ns == 0;
    int others = f->n_starting + f->n_ready - (w->state != W_STOPPING);

    if (w->why[0])
        snprintf(reason, sizeof reason, "worker %d of function '%s': %s", w->pid, f->cfg->name,
                 w->why);
    else if (sig)
        snprintf(reason, sizeof reason, "worker %d of function '%s' was killed by signal %d",
                 w->pid, f->cfg->name, sig);
    else
        snprintf(reason, sizeof reason, "worker %d of function '%s' exited with status %" PRId64,
                 w->pid, f->cfg->name, status);
    if (!w->told_to_stop && !w->killed_for_timeout && (w->running || !was_starting))
        fprintf(stderr, "kiln serve: %s\n", reason);

    if (!sig && status == 0 && !w->why[0] && !w->killed_for_timeout) {
        /* A clean exit (its backend asked for a fresh process after its last
         * result, e.g. out of memory): it read nothing after that result,
         * so what was sent to it meanwhile never ran and waits again. */
        while (w->running) {
            invocation *inv = w->running;
            inv_unlink(inv);
            inv->queued = 1;
            inv->prev = NULL;
            inv->next = f->qhead;
            if (f->qhead)
                f->qhead->prev = inv;
            else
                f->qtail = inv;
            f->qhead = inv;
            f->queued++;
        }
    }
    if (w->running && !w->killed_for_timeout && !w->told_to_stop) s->m->worker_crashes++;
    while (w->running) {
        invocation *inv = w->running;
        inv_unlink(inv);
        inv_fail(inv, 502, reason, w->pid);
    }
    if (was_starting && !w->told_to_stop) {
        /* It never became ready: what waits for it would wait for the next
         * one to fail the same way. */
        if (!w->why[0] && !sig)
            snprintf(reason, sizeof reason, "worker of function '%s' exited during start",
                     f->cfg->name);
        fprintf(stderr, "kiln serve: cannot start a worker: %s\n", reason);
        snprintf(s->last_error, sizeof s->last_error, "%s", reason);
        f->backoff_until_ns = uv_hrtime() + (uint64_t)START_BACKOFF_MS * 1000000;
        if (others == 0) /* only this one was coming */
            while (f->qhead) {
                invocation *inv = f->qhead;
                inv_unlink(inv);
                inv_fail(inv, w->init_status ? w->init_status : 502, reason, 0);
            }
    }
    worker_set_state(w, W_STOPPING);
    f->n_stopping--;
    if (w->prev)
        w->prev->next = w->next;
    else
        f->workers = w->next;
    if (w->next) w->next->prev = w->prev;
    uv_timer_stop(&w->idle);
    uv_close((uv_handle_t *)&w->idle, worker_handle_closed);
    worker_close_pipe(w);
    if (w->zygote) {
        if (--s->n_zworkers == 0 && s->stopping) zygote_close(s);
    } else {
        uv_close((uv_handle_t *)&w->proc, worker_handle_closed);
    }
    if (!s->stopping) sched_pump(f);
}

void worker_on_exit(uv_process_t *p, int64_t status, int sig)
{
    worker_exited(p->data, status, sig);
}

static void on_frame(worker *w, const proto_header *h, const uint8_t *p)
{
    fn_state *f = w->fn;
    const char *why = NULL;
    switch (h->type) {
    case PROTO_READY: {
        uint64_t init_us;
        if (w->state != W_STARTING || proto_parse_ready(p, h->length, &init_us, &why)) {
            worker_kill(w, why ? why : "READY twice");
            return;
        }
        /* the pid from the worker itself, in case the zygote's word on it
         * has not arrived yet (proto.h) */
        if (!w->pid && h->id > 0 && h->id <= INT32_MAX) w->pid = (int)h->id;
        w->ready_ns = uv_hrtime();
        w->init_us = (w->ready_ns - w->spawn_ns) / 1000;
        metrics_hist_observe(&f->s->m->fns[f->index].init_seconds, (double)w->init_us / 1e6);
        worker_set_state(w, W_READY);
        sched_pump(f);
        worker_became_idle(w);
        return;
    }
    case PROTO_INIT_FAILED: {
        const char *msg;
        size_t ml;
        if (proto_parse_init_failed(p, h->length, &w->init_status, &msg, &ml, &why)) {
            worker_kill(w, why);
            return;
        }
        snprintf(w->why, sizeof w->why, "%.*s", (int)(ml < 200 ? ml : 200), msg);
        return; /* the worker exits next */
    }
    case PROTO_RESULT: {
        proto_result r;
        if (proto_parse_result(p, h->length, &r, &why)) {
            worker_kill(w, why);
            return;
        }
        invocation *inv = w->running;
        while (inv && inv->id != h->id) inv = inv->next;
        if (!inv) {
            worker_kill(w, "RESULT for a request it was not given");
            return;
        }
        inv_unlink(inv);
        inv_finish(inv, r.status, r.ctype, r.ctype_len, r.body, r.body_len, NULL, w->pid, r.batch);
        worker_became_idle(w);
        sched_pump(f);
        return;
    }
    default:
        worker_kill(w, "unexpected frame type from the worker");
    }
}

void worker_pipe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    worker *w = h->data;
    (void)hint;
    if (buf_reserve(&w->in, 65536)) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(w->in.data + w->in.len, (unsigned)(w->in.cap - w->in.len - 1));
}

void worker_pipe_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    worker *w = st->data;
    (void)b;
    if (n < 0) {
        /* EOF or error: the process is exiting or gone; its exit callback
         * fails what it was running. */
        if (w->state != W_STOPPING && !w->exit_deferred)
            worker_kill(w, NULL);
        else
            worker_close_pipe(w);
        return;
    }
    w->in.len += (size_t)n;
    size_t off = 0;
    while (!w->pipe_closed && w->in.len - off >= PROTO_HEADER_SIZE) {
        proto_header h;
        const char *why;
        const uint8_t *p = (const uint8_t *)w->in.data + off;
        if (proto_get_header(p, &h, &why)) {
            worker_kill(w, why);
            return;
        }
        if (w->in.len - off - PROTO_HEADER_SIZE < h.length) {
            buf_reserve(&w->in, h.length + PROTO_HEADER_SIZE); /* one read fills it */
            break;
        }
        on_frame(w, &h, p + PROTO_HEADER_SIZE);
        off += PROTO_HEADER_SIZE + h.length;
    }
    if (!w->pipe_closed) buf_consume(&w->in, off);
}

/* Builds the worker's argv (args[0] = exe, args[1] = "worker"); strings
 * live in `store`. Returns the count. */
