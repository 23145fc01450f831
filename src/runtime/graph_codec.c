/*
 * The graph and meta sections of a .kiln file. Decoding trusts nothing:
 * every count, index, rank, dimension, offset and length is checked before
 * it is used, so a corrupt section is an error message, never a crash.
 *
 * Graph section:
 *   str name
 *   u32 n_values, then per value: str name, u8 kind, u8 ndim, i64 dims[ndim],
 *       and for constants u64 offset, u64 bytes (into the weights section)
 *   u32 n_nodes, then per node: str name, u32 op, u32 n_in, i32 in[n_in],
 *       i32 out, u32 attribute bytes, attributes (attrs_write)
 *   u32 n_inputs, i32[]; u32 n_outputs, i32[]
 */
#include "bytes.h"
#include "model_file.h"

#include <stdio.h>

#define MAX_NAME  4096
#define MAX_COUNT (1 << 20)
#define MAX_DIM   ((int64_t)1 << 40)

static void attrs_write(kb_writer *w, const kg_attrs *a)
{
    for (int i = 0; i < 2; i++) kb_i32(w, a->kernel[i]);
    for (int i = 0; i < 2; i++) kb_i32(w, a->stride[i]);
    for (int i = 0; i < 2; i++) kb_i32(w, a->dilation[i]);
    for (int i = 0; i < 4; i++) kb_i32(w, a->pad[i]);
    kb_i32(w, a->group);
    kb_i32(w, a->ceil_mode);
    kb_i32(w, a->count_include_pad);
    kb_i32(w, a->axis);
    kb_f32(w, a->alpha);
    kb_f32(w, a->min);
    kb_f32(w, a->max);
    kb_f32(w, a->epsilon);
    kb_i32(w, (int32_t)a->act);
    kb_i32(w, a->residual);
    kb_i32(w, a->shape_n);
    for (int i = 0; i < KILN_MAX_DIMS; i++) kb_i64(w, a->shape[i]);
    for (int i = 0; i < 2 * KILN_MAX_DIMS; i++) kb_i64(w, a->pads[i]);
    kb_f32(w, a->pad_value);
    kb_i32(w, a->flat);
}

static void attrs_read(kb_reader *r, kg_attrs *a)
{
    for (int i = 0; i < 2; i++) a->kernel[i] = kb_get_i32(r);
    for (int i = 0; i < 2; i++) a->stride[i] = kb_get_i32(r);
    for (int i = 0; i < 2; i++) a->dilation[i] = kb_get_i32(r);
    for (int i = 0; i < 4; i++) a->pad[i] = kb_get_i32(r);
    a->group = kb_get_i32(r);
    a->ceil_mode = kb_get_i32(r);
    a->count_include_pad = kb_get_i32(r);
    a->axis = kb_get_i32(r);
    a->alpha = kb_get_f32(r);
    a->min = kb_get_f32(r);
    a->max = kb_get_f32(r);
    a->epsilon = kb_get_f32(r);
    a->act = (kg_act)kb_get_i32(r);
    a->residual = kb_get_i32(r);
    a->shape_n = kb_get_i32(r);
    for (int i = 0; i < KILN_MAX_DIMS; i++) a->shape[i] = kb_get_i64(r);
    for (int i = 0; i < 2 * KILN_MAX_DIMS; i++) a->pads[i] = kb_get_i64(r);
    a->pad_value = kb_get_f32(r);
    a->flat = kb_get_i32(r);
}

kiln_status kf_graph_encode(const kg_graph *g, kb_writer *w, kb_writer *wt, char err[KG_ERRLEN])
{
    kb_str(w, g->name ? g->name : "");
    kb_u32(w, (uint32_t)g->n_values);
    for (int i = 0; i < g->n_values; i++) {
        const kg_value *v = &g->values[i];
        kb_str(w, v->name);
        kb_u8(w, (uint8_t)v->kind);
        kb_u8(w, (uint8_t)v->ndim);
        for (int d = 0; d < v->ndim; d++) kb_i64(w, v->dims[d]);
        if (v->kind == KG_CONST) {
            int64_t n = kg_numel(v);
            if (n < 0 || !v->data)
                return kg_fail(err, KILN_ERR_INVALID_ARG, "constant '%s' has no data", v->name);
            size_t bytes = (size_t)n * sizeof(float);
            if (v->bytes > bytes) bytes = v->bytes;
            kb_align(wt, KILN_ALIGN);
            kb_u64(w, wt->len);
            kb_u64(w, bytes);
            kb_put(wt, v->data, bytes);
        }
    }
    kb_u32(w, (uint32_t)g->n_nodes);
    for (int i = 0; i < g->n_nodes; i++) {
        const kg_node *n = &g->nodes[i];
        kb_str(w, n->name);
        kb_u32(w, (uint32_t)n->op);
        kb_u32(w, (uint32_t)n->n_in);
        for (int k = 0; k < n->n_in; k++) kb_i32(w, n->in[k]);
        kb_i32(w, n->out);
        size_t at = w->len;
        kb_u32(w, 0);
        attrs_write(w, &n->a);
        if (!w->oom) {
            uint32_t len = (uint32_t)(w->len - at - 4);
            for (int b = 0; b < 4; b++) w->buf[at + b] = (unsigned char)(len >> (8 * b));
        }
    }
    kb_u32(w, (uint32_t)g->n_inputs);
    for (int i = 0; i < g->n_inputs; i++) kb_i32(w, g->inputs[i]);
    kb_u32(w, (uint32_t)g->n_outputs);
    for (int i = 0; i < g->n_outputs; i++) kb_i32(w, g->outputs[i]);
    if (w->oom || wt->oom) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory encoding graph");
    return KILN_OK;
}

