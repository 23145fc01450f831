/*
 * The model manager's operations on a store: what /v1/models does once a
 * request is routed (models_api.c runs them; writes on libuv's thread pool)
 * and what `kiln models --local` does on a data dir no server holds. Each
 * returns an HTTP status: 2xx with the answer in res->out (JSON) or
 * res->data (a download), or 4xx/5xx with res->error. They run on any
 * thread (the store serialises itself) and never touch the event loop.
 */
#ifndef KILN_SERVER_MODELS_OPS_H
#define KILN_SERVER_MODELS_OPS_H

#include "store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum models_op {
    MODELS_LIST,           /* every model */
    MODELS_GET,            /* a model, its metadata and versions */
    MODELS_CREATE,         /* a new model (409 if it exists), with metadata or not */
    MODELS_PUT,            /* create a model or replace its metadata */
    MODELS_DELETE,         /* a model and its versions */
    MODELS_VERSION_GET,    /* one version's record ("latest" works) */
    MODELS_UPLOAD,         /* body as a new version (named, or the next number) */
    MODELS_DOWNLOAD,       /* a version's .kiln file */
    MODELS_VERSION_DELETE, /* one version */
} models_op;

typedef struct models_req {
    store *st;
    const char *data_dir;     /* MODELS_UPLOAD: DATA_DIR/blobs/tmp holds its temporary files */
    uint64_t max_model_bytes; /* MODELS_UPLOAD: the largest model once expanded */
    const char *model;        /* every op but MODELS_LIST */
    const char *version;      /* NULL or "" for none (MODELS_UPLOAD: the next number) */
    const char *metadata;     /* MODELS_CREATE, MODELS_PUT: JSON object text or NULL */
    const char *body;         /* MODELS_UPLOAD: a .kiln (plain or compressed) or ONNX file */
    size_t body_len;
} models_req;

typedef struct models_res {
    json_t *out;     /* the answer, or NULL (204, a download, an error) */
    char *data;      /* MODELS_DOWNLOAD: the file (malloc'd) */
    size_t data_len; /* its length */
    char error[512]; /* the reason of a 4xx/5xx */
} models_res;

/* Runs op; the caller frees res->out (json_decref) and res->data. */
int models_do(models_op op, const models_req *req, models_res *res);

/* The HTTP status of a store error. */
int store_http_status(store_status st);

#endif
