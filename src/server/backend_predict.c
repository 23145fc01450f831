/*
 * The predict kind: one model per worker, loaded and compiled once in
 * init(), then one kiln_session_run per invocation.
 *
 * Requests:
 *   - an image body (image/jpeg, image/png, or any content type whose bytes
 *     are a JPEG or PNG): decoded, resized and normalised to the model's
 *     input; the answer is the top-k classes (?top_k=N, default 5):
 *       {"model_name", "model_version", "predictions": [{"index", "label",
 *        "probability"}]}
 *   - a JSON body in the Open Inference Protocol (KServe v2) form:
 *       {"id"?, "inputs": [{"name", "shape", "datatype": "FP32", "data"}]}
 *     answered with {"model_name", "model_version", "id"?, "outputs": [...]}
 *     where data is flat or nested in row-major order; shape[0] is the batch.
 *   - multipart/form-data (an HTML form upload): its first part that is a
 *     file or has an image content type is taken as the image.
 *   - ?kiln_op=metadata: the model's KServe v2 metadata (inputs, outputs).
 */
#include "backend.h"
#include "image.h"
#include "kiln.h"

#include <jansson.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Batch sizes kept compiled at once: the model's own, the image rounds'
 * 2..MAX_ROUND_BATCH, and one more for KServe v2 bodies of another batch. */
#define MAX_SESSIONS 10
/* Images of one round run together in batches of at most this many: the
 * kernels' dense layers are bit-identical to batch 1 up to 8 rows
 * (KILN_DENSE_EXACT_MAX_BATCH), so a batched answer is the answer alone. */
#define MAX_ROUND_BATCH 8
#define MAX_TOP_K       1000

typedef struct predict_state {
    kiln_model *model;
    const backend_options *o;
    char name[128], version[64];
    struct {
        int batch;
        kiln_session *s;
    } sessions[MAX_SESSIONS];
    int n_sessions;
    kiln_io_info in, out; /* input 0 and output 0 at the model's own batch */
    int n_in, n_out;
    float mean[4], std[4];
    int have_norm;
    /* The answer's fixed parts as JSON text, built once at load instead of
     * for each request: the head up to the predictions, and each label
     * (NULL where the model has none for that index). */
    char *answer_head;
    char **label_json;
    int n_labels;
} predict_state;

static int answer_parts(predict_state *p);
static void predict_fini(void *state);

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/*
 * Where a predict function's model file is. `model` is a path (it holds a
 * '/' or ends in .kiln, .onnx or .yaml) or NAME[@VERSION], looked up as
 * DATA_DIR/models/NAME/VERSION.kiln, DATA_DIR/models/NAME.kiln, then
 * models/NAME.kiln and models/NAME.yaml from the working directory (the
 * architectures that ship, with seeded weights). This is the seam where the
 * model store resolves names to its registered versions.
 */
static int resolve_model(const backend_options *o, char *path, size_t len, int *status, char *err,
                         size_t errlen)
{
    const char *m = o->model;
    if (strchr(m, '/') || ends_with(m, ".kiln") || ends_with(m, ".onnx") || ends_with(m, ".yaml")) {
        if (!file_exists(m)) {
            *status = 404;
            snprintf(err, errlen, "model file %s not found", m);
            return -1;
        }
        snprintf(path, len, "%s", m);
        return 0;
    }
    char name[128], version[64] = "";
    const char *at = strchr(m, '@');
    size_t nl = at ? (size_t)(at - m) : strlen(m);
    if (nl == 0 || nl >= sizeof name || (at && strlen(at + 1) >= sizeof version)) {
        *status = 400;
        snprintf(err, errlen, "model '%s' is not NAME[@VERSION]", m);
        return -1;
    }
    memcpy(name, m, nl);
    name[nl] = 0;
    if (at) snprintf(version, sizeof version, "%s", at + 1);
    for (const char *p = m; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.' || *p == '@') ||
            (p[0] == '.' && p[1] == '.')) {
            *status = 400;
            snprintf(err, errlen, "model '%s' holds characters outside A-Z a-z 0-9 _ - . @", m);
            return -1;
        }
    const char *dd = o->data_dir ? o->data_dir : ".";
    if (version[0])
        snprintf(path, len, "%s/models/%s/%s.kiln", dd, name, version);
    else
        snprintf(path, len, "%s/models/%s.kiln", dd, name);
    if (file_exists(path)) return 0;
    if (!version[0]) {
        snprintf(path, len, "models/%s.kiln", name);
        if (file_exists(path)) return 0;
        snprintf(path, len, "models/%s.yaml", name);
        if (file_exists(path)) return 0;
    }
    *status = 404;
    snprintf(err, errlen, "model '%s' not found (in %s/models or models/)", m, dd);
    return -1;
}