static kiln_status decode_values(kb_reader *r, const unsigned char *weights, size_t wlen,
                                 kg_graph *g, char *err)
{
    uint32_t nv = kb_get_u32(r);
    if (nv > MAX_COUNT) return kg_fail(err, KILN_ERR_FORMAT, "graph: %u values is too many", nv);
    for (uint32_t i = 0; i < nv; i++) {
        char *name = kb_get_str(r, MAX_NAME);
        if (!name)
            return r->bad ? kg_fail(err, KILN_ERR_FORMAT, "graph: value %u: truncated name", i)
                          : kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        unsigned kind = kb_get_u8(r), ndim = kb_get_u8(r);
        int64_t dims[KILN_MAX_DIMS] = {0};
        kiln_status st = KILN_OK;
        if (kind > KG_CONST || ndim > KILN_MAX_DIMS) {
            st = kg_fail(err, KILN_ERR_FORMAT, "graph: value '%s': bad kind %u or rank %u", name,
                         kind, ndim);
            goto fail;
        }
        for (unsigned d = 0; d < ndim; d++) {
            dims[d] = kb_get_i64(r);
            if (dims[d] < 0 || dims[d] > MAX_DIM) {
                st = kg_fail(err, KILN_ERR_FORMAT, "graph: value '%s': bad dimension %lld", name,
                             (long long)dims[d]);
                goto fail;
            }
        }
        int id;
        if (kind == KG_CONST) {
            uint64_t off = kb_get_u64(r), bytes = kb_get_u64(r);
            kg_value tmp = {.ndim = (int)ndim};
            memcpy(tmp.dims, dims, sizeof dims);
            int64_t n = kg_numel(&tmp);
            if (r->bad || n < 0 || (uint64_t)n > UINT64_MAX / 4 || bytes < (uint64_t)n * 4 ||
                off % KILN_ALIGN || off > wlen || bytes > wlen - off) {
                st = kg_fail(err, KILN_ERR_FORMAT,
                             "graph: constant '%s': %llu bytes at %llu do not fit the %zu-byte "
                             "weights section or its shape",
                             name, (unsigned long long)bytes, (unsigned long long)off, wlen);
                goto fail;
            }
            id = kg_add_const(g, name, (int)ndim, dims, (float *)(weights + off), 0);
            if (id >= 0) g->values[id].bytes = (size_t)bytes;
        } else {
            id = kg_add_value(g, name, (kg_kind)kind, (int)ndim, dims);
        }
        if (r->bad) {
            st = kg_fail(err, KILN_ERR_FORMAT, "graph: value %u ('%s') truncated", i, name);
            goto fail;
        }
        if (id < 0) {
            st = kg_fail(err, KILN_ERR_FORMAT, "graph: value name '%s' repeated", name);
            goto fail;
        }
        free(name);
        continue;
    fail:
        free(name);
        return st;
    }
    return KILN_OK;
}

static kiln_status decode_nodes(kb_reader *r, kg_graph *g, char *err)
{
    uint32_t nn = kb_get_u32(r);
    if (nn > MAX_COUNT) return kg_fail(err, KILN_ERR_FORMAT, "graph: %u nodes is too many", nn);
    for (uint32_t i = 0; i < nn; i++) {
        kiln_status st = KILN_OK;
        char *name = kb_get_str(r, MAX_NAME);
        if (!name)
            return r->bad ? kg_fail(err, KILN_ERR_FORMAT, "graph: node %u: truncated name", i)
                          : kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        uint32_t op = kb_get_u32(r), n_in = kb_get_u32(r);
        int in[KG_MAX_IN];
        if (op >= KG_OP_COUNT_ || n_in > KG_MAX_IN) {
            st = kg_fail(err, KILN_ERR_FORMAT, "graph: node '%s': bad op %u or %u inputs", name, op,
                         n_in);
            goto fail;
        }
        for (uint32_t k = 0; k < n_in; k++) {
            in[k] = kb_get_i32(r);
            if (in[k] < -1 || in[k] >= g->n_values) {
                st = kg_fail(err, KILN_ERR_FORMAT, "graph: node '%s': input %u out of range", name,
                             k);
                goto fail;
            }
        }
        int out = kb_get_i32(r);
        uint32_t alen = kb_get_u32(r);
        kb_reader ar = {.p = r->p + r->pos, .len = alen};
        if (!kb_take(r, alen)) {
            st = kg_fail(err, KILN_ERR_FORMAT, "graph: node '%s' truncated", name);
            goto fail;
        }
        kg_attrs a;
        kg_attrs_default(&a);
        attrs_read(&ar, &a);
        if (ar.bad || (unsigned)a.act >= KG_ACT_COUNT_) {
            st = kg_fail(err, KILN_ERR_FORMAT, "graph: node '%s': bad attributes", name);
            goto fail;
        }
        if (kg_add_node(g, name, (kg_op)op, in, (int)n_in, out, &a) < 0) {
            st = kg_fail(err, KILN_ERR_FORMAT,
                         "graph: node '%s': output %d is not a fresh activation", name, out);
            goto fail;
        }
        free(name);
        continue;
    fail:
        free(name);
        return st;
    }
    return KILN_OK;
}

