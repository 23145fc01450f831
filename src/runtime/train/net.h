/*
 * A network for training: layers in a list (conv, batch norm, ReLU, max/avg
 * pooling, global average pooling, flatten, dense, residual add), built
 * from an architecture description for a fixed maximum batch size. Each
 * layer reads the output of the layer before it, except where its `src`
 * says otherwise: a residual add reads two outputs (the block's last layer
 * and the block's input or its projection), and a projection conv reads
 * the block's input. Layers are listed in an order where every input comes
 * earlier, so forward runs the list top to bottom and backward bottom to
 * top, accumulating gradients where an output feeds two layers.
 *
 * Freezing: the first `frozen` layers (kt_net_freeze) run in inference mode
 * (BN uses its running statistics), get no gradients and no optimizer
 * state; backward stops at the first trainable layer.
 *
 * Memory: kt_net_build() allocates every buffer a training step needs
 * (parameters, gradients, optimizer state, activations, one gradient
 * buffer per trainable layer output, im2col workspace, pooling indices).
 * Forward, backward and the optimizer step allocate nothing.
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
 *     - {type: bottleneck, mid: 64, out: 256, stride: 1, repeat: 3}
 *         ResNet v1.5 bottleneck (as src/runtime/yaml.c builds it for
 *         inference): conv1x1 mid-bn-relu, conv3x3 mid stride-bn-relu,
 *         conv1x1 out-bn, plus the input (or a conv1x1 stride-bn
 *         projection when the stride or width changes), relu
 *     - {type: basic, filters: 16, stride: 1, repeat: 2}
 *         ResNet basic block: conv3x3 stride-bn-relu, conv3x3-bn, plus the
 *         input or its projection, relu
 *
 * Blocks expand into plain layers. The stored (canonical) form names the
 * inputs explicitly, with 0-based indices into the expanded list (-1 is
 * the net's input): `{type: conv, ..., src: 3}`, `{type: add, src: 7,
 * skip: 3}`. Other keys (name, meta) are ignored.
 * The last layer's width is the number of classes.
 */
#ifndef KILN_RUNTIME_TRAIN_NET_H
#define KILN_RUNTIME_TRAIN_NET_H

#include "errbuf.h"
#include "optim.h"
#include "train_ops.h"

#include <stdint.h>

#define KT_MAX_LAYERS 256

typedef enum kt_layer_kind {
    KT_CONV = 0,
    KT_BN,
    KT_RELU,
    KT_MAXPOOL,
    KT_AVGPOOL,
    KT_GAP,
    KT_FLATTEN,
    KT_DENSE,
    KT_ADD, /* y = out(src) + out(skip) */
} kt_layer_kind;

/* What the architecture file says about a layer. */
typedef struct kt_layer_spec {
    kt_layer_kind kind;
    int filters, kernel, stride, pad, bias; /* conv; pools use kernel/stride/pad */
    int units;                              /* dense */
    float eps, momentum;                    /* batchnorm */
    int src;  /* the input: index of an earlier layer, -1 = the net's input */
    int skip; /* add: the second input (an earlier layer or -1) */
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
    float *dy;       /* gradient of y (trainable layers only), batch x out_size */
    int32_t *argmax; /* maxpool */
    /* A max pool that reads a ReLU nothing else reads pools the ReLU's
     * input and clamps its own, smaller output (kt_maxpool_relu_*):
     * relu_in on the pool, folded on the ReLU, whose y and dy stay unused. */
    int relu_in, folded;
    /* A batch norm that only such a ReLU reads is folded into the pool's
     * forward pass too (kt_bn_relu_maxpool_forward, 2x2 pools): `pooled`
     * on the batch norm, which computes its statistics and the scale and
     * shift the pool applies, but no y; backward runs as without it. */
    int pooled;
    float *scale, *shift;
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
    int frozen;            /* layers [0, frozen) are frozen (kt_net_freeze) */
    int64_t frozen_params; /* their parameters: params[0, frozen_params) */
    float *gtmp;           /* scratch gradient for a second writer, batch x max activation */
    kt_par par;      /* threads, im2col workspaces and gradient partials (kt_net_set_threads) */
    int64_t max_act; /* largest per-sample activation */
    kt_optim opt;
} kt_net;

/* Builds the net for `batch` samples per step with the optimizer `opt` and
 * initialises the weights (He-normal for conv and dense, seeded; biases 0;
 * BN gamma 1, beta 0, running mean 0, variance 1). */
kiln_status kt_net_build(kt_net *net, const kt_arch *arch, int batch, const kt_optim *opt,
                         uint64_t seed, kiln_errbuf *err);
void kt_net_free(kt_net *net);
/* Runs conv and dense layers on `threads` threads of kiln's pool, split by
 * samples (kt_par); allocates their workspaces now, so steps allocate
 * nothing. OpenBLAS must then run on one thread. 1 (the default after
 * kt_net_build) gives the one-thread results bit for bit. */
kiln_status kt_net_set_threads(kt_net *net, int threads, kiln_errbuf *err);

/* Forward pass over n <= batch samples (x: n x input). `train` selects
 * batch statistics for BN (and updates its running statistics) in layers
 * that are not frozen. Returns the logits (n x num_classes), which live in
 * the net. */
const float *kt_net_forward(kt_net *net, const float *x, int n, int train);

/* The forward pass from layer `first` on, for a caller that has put layer
 * first - 1's output in kt_net_output(net, first - 1) (cached features).
 * Layers from `first` on must read nothing older than first - 1. */
const float *kt_net_forward_from(kt_net *net, int first, int n, int train);
float *kt_net_output(kt_net *net, int layer);

/*
 * kt_net_build with the first `frozen` layers frozen: no gradients or
 * updates for them, inference mode in the forward pass, which runs them
 * one sample at a time (their activations take one sample's memory, so a
 * ResNet50 backbone at 224x224 fits a batch of 64). No layer from `frozen`
 * on may read an output older than layer frozen - 1 (so backward stops
 * there); an error names the layer that does.
 */
kiln_status kt_net_build_frozen(kt_net *net, const kt_arch *arch, int batch, const kt_optim *opt,
                                uint64_t seed, int frozen, kiln_errbuf *err);

/* The layers before the first dense layer (the backbone of a classifier
 * with a dense head); 0 when there is no dense layer. */
int kt_arch_backbone_layers(const kt_arch *a);

/* Copies conv, batch norm and dense parameters from an inference graph
 * (an imported .kiln or ONNX model) into the net, in order. A conv with a
 * bias in the graph where the net has conv + batch norm becomes an
 * identity batch norm with that bias as beta (ONNX exporters fold batch
 * norm into the conv). Stops quietly at the first dense layer whose shape
 * differs (a new head); any other mismatch is an error. *copied receives
 * the number of layers loaded. */
struct kg_graph;
kiln_status kt_net_load_graph(kt_net *net, const struct kg_graph *g, const char *what, int *copied,
                              kiln_errbuf *err);

/* Loss and gradients for the last forward pass (which must have been run
 * with train = 1): zeroes the gradients, back-propagates softmax +
 * cross-entropy down to the first trainable layer, returns the mean loss;
 * *correct counts right answers. x is the forward pass's input (unused
 * when layer 0 is frozen). */
double kt_net_backward(kt_net *net, const float *x, const int32_t *labels, int n, int *correct);

/* One optimizer step with learning rate lr (t is the 1-based step count). */
double kt_net_step(kt_net *net, float lr, int64_t t);

/* Parameter count (trainable: not frozen, running statistics excluded). */
int64_t kt_net_trainable(const kt_net *net);

#endif
