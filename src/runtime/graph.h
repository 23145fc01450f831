/*
 * The graph IR: values (activations, graph inputs, constant weights) and
 * nodes (one operator each, with a flat attribute record). Importers (ONNX,
 * YAML, .kiln files) build a graph; shape inference fills every value's
 * shape for a given batch; the compiler rewrites it (BN folding, fusion)
 * and plans activation buffers.
 *
 * Layout: activations are NCHW float32; dims[0] is the batch.
 */
#ifndef KILN_RUNTIME_GRAPH_H
#define KILN_RUNTIME_GRAPH_H

#include "kiln.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define KG_ERRLEN 256 /* size of every error message buffer */
#define KG_MAX_IN 32  /* inputs of one node (Concat is the widest) */

/* X(enum suffix, name in files and messages). The order is part of the
 * .kiln format: append only. */
#define KG_OP_MAP(X)                      \
    X(CONV, "Conv")                       \
    X(BATCHNORM, "BatchNormalization")    \
    X(RELU, "Relu")                       \
    X(CLIP, "Clip")                       \
    X(LEAKYRELU, "LeakyRelu")             \
    X(SIGMOID, "Sigmoid")                 \
    X(MAXPOOL, "MaxPool")                 \
    X(AVGPOOL, "AveragePool")             \
    X(GLOBALAVGPOOL, "GlobalAveragePool") \
    X(GLOBALMAXPOOL, "GlobalMaxPool")     \
    X(ADD, "Add")                         \
    X(MUL, "Mul")                         \
    X(CONCAT, "Concat")                   \
    X(FLATTEN, "Flatten")                 \
    X(RESHAPE, "Reshape")                 \
    X(DENSE, "Dense")                     \
    X(SOFTMAX, "Softmax")                 \
    X(PAD, "Pad")                         \
    X(IDENTITY, "Identity")

typedef enum kg_op {
#define KG_OP_ENUM_(e, s) KG_OP_##e,
    KG_OP_MAP(KG_OP_ENUM_)
#undef KG_OP_ENUM_
        KG_OP_COUNT_
} kg_op;

/* Activation applied to a node's output (fused epilogue). */
typedef enum kg_act {
    KG_ACT_NONE = 0,
    KG_ACT_RELU,
    KG_ACT_CLIP, /* min(max(x, a.min), a.max); ReLU6 is clip(0, 6) */
    KG_ACT_LEAKY,
    KG_ACT_SIGMOID,
    KG_ACT_COUNT_
} kg_act;

typedef enum kg_kind {
    KG_ACTIVATION = 0, /* computed by a node */
    KG_INPUT,          /* fed by the caller */
    KG_CONST,          /* weights: data is set */
} kg_kind;

/*
 * Attributes of every op in one record; each op reads the fields it needs.
 * Spatial pairs are {height, width}; pad is {top, left, bottom, right}.
 */
typedef struct kg_attrs {
    int kernel[2], stride[2], dilation[2], pad[4];
    int group;             /* Conv */
    int ceil_mode;         /* pools */
    int count_include_pad; /* AveragePool */
    int axis;              /* Concat, Flatten, Softmax */
    float alpha;           /* LeakyRelu slope */
    float min, max;        /* Clip */
    float epsilon;         /* BatchNormalization */
    kg_act act;            /* fused activation on the output */
    int residual;          /* Conv/Dense: inputs[3] is added before act */
    int shape_n;           /* Reshape target: shape_n entries, 0 = copy, -1 = infer */
    int64_t shape[KILN_MAX_DIMS];
    int64_t pads[2 * KILN_MAX_DIMS]; /* Pad: begins for every dim, then ends */
    float pad_value;                 /* Pad: constant mode only */
    int flat;                        /* Softmax: over all dims from axis on (ONNX < 13) */
} kg_attrs;

