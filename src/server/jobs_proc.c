/* Training jobs: the `kiln train` processes, their progress lines and
 * stderr, timeouts, and what their end writes to the store
 * (jobs_internal.h). */
#include "jobs_internal.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- processes ----------------------------------------------------------- */

static void finish_job(jobs *J, job *j)
{
    job_unlink(&J->running, j);
    J->n_running--;
    dbop *op;
    char *result = job_live_result(j);
    if (j->cancelled && !j->server_stop) {
        op = jobs_dbop_new(DB_CANCEL, j->id);
        if (op) op->error = strdup("cancelled by DELETE /v1/jobs/ID");
    } else if (!j->server_stop && !j->timed_out && j->exit_status == 0 && !j->term_signal &&
               j->summary) {
        op = jobs_dbop_new(DB_SUCCEED, j->id);
        if (op)
            snprintf(op->model, sizeof op->model, "%s",
                     json_string_value(json_object_get(j->params, "model")));
    } else {
        op = jobs_dbop_new(DB_FAIL, j->id);
        char msg[ERR_TAIL + 128];
        if (j->server_stop) {
            snprintf(msg, sizeof msg, "interrupted: the server stopped while the job was running");
        } else if (j->timed_out) {
            snprintf(msg, sizeof msg, "timed out after %" PRIu64 " s (server.jobs.timeout)",
                     J->s->cfg.jobs_timeout_ms / 1000);
        } else {
            /* The last non-empty line of stderr, without the "kiln train: " prefix. */
            j->err[j->err_len < ERR_TAIL ? j->err_len : ERR_TAIL - 1] = 0;
            char *e = j->err;
            size_t n = strlen(e);
            while (n && (e[n - 1] == '\n' || e[n - 1] == '\r')) e[--n] = 0;
            char *nl = strrchr(e, '\n');
            if (nl) e = nl + 1;
            if (!strncmp(e, "kiln train: ", 12)) e += 12;
            if (*e)
                snprintf(msg, sizeof msg, "%s", e);
            else if (j->term_signal)
                snprintf(msg, sizeof msg, "the training process was killed by signal %d",
                         j->term_signal);
            else
                snprintf(msg, sizeof msg, "the training process exited with status %" PRId64,
                         j->exit_status);
        }
        if (op) op->error = strdup(msg);
    }
    if (op) {
        op->result = result;
        op->fraction = j->fraction;
        snprintf(op->dir, sizeof op->dir, "%s", j->dir);
        if (J->stopping) {
            /* The loop is ending: write now, on this thread. */
            op->J = J;
            op->req.data = op;
            jobs_db_run(&op->req);
            jobs_dbop_free(op);
        } else {
            jobs_db_push(J, op);
        }
    } else {
        free(result);
        jobs_remove_tree(j->dir);
    }
    job_free(j);
    if (!J->stopping) jobs_schedule(J);
}

static void on_handle_closed(uv_handle_t *h)
{
    job *j = h->data;
    if (--j->open_handles == 0) finish_job(j->owner, j);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, on_handle_closed);
}

static void on_progress_line(jobs *J, job *j, const char *line)
{
    json_t *o = json_loads(line, 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    if (json_is_true(json_object_get(o, "done"))) {
        json_decref(j->summary);
        j->summary = o;
        return;
    }
    if (json_object_get(o, "test_accuracy")) {
        json_decref(j->test);
        j->test = o;
        return;
    }
    json_decref(j->progress);
    j->progress = o;
    double epoch = (double)json_integer_value(json_object_get(o, "epoch"));
    double epochs = (double)json_integer_value(json_object_get(o, "epochs"));
    double b = (double)json_integer_value(json_object_get(o, "batch"));
    double nb = (double)json_integer_value(json_object_get(o, "batches"));
    if (epochs > 0 && nb > 0) j->fraction = (epoch - 1 + b / nb) / epochs;
    uint64_t now = uv_now(&J->s->loop);
    if (now - j->last_write_ms >= PROGRESS_WRITE_MS) {
        j->last_write_ms = now;
        dbop *op = jobs_dbop_new(DB_PROGRESS, j->id);
        if (op) {
            op->fraction = j->fraction;
            op->result = job_live_result(j);
            jobs_db_push(J, op);
        }
    }
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    static char shared[4096]; /* one loop thread: reads never overlap */
    buf->base = shared;
    buf->len = sizeof shared;
}

static void on_progress_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    job *j = s->data;
    jobs *J = j->owner;
    if (n < 0) {
        close_handle((uv_handle_t *)s);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            if (!j->line_overflow) {
                j->line[j->line_len] = 0;
                on_progress_line(J, j, j->line);
            }
            j->line_len = 0;
            j->line_overflow = 0;
        } else if (j->line_len + 1 < sizeof j->line) {
            j->line[j->line_len++] = ch;
        } else {
            j->line_overflow = 1;
        }
    }
}

