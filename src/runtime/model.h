/* The kiln_model and kiln_session structures (internal). */
#ifndef KILN_RUNTIME_MODEL_H
#define KILN_RUNTIME_MODEL_H

#include "graph.h"
#include "kernels.h"
#include "model_file.h"

struct kiln_model {
    kg_graph *g; /* optimized; shapes inferred at the model's own batch */
    kg_meta meta;
    kf_image img; /* the bytes borrowed constants point into */
};

/* Sets this thread's last-error text and returns st. */
kiln_status km_error(kiln_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Wraps an optimized graph and metadata (both taken over) into a model. */
kiln_status km_wrap(kg_graph *g, kg_meta *meta, kf_image *img, kiln_model **out);

/* Optimizes a built graph (taken over) and wraps it; `what` prefixes
 * errors. */
kiln_status km_finish(kg_graph *g, kg_meta *meta, kiln_model **out, const char *what);

/* Builders (yaml.c, onnx.c) return an unoptimized graph and metadata. */
kiln_status kg_from_yaml(const char *path, uint64_t seed, kg_graph **g, kg_meta *meta,
                         char err[KG_ERRLEN]);

#endif
