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
 * validation run on libuv's thread pool.
 */
#include "kiln.h"
#include "server_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int store_http_status(store_status st)
{
    switch (st) {
    case STORE_OK:
        return 200;
    case STORE_INVALID:
        return 400;
    case STORE_NOT_FOUND:
        return 404;
    case STORE_EXISTS:
        return 409;
    case STORE_TOO_LARGE:
        return 413;
    case STORE_BUSY:
        return 503;
    case STORE_NOMEM:
        return 503;
    case STORE_NOSPACE:
        return 507;
    default:
        return 500;
    }
}

static void respond_store_error(http_conn *c, store_status st)
{
    http_respond_error(c, store_http_status(st), NULL, "%s", store_last_error());
}

static json_t *version_json(const store_version *v)
{
    json_t *meta = v->metadata ? json_loads(v->metadata, 0, NULL) : NULL;
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o}", "model", v->model, "version", v->version,
                     "sha256", v->sha256, "size", (json_int_t)v->size, "created",
                     (json_int_t)v->created, "metadata", meta ? meta : json_null());
}

/* ---- work on the thread pool ------------------------------------------- */

typedef enum work_op {
    OP_CREATE,
    OP_PUT_MODEL,
    OP_DELETE_MODEL,
    OP_DELETE_VERSION,
    OP_UPLOAD,
    OP_DOWNLOAD
} work_op;

typedef struct work {
    uv_work_t req;
    server *s;
    http_conn *c; /* NULL once the client went away */
    work_op op;
    char model[STORE_NAME_MAX + 1], version[STORE_NAME_MAX + 1];
    char *body;     /* a copy: the connection may close while this runs */
    char *metadata; /* OP_CREATE, OP_PUT_MODEL: JSON text or NULL */
    size_t body_len;
    /* results */
    int status;
    char error[512];
    json_t *out;
    char *data; /* OP_DOWNLOAD: the file */
    size_t data_len;
} work;

static void work_fail(work *w, int status, const char *msg)
{
    w->status = status;
    snprintf(w->error, sizeof w->error, "%s", msg);
}

static void work_store_fail(work *w, store_status st)
{
    work_fail(w, store_http_status(st), store_last_error());
}

static int read_file(const char *path, char **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) return -1;
    if (fstat(fd, &st) || !(*data = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, *data + got, (size_t)st.st_size - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            free(*data);
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return 0;
}

static uint64_t le(const char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | (unsigned char)p[i];
    return v;
}

/* What a .kiln upload expands to when opened: the sum of its sections'
 * expanded sizes (model_file.h: a 64-byte header with the section count at
 * 20 and the table offset at 32; 40-byte entries with the expanded size at
 * 24). Anything else (ONNX, or a table outside the body, which the open
 * refuses) counts as its own length. */
static uint64_t upload_expanded_bytes(const char *body, size_t len)
{
    if (len < 64 || memcmp(body, "KILNMODL", 8)) return len;
    uint64_t count = le(body + 20, 4);
    uint64_t table = le(body + 32, 8), total = 0;
    if (count > 64 || table > len || count * 40 > len - table) return len;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t exp = le(body + table + i * 40 + 24, 8);
        total = exp > UINT64_MAX - total ? UINT64_MAX : total + exp;
    }
    return total > len ? total : len;
}

static int out_of_space(int err)
{
    return err == ENOSPC || err == EDQUOT;
}

