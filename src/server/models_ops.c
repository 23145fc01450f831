/* The model manager's operations on a store (models_ops.h). */
#include "models_ops.h"
#include "kiln.h"

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

static int fail(models_res *res, int status, const char *msg)
{
    snprintf(res->error, sizeof res->error, "%s", msg);
    return status;
}

static int store_fail_res(models_res *res, store_status st)
{
    return fail(res, store_http_status(st), store_last_error());
}

static json_t *version_json(const store_version *v)
{
    json_t *meta = v->metadata ? json_loads(v->metadata, 0, NULL) : NULL;
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o}", "model", v->model, "version", v->version,
                     "sha256", v->sha256, "size", (json_int_t)v->size, "created",
                     (json_int_t)v->created, "metadata", meta ? meta : json_null());
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

/* MODELS_UPLOAD: validate (open as .kiln, else import as ONNX), store as a
 * plain .kiln, register the version. */
static int upload(const models_req *q, models_res *res)
{
    uint64_t expanded = upload_expanded_bytes(q->body, q->body_len);
    if (expanded > q->max_model_bytes) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the model expands to %llu bytes, more than server.limits.max_model_bytes (%llu)",
                 (unsigned long long)expanded, (unsigned long long)q->max_model_bytes);
        return fail(res, 413, msg);
    }
    char in[4200], out[4210];
    /* In the store's temporary directory, which is emptied at every start:
     * a crash mid-upload leaves nothing behind. */
    snprintf(in, sizeof in, "%s/blobs/tmp/upload-XXXXXX", q->data_dir);
    int fd = mkstemp(in);
    if (fd < 0) {
        return fail(res, 500, "cannot create a temporary file in the data directory");
    }
    size_t done = 0;
    while (done < q->body_len) {
        ssize_t r = write(fd, q->body + done, q->body_len - done);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            break;
        }
        done += (size_t)r;
    }
    close(fd);
    if (done != q->body_len) {
        int e = errno;
        unlink(in);
        return fail(res, out_of_space(e) ? 507 : 500,
                    out_of_space(e) ? "cannot write the upload: no space left in the data dir"
                                    : "cannot write the upload in the data dir");
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
        return fail(res, 400, msg);
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
        return fail(res, full ? 507 : 500,
                    full ? "cannot write the converted model: no space left in the data dir"
                         : "cannot write the converted model in the data dir");
    }
    unlink(out);
    char *meta_text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    store_version v = {0};
    store_status st = store_version_put(
        q->st, q->model, q->version && *q->version ? q->version : NULL, data, len, meta_text, &v);
    free(data);
    free(meta_text);
    if (st) return store_fail_res(res, st);
    res->out = version_json(&v);
    store_version_clear(&v);
    return 201;
}

static json_t *model_json(const store_model *m, json_t *metadata)
{
    return json_pack("{s:s, s:I, s:i, s:s?, s:o}", "name", m->name, "created",
                     (json_int_t)m->created, "versions", m->n_versions, "latest",
                     m->latest[0] ? m->latest : NULL, "metadata",
                     metadata ? metadata : json_null());
}

static int list(const models_req *q, models_res *res)
{
    store_model *ms = NULL;
    int n = 0;
    store_status st = store_model_list(q->st, &ms, &n);
    if (st) return store_fail_res(res, st);
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_pack("{s:s, s:I, s:i, s:s?}", "name", ms[i].name, "created",
                                           (json_int_t)ms[i].created, "versions", ms[i].n_versions,
                                           "latest", ms[i].latest[0] ? ms[i].latest : NULL));
    free(ms);
    res->out = json_pack("{s:o}", "models", a);
    return 200;
}

static int get(const models_req *q, models_res *res)
{
    store_model m;
    store_version *vs = NULL;
    int n = 0;
    char *meta_text = NULL;
    store_status st = store_model_get(q->st, q->model, &m);
    if (!st) st = store_model_metadata(q->st, q->model, &meta_text);
    if (!st) st = store_version_list(q->st, q->model, &vs, &n);
    if (st) {
        free(meta_text);
        return store_fail_res(res, st);
    }
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, version_json(&vs[i]));
    store_versions_free(vs, n);
    res->out = model_json(&m, meta_text ? json_loads(meta_text, 0, NULL) : NULL);
    free(meta_text);
    json_object_set_new(res->out, "versions", a);
    return 200;
}

/* MODELS_CREATE and MODELS_PUT: 201 when the model is new, else 200. */
static int put(models_op op, const models_req *q, models_res *res)
{
    int created = 1;
    store_status st;
    if (op == MODELS_CREATE && !q->metadata)
        st = store_model_create(q->st, q->model); /* works on every schema */
    else
        st = store_model_put(q->st, q->model, q->metadata, op == MODELS_CREATE, &created);
    store_model m = {0};
    if (!st) st = store_model_get(q->st, q->model, &m); /* it may be gone already */
    if (st) return store_fail_res(res, st);
    res->out = model_json(&m, q->metadata ? json_loads(q->metadata, 0, NULL) : NULL);
    return created ? 201 : 200;
}

int models_do(models_op op, const models_req *q, models_res *res)
{
    store_status st = STORE_OK;
    store_version v = {0};
    res->out = NULL;
    res->data = NULL;
    res->data_len = 0;
    res->error[0] = 0;
    switch (op) {
    case MODELS_LIST:
        return list(q, res);
    case MODELS_GET:
        return get(q, res);
    case MODELS_CREATE:
    case MODELS_PUT:
        return put(op, q, res);
    case MODELS_DELETE:
        st = store_model_delete(q->st, q->model);
        return st ? store_fail_res(res, st) : 204;
    case MODELS_VERSION_GET:
        if ((st = store_version_get(q->st, q->model, q->version, &v)))
            return store_fail_res(res, st);
        res->out = version_json(&v);
        store_version_clear(&v);
        return 200;
    case MODELS_UPLOAD:
        return upload(q, res);
    case MODELS_DOWNLOAD: {
        if ((st = store_version_get(q->st, q->model, q->version, &v)))
            return store_fail_res(res, st);
        int bad = read_file(v.path, &res->data, &res->data_len);
        store_version_clear(&v);
        return bad ? fail(res, 500, "cannot read the blob") : 200;
    }
    case MODELS_VERSION_DELETE:
        st = store_version_delete(q->st, q->model, q->version);
        return st ? store_fail_res(res, st) : 204;
    }
    return fail(res, 500, "unknown operation");
}