/* Parses "a,b,c" into up to n floats; returns how many. */
static int parse_floats(const char *s, float *v, int n)
{
    int k = 0;
    while (s && *s && k < n) {
        char *end;
        v[k++] = strtof(s, &end);
        if (end == s) return -1;
        s = *end == ',' ? end + 1 : NULL;
        if (*end && *end != ',') return -1;
    }
    return k;
}

static int predict_init(const backend_options *o, void **state, int *status, char *err,
                        size_t errlen)
{
    char path[4096];
    *status = 500;
    if (!o->model) {
        snprintf(err, errlen, "no model configured");
        return -1;
    }
    if (resolve_model(o, path, sizeof path, status, err, errlen)) return -1;
    kiln_status st = kiln_init();
    if (st) {
        snprintf(err, errlen, "kiln_init: %s", kiln_strerror(st));
        return -1;
    }
    kiln_blas_set_threads(o->threads);
    predict_state *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->o = o;
    if (ends_with(path, ".onnx"))
        st = kiln_model_import_onnx(path, &p->model);
    else if (ends_with(path, ".yaml"))
        st = kiln_model_from_yaml(path, 1, &p->model);
    else
        st = kiln_model_open(path, KILN_OPEN_TRUST_WEIGHTS, &p->model);
    if (st) {
        snprintf(err, errlen, "cannot load model %s: %s (%s)", path, kiln_last_error(),
                 kiln_strerror(st));
        free(p);
        return -1;
    }
    p->n_in = kiln_model_input_count(p->model);
    p->n_out = kiln_model_output_count(p->model);
    if (p->n_in != 1 || p->n_out < 1) {
        snprintf(err, errlen, "model %s has %d inputs; predict serves models with one", path,
                 p->n_in);
        kiln_model_free(p->model);
        free(p);
        return -1;
    }
    kiln_model_input(p->model, 0, &p->in);
    kiln_model_output(p->model, 0, &p->out);
    const char *name = kiln_model_meta(p->model, "name"),
               *ver = kiln_model_meta(p->model, "version");
    snprintf(p->name, sizeof p->name, "%s", o->model_name ? o->model_name : name ? name : o->model);
    snprintf(p->version, sizeof p->version, "%s", ver ? ver : "1");
    int c = p->in.ndim == 4 ? (int)p->in.dims[1] : 0;
    if (c >= 1 && c <= 4) {
        for (int i = 0; i < c; i++) p->mean[i] = 0, p->std[i] = 1;
        int nm = parse_floats(kiln_model_meta(p->model, "mean"), p->mean, c);
        int ns = parse_floats(kiln_model_meta(p->model, "std"), p->std, c);
        if (nm == 1)
            for (int i = 1; i < c; i++) p->mean[i] = p->mean[0];
        if (ns == 1)
            for (int i = 1; i < c; i++) p->std[i] = p->std[0];
        for (int i = 0; i < c; i++)
            if (p->std[i] == 0) p->std[i] = 1;
        p->have_norm = 1;
    }
    /* The model's own batch is compiled now, so the first request is warm. */
    kiln_session_options so = {o->threads, 0};
    st = kiln_session_create(p->model, &so, &p->sessions[0].s);
    if (st) {
        snprintf(err, errlen, "cannot plan model %s: %s (%s)", path, kiln_last_error(),
                 kiln_strerror(st));
        kiln_model_free(p->model);
        free(p);
        return -1;
    }
    p->sessions[0].batch = (int)p->in.dims[0];
    p->n_sessions = 1;
    if (answer_parts(p)) {
        snprintf(err, errlen, "out of memory for model %s's labels", path);
        predict_fini(p);
        return -1;
    }
    *state = p;
    return 0;
}

