/* Training jobs (jobs.h): the HTTP routes, the queue, the `kiln train`
 * processes and their writes to the store. */
#define _XOPEN_SOURCE 700
#include "jobs.h"
#include "server_internal.h"

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

/* Progress is written to the store at most this often per job. */
#define PROGRESS_WRITE_MS 1000
/* Bytes of a job's stderr kept for its error message. */
#define ERR_TAIL 1024
/* A cancelled job gets SIGTERM, then SIGKILL after this. */
#define CANCEL_GRACE_MS 2000
/* Jobs listed by GET /v1/jobs. */
#define LIST_LIMIT 100

typedef struct job {
    struct job *next; /* in the queue or the running list */
    jobs *owner;
    int64_t id;
    json_t *params; /* the normalised request (what the store keeps) */
    char dir[4096]; /* DATA_DIR/jobs/ID while it runs */
    uv_process_t proc;
    uv_pipe_t progress_pipe, err_pipe;
    uv_timer_t timer; /* timeout, then the cancel grace period */
    int open_handles; /* of the four above; the job ends when 0 */
    char line[1024];  /* a progress line being assembled */
    size_t line_len;
    int line_overflow;
    char err[ERR_TAIL]; /* the tail of stderr */
    size_t err_len;
    json_t *progress; /* the latest progress object */
    json_t *test;     /* the latest test result */
    json_t *summary;  /* the final line ({"done": true, ...}) */
    double fraction;  /* 0..1 */
    uint64_t last_write_ms;
    int cancelled; /* DELETE asked for it */
    int timed_out;
    int server_stop; /* killed because the server stops */
    int64_t exit_status;
    int term_signal;
} job;

struct jobs {
    server *s;
    char exe[4096];
    char dir[4000]; /* DATA_DIR/jobs */
    job *queue_head, *queue_tail;
    int n_queued;
    int n_creating; /* POSTs waiting for their row */
    job *running;
    int n_running;
    /* store writes, one at a time and in order */
    struct dbop *db_head, *db_tail;
    int db_busy;
    int stopping;
};

/* ---- jobs in memory ---------------------------------------------------- */

static job *job_new(jobs *J, int64_t id, json_t *params)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->owner = J;
    j->id = id;
    j->params = params;
    return j;
}

static void job_free(job *j)
{
    if (!j) return;
    json_decref(j->params);
    json_decref(j->progress);
    json_decref(j->test);
    json_decref(j->summary);
    free(j);
}

static job *find_in(job *list, int64_t id)
{
    for (; list; list = list->next)
        if (list->id == id) return list;
    return NULL;
}

static void unlink_from(job **list, job *j)
{
    for (job **p = list; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            j->next = NULL;
            return;
        }
}

static void enqueue(jobs *J, job *j)
{
    j->next = NULL;
    if (J->queue_tail)
        J->queue_tail->next = j;
    else
        J->queue_head = j;
    J->queue_tail = j;
    J->n_queued++;
}

