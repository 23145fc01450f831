/*
 * libFuzzer target: the HTTP request path of `kiln serve` - libhttp-parser
 * with the server's limits (src/server/http.c), the router (server.c) and
 * the model API (models_api.c, on a real store in a temporary directory) -
 * driven through a connection without a socket (http_conn_open_detached).
 *
 * The input is the byte stream of one client connection (pipelined requests
 * allowed). Invocations go to a stand-in scheduler that answers each one
 * with its body after the handler returns, as a worker would, so no worker
 * process is started.
 *
 * KILN_FUZZ_VERBOSE=1 prints every response.
 *
 * Checked beyond memory safety: every response starts with a status line,
 * and no request is left without an answer once nothing is pending.
 */
#include "http.h"
#include "kiln.h"
#include "scheduler.h"
#include "server_internal.h"
#include "store.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The bearer token the seeds use. */
#define FUZZ_TOKEN "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static const char fuzz_config[] = "server:\n"
                                  "  auth: true\n"
                                  "  limits:\n"
                                  "    max_header_bytes: 2KiB\n"
                                  "    max_body_bytes: 256KiB\n"
                                  "    max_json_depth: 16\n"
                                  "functions:\n"
                                  "  - name: echo\n"
                                  "    kind: echo\n"
                                  "  - name: models\n"
                                  "    kind: models\n"
                                  "  - name: fashion-mnist\n"
                                  "    kind: predict\n"
                                  "    model: fashion-mnist\n";

/* ---- a scheduler without workers ---------------------------------------- */

struct invocation {
    invoke_done_fn done; /* NULL once cancelled */
    void *arg;
    const char *body;
    size_t body_len;
    struct invocation *next;
};

struct scheduler {
    const server_config *cfg;
    struct invocation *pending;
    uint64_t invocations;
};

scheduler *scheduler_create(uv_loop_t *loop, const server_config *cfg, metrics *m, const char *exe)
{
    (void)loop, (void)m, (void)exe;
    scheduler *s = calloc(1, sizeof *s);
    if (s) s->cfg = cfg;
    return s;
}

void scheduler_set_model_resolver(scheduler *s, model_resolver fn, void *ctx)
{
    (void)s, (void)fn, (void)ctx;
}

int scheduler_start(scheduler *s)
{
    (void)s;
    return 0;
}

sched_rc scheduler_invoke(scheduler *s, const char *fn, size_t fn_len, const char *ctype,
                          const char *query, const char *body, size_t body_len, invoke_done_fn done,
                          void *arg, invocation **out)
{
    (void)ctype, (void)query;
    if (!config_find_function(s->cfg, fn, fn_len)) return SCHED_NOT_FOUND;
    invocation *inv = calloc(1, sizeof *inv);
    if (!inv) return SCHED_NO_MEMORY;
    inv->done = done;
    inv->arg = arg;
    inv->body = body;
    inv->body_len = body_len;
    inv->next = s->pending;
    s->pending = inv;
    s->invocations++;
    *out = inv;
    return SCHED_OK;
}

void scheduler_cancel(invocation *inv)
{
    inv->done = NULL;
}

const char *scheduler_last_error(const scheduler *s)
{
    (void)s;
    return "no worker";
}

void scheduler_gauges(const scheduler *s, int i, fn_gauges *g)
{
    (void)s, (void)i;
    memset(g, 0, sizeof *g);
}

uint64_t scheduler_invocations(const scheduler *s, int i)
{
    (void)i;
    return s->invocations;
}

uint64_t scheduler_count_local(scheduler *s, int i)
{
    (void)i;
    return ++s->invocations;
}

void scheduler_stop(scheduler *s)
{
    (void)s;
}

void scheduler_each_process(const scheduler *s, void (*each)(void *, const char *, int), void *ctx)
{
    (void)s, (void)each, (void)ctx; /* no worker processes */
}

void scheduler_destroy(scheduler *s)
{
    free(s);
}

