/*
 * Shape inference. Every check names the node and says what it expected,
 * because a shape error in a 170-node network is useless without both.
 */
#include "graph.h"

#include <stdio.h>
#include <string.h>

#define SHAPE_MAX ((int64_t)1 << 40) /* no single dimension is bigger */

static const kg_value *in_val(const kg_graph *g, const kg_node *n, int k)
{
    return (k < n->n_in && n->in[k] >= 0) ? &g->values[n->in[k]] : NULL;
}

static kiln_status need_inputs(const kg_node *n, int lo, int hi, char *err)
{
    if (n->n_in < lo || n->n_in > hi || (lo > 0 && n->in[0] < 0))
        return kg_fail(err, KILN_ERR_FORMAT, "%s: %s takes %d..%d inputs, has %d", n->name,
                       kg_op_name(n->op), lo, hi, n->n_in);
    return KILN_OK;
}

static kiln_status need_rank(const kg_node *n, const kg_value *v, int rank, const char *what,
                             char *err)
{
    char s[96];
    if (v->ndim != rank)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: expects a %d-d %s, got %s", n->name, rank, what,
                       kg_shape_str(v->ndim, v->dims, s, sizeof s));
    return KILN_OK;
}

/* Output extent of a window of `k` (dilation d) sliding with stride s over
 * `in` padded by p0 + p1; <= 0 when the window does not fit. */
static int64_t window_out(int64_t in, int k, int s, int d, int p0, int p1, int ceil_mode)
{
    int64_t span = (int64_t)d * (k - 1) + 1;
    int64_t room = in + p0 + p1 - span;
    if (room < 0) return 0;
    int64_t o = ceil_mode ? (room + s - 1) / s + 1 : room / s + 1;
    /* ONNX/PyTorch: the last window must start inside the input or left pad */
    if (ceil_mode && (o - 1) * s >= in + p0) o--;
    return o;
}

static kiln_status check_window(const kg_node *n, char *err)
{
    const kg_attrs *a = &n->a;
    for (int i = 0; i < 2; i++) {
        if (a->kernel[i] < 1 || a->stride[i] < 1 || a->dilation[i] < 1 || a->kernel[i] > 1 << 16 ||
            a->stride[i] > 1 << 16 || a->dilation[i] > 1 << 16)
            return kg_fail(err, KILN_ERR_FORMAT, "%s: kernel, stride and dilation must be >= 1",
                           n->name);
    }
    for (int i = 0; i < 4; i++)
        if (a->pad[i] < 0 || a->pad[i] > 1 << 16)
            return kg_fail(err, KILN_ERR_FORMAT, "%s: bad padding %d", n->name, a->pad[i]);
    return KILN_OK;
}

static kiln_status infer_conv(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    char s[96];
    if ((st = need_inputs(n, 2, 4, err))) return st;
    const kg_value *x = in_val(g, n, 0), *w = in_val(g, n, 1), *b = in_val(g, n, 2);
    if (!w || w->kind != KG_CONST)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "%s: weights must be constant", n->name);
    if ((st = need_rank(n, x, 4, "input (NCHW)", err)) || (st = need_rank(n, w, 4, "weight", err)))
        return st;
    kg_attrs *a = &n->a;
    if (a->kernel[0] == 0) a->kernel[0] = (int)w->dims[2];
    if (a->kernel[1] == 0) a->kernel[1] = (int)w->dims[3];
    if ((st = check_window(n, err))) return st;
    if (a->kernel[0] != w->dims[2] || a->kernel[1] != w->dims[3])
        return kg_fail(err, KILN_ERR_SHAPE, "%s: kernel %dx%d but weight is %s", n->name,
                       a->kernel[0], a->kernel[1], kg_shape_str(4, w->dims, s, sizeof s));
    int64_t oc = w->dims[0];
    if (a->group < 1 || oc % a->group)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: %lld output channels not divisible by %d groups",
                       n->name, (long long)oc, a->group);
    if (x->dims[1] != w->dims[1] * a->group)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: expects %lld input channels, got %lld", n->name,
                       (long long)(w->dims[1] * a->group), (long long)x->dims[1]);
    if (b && (b->ndim != 1 || b->dims[0] != oc))
        return kg_fail(err, KILN_ERR_SHAPE, "%s: bias must have %lld entries, has shape %s",
                       n->name, (long long)oc, kg_shape_str(b->ndim, b->dims, s, sizeof s));
    int64_t oh =
        window_out(x->dims[2], a->kernel[0], a->stride[0], a->dilation[0], a->pad[0], a->pad[2], 0);
    int64_t ow =
        window_out(x->dims[3], a->kernel[1], a->stride[1], a->dilation[1], a->pad[1], a->pad[3], 0);
    if (oh < 1 || ow < 1)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: %dx%d kernel does not fit input %s", n->name,
                       a->kernel[0], a->kernel[1], kg_shape_str(4, x->dims, s, sizeof s));
    out->ndim = 4;
    out->dims[0] = x->dims[0];
    out->dims[1] = oc;
    out->dims[2] = oh;
    out->dims[3] = ow;
    return KILN_OK;
}

