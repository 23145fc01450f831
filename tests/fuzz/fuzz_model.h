/* What fuzz_kiln.c and fuzz_onnx.c do with a graph their loader accepted:
 * it must pass the graph checks (the loader validated it, so a failure is
 * a bug: abort), then shape inference and the optimizer, as opening a
 * model does. Takes g and meta. */
#ifndef KILN_FUZZ_MODEL_H
#define KILN_FUZZ_MODEL_H

#include "model.h"

#include <stdlib.h>

static inline void fuzz_finish_model(kg_graph *g, kg_meta *meta, char *err)
{
    if (kg_graph_check(g, err) != KILN_OK) abort();
    kiln_model *m = NULL;
    if (kg_infer_shapes(g, 0, err) != KILN_OK) {
        kg_graph_free(g);
        kg_meta_free(meta);
    } else if (km_finish(g, meta, &m, "fuzz") == KILN_OK) { /* takes g and meta */
        kiln_model_free(m);
    }
}

#endif
