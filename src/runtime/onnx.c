/*
 * ONNX import through protobuf-c (code generated from onnx/onnx.proto).
 * Operators: Conv, BatchNormalization, Relu, Clip, LeakyRelu, Sigmoid,
 * MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Add, Mul, Concat,
 * Flatten, Reshape, Gemm, MatMul, Softmax, Pad, Identity, Dropout,
 * Constant; opsets 9-17 of the default domain. Initializers come from
 * float_data, raw_data or external data files beside the model. Every
 * count, dimension and length is checked against what the tensor claims.
 * The operators are converted in onnx_ops.c.
 */
#include "fileio.h"
#include "model.h"
#include "onnx_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *kx_node_name(const node_t *n, char *buf, size_t len, int index)
{
    if (n->name && *n->name) return n->name;
    snprintf(buf, len, "%s_%d", n->op_type ? n->op_type : "node", index);
    return buf;
}

/* ---- tensors ----------------------------------------------------------- */

static kiln_status tensor_count(const tensor_t *t, int64_t *count, char *err)
{
    int64_t c = 1;
    if (t->n_dims > KILN_MAX_DIMS)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "tensor '%s' has rank %zu (max %d)",
                       t->name ? t->name : "", t->n_dims, KILN_MAX_DIMS);
    for (size_t i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || t->dims[i] > MAX_ELEMS || (c *= t->dims[i]) > MAX_ELEMS)
            return kg_fail(err, KILN_ERR_FORMAT, "tensor '%s' has a bad shape",
                           t->name ? t->name : "");
    }
    *count = c;
    return KILN_OK;
}

/* The bytes of an external tensor: location relative to the model's
 * directory (no absolute paths, no ".."), offset and length checked
 * against the file. */
static kiln_status external_bytes(const importer *im, const tensor_t *t, size_t want,
                                  unsigned char *out, char *err)
{
    const char *loc = NULL;
    long long off = 0, len = -1;
    for (size_t i = 0; i < t->n_external_data; i++) {
        const char *k = t->external_data[i]->key, *v = t->external_data[i]->value;
        if (!k || !v) continue;
        if (!strcmp(k, "location"))
            loc = v;
        else if (!strcmp(k, "offset"))
            off = atoll(v);
        else if (!strcmp(k, "length"))
            len = atoll(v);
    }
    const char *tn = t->name ? t->name : "";
    if (!loc || !*loc || loc[0] == '/' || strstr(loc, ".."))
        return kg_fail(err, KILN_ERR_FORMAT, "tensor '%s': bad external data location", tn);
    if (off < 0 || (len >= 0 && (size_t)len != want))
        return kg_fail(err, KILN_ERR_FORMAT, "tensor '%s': external data length %lld != %zu", tn,
                       len, want);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", im->dir, loc);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kg_fail(err, KILN_ERR_IO, "tensor '%s': %s: %s", tn, path, strerror(errno));
    struct stat sb;
    kiln_status st = KILN_OK;
    if (fstat(fd, &sb) || (uint64_t)off > (uint64_t)sb.st_size ||
        want > (uint64_t)sb.st_size - (uint64_t)off) {
        st = kg_fail(err, KILN_ERR_FORMAT, "tensor '%s': %zu bytes at %lld are past the end of %s",
                     tn, want, off, path);
    } else if (kiln__pread_full(fd, out, want, off)) {
        st = kg_fail(err, KILN_ERR_IO, "tensor '%s': reading %s failed", tn, path);
    }
    close(fd);
    return st;
}

/* float32 elements of a tensor, malloc'd (count + 1 so 0 elements is a
 * valid allocation). */
