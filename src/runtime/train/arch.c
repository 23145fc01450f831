/* Architecture files (YAML) for sequential training nets (see net.h). */
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static yaml_node_t *map_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
            return yaml_document_get_node(doc, p->value);
    }
    return NULL;
}

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* An integer field in [lo, hi]; `def` when absent. -1 on a bad value. */
static int get_int(yaml_document_t *doc, yaml_node_t *map, const char *key, int def, int lo, int hi,
                   int *out)
{
    yaml_node_t *n = map_get(doc, map, key);
    if (!n) {
        *out = def;
        return 0;
    }
    const char *s = scalar(n);
    if (!s) return -1;
    if (!strcmp(s, "true")) s = "1";
    if (!strcmp(s, "false")) s = "0";
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int get_float(yaml_document_t *doc, yaml_node_t *map, const char *key, float def, float *out)
{
    yaml_node_t *n = map_get(doc, map, key);
    if (!n) {
        *out = def;
        return 0;
    }
    const char *s = scalar(n);
    char *end;
    if (!s) return -1;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0 && v < 1)) return -1;
    *out = (float)v;
    return 0;
}

/* Appends a layer reading `src` (-2: the layer before it). -1 when full. */
static int push(kt_arch *a, kt_layer_spec s, int src)
{
    if (a->nlayers >= KT_MAX_LAYERS) return -1;
    s.src = src == -2 ? a->nlayers - 1 : src;
    a->layers[a->nlayers++] = s;
    return 0;
}

static int push_conv_bn(kt_arch *a, int filters, int k, int stride, int src, int relu)
{
    kt_layer_spec c = {
        .kind = KT_CONV, .filters = filters, .kernel = k, .stride = stride, .pad = k / 2};
    kt_layer_spec bn = {.kind = KT_BN, .eps = 1e-5f, .momentum = 0.1f};
    kt_layer_spec r = {.kind = KT_RELU};
    return push(a, c, src) || push(a, bn, -2) || (relu && push(a, r, -2));
}

/*
 * One residual block on the output of the last layer (cin channels): a
 * bottleneck (mid > 0: 1x1 mid, 3x3 mid with the stride, 1x1 out) or a
 * basic block (mid = 0: 3x3 out with the stride, 3x3 out), each conv with
 * batch norm, plus the input or its 1x1 projection, then ReLU.
 */
static int push_block(kt_arch *a, int mid, int outc, int stride, int cin)
{
    const int in = a->nlayers - 1;
    int bad = mid > 0
                  ? push_conv_bn(a, mid, 1, 1, -2, 1) || push_conv_bn(a, mid, 3, stride, -2, 1) ||
                        push_conv_bn(a, outc, 1, 1, -2, 0)
                  : push_conv_bn(a, outc, 3, stride, -2, 1) || push_conv_bn(a, outc, 3, 1, -2, 0);
    if (bad) return -1;
    const int main_out = a->nlayers - 1;
    int skip = in;
    if (stride != 1 || cin != outc) {
        if (push_conv_bn(a, outc, 1, stride, in, 0)) return -1;
        skip = a->nlayers - 1;
    }
    kt_layer_spec add = {.kind = KT_ADD, .skip = skip};
    kt_layer_spec r = {.kind = KT_RELU};
    return push(a, add, main_out) || push(a, r, -2);
}

