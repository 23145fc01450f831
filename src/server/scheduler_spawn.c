/* The scheduler's worker starts (scheduler_internal.h): a worker's command
 * line, uv_spawn or a fork by the zygote (a process that has loaded kiln and
 * OpenBLAS once, so a cold start skips exec and dynamic linking), and the
 * zygote's own life. */
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

extern char **environ;

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

int worker_spawn(fn_state *f)
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
        int r = spawn_process(s, &w->proc, &w->pipe, wa.v, c->threads, worker_on_exit);
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
    uv_read_start((uv_stream_t *)&w->pipe, worker_pipe_alloc, worker_pipe_read);
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

void zygote_close(scheduler *s)
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

void zygote_start(scheduler *s)
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