/* A session for `batch`, compiled on first use; the oldest extra one is
 * dropped when MAX_SESSIONS are kept. */
static kiln_session *session_for(predict_state *p, int batch, backend_response *res)
{
    for (int i = 0; i < p->n_sessions; i++)
        if (p->sessions[i].batch == batch) return p->sessions[i].s;
    kiln_session_options so = {p->o->threads, batch};
    kiln_session *s;
    kiln_status st = kiln_session_create(p->model, &so, &s);
    if (st) {
        backend_error(res, st == KILN_ERR_NO_MEMORY ? 503 : 400, "batch %d: %s (%s)", batch,
                      kiln_last_error(), kiln_strerror(st));
        return NULL;
    }
    if (p->n_sessions == MAX_SESSIONS) {
        kiln_session_free(p->sessions[1].s);
        memmove(&p->sessions[1], &p->sessions[2], sizeof p->sessions[0] * (MAX_SESSIONS - 2));
        p->n_sessions--;
    }
    p->sessions[p->n_sessions].batch = batch;
    p->sessions[p->n_sessions].s = s;
    p->n_sessions++;
    return s;
}

static int64_t elements(const kiln_io_info *io)
{
    int64_t n = 1;
    for (int i = 0; i < io->ndim; i++) n *= io->dims[i];
    return n;
}

static void put_float(buf *b, float v)
{
    if (isfinite(v))
        buf_put_g9(b, v);
    else
        buf_puts(b, "null");
}

static void put_shape(buf *b, const kiln_io_info *io)
{
    buf_puts(b, "[");
    for (int i = 0; i < io->ndim; i++)
        buf_printf(b, "%s%lld", i ? "," : "", (long long)io->dims[i]);
    buf_puts(b, "]");
}

/* s as a JSON string (malloc'd; "" for text that is not UTF-8), or NULL
 * when out of memory. */
static char *json_string_dup(const char *s)
{
    json_t *j = json_string(s);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    return t ? t : strdup("\"\"");
}

static void put_json_string(buf *b, const char *s)
{
    char *t = json_string_dup(s);
    buf_puts(b, t ? t : "\"\"");
    free(t);
}

/* The JSON text image_answer() reuses (predict_state.answer_head and
 * label_json); 0, or -1 when out of memory. */
static int answer_parts(predict_state *p)
{
    buf b = {0};
    buf_puts(&b, "{\"model_name\":");
    put_json_string(&b, p->name);
    buf_puts(&b, ",\"model_version\":");
    put_json_string(&b, p->version);
    buf_puts(&b, ",\"predictions\":[");
    if (b.oom) {
        buf_free(&b);
        return -1;
    }
    p->answer_head = b.data;
    const int n = kiln_model_label_count(p->model);
    if (n <= 0) return 0;
    p->label_json = calloc((size_t)n, sizeof *p->label_json);
    if (!p->label_json) return -1;
    p->n_labels = n;
    for (int i = 0; i < n; i++) {
        char label[256];
        const char *l = kiln_model_label(p->model, i, label, sizeof label);
        if (l && !(p->label_json[i] = json_string_dup(l))) return -1;
    }
    return 0;
}

static void answer_parts_free(predict_state *p)
{
    for (int i = 0; i < p->n_labels; i++) free(p->label_json[i]);
    free(p->label_json);
    free(p->answer_head);
}