/* Validates uploaded weights (.kiln or ONNX) and stores them as a plain .kiln. */
static void do_upload(work *w)
{
    uint64_t expanded = upload_expanded_bytes(w->body, w->body_len);
    if (expanded > w->s->cfg.max_model_bytes) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the model expands to %llu bytes, more than server.limits.max_model_bytes (%llu)",
                 (unsigned long long)expanded, (unsigned long long)w->s->cfg.max_model_bytes);
        work_fail(w, 413, msg);
        return;
    }
    char in[4200], out[4210];
    /* In the store's temporary directory, which is emptied at every start:
     * a crash mid-upload leaves nothing behind. */
    snprintf(in, sizeof in, "%s/blobs/tmp/upload-XXXXXX", w->s->cfg.data_dir);
    int fd = mkstemp(in);
    if (fd < 0) {
        work_fail(w, 500, "cannot create a temporary file in the data directory");
        return;
    }
    size_t done = 0;
    while (done < w->body_len) {
        ssize_t r = write(fd, w->body + done, w->body_len - done);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            break;
        }
        done += (size_t)r;
    }
    close(fd);
    if (done != w->body_len) {
        int e = errno;
        unlink(in);
        work_fail(w, out_of_space(e) ? 507 : 500,
                  out_of_space(e) ? "cannot write the upload: no space left in the data dir"
                                  : "cannot write the upload in the data dir");
        return;
    }
    kiln_model *m = NULL;
    const char *format = "kiln";
    kiln_status ks = kiln_model_open(in, 0, &m);
    char kiln_err[200];
    snprintf(kiln_err, sizeof kiln_err, "%s", kiln_last_error());
    if (ks) {
        format = "onnx";
        ks = kiln_model_import_onnx(in, &m);
    }
    if (ks) {
        char msg[512];
        snprintf(msg, sizeof msg, "not a valid .kiln model (%s) nor ONNX model (%s)", kiln_err,
                 kiln_last_error());
        unlink(in);
        work_fail(w, 400, msg);
        return;
    }
    snprintf(out, sizeof out, "%s.kiln", in);
    ks = kiln_model_save(m, out, 0);
    json_t *meta =
        json_pack("{s:s, s:i, s:i, s:I, s:I}", "format", format, "inputs",
                  kiln_model_input_count(m), "outputs", kiln_model_output_count(m), "params",
                  (json_int_t)kiln_model_param_count(m), "flops", (json_int_t)kiln_model_flops(m));
    kiln_model_free(m);
    unlink(in);
    char *data = NULL;
    size_t len = 0;
    if (ks || read_file(out, &data, &len)) {
        int full = out_of_space(errno) || strstr(kiln_last_error(), strerror(ENOSPC));
        unlink(out);
        json_decref(meta);
        work_fail(w, full ? 507 : 500,
                  full ? "cannot write the converted model: no space left in the data dir"
                       : "cannot write the converted model in the data dir");
        return;
    }
    unlink(out);
    char *meta_text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    store_version v = {0};
    store_status st = store_version_put(w->s->st, w->model, w->version[0] ? w->version : NULL, data,
                                        len, meta_text, &v);
    free(data);
    free(meta_text);
    if (st) {
        work_store_fail(w, st);
        return;
    }
    w->status = 201;
    w->out = version_json(&v);
    store_version_clear(&v);
}

static void work_run(uv_work_t *r)
{
    work *w = r->data;
    store *st = w->s->st;
    store_status ss;
    w->status = 200;
    switch (w->op) {
    case OP_CREATE:
    case OP_PUT_MODEL: {
        int created = 1;
        if (w->op == OP_CREATE && !w->metadata)
            ss = store_model_create(st, w->model);
        else
            ss = store_model_put(st, w->model, w->metadata, w->op == OP_CREATE, &created);
        if (ss) {
            work_store_fail(w, ss);
            break;
        }
        w->status = created ? 201 : 200;
        store_model m = {0};
        if ((ss = store_model_get(st, w->model, &m))) { /* deleted meanwhile */
            work_store_fail(w, ss);
            break;
        }
        json_t *meta = w->metadata ? json_loads(w->metadata, 0, NULL) : NULL;
        w->out = json_pack("{s:s, s:I, s:i, s:s?, s:o}", "name", m.name, "created",
                           (json_int_t)m.created, "versions", m.n_versions, "latest",
                           m.latest[0] ? m.latest : NULL, "metadata", meta ? meta : json_null());
        break;
    }
    case OP_DELETE_MODEL:
        if ((ss = store_model_delete(st, w->model)))
            work_store_fail(w, ss);
        else
            w->status = 204;
        break;
    case OP_DELETE_VERSION:
        if ((ss = store_version_delete(st, w->model, w->version)))
            work_store_fail(w, ss);
        else
            w->status = 204;
        break;
    case OP_UPLOAD:
        do_upload(w);
        break;
    case OP_DOWNLOAD: {
        store_version v = {0};
        if ((ss = store_version_get(st, w->model, w->version, &v))) {
            work_store_fail(w, ss);
            break;
        }
        if (read_file(v.path, &w->data, &w->data_len)) work_fail(w, 500, "cannot read the blob");
        store_version_clear(&v);
        break;
    }
    }
}