static kiln_status decode_ends(kb_reader *r, int *ids, int *n, const kg_graph *g, const char *what,
                               char *err)
{
    uint32_t cnt = kb_get_u32(r);
    if (r->bad || cnt < 1 || cnt > 8)
        return kg_fail(err, KILN_ERR_FORMAT, "graph: bad %s count", what);
    for (uint32_t i = 0; i < cnt; i++) {
        ids[i] = kb_get_i32(r);
        if (r->bad || ids[i] < 0 || ids[i] >= g->n_values)
            return kg_fail(err, KILN_ERR_FORMAT, "graph: %s %u out of range", what, i);
    }
    *n = (int)cnt;
    return KILN_OK;
}

kiln_status kf_graph_decode(const unsigned char *p, size_t len, const unsigned char *weights,
                            size_t wlen, kg_graph **out, char err[KG_ERRLEN])
{
    *out = NULL;
    kb_reader r = {.p = p, .len = len};
    kg_graph *g = kg_graph_new();
    if (!g) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st;
    g->name = kb_get_str(&r, MAX_NAME);
    if (!g->name) {
        st = kg_fail(err, r.bad ? KILN_ERR_FORMAT : KILN_ERR_NO_MEMORY, "graph: bad name");
        goto fail;
    }
    if ((st = decode_values(&r, weights, wlen, g, err))) goto fail;
    if ((st = decode_nodes(&r, g, err))) goto fail;
    if ((st = decode_ends(&r, g->inputs, &g->n_inputs, g, "input", err))) goto fail;
    if ((st = decode_ends(&r, g->outputs, &g->n_outputs, g, "output", err))) goto fail;
    if (r.pos != r.len) {
        st = kg_fail(err, KILN_ERR_FORMAT, "graph: %zu stray bytes at the end", r.len - r.pos);
        goto fail;
    }
    if ((st = kg_graph_check(g, err))) goto fail;
    *out = g;
    return KILN_OK;
fail:
    kg_graph_free(g);
    return st;
}

void kf_meta_encode(const kg_meta *m, kb_writer *w)
{
    kb_u32(w, (uint32_t)m->n);
    for (int i = 0; i < m->n; i++) {
        kb_str(w, m->keys[i]);
        kb_str(w, m->vals[i]);
    }
}

kiln_status kf_meta_decode(const unsigned char *p, size_t len, kg_meta *m, char err[KG_ERRLEN])
{
    kb_reader r = {.p = p, .len = len};
    uint32_t n = kb_get_u32(&r);
    if (r.bad || n > 65536) return kg_fail(err, KILN_ERR_FORMAT, "meta: bad entry count");
    for (uint32_t i = 0; i < n; i++) {
        char *k = kb_get_str(&r, MAX_NAME), *v = k ? kb_get_str(&r, 64u << 20) : NULL;
        kiln_status st = KILN_OK;
        if (!k || !v)
            st = r.bad ? kg_fail(err, KILN_ERR_FORMAT, "meta: entry %u truncated", i)
                       : kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        else if (kg_meta_set(m, k, v))
            st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        free(k);
        free(v);
        if (st) {
            kg_meta_free(m);
            return st;
        }
    }
    if (r.pos != r.len) {
        kg_meta_free(m);
        return kg_fail(err, KILN_ERR_FORMAT, "meta: stray bytes at the end");
    }
    return KILN_OK;
}

void kg_meta_free(kg_meta *m)
{
    for (int i = 0; i < m->n; i++) {
        free(m->keys[i]);
        free(m->vals[i]);
    }
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

const char *kg_meta_get(const kg_meta *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) return m->vals[i];
    return NULL;
}

kiln_status kg_meta_set(kg_meta *m, const char *key, const char *val)
{
    char *v = strdup(val);
    if (!v) return KILN_ERR_NO_MEMORY;
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->keys[i], key)) {
            free(m->vals[i]);
            m->vals[i] = v;
            return KILN_OK;
        }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 8;
        char **k = realloc(m->keys, (size_t)cap * sizeof *k);
        if (!k) goto oom;
        m->keys = k;
        char **vv = realloc(m->vals, (size_t)cap * sizeof *vv);
        if (!vv) goto oom;
        m->vals = vv;
        m->cap = cap;
    }
    m->keys[m->n] = strdup(key);
    if (!m->keys[m->n]) goto oom;
    m->vals[m->n++] = v;
    return KILN_OK;
oom:
    free(v);
    return KILN_ERR_NO_MEMORY;
}
