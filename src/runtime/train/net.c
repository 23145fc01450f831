/* Sequential training network: build, forward, backward, step. */
#include "net.h"

#include "loader.h"
#include "train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *kind_name(kt_layer_kind k)
{
    static const char *names[] = {"conv",          "batchnorm", "relu",  "maxpool", "avgpool",
                                  "globalavgpool", "flatten",   "dense", "add"};
    return names[k];
}

void kt_net_free(kt_net *net)
{
    if (!net) return;
    free(net->params);
    free(net->grads);
    free(net->state);
    free(net->gtmp);
    free(net->par.ws);
    free(net->par.acc);
    free(net->par.pk);
    free(net->par.flip);
    for (int i = 0; i < net->nlayers; i++) {
        free(net->layers[i].y);
        free(net->layers[i].dy);
        free(net->layers[i].argmax);
        free(net->layers[i].save_mean);
        free(net->layers[i].save_invstd);
        free(net->layers[i].scale);
    }
    memset(net, 0, sizeof *net);
}

/* A standard normal sample from a counter-based generator. */
static double gauss(uint64_t seed, uint64_t i)
{
    uint64_t a = kiln__mix64(seed ^ kiln__mix64(2 * i)),
             b = kiln__mix64(seed ^ kiln__mix64(2 * i + 1));
    double u1 = ((a >> 11) + 1.0) * (1.0 / 9007199254740993.0),
           u2 = (b >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

kiln_status kt_net_build(kt_net *net, const kt_arch *arch, int batch, const kt_optim *opt,
                         uint64_t seed, kiln_errbuf *err)
{
    return kt_net_build_frozen(net, arch, batch, opt, seed, 0, err);
}

kiln_status kt_net_set_threads(kt_net *net, int threads, kiln_errbuf *err)
{
    if (threads < 1 || threads > 256)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "threads %d out of range", threads);
    kt_par *p = &net->par;
    /* One workspace per thread; gradient partials for all but the first. */
    float *ws = aligned_alloc(KILN_ALIGN, (size_t)threads * p->ws_floats * sizeof(float));
    float *acc = threads > 1 ? malloc((size_t)(threads - 1) * p->acc_floats * sizeof(float)) : NULL;
    if (!ws || (threads > 1 && !acc)) {
        free(ws);
        free(acc);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "no memory for %d threads' workspaces", threads);
    }
    free(p->ws);
    free(p->acc);
    p->threads = threads;
    p->ws = ws;
    p->acc = acc;
    return KILN_OK;
}

int kt_arch_backbone_layers(const kt_arch *a)
{
    for (int i = 0; i < a->nlayers; i++)
        if (a->layers[i].kind == KT_DENSE) return i;
    return 0;
}

