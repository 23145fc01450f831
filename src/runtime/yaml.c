/*
 * Architectures in YAML (the .yaml files in models/) -> graph, with seeded random
 * weights. The vocabulary:
 *
 *   name: lenet-mnist
 *   input: {name: image, shape: [1, 1, 28, 28]}
 *   meta: {input_layout: NCHW, mean: "0.1307", std: "0.3081", labels: [a, b]}
 *   layers:
 *     - {type: conv, filters: 32, kernel: 5, stride: 1, pad: same|valid|N,
 *        groups: 1, bn: false, act: relu|relu6|sigmoid|leaky|none}
 *     - {type: maxpool|avgpool, kernel: 2, stride: 2, pad: 0}
 *     - {type: gap}            global average pool
 *     - {type: flatten}
 *     - {type: dense, units: 10, act: none}
 *     - {type: batchnorm} {type: relu} {type: dropout} {type: softmax}
 *     - {type: bottleneck, mid: 64, out: 256, stride: 1, repeat: 3}
 *         ResNet v1.5 bottleneck: 1x1 mid, 3x3 mid (stride), 1x1 out, each
 *         with batch norm; a 1x1 projection shortcut when the shape
 *         changes; add; ReLU. `repeat` stacks blocks, the stride applying
 *         to the first.
 *     - {type: basic, filters: 64, stride: 1, repeat: 2}
 *         ResNet basic block: 3x3 filters (stride), 3x3 filters, each with
 *         batch norm, the same shortcut, add, ReLU.
 *
 * Weights: He normal for layers followed by ReLU, Glorot uniform
 * otherwise; batch norm gamma 1, beta 0, mean 0, var 1.
 */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct ybuild {
    yaml_document_t *doc;
    kg_graph *g;
    int cur; /* value index of the running activation */
    uint64_t rng;
    char *err;
} ybuild;

/* snprintf for names; a name cut at the buffer's end is still a name. */
static void name_fmt(char *dst, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void name_fmt(char *dst, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, len, fmt, ap);
    va_end(ap);
}

static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return ((next_u64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static yaml_node_t *map_get(yaml_document_t *d, yaml_node_t *m, const char *key)
{
    if (!m || m->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp((char *)k->data.scalar.value, key))
            return yaml_document_get_node(d, p->value);
    }
    return NULL;
}

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* An integer field in [lo, hi]; `def` when absent; -1 + error when bad. */
static int get_int(ybuild *b, yaml_node_t *m, const char *key, int def, int lo, int hi,
                   const char *layer)
{
    const char *s = scalar(map_get(b->doc, m, key));
    if (!s) return def;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || end == s || v < lo || v > hi) {
        kg_fail(b->err, KILN_ERR_FORMAT, "%s: %s must be an integer in %d..%d, got '%s'", layer,
                key, lo, hi, s);
        return INT32_MIN;
    }
    return (int)v;
}

/* Adds a constant filled from the generator. mode: 0 zeros, 1 ones, 2 He
 * normal, 3 Glorot uniform. */
static int init_const(ybuild *b, const char *node, const char *what, int ndim, const int64_t *dims,
                      int mode, int64_t fan_in, int64_t fan_out)
{
    char name[300];
    name_fmt(name, sizeof name, "%s.%s", node, what);
    int id = kg_add_const_zeros(b->g, name, ndim, dims);
    if (id < 0) return -1;
    kg_value *v = &b->g->values[id];
    int64_t n = kg_numel(v);
    for (int64_t i = 0; i < n; i++) {
        if (mode == 1)
            v->data[i] = 1.f;
        else if (mode == 2) {
            double u1 = uniform01(&b->rng), u2 = uniform01(&b->rng);
            double z = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
            v->data[i] = (float)(z * sqrt(2.0 / (double)fan_in));
        } else if (mode == 3) {
            double a = sqrt(6.0 / (double)(fan_in + fan_out));
            v->data[i] = (float)((2 * uniform01(&b->rng) - 1) * a);
        }
    }
    return id;
}

static int node_out(ybuild *b, const char *name, kg_op op, const int *in, int n_in,
                    const kg_attrs *a)
{
    char oname[300];
    name_fmt(oname, sizeof oname, "%s.out", name);
    int out = kg_add_value(b->g, oname, KG_ACTIVATION, 0, NULL);
    if (out < 0 || kg_add_node(b->g, name, op, in, n_in, out, a) < 0) return -1;
    /* keep shapes current so the next layer can read its input channels */
    return out;
}