typedef struct kg_value {
    char *name;
    kg_kind kind;
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    float *data;  /* KG_CONST: contiguous elements */
    size_t bytes; /* KG_CONST: bytes readable at data; more than numel * 4
                     when data holds prepacked weights (which begin with
                     the plain elements); 0 means exactly numel * 4 */
    int owned;    /* data was malloc'd for this graph */
    int producer; /* node index, -1 for inputs and constants */
} kg_value;

/*
 * A node: inputs[] are value indices (-1 = an omitted optional input).
 * Conv: x, W[OC, IC/group, KH, KW], bias[OC] or -1, residual (after fusion).
 * Dense: x[N, K], W[M, K], bias[M] or -1, residual.  BatchNormalization: x,
 * scale, bias, mean, var.  Add/Mul: two inputs with NumPy broadcasting of
 * the second onto the first.
 */
typedef struct kg_node {
    char *name;
    kg_op op;
    int n_in;
    int in[KG_MAX_IN];
    int out;
    kg_attrs a;
} kg_node;

/* Nodes are kept in a valid execution order (every input produced by an
 * earlier node); builders append in order and kg_graph_check() verifies. */
typedef struct kg_graph {
    kg_value *values;
    int n_values, cap_values;
    kg_node *nodes;
    int n_nodes, cap_nodes;
    int inputs[8], n_inputs;
    int outputs[8], n_outputs;
    char *name;
} kg_graph;

const char *kg_op_name(kg_op op);
/* KG_OP_COUNT_ when `name` is no op. */
kg_op kg_op_from_name(const char *name);
const char *kg_act_name(kg_act act);

/* Writes printf-style text into err (KG_ERRLEN bytes; may be NULL) and
 * returns `st`. */
kiln_status kg_fail(char *err, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

kg_graph *kg_graph_new(void);
void kg_graph_free(kg_graph *g);

/* Default attributes: stride/dilation 1, group 1, alpha 0.01, epsilon 1e-5,
 * axis 1, clip (-inf, inf). */
void kg_attrs_default(kg_attrs *a);

/* Adds a value and returns its index, or -1 when out of memory. A name
 * already used is an error (-1) too. `dims` may be NULL when ndim is 0. */
int kg_add_value(kg_graph *g, const char *name, kg_kind kind, int ndim, const int64_t *dims);
/* A constant that takes ownership of `data` (malloc'd; freed with the
 * graph) when `owned`, or borrows it (an mmap'd file) when not. */
int kg_add_const(kg_graph *g, const char *name, int ndim, const int64_t *dims, float *data,
                 int owned);
/* A constant with freshly allocated, zeroed storage. */
int kg_add_const_zeros(kg_graph *g, const char *name, int ndim, const int64_t *dims);
/* Appends a node; its output value must exist and have no producer yet.
 * Returns the node index or -1 (out of memory / bad arguments). */
int kg_add_node(kg_graph *g, const char *name, kg_op op, const int *in, int n_in, int out,
                const kg_attrs *a);
/* Index of the value called `name`, or -1. Linear; for builders. */
int kg_find_value(const kg_graph *g, const char *name);

/* Elements of a value's shape (-1 on overflow). */
int64_t kg_numel(const kg_value *v);

/* Structural checks: indices in range, each activation produced exactly
 * once before use, constants have data, inputs/outputs set. */
kiln_status kg_graph_check(const kg_graph *g, char err[KG_ERRLEN]);

/* Sets dims[0] of every graph input to `batch` (when > 0) and infers the
 * shape of every activation, checking each node's inputs; the error names
 * the node ("layer3.1.conv2: expects 128 input channels, got 64"). */
kiln_status kg_infer_shapes(kg_graph *g, int64_t batch, char err[KG_ERRLEN]);

/* Multiply-accumulates x2 of one node at its inferred shapes. */
int64_t kg_node_flops(const kg_graph *g, const kg_node *n);

/* Formats a shape as "1x3x224x224" into buf. */
const char *kg_shape_str(int ndim, const int64_t *dims, char *buf, size_t len);

#endif