static kiln_status tensor_floats(const importer *im, const tensor_t *t, float **out, int64_t *count,
                                 char *err)
{
    *out = NULL;
    kiln_status st = tensor_count(t, count, err);
    if (st) return st;
    const char *tn = t->name ? t->name : "";
    if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return kg_fail(err, KILN_ERR_DTYPE, "tensor '%s': data type %d is not float32", tn,
                       t->data_type);
    size_t n = (size_t)*count, bytes = n * sizeof(float);
    float *d = malloc(bytes + sizeof(float));
    if (!d) return kg_fail(err, KILN_ERR_NO_MEMORY, "tensor '%s': out of memory", tn);
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        if (!im) {
            free(d);
            return kg_fail(err, KILN_ERR_FORMAT, "tensor '%s': external data here", tn);
        }
        st = external_bytes(im, t, bytes, (unsigned char *)d, err);
    } else if (t->has_raw_data) {
        if (t->raw_data.len != bytes)
            st = kg_fail(err, KILN_ERR_FORMAT, "tensor '%s': %zu raw bytes for %zu elements", tn,
                         t->raw_data.len, n);
        else if (bytes)
            memcpy(d, t->raw_data.data, bytes);
    } else if (t->n_float_data == n) {
        if (bytes) memcpy(d, t->float_data, bytes);
    } else {
        st = kg_fail(err, KILN_ERR_FORMAT, "tensor '%s': %zu values for %zu elements", tn,
                     t->n_float_data, n);
    }
    if (st) {
        free(d);
        return st;
    }
    *out = d;
    return KILN_OK;
}

static kiln_status tensor_int64s(const tensor_t *t, int64_t **out, int64_t *count, char *err)
{
    *out = NULL;
    kiln_status st = tensor_count(t, count, err);
    if (st) return st;
    const char *tn = t->name ? t->name : "";
    size_t n = (size_t)*count;
    if (n > 4096) return kg_fail(err, KILN_ERR_LIMIT, "tensor '%s': too many int64 values", tn);
    int64_t *d = malloc((n + 1) * sizeof *d);
    if (!d) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    if (t->has_raw_data && t->raw_data.len == n * 8) {
        if (n) memcpy(d, t->raw_data.data, n * 8);
    } else if (!t->has_raw_data && t->n_int64_data == n) {
        if (n) memcpy(d, t->int64_data, n * 8);
    } else {
        free(d);
        return kg_fail(err, KILN_ERR_FORMAT, "tensor '%s': int64 data does not match its shape",
                       tn);
    }
    *out = d;
    return KILN_OK;
}

/* ---- values ------------------------------------------------------------ */

const ints_entry *kx_find_ints(const importer *im, const char *name)
{
    for (int i = 0; i < im->n_ints; i++)
        if (!strcmp(im->ints[i].name, name)) return &im->ints[i];
    return NULL;
}

kiln_status kx_add_tensor(importer *im, const tensor_t *t, const char *name)
{
    char *err = im->err;
    if (!name || !*name) return kg_fail(err, KILN_ERR_FORMAT, "a tensor has no name");
    if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
        int64_t n = 0;
        int64_t *v;
        kiln_status st = tensor_int64s(t, &v, &n, err);
        if (st) return st;
        if (im->n_ints == im->cap_ints) {
            int cap = im->cap_ints ? 2 * im->cap_ints : 16;
            ints_entry *e = realloc(im->ints, (size_t)cap * sizeof *e);
            if (!e) {
                free(v);
                return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
            }
            im->ints = e;
            im->cap_ints = cap;
        }
        im->ints[im->n_ints] = (ints_entry){strdup(name), (int)n, v};
        if (!im->ints[im->n_ints].name) {
            free(v);
            return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        }
        im->n_ints++;
        return KILN_OK;
    }
    if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) return KILN_OK; /* unused types */
    float *d;
    int64_t n = 0;
    kiln_status st = tensor_floats(im, t, &d, &n, err);
    if (st) return st;
    int64_t dims[KILN_MAX_DIMS];
    for (size_t i = 0; i < t->n_dims; i++) dims[i] = t->dims[i];
    if (kg_add_const(im->g, name, (int)t->n_dims, dims, d, 1) < 0) {
        free(d);
        return kg_fail(err, KILN_ERR_FORMAT, "tensor '%s' is defined twice", name);
    }
    return KILN_OK;
}

/* The value of an input name: an existing value, or a bound tensor. */
int kx_value_of(importer *im, const char *name)
{
    if (!name || !*name) return -1;
    int v = kg_find_value(im->g, name);
    if (v >= 0) return v;
    for (int i = 0; i < im->n_bound; i++)
        if (!im->bound[i].ints && !strcmp(im->bound[i].name, name)) {
            const kx_bound *b = &im->bound[i];
            kg_value tmp = {.ndim = b->ndim};
            memcpy(tmp.dims, b->dims, sizeof tmp.dims);
            int64_t n = kg_numel(&tmp);
            float *d = malloc(((size_t)n + 1) * sizeof *d);
            if (!d) return -2;
            memcpy(d, b->data, (size_t)n * sizeof *d);
            v = kg_add_const(im->g, name, b->ndim, b->dims, d, 1);
            if (v < 0) free(d);
            return v < 0 ? -2 : v;
        }
    return -2;
}

