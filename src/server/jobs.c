/* Training jobs (jobs.h): the jobs in memory, the HTTP routes and the life
 * cycle. The request body, the store writes and the processes are in
 * jobs_request.c, jobs_db.c and jobs_proc.c (jobs_internal.h). */
#define _XOPEN_SOURCE 700
#include "jobs_internal.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- jobs in memory ---------------------------------------------------- */

job *job_new(jobs *J, int64_t id, json_t *params)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->owner = J;
    j->id = id;
    j->params = params;
    return j;
}

void job_free(job *j)
{
    if (!j) return;
    json_decref(j->params);
    json_decref(j->progress);
    json_decref(j->test);
    json_decref(j->summary);
    free(j);
}

job *job_find(job *list, int64_t id)
{
    for (; list; list = list->next)
        if (list->id == id) return list;
    return NULL;
}

void job_unlink(job **list, job *j)
{
    for (job **p = list; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            j->next = NULL;
            return;
        }
}

void jobs_enqueue(jobs *J, job *j)
{
    j->next = NULL;
    if (J->queue_tail)
        J->queue_tail->next = j;
    else
        J->queue_head = j;
    J->queue_tail = j;
    J->n_queued++;
}

void jobs_dequeue(jobs *J, job *j)
{
    job *prev = NULL;
    for (job *p = J->queue_head; p; prev = p, p = p->next)
        if (p == j) {
            if (prev)
                prev->next = j->next;
            else
                J->queue_head = j->next;
            if (J->queue_tail == j) J->queue_tail = prev;
            j->next = NULL;
            J->n_queued--;
            return;
        }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void jobs_remove_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- routes -------------------------------------------------------------- */

void jobs_after_create(jobs *J, dbop *op)
{
    J->n_creating--;
    if (op->st) {
        if (op->c) http_respond_error(op->c, store_http_status(op->st), NULL, "%s", op->msg);
        return;
    }
    job *j = job_new(J, op->id, op->params_json);
    if (!j) {
        /* The row stays queued: the next server start runs it. */
        if (op->c) http_respond_error(op->c, 503, NULL, "out of memory");
        return;
    }
    op->params_json = NULL;
    jobs_enqueue(J, j);
    if (op->c) {
        char loc[64];
        snprintf(loc, sizeof loc, "Location: /v1/jobs/%" PRId64 "\r\n", op->id);
        if (op->answer)
            respond_json(op->c, 202, loc, op->answer), op->answer = NULL;
        else
            respond_json(op->c, 202, loc,
                         json_pack("{s:I, s:s}", "id", (json_int_t)op->id, "state", "queued"));
    }
    jobs_schedule(J);
}

void jobs_submit(jobs *J, http_conn *c, http_request *req)
{
    if (J->stopping) {
        http_respond_error(c, 503, "Retry-After: 1\r\n", "the server is stopping");
        return;
    }
    json_t *params = jobs_parse_request(J, c, req);
    if (!params) return;
    if (J->n_queued + J->n_creating >= J->s->cfg.jobs_max_queued) {
        json_decref(params);
        http_respond_error(c, 429, "Retry-After: 10\r\n",
                           "%d training jobs are queued already (server.jobs.max_queued)",
                           J->n_queued + J->n_creating);
        return;
    }
    dbop *op = jobs_dbop_new(DB_CREATE, 0);
    char *text = jobs_dump(params);
    if (!op || !text) {
        free(op);
        free(text);
        json_decref(params);
        http_respond_error(c, 503, NULL, "out of memory");
        return;
    }
    op->params = text;
    op->params_json = params;
    op->c = c;
    op->answer_wanted = 1;
    J->n_creating++;
    http_set_pending(c, jobs_dbop_cancel_conn, op);
    jobs_db_push(J, op);
}

/* The job as JSON, with the live progress of a running job. */
static json_t *job_json(jobs *J, const store_job *r)
{
    json_t *o = jobs_row_json(r);
    job *j = job_find(J->running, r->id);
    if (o && j && r->state == STORE_JOB_RUNNING) {
        json_t *p = json_object();
        if (j->progress) json_object_update(p, j->progress);
        json_object_set_new(p, "fraction", json_real(j->fraction));
        json_object_set_new(o, "progress", p);
        if (j->test) {
            json_t *res = json_object();
            json_object_set(res, "test", j->test);
            json_object_set_new(o, "result", res);
        }
        if (j->cancelled) json_object_set_new(o, "cancel_requested", json_true());
    }
    return o;
}

static void list_jobs(jobs *J, http_conn *c, const char *query)
{
    int state = -1;
    const char *q = query ? strstr(query, "state=") : NULL;
    if (q && (q == query || q[-1] == '&')) {
        q += 6;
        size_t n = strcspn(q, "&");
        for (int i = STORE_JOB_QUEUED; i <= STORE_JOB_CANCELLED; i++) {
            const char *name = store_job_state_name((store_job_state)i);
            if (strlen(name) == n && !strncmp(q, name, n)) state = i;
        }
        if (state < 0) {
            http_respond_error(c, 400, NULL,
                               "state: expected queued, running, succeeded, failed or cancelled");
            return;
        }
    }
    store_job *rows = NULL;
    int n = 0;
    store_status st = store_job_list(J->s->st, state, LIST_LIMIT, &rows, &n);
    if (st) {
        http_respond_error(c, store_http_status(st), NULL, "%s", store_last_error());
        return;
    }
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, job_json(J, &rows[i]));
    store_jobs_free(rows, n);
    respond_json(c, 200, NULL, json_pack("{s:o}", "jobs", a));
}

