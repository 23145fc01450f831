/* The router and the life cycle of `kiln serve` (server.h). */
#include "server.h"
#include "invlog.h"
#include "kiln.h"
#include "server_internal.h"

#include <jansson.h>
#include <uv.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ----------------------------------------------------------- */

void respond_json(http_conn *c, int status, const char *headers, json_t *j)
{
    /* 9 significant digits: a float32 exactly, without double's noise */
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!text) {
        http_respond_error(c, 500, NULL, "out of memory");
        return;
    }
    http_respond(c, status, headers, "application/json", text, strlen(text));
    free(text);
}

/* If path starts with prefix, the rest; else NULL. */
static const char *after(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) ? NULL : path + n;
}

static int fn_replicas(const server *s, int i)
{
    fn_gauges g;
    scheduler_gauges(s->sched, i, &g);
    return g.idle + g.busy;
}

/* ---- handlers ---------------------------------------------------------- */

/* 1 when the request may go on; otherwise answers 401 and returns 0.
 * `changes_state`: model/config/job endpoints (always protected when
 * server.auth is on); invocations are protected with server.auth_invoke. */
int authorized(server *s, http_conn *c, http_request *req, int changes_state)
{
    if (!s->cfg.auth || (!changes_state && !s->cfg.auth_invoke)) return 1;
    const char *a = req->authorization;
    if (a && !strncasecmp(a, "Bearer ", 7) && store_token_equal(s->token, a + 7, strlen(a + 7)))
        return 1;
    http_respond_error(c, 401, "WWW-Authenticate: Bearer realm=\"kiln\"\r\n", "%s",
                       req->authorization ? "the bearer token is not valid"
                                          : "this endpoint needs Authorization: Bearer "
                                            "<token> (the token is in DATA_DIR/token)");
    return 0;
}

static void on_invoked(void *arg, const invoke_result *r)
{
    http_conn *c = arg;
    /* formatted without printf: every invocation's answer passes here
     * (at most 5 * 20 digits and 120 bytes of names) */
    char headers[320], *p = headers;
    p = stpcpy(p, r->cold == 1   ? "X-Kiln-Start: cold\r\nX-Kiln-Queue-Us: "
                  : r->cold == 0 ? "X-Kiln-Start: warm\r\nX-Kiln-Queue-Us: "
                                 : "X-Kiln-Start: none\r\nX-Kiln-Queue-Us: ");
    p = buf_fmt_u64(p, r->queue_us);
    p = stpcpy(p, "\r\nX-Kiln-Init-Us: ");
    p = buf_fmt_u64(p, r->init_us);
    p = stpcpy(p, "\r\nX-Kiln-Exec-Us: ");
    p = buf_fmt_u64(p, r->exec_us);
    p = stpcpy(p, "\r\n");
    if (r->worker_pid > 0) {
        p = stpcpy(p, "X-Kiln-Worker: ");
        p = buf_fmt_u64(p, (unsigned long long)r->worker_pid);
        p = stpcpy(p, "\r\n");
    }
    if (r->batch > 0) {
        p = stpcpy(p, "X-Kiln-Batch: ");
        p = buf_fmt_u64(p, (unsigned long long)r->batch);
        p = stpcpy(p, "\r\n");
    }
    *p = 0;
    char ctype[160];
    size_t cl = r->ctype_len < sizeof ctype - 1 ? r->ctype_len : sizeof ctype - 1;
    memcpy(ctype, r->ctype, cl);
    ctype[cl] = 0;
    http_respond(c, r->status, headers, cl ? ctype : NULL, r->body, r->body_len);
}

static void cancel_invocation(void *arg)
{
    scheduler_cancel(arg);
}

/* Submits a request to function fn; `query` and `body` must live as long as
 * the request (its own, or static strings). */