static const kg_value *cur_val(ybuild *b)
{
    return &b->g->values[b->cur];
}

/* Infers shapes with the running activation as the output, so that each
 * layer sees its input's shape and errors name the layer that broke. */
static kiln_status infer(ybuild *b)
{
    b->g->outputs[0] = b->cur;
    b->g->n_outputs = 1;
    return kg_infer_shapes(b->g, 0, b->err);
}

#define OOM kg_fail(b->err, KILN_ERR_NO_MEMORY, "out of memory building the graph")

static kiln_status add_act(ybuild *b, const char *base, kg_op op, float lo, float hi)
{
    char name[300];
    kg_attrs a;
    kg_attrs_default(&a);
    a.min = lo;
    a.max = hi;
    name_fmt(name, sizeof name, "%s.%s", base, op == KG_OP_RELU ? "relu" : "act");
    int out = node_out(b, name, op, &b->cur, 1, &a);
    if (out < 0) return OOM;
    b->cur = out;
    return KILN_OK;
}

static kiln_status add_bn(ybuild *b, const char *base)
{
    char name[300];
    name_fmt(name, sizeof name, "%s.bn", base);
    int64_t c = cur_val(b)->dims[1];
    int in[5] = {b->cur, init_const(b, name, "gamma", 1, &c, 1, 0, 0),
                 init_const(b, name, "beta", 1, &c, 0, 0, 0),
                 init_const(b, name, "mean", 1, &c, 0, 0, 0),
                 init_const(b, name, "var", 1, &c, 1, 0, 0)};
    for (int k = 1; k < 5; k++)
        if (in[k] < 0) return OOM;
    int out = node_out(b, name, KG_OP_BATCHNORM, in, 5, NULL);
    if (out < 0) return OOM;
    b->cur = out;
    return infer(b);
}

/* conv [+bn] [+act] from the running activation. */
static kiln_status add_conv(ybuild *b, const char *name, int filters, int k, int stride, int pad,
                            int groups, int bn, kg_op act, float lo, float hi)
{
    const kg_value *x = cur_val(b);
    if (x->ndim != 4) return kg_fail(b->err, KILN_ERR_SHAPE, "%s: conv needs a 4-d input", name);
    int64_t cin = x->dims[1];
    if (groups < 1 || cin % groups || filters % groups)
        return kg_fail(b->err, KILN_ERR_SHAPE, "%s: %d groups do not divide %lld channels", name,
                       groups, (long long)cin);
    int64_t wd[4] = {filters, cin / groups, k, k};
    int64_t fan_in = wd[1] * k * k, fan_out = (int64_t)filters * k * k / groups;
    int w = init_const(b, name, "weight", 4, wd, act == KG_OP_RELU ? 2 : 3, fan_in, fan_out);
    int64_t oc = filters;
    int bias = bn ? -1 : init_const(b, name, "bias", 1, &oc, 0, 0, 0);
    if (w < 0 || (!bn && bias < 0)) return OOM;
    kg_attrs a;
    kg_attrs_default(&a);
    a.kernel[0] = a.kernel[1] = k;
    a.stride[0] = a.stride[1] = stride;
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = pad;
    a.group = groups;
    int out = node_out(b, name, KG_OP_CONV, (int[]){b->cur, w, bias}, 3, &a);
    if (out < 0) return OOM;
    b->cur = out;
    kiln_status st = infer(b);
    if (!st && bn) st = add_bn(b, name);
    if (!st && act != KG_OP_COUNT_) st = add_act(b, name, act, lo, hi);
    return st ? st : infer(b);
}

/* A residual block: mid > 0 is a bottleneck (1x1 mid, 3x3 mid with the
 * stride, 1x1 out), mid = 0 a basic block (3x3 out with the stride, 3x3
 * out); each conv has batch norm; the input, or its 1x1 projection when the
 * stride or width changes, is added; then ReLU. */
