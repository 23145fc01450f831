/*
 * Sessions: shape inference at a batch size, liveness-based planning of
 * every activation into one arena, and the run loop that calls the kernels.
 *
 * Planning: Flatten, Reshape and Identity alias their input (no copy), so
 * buffers belong to alias roots. A root lives from the node that writes it
 * to the last node that reads it or any alias of it (graph outputs live to
 * the end). Roots are placed largest first at the lowest offset that does
 * not overlap a placed root whose lifetime intersects; kernel workspace
 * follows them. The run loop only reads the plan.
 */
#include "model.h"
#include "optimize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct step {
    kg_node *n;
    union {
        kiln_conv2d_shape conv;
        kiln_dense_shape dense;
        kiln_pool2d_shape pool;
    } u;
    kiln_epilogue ep;
    float *bn;         /* BatchNormalization: scale[c] then shift[c] */
    float *packed;     /* weights repacked for this batch, or NULL: the model's */
    const float **cat; /* Concat: input pointers, filled per run */
    int *cat_ch;
    /* A conv whose MaxPool 2x2/2 is fused into it (ep.pool2): the value it
     * writes, the pool's output; -1 otherwise. The pool's own step is then
     * `fused`: it does nothing, and the conv's unpooled output has no
     * buffer. */
    int pooled_out;
    int fused;
} step;

struct kiln_session {
    const kiln_model *m;
    kg_graph g; /* private copy of values and nodes: shapes at this batch */
    int threads;
    kiln_arena *arena;
    size_t arena_bytes;
    void *workspace;
    float **ptr; /* per value: where its elements are */
    int *root;   /* per value: alias root */
    step *steps;
    uint64_t *layer_ns; /* per node: time in runs since kiln_session_profile(s, 1), or NULL */
};

static int is_alias(kg_op op)
{
    return op == KG_OP_FLATTEN || op == KG_OP_RESHAPE || op == KG_OP_IDENTITY;
}

static kiln_act act_of(kg_act a)
{
    switch (a) {
    case KG_ACT_RELU:
        return KILN_ACT_RELU;
    case KG_ACT_CLIP:
        return KILN_ACT_CLIP;
    case KG_ACT_LEAKY:
        return KILN_ACT_LEAKY_RELU;
    case KG_ACT_SIGMOID:
        return KILN_ACT_SIGMOID;
    default:
        return KILN_ACT_NONE;
    }
}

void kiln_session_free(kiln_session *s)
{
    if (!s) return;
    if (s->steps)
        for (int i = 0; i < s->g.n_nodes; i++) {
            free(s->steps[i].bn);
            free(s->steps[i].packed);
            free(s->steps[i].cat);
            free(s->steps[i].cat_ch);
        }
    free(s->steps);
    free(s->layer_ns);
    free(s->g.values);
    free(s->g.nodes);
    free(s->ptr);
    free(s->root);
    kiln_arena_destroy(s->arena);
    free(s);
}

typedef struct buf_plan {
    int root;
    size_t size, off;
    int first, last;
} buf_plan;

static int by_size_desc(const void *a, const void *b)
{
    const buf_plan *x = a, *y = b;
    return x->size < y->size ? 1 : x->size > y->size ? -1 : x->root - y->root;
}

/* Assigns offsets; returns the bytes spanned. */
static size_t place(buf_plan *b, int n)
{
    qsort(b, (size_t)n, sizeof *b, by_size_desc);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t off = 0;
        for (int moved = 1; moved;) {
            moved = 0;
            for (int j = 0; j < i; j++) {
                if (b[j].last < b[i].first || b[i].last < b[j].first) continue;
                if (off < b[j].off + b[j].size && b[j].off < off + b[i].size) {
                    off = b[j].off + b[j].size;
                    moved = 1;
                }
            }
        }
        b[i].off = off;
        if (off + b[i].size > total) total = off + b[i].size;
    }
    return total;
}

