/*
 * libFuzzer target: what a worker does with a request body - the predict
 * backend (KServe v2 JSON, JPEG/PNG images, multipart forms, ?top_k and
 * ?kiln_op=metadata; src/server/backend_predict.c with the server's image
 * decoding and preprocessing, src/server/image.c) on two shipped models, a
 * grey 28x28 one and an RGB 32x32 one, and the echo backend.
 *
 * Input: a content-type line, a query-string line, then the body:
 *
 *   application/json\n
 *   top_k=3\n
 *   {"inputs": [...]}
 *
 * Input without two newlines is all body. Beyond memory safety, every answer
 * must be a status 200-599 with a body.
 */
#include "backend.h"
#include "kiln_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fuzz_backend {
    backend_options o;
    const backend_ops *ops;
    void *state;
} fuzz_backend;

static fuzz_backend backends[3];
static int n_backends;

static void add(fn_kind kind, const char *name, const char *model)
{
    fuzz_backend *b = &backends[n_backends];
    b->o.function = name;
    b->o.kind = kind;
    b->o.model = model;
    b->o.threads = 1;
    b->o.max_tensor_elements = 1 << 20;
    b->o.max_json_depth = 16;
    b->ops = backend_for(kind);
    int status;
    char err[512];
    if (!b->ops || b->ops->init(&b->o, &b->state, &status, err, sizeof err)) {
        fprintf(stderr, "fuzz_kserve: %s: %s\n", name, err);
        abort();
    }
    n_backends++;
}

static void setup(void)
{
    add(FN_PREDICT, "fashion-mnist", KILN_SOURCE_DIR "/models/fashion-mnist.kiln");
    add(FN_PREDICT, "cifar10", KILN_SOURCE_DIR "/models/cifar10-cnn.yaml");
    add(FN_ECHO, "echo", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!n_backends) setup();
    const char *p = (const char *)data, *end = p + size;
    backend_request req = {.ctype = "", .query = "", .body = p, .body_len = size};
    const char *nl1 = memchr(p, '\n', size);
    const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
    if (nl2) {
        req.ctype = p;
        req.ctype_len = (size_t)(nl1 - p);
        req.query = nl1 + 1;
        req.query_len = (size_t)(nl2 - nl1 - 1);
        req.body = nl2 + 1;
        req.body_len = (size_t)(end - nl2 - 1);
    }
    /* The body is not NUL-terminated in a worker either: a copy of exactly
     * body_len bytes lets ASan see any read past it. */
    char *body = malloc(req.body_len ? req.body_len : 1);
    if (!body) return 0;
    memcpy(body, req.body, req.body_len);
    req.body = body;
    for (int i = 0; i < n_backends; i++) {
        backend_response res = {.status = 200};
        backends[i].ops->invoke(backends[i].state, &req, &res);
        if (res.status < 200 || res.status > 599 || res.body.oom) {
            fprintf(stderr, "fuzz_kserve: %s answered status %d\n", backends[i].o.function,
                    res.status);
            abort();
        }
        buf_free(&res.body);
    }
    free(body);
    return 0;
}
