/*
 * Internals of the training jobs (jobs.h), shared by its files:
 *   jobs.c          the jobs in memory, the routes and the life cycle;
 *   jobs_request.c  the body of POST /v1/jobs, checked and normalised;
 *   jobs_db.c       the store writes, in order, on libuv's thread pool;
 *   jobs_proc.c     the `kiln train` processes and their progress.
 * Everything runs on the server's loop except jobs_db_run().
 */
#ifndef KILN_SERVER_JOBS_INTERNAL_H
#define KILN_SERVER_JOBS_INTERNAL_H

#include "jobs.h"
#include "server_internal.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

/* Progress is written to the store at most this often per job. */
#define PROGRESS_WRITE_MS 1000
/* Bytes of a job's stderr kept for its error message. */
#define ERR_TAIL 1024
/* A cancelled job gets SIGTERM, then SIGKILL after this. */
#define CANCEL_GRACE_MS 2000
/* Jobs listed by GET /v1/jobs. */
#define LIST_LIMIT 100

typedef struct job {
    struct job *next; /* in the queue or the running list */
    jobs *owner;
    int64_t id;
    json_t *params; /* the normalised request (what the store keeps) */
    char dir[4096]; /* DATA_DIR/jobs/ID while it runs */
    uv_process_t proc;
    uv_pipe_t progress_pipe, err_pipe;
    uv_timer_t timer; /* timeout, then the cancel grace period */
    int open_handles; /* of the four above; the job ends when 0 */
    char line[1024];  /* a progress line being assembled */
    size_t line_len;
    int line_overflow;
    char err[ERR_TAIL]; /* the tail of stderr */
    size_t err_len;
    json_t *progress; /* the latest progress object */
    json_t *test;     /* the latest test result */
    json_t *summary;  /* the final line ({"done": true, ...}) */
    double fraction;  /* 0..1 */
    uint64_t last_write_ms;
    int cancelled; /* DELETE asked for it */
    int timed_out;
    int server_stop; /* killed because the server stops */
    int64_t exit_status;
    int term_signal;
} job;

struct jobs {
    server *s;
    char exe[4096];
    char dir[4000]; /* DATA_DIR/jobs */
    job *queue_head, *queue_tail;
    int n_queued;
    int n_creating; /* POSTs waiting for their row */
    job *running;
    int n_running;
    /* store writes, one at a time and in order */
    struct dbop *db_head, *db_tail;
    int db_busy;
    int stopping;
};

typedef enum db_kind {
    DB_CREATE,   /* store_job_create; answers 202 */
    DB_START,    /* queued -> running */
    DB_PROGRESS, /* progress of a running job */
    DB_SUCCEED,  /* register the model, then succeeded (or failed if that fails) */
    DB_FAIL,     /* running/queued -> failed */
    DB_CANCEL,   /* running/queued -> cancelled; answers 200 when c is set */
} db_kind;

typedef struct dbop {
    struct dbop *next;
    uv_work_t req;
    jobs *J;
    db_kind kind;
    int64_t id;
    char *params; /* DB_CREATE */
    json_t *params_json;
    double fraction;
    char *result; /* JSON text or NULL */
    char *error;  /* DB_FAIL, DB_CANCEL */
    char model[STORE_NAME_MAX + 1];
    char dir[4096];    /* DB_SUCCEED/FAIL/CANCEL: the work dir to read and remove */
    http_conn *c;      /* answered when done; NULL once the client went away */
    int answer_wanted; /* set with c: read the job back for the answer (c itself belongs to the
                          loop) */
    /* results */
    store_status st;
    char msg[512];
    json_t *answer; /* the job as JSON, read back after the write */
} dbop;

/* ---- jobs.c ---- */

/* A job for row `id` with its normalised request (the reference is taken). */
job *job_new(jobs *J, int64_t id, json_t *params);
void job_free(job *j);
/* The job with `id` in a queue or running list, or NULL. */
job *job_find(job *list, int64_t id);
void job_unlink(job **list, job *j);
void jobs_enqueue(jobs *J, job *j);
void jobs_dequeue(jobs *J, job *j);
/* Removes a job's work directory and everything in it. */
void jobs_remove_tree(const char *path);
/* DB_CREATE is done: queue the job and answer 202 (or the error). */
void jobs_after_create(jobs *J, dbop *op);

/* ---- jobs_request.c ---- */

/* The body of POST /v1/jobs checked and normalised (defaults filled in), or
 * NULL after answering 400 naming the field. */
json_t *jobs_parse_request(jobs *J, http_conn *c, http_request *req);

/* ---- jobs_db.c ---- */

dbop *jobs_dbop_new(db_kind kind, int64_t id);
void jobs_dbop_free(dbop *op);
/* Queues a store write; writes run one at a time, in order. */
void jobs_db_push(jobs *J, dbop *op);
/* Does the write of op (on the thread pool, or inline while stopping). */
void jobs_db_run(uv_work_t *req);
/* http_set_pending's cancel: the client of op went away. */
void jobs_dbop_cancel_conn(void *arg);
/* Compact JSON text of j (malloc'd), or NULL. */
char *jobs_dump(json_t *j);
/* A job row as the API shows it. */
json_t *jobs_row_json(const store_job *r);
/* What the store keeps in `result` while a job runs: its progress so far. */
char *job_live_result(const job *j);

/* ---- jobs_proc.c ---- */

/* Starts queued jobs while fewer than server.jobs.max_running run. */
void jobs_schedule(jobs *J);
/* A running job's timer: its timeout, then the grace period after a
 * cancel's SIGTERM; kills the process. */
void job_on_timer(uv_timer_t *t);

#endif
