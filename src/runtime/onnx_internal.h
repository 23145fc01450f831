/*
 * Internals of the ONNX importer, shared by its files: onnx.c reads the
 * file, its tensors and values and drives the conversion; onnx_ops.c turns
 * one node (with its attributes) into graph nodes.
 */
#ifndef KILN_RUNTIME_ONNX_INTERNAL_H
#define KILN_RUNTIME_ONNX_INTERNAL_H

#include "onnx.pb-c.h"
#include "onnx_import.h"

#include <stddef.h>
#include <stdint.h>

#define MAX_ELEMS ((int64_t)1 << 31)

typedef Onnx__NodeProto node_t;
typedef Onnx__TensorProto tensor_t;

typedef struct ints_entry {
    char *name;
    int n;
    int64_t *v;
} ints_entry;

typedef struct importer {
    kg_graph *g;
    const char *dir; /* directory of the model, for external data */
    int opset;
    ints_entry *ints;
    int n_ints, cap_ints;
    const kx_bound *bound;
    int n_bound;
    char *err;
} importer;

/* The node's name, or OPTYPE_INDEX in buf when it has none. */
const char *kx_node_name(const node_t *n, char *buf, size_t len, int index);
/* An int64 initializer (a shape, pads, axes) by name, or NULL. */
const ints_entry *kx_find_ints(const importer *im, const char *name);
/* Adds an initializer: int64 ones to the importer's table, float ones to
 * the graph as constants; other types are ignored. */
kiln_status kx_add_tensor(importer *im, const tensor_t *t, const char *name);
/* The value of an input name: an existing value, or a bound tensor added
 * as a constant; -1 for an empty name, -2 when there is none (or out of
 * memory). */
int kx_value_of(importer *im, const char *name);
/* Converts node n (the index-th of the graph) into graph nodes
 * (onnx_ops.c); errors name the node and its op. */
kiln_status kx_convert_node(importer *im, const node_t *n, int index);

#endif