static kiln_status add_block(ybuild *b, const char *name, int mid, int outc, int stride)
{
    char n1[300];
    int x = b->cur;
    int64_t cin = cur_val(b)->dims[1];
    kiln_status st;
    if (mid > 0) {
        name_fmt(n1, sizeof n1, "%s.conv1", name);
        if ((st = add_conv(b, n1, mid, 1, 1, 0, 1, 1, KG_OP_RELU, 0, 0))) return st;
        name_fmt(n1, sizeof n1, "%s.conv2", name);
        if ((st = add_conv(b, n1, mid, 3, stride, 1, 1, 1, KG_OP_RELU, 0, 0))) return st;
        name_fmt(n1, sizeof n1, "%s.conv3", name);
        if ((st = add_conv(b, n1, outc, 1, 1, 0, 1, 1, KG_OP_COUNT_, 0, 0))) return st;
    } else {
        name_fmt(n1, sizeof n1, "%s.conv1", name);
        if ((st = add_conv(b, n1, outc, 3, stride, 1, 1, 1, KG_OP_RELU, 0, 0))) return st;
        name_fmt(n1, sizeof n1, "%s.conv2", name);
        if ((st = add_conv(b, n1, outc, 3, 1, 1, 1, 1, KG_OP_COUNT_, 0, 0))) return st;
    }
    int main_out = b->cur, shortcut = x;
    if (stride != 1 || cin != outc) {
        b->cur = x;
        name_fmt(n1, sizeof n1, "%s.downsample", name);
        if ((st = add_conv(b, n1, outc, 1, stride, 0, 1, 1, KG_OP_COUNT_, 0, 0))) return st;
        shortcut = b->cur;
    }
    name_fmt(n1, sizeof n1, "%s.add", name);
    int out = node_out(b, n1, KG_OP_ADD, (int[]){main_out, shortcut}, 2, NULL);
    if (out < 0) return OOM;
    b->cur = out;
    if ((st = add_act(b, n1, KG_OP_RELU, 0, 0))) return st;
    return infer(b);
}

static kiln_status parse_act(ybuild *b, yaml_node_t *l, const char *name, kg_op *op, float *lo,
                             float *hi)
{
    const char *s = scalar(map_get(b->doc, l, "act"));
    *op = KG_OP_COUNT_;
    *lo = 0;
    *hi = INFINITY;
    if (!s || !strcmp(s, "none")) return KILN_OK;
    if (!strcmp(s, "relu"))
        *op = KG_OP_RELU;
    else if (!strcmp(s, "relu6")) {
        *op = KG_OP_CLIP;
        *hi = 6;
    } else if (!strcmp(s, "sigmoid"))
        *op = KG_OP_SIGMOID;
    else if (!strcmp(s, "leaky"))
        *op = KG_OP_LEAKYRELU;
    else
        return kg_fail(b->err, KILN_ERR_FORMAT, "%s: unknown activation '%s'", name, s);
    return KILN_OK;
}

#define GET(var, key, def, lo, hi)                   \
    int var = get_int(b, l, key, def, lo, hi, name); \
    if (var == INT32_MIN) return KILN_ERR_FORMAT

