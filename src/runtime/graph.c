/* Graph IR: construction, ownership and structural checks. */
#include "graph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[KG_OP_COUNT_] = {
#define KG_OP_NAME_(e, s) s,
    KG_OP_MAP(KG_OP_NAME_)
#undef KG_OP_NAME_
};

static const char *const act_names[KG_ACT_COUNT_] = {"none", "relu", "clip", "leaky", "sigmoid"};

const char *kg_op_name(kg_op op)
{
    return (unsigned)op < KG_OP_COUNT_ ? op_names[op] : "?";
}

kg_op kg_op_from_name(const char *name)
{
    for (int i = 0; i < KG_OP_COUNT_; i++)
        if (!strcmp(op_names[i], name)) return (kg_op)i;
    return KG_OP_COUNT_;
}

const char *kg_act_name(kg_act act)
{
    return (unsigned)act < KG_ACT_COUNT_ ? act_names[act] : "?";
}

kiln_status kg_fail(char *err, kiln_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, KG_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return st;
}

kg_graph *kg_graph_new(void)
{
    return calloc(1, sizeof(kg_graph));
}

void kg_graph_free(kg_graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_values; i++) {
        free(g->values[i].name);
        if (g->values[i].owned) free(g->values[i].data);
    }
    for (int i = 0; i < g->n_nodes; i++) free(g->nodes[i].name);
    free(g->values);
    free(g->nodes);
    free(g->name);
    free(g);
}

void kg_attrs_default(kg_attrs *a)
{
    memset(a, 0, sizeof *a);
    a->stride[0] = a->stride[1] = 1;
    a->dilation[0] = a->dilation[1] = 1;
    a->group = 1;
    a->axis = 1;
    a->alpha = 0.01f;
    a->epsilon = 1e-5f;
    a->min = -INFINITY;
    a->max = INFINITY;
}

int kg_find_value(const kg_graph *g, const char *name)
{
    for (int i = 0; i < g->n_values; i++)
        if (!strcmp(g->values[i].name, name)) return i;
    return -1;
}

int kg_add_value(kg_graph *g, const char *name, kg_kind kind, int ndim, const int64_t *dims)
{
    if (!g || !name || ndim < 0 || ndim > KILN_MAX_DIMS || (ndim && !dims)) return -1;
    if (kg_find_value(g, name) >= 0) return -1;
    if (g->n_values == g->cap_values) {
        int cap = g->cap_values ? 2 * g->cap_values : 64;
        kg_value *v = realloc(g->values, (size_t)cap * sizeof *v);
        if (!v) return -1;
        g->values = v;
        g->cap_values = cap;
    }
    kg_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = strdup(name);
    if (!v->name) return -1;
    v->kind = kind;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->dims[i] = dims[i];
    v->producer = -1;
    return g->n_values++;
}

int kg_add_const(kg_graph *g, const char *name, int ndim, const int64_t *dims, float *data,
                 int owned)
{
    int id = kg_add_value(g, name, KG_CONST, ndim, dims);
    if (id < 0) return -1;
    g->values[id].data = data;
    g->values[id].owned = owned;
    return id;
}

int kg_add_const_zeros(kg_graph *g, const char *name, int ndim, const int64_t *dims)
{
    kg_value tmp = {.ndim = ndim};
    for (int i = 0; i < ndim && i < KILN_MAX_DIMS; i++) tmp.dims[i] = dims[i];
    int64_t n = kg_numel(&tmp);
    if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(float) - 1) return -1;
    float *data = calloc((size_t)n + 1, sizeof(float));
    if (!data) return -1;
    int id = kg_add_const(g, name, ndim, dims, data, 1);
    if (id < 0) free(data);
    return id;
}

int kg_add_node(kg_graph *g, const char *name, kg_op op, const int *in, int n_in, int out,
                const kg_attrs *a)
{
    if (!g || !name || (unsigned)op >= KG_OP_COUNT_ || n_in < 0 || n_in > KG_MAX_IN) return -1;
    if (out < 0 || out >= g->n_values || g->values[out].producer >= 0 ||
        g->values[out].kind != KG_ACTIVATION)
        return -1;
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? 2 * g->cap_nodes : 64;
        kg_node *n = realloc(g->nodes, (size_t)cap * sizeof *n);
        if (!n) return -1;
        g->nodes = n;
        g->cap_nodes = cap;
    }
    kg_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = strdup(name);
    if (!n->name) return -1;
    n->op = op;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    n->out = out;
    if (a)
        n->a = *a;
    else
        kg_attrs_default(&n->a);
    g->values[out].producer = g->n_nodes;
    return g->n_nodes++;
}

int64_t kg_numel(const kg_value *v)
{
    int64_t p = 1;
    for (int i = 0; i < v->ndim; i++) {
        if (v->dims[i] < 0) return -1;
        if (v->dims[i] && p > INT64_MAX / v->dims[i]) return -1;
        p *= v->dims[i];
    }
    return p;
}

const char *kg_shape_str(int ndim, const int64_t *dims, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    if (ndim == 0) snprintf(buf, len, "scalar");
    for (int i = 0; i < ndim && used < len; i++) {
        int w = snprintf(buf + used, len - used, i ? "x%lld" : "%lld", (long long)dims[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
    return buf;
}

kiln_status kg_graph_check(const kg_graph *g, char err[KG_ERRLEN])
{
    if (g->n_inputs < 1 || g->n_outputs < 1)
        return kg_fail(err, KILN_ERR_FORMAT, "graph has no inputs or no outputs");
    for (int i = 0; i < g->n_inputs; i++) {
        int v = g->inputs[i];
        if (v < 0 || v >= g->n_values || g->values[v].kind != KG_INPUT)
            return kg_fail(err, KILN_ERR_FORMAT, "graph input %d is not an input value", i);
    }
    for (int i = 0; i < g->n_outputs; i++) {
        int v = g->outputs[i];
        if (v < 0 || v >= g->n_values || g->values[v].kind != KG_ACTIVATION ||
            g->values[v].producer < 0)
            return kg_fail(err, KILN_ERR_FORMAT, "graph output %d is not computed by a node", i);
    }
    for (int i = 0; i < g->n_values; i++) {
        const kg_value *v = &g->values[i];
        if (v->kind == KG_CONST && (!v->data || kg_numel(v) < 0))
            return kg_fail(err, KILN_ERR_FORMAT, "constant '%s' has no data", v->name);
        if (v->kind == KG_ACTIVATION && v->producer < 0)
            return kg_fail(err, KILN_ERR_FORMAT, "value '%s' is used but never computed", v->name);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const kg_node *n = &g->nodes[i];
        if ((unsigned)n->op >= KG_OP_COUNT_)
            return kg_fail(err, KILN_ERR_FORMAT, "node %d has an unknown op", i);
        if (n->out < 0 || n->out >= g->n_values || g->values[n->out].producer != i)
            return kg_fail(err, KILN_ERR_FORMAT, "%s: bad output", n->name);
        if (n->n_in < 0 || n->n_in > KG_MAX_IN)
            return kg_fail(err, KILN_ERR_FORMAT, "%s: bad input count", n->name);
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v == -1) continue;
            if (v < 0 || v >= g->n_values)
                return kg_fail(err, KILN_ERR_FORMAT, "%s: input %d out of range", n->name, k);
            const kg_value *iv = &g->values[v];
            if (iv->kind == KG_ACTIVATION && iv->producer >= i)
                return kg_fail(err, KILN_ERR_FORMAT, "%s: input '%s' is computed later (cycle?)",
                               n->name, iv->name);
        }
    }
    return KILN_OK;
}