static size_t align_up(size_t n)
{
    return (n + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN;
}

static kiln_status prepare_step(kiln_session *s, step *st, char *err)
{
    kg_graph *g = &s->g;
    kg_node *n = st->n;
    const kg_value *x = &g->values[n->in[0]], *y = &g->values[n->out];
    const kg_attrs *a = &n->a;
    switch (n->op) {
    case KG_OP_CONV: {
        kc_conv_shape(g, n, &st->u.conv);
        int oh, ow;
        kiln_status rc = kiln_conv2d_out_hw(&st->u.conv, &oh, &ow);
        if (rc || oh != y->dims[2] || ow != y->dims[3])
            return kg_fail(err, rc ? rc : KILN_ERR_SHAPE, "%s: kernels reject this conv shape",
                           n->name);
        size_t need = kiln_conv2d_packed_size(&st->u.conv);
        const kg_value *w = &g->values[n->in[1]];
        if (w->bytes != need) {
            if (!(st->packed = aligned_alloc(KILN_ALIGN, need)))
                return kg_fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory packing", n->name);
            kiln_conv2d_pack(&st->u.conv, w->data, st->packed);
        }
        break;
    }
    case KG_OP_DENSE: {
        kc_dense_shape(g, n, &st->u.dense);
        size_t need = kiln_dense_packed_size(&st->u.dense);
        const kg_value *w = &g->values[n->in[1]];
        if (w->bytes != need) {
            if (!(st->packed = aligned_alloc(KILN_ALIGN, need)))
                return kg_fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory packing", n->name);
            kiln_dense_pack(&st->u.dense, w->data, st->packed);
        }
        break;
    }
    case KG_OP_MAXPOOL:
    case KG_OP_AVGPOOL: {
        st->u.pool = (kiln_pool2d_shape){.n = (int)x->dims[0],
                                         .c = (int)x->dims[1],
                                         .h_in = (int)x->dims[2],
                                         .w_in = (int)x->dims[3],
                                         .k_h = a->kernel[0],
                                         .k_w = a->kernel[1],
                                         .stride_h = a->stride[0],
                                         .stride_w = a->stride[1],
                                         .dil_h = a->dilation[0],
                                         .dil_w = a->dilation[1],
                                         .pad_t = a->pad[0],
                                         .pad_l = a->pad[1],
                                         .pad_b = a->pad[2],
                                         .pad_r = a->pad[3],
                                         .ceil_mode = a->ceil_mode,
                                         .count_include_pad = a->count_include_pad};
        int oh, ow;
        kiln_status rc = kiln_pool2d_out_hw(&st->u.pool, &oh, &ow);
        if (rc || oh != y->dims[2] || ow != y->dims[3])
            return kg_fail(err, rc ? rc : KILN_ERR_SHAPE, "%s: kernels reject this pool shape",
                           n->name);
        break;
    }
    case KG_OP_BATCHNORM: {
        int c = (int)x->dims[1];
        st->bn = malloc(2 * (size_t)c * sizeof(float));
        if (!st->bn) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        kiln_batchnorm_fold(c, g->values[n->in[1]].data, g->values[n->in[2]].data,
                            g->values[n->in[3]].data, g->values[n->in[4]].data, a->epsilon, st->bn,
                            st->bn + c);
        break;
    }
    case KG_OP_CONCAT:
        st->cat = calloc((size_t)n->n_in, sizeof *st->cat);
        st->cat_ch = calloc((size_t)n->n_in, sizeof *st->cat_ch);
        if (!st->cat || !st->cat_ch) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        for (int k = 0; k < n->n_in; k++) st->cat_ch[k] = (int)g->values[n->in[k]].dims[a->axis];
        break;
    default:
        break;
    }
    if (n->op == KG_OP_CONV || n->op == KG_OP_DENSE) {
        st->ep.act = act_of(a->act);
        st->ep.alpha = a->alpha;
        st->ep.lo = a->min;
        st->ep.hi = a->max;
        st->ep.bias = n->n_in > 2 && n->in[2] >= 0 ? g->values[n->in[2]].data : NULL;
    }
    return KILN_OK;
}

/*
 * Fuses each MaxPool 2x2/2 (no padding, floor) that alone reads a conv's
 * output into that conv, where the active kernels can pool as they store
 * (kiln_conv2d_pool2_ok(): the direct conv of the small nets' first
 * layers, the turned-around paths of their small planes). The conv then
 * writes the pooled tensor, and its full-size output, the largest
 * activation of those nets, is never written: the
 * MNIST CNN's conv1 + pool1 at batch 4 (the server's rounds) moved 400 KB
 * through L2 for 100 KB of result. The same for a MaxPool 3x3/2 with one
 * pad each side (floor) after a stem the stride-2 direct conv runs
 * (kiln_conv2d_pool3_ok(): ResNet's 7x7/2, whose 3.2 MB output is
 * ResNet50's largest). The floats are the unfused ones.
 */
static void fuse_pools(kiln_session *s)
{
    kg_graph *g = &s->g;
    for (int i = 0; i < g->n_nodes; i++) s->steps[i].pooled_out = -1;
    for (int i = 0; i + 1 < g->n_nodes; i++) {
        step *c = &s->steps[i];
        const kg_node *n = c->n;
        if (n->op != KG_OP_CONV || n->a.residual) continue;
        int reader = -1, readers = 0;
        for (int k = 0; k < g->n_outputs; k++)
            if (g->outputs[k] == n->out) readers = 2;
        for (int j = i + 1; j < g->n_nodes && readers < 2; j++)
            for (int k = 0; k < g->nodes[j].n_in; k++)
                if (g->nodes[j].in[k] == n->out) {
                    reader = j;
                    readers++;
                }
        if (readers != 1) continue;
        step *p = &s->steps[reader];
        const kg_node *pn = p->n;
        const kiln_pool2d_shape *ps = &p->u.pool;
        if (pn->op != KG_OP_MAXPOOL || pn->in[0] != n->out || pn->a.act != KG_ACT_NONE ||
            ps->stride_h != 2 || ps->stride_w != 2 || ps->dil_h != 1 || ps->dil_w != 1)
            continue;
        if (ps->k_h == 2 && ps->k_w == 2 && !ps->pad_t && !ps->pad_l && !ps->pad_b && !ps->pad_r &&
            kiln_conv2d_pool2_ok(&c->u.conv)) {
            /* even sides (kiln_conv2d_pool2_ok()): ceil_mode changes nothing */
            c->ep.pool2 = 1;
        } else if (ps->k_h == 3 && ps->k_w == 3 && ps->pad_t == 1 && ps->pad_l == 1 &&
                   ps->pad_b == 1 && ps->pad_r == 1 && !ps->ceil_mode &&
                   kiln_conv2d_pool3_ok(&c->u.conv)) {
            c->ep.pool3 = 1; /* ResNet's stem and its 3x3/2 max pool */
        } else {
            continue;
        }
        c->pooled_out = pn->out;
        p->fused = 1;
    }
}

/* Whether node i is the last reader of value r's buffer (of every value
 * that shares it) and reads it only as r: then its output may take the
 * buffer over. The buffer must be the arena's (not the caller's input). */
static int residual_dies(const kiln_session *s, int i, int r, const int *last_use)
{
    const kg_graph *g = &s->g;
    const kg_node *n = &g->nodes[i];
    const int root = s->root[r];
    if (g->values[root].kind != KG_ACTIVATION) return 0;
    for (int k = 0; k < n->n_in; k++)
        if (k != 3 && n->in[k] >= 0 && s->root[n->in[k]] == root) return 0;
    for (int v = 0; v < g->n_values; v++)
        if (s->root[v] == root && last_use[v] > i) return 0;
    return 1;
}

static kiln_status plan(kiln_session *s, char *err)
{
    kg_graph *g = &s->g;
    int nv = g->n_values, nn = g->n_nodes;
    buf_plan *b = calloc((size_t)nv + 1, sizeof *b);
    int *slot = malloc(((size_t)nv + 1) * sizeof *slot);
    if (!b || !slot) {
        free(b);
        free(slot);
        return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory planning");
    }
    for (int v = 0; v < nv; v++) {
        s->root[v] = v;
        slot[v] = -1;
    }
    /* each value's last reader (nn: a graph output) */
    int *last_use = malloc(((size_t)nv + 1) * sizeof *last_use);
    if (!last_use) {
        free(b);
        free(slot);
        return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory planning");
    }
    for (int v = 0; v < nv; v++) last_use[v] = -1;
    for (int i = 0; i < nn; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] >= 0) last_use[g->nodes[i].in[k]] = i;
    for (int i = 0; i < g->n_outputs; i++) last_use[g->outputs[i]] = nn;
    /* the largest workspace of a step */
    size_t ws = 0;
    for (int i = 0; i < nn; i++) {
        step *st = &s->steps[i];
        size_t w = 0;
        if (st->n->op == KG_OP_CONV) w = kiln_conv2d_workspace_size(&st->u.conv, s->threads);
        if (st->n->op == KG_OP_DENSE) w = kiln_dense_workspace_size(&st->u.dense, s->threads);
        if (w > ws) ws = w;
    }
    int nb = 0;
    for (int i = 0; i < nn; i++) {
        kg_node *n = &g->nodes[i];
        const step *st = &s->steps[i];
        if (st->fused) continue; /* its conv wrote its output */
        int r = n->op == KG_OP_CONV && n->a.residual ? n->in[3] : -1;
        if (is_alias(n->op)) {
            s->root[n->out] = s->root[n->in[0]];
        } else if (r >= 0 && ws && !st->ep.pool2 && slot[s->root[r]] >= 0 &&
                   residual_dies(s, i, r, last_use) &&
                   kg_numel(&g->values[r]) == kg_numel(&g->values[n->out]) &&
                   kiln_conv2d_residual_in_place_ok(&st->u.conv)) {
            /* a conv+add that is the last to read its residual writes its
             * output over it (kiln_conv2d_residual_in_place_ok()): */
            s->root[n->out] = s->root[r];
        } else if (st->pooled_out >= 0) {
            /* the pool's output, live from the conv that writes it */
            slot[st->pooled_out] = nb;
            b[nb++] = (buf_plan){.root = st->pooled_out,
                                 .size = align_up((size_t)kg_numel(&g->values[st->pooled_out]) * 4),
                                 .first = i,
                                 .last = i};
        } else {
            slot[n->out] = nb;
            b[nb++] = (buf_plan){.root = n->out,
                                 .size = align_up((size_t)kg_numel(&g->values[n->out]) * 4),
                                 .first = i,
                                 .last = i};
        }
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v >= 0 && slot[s->root[v]] >= 0) b[slot[s->root[v]]].last = i;
        }
    }
    for (int i = 0; i < g->n_outputs; i++) {
        int r = s->root[g->outputs[i]];
        if (slot[r] >= 0) b[slot[r]].last = nn;
    }
    free(last_use);
    size_t act = place(b, nb);
    s->arena_bytes = act + align_up(ws);
    kiln_status rc = kiln_arena_create(s->arena_bytes, &s->arena);
    if (rc) {
        free(b);
        free(slot);
        return kg_fail(err, rc, "cannot allocate a %zu-byte arena", s->arena_bytes);
    }
    for (int i = 0; i < nb; i++) s->ptr[b[i].root] = kiln_arena_at(s->arena, b[i].off, b[i].size);
    for (int v = 0; v < nv; v++)
        if (s->root[v] != v && !s->ptr[v] && s->ptr[s->root[v]]) s->ptr[v] = s->ptr[s->root[v]];
    s->workspace = ws ? kiln_arena_at(s->arena, act, align_up(ws)) : NULL;
    for (int v = 0; v < nv; v++)
        if (g->values[v].kind == KG_CONST) s->ptr[v] = g->values[v].data;
    free(b);
    free(slot);
    return KILN_OK;
}