static void dequeue(jobs *J, job *j)
{
    job *prev = NULL;
    for (job *p = J->queue_head; p; prev = p, p = p->next)
        if (p == j) {
            if (prev)
                prev->next = j->next;
            else
                J->queue_head = j->next;
            if (J->queue_tail == j) J->queue_tail = prev;
            j->next = NULL;
            J->n_queued--;
            return;
        }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- store writes on the thread pool ------------------------------------ */

typedef enum db_kind {
    DB_CREATE,   /* store_job_create; answers 202 */
    DB_START,    /* queued -> running */
    DB_PROGRESS, /* progress of a running job */
    DB_SUCCEED,  /* register the model, then succeeded (or failed if that fails) */
    DB_FAIL,     /* running/queued -> failed */
    DB_CANCEL,   /* running/queued -> cancelled; answers 200 when c is set */
} db_kind;

typedef struct dbop {
    struct dbop *next;
    uv_work_t req;
    jobs *J;
    db_kind kind;
    int64_t id;
    char *params; /* DB_CREATE */
    json_t *params_json;
    double fraction;
    char *result; /* JSON text or NULL */
    char *error;  /* DB_FAIL, DB_CANCEL */
    char model[STORE_NAME_MAX + 1];
    char dir[4096];    /* DB_SUCCEED/FAIL/CANCEL: the work dir to read and remove */
    http_conn *c;      /* answered when done; NULL once the client went away */
    int answer_wanted; /* set with c: read the job back for the answer (c itself belongs to the
                          loop) */
    /* results */
    store_status st;
    char msg[512];
    json_t *answer; /* the job as JSON, read back after the write */
} dbop;

static json_t *job_row_json(const store_job *r);

static void db_run(uv_work_t *req);
static void db_done(uv_work_t *req, int status);

static void db_kick(jobs *J)
{
    if (J->db_busy || !J->db_head) return;
    dbop *op = J->db_head;
    op->req.data = op;
    if (uv_queue_work(&J->s->loop, &op->req, db_run, db_done)) {
        /* Only fails on a closing loop: run it here rather than lose it. */
        db_run(&op->req);
        J->db_busy = 1;
        J->s->pending_work++;
        db_done(&op->req, 0);
        return;
    }
    J->db_busy = 1;
    J->s->pending_work++;
}

static void db_push(jobs *J, dbop *op)
{
    op->J = J;
    op->next = NULL;
    if (J->db_tail)
        J->db_tail->next = op;
    else
        J->db_head = op;
    J->db_tail = op;
    db_kick(J);
}

static dbop *dbop_new(db_kind kind, int64_t id)
{
    dbop *op = calloc(1, sizeof *op);
    if (op) {
        op->kind = kind;
        op->id = id;
    }
    return op;
}

static void dbop_free(dbop *op)
{
    free(op->params);
    json_decref(op->params_json);
    free(op->result);
    free(op->error);
    json_decref(op->answer);
    free(op);
}

static char *dump(json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT) : NULL;
}

/* Reads a whole file into memory. */
static int slurp(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int r = -1;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (*data = malloc((size_t)n))) {
            if (fread(*data, 1, (size_t)n, f) == (size_t)n) {
                *len = (size_t)n;
                r = 0;
            } else {
                free(*data);
            }
        }
    }
    fclose(f);
    return r;
}

/* DB_SUCCEED: store the model as the next version, then finish the job. */
static void register_model(dbop *op, store *st)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model.kiln", op->dir);
    char *data = NULL;
    size_t len = 0;
    json_t *res = op->result ? json_loads(op->result, 0, NULL) : NULL;
    if (!res) res = json_object();
    const char *err = NULL;
    char msg[512];
    store_version v = {0};
    if (slurp(path, &data, &len)) {
        err = "the training process wrote no model file";
    } else {
        char meta[128];
        snprintf(meta, sizeof meta, "{\"format\":\"kiln\",\"job\":%" PRId64 "}", op->id);
        store_status s = store_version_put(st, op->model, NULL, data, len, meta, &v);
        free(data);
        if (s) {
            snprintf(msg, sizeof msg, "registering model '%s': %s", op->model, store_last_error());
            err = msg;
        } else {
            json_object_set_new(res, "model", json_string(v.model));
            json_object_set_new(res, "version", json_string(v.version));
            json_object_set_new(res, "sha256", json_string(v.sha256));
            json_object_set_new(res, "size", json_integer((json_int_t)v.size));
            store_version_clear(&v);
        }
    }
    char *text = dump(res);
    json_decref(res);
    op->st = store_job_finish(st, op->id, text, err);
    free(text);
}

static void db_run(uv_work_t *req)
{
    dbop *op = req->data;
    store *st = op->J->s->st;
    switch (op->kind) {
    case DB_CREATE:
        op->st = store_job_create(st, "train", op->params, &op->id);
        break;
    case DB_START:
        op->st = store_job_start(st, op->id);
        break;
    case DB_PROGRESS:
        op->st = store_job_progress(st, op->id, op->fraction, op->result);
        break;
    case DB_SUCCEED:
        register_model(op, st);
        break;
    case DB_FAIL:
        op->st = store_job_finish(st, op->id, op->result, op->error ? op->error : "failed");
        break;
    case DB_CANCEL:
        if (op->result) store_job_progress(st, op->id, op->fraction, op->result);
        op->st = store_job_cancel(st, op->id, op->error);
        break;
    }
    if (op->st) snprintf(op->msg, sizeof op->msg, "%s", store_last_error());
    if (op->dir[0]) remove_tree(op->dir);
    if (op->answer_wanted && op->st == STORE_OK) {
        store_job r;
        if (store_job_get(st, op->id, &r) == STORE_OK) {
            op->answer = job_row_json(&r);
            store_job_clear(&r);
        }
    }
}