kiln_status kt_net_build_frozen(kt_net *net, const kt_arch *arch, int batch, const kt_optim *opt,
                                uint64_t seed, int frozen, kiln_errbuf *err)
{
    memset(net, 0, sizeof *net);
    if (frozen < 0 || frozen >= arch->nlayers)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "%s: cannot freeze %d of %d layers",
                          arch->name, frozen, arch->nlayers);
    for (int i = frozen; i < arch->nlayers && frozen > 0; i++) {
        const kt_layer_spec *l = &arch->layers[i];
        if (l->src < frozen - 1 || (l->kind == KT_ADD && l->skip < frozen - 1))
            return kiln__fail(err, KILN_ERR_INVALID_ARG,
                              "%s: layer %d reads a frozen layer other than the last (%d)",
                              arch->name, i + 1, frozen);
    }
    net->frozen = frozen;
    if (batch <= 0 || batch > 65536)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "net: batch %d out of range", batch);
    if (arch->nlayers <= 0 || arch->nlayers > KT_MAX_LAYERS)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "%s: no layers", arch->name);
    net->arch = *arch;
    net->batch = batch;
    net->opt = *opt;
    net->nlayers = arch->nlayers;
    int c = arch->channels, h = arch->height, w = arch->width;
    int64_t max_act = (int64_t)c * h * w, ws = 0, acc = 1, nparams = 0, pk = 0, flip = 0;
    for (int i = 0; i < arch->nlayers; i++) {
        kt_layer *L = &net->layers[i];
        L->s = arch->layers[i];
        if (L->s.src < -1 || L->s.src >= i ||
            (L->s.kind == KT_ADD && (L->s.skip < -1 || L->s.skip >= i)))
            return kiln__fail(err, KILN_ERR_FORMAT, "%s: layer %d reads a later layer", arch->name,
                              i + 1);
        if (L->s.src >= 0) {
            const kt_layer *S = &net->layers[L->s.src];
            c = S->out_c, h = S->out_h, w = S->out_w;
        } else {
            c = arch->channels, h = arch->height, w = arch->width;
        }
        L->in_c = c, L->in_h = h, L->in_w = w;
        L->in_size = (int64_t)c * h * w;
        switch (L->s.kind) {
        case KT_CONV: {
            kt_conv g = {.n = batch, /* kt_par_conv_workspace(): up to the whole batch at once */
                         .cin = c,
                         .h = h,
                         .w = w,
                         .cout = L->s.filters,
                         .k = L->s.kernel,
                         .stride = L->s.stride,
                         .pad = L->s.pad};
            if (kt_conv_geom(&g))
                return kiln__fail(err, KILN_ERR_SHAPE,
                                  "%s: layer %d (conv): bad geometry on %dx%dx%d", arch->name,
                                  i + 1, c, h, w);
            c = g.cout, h = g.oh, w = g.ow;
            L->nw = (int64_t)g.cout * g.cin * g.k * g.k;
            L->nb = L->s.bias ? g.cout : 0;
            if (kt_par_conv_workspace(&g) > ws) ws = kt_par_conv_workspace(&g);
            if (kt_par_conv_packed(&g) > pk) pk = kt_par_conv_packed(&g);
            if (L->nw > flip) flip = L->nw;
            if (L->nw + L->nb > acc) acc = L->nw + L->nb;
            break;
        }
        case KT_BN:
            L->nw = L->nb = c;
            break;
        case KT_MAXPOOL:
        case KT_AVGPOOL: {
            kt_pool g = {.n = 1,
                         .c = c,
                         .h = h,
                         .w = w,
                         .k = L->s.kernel,
                         .stride = L->s.stride,
                         .pad = L->s.pad};
            if (kt_pool_geom(&g))
                return kiln__fail(err, KILN_ERR_SHAPE, "%s: layer %d (%s): bad geometry on %dx%d",
                                  arch->name, i + 1, kind_name(L->s.kind), h, w);
            h = g.oh, w = g.ow;
            break;
        }
        case KT_GAP:
            h = w = 1;
            break;
        case KT_FLATTEN:
            c = c * h * w, h = w = 1;
            break;
        case KT_DENSE:
            L->nw = (int64_t)L->s.units * c * h * w;
            L->nb = L->s.bias ? L->s.units : 0;
            c = L->s.units, h = w = 1;
            break;
        case KT_ADD: {
            int sc = arch->channels, sh = arch->height, sw = arch->width;
            if (L->s.skip >= 0) {
                const kt_layer *S = &net->layers[L->s.skip];
                sc = S->out_c, sh = S->out_h, sw = S->out_w;
            }
            if (sc != c || sh != h || sw != w)
                return kiln__fail(err, KILN_ERR_SHAPE, "%s: layer %d (add): %dx%dx%d plus %dx%dx%d",
                                  arch->name, i + 1, c, h, w, sc, sh, sw);
            break;
        }
        case KT_RELU:
            break;
        }
        L->out_c = c, L->out_h = h, L->out_w = w;
        L->out_size = (int64_t)c * h * w;
        if (L->out_size > max_act) max_act = L->out_size;
        nparams += L->nw + L->nb + (L->s.kind == KT_BN ? 2 * c : 0);
        if (nparams > ((int64_t)1 << 31))
            return kiln__fail(err, KILN_ERR_LIMIT, "%s: too many parameters", arch->name);
    }
    kt_layer *last = &net->layers[net->nlayers - 1];
    if (last->out_h != 1 || last->out_w != 1 || last->out_c < 2)
        return kiln__fail(err, KILN_ERR_SHAPE,
                          "%s: the last layer must give a vector of class scores (got %dx%dx%d)",
                          arch->name, last->out_c, last->out_h, last->out_w);
    net->num_classes = last->out_c;
    const int sf = kt_optim_state_floats(opt);
    net->nparams = nparams;
    net->nstate = nparams * sf;
    net->params = calloc((size_t)nparams, sizeof(float));
    net->grads = calloc((size_t)nparams, sizeof(float));
    net->state = calloc((size_t)net->nstate, sizeof(float));
    net->max_act = max_act;
    net->gtmp = malloc((size_t)(max_act * batch) * sizeof(float));
    /* ws_floats keeps every thread's workspace KILN_ALIGN-aligned */
    net->par = (kt_par){.threads = 1,
                        .ws_floats = ws > 0 ? (size_t)ws : KILN_ALIGN / sizeof(float),
                        .acc_floats = (size_t)acc};
    net->par.ws = aligned_alloc(KILN_ALIGN, net->par.ws_floats * sizeof(float));
    if (pk > 0) {
        net->par.pk = aligned_alloc(KILN_ALIGN, (size_t)pk * sizeof(float));
        net->par.flip = malloc((size_t)flip * sizeof(float));
    }
    int ok = net->params && net->grads && net->state && net->gtmp && net->par.ws &&
             (pk == 0 || (net->par.pk && net->par.flip));
    int64_t off = 0;
    for (int i = 0; i < net->nlayers && ok; i++) {
        kt_layer *L = &net->layers[i];
        /* Frozen layers before the last one run one sample at a time (see
         * kt_net_forward), so their outputs hold one sample; only trainable
         * layers need gradient buffers. */
        const int64_t rows = i < frozen - 1 ? 1 : batch;
        L->y = malloc((size_t)(L->out_size * rows) * sizeof(float));
        ok = L->y != NULL;
        if (i >= frozen) {
            L->dy = malloc((size_t)(L->out_size * batch) * sizeof(float));
            ok = ok && L->dy;
        }
        if (L->s.kind == KT_MAXPOOL) {
            L->argmax = malloc((size_t)(L->out_size * rows) * sizeof(int32_t));
            ok = ok && L->argmax;
        }
        if (i == frozen) net->frozen_params = off;
        if (L->nw) {
            L->w = net->params + off, L->gw = net->grads + off;
            if (i >= frozen)
                net->groups[net->ngroups++] = (kt_param){.value = L->w,
                                                         .grad = L->gw,
                                                         .state = net->state + off * sf,
                                                         .n = L->nw,
                                                         .decay = L->s.kind != KT_BN};
            off += L->nw;
        }
        if (L->nb) {
            L->b = net->params + off, L->gb = net->grads + off;
            if (i >= frozen)
                net->groups[net->ngroups++] = (kt_param){.value = L->b,
                                                         .grad = L->gb,
                                                         .state = net->state + off * sf,
                                                         .n = L->nb,
                                                         .decay = 0};
            off += L->nb;
        }
        if (L->s.kind == KT_BN) {
            L->run_mean = net->params + off;
            L->run_var = net->params + off + L->out_c;
            off += 2 * L->out_c;
            L->save_mean = malloc((size_t)L->out_c * sizeof(float));
            L->save_invstd = malloc((size_t)L->out_c * sizeof(float));
            ok = ok && L->save_mean && L->save_invstd;
        }
    }
    for (int i = frozen; i < net->nlayers && ok; i++) {
        kt_layer *L = &net->layers[i];
        const int r = L->s.src;
        if (L->s.kind != KT_MAXPOOL || r < frozen || net->layers[r].s.kind != KT_RELU) continue;
        int readers = 0;
        for (int j = 0; j < net->nlayers; j++) {
            const kt_layer_spec *s = &net->layers[j].s;
            readers += (s->src == r) + (s->kind == KT_ADD && s->skip == r);
        }
        if (readers == 1) L->relu_in = net->layers[r].folded = 1;
        const int b = net->layers[r].s.src;
        if (!L->relu_in || b < frozen || net->layers[b].s.kind != KT_BN || L->s.kernel != 2 ||
            L->s.stride != 2 || L->s.pad != 0)
            continue;
        readers = 0;
        for (int j = 0; j < net->nlayers; j++) {
            const kt_layer_spec *s = &net->layers[j].s;
            readers += (s->src == b) + (s->kind == KT_ADD && s->skip == b);
        }
        kt_layer *B = &net->layers[b];
        if (readers == 1) {
            B->pooled = 1;
            B->scale = malloc(2 * (size_t)B->out_c * sizeof(float));
            B->shift = B->scale ? B->scale + B->out_c : NULL;
            ok = ok && B->scale;
        }
    }
    if (!ok) {
        kt_net_free(net);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory for batch %d", arch->name,
                          batch);
    }
    /* Initial weights. */
    for (int i = 0; i < net->nlayers; i++) {
        kt_layer *L = &net->layers[i];
        uint64_t ls = kiln__mix64(seed + 0x1000 * (uint64_t)(i + 1));
        if (L->s.kind == KT_CONV || L->s.kind == KT_DENSE) {
            double fan_in = (double)L->nw / (L->s.kind == KT_CONV ? L->out_c : L->s.units);
            double sd = sqrt(2.0 / fan_in);
            for (int64_t j = 0; j < L->nw; j++) L->w[j] = (float)(sd * gauss(ls, (uint64_t)j));
        } else if (L->s.kind == KT_BN) {
            for (int j = 0; j < L->out_c; j++) L->w[j] = 1.0f, L->run_var[j] = 1.0f;
        }
    }
    return KILN_OK;
}

