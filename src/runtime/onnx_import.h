/* ONNX import (onnx.c), exposed to the conformance tests. */
#ifndef KILN_RUNTIME_ONNX_IMPORT_H
#define KILN_RUNTIME_ONNX_IMPORT_H

#include "graph.h"
#include "model_file.h"

/* A tensor supplied by the caller in place of a graph input: the importer
 * treats it as an initializer (the ONNX node tests feed weights as inputs). */
typedef struct kx_bound {
    const char *name;
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
    const float *data;
    const int64_t *ints; /* instead of data: an int64 tensor (a shape, pads) */
} kx_bound;

#define KX_MAX_FILE ((size_t)2 << 30) /* largest .onnx accepted */

/* Builds an (unoptimized) graph from an ONNX file. Errors name the node and
 * its op: "node 'conv7' (ConvTranspose): unsupported operator". */
kiln_status kx_import(const char *path, const kx_bound *bound, int n_bound, kg_graph **g,
                      kg_meta *meta, char err[KG_ERRLEN]);

/* Reads a serialized float32 TensorProto (the test sets' input_0.pb). The
 * name is copied into name (len bytes) when not NULL. When ints is not
 * NULL an int64 tensor is accepted too: *ints gets its values (malloc'd)
 * and *data stays NULL. */
kiln_status kx_read_tensor(const char *path, float **data, int64_t **ints, int *ndim, int64_t *dims,
                           char *name, size_t len, char err[KG_ERRLEN]);

#endif
