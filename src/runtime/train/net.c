/* Sequential training network: build, forward, backward, step. */
#include "net.h"

#include "loader.h"
#include "train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *kind_name(kt_layer_kind k)
{
    static const char *names[] = {"conv",    "batchnorm",     "relu",    "maxpool",
                                  "avgpool", "globalavgpool", "flatten", "dense"};
    return names[k];
}

void kt_net_free(kt_net *net)
{
    if (!net) return;
    free(net->params);
    free(net->grads);
    free(net->state);
    free(net->gbuf[0]);
    free(net->gbuf[1]);
    free(net->ws);
    free(net->dlogits);
    for (int i = 0; i < net->nlayers; i++) {
        free(net->layers[i].y);
        free(net->layers[i].argmax);
        free(net->layers[i].save_mean);
        free(net->layers[i].save_invstd);
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
    memset(net, 0, sizeof *net);
    if (batch <= 0 || batch > 65536)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "net: batch %d out of range", batch);
    if (arch->nlayers <= 0 || arch->nlayers > KT_MAX_LAYERS)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "%s: no layers", arch->name);
    net->arch = *arch;
    net->batch = batch;
    net->opt = *opt;
    net->nlayers = arch->nlayers;
    int c = arch->channels, h = arch->height, w = arch->width;
    int64_t max_act = (int64_t)c * h * w, ws = 0, nparams = 0;
    for (int i = 0; i < arch->nlayers; i++) {
        kt_layer *L = &net->layers[i];
        L->s = arch->layers[i];
        L->in_c = c, L->in_h = h, L->in_w = w;
        L->in_size = (int64_t)c * h * w;
        switch (L->s.kind) {
        case KT_CONV: {
            kt_conv g = {.n = 1,
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
            if (kt_conv_workspace(&g) > ws) ws = kt_conv_workspace(&g);
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
    net->gbuf[0] = malloc((size_t)(max_act * batch) * sizeof(float));
    net->gbuf[1] = malloc((size_t)(max_act * batch) * sizeof(float));
    net->ws = malloc((size_t)(ws > 0 ? ws : 1) * sizeof(float));
    net->dlogits = malloc((size_t)net->num_classes * batch * sizeof(float));
    int ok = net->params && net->grads && net->state && net->gbuf[0] && net->gbuf[1] && net->ws &&
             net->dlogits;
    int64_t off = 0;
    for (int i = 0; i < net->nlayers && ok; i++) {
        kt_layer *L = &net->layers[i];
        L->y = malloc((size_t)(L->out_size * batch) * sizeof(float));
        ok = L->y != NULL;
        if (L->s.kind == KT_MAXPOOL) {
            L->argmax = malloc((size_t)(L->out_size * batch) * sizeof(int32_t));
            ok = ok && L->argmax;
        }
        if (L->nw) {
            L->w = net->params + off, L->gw = net->grads + off;
            net->groups[net->ngroups++] = (kt_param){.value = L->w,
                                                     .grad = L->gw,
                                                     .state = net->state + off * sf,
                                                     .n = L->nw,
                                                     .decay = L->s.kind != KT_BN};
            off += L->nw;
        }
        if (L->nb) {
            L->b = net->params + off, L->gb = net->grads + off;
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

const float *kt_net_forward(kt_net *net, const float *x, int n, int train)
{
    const float *in = x;
    for (int i = 0; i < net->nlayers; i++) {
        kt_layer *L = &net->layers[i];
        switch (L->s.kind) {
        case KT_CONV: {
            kt_conv g = {.n = n,
                         .cin = L->in_c,
                         .h = L->in_h,
                         .w = L->in_w,
                         .cout = L->out_c,
                         .k = L->s.kernel,
                         .stride = L->s.stride,
                         .pad = L->s.pad};
            kt_conv_geom(&g);
            kt_conv_forward(&g, in, L->w, L->b, L->y, net->ws);
            break;
        }
        case KT_BN: {
            int hw = L->out_h * L->out_w;
            if (train)
                kt_bn_forward_train(n, L->out_c, hw, in, L->w, L->b, L->s.eps, L->s.momentum,
                                    L->run_mean, L->run_var, L->save_mean, L->save_invstd, L->y);
            else
                kt_bn_forward_infer(n, L->out_c, hw, in, L->w, L->b, L->s.eps, L->run_mean,
                                    L->run_var, L->y);
            break;
        }
        case KT_RELU:
            kt_relu_forward(L->out_size * n, in, L->y);
            break;
        case KT_MAXPOOL:
        case KT_AVGPOOL: {
            kt_pool g = {.n = n,
                         .c = L->in_c,
                         .h = L->in_h,
                         .w = L->in_w,
                         .k = L->s.kernel,
                         .stride = L->s.stride,
                         .pad = L->s.pad};
            kt_pool_geom(&g);
            if (L->s.kind == KT_MAXPOOL)
                kt_maxpool_forward(&g, in, L->y, L->argmax);
            else
                kt_avgpool_forward(&g, in, L->y);
            break;
        }
        case KT_GAP:
            kt_gap_forward(n, L->in_c, L->in_h * L->in_w, in, L->y);
            break;
        case KT_FLATTEN:
            memcpy(L->y, in, (size_t)(L->out_size * n) * sizeof(float));
            break;
        case KT_DENSE:
            kt_dense_forward(n, (int)L->in_size, L->s.units, in, L->w, L->b, L->y);
            break;
        }
        in = L->y;
    }
    return in;
}

double kt_net_backward(kt_net *net, const float *x, const int32_t *labels, int n, int *correct)
{
    memset(net->grads, 0, (size_t)net->nparams * sizeof(float));
    kt_layer *last = &net->layers[net->nlayers - 1];
    double loss =
        kt_softmax_xent(n, net->num_classes, last->y, labels, net->dlogits, NULL, correct);
    const float *dy = net->dlogits;
    int cur = 0;
    for (int i = net->nlayers - 1; i >= 0; i--) {
        kt_layer *L = &net->layers[i];
        const float *in = i > 0 ? net->layers[i - 1].y : x;
        float *dx = i > 0 ? net->gbuf[cur] : NULL;
        /* BN, ReLU and dense need dx even for layer 0 only if someone reads
         * it; nobody does, so the first layer skips its input gradient. */
        switch (L->s.kind) {
        case KT_CONV: {
            kt_conv g = {.n = n,
                         .cin = L->in_c,
                         .h = L->in_h,
                         .w = L->in_w,
                         .cout = L->out_c,
                         .k = L->s.kernel,
                         .stride = L->s.stride,
                         .pad = L->s.pad};
            kt_conv_geom(&g);
            kt_conv_backward(&g, in, L->w, dy, L->gw, L->gb, dx, net->ws);
            break;
        }
        case KT_BN:
            if (!dx) dx = net->gbuf[cur];
            kt_bn_backward(n, L->out_c, L->out_h * L->out_w, in, L->w, L->save_mean, L->save_invstd,
                           dy, L->gw, L->gb, dx);
            break;
        case KT_RELU:
            if (dx) kt_relu_backward(L->out_size * n, L->y, dy, dx);
            break;
        case KT_MAXPOOL:
        case KT_AVGPOOL: {
            if (!dx) break;
            kt_pool g = {.n = n,
                         .c = L->in_c,
                         .h = L->in_h,
                         .w = L->in_w,
                         .k = L->s.kernel,
                         .stride = L->s.stride,
                         .pad = L->s.pad};
            kt_pool_geom(&g);
            if (L->s.kind == KT_MAXPOOL)
                kt_maxpool_backward(&g, dy, L->argmax, dx);
            else
                kt_avgpool_backward(&g, dy, dx);
            break;
        }
        case KT_GAP:
            if (dx) kt_gap_backward(n, L->in_c, L->in_h * L->in_w, dy, dx);
            break;
        case KT_FLATTEN:
            if (dx) memcpy(dx, dy, (size_t)(L->out_size * n) * sizeof(float));
            break;
        case KT_DENSE:
            kt_dense_backward(n, (int)L->in_size, L->s.units, in, L->w, dy, L->gw, L->gb, dx);
            break;
        }
        if (!dx) break;
        dy = dx;
        cur ^= 1;
    }
    return loss;
}

double kt_net_step(kt_net *net, float lr, int64_t t)
{
    return kt_optim_step(&net->opt, net->groups, net->ngroups, lr, t);
}