static kiln_status infer_pool(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    char s[96];
    if ((st = need_inputs(n, 1, 1, err))) return st;
    const kg_value *x = in_val(g, n, 0);
    if ((st = need_rank(n, x, 4, "input (NCHW)", err))) return st;
    out->ndim = 4;
    out->dims[0] = x->dims[0];
    out->dims[1] = x->dims[1];
    if (n->op == KG_OP_GLOBALAVGPOOL || n->op == KG_OP_GLOBALMAXPOOL) {
        out->dims[2] = out->dims[3] = 1;
        return KILN_OK;
    }
    const kg_attrs *a = &n->a;
    if ((st = check_window(n, err))) return st;
    for (int i = 0; i < 2; i++)
        if (a->pad[i] >= a->kernel[i] || a->pad[i + 2] >= a->kernel[i])
            return kg_fail(err, KILN_ERR_SHAPE, "%s: padding must be smaller than the kernel",
                           n->name);
    int64_t oh = window_out(x->dims[2], a->kernel[0], a->stride[0], a->dilation[0], a->pad[0],
                            a->pad[2], a->ceil_mode);
    int64_t ow = window_out(x->dims[3], a->kernel[1], a->stride[1], a->dilation[1], a->pad[1],
                            a->pad[3], a->ceil_mode);
    if (oh < 1 || ow < 1)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: %dx%d window does not fit input %s", n->name,
                       a->kernel[0], a->kernel[1], kg_shape_str(4, x->dims, s, sizeof s));
    out->dims[2] = oh;
    out->dims[3] = ow;
    return KILN_OK;
}

static kiln_status infer_batchnorm(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    if ((st = need_inputs(n, 5, 5, err))) return st;
    const kg_value *x = in_val(g, n, 0);
    if (x->ndim < 2)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: input needs a channel dimension", n->name);
    for (int k = 1; k < 5; k++) {
        const kg_value *p = in_val(g, n, k);
        if (!p || p->kind != KG_CONST)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "%s: parameters must be constant", n->name);
        if (p->ndim != 1 || p->dims[0] != x->dims[1])
            return kg_fail(err, KILN_ERR_SHAPE, "%s: expects %lld channels in '%s', got %lld",
                           n->name, (long long)x->dims[1], p->name,
                           (long long)(p->ndim == 1 ? p->dims[0] : kg_numel(p)));
    }
    out->ndim = x->ndim;
    memcpy(out->dims, x->dims, sizeof out->dims);
    return KILN_OK;
}

/* ONNX multidirectional broadcasting; kiln runs the cases where one side
 * already has the output shape. */
static kiln_status infer_binary(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    char s1[96], s2[96];
    if ((st = need_inputs(n, 2, 2, err))) return st;
    const kg_value *a = in_val(g, n, 0), *b = in_val(g, n, 1);
    if (!b) return kg_fail(err, KILN_ERR_FORMAT, "%s: missing second input", n->name);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return kg_fail(err, KILN_ERR_SHAPE, "%s: cannot broadcast %s with %s", n->name,
                           kg_shape_str(a->ndim, a->dims, s1, sizeof s1),
                           kg_shape_str(b->ndim, b->dims, s2, sizeof s2));
        out->dims[i] = da > db ? da : db;
    }
    out->ndim = nd;
    return KILN_OK;
}

static kiln_status infer_concat(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    char s1[96], s2[96];
    if ((st = need_inputs(n, 1, KG_MAX_IN, err))) return st;
    const kg_value *x = in_val(g, n, 0);
    int axis = n->a.axis < 0 ? n->a.axis + x->ndim : n->a.axis;
    if (axis < 0 || axis >= x->ndim)
        return kg_fail(err, KILN_ERR_FORMAT, "%s: axis %d out of range for rank %d", n->name,
                       n->a.axis, x->ndim);
    n->a.axis = axis;
    *out = (kg_value){.ndim = x->ndim, .name = out->name};
    memcpy(out->dims, x->dims, sizeof out->dims);
    for (int k = 1; k < n->n_in; k++) {
        const kg_value *y = in_val(g, n, k);
        if (!y) return kg_fail(err, KILN_ERR_FORMAT, "%s: missing input %d", n->name, k);
        int same = y->ndim == x->ndim;
        for (int i = 0; same && i < x->ndim; i++)
            if (i != axis && y->dims[i] != x->dims[i]) same = 0;
        if (!same)
            return kg_fail(err, KILN_ERR_SHAPE, "%s: input %d is %s, not concatenable with %s",
                           n->name, k, kg_shape_str(y->ndim, y->dims, s1, sizeof s1),
                           kg_shape_str(x->ndim, x->dims, s2, sizeof s2));
        out->dims[axis] += y->dims[axis];
    }
    return KILN_OK;
}