static void invoke_with(server *s, http_conn *c, http_request *req, const char *fn, size_t fn_len,
                        const char *query, const char *body, size_t body_len)
{
    invocation *inv = NULL;
    sched_rc rc = scheduler_invoke(s->sched, fn, fn_len, req->content_type, query, body, body_len,
                                   on_invoked, c, &inv);
    switch (rc) {
    case SCHED_OK:
        http_set_pending(c, cancel_invocation, inv);
        return;
    case SCHED_NOT_FOUND:
        http_respond_error(c, 404, NULL, "no function named '%.*s'",
                           (int)(fn_len > 64 ? 64 : fn_len), fn);
        return;
    case SCHED_QUEUE_FULL:
        http_respond_error(c, 429, "Retry-After: 1\r\nX-Kiln-Start: none\r\n",
                           "function '%.*s' is at max_workers and its queue is full (queue_limit)",
                           (int)fn_len, fn);
        return;
    case SCHED_NO_WORKER:
        http_respond_error(c, 503, "Retry-After: 1\r\n", "%s", scheduler_last_error(s->sched));
        return;
    case SCHED_NO_MEMORY:
        http_respond_error(c, 503, "Retry-After: 1\r\n", "out of memory");
        return;
    }
}

/* ---- functions the server runs itself ---------------------------------
 * Kinds train and models change the store, which lives in this process
 * (the SQLite database and the weights directory), so the server runs them
 * without a worker: a train function submits a training job (as POST
 * /v1/jobs does; the job runs in its own process), and a models function is
 * the model manager: /function/NAME[/...] is /v1/models[/...] (list, create,
 * read, upload, download, delete; see models_api.c). They are invocations
 * all the same: counted, timed, logged, and answered with X-Kiln-Start:
 * none and X-Kiln-Worker: the server's own pid. */

typedef struct local_call {
    server *s;
    int fn;
    uint64_t id;
    uint64_t arrived_ns;
    int64_t arrived_unix_us;
    size_t request_bytes;
} local_call;

/* The http_respond_hook of a local invocation. A client that leaves first
 * is logged as cancelled with status 499 (nothing was answered). */