kiln_status kiln_session_create(const kiln_model *m, const kiln_session_options *opts,
                                kiln_session **out)
{
    char err[KG_ERRLEN] = "";
    if (!m || !out) return km_error(KILN_ERR_INVALID_ARG, "no model or no output pointer");
    *out = NULL;
    kiln_status st = kiln_init();
    if (st) return km_error(st, "kiln_init failed");
    int threads = opts && opts->threads > 0 ? opts->threads : 1;
    int batch = opts && opts->batch > 0 ? opts->batch : 0;
    if (threads > 256 || (opts && (opts->threads < 0 || opts->batch < 0)))
        return km_error(KILN_ERR_INVALID_ARG, "bad thread count or batch");
    kiln_session *s = calloc(1, sizeof *s);
    if (!s) return km_error(KILN_ERR_NO_MEMORY, "out of memory");
    s->m = m;
    s->threads = threads;
    const kg_graph *mg = m->g;
    s->g = *mg;
    s->g.values = malloc((size_t)mg->n_values * sizeof *s->g.values);
    s->g.nodes = malloc(((size_t)mg->n_nodes + 1) * sizeof *s->g.nodes);
    s->ptr = calloc((size_t)mg->n_values, sizeof *s->ptr);
    s->root = calloc((size_t)mg->n_values, sizeof *s->root);
    s->steps = calloc((size_t)mg->n_nodes + 1, sizeof *s->steps);
    if (!s->g.values || !s->g.nodes || !s->ptr || !s->root || !s->steps) {
        free(s->g.values);
        s->g.values = NULL;
        free(s->g.nodes);
        s->g.nodes = NULL;
        kiln_session_free(s);
        return km_error(KILN_ERR_NO_MEMORY, "out of memory");
    }
    memcpy(s->g.values, mg->values, (size_t)mg->n_values * sizeof *s->g.values);
    memcpy(s->g.nodes, mg->nodes, (size_t)mg->n_nodes * sizeof *s->g.nodes);
    s->g.cap_values = s->g.n_values;
    s->g.cap_nodes = s->g.n_nodes;
    if ((st = kg_infer_shapes(&s->g, batch, err))) goto fail;
    for (int v = 0; v < s->g.n_values; v++) {
        const kg_value *val = &s->g.values[v];
        for (int d = 0; d < val->ndim; d++)
            if (val->dims[d] > INT32_MAX) {
                st = kg_fail(err, KILN_ERR_RANGE, "'%s' has a dimension over 2^31", val->name);
                goto fail;
            }
    }
    for (int i = 0; i < s->g.n_nodes; i++) {
        s->steps[i].n = &s->g.nodes[i];
        if ((st = prepare_step(s, &s->steps[i], err))) goto fail;
    }
    fuse_pools(s);
    if ((st = plan(s, err))) goto fail;
    *out = s;
    return KILN_OK;
fail:
    kiln_session_free(s);
    return km_error(st, "%s", err);
}