int64_t kt_net_trainable(const kt_net *net)
{
    int64_t n = 0;
    for (int g = 0; g < net->ngroups; g++) n += net->groups[g].n;
    return n;
}

/* The output of layer i, or the net's input x for i = -1. */
static const float *input_of(const kt_net *net, int i, const float *x)
{
    return i >= 0 ? net->layers[i].y : x;
}

static kt_conv conv_geom(const kt_layer *L, int n)
{
    kt_conv g = {.n = n,
                 .cin = L->in_c,
                 .h = L->in_h,
                 .w = L->in_w,
                 .cout = L->out_c,
                 .k = L->s.kernel,
                 .stride = L->s.stride,
                 .pad = L->s.pad};
    kt_conv_geom(&g);
    return g;
}

static kt_pool pool_geom(const kt_layer *L, int n)
{
    kt_pool g = {.n = n,
                 .c = L->in_c,
                 .h = L->in_h,
                 .w = L->in_w,
                 .k = L->s.kernel,
                 .stride = L->s.stride,
                 .pad = L->s.pad};
    kt_pool_geom(&g);
    return g;
}

/* The batch norm folded into max pool L, or NULL. */
static const kt_layer *pooled_bn(const kt_net *net, const kt_layer *L)
{
    if (!L->relu_in) return NULL;
    const int b = net->layers[L->s.src].s.src;
    return b >= 0 && net->layers[b].pooled ? &net->layers[b] : NULL;
}

