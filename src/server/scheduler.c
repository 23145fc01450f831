/* Worker processes per function and the invocations waiting for them (scheduler.h). */
#include "scheduler.h"
#include "buf.h"
#include "invlog.h"
#include "proto.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* A worker that fails to start is not restarted for min_warm before this. */
#define START_BACKOFF_MS 1000
/* How often min_warm is topped up (after failures, or workers that left). */
#define MAINTENANCE_MS     500
#define ZYGOTE_PRELOAD_MAX 32 /* models the zygote preloads at the most */

extern char **environ;

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

static void pump(fn_state *f);

static int64_t unix_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* ---- invocations ------------------------------------------------------- */

static void inv_unlink(invocation *inv)
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
static void inv_finish(invocation *inv, int status, const char *ctype, size_t ctype_len,
                       const char *body, size_t body_len, const char *error, int worker_pid,
                       int batch)
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
static void inv_fail(invocation *inv, int status, const char *msg, int worker_pid)
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

/* ---- workers ----------------------------------------------------------- */

static void worker_handle_closed(uv_handle_t *h)
{
    worker *w = h->data;
    if (--w->handles > 0) return;
    buf_free(&w->in);
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

static void worker_exited(worker *w, int64_t status, int sig);

static void worker_close_pipe(worker *w)
{
    if (w->pipe_closed) return;
    w->pipe_closed = 1;
    uv_close((uv_handle_t *)&w->pipe, worker_handle_closed);
    if (w->exit_deferred) worker_exited(w, w->exit_status, w->exit_sig);
}

static void worker_signal(worker *w, int sig)
{
    if (w->exited) return;
    if (!w->zygote)
        uv_process_kill(&w->proc, sig);
    else if (w->pid > 0)
        kill(w->pid, sig);
}

/* Kills a worker whose state can no longer be trusted (timeout, protocol
 * error); its exit fails what it was running. */
static void worker_kill(worker *w, const char *why)
{
    if (why && !w->why[0]) snprintf(w->why, sizeof w->why, "%s", why);
    worker_set_state(w, W_STOPPING);
    uv_timer_stop(&w->idle);
    worker_signal(w, SIGKILL);
    worker_close_pipe(w);
}

typedef struct write_req {
    uv_write_t req;
    uint8_t *frame;
} write_req;

static void write_done(uv_write_t *r, int status)
{
    write_req *wr = (write_req *)r;
    worker *w = r->data;
    free(wr->frame);
    free(wr);
    if (status < 0 && status != UV_ECANCELED && w->state != W_STOPPING)
        worker_kill(w, "cannot write to the worker");
}

/* Sends a frame (taking ownership of it). 0 or -1. */
static int worker_send(worker *w, uint8_t *frame, size_t len)
{
    if (w->pipe_closed) {
        free(frame);
        return -1;
    }
    /* Usually the whole frame goes at once: no write request, whose
     * completion would cost an epoll_ctl. */
    uv_buf_t b = uv_buf_init((char *)frame, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&w->pipe, &b, 1);
    if (n == (int)len) {
        free(frame);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN) {
        free(frame);
        return -1;
    }
    if (n > 0) b = uv_buf_init((char *)frame + n, (unsigned)(len - (size_t)n));
    write_req *wr = malloc(sizeof *wr);
    if (!wr) {
        free(frame);
        return -1;
    }
    wr->frame = frame;
    wr->req.data = w;
    if (uv_write(&wr->req, (uv_stream_t *)&w->pipe, &b, 1, write_done)) {
        free(frame);
        free(wr);
        return -1;
    }
    return 0;
}

/* Tells an idle worker to exit (scale down, or server stop). */
static void worker_stop(worker *w)
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

static void worker_became_idle(worker *w)
{
    if (w->state == W_READY && w->inflight == 0)
        uv_timer_start(&w->idle, on_idle, w->fn->cfg->idle_timeout_ms, 0);
}

static void zygote_close(scheduler *s);

/* A worker process ended (its uv exit callback, or the zygote's EXITED). */
static void worker_exited(worker *w, int64_t status, int sig)
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
    if (!s->stopping) pump(f);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
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
        w->ready_ns = uv_hrtime();
        w->init_us = (w->ready_ns - w->spawn_ns) / 1000;
        metrics_hist_observe(&f->s->m->fns[f->index].init_seconds, (double)w->init_us / 1e6);
        worker_set_state(w, W_READY);
        pump(f);
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
        pump(f);
        return;
    }
    default:
        worker_kill(w, "unexpected frame type from the worker");
    }
}

