/* Trained nets to .kiln model files (graph + weights + meta) and back. */
#include "export.h"

#include "model_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A constant holding a copy of n floats. */
static int add_copy(kg_graph *g, const char *name, int ndim, const int64_t *dims, const float *src,
                    int64_t n)
{
    int id = kg_add_const_zeros(g, name, ndim, dims);
    if (id >= 0) memcpy(g->values[id].data, src, (size_t)n * sizeof(float));
    return id;
}

static int add_out(kg_graph *g, const char *name, kg_op op, const int *in, int n_in,
                   const kg_attrs *a)
{
    char oname[96];
    snprintf(oname, sizeof oname, "%s.out", name);
    int out = kg_add_value(g, oname, KG_ACTIVATION, 0, NULL);
    if (out < 0 || kg_add_node(g, name, op, in, n_in, out, a) < 0) return -1;
    return out;
}

kiln_status kt_export_graph(const kt_net *net, kg_graph **out, kiln_errbuf *err)
{
    *out = NULL;
    kg_graph *g = kg_graph_new();
    if (!g) return kiln__fail(err, KILN_ERR_NO_MEMORY, "export: out of memory");
    const kt_arch *ar = &net->arch;
    g->name = strdup(ar->name);
    int64_t in_dims[4] = {1, ar->channels, ar->height, ar->width};
    const int image = kg_add_value(g, "image", KG_INPUT, 4, in_dims);
    if (image < 0 || !g->name) goto oom;
    g->inputs[g->n_inputs++] = image;
    int nconv = 0, nbn = 0, nrelu = 0, npool = 0, ndense = 0, nadd = 0, cur = image;
    int vid[KT_MAX_LAYERS], rank[KT_MAX_LAYERS]; /* each layer's output value and its rank */
    for (int i = 0; i < net->nlayers; i++) {
        const kt_layer *L = &net->layers[i];
        cur = L->s.src >= 0 ? vid[L->s.src] : image;
        rank[i] = L->s.src >= 0 ? rank[L->s.src] : 4;
        if (L->s.kind == KT_DENSE && rank[i] == 4) {
            /* the trainer's dense flattens implicitly (after gap); the graph's does not */
            kg_attrs fa;
            kg_attrs_default(&fa);
            fa.axis = 1;
            char fname[64];
            snprintf(fname, sizeof fname, "flatten%d", i + 1);
            if ((cur = add_out(g, fname, KG_OP_FLATTEN, &cur, 1, &fa)) < 0) goto oom;
        }
        if (L->s.kind == KT_DENSE || L->s.kind == KT_FLATTEN) rank[i] = 2;
        char name[64], cn[96];
        kg_attrs a;
        kg_attrs_default(&a);
        switch (L->s.kind) {
        case KT_CONV: {
            snprintf(name, sizeof name, "conv%d", ++nconv);
            int64_t wd[4] = {L->out_c, L->in_c, L->s.kernel, L->s.kernel};
            snprintf(cn, sizeof cn, "%s.weight", name);
            int w = add_copy(g, cn, 4, wd, L->w, L->nw), b = -1;
            if (L->b) {
                int64_t bd = L->out_c;
                snprintf(cn, sizeof cn, "%s.bias", name);
                b = add_copy(g, cn, 1, &bd, L->b, L->nb);
                if (b < 0) goto oom;
            }
            if (w < 0) goto oom;
            a.kernel[0] = a.kernel[1] = L->s.kernel;
            a.stride[0] = a.stride[1] = L->s.stride;
            a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = L->s.pad;
            cur = add_out(g, name, KG_OP_CONV, (int[]){cur, w, b}, 3, &a);
            break;
        }
        case KT_BN: {
            snprintf(name, sizeof name, "bn%d", ++nbn);
            int64_t c = L->out_c;
            const char *what[4] = {"gamma", "beta", "mean", "var"};
            const float *src[4] = {L->w, L->b, L->run_mean, L->run_var};
            int in[5] = {cur};
            for (int k = 0; k < 4; k++) {
                snprintf(cn, sizeof cn, "%s.%s", name, what[k]);
                if ((in[k + 1] = add_copy(g, cn, 1, &c, src[k], c)) < 0) goto oom;
            }
            a.epsilon = L->s.eps;
            cur = add_out(g, name, KG_OP_BATCHNORM, in, 5, &a);
            break;
        }
        case KT_RELU:
            snprintf(name, sizeof name, "relu%d", ++nrelu);
            cur = add_out(g, name, KG_OP_RELU, &cur, 1, &a);
            break;
        case KT_MAXPOOL:
        case KT_AVGPOOL:
            snprintf(name, sizeof name, "pool%d", ++npool);
            a.kernel[0] = a.kernel[1] = L->s.kernel;
            a.stride[0] = a.stride[1] = L->s.stride;
            a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = L->s.pad;
            a.count_include_pad = 0;
            cur = add_out(g, name, L->s.kind == KT_MAXPOOL ? KG_OP_MAXPOOL : KG_OP_AVGPOOL, &cur, 1,
                          &a);
            break;
        case KT_GAP:
            snprintf(name, sizeof name, "gap%d", ++npool);
            cur = add_out(g, name, KG_OP_GLOBALAVGPOOL, &cur, 1, &a);
            break;
        case KT_FLATTEN:
            snprintf(name, sizeof name, "flatten%d", i + 1);
            a.axis = 1;
            cur = add_out(g, name, KG_OP_FLATTEN, &cur, 1, &a);
            break;
        case KT_DENSE: {
            snprintf(name, sizeof name, "fc%d", ++ndense);
            int64_t wd[2] = {L->s.units, L->in_size};
            snprintf(cn, sizeof cn, "%s.weight", name);
            int w = add_copy(g, cn, 2, wd, L->w, L->nw), b = -1;
            if (L->b) {
                int64_t bd = L->s.units;
                snprintf(cn, sizeof cn, "%s.bias", name);
                b = add_copy(g, cn, 1, &bd, L->b, L->nb);
                if (b < 0) goto oom;
            }
            if (w < 0) goto oom;
            cur = add_out(g, name, KG_OP_DENSE, (int[]){cur, w, b}, 3, &a);
            break;
        }
        case KT_ADD:
            snprintf(name, sizeof name, "add%d", ++nadd);
            cur = add_out(g, name, KG_OP_ADD, (int[]){cur, L->s.skip >= 0 ? vid[L->s.skip] : image},
                          2, &a);
            break;
        }
        if (cur < 0) goto oom;
        vid[i] = cur;
    }
    if (ar->softmax) {
        kg_attrs a;
        kg_attrs_default(&a);
        a.axis = 1;
        cur = add_out(g, "prob", KG_OP_SOFTMAX, &cur, 1, &a);
        if (cur < 0) goto oom;
    }
    g->outputs[g->n_outputs++] = cur;
    char ge[KG_ERRLEN];
    kiln_status st = kg_infer_shapes(g, 1, ge);
    if (st != KILN_OK) {
        kg_graph_free(g);
        return kiln__fail(err, st, "export: %s", ge);
    }
    *out = g;
    return KILN_OK;
oom:
    kg_graph_free(g);
    return kiln__fail(err, KILN_ERR_NO_MEMORY, "export: out of memory");
}