static void work_done(uv_work_t *r, int status)
{
    work *w = r->data;
    (void)status;
    w->s->pending_work--;
    if (w->c) {
        if (w->status >= 400)
            http_respond_error(w->c, w->status, NULL, "%s", w->error);
        else if (w->op == OP_DOWNLOAD)
            http_respond(w->c, 200, NULL, "application/octet-stream", w->data, w->data_len);
        else if (w->out)
            respond_json(w->c, w->status, NULL, w->out), w->out = NULL;
        else
            http_respond(w->c, w->status, NULL, NULL, "", 0);
    }
    json_decref(w->out);
    free(w->data);
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
static void submit(server *s, http_conn *c, http_request *req, work_op op, const char *model,
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
    if (op == OP_UPLOAD) {
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

static void list_models(server *s, http_conn *c)
{
    store_model *ms = NULL;
    int n = 0;
    store_status st = store_model_list(s->st, &ms, &n);
    if (st) {
        respond_store_error(c, st);
        return;
    }
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s, s:I, s:i, s:s?}", "name", ms[i].name, "created",
                                           (json_int_t)ms[i].created, "versions", ms[i].n_versions,
                                           "latest", ms[i].latest[0] ? ms[i].latest : NULL));
    free(ms);
    respond_json(c, 200, NULL, json_pack("{s:o}", "models", a));
}

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
    if (!metadata_of(c, j, &meta)) submit(s, c, req, OP_CREATE, name, NULL, meta);
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
    if (!metadata_of(c, j, &meta)) submit(s, c, req, OP_PUT_MODEL, name, NULL, meta);
    json_decref(j);
}

static void get_model(server *s, http_conn *c, const char *name)
{
    store_model m;
    store_version *vs = NULL;
    int n = 0;
    char *meta_text = NULL;
    store_status st = store_model_get(s->st, name, &m);
    if (!st) st = store_model_metadata(s->st, name, &meta_text);
    if (!st) st = store_version_list(s->st, name, &vs, &n);
    if (st) {
        free(meta_text);
        respond_store_error(c, st);
        return;
    }
    json_t *meta = meta_text ? json_loads(meta_text, 0, NULL) : NULL;
    free(meta_text);
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, version_json(&vs[i]));
    store_versions_free(vs, n);
    respond_json(c, 200, NULL,
                 json_pack("{s:s, s:I, s:s?, s:o, s:o}", "name", m.name, "created",
                           (json_int_t)m.created, "latest", m.latest[0] ? m.latest : NULL,
                           "metadata", meta ? meta : json_null(), "versions", a));
}

static void get_version(server *s, http_conn *c, const char *name, const char *version)
{
    store_version v = {0};
    store_status st = store_version_get(s->st, name, version, &v);
    if (st) {
        respond_store_error(c, st);
        return;
    }
    respond_json(c, 200, NULL, version_json(&v));
    store_version_clear(&v);
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
            list_models(s, c);
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
            get_model(s, c, name);
        else if (m == HTTP_PUT) {
            if (authorized(s, c, req, 1)) put_model(s, c, req, name);
        } else if (m == HTTP_DELETE) {
            if (authorized(s, c, req, 1)) submit(s, c, req, OP_DELETE_MODEL, name, NULL, NULL);
        } else
            goto method;
        return;
    }
    if (!strcmp(tail, "/versions")) {
        if (m != HTTP_POST) goto method;
        if (authorized(s, c, req, 1)) submit(s, c, req, OP_UPLOAD, name, NULL, NULL);
        return;
    }
    if (strncmp(tail, "/versions/", 10) || segment(tail + 10, version, sizeof version, 1)) {
        http_respond_error(c, 404, NULL, "no route for %.200s", req->path);
        return;
    }
    tail += 10 + strlen(version);
    if (!*tail) {
        if (get)
            get_version(s, c, name, version);
        else if (m == HTTP_PUT) {
            if (!strcmp(version, "latest")) {
                http_respond_error(c, 400, NULL, "'latest' is not a version name");
                return;
            }
            if (authorized(s, c, req, 1)) submit(s, c, req, OP_UPLOAD, name, version, NULL);
        } else if (m == HTTP_DELETE) {
            if (authorized(s, c, req, 1)) submit(s, c, req, OP_DELETE_VERSION, name, version, NULL);
        } else
            goto method;
        return;
    }
    if (!strcmp(tail, "/weights")) {
        if (!get) goto method;
        submit(s, c, req, OP_DOWNLOAD, name, version, NULL);
        return;
    }
    http_respond_error(c, 404, NULL, "no route for %.200s", req->path);
    return;
method:
    http_respond_error(c, 405, NULL, "%s is not allowed on %.200s", http_method_str(m), req->path);
}