kiln_status kt_arch_parse(const char *yaml, size_t len, const char *what, kt_arch *out,
                          kiln_errbuf *err)
{
    memset(out, 0, sizeof *out);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory", what);
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        kiln_status st =
            kiln__fail(err, KILN_ERR_FORMAT, "%s:%zu: %s", what, parser.problem_mark.line + 1,
                       parser.problem ? parser.problem : "YAML error");
        yaml_parser_delete(&parser);
        return st;
    }
    yaml_parser_delete(&parser);
    kiln_status st = KILN_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "%s: not a YAML mapping", what);
        goto done;
    }
    const char *name = scalar(map_get(&doc, root, "name"));
    snprintf(out->name, sizeof out->name, "%s", name ? name : "model");
    yaml_node_t *in = map_get(&doc, root, "input");
    yaml_node_t *shape = map_get(&doc, in, "shape");
    if (shape && shape->type == YAML_SEQUENCE_NODE &&
        shape->data.sequence.items.top - shape->data.sequence.items.start == 4) {
        /* [N, C, H, W]: the batch entry is ignored */
        int v[4];
        for (int k = 0; k < 4; k++) {
            const char *t =
                scalar(yaml_document_get_node(&doc, shape->data.sequence.items.start[k]));
            char *end;
            long x = t ? strtol(t, &end, 10) : 0;
            v[k] = t && end != t && !*end && x > 0 && x <= 4096 ? (int)x : 0;
        }
        out->channels = v[1] <= 4 ? v[1] : 0, out->height = v[2], out->width = v[3];
    } else if (in && (get_int(&doc, in, "channels", 0, 1, 4, &out->channels) ||
                      get_int(&doc, in, "height", 0, 1, 4096, &out->height) ||
                      get_int(&doc, in, "width", 0, 1, 4096, &out->width))) {
        out->channels = 0;
    }
    if (!in || !out->channels || !out->height || !out->width) {
        st = kiln__fail(err, KILN_ERR_FORMAT,
                        "%s: 'input' needs shape [1, C, H, W] or channels (1-4), height and "
                        "width (1-4096)",
                        what);
        goto done;
    }
    yaml_node_t *layers = map_get(&doc, root, "layers");
    if (!layers || layers->type != YAML_SEQUENCE_NODE) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "%s: 'layers' must be a list", what);
        goto done;
    }
    int prev_spatial = 1, cur_c = out->channels;
    for (yaml_node_item_t *it = layers->data.sequence.items.start;
         it < layers->data.sequence.items.top; it++) {
        yaml_node_t *ln = yaml_document_get_node(&doc, *it);
        int idx = out->nlayers + 1;
        const char *type =
            ln && ln->type == YAML_SCALAR_NODE ? scalar(ln) : scalar(map_get(&doc, ln, "type"));
        if (!type) {
            st = kiln__fail(err, KILN_ERR_FORMAT, "%s: layer %d has no type", what, idx);
            goto done;
        }
        kt_layer_spec s = {0};
        int bad = 0, bn = 0, relu = 0, src = -2;
        if (out->softmax) {
            st = kiln__fail(err, KILN_ERR_FORMAT, "%s: layer %d: softmax must be the last layer",
                            what, idx);
            goto done;
        }
        if (!strcmp(type, "conv") || !strcmp(type, "dense")) {
            const char *act = scalar(map_get(&doc, ln, "act"));
            if (act && !strcmp(act, "relu"))
                relu = 1;
            else if (act && strcmp(act, "none")) {
                st = kiln__fail(err, KILN_ERR_UNSUPPORTED,
                                "%s: layer %d: activation '%s' is not supported by the trainer "
                                "(relu or none)",
                                what, idx, act);
                goto done;
            }
        }
        if (!strcmp(type, "conv")) {
            s.kind = KT_CONV;
            int groups;
            bad = get_int(&doc, ln, "filters", 0, 1, 65536, &s.filters) ||
                  get_int(&doc, ln, "kernel", 0, 1, 64, &s.kernel) ||
                  get_int(&doc, ln, "stride", 1, 1, 64, &s.stride) ||
                  get_int(&doc, ln, "bn", 0, 0, 1, &bn) ||
                  get_int(&doc, ln, "groups", 1, 1, 1, &groups) || !s.filters || !s.kernel;
            const char *pad = scalar(map_get(&doc, ln, "pad"));
            if (pad && !strcmp(pad, "same"))
                s.pad = s.kernel / 2, bad = bad || s.kernel % 2 == 0;
            else if (pad && !strcmp(pad, "valid"))
                s.pad = 0;
            else
                bad = bad || get_int(&doc, ln, "pad", 0, 0, 64, &s.pad);
            bad = bad || get_int(&doc, ln, "bias", !bn, 0, 1, &s.bias);
        } else if (!strcmp(type, "bottleneck") || !strcmp(type, "basic")) {
            int mid = 0, outc, stride, repeat, b = type[1] == 'o';
            /* defaults as src/runtime/yaml.c's */
            bad = (b && get_int(&doc, ln, "mid", 64, 1, 65536, &mid)) ||
                  get_int(&doc, ln, b ? "out" : "filters", b ? 256 : 64, 1, 65536, &outc) ||
                  get_int(&doc, ln, "stride", 1, 1, 8, &stride) ||
                  get_int(&doc, ln, "repeat", 1, 1, 64, &repeat);
            if (bad) {
                st = kiln__fail(err, KILN_ERR_FORMAT, "%s: layer %d (%s): missing or bad field",
                                what, idx, type);
                goto done;
            }
            for (int r = 0; r < repeat; r++) {
                if (push_block(out, mid, outc, r ? 1 : stride, cur_c)) goto full;
                cur_c = outc;
            }
            prev_spatial = 1;
            continue;
        } else if (!strcmp(type, "add")) {
            s.kind = KT_ADD;
            bad = get_int(&doc, ln, "skip", -2, -1, out->nlayers - 1, &s.skip) || s.skip == -2;
        } else if (!strcmp(type, "batchnorm")) {
            s.kind = KT_BN;
            bad = get_float(&doc, ln, "eps", 1e-5f, &s.eps) ||
                  get_float(&doc, ln, "momentum", 0.1f, &s.momentum) || !(s.eps > 0);
        } else if (!strcmp(type, "relu")) {
            s.kind = KT_RELU;
        } else if (!strcmp(type, "maxpool") || !strcmp(type, "avgpool")) {
            s.kind = type[0] == 'm' ? KT_MAXPOOL : KT_AVGPOOL;
            int size;
            bad = get_int(&doc, ln, "size", 2, 1, 64, &size) ||
                  get_int(&doc, ln, "kernel", size, 1, 64, &s.kernel) ||
                  get_int(&doc, ln, "stride", s.kernel, 1, 64, &s.stride) ||
                  get_int(&doc, ln, "pad", 0, 0, 63, &s.pad);
        } else if (!strcmp(type, "globalavgpool") || !strcmp(type, "gap")) {
            s.kind = KT_GAP;
        } else if (!strcmp(type, "flatten")) {
            s.kind = KT_FLATTEN;
        } else if (!strcmp(type, "dense")) {
            s.kind = KT_DENSE;
            bad = get_int(&doc, ln, "units", 0, 1, 1 << 20, &s.units) ||
                  get_int(&doc, ln, "bias", 1, 0, 1, &s.bias) || !s.units;
            if (prev_spatial && !bad && push(out, (kt_layer_spec){.kind = KT_FLATTEN}, -2))
                goto full;
        } else if (!strcmp(type, "dropout")) {
            continue; /* identity at inference; the trainer does not drop */
        } else if (!strcmp(type, "softmax")) {
            out->softmax = 1; /* folded into the loss; kept for the exported model */
            continue;
        } else {
            st = kiln__fail(err, KILN_ERR_FORMAT,
                            "%s: layer %d: type '%s' is not supported by the trainer (conv, "
                            "batchnorm, relu, maxpool, avgpool, gap, flatten, dense, dropout, "
                            "softmax, bottleneck, basic)",
                            what, idx, type);
            goto done;
        }
        bad = bad || get_int(&doc, ln, "src", -2, -1, out->nlayers - 1, &src);
        if (bad) {
            st = kiln__fail(err, KILN_ERR_FORMAT, "%s: layer %d (%s): missing or bad field", what,
                            idx, type);
            goto done;
        }
        if (s.kind == KT_FLATTEN || s.kind == KT_DENSE || s.kind == KT_GAP) prev_spatial = 0;
        if (s.kind == KT_CONV) prev_spatial = 1, cur_c = s.filters;
        if (s.kind == KT_DENSE) cur_c = s.units;
        if (push(out, s, src) ||
            (bn && push(out, (kt_layer_spec){.kind = KT_BN, .eps = 1e-5f, .momentum = 0.1f}, -2)) ||
            (relu && push(out, (kt_layer_spec){.kind = KT_RELU}, -2)))
            goto full;
    }
    if (out->nlayers == 0) st = kiln__fail(err, KILN_ERR_FORMAT, "%s: no layers", what);
    goto done;