static size_t local_done(void *arg, int status, size_t body_len, char *headers, size_t cap)
{
    local_call *lc = arg;
    server *s = lc->s;
    uint64_t total_us = (uv_hrtime() - lc->arrived_ns) / 1000;
    if (!headers) status = 499;
    metrics_invocation(&s->m, lc->fn, status, (double)total_us / 1e6, -1, 0);
    invocation_record rec = {
        .function = s->cfg.functions[lc->fn].name,
        .id = lc->id,
        .arrived_unix_us = lc->arrived_unix_us,
        .status = status,
        .cold = -1,
        .cancelled = headers == NULL,
        .worker_pid = (int)getpid(),
        .exec_us = total_us,
        .total_us = total_us,
        .request_bytes = lc->request_bytes,
        .response_bytes = body_len,
    };
    invlog_emit(&rec);
    free(lc);
    if (!headers) return 0;
    int n = snprintf(headers, cap,
                     "X-Kiln-Start: none\r\nX-Kiln-Worker: %d\r\nX-Kiln-Queue-Us: 0\r\n"
                     "X-Kiln-Init-Us: 0\r\nX-Kiln-Exec-Us: %" PRIu64 "\r\n",
                     (int)getpid(), total_us);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Runs a train or models function; `sub` is the path after its name. */
static void invoke_local(server *s, http_conn *c, http_request *req, const fn_config *f,
                         const char *sub)
{
    local_call *lc = calloc(1, sizeof *lc);
    if (!lc) {
        http_respond_error(c, 503, NULL, "out of memory");
        return;
    }
    lc->s = s;
    lc->fn = (int)(f - s->cfg.functions);
    lc->id = scheduler_count_local(s->sched, lc->fn);
    lc->arrived_ns = uv_hrtime();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lc->arrived_unix_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    lc->request_bytes = req->body_len;
    http_set_respond_hook(c, local_done, lc);

    if (f->kind == FN_MODELS) {
        /* reads are invocations (server.auth_invoke); models_route asks
         * for the token itself on every change */
        if (authorized(s, c, req, 0)) models_route(s, c, req, sub);
        return;
    }
    if (*sub && strcmp(sub, "/")) {
        http_respond_error(c, 404, NULL, "function '%s' has no sub-path %.200s", f->name, sub);
        return;
    }
    if (req->method != HTTP_POST) {
        http_respond_error(c, 405, NULL, "function '%s' starts training jobs: use POST", f->name);
        return;
    }
    /* a job changes state, like POST /v1/jobs */
    if (authorized(s, c, req, 1)) jobs_submit(s->jobs, c, req);
}

/* /function/{name}[/sub-path]; `sub` follows the name. Predict and echo
 * functions ignore a sub-path. */
static void invoke(server *s, http_conn *c, http_request *req, const char *fn, size_t fn_len,
                   const char *sub)
{
    const fn_config *f = config_find_function(&s->cfg, fn, fn_len);
    if (f && (f->kind == FN_TRAIN || f->kind == FN_MODELS)) {
        invoke_local(s, c, req, f, sub);
        return;
    }
    if (!authorized(s, c, req, 0)) return;
    invoke_with(s, c, req, fn, fn_len, req->query, req->body, req->body_len);
}

/* The function serving model `name` (len bytes): a predict function whose
 * model is NAME or NAME@VERSION, else a function named NAME. -1 if none. */
static int function_for_model(const server *s, const char *name, size_t len)
{
    for (int i = 0; i < s->cfg.n_functions; i++) {
        const fn_config *f = &s->cfg.functions[i];
        if (f->kind != FN_PREDICT || !f->model) continue;
        size_t ml = strcspn(f->model, "@");
        if (ml == len && !memcmp(f->model, name, len)) return i;
    }
    for (int i = 0; i < s->cfg.n_functions; i++)
        if (s->cfg.functions[i].kind == FN_PREDICT && strlen(s->cfg.functions[i].name) == len &&
            !memcmp(s->cfg.functions[i].name, name, len))
            return i;
    return -1;
}

/* /v2/models/{name}[/versions/{v}][/ready|/infer] (the Open Inference
 * Protocol). `rest` follows "/v2/models/". */
static void kserve_model(server *s, http_conn *c, http_request *req, const char *rest)
{
    size_t nl = strcspn(rest, "/");
    const char *tail = rest + nl;
    if (!strncmp(tail, "/versions/", 10)) {
        size_t vl = strcspn(tail + 10, "/");
        if (vl == 0) {
            http_respond_error(c, 404, NULL, "no version in the path");
            return;
        }
        tail += 10 + vl;
    }
    int i = nl ? function_for_model(s, rest, nl) : -1;
    if (i < 0) {
        http_respond_error(c, 404, NULL, "no model named '%.*s' is served",
                           (int)(nl > 64 ? 64 : nl), rest);
        return;
    }
    const char *fn = s->cfg.functions[i].name;
    int get = req->method == HTTP_GET || req->method == HTTP_HEAD;
    if (!*tail) {
        if (!get) goto method;
        if (!authorized(s, c, req, 0)) return; /* it runs on a worker: an invocation */
        invoke_with(s, c, req, fn, strlen(fn), "kiln_op=metadata", "", 0);
    } else if (!strcmp(tail, "/ready")) {
        if (!get) goto method;
        respond_json(c, 200, NULL, json_pack("{s:s%, s:b}", "name", rest, nl, "ready", 1));
    } else if (!strcmp(tail, "/infer")) {
        if (req->method != HTTP_POST) goto method;
        if (!authorized(s, c, req, 0)) return;
        invoke_with(s, c, req, fn, strlen(fn), req->query, req->body, req->body_len);
    } else {
        http_respond_error(c, 404, NULL, "no route for %.200s", req->path);
    }
    return;
method:
    http_respond_error(c, 405, NULL, "%s is not allowed on %.200s", http_method_str(req->method),
                       req->path);
}

static json_t *function_json(const server *s, int i)
{
    const fn_config *f = &s->cfg.functions[i];
    fn_gauges g;
    scheduler_gauges(s->sched, i, &g);
    return json_pack(
        "{s:s, s:s, s:s?, s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:i, s:I, s:{s:i, s:i, "
        "s:i, s:i, s:i}}",
        "name", f->name, "kind", fn_kind_name(f->kind), "model", f->model, "min_warm", f->min_warm,
        "max_workers", f->max_workers, "concurrency", f->concurrency, "queue_limit", f->queue_limit,
        "idle_timeout_ms", (json_int_t)f->idle_timeout_ms, "timeout_ms", (json_int_t)f->timeout_ms,
        "memory_limit", (json_int_t)f->memory_limit, "threads", f->threads, "invocations",
        (json_int_t)scheduler_invocations(s->sched, i), "workers", "starting", g.starting, "idle",
        g.idle, "busy", g.busy, "stopping", g.stopping, "queued", g.queued);
}

static void list_functions(server *s, http_conn *c)
{
    json_t *a = json_array();
    for (int i = 0; a && i < s->cfg.n_functions; i++) json_array_append_new(a, function_json(s, i));
    respond_json(c, 200, NULL, json_pack("{s:o}", "functions", a));
}

/* OpenFaaS's GET /system/functions shape. */
static void system_functions(server *s, http_conn *c)
{
    json_t *a = json_array();
    for (int i = 0; a && i < s->cfg.n_functions; i++) {
        const fn_config *f = &s->cfg.functions[i];
        int rep = fn_replicas(s, i);
        json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:i, s:i, s:{s:s}}", "name", f->name,
                                           "image", fn_kind_name(f->kind), "invocationCount",
                                           (json_int_t)scheduler_invocations(s->sched, i),
                                           "replicas", rep, "availableReplicas", rep, "labels",
                                           "kiln.kind", fn_kind_name(f->kind)));
    }
    respond_json(c, 200, NULL, a);
}

