/*
 * Graph rewrites done once per model, independent of batch and threads:
 * batch-norm folding into the preceding conv, fusion of bias, residual add
 * and activation into conv/dense epilogues, and weight prepacking into the
 * kernels' layout. A graph that is already optimized (a .kiln file written
 * from an optimized model) passes through unchanged, its prepacked
 * weights used in place.
 */
#ifndef KILN_RUNTIME_OPTIMIZE_H
#define KILN_RUNTIME_OPTIMIZE_H

#include "graph.h"
#include "kernels.h"

/* Builds the optimized form of *g and replaces *g with it. Constants the
 * old graph owned move to the new one; borrowed ones stay borrowed. On
 * failure *g is left as it was. */
kiln_status kc_optimize(kg_graph **g, char err[KG_ERRLEN]);

/* The kernel shapes of a Conv / Dense node at the graph's inferred shapes.
 * The packed weight layout may depend on all of it (Winograd is chosen by
 * output size), so weights packed for one batch size are repacked by a
 * session at another when the sizes differ. */
void kc_conv_shape(const kg_graph *g, const kg_node *n, kiln_conv2d_shape *s);
void kc_dense_shape(const kg_graph *g, const kg_node *n, kiln_dense_shape *s);

#endif