size_t kiln_session_arena_bytes(const kiln_session *s)
{
    return s ? s->arena_bytes : 0;
}

static kiln_status io_info(const kg_graph *g, const int *ids, int count, int i, kiln_io_info *info)
{
    if (!g || !info || i < 0 || i >= count)
        return km_error(KILN_ERR_INVALID_ARG, "no input/output %d", i);
    const kg_value *v = &g->values[ids[i]];
    info->name = v->name;
    info->ndim = v->ndim;
    memset(info->dims, 0, sizeof info->dims);
    memcpy(info->dims, v->dims, (size_t)v->ndim * sizeof *v->dims);
    return KILN_OK;
}

kiln_status kiln_session_input(const kiln_session *s, int i, kiln_io_info *info)
{
    return io_info(s ? &s->g : NULL, s ? s->g.inputs : NULL, s ? s->g.n_inputs : 0, i, info);
}

kiln_status kiln_session_output(const kiln_session *s, int i, kiln_io_info *info)
{
    return io_info(s ? &s->g : NULL, s ? s->g.outputs : NULL, s ? s->g.n_outputs : 0, i, info);
}

kiln_status kiln_model_input(const kiln_model *m, int i, kiln_io_info *info)
{
    return io_info(m ? m->g : NULL, m ? m->g->inputs : NULL, m ? m->g->n_inputs : 0, i, info);
}