/* ---- the model --------------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len, char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        kg_fail(err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, "%s: %s", path,
                strerror(errno));
        return NULL;
    }
    struct stat sb;
    unsigned char *buf = NULL;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > KX_MAX_FILE) {
        kg_fail(err, KILN_ERR_LIMIT, "%s: not a regular file of at most 2 GiB", path);
        goto done;
    }
    buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        kg_fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory", path);
        goto done;
    }
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r <= 0) {
            free(buf);
            buf = NULL;
            kg_fail(err, KILN_ERR_IO, "%s: read failed", path);
            goto done;
        }
        got += (size_t)r;
    }
    *len = got;
done:
    close(fd);
    return buf;
}

static kiln_status convert_graph(importer *im, const Onnx__GraphProto *gp)
{
    char *err = im->err;
    kiln_status st;
    kg_graph *g = im->g;
    for (size_t i = 0; i < gp->n_initializer; i++)
        if ((st = kx_add_tensor(im, gp->initializer[i], gp->initializer[i]->name))) return st;
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        if (!vi->name || kg_find_value(g, vi->name) >= 0 || kx_find_ints(im, vi->name)) continue;
        int bound = 0;
        for (int b = 0; b < im->n_bound; b++) bound |= !strcmp(im->bound[b].name, vi->name);
        if (bound) continue;
        const Onnx__TypeProto *tp = vi->type;
        if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type ||
            tp->tensor_type->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
            return kg_fail(err, KILN_ERR_DTYPE, "input '%s' is not a float32 tensor", vi->name);
        const Onnx__TensorShapeProto *sh = tp->tensor_type->shape;
        if (!sh || sh->n_dim < 1 || sh->n_dim > KILN_MAX_DIMS)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "input '%s' needs a shape of rank 1..%d",
                           vi->name, KILN_MAX_DIMS);
        int64_t dims[KILN_MAX_DIMS];
        for (size_t d = 0; d < sh->n_dim; d++) {
            const Onnx__TensorShapeProto__Dimension *dm = sh->dim[d];
            if (dm->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
                dm->dim_value >= 1)
                dims[d] = dm->dim_value;
            else if (d == 0)
                dims[d] = 1; /* a symbolic batch: the session sets it */
            else
                return kg_fail(err, KILN_ERR_UNSUPPORTED,
                               "input '%s': dimension %zu must be a fixed size", vi->name, d);
        }
        if (g->n_inputs == 8) return kg_fail(err, KILN_ERR_LIMIT, "more than 8 graph inputs");
        int v = kg_add_value(g, vi->name, KG_INPUT, (int)sh->n_dim, dims);
        if (v < 0) return kg_fail(err, KILN_ERR_FORMAT, "input '%s' is defined twice", vi->name);
        g->inputs[g->n_inputs++] = v;
    }
    if (!g->n_inputs)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "the graph has no float32 runtime inputs");
    for (size_t i = 0; i < gp->n_node; i++)
        if ((st = kx_convert_node(im, gp->node[i], (int)i))) return st;
    for (size_t i = 0; i < gp->n_output; i++) {
        const char *name = gp->output[i]->name;
        int v = name ? kg_find_value(g, name) : -1;
        if (v < 0 || g->values[v].kind != KG_ACTIVATION)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "output '%s' is not computed by a node",
                           name ? name : "");
        if (g->n_outputs == 8) return kg_fail(err, KILN_ERR_LIMIT, "more than 8 graph outputs");
        g->outputs[g->n_outputs++] = v;
    }
    return kg_infer_shapes(g, 0, err);
}

