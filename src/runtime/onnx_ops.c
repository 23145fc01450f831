/*
 * ONNX import: one node and its attributes into kiln graph nodes (see
 * onnx.c for the list of operators and opsets). Every attribute is checked
 * against what kiln's kernels support; anything else is an error naming
 * the node and its op.
 */
#include "model.h"
#include "onnx_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- attributes -------------------------------------------------------- */

static const Onnx__AttributeProto *attr(const node_t *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

static int64_t attr_int(const node_t *n, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_i ? a->i : def;
}

static float attr_float(const node_t *n, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_f ? a->f : def;
}

/* Copies up to max ints; returns how many the attribute has (-1 absent). */
static int attr_ints(const node_t *n, const char *name, int64_t *out, int max)
{
    const Onnx__AttributeProto *a = attr(n, name);
    if (!a) return -1;
    for (size_t i = 0; i < a->n_ints && (int)i < max; i++) out[i] = a->ints[i];
    return a->n_ints > 1000 ? 1000 : (int)a->n_ints;
}

static const char *attr_str(const node_t *n, const char *name, char *buf, size_t len)
{
    const Onnx__AttributeProto *a = attr(n, name);
    if (!a || !a->has_s) return NULL;
    size_t k = a->s.len < len - 1 ? a->s.len : len - 1;
    memcpy(buf, a->s.data, k);
    buf[k] = 0;
    return buf;
}

/* ---- operators ----------------------------------------------------------- */

/* Shape of value v: infers the graph so far. */
static kiln_status shape_of(importer *im, int v, kg_value *out)
{
    kg_graph *g = im->g;
    int saved_n = g->n_outputs, saved = g->outputs[0];
    if (g->values[v].kind == KG_ACTIVATION) {
        g->outputs[0] = v;
        g->n_outputs = 1;
        kiln_status st = kg_infer_shapes(g, 0, im->err);
        g->outputs[0] = saved;
        g->n_outputs = saved_n;
        if (st) return st;
    }
    *out = g->values[v];
    return KILN_OK;
}

/* Window attributes of Conv and the pools; `in` is the input value. */
static kiln_status window(importer *im, const node_t *n, const char *nm, int in, int conv,
                          kg_attrs *a)
{
    char *err = im->err;
    int64_t v[16];
    int k = attr_ints(n, "kernel_shape", v, 16);
    if (k != -1 && k != 2)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): only 2-d windows", nm,
                       n->op_type);
    if (k == 2) {
        if (v[0] < 1 || v[1] < 1 || v[0] > 4096 || v[1] > 4096)
            return kg_fail(err, KILN_ERR_FORMAT, "node '%s': bad kernel_shape", nm);
        a->kernel[0] = (int)v[0];
        a->kernel[1] = (int)v[1];
    } else if (!conv) {
        return kg_fail(err, KILN_ERR_FORMAT, "node '%s': kernel_shape missing", nm);
    }
    const char *names[2] = {"strides", "dilations"};
    int *dst[2] = {a->stride, a->dilation};
    for (int j = 0; j < 2; j++) {
        int c = attr_ints(im ? n : n, names[j], v, 16);
        if (c == -1) continue;
        if (c != 2 || v[0] < 1 || v[1] < 1 || v[0] > 4096 || v[1] > 4096)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): bad %s", nm, n->op_type,
                           names[j]);
        dst[j][0] = (int)v[0];
        dst[j][1] = (int)v[1];
    }
    int c = attr_ints(n, "pads", v, 16);
    if (c != -1) {
        if (c != 4)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): pads for 2-d only", nm,
                           n->op_type);
        for (int j = 0; j < 4; j++) {
            if (v[j] < 0 || v[j] > 4096)
                return kg_fail(err, KILN_ERR_FORMAT, "node '%s': bad pads", nm);
            a->pad[j] = (int)v[j];
        }
    }
    char ap[32];
    const char *auto_pad = attr_str(n, "auto_pad", ap, sizeof ap);
    if (auto_pad && (!strcmp(auto_pad, "SAME_UPPER") || !strcmp(auto_pad, "SAME_LOWER"))) {
        kg_value x;
        kiln_status st = shape_of(im, in, &x);
        if (st) return st;
        if (x.ndim != 4)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): only 4-d inputs", nm,
                           n->op_type);
        if (conv && a->kernel[0] == 0) {
            const kg_value *w = &im->g->values[kx_value_of(im, n->input[1])];
            a->kernel[0] = (int)w->dims[2];
            a->kernel[1] = (int)w->dims[3];
        }
        for (int j = 0; j < 2; j++) {
            int64_t size = x.dims[2 + j], s = a->stride[j];
            int64_t outn = (size + s - 1) / s;
            int64_t total =
                (outn - 1) * s + (int64_t)(a->kernel[j] - 1) * a->dilation[j] + 1 - size;
            if (total < 0) total = 0;
            int64_t small = total / 2, big = total - small;
            int upper = !strcmp(auto_pad, "SAME_UPPER");
            a->pad[j] = (int)(upper ? small : big);
            a->pad[j + 2] = (int)(upper ? big : small);
        }
    } else if (auto_pad && strcmp(auto_pad, "NOTSET") && strcmp(auto_pad, "VALID")) {
        return kg_fail(err, KILN_ERR_FORMAT, "node '%s': auto_pad '%s'", nm, auto_pad);
    } else if (auto_pad && !strcmp(auto_pad, "VALID")) {
        memset(a->pad, 0, sizeof a->pad);
    }
    return KILN_OK;
}