static void render_metrics(server *s, http_conn *c)
{
    fn_gauges *g = calloc(s->cfg.n_functions ? (size_t)s->cfg.n_functions : 1, sizeof *g);
    if (!g) {
        http_respond_error(c, 503, NULL, "out of memory");
        return;
    }
    for (int i = 0; i < s->cfg.n_functions; i++) scheduler_gauges(s->sched, i, &g[i]);
    buf out = {0};
    metrics_render(&s->m, &s->cfg, g, s->http.n_conns, &out);
    free(g);
    int queued, running;
    jobs_counts(s->jobs, &queued, &running);
    buf_printf(&out,
               "# HELP kiln_jobs Training jobs by state (queued waiting, running training).\n"
               "# TYPE kiln_jobs gauge\n"
               "kiln_jobs{state=\"queued\"} %d\nkiln_jobs{state=\"running\"} %d\n",
               queued, running);
    if (s->st) {
        store_log_stats ls;
        store_log_stats_get(s->st, &ls);
        buf_printf(&out,
                   "# HELP kiln_invocation_log_rows_total Invocation log records: written to "
                   "SQLite, dropped (its queue full), failed (a database error).\n"
                   "# TYPE kiln_invocation_log_rows_total counter\n"
                   "kiln_invocation_log_rows_total{outcome=\"written\"} %" PRIu64 "\n"
                   "kiln_invocation_log_rows_total{outcome=\"dropped\"} %" PRIu64 "\n"
                   "kiln_invocation_log_rows_total{outcome=\"failed\"} %" PRIu64 "\n"
                   "# HELP kiln_invocation_log_queued Invocation log records waiting for the "
                   "writer.\n"
                   "# TYPE kiln_invocation_log_queued gauge\n"
                   "kiln_invocation_log_queued %d\n",
                   ls.written, ls.dropped, ls.failed, ls.queued);
    }
    if (out.oom)
        http_respond_error(c, 503, NULL, "out of memory");
    else
        http_respond(c, 200, NULL, "text/plain; version=0.0.4", out.data, out.len);
    buf_free(&out);
}