/* Runs `batch` inputs; outputs are allocated into outs[] (caller frees). */
static int run(predict_state *p, int batch, const float *input, float **outs, kiln_io_info *oinfo,
               backend_response *res)
{
    kiln_session *s = session_for(p, batch, res);
    if (!s) return -1;
    for (int i = 0; i < p->n_out; i++) {
        kiln_session_output(s, i, &oinfo[i]);
        outs[i] = malloc(sizeof(float) * (size_t)elements(&oinfo[i]));
        if (!outs[i]) {
            backend_error(res, 503, "out of memory for the outputs");
            return -1;
        }
    }
    const float *ins[1] = {input};
    kiln_status st = kiln_session_run(s, ins, outs);
    if (st) {
        backend_error(res, 500, "run failed: %s (%s)", kiln_last_error(), kiln_strerror(st));
        return -1;
    }
    return 0;
}

/* ---- KServe v2 JSON ------------------------------------------------------- */

/* Appends the numbers of a (nested) JSON array into dst; -1 when a value is
 * not a number or there are more than cap, -2 when one is not a finite
 * float (1e39 overflows FP32 to infinity). */
static int flatten(json_t *a, float *dst, int64_t cap, int64_t *n)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_array(v)) {
            int r = flatten(v, dst, cap, n);
            if (r) return r;
        } else if (json_is_number(v)) {
            if (*n >= cap) return -1;
            float f = (float)json_number_value(v);
            if (!isfinite(f)) return -2;
            dst[(*n)++] = f;
        } else {
            return -1;
        }
    }
    return 0;
}

static void infer_json(predict_state *p, const backend_request *req, backend_response *res)
{
    json_error_t je;
    if (!backend_json_depth_ok(req->body, req->body_len, p->o->max_json_depth)) {
        backend_error(res, 400, "JSON nested deeper than %d (server.limits.max_json_depth)",
                      p->o->max_json_depth);
        return;
    }
    json_t *root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        backend_error(res, 400, "invalid JSON at line %d column %d: %s", je.line, je.column,
                      je.text);
        return;
    }
    float *input = NULL, *outs[16] = {0};
    kiln_io_info oinfo[16];
    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1) {
        backend_error(res, 400, "'inputs' must be an array of 1 tensor for model %s", p->name);
        goto out;
    }
    json_t *t = json_array_get(inputs, 0);
    json_t *shape = json_object_get(t, "shape"), *data = json_object_get(t, "data");
    const char *dt = json_string_value(json_object_get(t, "datatype"));
    if (!json_is_object(t) || !json_is_array(shape) || !json_is_array(data)) {
        backend_error(res, 400, "inputs[0] needs 'shape' and 'data' arrays");
        goto out;
    }
    if (!dt || strcmp(dt, "FP32")) {
        backend_error(res, 400, "inputs[0].datatype must be \"FP32\", got %s%s%s", dt ? "\"" : "",
                      dt ? dt : "none", dt ? "\"" : "");
        goto out;
    }
    if ((int)json_array_size(shape) != p->in.ndim) {
        backend_error(res, 400, "inputs[0].shape has %zu dimensions; model %s takes %d",
                      json_array_size(shape), p->name, p->in.ndim);
        goto out;
    }
    int64_t n = 1;
    int batch = 0;
    for (int i = 0; i < p->in.ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        json_int_t v = json_is_integer(d) ? json_integer_value(d) : -1;
        if (v < 1 || v > p->o->max_tensor_elements) {
            backend_error(res, 400, "inputs[0].shape[%d] must be a positive integer", i);
            goto out;
        }
        if (i == 0)
            batch = (int)v;
        else if (v != p->in.dims[i]) {
            backend_error(res, 400, "inputs[0].shape[%d] is %lld; model %s takes %lld", i,
                          (long long)v, p->name, (long long)p->in.dims[i]);
            goto out;
        }
        n *= v;
        if (n > p->o->max_tensor_elements) {
            backend_error(res, 413,
                          "input of more than %lld elements "
                          "(server.limits.max_tensor_elements)",
                          (long long)p->o->max_tensor_elements);
            goto out;
        }
    }
    input = malloc(sizeof(float) * (size_t)n);
    int64_t got = 0;
    if (!input) {
        backend_error(res, 503, "out of memory for the input");
        goto out;
    }
    int fr = flatten(data, input, n, &got);
    if (fr == -2) {
        backend_error(res, 400, "inputs[0].data[%lld] is not a finite FP32 number", (long long)got);
        goto out;
    }
    if (fr || got != n) {
        backend_error(res, 400, "inputs[0].data must hold %lld numbers for shape; %s", (long long)n,
                      got >= n ? "it holds more or non-numbers" : "it holds fewer or non-numbers");
        goto out;
    }
    if (run(p, batch, input, outs, oinfo, res)) goto out;
    buf *b = &res->body;
    b->len = 0;
    buf_puts(b, "{\"model_name\":");
    put_json_string(b, p->name);
    buf_puts(b, ",\"model_version\":");
    put_json_string(b, p->version);
    const char *id = json_string_value(json_object_get(root, "id"));
    if (id) {
        buf_puts(b, ",\"id\":");
        put_json_string(b, id);
    }
    buf_puts(b, ",\"outputs\":[");
    for (int o = 0; o < p->n_out; o++) {
        kiln_io_info info;
        kiln_model_output(p->model, o, &info);
        buf_puts(b, o ? ",{\"name\":" : "{\"name\":");
        put_json_string(b, info.name ? info.name : "output");
        buf_puts(b, ",\"datatype\":\"FP32\",\"shape\":");
        put_shape(b, &oinfo[o]);
        buf_puts(b, ",\"data\":[");
        int64_t ne = elements(&oinfo[o]);
        for (int64_t i = 0; i < ne; i++) {
            if (i) buf_puts(b, ",");
            put_float(b, outs[o][i]);
        }
        buf_puts(b, "]}");
    }
    buf_puts(b, "]}");
    res->status = 200;
