/*
 * The model manager's HTTP API over the store:
 *   GET    /v1/models                               list
 *   POST   /v1/models              {"name": N}      create (no versions); an optional
 *                                                   "metadata": {...} is the model's own
 *   PUT    /v1/models/N            {"metadata": {}} create, or replace its metadata
 *   GET    /v1/models/N                             the model, its metadata and versions
 *   DELETE /v1/models/N                             the model and its versions
 *   POST   /v1/models/N/versions   body = weights   upload as the next version
 *   PUT    /v1/models/N/versions/V body = weights   upload as version V
 *   GET    /v1/models/N/versions/V                  a version's record ("latest" works)
 *   GET    /v1/models/N/versions/V/weights          download the .kiln file
 *   DELETE /v1/models/N/versions/V
 * Weights are a .kiln file (plain or compressed) or an ONNX model; either is
 * opened (validated) and stored as a plain .kiln. Changes need the bearer
 * token. Reads are short and run on the loop; writes (fsync) and model
 * validation run on libuv's thread pool. The operations themselves are in
 * models_ops.c (`kiln models --local` runs them too).
 */
#include "models_ops.h"
#include "server_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Answers an operation's result. */
static void respond(http_conn *c, int status, models_op op, models_res *res)
{
    if (status >= 400)
        http_respond_error(c, status, NULL, "%s", res->error);
    else if (op == MODELS_DOWNLOAD)
        http_respond(c, status, NULL, "application/octet-stream", res->data, res->data_len);
    else if (res->out)
        respond_json(c, status, NULL, res->out), res->out = NULL;
    else
        http_respond(c, status, NULL, NULL, "", 0);
    json_decref(res->out);
    free(res->data);
}

/* A read: short, run on the loop. */
static void run_now(server *s, http_conn *c, models_op op, const char *model, const char *version)
{
    models_req q = {.st = s->st, .model = model, .version = version};
    models_res res;
    int status = models_do(op, &q, &res);
    respond(c, status, op, &res);
}

/* ---- work on the thread pool ------------------------------------------- */

typedef struct work {
    uv_work_t req;
    server *s;
    http_conn *c; /* NULL once the client went away */
    models_op op;
    char model[STORE_NAME_MAX + 1], version[STORE_NAME_MAX + 1];
    char *body; /* a copy: the connection may close while this runs */
    size_t body_len;
    char *metadata; /* MODELS_CREATE, MODELS_PUT: JSON text or NULL */
    int status;
    models_res res;
} work;

static void work_run(uv_work_t *r)
{
    work *w = r->data;
    models_req q = {.st = w->s->st,
                    .data_dir = w->s->cfg.data_dir,
                    .max_model_bytes = w->s->cfg.max_model_bytes,
                    .model = w->model,
                    .version = w->version,
                    .metadata = w->metadata,
                    .body = w->body,
                    .body_len = w->body_len};
    w->status = models_do(w->op, &q, &w->res);
}

static void work_done(uv_work_t *r, int status)
{
    work *w = r->data;
    (void)status;
    w->s->pending_work--;
    if (w->c) {
        respond(w->c, w->status, w->op, &w->res);
    } else {
        json_decref(w->res.out);
        free(w->res.data);
    }
    free(w->body);
    free(w->metadata);
    free(w);
}

static void work_cancel(void *arg)
{
    ((work *)arg)->c = NULL;
}

/* Runs op on the thread pool; `metadata` (malloc'd JSON text or NULL)
 * becomes the work's. */
static void submit(server *s, http_conn *c, http_request *req, models_op op, const char *model,
                   const char *version, char *metadata)
{
    work *w = calloc(1, sizeof *w);
    if (!w) {
        free(metadata);
        http_respond_error(c, 503, NULL, "out of memory");
        return;
    }
    w->metadata = metadata;
    w->s = s;
    w->c = c;
    w->op = op;
    w->req.data = w;
    snprintf(w->model, sizeof w->model, "%s", model);
    snprintf(w->version, sizeof w->version, "%s", version ? version : "");
    if (op == MODELS_UPLOAD) {
        w->body = malloc(req->body_len ? req->body_len : 1);
        if (!w->body) {
            free(w->metadata);
            free(w);
            http_respond_error(c, 503, NULL, "out of memory");
            return;
        }
        memcpy(w->body, req->body, req->body_len);
        w->body_len = req->body_len;
    }
    if (uv_queue_work(&s->loop, &w->req, work_run, work_done)) {
        free(w->body);
        free(w->metadata);
        free(w);
        http_respond_error(c, 503, NULL, "cannot queue the operation");
        return;
    }
    s->pending_work++;
    http_set_pending(c, work_cancel, w);
}

/* ---- routes ------------------------------------------------------------- */

/* The "metadata" member of a request body j as JSON text in *out (NULL
 * when absent or null). 0, or -1 after answering 400/413. */