/* The layer whose output L's backward pass gives a gradient to (-1: the
 * net's input): what the ReLU reads for a max pool with the ReLU folded
 * in. */
static int grad_source(const kt_net *net, const kt_layer *L)
{
    return L->relu_in ? net->layers[L->s.src].s.src : L->s.src;
}

/* The layer whose output is L's input: as grad_source, but what the batch
 * norm reads for a max pool with a batch norm folded into its forward
 * pass. */
static int source(const kt_net *net, const kt_layer *L)
{
    const kt_layer *B = pooled_bn(net, L);
    return B ? B->s.src : grad_source(net, L);
}

/* Runs layer i over n samples from `in` (and `skip` for an add) into y. */
static void layer_forward(kt_net *net, kt_layer *L, const float *in, const float *skip, int n,
                          int train, float *y, int32_t *argmax)
{
    switch (L->s.kind) {
    case KT_CONV: {
        kt_conv g = conv_geom(L, n);
        kt_par_conv_forward(&net->par, &g, in, L->w, L->b, y);
        break;
    }
    case KT_BN: {
        int hw = L->out_h * L->out_w;
        if (L->pooled && train) { /* statistics, scale and shift; the pool normalises */
            kt_par_bn_forward_train(&net->par, n, L->out_c, hw, in, L->w, L->b, L->s.eps,
                                    L->s.momentum, L->run_mean, L->run_var, L->save_mean,
                                    L->save_invstd, NULL);
            kt_bn_scale_shift(L->out_c, L->w, L->b, L->save_mean, L->save_invstd, L->scale,
                              L->shift);
        } else if (L->pooled) {
            kt_bn_scale_shift_infer(L->out_c, L->w, L->b, L->s.eps, L->run_mean, L->run_var,
                                    L->scale, L->shift);
        } else if (train)
            kt_par_bn_forward_train(&net->par, n, L->out_c, hw, in, L->w, L->b, L->s.eps,
                                    L->s.momentum, L->run_mean, L->run_var, L->save_mean,
                                    L->save_invstd, y);
        else
            kt_bn_forward_infer(n, L->out_c, hw, in, L->w, L->b, L->s.eps, L->run_mean, L->run_var,
                                y);
        break;
    }
    case KT_RELU:
        kt_par_relu_forward(&net->par, L->out_size * n, in, y);
        break;
    case KT_MAXPOOL:
    case KT_AVGPOOL: {
        kt_pool g = pool_geom(L, n);
        const kt_layer *B = pooled_bn(net, L);
        if (B)
            kt_par_bn_relu_maxpool_forward(&net->par, &g, in, B->scale, B->shift, y, argmax);
        else if (L->relu_in)
            kt_maxpool_relu_forward(&g, in, y, argmax);
        else if (L->s.kind == KT_MAXPOOL)
            kt_maxpool_forward(&g, in, y, argmax);
        else
            kt_avgpool_forward(&g, in, y);
        break;
    }
    case KT_GAP:
        kt_gap_forward(n, L->in_c, L->in_h * L->in_w, in, y);
        break;
    case KT_FLATTEN:
        memcpy(y, in, (size_t)(L->out_size * n) * sizeof(float));
        break;
    case KT_DENSE:
        kt_par_dense_forward(&net->par, n, (int)L->in_size, L->s.units, in, L->w, L->b, y);
        break;
    case KT_ADD:
        kt_add_forward(L->out_size * n, in, skip, y);
        break;
    }
}