out:
    for (int i = 0; i < 16; i++) free(outs[i]);
    free(input);
    json_decref(root);
}

/* ---- images --------------------------------------------------------------- */

static int takes_images(const predict_state *p)
{
    return p->in.ndim == 4 && p->in.dims[1] >= 1 && p->in.dims[1] <= 4 && p->in.dims[1] != 2;
}

/* Elements of input 0 for one image (takes_images()). */
static size_t image_elements(const predict_state *p)
{
    return (size_t)(p->in.dims[1] * p->in.dims[2] * p->in.dims[3]);
}

/* Decodes an image request into input (image_elements() floats) and its
 * top_k into *k; 0, or -1 with the error response set. */
static int image_input(predict_state *p, const backend_request *req, float *input, long *k,
                       backend_response *res)
{
    if (!takes_images(p)) {
        backend_error(res, 415, "model %s does not take images (input %s is not N,1|3,H,W)",
                      p->name, p->in.name ? p->in.name : "0");
        return -1;
    }
    char v[16];
    *k = 5;
    if (!backend_query_param(req->query, req->query_len, "top_k", v, sizeof v)) {
        char *end;
        *k = strtol(v, &end, 10);
        if (*end || *k < 1 || *k > MAX_TOP_K) {
            backend_error(res, 400, "top_k: expected 1..%d", MAX_TOP_K);
            return -1;
        }
    }
    int c = (int)p->in.dims[1], h = (int)p->in.dims[2], w = (int)p->in.dims[3];
    image_u8 img;
    char err[256];
    uint64_t max_px = (uint64_t)p->o->max_tensor_elements;
    if (image_decode(req->body, req->body_len, c == 1 ? 1 : 3, max_px, &img, err, sizeof err)) {
        backend_error(res, 400, "%s", err);
        return -1;
    }
    image_to_tensor(&img, h, w, p->have_norm ? p->mean : NULL, p->have_norm ? p->std : NULL, input);
    image_free(&img);
    return 0;
}

