/*
 * A sequential network for training: layers in a chain (conv, batch norm,
 * ReLU, max/avg pooling, global average pooling, flatten, dense), built
 * from an architecture description for a fixed maximum batch size.
 *
 * Memory: kt_net_build() allocates every buffer a training step needs
 * (parameters, gradients, optimizer state, activations, gradient ping-pong
 * buffers, im2col workspace, pooling indices). Forward, backward and the
 * optimizer step allocate nothing.
 *
 * Architecture files (YAML), the vocabulary of the files in models/:
 *
 *   name: small-cnn
 *   input: {name: image, shape: [1, 1, 28, 28]}     # or {channels, height, width}
 *   layers:
 *     - {type: conv, filters: 32, kernel: 3, stride: 1, pad: same|valid|N,
 *        bn: false, act: relu|none, bias: !bn}        # groups must be 1
 *     - {type: batchnorm}                             # eps 1e-5, momentum 0.1
 *     - {type: relu}
 *     - {type: maxpool|avgpool, kernel: 2, stride: kernel, pad: 0}   (size = kernel)
 *     - {type: gap}                                   # or globalavgpool
 *     - {type: flatten}                               # implicit before dense
 *     - {type: dense, units: 10, act: relu|none}
 *     - {type: dropout}                               # identity here
 *     - {type: softmax}                               # last only; the loss folds it in
 *
 * Other keys (name, meta) are ignored; ResNet bottleneck blocks are not
 * trainable here.
 * The last layer's width is the number of classes.
 */
#ifndef KILN_RUNTIME_TRAIN_NET_H
#define KILN_RUNTIME_TRAIN_NET_H

#include "errbuf.h"
#include "optim.h"

#include <stdint.h>

#define KT_MAX_LAYERS 64

typedef enum kt_layer_kind {
    KT_CONV = 0,
    KT_BN,
    KT_RELU,
    KT_MAXPOOL,
    KT_AVGPOOL,
    KT_GAP,
    KT_FLATTEN,
    KT_DENSE,
} kt_layer_kind;

/* What the architecture file says about a layer. */
typedef struct kt_layer_spec {
    kt_layer_kind kind;
    int filters, kernel, stride, pad, bias; /* conv; pools use kernel/stride/pad */
    int units;                              /* dense */
    float eps, momentum;                    /* batchnorm */
} kt_layer_spec;

typedef struct kt_arch {
    char name[64];
    int channels, height, width;
    int softmax; /* the file ends in a softmax layer (the loss folds it in) */
    int nlayers;
    kt_layer_spec layers[KT_MAX_LAYERS];
} kt_arch;

/* Parses an architecture from YAML text (`what` names it in messages). */
kiln_status kt_arch_parse(const char *yaml, size_t len, const char *what, kt_arch *out,
                          kiln_errbuf *err);
/* The same architecture as YAML (for storing in a model file). Returns a
 * malloc'ed string. */
char *kt_arch_to_yaml(const kt_arch *a);

typedef struct kt_layer {
    kt_layer_spec s;
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int64_t in_size, out_size; /* per sample */
    float *w, *b, *gw, *gb;    /* conv/dense weights, bias; bn gamma, beta */
    int64_t nw, nb;
    float *run_mean, *run_var; /* bn: in the parameter buffer (saved with the model) */
    float *save_mean, *save_invstd;
    float *y;        /* output activations, batch x out_size */
    int32_t *argmax; /* maxpool */
} kt_layer;

typedef struct kt_net {
    kt_arch arch;
    int batch; /* max samples per step */
    int nlayers;
    kt_layer layers[KT_MAX_LAYERS];
    int num_classes;
    float *params, *grads, *state; /* one buffer each */
    int64_t nparams, nstate;
    int64_t nbuffers; /* running statistics, saved with params (in params) */
    kt_param groups[2 * KT_MAX_LAYERS];
    int ngroups;
    float *gbuf[2]; /* gradient ping-pong, batch x max activation */
    float *ws;      /* im2col workspace */
    float *dlogits;
    kt_optim opt;
} kt_net;

/* Builds the net for `batch` samples per step with the optimizer `opt` and
 * initialises the weights (He-normal for conv and dense, seeded; biases 0;
 * BN gamma 1, beta 0, running mean 0, variance 1). */
kiln_status kt_net_build(kt_net *net, const kt_arch *arch, int batch, const kt_optim *opt,
                         uint64_t seed, kiln_errbuf *err);
void kt_net_free(kt_net *net);

/* Forward pass over n <= batch samples (x: n x input). `train` selects
 * batch statistics for BN (and updates its running statistics). Returns
 * the logits (n x num_classes), which live in the net. */
const float *kt_net_forward(kt_net *net, const float *x, int n, int train);

/* Loss and gradients for the last forward pass (which must have been run
 * with train = 1): zeroes the gradients, back-propagates softmax +
 * cross-entropy, returns the mean loss; *correct counts right answers. */
double kt_net_backward(kt_net *net, const float *x, const int32_t *labels, int n, int *correct);

/* One optimizer step with learning rate lr (t is the 1-based step count). */
double kt_net_step(kt_net *net, float lr, int64_t t);

/* Parameter count (trainable; running statistics excluded). */
int64_t kt_net_trainable(const kt_net *net);

#endif