kiln_status kt_export_kiln(const char *path, const kt_net *net, const kt_meta *meta,
                           kiln_errbuf *err)
{
    kg_graph *g;
    kiln_status st = kt_export_graph(net, &g, err);
    if (st != KILN_OK) return st;
    kg_meta m = {0};
    for (int i = 0; i < meta->n && st == KILN_OK; i++)
        st = kg_meta_set(&m, meta->key[i], meta->val[i]);
    if (st != KILN_OK) {
        kiln__fail(err, st, "export: out of memory");
    } else {
        char ge[KG_ERRLEN];
        st = kf_write(path, g, &m, 0, ge);
        if (st != KILN_OK) kiln__fail(err, st, "%s", ge);
    }
    kg_meta_free(&m);
    kg_graph_free(g);
    return st;
}

/* The constant at node input k, checked to hold n floats. */
static const float *const_in(const kg_graph *g, const kg_node *nd, int k, int64_t n)
{
    if (k >= nd->n_in || nd->in[k] < 0 || nd->in[k] >= g->n_values) return NULL;
    const kg_value *v = &g->values[nd->in[k]];
    if (v->kind != KG_CONST || !v->data || kg_numel(v) != n) return NULL;
    return v->data;
}

/* The next conv, dense or batch norm node from *ni on, or NULL. */
static const kg_node *next_param_node(const kg_graph *g, int *ni)
{
    while (*ni < g->n_nodes) {
        const kg_node *nd = &g->nodes[(*ni)++];
        if (nd->op == KG_OP_CONV || nd->op == KG_OP_DENSE || nd->op == KG_OP_BATCHNORM) return nd;
    }
    return NULL;
}

