/*
 * What a worker process runs: one backend per function kind. The worker
 * calls init() once when it starts (a predict backend loads and compiles
 * its model there, so warm invocations only compute), then invoke() for
 * every request, then fini() before it exits.
 *
 * Backends run in the worker process only; they never touch the event loop.
 * invoke() must not crash on any input: bad input is a 4xx response with a
 * JSON {"error": ...} body.
 */
#ifndef KILN_SERVER_BACKEND_H
#define KILN_SERVER_BACKEND_H

#include "buf.h"
#include "config.h"

#include <stddef.h>
#include <stdint.h>

typedef struct backend_options {
    const char *function; /* the function's name */
    fn_kind kind;
    const char *model;      /* predict: a model file, or NAME[@VERSION]; else NULL */
    const char *model_name; /* predict: the name shown in answers (NULL: model) */
    const char *data_dir;   /* the store's directory; NULL if none */
    int threads;            /* compute threads */
    int faults;             /* echo: honour the fault-injection query parameters */
    int64_t max_tensor_elements;
    int max_json_depth;
} backend_options;

typedef struct backend_request {
    const char *ctype; /* content type, not NUL-terminated */
    size_t ctype_len;
    const char *query; /* URL query string without '?', not NUL-terminated */
    size_t query_len;
    const char *body;
    size_t body_len;
} backend_request;

typedef struct backend_response {
    int status;      /* HTTP status; 200 unless set */
    char ctype[128]; /* content type; "application/json" unless set */
    buf body;        /* the worker frees it after sending */
    int exit_after;  /* the worker exits after sending this (e.g. out of memory) */
} backend_response;

typedef struct backend_ops {
    const char *kind;
    /* Loads what the function needs. 0, or -1 with an HTTP status (e.g. 404
     * for a missing model, 500 otherwise) and a message. */
    int (*init)(const backend_options *o, void **state, int *status, char *err, size_t errlen);
    void (*invoke)(void *state, const backend_request *req, backend_response *res);
    void (*fini)(void *state);
    /* Optional: invoke() for the n requests of a round at once (res[i]
     * answers reqs[i]), so a backend can run them together; each answer
     * must be the one invoke() would give. NULL: invoke() one by one. */
    void (*invoke_round)(void *state, const backend_request *reqs, backend_response **res, int n);
} backend_ops;

/* The backend of a kind, or NULL when this build has none. */
const backend_ops *backend_for(fn_kind kind);

/* Sets res to status + {"error": msg}. */
void backend_error(backend_response *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The value of `key` in a query string ("a=1&b=2"), copied into out; 0, or
 * -1 when absent. */
int backend_query_param(const char *query, size_t len, const char *key, char *out, size_t outlen);

/* The file part (a filename= or image/ content type) of a
 * multipart/form-data body, the boundary from req's content type: 0 and
 * [*part, *part_len), or -1 with a reason. Only lengths inside the body
 * are ever used. */
int backend_multipart_file(const backend_request *req, const char **part, size_t *part_len,
                           const char **why);

/* 1 when no JSON array/object in body nests deeper than max_depth (strings
 * are skipped), 0 otherwise. Run before parsing untrusted JSON. */
int backend_json_depth_ok(const char *body, size_t len, int max_depth);

#endif