/* Answers every invocation still wanted, as workers would. 1 if any ran. */
static int scheduler_complete(scheduler *s)
{
    int ran = 0;
    while (s->pending) {
        invocation *inv = s->pending;
        s->pending = inv->next;
        if (inv->done) {
            invoke_result r = {.status = 200,
                               .ctype = "application/octet-stream",
                               .ctype_len = 24,
                               .body = inv->body,
                               .body_len = inv->body_len,
                               .cold = 0};
            inv->done(inv->arg, &r);
            ran = 1;
        }
        free(inv);
    }
    return ran;
}

/* ---- the server --------------------------------------------------------- */

static server *srv;
static char data_dir[256];

static void setup(void)
{
    char err[512];
    srv = calloc(1, sizeof *srv);
    if (!srv) abort();
    config_defaults(&srv->cfg);
    if (config_parse(&srv->cfg, fuzz_config, strlen(fuzz_config), "fuzz config", err, sizeof err)) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    /* libFuzzer may end without running atexit handlers: run-fuzz points
     * TMPDIR at a directory it removes afterwards. */
    const char *tmp = getenv("TMPDIR");
    if (!tmp) tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(data_dir, sizeof data_dir, "%s/kiln-fuzz-http-XXXXXX", tmp);
    if (!mkdtemp(data_dir)) abort();
    free(srv->cfg.data_dir);
    srv->cfg.data_dir = strdup(data_dir);
    memcpy(srv->token, FUZZ_TOKEN, sizeof FUZZ_TOKEN);
    kiln_init();
    store_options so;
    store_options_defaults(&so);
    so.data_dir = data_dir;
    if (store_open(&so, &srv->st, NULL)) {
        fprintf(stderr, "fuzz_http: store: %s\n", store_last_error());
        abort();
    }
    if (metrics_init(&srv->m, srv->cfg.n_functions)) abort();
    uv_loop_init(&srv->loop);
    srv->sched = scheduler_create(&srv->loop, &srv->cfg, &srv->m, "kiln");
    /* Training jobs the fuzzer manages to submit fail at once: the
     * executable they would run does not exist. */
    if (!(srv->jobs = jobs_create(srv, "/nonexistent/kiln"))) abort();
    http_server_init(&srv->http, &srv->loop, &srv->cfg, &srv->m, server_route, srv);
}

static void teardown(void)
{
    char cmd[300];
    store_close(srv->st);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data_dir);
    if (system(cmd)) fprintf(stderr, "fuzz_http: could not remove %s\n", data_dir);
}

typedef struct output {
    size_t responses;
} output;

static void sink(void *arg, const char *data, size_t len)
{
    output *o = arg;
    if (len == 25 && !memcmp(data, "HTTP/1.1 100 Continue\r\n\r\n", 25)) return;
    int status;
    if (len < 12 || memcmp(data, "HTTP/1.1 ", 9) || sscanf(data + 9, "%3d", &status) != 1 ||
        status < 200 || status > 599) {
        fprintf(stderr, "fuzz_http: not a response: %.*s\n", (int)(len > 64 ? 64 : len), data);
        abort();
    }
    o->responses++;
    if (getenv("KILN_FUZZ_VERBOSE")) fprintf(stderr, "%.*s\n", (int)len, data);
}

/* Runs what the request handlers started until nothing is left to do. */
static void settle(http_conn *c)
{
    for (;;) {
        while (srv->pending_work) uv_run(&srv->loop, UV_RUN_ONCE);
        if (scheduler_complete(srv->sched)) continue;
        if (!http_conn_flush(c)) break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv) {
        setup();
        atexit(teardown);
    }
    output out = {0};
    http_conn *c = http_conn_open_detached(&srv->http, sink, &out);
    if (!c) return 0;
    /* Odd lengths arrive in 7-byte reads, to cross every parser state. */
    size_t step = size % 2 ? 7 : size;
    for (size_t at = 0; at < size; at += step) {
        size_t n = size - at < step ? size - at : step;
        if (http_conn_feed(c, (const char *)data + at, n)) break;
        settle(c);
    }
    settle(c);
    if (http_conn_state(c) == HTTP_CONN_PROCESSING) {
        fprintf(stderr, "fuzz_http: a request was left without an answer\n");
        abort();
    }
    http_conn_close_detached(c);
    uv_run(&srv->loop, UV_RUN_NOWAIT);
    return 0;
}