kiln_status kiln_model_output(const kiln_model *m, int i, kiln_io_info *info)
{
    return io_info(m ? m->g : NULL, m ? m->g->outputs : NULL, m ? m->g->n_outputs : 0, i, info);
}

/* ---- the run loop ------------------------------------------------------ */

/* Strides (in elements) of v broadcast to an nd-d output. */
static void bcast_strides(const kg_value *v, int nd, const int64_t *odims, int64_t *st)
{
    int64_t acc = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int j = i - (nd - v->ndim);
        int64_t d = j >= 0 ? v->dims[j] : 1;
        st[i] = (d == 1 && odims[i] != 1) ? 0 : acc;
        acc *= d;
    }
}

static void run_binary(const kg_graph *g, const kg_node *n, const float *a, const float *b,
                       float *y)
{
    const kg_value *va = &g->values[n->in[0]], *vb = &g->values[n->in[1]], *vy = &g->values[n->out];
    int64_t total = kg_numel(vy);
    int mul = n->op == KG_OP_MUL;
    if (kg_numel(va) == total && kg_numel(vb) == total) {
        if (!mul)
            kiln_add((size_t)total, a, b, y);
        else
            for (int64_t i = 0; i < total; i++) y[i] = a[i] * b[i];
        return;
    }
    int nd = vy->ndim;
    int64_t sa[KILN_MAX_DIMS], sb[KILN_MAX_DIMS], idx[KILN_MAX_DIMS] = {0};
    bcast_strides(va, nd, vy->dims, sa);
    bcast_strides(vb, nd, vy->dims, sb);
    int64_t oa = 0, ob = 0;
    for (int64_t i = 0; i < total; i++) {
        y[i] = mul ? a[oa] * b[ob] : a[oa] + b[ob];
        for (int d = nd - 1; d >= 0; d--) {
            oa += sa[d];
            ob += sb[d];
            if (++idx[d] < vy->dims[d]) break;
            oa -= sa[d] * idx[d];
            ob -= sb[d] * idx[d];
            idx[d] = 0;
        }
    }
}