static kiln_status add_layer(ybuild *b, yaml_node_t *l, int index)
{
    char name[256];
    const char *type = scalar(map_get(b->doc, l, "type"));
    const char *given = scalar(map_get(b->doc, l, "name"));
    if (!type) return kg_fail(b->err, KILN_ERR_FORMAT, "layer %d has no type", index);
    if (given)
        name_fmt(name, sizeof name, "%s", given);
    else
        name_fmt(name, sizeof name, "%s%d", type, index);
    kg_op act;
    float lo, hi;
    kiln_status st = parse_act(b, l, name, &act, &lo, &hi);
    if (st) return st;
    kg_attrs a;
    kg_attrs_default(&a);
    if (!strcmp(type, "conv")) {
        GET(filters, "filters", 0, 1, 1 << 16);
        GET(k, "kernel", 3, 1, 64);
        GET(stride, "stride", 1, 1, 64);
        GET(groups, "groups", 1, 1, 1 << 16);
        const char *pads = scalar(map_get(b->doc, l, "pad"));
        int pad = 0;
        if (!pads || !strcmp(pads, "same"))
            pad = (k - 1) / 2;
        else if (strcmp(pads, "valid")) {
            GET(p, "pad", 0, 0, 64);
            pad = p;
        }
        const char *bn = scalar(map_get(b->doc, l, "bn"));
        int use_bn = bn && !strcmp(bn, "true");
        return add_conv(b, name, filters, k, stride, pad, groups, use_bn, act, lo, hi);
    }
    if (!strcmp(type, "maxpool") || !strcmp(type, "avgpool")) {
        GET(k, "kernel", 2, 1, 64);
        GET(stride, "stride", k, 1, 64);
        GET(pad, "pad", 0, 0, 63);
        a.kernel[0] = a.kernel[1] = k;
        a.stride[0] = a.stride[1] = stride;
        a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = pad;
        int out = node_out(b, name, type[0] == 'm' ? KG_OP_MAXPOOL : KG_OP_AVGPOOL, &b->cur, 1, &a);
        if (out < 0) return OOM;
        b->cur = out;
        return infer(b);
    }
    if (!strcmp(type, "bottleneck")) {
        GET(mid, "mid", 64, 1, 1 << 16);
        GET(outc, "out", 256, 1, 1 << 16);
        GET(stride, "stride", 1, 1, 8);
        GET(repeat, "repeat", 1, 1, 64);
        for (int r = 0; r < repeat; r++) {
            char bname[300];
            name_fmt(bname, sizeof bname, "%s.%d", name, r);
            if ((st = add_block(b, bname, mid, outc, r ? 1 : stride))) return st;
        }
        return KILN_OK;
    }
    if (!strcmp(type, "basic")) {
        GET(outc, "filters", 64, 1, 1 << 16);
        GET(stride, "stride", 1, 1, 8);
        GET(repeat, "repeat", 1, 1, 64);
        for (int r = 0; r < repeat; r++) {
            char bname[300];
            name_fmt(bname, sizeof bname, "%s.%d", name, r);
            if ((st = add_block(b, bname, 0, outc, r ? 1 : stride))) return st;
        }
        return KILN_OK;
    }
    if (!strcmp(type, "dense")) {
        GET(units, "units", 0, 1, 1 << 24);
        const kg_value *x = cur_val(b);
        if (x->ndim != 2)
            return kg_fail(b->err, KILN_ERR_SHAPE, "%s: dense needs a 2-d input (flatten first)",
                           name);
        int64_t wd[2] = {units, x->dims[1]}, u = units;
        int w = init_const(b, name, "weight", 2, wd, act == KG_OP_RELU ? 2 : 3, wd[1], units);
        int bias = init_const(b, name, "bias", 1, &u, 0, 0, 0);
        if (w < 0 || bias < 0) return OOM;
        int out = node_out(b, name, KG_OP_DENSE, (int[]){b->cur, w, bias}, 3, NULL);
        if (out < 0) return OOM;
        b->cur = out;
        if ((st = infer(b))) return st;
        if (act != KG_OP_COUNT_ && (st = add_act(b, name, act, lo, hi))) return st;
        return infer(b);
    }
    if (!strcmp(type, "batchnorm")) return add_bn(b, name);
    kg_op op = !strcmp(type, "gap")       ? KG_OP_GLOBALAVGPOOL
               : !strcmp(type, "flatten") ? KG_OP_FLATTEN
               : !strcmp(type, "relu")    ? KG_OP_RELU
               : !strcmp(type, "softmax") ? KG_OP_SOFTMAX
               : !strcmp(type, "dropout") ? KG_OP_IDENTITY
                                          : KG_OP_COUNT_;
    if (op == KG_OP_COUNT_)
        return kg_fail(b->err, KILN_ERR_UNSUPPORTED, "%s: unknown layer type '%s'", name, type);
    int out = node_out(b, name, op, &b->cur, 1, &a);
    if (out < 0) return OOM;
    b->cur = out;
    return infer(b);
}