static void after_create(jobs *J, dbop *op);

static void db_done(uv_work_t *req, int status)
{
    (void)status;
    dbop *op = req->data;
    jobs *J = op->J;
    J->db_head = op->next;
    if (!J->db_head) J->db_tail = NULL;
    J->db_busy = 0;
    J->s->pending_work--;
    if (op->st && op->kind != DB_PROGRESS)
        fprintf(stderr, "kiln serve: job %" PRId64 ": %s\n", op->id, op->msg);
    if (op->kind == DB_CREATE) {
        after_create(J, op);
    } else if (op->c) {
        if (op->st)
            http_respond_error(op->c, store_http_status(op->st), NULL, "%s", op->msg);
        else
            respond_json(op->c, 200, NULL, op->answer), op->answer = NULL;
    }
    dbop_free(op);
    db_kick(J);
}

static void dbop_cancel_conn(void *arg)
{
    ((dbop *)arg)->c = NULL;
}

/* ---- JSON of a job ------------------------------------------------------ */

static json_t *job_row_json(const store_job *r)
{
    json_t *params = r->params ? json_loads(r->params, 0, NULL) : NULL;
    json_t *result = r->result ? json_loads(r->result, 0, NULL) : NULL;
    json_t *progress = json_object();
    json_t *p = json_object_get(result, "progress");
    if (json_is_object(p)) json_object_update(progress, p);
    json_object_set_new(progress, "fraction", json_real(r->progress));
    if (result) json_object_del(result, "progress");
    return json_pack(
        "{s:I, s:s, s:s, s:o, s:o, s:o, s:s?, s:I, s:o, s:o}", "id", (json_int_t)r->id, "kind",
        r->kind, "state", store_job_state_name(r->state), "params", params ? params : json_null(),
        "progress", progress, "result", result ? result : json_null(), "error", r->error, "created",
        (json_int_t)r->created, "started", r->started ? json_integer(r->started) : json_null(),
        "finished", r->finished ? json_integer(r->finished) : json_null());
}

/* What the store keeps in `result` while a job runs: the progress so far. */
static char *live_result(const job *j)
{
    json_t *r = json_object();
    if (j->progress) json_object_set(r, "progress", j->progress);
    if (j->test) json_object_set(r, "test", j->test);
    if (j->summary) json_object_update(r, j->summary), json_object_del(r, "done");
    char *text = dump(r);
    json_decref(r);
    return text;
}

/* ---- request bodies ------------------------------------------------------ */