/* A scalar float from an initializer (Clip min/max, Pad value). */
static kiln_status const_scalar(importer *im, const char *name, const char *nm, float *out)
{
    if (!name || !*name) return KILN_OK;
    int v = kx_value_of(im, name);
    if (v < 0 || im->g->values[v].kind != KG_CONST || kg_numel(&im->g->values[v]) != 1)
        return kg_fail(im->err, KILN_ERR_UNSUPPORTED, "node '%s': '%s' must be a constant scalar",
                       nm, name);
    *out = im->g->values[v].data[0];
    return KILN_OK;
}

/* Gemm / MatMul -> Dense with W [M][K]. */
static kiln_status dense(importer *im, const node_t *n, const char *nm, int *in, int *n_in,
                         int *add_c)
{
    *add_c = -1;
    char *err = im->err;
    int gemm = !strcmp(n->op_type, "Gemm");
    if (gemm && attr_int(n, "transA", 0))
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (Gemm): transA is not supported", nm);
    kg_value a;
    kiln_status st = shape_of(im, in[0], &a);
    if (st) return st;
    if (a.ndim != 2)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): only 2-d inputs (got rank %d)",
                       nm, n->op_type, a.ndim);
    const kg_value *b = &im->g->values[in[1]];
    if (b->kind != KG_CONST || b->ndim != 2)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): B must be a constant matrix", nm,
                       n->op_type);
    int trans = gemm && attr_int(n, "transB", 0);
    int64_t m = trans ? b->dims[0] : b->dims[1], k = trans ? b->dims[1] : b->dims[0];
    float alpha = gemm ? attr_float(n, "alpha", 1.f) : 1.f,
          beta = gemm ? attr_float(n, "beta", 1.f) : 1.f;
    float *w = malloc(((size_t)(m * k) + 1) * sizeof *w);
    if (!w) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < k; j++)
            w[i * k + j] = alpha * (trans ? b->data[i * k + j] : b->data[j * m + i]);
    char name[512];
    snprintf(name, sizeof name, "%s.W", nm);
    int64_t wd[2] = {m, k};
    int wid = kg_add_const(im->g, name, 2, wd, w, 1);
    if (wid < 0) {
        free(w);
        return kg_fail(err, KILN_ERR_NO_MEMORY, "node '%s': cannot add weights", nm);
    }
    in[1] = wid;
    int bid = -1;
    if (gemm && *n_in > 2 && in[2] >= 0 && beta != 0.f) {
        const kg_value *c = &im->g->values[in[2]];
        int64_t cn = kg_numel(c);
        if (c->kind != KG_CONST)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (Gemm): C must be a constant", nm);
        if ((cn != m && cn != 1) || (c->ndim == 2 && c->dims[0] != 1)) {
            /* a matrix bias: Dense, then Add of beta * C */
            float *cd = malloc(((size_t)cn + 1) * sizeof *cd);
            if (!cd) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
            for (int64_t i = 0; i < cn; i++) cd[i] = beta * c->data[i];
            snprintf(name, sizeof name, "%s.C", nm);
            *add_c = kg_add_const(im->g, name, c->ndim, c->dims, cd, 1);
            if (*add_c < 0) {
                free(cd);
                return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
            }
            in[2] = -1;
            *n_in = 3;
            return KILN_OK;
        }
        float *bd = malloc(((size_t)m + 1) * sizeof *bd);
        if (!bd) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        for (int64_t i = 0; i < m; i++) bd[i] = beta * c->data[cn == 1 ? 0 : i];
        snprintf(name, sizeof name, "%s.bias", nm);
        bid = kg_add_const(im->g, name, 1, &m, bd, 1);
        if (bid < 0) {
            free(bd);
            return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        }
    }
    in[2] = bid;
    *n_in = 3;
    return KILN_OK;
}