void server_route(void *ctx, http_conn *c, http_request *req)
{
    server *s = ctx;
    const char *path = req->path, *rest;
    int get = req->method == HTTP_GET || req->method == HTTP_HEAD;

    if ((rest = after(path, "/function/"))) {
        size_t n = strcspn(rest, "/");
        if (n == 0) {
            http_respond_error(c, 404, NULL, "no function name in the path");
            return;
        }
        invoke(s, c, req, rest, n, rest + n);
        return;
    }
    if ((rest = after(path, "/v1/models")) && (!*rest || *rest == '/')) {
        models_route(s, c, req, rest);
        return;
    }
    if ((rest = after(path, "/v1/jobs")) && (!*rest || *rest == '/')) {
        jobs_route(s->jobs, c, req, rest);
        return;
    }
    if ((rest = after(path, "/v2/models/"))) {
        kserve_model(s, c, req, rest);
        return;
    }
    if (!strcmp(path, "/healthz") || !strcmp(path, "/v2/health/live") ||
        !strcmp(path, "/v2/health/ready")) {
        if (!get) goto method;
        respond_json(c, 200, NULL, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (!strcmp(path, "/v1/functions")) {
        if (!get) goto method;
        list_functions(s, c);
        return;
    }
    if (!strcmp(path, "/system/functions")) {
        if (!get) goto method;
        system_functions(s, c);
        return;
    }
    if (!strcmp(path, "/metrics")) {
        if (!get) goto method;
        render_metrics(s, c);
        return;
    }
    if (!strcmp(path, "/v2")) {
        if (!get) goto method;
        respond_json(
            c, 200, NULL,
            json_pack("{s:s, s:s, s:[]}", "name", "kiln", "version", kiln_version(), "extensions"));
        return;
    }
    http_respond_error(c, 404, NULL, "no route for %s %.200s", http_method_str(req->method), path);
    return;
method:
    http_respond_error(c, 405, NULL, "%s is not allowed on %.200s", http_method_str(req->method),
                       path);
}

/* ---- life cycle -------------------------------------------------------- */

/* The invocation log: one row per finished invocation, batched by the
 * store's writer thread. */
static void log_invocation(void *ctx, const invocation_record *r)
{
    server *s = ctx;
    store_invocation inv = {0};
    snprintf(inv.function, sizeof inv.function, "%s", r->function);
    inv.cold = r->cold; /* 1 cold, 0 warm, -1 none */
    inv.worker = r->worker_pid;
    inv.queue_us = (int64_t)r->queue_us;
    inv.init_us = (int64_t)r->init_us;
    inv.exec_us = (int64_t)r->exec_us;
    inv.status = r->status;
    inv.bytes_in = (int64_t)r->request_bytes;
    inv.bytes_out = (int64_t)r->response_bytes;
    inv.ts = r->arrived_unix_us / 1000;
    store_log_invocation(s->st, &inv);
}

/* NAME[@VERSION] -> the registered version's blob, or -1 (the worker then
 * looks in models/). */
static int resolve_model(void *ctx, const char *model, char *path, size_t len)
{
    server *s = ctx;
    char name[STORE_NAME_MAX + 1];
    const char *at = strchr(model, '@');
    size_t nl = at ? (size_t)(at - model) : strlen(model);
    if (nl == 0 || nl > STORE_NAME_MAX) return -1;
    memcpy(name, model, nl);
    name[nl] = 0;
    if (!store_name_valid(name)) return -1;
    store_version v = {0};
    if (store_version_get(s->st, name, at ? at + 1 : NULL, &v)) return -1;
    int r = snprintf(path, len, "%s", v.path) < (int)len ? 0 : -1;
    store_version_clear(&v);
    return r;
}

static int open_store(server *s)
{
    store_options so;
    store_options_defaults(&so);
    so.data_dir = s->cfg.data_dir;
    so.log_retention_rows = s->cfg.log_retention_rows;
    so.log_retention_days = s->cfg.log_retention_days;
    if (s->cfg.log_batch_rows) so.log_batch_rows = s->cfg.log_batch_rows;
    if (s->cfg.log_flush_ms) so.log_flush_ms = (int)s->cfg.log_flush_ms;
    if (s->cfg.log_queue) so.log_queue_capacity = s->cfg.log_queue;
    store_status st = store_open(&so, &s->st, NULL);
    if (st) {
        fprintf(stderr, "kiln serve: cannot open the store in %s: %s\n", s->cfg.data_dir,
                store_last_error());
        return -1;
    }
    for (int i = 0; i < s->cfg.n_functions; i++) {
        const fn_config *f = &s->cfg.functions[i];
        json_t *j =
            json_pack("{s:i, s:i, s:i, s:i, s:I, s:I, s:I, s:i}", "min_warm", f->min_warm,
                      "max_workers", f->max_workers, "concurrency", f->concurrency, "queue_limit",
                      f->queue_limit, "idle_timeout_ms", (json_int_t)f->idle_timeout_ms,
                      "timeout_ms", (json_int_t)f->timeout_ms, "memory_limit",
                      (json_int_t)f->memory_limit, "threads", f->threads);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (store_function_put(s->st, f->name, fn_kind_name(f->kind), f->model, text))
            fprintf(stderr, "kiln serve: store: function %s: %s\n", f->name, store_last_error());
        free(text);
    }
    invlog_set_sink(log_invocation, s);
    return 0;
}

/* Requests in progress finish (up to DRAIN_MS) before workers stop. */
#define DRAIN_MS 10000

static void stop_now(server *s)
{
    if (s->stopping == 2) return;
    s->stopping = 2;
    uv_timer_stop(&s->drain);
    uv_close((uv_handle_t *)&s->drain, NULL);
    sampler_stop(s->sampler);
    s->sampler = NULL;
    http_server_stop(&s->http);
    scheduler_stop(s->sched);
    jobs_stop(s->jobs);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void on_drain_tick(uv_timer_t *t)
{
    server *s = t->data;
    if ((http_server_busy(&s->http) == 0 && s->pending_work == 0) ||
        uv_now(&s->loop) >= s->drain_until)
        stop_now(s);
}

/* The first SIGINT/SIGTERM drains, a second one stops at once. */
static void on_signal(uv_signal_t *h, int signum)
{
    server *s = h->data;
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (s->stopping) {
        fprintf(stderr, "kiln serve: %s again, stopping now\n", name);
        stop_now(s);
        return;
    }
    s->stopping = 1;
    fprintf(stderr, "kiln serve: %s, finishing requests in progress\n", name);
    http_server_drain(&s->http);
    s->drain_until = uv_now(&s->loop) + DRAIN_MS;
    uv_timer_start(&s->drain, on_drain_tick, 0, 20);
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static int set_listen_port(server_config *cfg, int port)
{
    const char *colon = strrchr(cfg->listen, ':');
    if (!colon) return -1;
    char *nl = malloc((size_t)(colon - cfg->listen) + 8);
    if (!nl) return -1;
    sprintf(nl, "%.*s:%d", (int)(colon - cfg->listen), cfg->listen, port);
    free(cfg->listen);
    cfg->listen = nl;
    return 0;
}

static int replace(char **dst, const char *v)
{
    char *d = strdup(v);
    if (!d) return -1;
    free(*dst);
    *dst = d;
    return 0;
}

/* The sampler's processes: the server, then the scheduler's. */
static void list_processes(void *ctx, sampler_each_fn each, void *each_ctx)
{
    server *s = ctx;
    each(each_ctx, "server", (int)getpid());
    scheduler_each_process(s->sched, each, each_ctx);
}

static int start_sampler(server *s, char *err, size_t errlen)
{
    if (!s->cfg.sample_interval_ms) return 0;
    const char *file = s->cfg.sample_file ? s->cfg.sample_file : "cpu.csv";
    char path[4096];
    if (file[0] == '/')
        snprintf(path, sizeof path, "%s", file);
    else if (snprintf(path, sizeof path, "%s/%s", s->cfg.data_dir, file) >= (int)sizeof path) {
        snprintf(err, errlen, "server.sample.file: the path is too long");
        return -1;
    }
    char why[512];
    s->sampler = sampler_start(&s->loop, path, s->cfg.sample_interval_ms, s->cfg.sample_pss,
                               list_processes, s, why, sizeof why);
    if (!s->sampler) {
        snprintf(err, errlen, "server.sample: %s", why);
        return -1;
    }
    return 0;
}

int serve_run(const serve_options *o)
{
    server *s = calloc(1, sizeof *s);
    char err[1024];
    if (!s) {
        fprintf(stderr, "kiln serve: out of memory\n");
        return 1;
    }
    config_defaults(&s->cfg);
    int r = o->config_path ? config_load_file(&s->cfg, o->config_path, err, sizeof err)
                           : config_parse(&s->cfg, kiln_default_config, strlen(kiln_default_config),
                                          "(built-in config/default.yaml)", err, sizeof err);
    if (r) {
        fprintf(stderr, "kiln serve: %s\n", err);
        free(s);
        return 1;
    }
    if ((!s->cfg.listen && replace(&s->cfg.listen, "127.0.0.1:8080")) ||
        (!s->cfg.data_dir && replace(&s->cfg.data_dir, "./var")) ||
        (o->listen && replace(&s->cfg.listen, o->listen)) ||
        (o->data_dir && replace(&s->cfg.data_dir, o->data_dir)) ||
        (o->port >= 0 && set_listen_port(&s->cfg, o->port))) {
        fprintf(stderr, "kiln serve: out of memory\n");
        config_free(&s->cfg);
        free(s);
        return 1;
    }
    int rc = 1;
    char exe[4096];
    size_t exe_len = sizeof exe;
    if (uv_exepath(exe, &exe_len)) {
        fprintf(stderr, "kiln serve: cannot find the kiln executable for workers\n");
        goto out_cfg;
    }
    if (s->cfg.user) {
        errno = 0;
        if (geteuid() != 0)
            fprintf(stderr,
                    "kiln serve: not running as root: workers keep this user (server.user "
                    "'%s' is not used)\n",
                    s->cfg.user);
        else if (!getpwnam(s->cfg.user)) {
            fprintf(stderr, "kiln serve: server.user '%s': %s\n", s->cfg.user,
                    errno ? strerror(errno) : "no such user");
            goto out_cfg;
        }
    }
    if (mkdirs(s->cfg.data_dir)) {
        fprintf(stderr, "kiln serve: cannot create data directory %s: %s\n", s->cfg.data_dir,
                strerror(errno));
        goto out_cfg;
    }
    if (s->cfg.auth) {
        int created;
        if (store_token_load(s->cfg.data_dir, s->token, &created)) {
            fprintf(stderr, "kiln serve: API token: %s\n", store_last_error());
            goto out_cfg;
        }
        if (created)
            fprintf(stderr,
                    "kiln serve: new API token (shown once; kept in %s/token, mode 0600):\n%s\n",
                    s->cfg.data_dir, s->token);
    }
    kiln_init();
    if (open_store(s)) goto out_cfg;
    if (metrics_init(&s->m, s->cfg.n_functions)) {
        fprintf(stderr, "kiln serve: out of memory\n");
        goto out_cfg;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&s->loop);
    s->sched = scheduler_create(&s->loop, &s->cfg, &s->m, exe);
    if (!s->sched) {
        fprintf(stderr, "kiln serve: out of memory\n");
        goto out_loop;
    }
    scheduler_set_model_resolver(s->sched, resolve_model, s);
    if (!(s->jobs = jobs_create(s, exe))) goto out_loop;
    char bound[128];
    if (http_server_start(&s->http, &s->loop, &s->cfg, &s->m, s->cfg.listen, server_route, s, bound,
                          sizeof bound, err, sizeof err)) {
        fprintf(stderr, "kiln serve: %s\n", err);
        goto out_loop;
    }
    s->sigint.data = s->sigterm.data = s->drain.data = s;
    uv_timer_init(&s->loop, &s->drain);
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    scheduler_start(s->sched);
    if (start_sampler(s, err, sizeof err)) {
        fprintf(stderr, "kiln serve: %s\n", err);
        stop_now(s); /* out_loop runs the loop until the handles closed */
        goto out_loop;
    }
    printf("kiln serve: listening on http://%s (%d function%s, data in %s)\n", bound,
           s->cfg.n_functions, s->cfg.n_functions == 1 ? "" : "s", s->cfg.data_dir);
    fflush(stdout);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    rc = 0;
out_loop:
    if (rc) {
        /* Close whatever was opened before the failure. */
        if (s->sched) scheduler_stop(s->sched);
        jobs_stop(s->jobs);
        uv_run(&s->loop, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(&s->loop)) fprintf(stderr, "kiln serve: handles left open at exit\n");
    scheduler_destroy(s->sched);
    jobs_destroy(s->jobs);
    metrics_free(&s->m);
out_cfg:
    invlog_set_sink(NULL, NULL);
    store_close(s->st);
    config_free(&s->cfg);
    free(s);
    return rc;
}