static int bad(http_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(http_conn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_respond_error(c, 400, NULL, "%s", msg);
    return -1;
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* An integer field: absent -> def; otherwise lo..hi. -1 after answering 400. */
static int int_field(http_conn *c, json_t *body, const char *key, json_int_t lo, json_int_t hi,
                     json_int_t def, json_int_t *out)
{
    json_t *v = json_object_get(body, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return bad(c,
                   "%s: expected an integer from %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT,
                   key, lo, hi);
    *out = json_integer_value(v);
    return 0;
}

/* Validates a job request and returns its normalised parameters, or NULL
 * after answering 400 (the message names the field). */
static json_t *parse_request(jobs *J, http_conn *c, http_request *req)
{
    static const char *const known[] = {"arch",  "arch_yaml",  "data",      "epochs",
                                        "batch", "lr",         "optimizer", "seed",
                                        "limit", "test_limit", "model",     NULL};
    json_error_t je;
    json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(body)) {
        if (body)
            bad(c, "body: expected a JSON object");
        else
            bad(c, "body: not JSON (%s at line %d)", je.text, je.line);
        json_decref(body);
        return NULL;
    }
    json_t *out = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        int ok = 0;
        for (int i = 0; known[i]; i++) ok |= !strcmp(key, known[i]);
        if (!ok) {
            bad(c,
                "%.64s: unknown field (fields: arch or arch_yaml, data, model, epochs, batch, "
                "lr, optimizer, seed, limit, test_limit)",
                key);
            goto fail;
        }
    }

    /* model: the name the result is registered under */
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!model || !store_name_valid(model)) {
        bad(c, "model: expected the name to register the trained model under (1-64 of A-Z a-z "
               "0-9 . _ -, not starting with .)");
        goto fail;
    }
    json_object_set_new(out, "model", json_string(model));

    /* arch or arch_yaml */
    json_t *arch = json_object_get(body, "arch"), *arch_yaml = json_object_get(body, "arch_yaml");
    if ((arch != NULL) == (arch_yaml != NULL)) {
        bad(c, "arch: give either arch (a models/*.yaml path or a name in models/) or arch_yaml "
               "(the architecture as YAML text)");
        goto fail;
    }
    if (arch) {
        const char *a = json_string_value(arch);
        char path[1100];
        if (!a || !*a || strlen(a) > 1000 || a[0] == '-') {
            bad(c, "arch: expected a path or a name");
            goto fail;
        }
        size_t al = strlen(a);
        int yaml_name =
            (al > 5 && !strcmp(a + al - 5, ".yaml")) || (al > 4 && !strcmp(a + al - 4, ".yml"));
        if (!strchr(a, '/') && !yaml_name)
            snprintf(path, sizeof path, "models/%s.yaml", a);
        else
            snprintf(path, sizeof path, "%s", a);
        if (strchr(a, '/') && !yaml_name) {
            /* Job errors are readable by anyone: never point the trainer at
             * a file that is not an architecture. */
            bad(c, "arch: a path must name a .yaml or .yml file");
            goto fail;
        }
        if (!is_file(path)) {
            bad(c,
                "arch: no architecture file %s (relative paths are from the server's working "
                "directory)",
                path);
            goto fail;
        }
        json_object_set_new(out, "arch", json_string(path));
    } else {
        const char *y = json_string_value(arch_yaml);
        if (!y || !*y || json_string_length(arch_yaml) > (64u << 10)) {
            bad(c, "arch_yaml: expected the architecture as YAML text (at most 64 KiB)");
            goto fail;
        }
        json_object_set_new(out, "arch_yaml", json_string(y));
    }

    /* data: what kiln train --data takes */
    const char *data = json_string_value(json_object_get(body, "data"));
    if (!data || !*data || strlen(data) > 1000 || data[0] == '-') {
        bad(c, "data: expected a data set: fashion-mnist, mnist, or a directory on the server");
        goto fail;
    }
    if (strcmp(data, "fashion-mnist") && strcmp(data, "mnist") && !is_dir(data)) {
        bad(c, "data: '%.200s' is neither fashion-mnist, mnist nor a directory on the server",
            data);
        goto fail;
    }
    json_object_set_new(out, "data", json_string(data));

    json_int_t epochs = 0, batch = 0, seed = 0, limit = 0, test_limit = 0;
    if (int_field(c, body, "epochs", 1, J->s->cfg.jobs_max_epochs, 1, &epochs) ||
        int_field(c, body, "batch", 1, 65536, 64, &batch) ||
        int_field(c, body, "seed", 1, (json_int_t)1 << 53, 1, &seed) ||
        int_field(c, body, "limit", 0, (json_int_t)1 << 40, 0, &limit) ||
        int_field(c, body, "test_limit", 0, (json_int_t)1 << 40, 0, &test_limit))
        goto fail;
    json_object_set_new(out, "epochs", json_integer(epochs));
    json_object_set_new(out, "batch", json_integer(batch));
    json_object_set_new(out, "seed", json_integer(seed));
    if (limit) json_object_set_new(out, "limit", json_integer(limit));
    if (test_limit) json_object_set_new(out, "test_limit", json_integer(test_limit));

    const char *opt = "sgd";
    json_t *o = json_object_get(body, "optimizer");
    if (o) {
        opt = json_string_value(o);
        if (!opt || (strcmp(opt, "sgd") && strcmp(opt, "adam"))) {
            bad(c, "optimizer: expected sgd or adam");
            goto fail;
        }
    }
    json_object_set_new(out, "optimizer", json_string(opt));
    json_t *lr = json_object_get(body, "lr");
    if (lr) {
        double x = json_number_value(lr);
        if (!json_is_number(lr) || !(x > 0) || x > 1e6) {
            bad(c, "lr: expected a number greater than 0");
            goto fail;
        }
        json_object_set_new(out, "lr", json_real(x));
    }
    json_decref(body);
    return out;
fail:
    json_decref(body);
    json_decref(out);
    return NULL;
}