static void run_pad(const kg_graph *g, const kg_node *n, const float *x, float *y)
{
    const kg_value *vx = &g->values[n->in[0]], *vy = &g->values[n->out];
    int nd = vx->ndim;
    int64_t total = kg_numel(vy);
    for (int64_t i = 0; i < total; i++) y[i] = n->a.pad_value;
    int64_t ystr[KILN_MAX_DIMS], acc = 1;
    for (int d = nd - 1; d >= 0; d--) {
        ystr[d] = acc;
        acc *= vy->dims[d];
    }
    int64_t rows = kg_numel(vx) / (nd ? vx->dims[nd - 1] : 1), w = nd ? vx->dims[nd - 1] : 1;
    int64_t idx[KILN_MAX_DIMS] = {0};
    for (int64_t r = 0; r < rows && w > 0; r++) {
        int64_t off = 0;
        for (int d = 0; d < nd; d++) off += (idx[d] + n->a.pads[d]) * ystr[d];
        memcpy(y + off, x + r * w, (size_t)w * sizeof *y);
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < vx->dims[d]) break;
            idx[d] = 0;
        }
    }
}

static void prod_around(const kg_value *v, int axis, size_t *outer, size_t *mid, size_t *inner)
{
    size_t o = 1, in = 1;
    for (int i = 0; i < axis; i++) o *= (size_t)v->dims[i];
    for (int i = axis + 1; i < v->ndim; i++) in *= (size_t)v->dims[i];
    *outer = o;
    *mid = (size_t)v->dims[axis];
    *inner = in;
}