/* The top-k answer from an image's n scores pr[] (overwritten). */
static void image_answer(predict_state *p, float *pr, int64_t n, long k, backend_response *res)
{
    /* Probabilities as given when they already are; else a softmax. */
    double sum = 0;
    int probs = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!(pr[i] >= 0 && pr[i] <= 1)) probs = 0;
        sum += pr[i];
    }
    if (!probs || fabs(sum - 1) > 1e-3) {
        float mx = pr[0];
        for (int64_t i = 1; i < n; i++) mx = pr[i] > mx ? pr[i] : mx;
        double z = 0;
        for (int64_t i = 0; i < n; i++) z += exp((double)(pr[i] - mx));
        for (int64_t i = 0; i < n; i++) pr[i] = (float)(exp((double)(pr[i] - mx)) / z);
    }
    if (k > n) k = (long)n;
    buf *b = &res->body;
    b->len = 0;
    buf_puts(b, p->answer_head);
    for (long r = 0; r < k; r++) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++)
            if (pr[i] >= 0 && (best < 0 || pr[i] > pr[best])) best = i;
        if (best < 0) break;
        buf_puts(b, r ? ",{\"index\":" : "{\"index\":");
        buf_put_i64(b, best);
        buf_puts(b, ",\"label\":");
        if (best < p->n_labels && p->label_json[best]) {
            buf_puts(b, p->label_json[best]);
        } else {
            buf_puts(b, "\"");
            buf_put_i64(b, best);
            buf_puts(b, "\"");
        }
        buf_puts(b, ",\"probability\":");
        put_float(b, pr[best]);
        buf_puts(b, "}");
        pr[best] = -1;
    }
    buf_puts(b, "]}");
    res->status = 200;
}

static void infer_image(predict_state *p, const backend_request *req, backend_response *res)
{
    long k;
    float *input = malloc(sizeof(float) * (takes_images(p) ? image_elements(p) : 1));
    float *outs[16] = {0};
    kiln_io_info oinfo[16];
    if (!input) {
        backend_error(res, 503, "out of memory for the input");
        return;
    }
    if (!image_input(p, req, input, &k, res) && !run(p, 1, input, outs, oinfo, res))
        image_answer(p, outs[0], elements(&oinfo[0]), k, res);
    for (int i = 0; i < 16; i++) free(outs[i]);
    free(input);
}

static void metadata(predict_state *p, backend_response *res)
{
    buf *b = &res->body;
    b->len = 0;
    buf_puts(b, "{\"name\":");
    put_json_string(b, p->name);
    buf_puts(b, ",\"versions\":[");
    put_json_string(b, p->version);
    buf_puts(b, "],\"platform\":\"kiln\",\"inputs\":[");
    for (int i = 0; i < p->n_in; i++) {
        kiln_io_info io;
        kiln_model_input(p->model, i, &io);
        buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        put_json_string(b, io.name ? io.name : "input");
        buf_puts(b, ",\"datatype\":\"FP32\",\"shape\":");
        io.dims[0] = -1; /* any batch */
        put_shape(b, &io);
        buf_puts(b, "}");
    }
    buf_puts(b, "],\"outputs\":[");
    for (int i = 0; i < p->n_out; i++) {
        kiln_io_info io;
        kiln_model_output(p->model, i, &io);
        buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        put_json_string(b, io.name ? io.name : "output");
        buf_puts(b, ",\"datatype\":\"FP32\",\"shape\":");
        io.dims[0] = -1;
        put_shape(b, &io);
        buf_puts(b, "}");
    }
    buf_puts(b, "]}");
    res->status = 200;
}

static int ctype_is(const backend_request *r, const char *t)
{
    size_t n = strlen(t);
    return r->ctype_len >= n && !strncasecmp(r->ctype, t, n);
}

/* 1 when req asks for an image prediction (*img: the image's request, the
 * part of a multipart body), 0 when it is something else, -1 when it is
 * answered already (an error). */
