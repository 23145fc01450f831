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

/* Builds the optimized form of *g and replaces *g with it. Constants the
 * old graph owned move to the new one; borrowed ones stay borrowed. On
 * failure *g is left as it was. */
kiln_status kc_optimize(kg_graph **g, char err[KG_ERRLEN]);

#endif