static void get_job(jobs *J, http_conn *c, int64_t id, int status)
{
    store_job r;
    store_status st = store_job_get(J->s->st, id, &r);
    if (st) {
        http_respond_error(c, store_http_status(st), NULL, "%s", store_last_error());
        return;
    }
    respond_json(c, status, NULL, job_json(J, &r));
    store_job_clear(&r);
}

static void cancel_job(jobs *J, http_conn *c, int64_t id)
{
    job *j;
    for (j = J->queue_head; j && j->id != id; j = j->next) {
    }
    if (j) {
        jobs_dequeue(J, j);
        job_free(j);
        dbop *op = jobs_dbop_new(DB_CANCEL, id);
        if (!op) {
            http_respond_error(c, 503, NULL, "out of memory");
            return;
        }
        op->error = strdup("cancelled by DELETE /v1/jobs/ID before it started");
        op->c = c;
        op->answer_wanted = 1;
        http_set_pending(c, jobs_dbop_cancel_conn, op);
        jobs_db_push(J, op);
        return;
    }
    if ((j = job_find(J->running, id))) {
        if (!j->cancelled) {
            j->cancelled = 1;
            uv_process_kill(&j->proc, SIGTERM);
            uv_timer_stop(&j->timer);
            uv_timer_start(&j->timer, job_on_timer, CANCEL_GRACE_MS, 0);
        }
        get_job(J, c, id, 202); /* cancel_requested; the state follows when it exits */
        return;
    }
    store_job r;
    store_status st = store_job_get(J->s->st, id, &r);
    if (st) {
        http_respond_error(c, store_http_status(st), NULL, "%s", store_last_error());
        return;
    }
    http_respond_error(c, 409, NULL,
                       "job %" PRId64 " is %s: only queued or running jobs can be cancelled", id,
                       store_job_state_name(r.state));
    store_job_clear(&r);
}

void jobs_route(jobs *J, http_conn *c, http_request *req, const char *rest)
{
    int m = req->method;
    int get = m == HTTP_GET || m == HTTP_HEAD;
    if (!*rest || !strcmp(rest, "/")) {
        if (get)
            list_jobs(J, c, req->query);
        else if (m == HTTP_POST) {
            if (authorized(J->s, c, req, 1)) jobs_submit(J, c, req);
        } else
            goto method;
        return;
    }
    rest++;
    char *end;
    errno = 0;
    long long id = strtoll(rest, &end, 10);
    if (*rest < '0' || *rest > '9' || *end || errno || id <= 0) {
        http_respond_error(c, 404, NULL, "no job '%.40s' (job ids are positive integers)", rest);
        return;
    }
    if (get)
        get_job(J, c, id, 200);
    else if (m == HTTP_DELETE) {
        if (authorized(J->s, c, req, 1)) cancel_job(J, c, id);
    } else
        goto method;
    return;
method:
    http_respond_error(c, 405, NULL, "%s is not allowed on %.200s", http_method_str(m), req->path);
}

/* ---- life cycle ----------------------------------------------------------- */

jobs *jobs_create(server *s, const char *exe)
{
    jobs *J = calloc(1, sizeof *J);
    if (!J) {
        fprintf(stderr, "kiln serve: out of memory\n");
        return NULL;
    }
    J->s = s;
    snprintf(J->exe, sizeof J->exe, "%s", exe);
    snprintf(J->dir, sizeof J->dir, "%s/jobs", s->cfg.data_dir);
    /* Work dirs of jobs a previous process ran: those jobs are failed now
     * (the store did it) or start again from scratch below. */
    jobs_remove_tree(J->dir);
    /* 0711: a job running as server.user reaches its own dir, lists none */
    if (mkdir(J->dir, 0711) && errno != EEXIST) {
        fprintf(stderr, "kiln serve: cannot create %s: %s\n", J->dir, strerror(errno));
        free(J);
        return NULL;
    }
    store_job *rows = NULL;
    int n = 0;
    if (store_job_list(s->st, STORE_JOB_QUEUED, 1000000, &rows, &n)) {
        fprintf(stderr, "kiln serve: reading queued jobs: %s\n", store_last_error());
        n = 0;
    }
    for (int i = n - 1; i >= 0; i--) { /* oldest first */
        json_t *p = rows[i].params ? json_loads(rows[i].params, 0, NULL) : NULL;
        job *j = json_is_object(p) ? job_new(J, rows[i].id, p) : NULL;
        if (!j) {
            json_decref(p);
            store_job_finish(s->st, rows[i].id, NULL, "its parameters could not be read back");
            continue;
        }
        jobs_enqueue(J, j);
    }
    store_jobs_free(rows, n);
    if (J->n_queued)
        fprintf(stderr, "kiln serve: %d training job%s still queued\n", J->n_queued,
                J->n_queued == 1 ? "" : "s");
    jobs_schedule(J);
    return J;
}

void jobs_counts(const jobs *J, int *queued, int *running)
{
    *queued = J ? J->n_queued : 0;
    *running = J ? J->n_running : 0;
}

void jobs_stop(jobs *J)
{
    if (!J || J->stopping) return;
    J->stopping = 1;
    while (J->queue_head) { /* they stay queued in the store */
        job *j = J->queue_head;
        jobs_dequeue(J, j);
        job_free(j);
    }
    for (job *j = J->running; j; j = j->next) {
        j->server_stop = 1;
        if (!uv_is_closing((uv_handle_t *)&j->proc)) uv_process_kill(&j->proc, SIGKILL);
    }
}

void jobs_destroy(jobs *J)
{
    if (!J) return;
    while (J->queue_head) { /* created while the server stopped: still queued in the store */
        job *j = J->queue_head;
        jobs_dequeue(J, j);
        job_free(j);
    }
    free(J);
}
