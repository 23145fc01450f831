/* Batch-norm folding, epilogue fusion and weight prepacking (optimize.h). */
#include "optimize.h"
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct work_node {
    kg_node n;    /* a copy; name borrowed from the source graph */
    int dead;     /* merged into another node */
    float *w, *b; /* folded conv weights and bias (malloc'd), or NULL */
} work_node;

static int is_act(kg_op op)
{
    return op == KG_OP_RELU || op == KG_OP_CLIP || op == KG_OP_LEAKYRELU || op == KG_OP_SIGMOID;
}

static int same_dims(const kg_value *a, const kg_value *b)
{
    return a->ndim == b->ndim && !memcmp(a->dims, b->dims, sizeof a->dims);
}

/* conv output channel oc scaled by s[oc], bias b*s + t. */
static kiln_status fold_bn(const kg_graph *g, work_node *conv, const kg_node *bn, char *err)
{
    const kg_value *w = &g->values[conv->n.in[1]];
    int64_t oc = w->dims[0], per = kg_numel(w) / (oc ? oc : 1);
    const float *gamma = g->values[bn->in[1]].data, *beta = g->values[bn->in[2]].data,
                *mean = g->values[bn->in[3]].data, *var = g->values[bn->in[4]].data;
    float *nw = malloc((size_t)kg_numel(w) * sizeof *nw), *nb = malloc((size_t)oc * sizeof *nb);
    if (!nw || !nb) {
        free(nw);
        free(nb);
        return kg_fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory folding batch norm", bn->name);
    }
    const float *ow = conv->w ? conv->w : w->data;
    const float *ob = conv->b                                  ? conv->b
                      : conv->n.n_in > 2 && conv->n.in[2] >= 0 ? g->values[conv->n.in[2]].data
                                                               : NULL;
    for (int64_t c = 0; c < oc; c++) {
        float s = gamma[c] / sqrtf(var[c] + bn->a.epsilon);
        for (int64_t k = 0; k < per; k++) nw[c * per + k] = ow[c * per + k] * s;
        nb[c] = ((ob ? ob[c] : 0.f) - mean[c]) * s + beta[c];
    }
    free(conv->w);
    free(conv->b);
    conv->w = nw;
    conv->b = nb;
    return KILN_OK;
}

/* Adds old value v to the new graph (once) and returns its new index. */
static int carry_value(kg_graph *g, kg_graph *ng, int *map, int v)
{
    if (v < 0) return -1;
    if (map[v] >= 0) return map[v];
    kg_value *ov = &g->values[v];
    int id;
    if (ov->kind == KG_CONST) {
        id = kg_add_const(ng, ov->name, ov->ndim, ov->dims, ov->data, ov->owned);
        if (id >= 0) {
            ng->values[id].bytes = ov->bytes;
            ov->owned = 0; /* ownership moves */
        }
    } else {
        id = kg_add_value(ng, ov->name, ov->kind, ov->ndim, ov->dims);
    }
    map[v] = id;
    return id;
}

static int add_owned_const(kg_graph *ng, const char *node, const char *suffix, int ndim,
                           const int64_t *dims, float *data)
{
    char name[512];
    snprintf(name, sizeof name, "%s.%s", node, suffix);
    for (int k = 2; kg_find_value(ng, name) >= 0; k++)
        snprintf(name, sizeof name, "%s.%s%d", node, suffix, k);
    return kg_add_const(ng, name, ndim, dims, data, 1);
}

static kiln_status prepack(kg_graph *ng, char *err)
{
    for (int i = 0; i < ng->n_nodes; i++) {
        kg_node *n = &ng->nodes[i];
        if (n->op != KG_OP_CONV && n->op != KG_OP_DENSE) continue;
        kg_value *w = &ng->values[n->in[1]];
        size_t need;
        kiln_conv2d_shape cs = {0};
        kiln_dense_shape ds = {0};
        if (n->op == KG_OP_CONV) {
            cs = (kiln_conv2d_shape){.c_out = (int)w->dims[0],
                                     .c_in = (int)(w->dims[1] * n->a.group),
                                     .k_h = (int)w->dims[2],
                                     .k_w = (int)w->dims[3],
                                     .groups = n->a.group};
            need = kiln_conv2d_packed_size(&cs);
        } else {
            ds = (kiln_dense_shape){.batch = 1, .in = (int)w->dims[1], .out = (int)w->dims[0]};
            need = kiln_dense_packed_size(&ds);
        }
        if (w->bytes == need) continue; /* already packed */
        float *p = aligned_alloc(KILN_ALIGN, need);
        if (!p) return kg_fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory packing", n->name);
        if (n->op == KG_OP_CONV)
            kiln_conv2d_pack(&cs, w->data, p);
        else
            kiln_dense_pack(&ds, w->data, p);
        if (w->owned) free(w->data);
        w->data = p;
        w->owned = 1;
        w->bytes = need;
    }
    return KILN_OK;
}