float *kt_net_output(kt_net *net, int layer)
{
    return net->layers[layer].y;
}

const float *kt_net_forward_from(kt_net *net, int first, int n, int train)
{
    for (int i = first; i < net->nlayers; i++) {
        kt_layer *L = &net->layers[i];
        if (L->folded) continue;
        layer_forward(net, L, input_of(net, source(net, L), NULL), input_of(net, L->s.skip, NULL),
                      n, train && i >= net->frozen, L->y, L->argmax);
    }
    return net->layers[net->nlayers - 1].y;
}

const float *kt_net_forward(kt_net *net, const float *x, int n, int train)
{
    const int f = net->frozen;
    if (f > 0) {
        /* The frozen part one sample at a time (inference mode), each
         * sample's last frozen output into its row of the full batch. */
        const int64_t in_sz = (int64_t)net->arch.channels * net->arch.height * net->arch.width;
        kt_layer *B = &net->layers[f - 1];
        for (int s = 0; s < n; s++) {
            const float *xs = x + s * in_sz;
            for (int i = 0; i < f; i++) {
                kt_layer *L = &net->layers[i];
                float *y = i == f - 1 ? B->y + s * B->out_size : L->y;
                int32_t *am = L->argmax && i == f - 1 ? L->argmax + s * L->out_size : L->argmax;
                layer_forward(net, L, input_of(net, L->s.src, xs), input_of(net, L->s.skip, xs), 1,
                              0, y, am);
            }
        }
        return kt_net_forward_from(net, f, n, train);
    }
    for (int i = 0; i < net->nlayers; i++) {
        kt_layer *L = &net->layers[i];
        if (L->folded) continue;
        layer_forward(net, L, input_of(net, source(net, L), x), input_of(net, L->s.skip, x), n,
                      train, L->y, L->argmax);
    }
    return net->layers[net->nlayers - 1].y;
}