static kiln_status infer_reshape(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    char s[96];
    if ((st = need_inputs(n, 1, 1, err))) return st;
    const kg_value *x = in_val(g, n, 0);
    int64_t total = kg_numel(x), known = 1;
    int infer = -1;
    if (n->a.shape_n < 0 || n->a.shape_n > KILN_MAX_DIMS)
        return kg_fail(err, KILN_ERR_FORMAT, "%s: bad target rank", n->name);
    out->ndim = n->a.shape_n;
    for (int i = 0; i < n->a.shape_n; i++) {
        int64_t d = n->a.shape[i];
        if (d == 0) {
            if (i >= x->ndim)
                return kg_fail(err, KILN_ERR_SHAPE, "%s: 0 at dim %d copies nothing", n->name, i);
            d = x->dims[i];
        } else if (d == -1) {
            if (infer >= 0)
                return kg_fail(err, KILN_ERR_FORMAT, "%s: more than one -1 in shape", n->name);
            infer = i;
            d = 1;
        } else if (d < 0 || d > SHAPE_MAX) {
            return kg_fail(err, KILN_ERR_FORMAT, "%s: bad target dim %lld", n->name, (long long)d);
        }
        out->dims[i] = d;
        known *= d;
    }
    if (infer >= 0 && known > 0 && total % known == 0) {
        out->dims[infer] = total / known;
        known = total;
    }
    if (known != total)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: cannot reshape %s (%lld elements) to this shape",
                       n->name, kg_shape_str(x->ndim, x->dims, s, sizeof s), (long long)total);
    return KILN_OK;
}

static kiln_status infer_dense(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    char s[96];
    if ((st = need_inputs(n, 2, 4, err))) return st;
    const kg_value *x = in_val(g, n, 0), *w = in_val(g, n, 1), *b = in_val(g, n, 2);
    if (!w || w->kind != KG_CONST || w->ndim != 2)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "%s: weights must be a constant matrix", n->name);
    if (x->ndim != 2)
        return kg_fail(err, KILN_ERR_SHAPE, "%s: expects a 2-d input (flatten first), got %s",
                       n->name, kg_shape_str(x->ndim, x->dims, s, sizeof s));
    if (x->dims[1] != w->dims[1])
        return kg_fail(err, KILN_ERR_SHAPE, "%s: expects %lld input features, got %lld", n->name,
                       (long long)w->dims[1], (long long)x->dims[1]);
    if (b && kg_numel(b) != w->dims[0])
        return kg_fail(err, KILN_ERR_SHAPE, "%s: bias must have %lld entries", n->name,
                       (long long)w->dims[0]);
    out->ndim = 2;
    out->dims[0] = x->dims[0];
    out->dims[1] = w->dims[0];
    return KILN_OK;
}