static void pipe_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    worker *w = h->data;
    (void)hint;
    if (buf_reserve(&w->in, 65536)) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(w->in.data + w->in.len, (unsigned)(w->in.cap - w->in.len - 1));
}

static void pipe_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
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
typedef struct worker_args {
    char *v[40];
    char threads[16], memlimit[32], cpulimit[32], maxframe[32], depth[16], elems[32];
    char max_batch[16], batch_wait[16];
    char model_path[4096];
} worker_args;

/* Where function c's model is: its file in the store when the resolver
 * knows the name (buf, len bytes), else c->model itself (a file path). */
static const char *fn_model_path(scheduler *s, const fn_config *c, char *buf, size_t len)
{
    if (s->resolve && !s->resolve(s->resolve_ctx, c->model, buf, len)) return buf;
    return c->model;
}

static int build_args(scheduler *s, const fn_config *c, worker_args *wa)
{
    char **args = wa->v;
    snprintf(wa->threads, sizeof wa->threads, "%d", c->threads);
    snprintf(wa->memlimit, sizeof wa->memlimit, "%" PRIu64, c->memory_limit);
    snprintf(wa->maxframe, sizeof wa->maxframe, "%zu", s->cfg->max_body_bytes + 65536 * 2);
    snprintf(wa->depth, sizeof wa->depth, "%d", s->cfg->max_json_depth);
    snprintf(wa->elems, sizeof wa->elems, "%" PRId64, s->cfg->max_tensor_elements);
    int a = 0;
    args[a++] = s->exe;
    args[a++] = "worker";
    args[a++] = "--function";
    args[a++] = c->name;
    args[a++] = "--kind";
    args[a++] = (char *)fn_kind_name(c->kind);
    args[a++] = "--threads";
    args[a++] = wa->threads;
    args[a++] = "--memory-limit";
    args[a++] = wa->memlimit;
    if (c->cpu_limit_s) {
        snprintf(wa->cpulimit, sizeof wa->cpulimit, "%" PRIu64, c->cpu_limit_s);
        args[a++] = "--cpu-limit";
        args[a++] = wa->cpulimit;
    }
    if (s->cfg->user) {
        args[a++] = "--user";
        args[a++] = s->cfg->user;
    }
    args[a++] = "--max-frame";
    args[a++] = wa->maxframe;
    args[a++] = "--max-json-depth";
    args[a++] = wa->depth;
    args[a++] = "--max-tensor-elements";
    args[a++] = wa->elems;
    if (c->model) {
        args[a++] = "--model-name";
        args[a++] = c->model;
        args[a++] = "--model";
        args[a++] = (char *)fn_model_path(s, c, wa->model_path, sizeof wa->model_path);
    }
    if (s->cfg->data_dir) {
        args[a++] = "--data-dir";
        args[a++] = s->cfg->data_dir;
    }
    if (c->faults) args[a++] = "--faults";
    /* A round never holds more than the worker may have in flight. */
    int batch = c->max_batch < c->concurrency ? c->max_batch : c->concurrency;
    if (batch > 1) {
        snprintf(wa->max_batch, sizeof wa->max_batch, "%d", batch);
        snprintf(wa->batch_wait, sizeof wa->batch_wait, "%d", c->batch_wait_us);
        args[a++] = "--max-batch";
        args[a++] = wa->max_batch;
        args[a++] = "--batch-wait-us";
        args[a++] = wa->batch_wait;
    }
    args[a] = NULL;
    return a;
}

/* uv_spawn of `args` with fd 3 = a new socketpair opened as `pipe`, stdout
 * and stderr to our stderr, OPENBLAS_NUM_THREADS=threads. */
static int spawn_process(scheduler *s, uv_process_t *proc, uv_pipe_t *pipe, char **args,
                         int threads, uv_exit_cb exit_cb)
{
    size_t ne = 0;
    while (environ[ne]) ne++;
    char **env = calloc(ne + 2, sizeof *env);
    if (!env) return UV_ENOMEM;
    char blas_threads[48];
    snprintf(blas_threads, sizeof blas_threads, "OPENBLAS_NUM_THREADS=%d", threads);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "OPENBLAS_NUM_THREADS=", 21)) env[k++] = environ[i];
    env[k++] = blas_threads;
    env[k] = NULL;
    uv_stdio_container_t stdio[4];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD; /* a worker's stdout goes to our stderr */
    stdio[1].data.fd = 2;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = (uv_stream_t *)pipe;
    uv_process_options_t o = {
        .exit_cb = exit_cb,
        .file = s->exe,
        .args = args,
        .env = env,
        .stdio_count = 4,
        .stdio = stdio,
    };
    int r = uv_spawn(s->loop, proc, &o);
    free(env);
    return r;
}