kiln_status kt_net_load_graph(kt_net *net, const kg_graph *g, const char *what, int *copied,
                              kiln_errbuf *err)
{
    int ni = 0, n = 0;
    const kg_node *nd = next_param_node(g, &ni);
    float *pending_beta = NULL; /* a folded conv's bias, for the batch norm after it */
    const float *pending_bias = NULL;
    for (int i = 0; i < net->nlayers; i++) {
        kt_layer *L = &net->layers[i];
        if (L->s.kind == KT_BN && pending_beta) {
            /* identity batch norm: gamma 1, mean 0, var 1 - eps, beta = bias */
            for (int c = 0; c < L->out_c; c++) {
                L->w[c] = 1.0f;
                L->b[c] = pending_bias[c];
                L->run_mean[c] = 0.0f;
                L->run_var[c] = 1.0f - L->s.eps;
            }
            pending_beta = NULL;
            n++;
            continue;
        }
        kg_op want = L->s.kind == KT_CONV    ? KG_OP_CONV
                     : L->s.kind == KT_DENSE ? KG_OP_DENSE
                     : L->s.kind == KT_BN    ? KG_OP_BATCHNORM
                                             : KG_OP_COUNT_;
        if (want == KG_OP_COUNT_) continue;
        if (!nd || nd->op != want) {
            if (L->s.kind == KT_DENSE) break; /* a new head */
            return kiln__fail(err, KILN_ERR_FORMAT,
                              "%s: graph does not match the architecture at layer %d (%s)", what,
                              i + 1, nd ? nd->name : "no more layers");
        }
        if (want == KG_OP_BATCHNORM) {
            float *dst[4] = {L->w, L->b, L->run_mean, L->run_var};
            for (int k = 0; k < 4; k++) {
                const float *src = const_in(g, nd, k + 1, L->out_c);
                if (!src)
                    return kiln__fail(err, KILN_ERR_FORMAT, "%s: %s: bad batch norm constants",
                                      what, nd->name);
                memcpy(dst[k], src, (size_t)L->out_c * sizeof(float));
            }
        } else {
            const float *w = const_in(g, nd, 1, L->nw);
            const int has_b = nd->n_in > 2 && nd->in[2] >= 0;
            const float *b = has_b ? const_in(g, nd, 2, L->out_c) : NULL;
            const int folded = want == KG_OP_CONV && b && !L->nb && i + 1 < net->nlayers &&
                               net->layers[i + 1].s.kind == KT_BN;
            if (!w || (has_b && !b) || (L->nb && !b) || (b && !L->nb && !folded)) {
                if (L->s.kind == KT_DENSE) break;
                return kiln__fail(err, KILN_ERR_FORMAT, "%s: %s: weights do not match layer %d",
                                  what, nd->name, i + 1);
            }
            memcpy(L->w, w, (size_t)L->nw * sizeof(float));
            if (L->nb) memcpy(L->b, b, (size_t)L->nb * sizeof(float));
            if (folded) pending_beta = net->layers[i + 1].b, pending_bias = b;
        }
        n++;
        nd = next_param_node(g, &ni);
    }
    if (copied) *copied = n;
    return KILN_OK;
}

kiln_status kt_import_kiln(const char *path, int batch, kt_net *net, kt_meta *meta,
                           kiln_errbuf *err)
{
    kg_graph *g = NULL;
    kg_meta m = {0};
    kf_image img = {0};
    char ge[KG_ERRLEN];
    memset(meta, 0, sizeof *meta);
    kiln_status st = kf_load(path, 0, &g, &m, &img, ge);
    if (st != KILN_OK) return kiln__fail(err, st, "%s", ge);
    const char *arch_yaml = kg_meta_get(&m, "arch");
    kt_arch arch;
    if (!arch_yaml) {
        st = kiln__fail(err, KILN_ERR_UNSUPPORTED,
                        "%s: not a model trained by kiln train (no 'arch' metadata)", path);
        goto done;
    }
    st = kt_arch_parse(arch_yaml, strlen(arch_yaml), path, &arch, err);
    if (st != KILN_OK) goto done;
    kt_optim opt;
    kt_optim_defaults(&opt);
    st = kt_net_build(net, &arch, batch, &opt, 0, err);
    if (st != KILN_OK) goto done;
    int copied = 0, want = 0;
    st = kt_net_load_graph(net, g, path, &copied, err);
    for (int i = 0; i < net->nlayers; i++) {
        kt_layer_kind k = net->layers[i].s.kind;
        want += k == KT_CONV || k == KT_BN || k == KT_DENSE;
    }
    if (st == KILN_OK && copied != want) /* its own graph must fit it whole */
        st = kiln__fail(err, KILN_ERR_FORMAT,
                        "%s: graph does not match its architecture (%d of %d layers)", path, copied,
                        want);
    for (int i = 0; i < m.n && st == KILN_OK; i++)
        if (kt_meta_set(meta, m.keys[i], m.vals[i]) != KILN_OK)
            st = kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    if (st != KILN_OK) {
        kt_net_free(net);
        kt_meta_free(meta);
    }
done:
    kg_graph_free(g);
    kg_meta_free(&m);
    kf_image_release(&img);
    return st;
}
