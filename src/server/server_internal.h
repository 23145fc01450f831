/* The server's state and helpers shared by its route files (server.c,
 * models_api.c). Not part of any interface outside src/server. */
#ifndef KILN_SERVER_SERVER_INTERNAL_H
#define KILN_SERVER_SERVER_INTERNAL_H

#include "config.h"
#include "http.h"
#include "jobs.h"
#include "metrics.h"
#include "models_ops.h"
#include "sampler.h"
#include "scheduler.h"
#include "store.h"

#include <jansson.h>
#include <uv.h>

typedef struct server {
    uv_loop_t loop;
    server_config cfg;
    metrics m;
    scheduler *sched;
    http_server http;
    uv_signal_t sigint, sigterm;
    uv_timer_t drain;     /* graceful stop: waits for requests in progress */
    uint64_t drain_until; /* uv_now deadline */
    int stopping;
    store *st;                       /* the SQLite store in cfg.data_dir */
    char token[STORE_TOKEN_HEX + 1]; /* when cfg.auth */
    int pending_work;                /* store operations on the thread pool */
    jobs *jobs;                      /* training jobs */
    sampler *sampler;                /* server.sample, or NULL */
} server;

/* The router: the http_handler serve_run installs (ctx is the server). */
void server_route(void *ctx, http_conn *c, http_request *req);

/* Answers j as JSON (taking the reference); 500 if it is NULL. */
void respond_json(http_conn *c, int status, const char *headers, json_t *j);

/* 1 when the request may go on; otherwise answers 401 and returns 0.
 * changes_state: model/job endpoints (protected whenever server.auth is
 * on); otherwise an invocation (protected with server.auth_invoke). */
int authorized(server *s, http_conn *c, http_request *req, int changes_state);

/* /v1/models[...]: `rest` is what follows "/v1/models" ("" or "/..."). */
void models_route(server *s, http_conn *c, http_request *req, const char *rest);

#endif