static kiln_status infer_node(const kg_graph *g, kg_node *n, kg_value *out, char *err)
{
    kiln_status st;
    const kg_value *x = n->n_in > 0 && n->in[0] >= 0 ? &g->values[n->in[0]] : NULL;
    if (!x) return kg_fail(err, KILN_ERR_FORMAT, "%s: missing input", n->name);
    switch (n->op) {
    case KG_OP_CONV:
        st = infer_conv(g, n, out, err);
        break;
    case KG_OP_DENSE:
        st = infer_dense(g, n, out, err);
        break;
    case KG_OP_BATCHNORM:
        st = infer_batchnorm(g, n, out, err);
        break;
    case KG_OP_MAXPOOL:
    case KG_OP_AVGPOOL:
    case KG_OP_GLOBALAVGPOOL:
    case KG_OP_GLOBALMAXPOOL:
        st = infer_pool(g, n, out, err);
        break;
    case KG_OP_ADD:
    case KG_OP_MUL:
        st = infer_binary(g, n, out, err);
        break;
    case KG_OP_CONCAT:
        st = infer_concat(g, n, out, err);
        break;
    case KG_OP_RESHAPE:
        st = infer_reshape(g, n, out, err);
        break;
    case KG_OP_FLATTEN: {
        int axis = n->a.axis < 0 ? n->a.axis + x->ndim : n->a.axis;
        if (axis < 0 || axis > x->ndim)
            return kg_fail(err, KILN_ERR_FORMAT, "%s: axis %d out of range", n->name, n->a.axis);
        n->a.axis = axis;
        int64_t outer = 1, inner = 1;
        for (int i = 0; i < x->ndim; i++) *(i < axis ? &outer : &inner) *= x->dims[i];
        out->ndim = 2;
        out->dims[0] = outer;
        out->dims[1] = inner;
        st = KILN_OK;
        break;
    }
    case KG_OP_SOFTMAX: {
        int axis = n->a.axis < 0 ? n->a.axis + x->ndim : n->a.axis;
        if (axis < 0 || axis >= x->ndim)
            return kg_fail(err, KILN_ERR_FORMAT, "%s: axis %d out of range", n->name, n->a.axis);
        n->a.axis = axis;
        out->ndim = x->ndim;
        memcpy(out->dims, x->dims, sizeof out->dims);
        st = KILN_OK;
        break;
    }
    case KG_OP_PAD:
        out->ndim = x->ndim;
        for (int i = 0; i < x->ndim; i++) {
            int64_t b = n->a.pads[i], e = n->a.pads[x->ndim + i];
            if (b < 0 || e < 0 || b > SHAPE_MAX || e > SHAPE_MAX)
                return kg_fail(err, KILN_ERR_UNSUPPORTED, "%s: negative padding", n->name);
            out->dims[i] = x->dims[i] + b + e;
        }
        st = KILN_OK;
        break;
    default: /* element-wise, one input */
        if ((st = need_inputs(n, 1, 1, err))) return st;
        out->ndim = x->ndim;
        memcpy(out->dims, x->dims, sizeof out->dims);
        break;
    }
    if (st) return st;
    if (n->a.residual) {
        const kg_value *r = in_val(g, n, 3);
        if (!r || r->ndim != out->ndim || memcmp(r->dims, out->dims, sizeof r->dims))
            return kg_fail(err, KILN_ERR_SHAPE, "%s: residual input does not match the output",
                           n->name);
    }
    return KILN_OK;
}

kiln_status kg_infer_shapes(kg_graph *g, int64_t batch, char err[KG_ERRLEN])
{
    kiln_status st = kg_graph_check(g, err);
    if (st) return st;
    if (batch < 0 || batch > 1 << 20)
        return kg_fail(err, KILN_ERR_RANGE, "bad batch %lld", (long long)batch);
    for (int i = 0; i < g->n_inputs; i++) {
        kg_value *v = &g->values[g->inputs[i]];
        if (v->ndim < 1)
            return kg_fail(err, KILN_ERR_SHAPE, "input '%s' has no batch dimension", v->name);
        if (batch > 0) v->dims[0] = batch;
        for (int d = 0; d < v->ndim; d++)
            if (v->dims[d] < 1 || v->dims[d] > SHAPE_MAX)
                return kg_fail(err, KILN_ERR_SHAPE, "input '%s' has bad dimension %d: %lld",
                               v->name, d, (long long)v->dims[d]);
    }
    for (int i = 0; i < g->n_nodes; i++) {
        kg_node *n = &g->nodes[i];
        kg_value *out = &g->values[n->out];
        kg_value tmp = {.name = out->name};
        if ((st = infer_node(g, n, &tmp, err))) return st;
        int64_t numel = kg_numel(&tmp);
        if (numel < 0 || numel > ((int64_t)1 << 40) / 4)
            return kg_fail(err, KILN_ERR_RANGE, "%s: output is too big", n->name);
        out->ndim = tmp.ndim;
        memcpy(out->dims, tmp.dims, sizeof out->dims);
    }
    return KILN_OK;
}

int64_t kg_node_flops(const kg_graph *g, const kg_node *n)
{
    const kg_value *out = &g->values[n->out];
    int64_t on = kg_numel(out);
    switch (n->op) {
    case KG_OP_CONV: {
        const kg_value *w = &g->values[n->in[1]];
        return 2 * on * w->dims[1] * w->dims[2] * w->dims[3];
    }
    case KG_OP_DENSE:
        return 2 * on * g->values[n->in[1]].dims[1];
    case KG_OP_MAXPOOL:
    case KG_OP_AVGPOOL:
        return on * n->a.kernel[0] * n->a.kernel[1];
    case KG_OP_GLOBALAVGPOOL:
    case KG_OP_GLOBALMAXPOOL:
        return kg_numel(&g->values[n->in[0]]);
    default:
        return on;
    }
}