static kiln_status read_meta(ybuild *b, yaml_node_t *root, kg_meta *meta)
{
    const char *nm = scalar(map_get(b->doc, root, "name"));
    if (nm && kg_meta_set(meta, "name", nm)) return OOM;
    yaml_node_t *m = map_get(b->doc, root, "meta");
    if (!m) return KILN_OK;
    if (m->type != YAML_MAPPING_NODE)
        return kg_fail(b->err, KILN_ERR_FORMAT, "meta must be a mapping");
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        const char *k = scalar(yaml_document_get_node(b->doc, p->key));
        yaml_node_t *v = yaml_document_get_node(b->doc, p->value);
        if (!k || !v) continue;
        if (v->type == YAML_SCALAR_NODE) {
            if (kg_meta_set(meta, k, scalar(v))) return OOM;
        } else if (v->type == YAML_SEQUENCE_NODE) {
            /* lists (labels) are joined by newlines, numbers by commas */
            size_t cap = 1;
            yaml_node_item_t *it;
            for (it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                const char *s = scalar(yaml_document_get_node(b->doc, *it));
                cap += (s ? strlen(s) : 0) + 1;
            }
            char *joined = malloc(cap);
            if (!joined) return OOM;
            size_t len = 0;
            char sep = !strcmp(k, "labels") ? '\n' : ',';
            for (it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                const char *s = scalar(yaml_document_get_node(b->doc, *it));
                if (!s) continue;
                if (len) joined[len++] = sep;
                memcpy(joined + len, s, strlen(s));
                len += strlen(s);
            }
            joined[len] = 0;
            kiln_status st = kg_meta_set(meta, k, joined) ? OOM : KILN_OK;
            free(joined);
            if (st) return st;
        }
    }
    return KILN_OK;
}

kiln_status kg_from_yaml(const char *path, uint64_t seed, kg_graph **out, kg_meta *meta,
                         char err[KG_ERRLEN])
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kg_fail(err, KILN_ERR_NOT_FOUND, "%s: cannot open", path);
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        kiln_status st =
            kg_fail(err, KILN_ERR_FORMAT, "%s:%zu: %s", path, parser.problem_mark.line + 1,
                    parser.problem ? parser.problem : "YAML error");
        yaml_parser_delete(&parser);
        fclose(f);
        return st;
    }
    yaml_parser_delete(&parser);
    fclose(f);
    ybuild b = {.doc = &doc, .g = kg_graph_new(), .rng = seed, .err = err};
    kiln_status st = KILN_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    yaml_node_t *input = map_get(&doc, root, "input"), *layers = map_get(&doc, root, "layers");
    yaml_node_t *shape = map_get(&doc, input, "shape");
    if (!b.g) {
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    if (!shape || shape->type != YAML_SEQUENCE_NODE || !layers ||
        layers->type != YAML_SEQUENCE_NODE) {
        st = kg_fail(err, KILN_ERR_FORMAT, "%s: needs input.shape and a layers list", path);
        goto done;
    }
    int64_t dims[KILN_MAX_DIMS];
    int nd = 0;
    for (yaml_node_item_t *it = shape->data.sequence.items.start;
         it < shape->data.sequence.items.top; it++) {
        const char *s = scalar(yaml_document_get_node(&doc, *it));
        long long v = s ? atoll(s) : 0;
        if (nd == KILN_MAX_DIMS || v < 1 || v > (1 << 20)) {
            st = kg_fail(err, KILN_ERR_FORMAT, "%s: bad input shape", path);
            goto done;
        }
        dims[nd++] = v;
    }
    const char *iname = scalar(map_get(&doc, input, "name"));
    b.cur = kg_add_value(b.g, iname ? iname : "input", KG_INPUT, nd, dims);
    if (b.cur < 0) {
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    b.g->inputs[b.g->n_inputs++] = b.cur;
    const char *nm = scalar(map_get(&doc, root, "name"));
    b.g->name = strdup(nm ? nm : "model");
    int index = 0;
    for (yaml_node_item_t *it = layers->data.sequence.items.start;
         it < layers->data.sequence.items.top; it++, index++) {
        if ((st = add_layer(&b, yaml_document_get_node(&doc, *it), index))) goto done;
        b.g->n_outputs = 1;
        b.g->outputs[0] = b.cur;
    }
    if (!b.g->n_outputs) {
        st = kg_fail(err, KILN_ERR_FORMAT, "%s: no layers", path);
        goto done;
    }
    if ((st = read_meta(&b, root, meta))) goto done;
    if ((st = kg_infer_shapes(b.g, 0, err))) goto done;
    *out = b.g;
    b.g = NULL;
done:
    if (st) kg_meta_free(meta);
    kg_graph_free(b.g);
    yaml_document_delete(&doc);
    return st;
}