kiln_status kx_convert_node(importer *im, const node_t *n, int index)
{
    char buf[64], *err = im->err;
    const char *nm = kx_node_name(n, buf, sizeof buf, index);
    const char *op = n->op_type ? n->op_type : "";
    if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx"))
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): domain '%s' is not supported",
                       nm, op, n->domain);
    if (n->n_output < 1 || !n->output[0] || !*n->output[0])
        return kg_fail(err, KILN_ERR_FORMAT, "node '%s' (%s) has no output", nm, op);
    if (!strcmp(op, "Constant")) {
        const Onnx__AttributeProto *a = attr(n, "value");
        if (!a || !a->t)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (Constant): only 'value'", nm);
        return kx_add_tensor(im, a->t, n->output[0]);
    }
    kg_attrs a;
    kg_attrs_default(&a);
    kg_op kop;
    int in[KG_MAX_IN], n_in = 0, max_in = 1, add_c = -1;
    if (n->n_input > KG_MAX_IN)
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): %zu inputs", nm, op, n->n_input);
    if (!strcmp(op, "Conv"))
        kop = KG_OP_CONV, max_in = 3;
    else if (!strcmp(op, "BatchNormalization"))
        kop = KG_OP_BATCHNORM, max_in = 5;
    else if (!strcmp(op, "Relu"))
        kop = KG_OP_RELU;
    else if (!strcmp(op, "Clip"))
        kop = KG_OP_CLIP;
    else if (!strcmp(op, "LeakyRelu"))
        kop = KG_OP_LEAKYRELU;
    else if (!strcmp(op, "Sigmoid"))
        kop = KG_OP_SIGMOID;
    else if (!strcmp(op, "MaxPool"))
        kop = KG_OP_MAXPOOL;
    else if (!strcmp(op, "AveragePool"))
        kop = KG_OP_AVGPOOL;
    else if (!strcmp(op, "GlobalAveragePool"))
        kop = KG_OP_GLOBALAVGPOOL;
    else if (!strcmp(op, "GlobalMaxPool"))
        kop = KG_OP_GLOBALMAXPOOL;
    else if (!strcmp(op, "Add"))
        kop = KG_OP_ADD, max_in = 2;
    else if (!strcmp(op, "Mul"))
        kop = KG_OP_MUL, max_in = 2;
    else if (!strcmp(op, "Concat"))
        kop = KG_OP_CONCAT, max_in = KG_MAX_IN;
    else if (!strcmp(op, "Flatten"))
        kop = KG_OP_FLATTEN;
    else if (!strcmp(op, "Reshape"))
        kop = KG_OP_RESHAPE;
    else if (!strcmp(op, "Gemm") || !strcmp(op, "MatMul"))
        kop = KG_OP_DENSE, max_in = 3;
    else if (!strcmp(op, "Softmax"))
        kop = KG_OP_SOFTMAX;
    else if (!strcmp(op, "Pad"))
        kop = KG_OP_PAD;
    else if (!strcmp(op, "Identity") || !strcmp(op, "Dropout"))
        kop = KG_OP_IDENTITY;
    else
        return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): unsupported operator", nm, op);

    /* data inputs; the rest (Clip bounds, Reshape shape, Pad pads, Dropout
     * ratio) are read as constants below */
    for (size_t i = 0; i < n->n_input && (int)i < max_in; i++) {
        in[n_in] = kx_value_of(im, n->input[i]);
        if (in[n_in] == -2)
            return kg_fail(err, KILN_ERR_UNSUPPORTED,
                           "node '%s' (%s): input '%s' is not produced by a supported node", nm, op,
                           n->input[i]);
        n_in++;
    }
    if (n_in < 1 || in[0] < 0)
        return kg_fail(err, KILN_ERR_FORMAT, "node '%s' (%s): missing input", nm, op);
    kiln_status st = KILN_OK;
    switch (kop) {
    case KG_OP_CONV: {
        if (n_in < 2 || in[1] < 0 || im->g->values[in[1]].kind != KG_CONST ||
            im->g->values[in[1]].ndim != 4)
            return kg_fail(err, KILN_ERR_UNSUPPORTED,
                           "node '%s' (Conv): weights must be a constant 4-d tensor (Conv2d)", nm);
        a.group = (int)attr_int(n, "group", 1);
        if (a.group < 1) return kg_fail(err, KILN_ERR_FORMAT, "node '%s': bad group", nm);
        st = window(im, n, nm, in[0], 1, &a);
        break;
    }
    case KG_OP_MAXPOOL:
    case KG_OP_AVGPOOL:
        if (n->n_output > 1 && n->output[1] && *n->output[1])
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (MaxPool): indices output", nm);
        a.ceil_mode = (int)attr_int(n, "ceil_mode", 0);
        a.count_include_pad = (int)attr_int(n, "count_include_pad", 0);
        if (attr_int(n, "storage_order", 0))
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s': storage_order 1", nm);
        st = window(im, n, nm, in[0], 0, &a);
        break;
    case KG_OP_BATCHNORM:
        if (attr_int(n, "training_mode", 0))
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): training_mode", nm, op);
        a.epsilon = attr_float(n, "epsilon", 1e-5f);
        break;
    case KG_OP_LEAKYRELU:
        a.alpha = attr_float(n, "alpha", 0.01f);
        break;
    case KG_OP_CLIP:
        if (im->opset < 11) {
            a.min = attr_float(n, "min", a.min);
            a.max = attr_float(n, "max", a.max);
        } else {
            if (n->n_input > 1) st = const_scalar(im, n->input[1], nm, &a.min);
            if (!st && n->n_input > 2) st = const_scalar(im, n->input[2], nm, &a.max);
        }
        break;
    case KG_OP_CONCAT: {
        const Onnx__AttributeProto *ax = attr(n, "axis");
        if (!ax) return kg_fail(err, KILN_ERR_FORMAT, "node '%s' (Concat): no axis", nm);
        a.axis = (int)ax->i;
        for (int k = 0; k < n_in; k++)
            if (in[k] < 0) return kg_fail(err, KILN_ERR_FORMAT, "node '%s': empty input", nm);
        break;
    }
    case KG_OP_FLATTEN:
        a.axis = (int)attr_int(n, "axis", 1);
        break;
    case KG_OP_SOFTMAX:
        a.axis = (int)attr_int(n, "axis", im->opset < 13 ? 1 : -1);
        a.flat = im->opset < 13;
        break;
    case KG_OP_RESHAPE: {
        int64_t shape[KILN_MAX_DIMS + 1];
        int cnt;
        if (n->n_input > 1) {
            const ints_entry *e = kx_find_ints(im, n->input[1]);
            if (!e)
                return kg_fail(err, KILN_ERR_UNSUPPORTED,
                               "node '%s' (Reshape): shape must be a constant", nm);
            cnt = e->n;
            for (int k = 0; k < cnt && k <= KILN_MAX_DIMS; k++) shape[k] = e->v[k];
        } else {
            cnt = attr_ints(n, "shape", shape, KILN_MAX_DIMS + 1);
        }
        if (cnt < 0 || cnt > KILN_MAX_DIMS)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (Reshape): bad target rank", nm);
        if (attr_int(n, "allowzero", 0))
            for (int k = 0; k < cnt; k++)
                if (shape[k] == 0)
                    return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s': allowzero with 0", nm);
        a.shape_n = cnt;
        memcpy(a.shape, shape, (size_t)cnt * sizeof *shape);
        break;
    }
    case KG_OP_PAD: {
        char mode[32];
        const char *md = attr_str(n, "mode", mode, sizeof mode);
        if (md && strcmp(md, "constant"))
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (Pad): mode '%s'", nm, md);
        int64_t pads[2 * KILN_MAX_DIMS];
        int cnt;
        if (im->opset < 11) {
            cnt = attr_ints(n, "pads", pads, 2 * KILN_MAX_DIMS);
            a.pad_value = attr_float(n, "value", 0.f);
        } else {
            const ints_entry *e = n->n_input > 1 ? kx_find_ints(im, n->input[1]) : NULL;
            if (!e)
                return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (Pad): pads must be constant",
                               nm);
            cnt = e->n;
            for (int k = 0; k < cnt && k < 2 * KILN_MAX_DIMS; k++) pads[k] = e->v[k];
            if (n->n_input > 2) st = const_scalar(im, n->input[2], nm, &a.pad_value);
            if (!st && n->n_input > 3 && n->input[3] && *n->input[3])
                return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (Pad): axes input", nm);
        }
        kg_value x;
        if (!st) st = shape_of(im, in[0], &x);
        if (st) return st;
        if (cnt != 2 * x.ndim)
            return kg_fail(err, KILN_ERR_FORMAT, "node '%s' (Pad): %d pads for rank %d", nm, cnt,
                           x.ndim);
        memcpy(a.pads, pads, (size_t)cnt * sizeof *pads);
        break;
    }
    case KG_OP_DENSE:
        if (n_in < 2 || in[1] < 0)
            return kg_fail(err, KILN_ERR_FORMAT, "node '%s' (%s): missing B", nm, op);
        st = dense(im, n, nm, in, &n_in, &add_c);
        break;
    case KG_OP_IDENTITY:
        n_in = 1;
        break;
    default:
        break;
    }
    if (st) return st;
    for (size_t k = 1; k < n->n_output; k++)
        if (n->output[k] && *n->output[k] && kop != KG_OP_IDENTITY && kop != KG_OP_BATCHNORM)
            return kg_fail(err, KILN_ERR_UNSUPPORTED, "node '%s' (%s): extra outputs", nm, op);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.gemm", n->output[0]);
    int out = kg_add_value(im->g, add_c >= 0 ? tmp : n->output[0], KG_ACTIVATION, 0, NULL);
    if (out < 0)
        return kg_fail(err, KILN_ERR_FORMAT, "node '%s' (%s): output '%s' is defined twice", nm, op,
                       n->output[0]);
    if (kg_add_node(im->g, nm, kop, in, n_in, out, &a) < 0) {
        /* node names may repeat or be empty in ONNX files: make one up */
        char alt[300];
        snprintf(alt, sizeof alt, "%s_%d", nm, index);
        if (kg_add_node(im->g, alt, kop, in, n_in, out, &a) < 0)
            return kg_fail(err, KILN_ERR_NO_MEMORY, "node '%s': out of memory", nm);
    }
    if (add_c >= 0) {
        int y = kg_add_value(im->g, n->output[0], KG_ACTIVATION, 0, NULL);
        snprintf(tmp, sizeof tmp, "%s.bias", nm);
        if (y < 0 || kg_add_node(im->g, tmp, KG_OP_ADD, (int[]){out, add_c}, 2, y, NULL) < 0)
            return kg_fail(err, KILN_ERR_FORMAT, "node '%s': cannot add its bias", nm);
    }
    return KILN_OK;
}