/* ---- processes ----------------------------------------------------------- */

static void schedule(jobs *J);

static void finish_job(jobs *J, job *j)
{
    unlink_from(&J->running, j);
    J->n_running--;
    dbop *op;
    char *result = live_result(j);
    if (j->cancelled && !j->server_stop) {
        op = dbop_new(DB_CANCEL, j->id);
        if (op) op->error = strdup("cancelled by DELETE /v1/jobs/ID");
    } else if (!j->server_stop && !j->timed_out && j->exit_status == 0 && !j->term_signal &&
               j->summary) {
        op = dbop_new(DB_SUCCEED, j->id);
        if (op)
            snprintf(op->model, sizeof op->model, "%s",
                     json_string_value(json_object_get(j->params, "model")));
    } else {
        op = dbop_new(DB_FAIL, j->id);
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
            db_run(&op->req);
            dbop_free(op);
        } else {
            db_push(J, op);
        }
    } else {
        free(result);
        remove_tree(j->dir);
    }
    job_free(j);
    if (!J->stopping) schedule(J);
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
        dbop *op = dbop_new(DB_PROGRESS, j->id);
        if (op) {
            op->fraction = j->fraction;
            op->result = live_result(j);
            db_push(J, op);
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

static void on_timer(uv_timer_t *t)
{
    job *j = t->data;
    if (!j->cancelled) j->timed_out = 1;
    uv_process_kill(&j->proc, SIGKILL);
}

/* Starts job j (already in the running list). Returns 0, or -1 with `err`. */
static int spawn(jobs *J, job *j, char *err, size_t errlen)
{
    snprintf(j->dir, sizeof j->dir, "%s/%" PRId64, J->dir, j->id);
    remove_tree(j->dir);
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
        uv_timer_start(&j->timer, on_timer, J->s->cfg.jobs_timeout_ms, 0);
    j->last_write_ms = uv_now(loop);
    return 0;
}

/* Starts queued jobs while there is room. */
static void schedule(jobs *J)
{
    while (!J->stopping && J->queue_head && J->n_running < J->s->cfg.jobs_max_running) {
        job *j = J->queue_head;
        dequeue(J, j);
        dbop *op = dbop_new(DB_START, j->id);
        if (op) db_push(J, op);
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

/* ---- routes -------------------------------------------------------------- */

static void after_create(jobs *J, dbop *op)
{
    J->n_creating--;
    if (op->st) {
        if (op->c) http_respond_error(op->c, store_http_status(op->st), NULL, "%s", op->msg);
        return;
    }
    job *j = job_new(J, op->id, op->params_json);
    if (!j) {
        /* The row stays queued: the next server start runs it. */
        if (op->c) http_respond_error(op->c, 503, NULL, "out of memory");
        return;
    }
    op->params_json = NULL;
    enqueue(J, j);
    if (op->c) {
        char loc[64];
        snprintf(loc, sizeof loc, "Location: /v1/jobs/%" PRId64 "\r\n", op->id);
        if (op->answer)
            respond_json(op->c, 202, loc, op->answer), op->answer = NULL;
        else
            respond_json(op->c, 202, loc,
                         json_pack("{s:I, s:s}", "id", (json_int_t)op->id, "state", "queued"));
    }
    schedule(J);
}

void jobs_submit(jobs *J, http_conn *c, http_request *req)
{
    if (J->stopping) {
        http_respond_error(c, 503, "Retry-After: 1\r\n", "the server is stopping");
        return;
    }
    json_t *params = parse_request(J, c, req);
    if (!params) return;
    if (J->n_queued + J->n_creating >= J->s->cfg.jobs_max_queued) {
        json_decref(params);
        http_respond_error(c, 429, "Retry-After: 10\r\n",
                           "%d training jobs are queued already (server.jobs.max_queued)",
                           J->n_queued + J->n_creating);
        return;
    }
    dbop *op = dbop_new(DB_CREATE, 0);
    char *text = dump(params);
    if (!op || !text) {
        free(op);
        free(text);
        json_decref(params);
        http_respond_error(c, 503, NULL, "out of memory");
        return;
    }
    op->params = text;
    op->params_json = params;
    op->c = c;
    op->answer_wanted = 1;
    J->n_creating++;
    http_set_pending(c, dbop_cancel_conn, op);
    db_push(J, op);
}

/* The job as JSON, with the live progress of a running job. */
static json_t *job_json(jobs *J, const store_job *r)
{
    json_t *o = job_row_json(r);
    job *j = find_in(J->running, r->id);
    if (o && j && r->state == STORE_JOB_RUNNING) {
        json_t *p = json_object();
        if (j->progress) json_object_update(p, j->progress);
        json_object_set_new(p, "fraction", json_real(j->fraction));
        json_object_set_new(o, "progress", p);
        if (j->test) {
            json_t *res = json_object();
            json_object_set(res, "test", j->test);
            json_object_set_new(o, "result", res);
        }
        if (j->cancelled) json_object_set_new(o, "cancel_requested", json_true());
    }
    return o;
}

static void list_jobs(jobs *J, http_conn *c, const char *query)
{
    int state = -1;
    const char *q = query ? strstr(query, "state=") : NULL;
    if (q && (q == query || q[-1] == '&')) {
        q += 6;
        size_t n = strcspn(q, "&");
        for (int i = STORE_JOB_QUEUED; i <= STORE_JOB_CANCELLED; i++) {
            const char *name = store_job_state_name((store_job_state)i);
            if (strlen(name) == n && !strncmp(q, name, n)) state = i;
        }
        if (state < 0) {
            http_respond_error(c, 400, NULL,
                               "state: expected queued, running, succeeded, failed or cancelled");
            return;
        }
    }
    store_job *rows = NULL;
    int n = 0;
    store_status st = store_job_list(J->s->st, state, LIST_LIMIT, &rows, &n);
    if (st) {
        http_respond_error(c, store_http_status(st), NULL, "%s", store_last_error());
        return;
    }
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, job_json(J, &rows[i]));
    store_jobs_free(rows, n);
    respond_json(c, 200, NULL, json_pack("{s:o}", "jobs", a));
}

static void get_job(jobs *J, http_conn *c, int64_t id, int status)
{
    store_job r;
    store_status st = store_job_get(J->s->st, id, &r);
    if (st) {
        http_respond_error(c, store_http_status(st), NULL, "%s", store_last_error());
        return;
    }
    respond_json(c, status, NULL, job_json(J, &r));
    store_job_clear(&r);
}

static void cancel_job(jobs *J, http_conn *c, int64_t id)
{
    job *j;
    for (j = J->queue_head; j && j->id != id; j = j->next) {
    }
    if (j) {
        dequeue(J, j);
        job_free(j);
        dbop *op = dbop_new(DB_CANCEL, id);
        if (!op) {
            http_respond_error(c, 503, NULL, "out of memory");
            return;
        }
        op->error = strdup("cancelled by DELETE /v1/jobs/ID before it started");
        op->c = c;
        op->answer_wanted = 1;
        http_set_pending(c, dbop_cancel_conn, op);
        db_push(J, op);
        return;
    }
    if ((j = find_in(J->running, id))) {
        if (!j->cancelled) {
            j->cancelled = 1;
            uv_process_kill(&j->proc, SIGTERM);
            uv_timer_stop(&j->timer);
            uv_timer_start(&j->timer, on_timer, CANCEL_GRACE_MS, 0);
        }
        get_job(J, c, id, 202); /* cancel_requested; the state follows when it exits */
        return;
    }
    store_job r;
    store_status st = store_job_get(J->s->st, id, &r);
    if (st) {
        http_respond_error(c, store_http_status(st), NULL, "%s", store_last_error());
        return;
    }
    http_respond_error(c, 409, NULL,
                       "job %" PRId64 " is %s: only queued or running jobs can be cancelled", id,
                       store_job_state_name(r.state));
    store_job_clear(&r);
}

void jobs_route(jobs *J, http_conn *c, http_request *req, const char *rest)
{
    int m = req->method;
    int get = m == HTTP_GET || m == HTTP_HEAD;
    if (!*rest || !strcmp(rest, "/")) {
        if (get)
            list_jobs(J, c, req->query);
        else if (m == HTTP_POST) {
            if (authorized(J->s, c, req, 1)) jobs_submit(J, c, req);
        } else
            goto method;
        return;
    }
    rest++;
    char *end;
    errno = 0;
    long long id = strtoll(rest, &end, 10);
    if (*rest < '0' || *rest > '9' || *end || errno || id <= 0) {
        http_respond_error(c, 404, NULL, "no job '%.40s' (job ids are positive integers)", rest);
        return;
    }
    if (get)
        get_job(J, c, id, 200);
    else if (m == HTTP_DELETE) {
        if (authorized(J->s, c, req, 1)) cancel_job(J, c, id);
    } else
        goto method;
    return;
method:
    http_respond_error(c, 405, NULL, "%s is not allowed on %.200s", http_method_str(m), req->path);
}

/* ---- life cycle ----------------------------------------------------------- */

jobs *jobs_create(server *s, const char *exe)
{
    jobs *J = calloc(1, sizeof *J);
    if (!J) {
        fprintf(stderr, "kiln serve: out of memory\n");
        return NULL;
    }
    J->s = s;
    snprintf(J->exe, sizeof J->exe, "%s", exe);
    snprintf(J->dir, sizeof J->dir, "%s/jobs", s->cfg.data_dir);
    /* Work dirs of jobs a previous process ran: those jobs are failed now
     * (the store did it) or start again from scratch below. */
    remove_tree(J->dir);
    /* 0711: a job running as server.user reaches its own dir, lists none */
    if (mkdir(J->dir, 0711) && errno != EEXIST) {
        fprintf(stderr, "kiln serve: cannot create %s: %s\n", J->dir, strerror(errno));
        free(J);
        return NULL;
    }
    store_job *rows = NULL;
    int n = 0;
    if (store_job_list(s->st, STORE_JOB_QUEUED, 1000000, &rows, &n)) {
        fprintf(stderr, "kiln serve: reading queued jobs: %s\n", store_last_error());
        n = 0;
    }
    for (int i = n - 1; i >= 0; i--) { /* oldest first */
        json_t *p = rows[i].params ? json_loads(rows[i].params, 0, NULL) : NULL;
        job *j = json_is_object(p) ? job_new(J, rows[i].id, p) : NULL;
        if (!j) {
            json_decref(p);
            store_job_finish(s->st, rows[i].id, NULL, "its parameters could not be read back");
            continue;
        }
        enqueue(J, j);
    }
    store_jobs_free(rows, n);
    if (J->n_queued)
        fprintf(stderr, "kiln serve: %d training job%s still queued\n", J->n_queued,
                J->n_queued == 1 ? "" : "s");
    schedule(J);
    return J;
}

void jobs_counts(const jobs *J, int *queued, int *running)
{
    *queued = J ? J->n_queued : 0;
    *running = J ? J->n_running : 0;
}

void jobs_stop(jobs *J)
{
    if (!J || J->stopping) return;
    J->stopping = 1;
    while (J->queue_head) { /* they stay queued in the store */
        job *j = J->queue_head;
        dequeue(J, j);
        job_free(j);
    }
    for (job *j = J->running; j; j = j->next) {
        j->server_stop = 1;
        if (!uv_is_closing((uv_handle_t *)&j->proc)) uv_process_kill(&j->proc, SIGKILL);
    }
}

void jobs_destroy(jobs *J)
{
    if (!J) return;
    while (J->queue_head) { /* created while the server stopped: still queued in the store */
        job *j = J->queue_head;
        dequeue(J, j);
        job_free(j);
    }
    free(J);
}