full:
    st = kiln__fail(err, KILN_ERR_LIMIT, "%s: more than %d layers", what, KT_MAX_LAYERS);
done:
    yaml_document_delete(&doc);
    return st;
}

char *kt_arch_to_yaml(const kt_arch *a)
{
    size_t cap = 256 + (size_t)a->nlayers * 128;
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t n = (size_t)snprintf(s, cap,
                                "name: %s\ninput: {channels: %d, height: %d, width: %d}\nlayers:\n",
                                a->name, a->channels, a->height, a->width);
    for (int i = 0; i < a->nlayers && n < cap; i++) {
        const kt_layer_spec *l = &a->layers[i];
        char src[32] = "";
        if (l->src != i - 1) snprintf(src, sizeof src, ", src: %d", l->src);
        switch (l->kind) {
        case KT_CONV:
            n += (size_t)snprintf(
                s + n, cap - n,
                "  - {type: conv, filters: %d, kernel: %d, stride: %d, pad: %d, bias: %d%s}\n",
                l->filters, l->kernel, l->stride, l->pad, l->bias, src);
            break;
        case KT_BN:
            n += (size_t)snprintf(s + n, cap - n, "  - {type: batchnorm, eps: %g, momentum: %g}\n",
                                  (double)l->eps, (double)l->momentum);
            break;
        case KT_RELU:
            n += (size_t)snprintf(s + n, cap - n, "  - {type: relu%s}\n", src);
            break;
        case KT_ADD:
            n += (size_t)snprintf(s + n, cap - n, "  - {type: add, skip: %d%s}\n", l->skip, src);
            break;
        case KT_MAXPOOL:
        case KT_AVGPOOL:
            n += (size_t)snprintf(s + n, cap - n, "  - {type: %s, size: %d, stride: %d, pad: %d}\n",
                                  l->kind == KT_MAXPOOL ? "maxpool" : "avgpool", l->kernel,
                                  l->stride, l->pad);
            break;
        case KT_GAP:
            n += (size_t)snprintf(s + n, cap - n, "  - {type: globalavgpool}\n");
            break;
        case KT_FLATTEN:
            n += (size_t)snprintf(s + n, cap - n, "  - {type: flatten}\n");
            break;
        case KT_DENSE:
            n += (size_t)snprintf(s + n, cap - n, "  - {type: dense, units: %d, bias: %d}\n",
                                  l->units, l->bias);
            break;
        }
    }
    if (a->softmax && n < cap) n += (size_t)snprintf(s + n, cap - n, "  - {type: softmax}\n");
    if (n >= cap) {
        free(s);
        return NULL;
    }
    return s;
}