static kiln_status run_nodes(kiln_session *s);

kiln_status kiln_session_run(kiln_session *s, const float *const *inputs, float *const *outputs)
{
    if (!s || !inputs || !outputs) return km_error(KILN_ERR_INVALID_ARG, "null argument");
    kg_graph *g = &s->g;
    for (int i = 0; i < g->n_inputs; i++) {
        if (!inputs[i]) return km_error(KILN_ERR_INVALID_ARG, "input %d is NULL", i);
        s->ptr[g->inputs[i]] = (float *)inputs[i];
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (!outputs[i]) return km_error(KILN_ERR_INVALID_ARG, "output %d is NULL", i);
    if (s->threads > 1) kiln_pool_enter();
    kiln_status rc = run_nodes(s);
    if (s->threads > 1) kiln_pool_leave();
    if (rc) return rc;
    for (int i = 0; i < g->n_outputs; i++) {
        const kg_value *v = &g->values[g->outputs[i]];
        if (outputs[i] != s->ptr[g->outputs[i]])
            memcpy(outputs[i], s->ptr[g->outputs[i]], (size_t)kg_numel(v) * sizeof(float));
    }
    return KILN_OK;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The nodes of a run in order: KILN_OK, or the first failure. */
static kiln_status run_nodes(kiln_session *s)
{
    kg_graph *g = &s->g;
    uint64_t t = s->layer_ns ? now_ns() : 0;
    for (int i = 0; i < g->n_nodes; i++) {
        step *st = &s->steps[i];
        const kg_node *n = st->n;
        const kg_value *vx = &g->values[n->in[0]], *vy = &g->values[n->out];
        const float *x = s->ptr[n->in[0]];
        float *y = s->ptr[st->pooled_out >= 0 ? st->pooled_out : n->out];
        kiln_status rc = KILN_OK;
        switch (st->fused ? KG_OP_COUNT_ : n->op) {
        case KG_OP_COUNT_: /* a MaxPool its conv did (fuse_pools()) */
            break;
        case KG_OP_CONV:
        case KG_OP_DENSE:
            st->ep.residual = n->a.residual ? s->ptr[n->in[3]] : NULL;
            rc = n->op == KG_OP_CONV
                     ? kiln_conv2d(&st->u.conv, x, st->packed ? st->packed : s->ptr[n->in[1]],
                                   &st->ep, y, s->workspace, s->threads)
                     : kiln_dense(&st->u.dense, x, st->packed ? st->packed : s->ptr[n->in[1]],
                                  &st->ep, y, s->workspace, s->threads);
            break;
        case KG_OP_BATCHNORM: {
            size_t o, c, in;
            prod_around(vx, 1, &o, &c, &in);
            kiln_batchnorm((int)o, (int)c, in, x, st->bn, st->bn + c, y);
            break;
        }
        case KG_OP_RELU:
        case KG_OP_CLIP:
        case KG_OP_LEAKYRELU:
        case KG_OP_SIGMOID: {
            kiln_act act = n->op == KG_OP_RELU        ? KILN_ACT_RELU
                           : n->op == KG_OP_CLIP      ? KILN_ACT_CLIP
                           : n->op == KG_OP_LEAKYRELU ? KILN_ACT_LEAKY_RELU
                                                      : KILN_ACT_SIGMOID;
            kiln_activation((size_t)kg_numel(vy), x, y, act, n->a.alpha, n->a.min, n->a.max);
            break;
        }
        case KG_OP_MAXPOOL:
            rc = kiln_maxpool2d(&st->u.pool, x, y, s->threads);
            break;
        case KG_OP_AVGPOOL:
            rc = kiln_avgpool2d(&st->u.pool, x, y, s->threads);
            break;
        case KG_OP_GLOBALAVGPOOL:
        case KG_OP_GLOBALMAXPOOL: {
            size_t hw = (size_t)(vx->dims[2] * vx->dims[3]);
            (n->op == KG_OP_GLOBALAVGPOOL ? kiln_global_avgpool : kiln_global_maxpool)(
                (int)vx->dims[0], (int)vx->dims[1], hw, x, y);
            break;
        }
        case KG_OP_ADD:
        case KG_OP_MUL:
            run_binary(g, n, x, s->ptr[n->in[1]], y);
            break;
        case KG_OP_CONCAT: {
            size_t o, c, in;
            prod_around(vy, n->a.axis, &o, &c, &in);
            for (int k = 0; k < n->n_in; k++) st->cat[k] = s->ptr[n->in[k]];
            kiln_concat_channels((int)o, in, n->n_in, st->cat, st->cat_ch, y);
            break;
        }
        case KG_OP_SOFTMAX: {
            size_t o, c, in;
            prod_around(vx, n->a.axis, &o, &c, &in);
            if (n->a.flat) {
                c *= in;
                in = 1;
            }
            kiln_softmax(o, c, in, x, y);
            break;
        }
        case KG_OP_PAD:
            run_pad(g, n, x, y);
            break;
        case KG_OP_FLATTEN:
        case KG_OP_RESHAPE:
        case KG_OP_IDENTITY:
            s->ptr[n->out] = (float *)x;
            break;
        default:
            rc = KILN_ERR_UNSUPPORTED;
        }
        if (rc) return km_error(rc, "%s: %s failed", n->name, kg_op_name(n->op));
        if (n->a.act != KG_ACT_NONE && n->op != KG_OP_CONV && n->op != KG_OP_DENSE)
            kiln_activation((size_t)kg_numel(vy), s->ptr[n->out], s->ptr[n->out], act_of(n->a.act),
                            n->a.alpha, n->a.min, n->a.max);
        if (s->layer_ns) {
            uint64_t t1 = now_ns();
            s->layer_ns[i] += t1 - t;
            t = t1;
        }
    }
    return KILN_OK;
}

kiln_status kiln_session_profile(kiln_session *s, int on)
{
    if (!s) return km_error(KILN_ERR_INVALID_ARG, "no session");
    free(s->layer_ns);
    s->layer_ns = NULL;
    if (on && !(s->layer_ns = calloc((size_t)s->g.n_nodes + 1, sizeof *s->layer_ns)))
        return km_error(KILN_ERR_NO_MEMORY, "out of memory");
    return KILN_OK;
}

uint64_t kiln_session_layer_ns(const kiln_session *s, int layer)
{
    if (!s || !s->layer_ns || layer < 0 || layer >= s->g.n_nodes) return 0;
    return s->layer_ns[layer];
}

void kiln_session_layers(const kiln_session *s, kiln_layer_fn fn, void *ctx)
{
    if (!s || !fn) return;
    const kg_graph *g = &s->g;
    for (int i = 0; i < g->n_nodes; i++) {
        const kg_node *n = &g->nodes[i];
        const kg_value *y = &g->values[n->out];
        char shape[96], op[64];
        int64_t params = 0;
        for (int k = 1; k < n->n_in; k++)
            if (n->in[k] >= 0 && g->values[n->in[k]].kind == KG_CONST)
                params += kg_numel(&g->values[n->in[k]]);
        /* a pool fused into its conv (fuse_pools()) is named on both */
        const step *st = &s->steps[i];
        snprintf(op, sizeof op, "%s%s%s%s%s", kg_op_name(n->op), n->a.residual ? "+add" : "",
                 n->a.act ? "+" : "", n->a.act ? kg_act_name(n->a.act) : "",
                 st->pooled_out >= 0 ? "+maxpool"
                 : st->fused         ? " (in its conv)"
                                     : "");
        fn(ctx, n->name, op, kg_shape_str(y->ndim, y->dims, shape, sizeof shape), params,
           kg_node_flops(g, n));
    }
}
