/* kiln_model: opening, saving, metadata and the per-thread error text. */
#include "model.h"
#include "optimize.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[KG_ERRLEN];

const char *kiln_last_error(void)
{
    return last_error;
}

kiln_status km_error(kiln_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

void kiln_model_free(kiln_model *m)
{
    if (!m) return;
    kg_graph_free(m->g);
    kg_meta_free(&m->meta);
    kf_image_release(&m->img);
    free(m);
}

kiln_status km_wrap(kg_graph *g, kg_meta *meta, kf_image *img, kiln_model **out)
{
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) {
        kg_graph_free(g);
        kg_meta_free(meta);
        if (img) kf_image_release(img);
        return km_error(KILN_ERR_NO_MEMORY, "out of memory");
    }
    m->g = g;
    m->meta = *meta;
    memset(meta, 0, sizeof *meta);
    if (img) {
        m->img = *img;
        memset(img, 0, sizeof *img);
    }
    *out = m;
    return KILN_OK;
}

/* Optimizes a freshly built or loaded graph and wraps it. */
static kiln_status finish(kg_graph *g, kg_meta *meta, kf_image *img, kiln_model **out,
                          const char *what)
{
    char err[KG_ERRLEN] = "";
    kiln_status st = kiln_init();
    if (!st) st = kc_optimize(&g, err);
    if (st) {
        kg_graph_free(g);
        kg_meta_free(meta);
        if (img) kf_image_release(img);
        return km_error(st, "%s: %s", what, err);
    }
    return km_wrap(g, meta, img, out);
}

kiln_status kiln_model_open(const char *path, unsigned flags, kiln_model **out)
{
    if (!path || !out) return km_error(KILN_ERR_INVALID_ARG, "no path or no output pointer");
    *out = NULL;
    char err[KG_ERRLEN] = "";
    kg_graph *g;
    kg_meta meta;
    kf_image img;
    kiln_status st = kf_load(path, (flags & KILN_OPEN_TRUST_WEIGHTS) ? KF_LOAD_SKIP_WEIGHT_CRC : 0,
                             &g, &meta, &img, err);
    if (st) return km_error(st, "%s", err);
    return finish(g, &meta, &img, out, path);
}

kiln_status kiln_model_preload(const char *path, size_t max_total_bytes)
{
    if (!path) return km_error(KILN_ERR_INVALID_ARG, "no path");
    char err[KG_ERRLEN] = "";
    kiln_status st = kf_preload(path, max_total_bytes, err);
    return st ? km_error(st, "%s", err) : KILN_OK;
}

kiln_status km_finish(kg_graph *g, kg_meta *meta, kiln_model **out, const char *what)
{
    return finish(g, meta, NULL, out, what);
}

kiln_status kiln_model_from_yaml(const char *path, uint64_t seed, kiln_model **out)
{
    if (!path || !out) return km_error(KILN_ERR_INVALID_ARG, "no path or no output pointer");
    *out = NULL;
    char err[KG_ERRLEN] = "";
    kg_graph *g;
    kg_meta meta = {0};
    kiln_status st = kg_from_yaml(path, seed, &g, &meta, err);
    if (st) return km_error(st, "%s", err);
    return finish(g, &meta, NULL, out, path);
}

kiln_status kiln_model_save(const kiln_model *m, const char *path, unsigned flags)
{
    if (!m || !path) return km_error(KILN_ERR_INVALID_ARG, "no model or no path");
    char err[KG_ERRLEN] = "";
    kiln_status st =
        kf_write(path, m->g, &m->meta, (flags & KILN_SAVE_COMPRESS) ? KF_WRITE_COMPRESS : 0, err);
    return st ? km_error(st, "%s", err) : KILN_OK;
}

const char *kiln_model_meta(const kiln_model *m, const char *key)
{
    return m && key ? kg_meta_get(&m->meta, key) : NULL;
}

kiln_status kiln_model_set_meta(kiln_model *m, const char *key, const char *value)
{
    if (!m || !key || !value || !*key) return km_error(KILN_ERR_INVALID_ARG, "bad metadata");
    return kg_meta_set(&m->meta, key, value) ? km_error(KILN_ERR_NO_MEMORY, "out of memory")
                                             : KILN_OK;
}

int kiln_model_meta_count(const kiln_model *m)
{
    return m ? m->meta.n : 0;
}

const char *kiln_model_meta_key(const kiln_model *m, int i)
{
    return m && i >= 0 && i < m->meta.n ? m->meta.keys[i] : NULL;
}

int kiln_model_label_count(const kiln_model *m)
{
    const char *l = kiln_model_meta(m, "labels");
    if (!l || !*l) return 0;
    int n = 1;
    for (const char *p = l; *p; p++)
        if (*p == '\n' && p[1]) n++;
    return n;
}

const char *kiln_model_label(const kiln_model *m, int i, char *buf, size_t len)
{
    const char *l = kiln_model_meta(m, "labels");
    if (!l || i < 0 || !buf || !len) return NULL;
    for (; i > 0 && l; i--) {
        l = strchr(l, '\n');
        if (l) l++;
    }
    if (!l || !*l) return NULL;
    size_t n = strcspn(l, "\n");
    if (n >= len) n = len - 1;
    memcpy(buf, l, n);
    buf[n] = 0;
    return buf;
}

int kiln_model_input_count(const kiln_model *m)
{
    return m ? m->g->n_inputs : 0;
}

int kiln_model_output_count(const kiln_model *m)
{
    return m ? m->g->n_outputs : 0;
}

int kiln_model_layer_count(const kiln_model *m)
{
    return m ? m->g->n_nodes : 0;
}

int64_t kiln_model_param_count(const kiln_model *m)
{
    int64_t p = 0;
    for (int i = 0; m && i < m->g->n_values; i++)
        if (m->g->values[i].kind == KG_CONST) p += kg_numel(&m->g->values[i]);
    return p;
}

int64_t kiln_model_flops(const kiln_model *m)
{
    int64_t f = 0;
    for (int i = 0; m && i < m->g->n_nodes; i++) f += kg_node_flops(m->g, &m->g->nodes[i]);
    return f;
}