static int metadata_of(http_conn *c, json_t *j, char **out)
{
    *out = NULL;
    json_t *m = json_object_get(j, "metadata");
    if (!m || json_is_null(m)) return 0;
    if (!json_is_object(m)) {
        http_respond_error(c, 400, NULL, "metadata: expected a JSON object");
        return -1;
    }
    *out = json_dumps(m, JSON_COMPACT);
    if (!*out) {
        http_respond_error(c, 503, NULL, "out of memory");
        return -1;
    }
    if (strlen(*out) > STORE_METADATA_MAX) {
        free(*out);
        *out = NULL;
        http_respond_error(c, 413, NULL, "metadata: more than %d bytes as JSON",
                           STORE_METADATA_MAX);
        return -1;
    }
    return 0;
}

static void create_model(server *s, http_conn *c, http_request *req)
{
    json_error_t je;
    json_t *j = json_loadb(req->body, req->body_len, 0, &je);
    const char *name = json_string_value(json_object_get(j, "name"));
    char *meta;
    if (!name || !store_name_valid(name)) {
        json_decref(j);
        http_respond_error(c, 400, NULL,
                           "expected {\"name\": NAME} with NAME of 1-64 A-Z a-z 0-9 . _ - "
                           "(not starting with .)");
        return;
    }
    if (!metadata_of(c, j, &meta)) submit(s, c, req, MODELS_CREATE, name, NULL, meta);
    json_decref(j);
}

/* PUT /v1/models/N {"metadata": {...}}: creates N or replaces its metadata. */
static void put_model(server *s, http_conn *c, http_request *req, const char *name)
{
    json_error_t je;
    json_t *j = json_loadb(req->body, req->body_len, 0, &je);
    char *meta;
    if (!json_is_object(j)) {
        json_decref(j);
        http_respond_error(c, 400, NULL, "expected {\"metadata\": {...}}");
        return;
    }
    if (!metadata_of(c, j, &meta)) submit(s, c, req, MODELS_PUT, name, NULL, meta);
    json_decref(j);
}

/* Copies path segment `seg` (up to '/' or the end) into out; 0 when it is a
 * valid store name (or "latest" when allow_latest). */
static int segment(const char *seg, char *out, size_t outlen, int allow_latest)
{
    size_t n = strcspn(seg, "/");
    if (n == 0 || n >= outlen) return -1;
    memcpy(out, seg, n);
    out[n] = 0;
    if (allow_latest && !strcmp(out, "latest")) return 0;
    return store_name_valid(out) ? 0 : -1;
}

void models_route(server *s, http_conn *c, http_request *req, const char *rest)
{
    int m = req->method;
    int get = m == HTTP_GET || m == HTTP_HEAD;
    char name[STORE_NAME_MAX + 1], version[STORE_NAME_MAX + 1];
    if (!s->st) {
        http_respond_error(c, 503, NULL, "the model store is not open");
        return;
    }
    if (!*rest || !strcmp(rest, "/")) {
        if (get)
            run_now(s, c, MODELS_LIST, NULL, NULL);
        else if (m == HTTP_POST) {
            if (authorized(s, c, req, 1)) create_model(s, c, req);
        } else
            goto method;
        return;
    }
    rest++; /* past '/' */
    if (segment(rest, name, sizeof name, 0)) {
        http_respond_error(c, 400, NULL,
                           "a model name is 1-64 of A-Z a-z 0-9 . _ - (not starting with .)");
        return;
    }
    const char *tail = rest + strlen(name);
    if (!*tail) {
        if (get)
            run_now(s, c, MODELS_GET, name, NULL);
        else if (m == HTTP_PUT) {
            if (authorized(s, c, req, 1)) put_model(s, c, req, name);
        } else if (m == HTTP_DELETE) {
            if (authorized(s, c, req, 1)) submit(s, c, req, MODELS_DELETE, name, NULL, NULL);
        } else
            goto method;
        return;
    }
    if (!strcmp(tail, "/versions")) {
        if (m != HTTP_POST) goto method;
        if (authorized(s, c, req, 1)) submit(s, c, req, MODELS_UPLOAD, name, NULL, NULL);
        return;
    }
    if (strncmp(tail, "/versions/", 10) || segment(tail + 10, version, sizeof version, 1)) {
        http_respond_error(c, 404, NULL, "no route for %.200s", req->path);
        return;
    }
    tail += 10 + strlen(version);
    if (!*tail) {
        if (get)
            run_now(s, c, MODELS_VERSION_GET, name, version);
        else if (m == HTTP_PUT) {
            if (!strcmp(version, "latest")) {
                http_respond_error(c, 400, NULL, "'latest' is not a version name");
                return;
            }
            if (authorized(s, c, req, 1)) submit(s, c, req, MODELS_UPLOAD, name, version, NULL);
        } else if (m == HTTP_DELETE) {
            if (authorized(s, c, req, 1))
                submit(s, c, req, MODELS_VERSION_DELETE, name, version, NULL);
        } else
            goto method;
        return;
    }
    if (!strcmp(tail, "/weights")) {
        if (!get) goto method;
        submit(s, c, req, MODELS_DOWNLOAD, name, version, NULL);
        return;
    }
    http_respond_error(c, 404, NULL, "no route for %.200s", req->path);
    return;
method:
    http_respond_error(c, 405, NULL, "%s is not allowed on %.200s", http_method_str(m), req->path);
}