/*
 * Where layer i's input gradient goes: straight into the source's gradient
 * buffer when nothing has written it yet in this pass, else into the
 * scratch buffer, to be added by grad_commit(). NULL when the source needs
 * no gradient (the net's input, or a frozen layer).
 */
static float *grad_target(kt_net *net, const uint8_t *set, int src)
{
    if (src < net->frozen) return NULL;
    return set[src] ? net->gtmp : net->layers[src].dy;
}

static void grad_commit(kt_net *net, uint8_t *set, int src, const float *g, int n)
{
    if (src < net->frozen || !g) return;
    kt_layer *S = &net->layers[src];
    if (set[src]) {
        const int64_t m = S->out_size * n;
        for (int64_t j = 0; j < m; j++) S->dy[j] += g[j];
    }
    set[src] = 1;
}

double kt_net_backward(kt_net *net, const float *x, const int32_t *labels, int n, int *correct)
{
    for (int g = 0; g < net->ngroups; g++)
        memset(net->groups[g].grad, 0, (size_t)net->groups[g].n * sizeof(float));
    uint8_t set[KT_MAX_LAYERS] = {0};
    kt_layer *last = &net->layers[net->nlayers - 1];
    double loss = kt_softmax_xent(n, net->num_classes, last->y, labels, last->dy, NULL, correct);
    set[net->nlayers - 1] = 1;
    for (int i = net->nlayers - 1; i >= net->frozen; i--) {
        kt_layer *L = &net->layers[i];
        if (!set[i]) continue; /* does not reach the loss */
        const float *dy = L->dy;
        const int src = grad_source(net, L);
        const float *in = input_of(net, src, x);
        float *dx = grad_target(net, set, src);
        switch (L->s.kind) {
        case KT_CONV: {
            kt_conv g = conv_geom(L, n);
            kt_par_conv_backward(&net->par, &g, in, L->w, dy, L->gw, L->gb, dx);
            break;
        }
        case KT_BN:
            /* the kernel always writes dx; scratch when nobody reads it */
            kt_par_bn_backward(&net->par, n, L->out_c, L->out_h * L->out_w, in, L->w, L->save_mean,
                               L->save_invstd, dy, L->gw, L->gb, dx ? dx : net->gtmp);
            break;
        case KT_RELU:
            if (dx) kt_par_relu_backward(&net->par, L->out_size * n, L->y, dy, dx);
            break;
        case KT_MAXPOOL:
        case KT_AVGPOOL: {
            if (!dx) break;
            kt_pool g = pool_geom(L, n);
            if (L->relu_in)
                kt_maxpool_relu_backward(&g, dy, L->y, L->argmax, dx);
            else if (L->s.kind == KT_MAXPOOL)
                kt_maxpool_backward(&g, dy, L->argmax, dx);
            else
                kt_avgpool_backward(&g, dy, dx);
            break;
        }
        case KT_GAP:
            if (dx) kt_gap_backward(n, L->in_c, L->in_h * L->in_w, dy, dx);
            break;
        case KT_FLATTEN:
        case KT_ADD:
            /* both inputs of an add get dy unchanged */
            if (dx) memcpy(dx, dy, (size_t)(L->out_size * n) * sizeof(float));
            break;
        case KT_DENSE:
            kt_par_dense_backward(&net->par, n, (int)L->in_size, L->s.units, in, L->w, dy, L->gw,
                                  L->gb, dx);
            break;
        }
        grad_commit(net, set, src, dx, n);
        if (L->s.kind == KT_ADD) {
            float *ds = grad_target(net, set, L->s.skip);
            if (ds) memcpy(ds, dy, (size_t)(L->out_size * n) * sizeof(float));
            grad_commit(net, set, L->s.skip, ds, n);
        }
    }
    return loss;
}

double kt_net_step(kt_net *net, float lr, int64_t t)
{
    return kt_optim_step(&net->opt, net->groups, net->ngroups, lr, t);
}