kiln_status kc_optimize(kg_graph **gp, char err[KG_ERRLEN])
{
    kg_graph *g = *gp, *ng = NULL;
    kiln_status st = kg_infer_shapes(g, 0, err);
    if (st) return st;
    int nv = g->n_values, nn = g->n_nodes;
    work_node *wn = calloc((size_t)nn + 1, sizeof *wn);
    int *uses = calloc((size_t)nv + 1, sizeof *uses),
        *prod = malloc(((size_t)nv + 1) * sizeof *prod),
        *map = malloc(((size_t)nv + 1) * sizeof *map);
    if (!wn || !uses || !prod || !map) {
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory optimizing");
        goto done;
    }
    for (int v = 0; v < nv; v++) {
        prod[v] = g->values[v].producer;
        map[v] = -1;
    }
    for (int i = 0; i < nn; i++) {
        wn[i].n = g->nodes[i];
        for (int k = 0; k < wn[i].n.n_in; k++)
            if (wn[i].n.in[k] >= 0) uses[wn[i].n.in[k]]++;
    }
    for (int i = 0; i < g->n_outputs; i++) uses[g->outputs[i]]++;

    for (int i = 0; i < nn; i++) {
        kg_node *n = &wn[i].n;
        int x = n->in[0];
        int p = x >= 0 ? prod[x] : -1;
        work_node *pw = p >= 0 ? &wn[p] : NULL;
        int plain = pw && uses[x] == 1 && pw->n.a.act == KG_ACT_NONE;
        if (n->op == KG_OP_BATCHNORM && plain && pw->n.op == KG_OP_CONV && !pw->n.a.residual) {
            if ((st = fold_bn(g, pw, n, err))) goto done;
        } else if (is_act(n->op) && plain && (pw->n.op == KG_OP_CONV || pw->n.op == KG_OP_DENSE)) {
            kg_attrs *a = &pw->n.a;
            a->act = n->op == KG_OP_RELU      ? KG_ACT_RELU
                     : n->op == KG_OP_CLIP    ? KG_ACT_CLIP
                     : n->op == KG_OP_SIGMOID ? KG_ACT_SIGMOID
                                              : KG_ACT_LEAKY;
            a->min = n->a.min;
            a->max = n->a.max;
            a->alpha = n->a.alpha;
        } else if (n->op == KG_OP_ADD && n->n_in == 2 && n->in[1] >= 0 &&
                   same_dims(&g->values[n->in[0]], &g->values[n->in[1]]) &&
                   g->values[n->in[0]].kind == KG_ACTIVATION &&
                   g->values[n->in[1]].kind == KG_ACTIVATION) {
            /* Fuse into the conv computed later, whose other operand is
             * then already available. */
            int best = -1, other = -1;
            for (int k = 0; k < 2; k++) {
                int v = n->in[k], o = n->in[1 - k], q = prod[v];
                if (q < 0 || uses[v] != 1 || wn[q].n.op != KG_OP_CONV || wn[q].n.a.residual ||
                    wn[q].n.a.act != KG_ACT_NONE || v == o)
                    continue;
                if (prod[o] >= q) continue;
                if (q > best) {
                    best = q;
                    other = o;
                }
            }
            if (best < 0) continue;
            kg_node *c = &wn[best].n;
            if (c->n_in < 3) c->in[2] = -1;
            c->in[3] = other;
            c->n_in = 4;
            c->a.residual = 1;
            c->out = n->out;
            prod[n->out] = best;
            wn[i].dead = 1;
            continue;
        } else {
            continue;
        }
        /* merged into the producer: it now writes this node's output */
        pw->n.out = n->out;
        prod[n->out] = p;
        wn[i].dead = 1;
    }

    ng = kg_graph_new();
    if (!ng || !(ng->name = strdup(g->name ? g->name : ""))) goto oom;
    for (int i = 0; i < g->n_inputs; i++) {
        int id = carry_value(g, ng, map, g->inputs[i]);
        if (id < 0) goto oom;
        ng->inputs[ng->n_inputs++] = id;
    }
    for (int i = 0; i < nn; i++) {
        if (wn[i].dead) continue;
        kg_node n = wn[i].n;
        for (int k = 0; k < n.n_in; k++) {
            if (n.in[k] < 0) continue;
            int id;
            if (k == 1 && wn[i].w) {
                const kg_value *w = &g->values[n.in[1]];
                id = add_owned_const(ng, n.name, "w", w->ndim, w->dims, wn[i].w);
                if (id >= 0) wn[i].w = NULL;
            } else {
                id = carry_value(g, ng, map, n.in[k]);
            }
            if (id < 0) goto oom;
            n.in[k] = id;
        }
        if (wn[i].b) {
            int64_t oc = g->values[wn[i].n.in[1]].dims[0];
            int id = add_owned_const(ng, n.name, "b", 1, &oc, wn[i].b);
            if (id < 0) goto oom;
            wn[i].b = NULL;
            if (n.n_in < 3) n.n_in = 3;
            n.in[2] = id;
        }
        int out = carry_value(g, ng, map, n.out);
        if (out < 0 || kg_add_node(ng, n.name, n.op, n.in, n.n_in, out, &n.a) < 0) goto oom;
    }
    for (int i = 0; i < g->n_outputs; i++) {
        int id = map[g->outputs[i]];
        if (id < 0) {
            st = kg_fail(err, KILN_ERR_FORMAT, "output '%s' is not computed",
                         g->values[g->outputs[i]].name);
            goto done;
        }
        ng->outputs[ng->n_outputs++] = id;
    }
    if ((st = prepack(ng, err))) goto done;
    if ((st = kg_infer_shapes(ng, 0, err))) goto done;
    kg_graph_free(g);
    *gp = ng;
    ng = NULL;
    st = KILN_OK;
    goto done;
oom:
    st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory optimizing");
done:
    if (ng) {
        /* give constants back to the source graph, which still holds them */
        for (int v = 0; v < nv && map; v++)
            if (map[v] >= 0 && g->values[v].kind == KG_CONST && ng->values[map[v]].owned &&
                ng->values[map[v]].data == g->values[v].data) {
                g->values[v].owned = 1;
                ng->values[map[v]].owned = 0;
            }
        kg_graph_free(ng);
    }
    if (wn)
        for (int i = 0; i < nn; i++) {
            free(wn[i].w);
            free(wn[i].b);
        }
    free(wn);
    free(uses);
    free(prod);
    free(map);
    return st;
}