/* Asks the zygote to fork the worker. 0, or -1 (the caller spawns). */
static int zygote_spawn(scheduler *s, worker *w, char **args, int n)
{
    int sv[2];
    uv_os_fd_t zfd;
    if (!s->zygote_up || uv_fileno((uv_handle_t *)&s->zpipe, &zfd)) return -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) return -1;
    size_t len;
    uint8_t *frame = proto_build_spawn(w->seq, args + 1, n - 1, &len);
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {frame, len};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &sv[1], sizeof(int));
    /* A small frame on a local socket the zygote drains: it is written whole
     * or not at all in practice; anything else falls back to uv_spawn. */
    ssize_t r = frame ? sendmsg(zfd, &msg, MSG_NOSIGNAL) : -1;
    free(frame);
    close(sv[1]);
    if (r != (ssize_t)len) {
        close(sv[0]);
        if (r > 0) s->zygote_up = 0; /* the stream is out of step now */
        return -1;
    }
    if (uv_pipe_open(&w->pipe, sv[0])) {
        close(sv[0]);
        return -1; /* the zygote's child sees EOF and exits */
    }
    return 0;
}

static int worker_spawn(fn_state *f)
{
    scheduler *s = f->s;
    const fn_config *c = f->cfg;
    worker *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(s->last_error, sizeof s->last_error, "out of memory");
        return -1;
    }
    w->fn = f;
    w->seq = ++s->next_seq;
    w->proc.data = w->pipe.data = w->idle.data = w;
    uv_pipe_init(s->loop, &w->pipe, 0);
    uv_timer_init(s->loop, &w->idle);
    w->handles = 2;
    worker_args wa;
    int n = build_args(s, c, &wa);
    w->spawn_ns = uv_hrtime();
    if (zygote_spawn(s, w, wa.v, n) == 0) {
        w->zygote = 1;
        s->n_zworkers++;
    } else {
        int r = spawn_process(s, &w->proc, &w->pipe, wa.v, c->threads, on_exit_cb);
        w->handles++;
        if (r) {
            snprintf(s->last_error, sizeof s->last_error, "cannot start %s worker: %s", c->name,
                     uv_strerror(r));
            fprintf(stderr, "kiln serve: %s\n", s->last_error);
            w->pipe_closed = 1;
            uv_close((uv_handle_t *)&w->pipe, worker_handle_closed);
            uv_close((uv_handle_t *)&w->idle, worker_handle_closed);
            uv_close((uv_handle_t *)&w->proc, worker_handle_closed);
            f->backoff_until_ns = uv_hrtime() + (uint64_t)START_BACKOFF_MS * 1000000;
            return -1;
        }
        w->pid = w->proc.pid;
    }
    w->state = W_STARTING;
    f->n_starting++;
    w->next = f->workers;
    if (f->workers) f->workers->prev = w;
    f->workers = w;
    uv_read_start((uv_stream_t *)&w->pipe, pipe_alloc, pipe_read);
    return 0;
}

/* ---- the zygote ------------------------------------------------------------ */

static worker *find_worker(scheduler *s, uint64_t seq, int pid)
{
    for (int i = 0; i < s->n_fns; i++)
        for (worker *w = s->fns[i].workers; w; w = w->next)
            if (w->zygote && (seq ? w->seq == seq : w->pid == pid)) return w;
    return NULL;
}

/* Every zygote worker died with the zygote (PR_SET_PDEATHSIG). */
static void zygote_workers_lost(scheduler *s)
{
    for (int i = 0; i < s->n_fns; i++) {
        worker *w = s->fns[i].workers, *next;
        for (; w; w = next) {
            next = w->next;
            if (w->zygote) worker_exited(w, -1, SIGKILL);
        }
    }
}

static void zygote_handle_closed(uv_handle_t *h)
{
    scheduler *s = h->data;
    if (--s->zygote_handles == 0) buf_free(&s->zin);
}

static void zygote_close(scheduler *s)
{
    s->zygote_up = 0;
    if (s->zygote_handles > 0 && !uv_is_closing((uv_handle_t *)&s->zpipe))
        uv_close((uv_handle_t *)&s->zpipe, zygote_handle_closed);
}

static void zygote_on_exit(uv_process_t *p, int64_t status, int sig)
{
    scheduler *s = p->data;
    if (!s->stopping)
        fprintf(stderr,
                "kiln serve: the zygote exited (status %" PRId64 ", signal %d); workers are "
                "started with exec from now on\n",
                status, sig);
    zygote_close(s);
    uv_close((uv_handle_t *)&s->zproc, zygote_handle_closed);
    zygote_workers_lost(s);
}