static int image_request(predict_state *p, const backend_request *req, backend_request *img,
                         backend_response *res)
{
    char op[32];
    if (p->n_out > 16) {
        backend_error(res, 501, "models with more than 16 outputs are not served");
        return -1;
    }
    if (!backend_query_param(req->query, req->query_len, "kiln_op", op, sizeof op) &&
        !strcmp(op, "metadata"))
        return 0;
    *img = *req;
    if (ctype_is(req, "multipart/form-data")) {
        const char *why;
        if (backend_multipart_file(req, &img->body, &img->body_len, &why)) {
            backend_error(res, 400, "%s", why);
            return -1;
        }
        img->ctype = "";
        img->ctype_len = 0;
        return 1;
    }
    const uint8_t *b = (const uint8_t *)req->body;
    return ctype_is(req, "image/") ||
           (req->body_len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) ||
           (req->body_len >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8));
}

static void predict_invoke(void *state, const backend_request *req, backend_response *res)
{
    predict_state *p = state;
    char op[32];
    backend_request img;
    int r = image_request(p, req, &img, res);
    if (r < 0) return;
    if (r) {
        infer_image(p, &img, res);
        return;
    }
    if (!backend_query_param(req->query, req->query_len, "kiln_op", op, sizeof op) &&
        !strcmp(op, "metadata")) {
        metadata(p, res);
        return;
    }
    if (req->body_len == 0) {
        backend_error(res, 400, "empty body: send an image (JPEG/PNG) or KServe v2 JSON");
        return;
    }
    infer_json(p, req, res);
}

/* Runs the images of items[0..n) (decoded into input, one after another) as
 * one batch-n session run and answers each; when a run of several fails,
 * each runs alone so every request gets its own answer or error (a lone
 * image's error is its answer, as infer_image() would give it). */
typedef struct round_image {
    backend_response *res;
    backend_request req;
    long k;
} round_image;

static void run_images(predict_state *p, round_image *items, int n, float *input)
{
    float *outs[16] = {0};
    kiln_io_info oinfo[16];
    backend_response scratch = {0};
    if (!run(p, n, input, outs, oinfo, n == 1 ? items[0].res : &scratch)) {
        int64_t per = elements(&oinfo[0]) / n;
        for (int i = 0; i < n; i++)
            image_answer(p, outs[0] + i * per, per, items[i].k, items[i].res);
    } else if (n > 1) {
        for (int i = 0; i < n; i++) infer_image(p, &items[i].req, items[i].res);
    }
    for (int i = 0; i < 16; i++) free(outs[i]);
    buf_free(&scratch.body);
}

/* A round: its image predictions run together, MAX_ROUND_BATCH at a time
 * (a batch-B session per size, each image's answer bit for bit what it gets
 * alone: see kernels_ops' dense_small_batch_bit_identical and
 * test_batch.py); everything else one by one. */
static void predict_invoke_round(void *state, const backend_request *reqs, backend_response **res,
                                 int n)
{
    predict_state *p = state;
    round_image items[MAX_ROUND_BATCH];
    float *input =
        takes_images(p) ? malloc(sizeof(float) * image_elements(p) * MAX_ROUND_BATCH) : NULL;
    int m = 0;
    for (int i = 0; i < n; i++) {
        backend_request img;
        int r = image_request(p, &reqs[i], &img, res[i]);
        if (r < 0) continue;
        if (!r || !input) {
            predict_invoke(state, &reqs[i], res[i]);
            continue;
        }
        if (image_input(p, &img, input + (size_t)m * image_elements(p), &items[m].k, res[i]))
            continue;
        items[m].res = res[i];
        items[m].req = img;
        if (++m == MAX_ROUND_BATCH) {
            run_images(p, items, m, input);
            m = 0;
        }
    }
    if (m) run_images(p, items, m, input);
    free(input);
}

static void predict_fini(void *state)
{
    predict_state *p = state;
    for (int i = 0; i < p->n_sessions; i++) kiln_session_free(p->sessions[i].s);
    answer_parts_free(p);
    kiln_model_free(p->model);
    free(p);
}

const backend_ops backend_predict = {"predict", predict_init, predict_invoke, predict_fini,
                                     predict_invoke_round};