static void on_err_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    job *j = s->data;
    if (n < 0) {
        close_handle((uv_handle_t *)s);
        return;
    }
    /* Keep the last ERR_TAIL - 1 bytes. */
    size_t keep = ERR_TAIL - 1;
    if ((size_t)n >= keep) {
        memcpy(j->err, buf->base + (size_t)n - keep, keep);
        j->err_len = keep;
    } else {
        if (j->err_len + (size_t)n > keep) {
            size_t drop = j->err_len + (size_t)n - keep;
            memmove(j->err, j->err + drop, j->err_len - drop);
            j->err_len -= drop;
        }
        memcpy(j->err + j->err_len, buf->base, (size_t)n);
        j->err_len += (size_t)n;
    }
}

static void on_exit_cb(uv_process_t *p, int64_t status, int sig)
{
    job *j = p->data;
    j->exit_status = status;
    j->term_signal = sig;
    uv_timer_stop(&j->timer);
    close_handle((uv_handle_t *)&j->timer);
    close_handle((uv_handle_t *)p);
}

void job_on_timer(uv_timer_t *t)
{
    job *j = t->data;
    if (!j->cancelled) j->timed_out = 1;
    uv_process_kill(&j->proc, SIGKILL);
}

/* Starts job j (already in the running list). Returns 0, or -1 with `err`. */
static int spawn(jobs *J, job *j, char *err, size_t errlen)
{
    snprintf(j->dir, sizeof j->dir, "%s/%" PRId64, J->dir, j->id);
    jobs_remove_tree(j->dir);
    if (mkdir(j->dir, 0700)) {
        snprintf(err, errlen, "cannot create %.200s: %s", j->dir, strerror(errno));
        return -1;
    }
    /* Started as root with server.user: the job runs as that user, like the
     * workers, in a work dir it owns. */
    struct passwd *pw = NULL;
    if (J->s->cfg.user && geteuid() == 0) {
        errno = 0;
        pw = getpwnam(J->s->cfg.user);
        if (!pw) {
            snprintf(err, errlen, "server.user '%.64s': %s", J->s->cfg.user,
                     errno ? strerror(errno) : "no such user");
            return -1;
        }
        if (chown(j->dir, pw->pw_uid, pw->pw_gid)) {
            snprintf(err, errlen, "cannot give %.200s to server.user: %s", j->dir, strerror(errno));
            return -1;
        }
    }
    json_t *P = j->params;
    char yaml_path[4200], arch[4300], out[4200], data[1100], epochs[32], batch[32], seed[32],
        limit[48], test_limit[48], lr[64], threads[32];
    const char *yaml = json_string_value(json_object_get(P, "arch_yaml"));
    if (yaml) {
        snprintf(yaml_path, sizeof yaml_path, "%s/arch.yaml", j->dir);
        FILE *f = fopen(yaml_path, "w");
        if (!f || fputs(yaml, f) < 0 || fclose(f)) {
            if (f) fclose(f);
            snprintf(err, errlen, "cannot write %.200s", yaml_path);
            return -1;
        }
        snprintf(arch, sizeof arch, "--arch=%s", yaml_path);
    } else {
        snprintf(arch, sizeof arch, "--arch=%s", json_string_value(json_object_get(P, "arch")));
    }
    snprintf(out, sizeof out, "--output=%s/model.kiln", j->dir);
    snprintf(data, sizeof data, "--data=%s", json_string_value(json_object_get(P, "data")));
    snprintf(epochs, sizeof epochs, "--epochs=%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(P, "epochs")));
    snprintf(batch, sizeof batch, "--batch=%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(P, "batch")));
    snprintf(seed, sizeof seed, "--seed=%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(P, "seed")));
    snprintf(threads, sizeof threads, "--threads=%d", J->s->cfg.jobs_threads);
    char *args[24];
    int a = 0;
    args[a++] = J->exe;
    args[a++] = "train";
    args[a++] = arch;
    args[a++] = data;
    args[a++] = out;
    args[a++] = epochs;
    args[a++] = batch;
    args[a++] = seed;
    args[a++] = threads;
    args[a++] = json_is_string(json_object_get(P, "optimizer")) &&
                        !strcmp(json_string_value(json_object_get(P, "optimizer")), "adam")
                    ? "--optimizer=adam"
                    : "--optimizer=sgd";
    if (json_object_get(P, "lr")) {
        snprintf(lr, sizeof lr, "--lr=%.9g", json_number_value(json_object_get(P, "lr")));
        args[a++] = lr;
    }
    if (json_object_get(P, "limit")) {
        snprintf(limit, sizeof limit, "--limit=%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(P, "limit")));
        args[a++] = limit;
    }
    if (json_object_get(P, "test_limit")) {
        snprintf(test_limit, sizeof test_limit, "--test-limit=%" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(P, "test_limit")));
        args[a++] = test_limit;
    }
    args[a++] = "--quiet";
    args[a++] = "--progress-fd=3";
    args[a] = NULL;

    uv_loop_t *loop = &J->s->loop;
    uv_pipe_init(loop, &j->progress_pipe, 0);
    uv_pipe_init(loop, &j->err_pipe, 0);
    uv_timer_init(loop, &j->timer);
    j->progress_pipe.data = j->err_pipe.data = j->timer.data = j->proc.data = j;
    uv_stdio_container_t stdio[4];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&j->err_pipe;
    stdio[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[3].data.stream = (uv_stream_t *)&j->progress_pipe;
    uv_process_options_t po = {0};
    po.file = J->exe;
    po.args = args;
    po.exit_cb = on_exit_cb;
    po.stdio = stdio;
    po.stdio_count = 4;
    if (pw) { /* libuv also drops the supplementary groups */
        po.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        po.uid = pw->pw_uid;
        po.gid = pw->pw_gid;
    }
    int r = uv_spawn(loop, &j->proc, &po);
    if (r) {
        snprintf(err, errlen, "cannot start kiln train: %s", uv_strerror(r));
        /* The process handle must be closed even after a failed spawn. */
        j->open_handles = 4;
        j->exit_status = -1;
        uv_close((uv_handle_t *)&j->proc, on_handle_closed);
        uv_close((uv_handle_t *)&j->progress_pipe, on_handle_closed);
        uv_close((uv_handle_t *)&j->err_pipe, on_handle_closed);
        uv_close((uv_handle_t *)&j->timer, on_handle_closed);
        return 1; /* handles close: finish_job reports the failure */
    }
    j->open_handles = 4;
    uv_read_start((uv_stream_t *)&j->progress_pipe, alloc_cb, on_progress_read);
    uv_read_start((uv_stream_t *)&j->err_pipe, alloc_cb, on_err_read);
    if (J->s->cfg.jobs_timeout_ms)
        uv_timer_start(&j->timer, job_on_timer, J->s->cfg.jobs_timeout_ms, 0);
    j->last_write_ms = uv_now(loop);
    return 0;
}

/* Starts queued jobs while there is room. */
void jobs_schedule(jobs *J)
{
    while (!J->stopping && J->queue_head && J->n_running < J->s->cfg.jobs_max_running) {
        job *j = J->queue_head;
        jobs_dequeue(J, j);
        dbop *op = jobs_dbop_new(DB_START, j->id);
        if (op) jobs_db_push(J, op);
        j->next = J->running;
        J->running = j;
        J->n_running++;
        char err[600];
        int r = spawn(J, j, err, sizeof err);
        if (r) {
            fprintf(stderr, "kiln serve: job %" PRId64 ": %s\n", j->id, err);
            snprintf(j->err, sizeof j->err, "%s", err);
            j->err_len = strlen(j->err);
            if (r < 0) {
                /* No handle was opened: finish now. */
                j->exit_status = -1;
                finish_job(J, j);
            }
        }
    }
}