static void zygote_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    scheduler *s = st->data;
    (void)b;
    if (n < 0) {
        zygote_close(s);
        if (!s->stopping) uv_process_kill(&s->zproc, SIGKILL);
        return;
    }
    s->zin.len += (size_t)n;
    size_t off = 0;
    while (s->zin.len - off >= PROTO_HEADER_SIZE) {
        proto_header h;
        const char *why = NULL;
        const uint8_t *p = (const uint8_t *)s->zin.data + off;
        if (proto_get_header(p, &h, &why) || h.length > 64) {
            fprintf(stderr, "kiln serve: zygote protocol error: %s\n", why ? why : "long frame");
            zygote_close(s);
            uv_process_kill(&s->zproc, SIGKILL);
            return;
        }
        if (s->zin.len - off - PROTO_HEADER_SIZE < h.length) break;
        p += PROTO_HEADER_SIZE;
        uint32_t pid;
        int32_t status, sig;
        if (h.type == PROTO_SPAWNED && !proto_parse_spawned(p, h.length, &pid, &why)) {
            worker *w = find_worker(s, h.id, 0);
            if (w && pid == 0) {
                snprintf(w->why, sizeof w->why, "the zygote could not fork a worker");
                worker_exited(w, -1, 0);
            } else if (w) {
                w->pid = (int)pid;
                if (w->state == W_STOPPING) kill(w->pid, SIGKILL);
            }
        } else if (h.type == PROTO_EXITED &&
                   !proto_parse_exited(p, h.length, &pid, &status, &sig, &why)) {
            worker *w = pid ? find_worker(s, 0, (int)pid) : NULL;
            if (w) worker_exited(w, status, sig);
        }
        off += PROTO_HEADER_SIZE + h.length;
    }
    buf_consume(&s->zin, off);
}

static void zygote_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    scheduler *s = h->data;
    (void)hint;
    if (buf_reserve(&s->zin, 4096)) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(s->zin.data + s->zin.len, (unsigned)(s->zin.cap - s->zin.len - 1));
}

/* The zygote's command line: with --preload PATH for each predict
 * function's .kiln model while zygote_preload allows, so that workers
 * forked later share a huge-page copy of it (kiln_model_preload: their
 * first inference then runs as fast as a warm one). Models registered
 * after the start are mapped from their files as before. */
static int zygote_args(scheduler *s, char **args, char paths[][4096], char *limit)
{
    int n = 0, np = 0;
    args[n++] = s->exe;
    args[n++] = "worker";
    args[n++] = "--zygote";
    if (s->cfg->zygote_preload_bytes) {
        snprintf(limit, 32, "%" PRIu64, s->cfg->zygote_preload_bytes);
        args[n++] = "--preload-max";
        args[n++] = limit;
        for (int i = 0; i < s->n_fns && np < ZYGOTE_PRELOAD_MAX; i++) {
            const fn_config *c = s->fns[i].cfg;
            if (c->kind != FN_PREDICT || !c->model) continue;
            const char *path = fn_model_path(s, c, paths[np], sizeof paths[np]);
            size_t len = strlen(path);
            if (len < 5 || strcmp(path + len - 5, ".kiln")) continue;
            args[n++] = "--preload";
            args[n++] = (char *)path;
            np++;
        }
    }
    args[n] = NULL;
    return n;
}

static void zygote_start(scheduler *s)
{
    static char paths[ZYGOTE_PRELOAD_MAX][4096];
    char limit[32], *args[2 * ZYGOTE_PRELOAD_MAX + 6]; /* 5 + 2 per model + NULL */
    zygote_args(s, args, paths, limit);
    s->zproc.data = s->zpipe.data = s;
    uv_pipe_init(s->loop, &s->zpipe, 0);
    s->zygote_handles = 1;
    /* One BLAS thread in the zygote: no thread pool to lose across fork. */
    int r = spawn_process(s, &s->zproc, &s->zpipe, args, 1, zygote_on_exit);
    s->zygote_handles++;
    if (r) {
        fprintf(stderr, "kiln serve: cannot start the zygote (%s); workers use exec\n",
                uv_strerror(r));
        uv_close((uv_handle_t *)&s->zproc, zygote_handle_closed);
        uv_close((uv_handle_t *)&s->zpipe, zygote_handle_closed);
        return;
    }
    s->zygote_up = 1;
    uv_read_start((uv_stream_t *)&s->zpipe, zygote_alloc, zygote_read);
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
    if (worker_send(w, frame, len)) worker_kill(w, "cannot write to the worker");
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

static void pump(fn_state *f)
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
                                     .arrived_unix_us = unix_us(),
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
    inv->arrived_unix_us = unix_us();
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
