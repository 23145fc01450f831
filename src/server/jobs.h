/*
 * Training jobs: POST /v1/jobs (and POST /function/NAME of a function of
 * kind train) start an asynchronous `kiln train` in its own process;
 * GET /v1/jobs[/ID] show state and progress; DELETE /v1/jobs/ID cancels.
 *
 * How a job runs
 *   The server spawns its own executable as `kiln train ... --quiet
 *   --progress-fd 3` with uv_spawn, in the server's working directory (so
 *   architecture paths such as models/lenet-mnist.yaml resolve as they do
 *   for the CLI), writing into DATA_DIR/jobs/ID/. Progress arrives as JSON
 *   lines on fd 3, the error as the last line of stderr. A separate process
 *   per job rather than a function worker: a job runs for seconds to hours,
 *   outside the request/response protocol and its timeouts, and `kiln train`
 *   already is that program (tested on its own). The child asks the kernel
 *   for SIGKILL when the server dies (PR_SET_PDEATHSIG) and also dies on
 *   its next progress write to the closed pipe, so no job outlives its
 *   server.
 *   On success the model file is registered as the next version of the named
 *   model through the store (temp file, fsync, rename, then the row), like an
 *   upload. At most server.jobs.max_running jobs train at once; others wait
 *   in a FIFO (max_queued, beyond that 429).
 *
 * State
 *   The jobs table is the record: every transition (and progress about once
 *   a second) is written on libuv's thread pool, one write at a time in
 *   order. Jobs still queued when the server stops are started again by the
 *   next server; jobs left running by a crash are marked failed by the store
 *   when it opens.
 */
#ifndef KILN_SERVER_JOBS_H
#define KILN_SERVER_JOBS_H

#include "http.h"

#include <stddef.h>

struct server;
typedef struct jobs jobs;

/* Creates the job manager; `exe` is the kiln executable. Removes the work
 * directories a previous process left and queues the jobs still queued in
 * the store. NULL on failure (message on stderr). Call before the loop runs. */
jobs *jobs_create(struct server *s, const char *exe);

/* /v1/jobs[...]: `rest` is what follows "/v1/jobs" ("" or "/..."). */
void jobs_route(jobs *J, http_conn *c, http_request *req, const char *rest);

/* POST /function/NAME of a train function: the body of POST /v1/jobs. */
void jobs_submit(jobs *J, http_conn *c, http_request *req);

/* Jobs queued and running now (for /metrics). */
void jobs_counts(const jobs *J, int *queued, int *running);

/* Kills running jobs (they are marked failed: the server stopped) and closes
 * every handle; queued jobs stay queued in the store. */
void jobs_stop(jobs *J);

/* Frees the manager once the loop has closed its handles. */
void jobs_destroy(jobs *J);

#endif