kiln_status kx_import(const char *path, const kx_bound *bound, int n_bound, kg_graph **out,
                      kg_meta *meta, char err[KG_ERRLEN])
{
    *out = NULL;
    memset(meta, 0, sizeof *meta);
    size_t len = 0;
    unsigned char *buf = slurp(path, &len, err);
    if (!buf) return KILN_ERR_IO;
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!mp || !mp->graph) {
        if (mp) onnx__model_proto__free_unpacked(mp, NULL);
        return kg_fail(err, KILN_ERR_FORMAT, "%s: not a valid ONNX model", path);
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    importer im = {.g = kg_graph_new(), .dir = dir, .bound = bound, .n_bound = n_bound, .err = err};
    kiln_status st = KILN_OK;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const char *d = mp->opset_import[i]->domain;
        if (!d || !*d || !strcmp(d, "ai.onnx")) im.opset = (int)mp->opset_import[i]->version;
    }
    if (!im.g) {
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    if (im.opset < 1 || im.opset > 18) {
        st = kg_fail(err, KILN_ERR_UNSUPPORTED, "%s: opset %d (supported: up to 18)", path,
                     im.opset);
        goto done;
    }
    for (int i = 0; i < n_bound && !st; i++) {
        if (!bound[i].ints) continue;
        int64_t dims[KILN_MAX_DIMS];
        for (int d = 0; d < bound[i].ndim; d++) dims[d] = bound[i].dims[d];
        Onnx__TensorProto t = ONNX__TENSOR_PROTO__INIT;
        t.n_dims = (size_t)bound[i].ndim;
        t.dims = dims;
        t.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        int64_t cnt = 1;
        for (int d = 0; d < bound[i].ndim; d++) cnt *= bound[i].dims[d];
        t.n_int64_data = (size_t)cnt;
        t.int64_data = (int64_t *)bound[i].ints;
        st = kx_add_tensor(&im, &t, bound[i].name);
    }
    if (st) goto done;
    im.g->name = strdup(mp->graph->name && *mp->graph->name ? mp->graph->name : "onnx");
    if ((st = convert_graph(&im, mp->graph))) goto done;
    char num[32];
    snprintf(num, sizeof num, "%d", im.opset);
    if (kg_meta_set(meta, "name", im.g->name) || kg_meta_set(meta, "source", "onnx") ||
        kg_meta_set(meta, "onnx_opset", num) || kg_meta_set(meta, "input_layout", "NCHW"))
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; !st && i < mp->n_metadata_props; i++) {
        const Onnx__StringStringEntryProto *p = mp->metadata_props[i];
        if (p->key && p->value && kg_meta_set(meta, p->key, p->value))
            st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    }
done:
    for (int i = 0; i < im.n_ints; i++) {
        free(im.ints[i].name);
        free(im.ints[i].v);
    }
    free(im.ints);
    onnx__model_proto__free_unpacked(mp, NULL);
    if (st) {
        kg_graph_free(im.g);
        kg_meta_free(meta);
        return st;
    }
    *out = im.g;
    return KILN_OK;
}

kiln_status kx_read_tensor(const char *path, float **data, int64_t **ints, int *ndim, int64_t *dims,
                           char *name, size_t len, char err[KG_ERRLEN])
{
    size_t n = 0;
    *data = NULL;
    if (ints) *ints = NULL;
    unsigned char *buf = slurp(path, &n, err);
    if (!buf) return KILN_ERR_IO;
    tensor_t *t = onnx__tensor_proto__unpack(NULL, n, buf);
    free(buf);
    if (!t) return kg_fail(err, KILN_ERR_FORMAT, "%s: not a TensorProto", path);
    int64_t count;
    kiln_status st = ints && t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64
                         ? tensor_int64s(t, ints, &count, err)
                         : tensor_floats(NULL, t, data, &count, err);
    if (!st) {
        *ndim = (int)t->n_dims;
        for (size_t i = 0; i < t->n_dims; i++) dims[i] = t->dims[i];
        if (name) snprintf(name, len, "%s", t->name ? t->name : "");
    }
    onnx__tensor_proto__free_unpacked(t, NULL);
    return st;
}

kiln_status kiln_model_import_onnx(const char *path, kiln_model **out)
{
    if (!path || !out) return km_error(KILN_ERR_INVALID_ARG, "no path or no output pointer");
    *out = NULL;
    char err[KG_ERRLEN] = "";
    kg_graph *g;
    kg_meta meta;
    kiln_status st = kx_import(path, NULL, 0, &g, &meta, err);
    if (st) return km_error(st, "%s", err);
    return km_finish(g, &meta, out, path);
}
