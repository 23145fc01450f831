/* Training jobs: their writes to the store, one at a time and in order on
 * libuv's thread pool (jobs_internal.h). */
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

/* ---- store writes on the thread pool ------------------------------------ */

static void db_done(uv_work_t *req, int status);

static void db_kick(jobs *J)
{
    if (J->db_busy || !J->db_head) return;
    dbop *op = J->db_head;
    op->req.data = op;
    if (uv_queue_work(&J->s->loop, &op->req, jobs_db_run, db_done)) {
        /* Only fails on a closing loop: run it here rather than lose it. */
        jobs_db_run(&op->req);
        J->db_busy = 1;
        J->s->pending_work++;
        db_done(&op->req, 0);
        return;
    }
    J->db_busy = 1;
    J->s->pending_work++;
}

void jobs_db_push(jobs *J, dbop *op)
{
    op->J = J;
    op->next = NULL;
    if (J->db_tail)
        J->db_tail->next = op;
    else
        J->db_head = op;
    J->db_tail = op;
    db_kick(J);
}

dbop *jobs_dbop_new(db_kind kind, int64_t id)
{
    dbop *op = calloc(1, sizeof *op);
    if (op) {
        op->kind = kind;
        op->id = id;
    }
    return op;
}

void jobs_dbop_free(dbop *op)
{
    free(op->params);
    json_decref(op->params_json);
    free(op->result);
    free(op->error);
    json_decref(op->answer);
    free(op);
}

char *jobs_dump(json_t *j)
{
    return j ? json_dumps(j, JSON_COMPACT) : NULL;
}

/* Reads a whole file into memory. */
static int slurp(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int r = -1;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (*data = malloc((size_t)n))) {
            if (fread(*data, 1, (size_t)n, f) == (size_t)n) {
                *len = (size_t)n;
                r = 0;
            } else {
                free(*data);
            }
        }
    }
    fclose(f);
    return r;
}

/* DB_SUCCEED: store the model as the next version, then finish the job. */
static void register_model(dbop *op, store *st)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/model.kiln", op->dir);
    char *data = NULL;
    size_t len = 0;
    json_t *res = op->result ? json_loads(op->result, 0, NULL) : NULL;
    if (!res) res = json_object();
    const char *err = NULL;
    char msg[512];
    store_version v = {0};
    if (slurp(path, &data, &len)) {
        err = "the training process wrote no model file";
    } else {
        char meta[128];
        snprintf(meta, sizeof meta, "{\"format\":\"kiln\",\"job\":%" PRId64 "}", op->id);
        store_status s = store_version_put(st, op->model, NULL, data, len, meta, &v);
        free(data);
        if (s) {
            snprintf(msg, sizeof msg, "registering model '%s': %s", op->model, store_last_error());
            err = msg;
        } else {
            json_object_set_new(res, "model", json_string(v.model));
            json_object_set_new(res, "version", json_string(v.version));
            json_object_set_new(res, "sha256", json_string(v.sha256));
            json_object_set_new(res, "size", json_integer((json_int_t)v.size));
            store_version_clear(&v);
        }
    }
    char *text = jobs_dump(res);
    json_decref(res);
    op->st = store_job_finish(st, op->id, text, err);
    free(text);
}

void jobs_db_run(uv_work_t *req)
{
    dbop *op = req->data;
    store *st = op->J->s->st;
    switch (op->kind) {
    case DB_CREATE:
        op->st = store_job_create(st, "train", op->params, &op->id);
        break;
    case DB_START:
        op->st = store_job_start(st, op->id);
        break;
    case DB_PROGRESS:
        op->st = store_job_progress(st, op->id, op->fraction, op->result);
        break;
    case DB_SUCCEED:
        register_model(op, st);
        break;
    case DB_FAIL:
        op->st = store_job_finish(st, op->id, op->result, op->error ? op->error : "failed");
        break;
    case DB_CANCEL:
        if (op->result) store_job_progress(st, op->id, op->fraction, op->result);
        op->st = store_job_cancel(st, op->id, op->error);
        break;
    }
    if (op->st) snprintf(op->msg, sizeof op->msg, "%s", store_last_error());
    if (op->dir[0]) jobs_remove_tree(op->dir);
    if (op->answer_wanted && op->st == STORE_OK) {
        store_job r;
        if (store_job_get(st, op->id, &r) == STORE_OK) {
            op->answer = jobs_row_json(&r);
            store_job_clear(&r);
        }
    }
}

static void db_done(uv_work_t *req, int status)
{
    (void)status;
    dbop *op = req->data;
    jobs *J = op->J;
    J->db_head = op->next;
    if (!J->db_head) J->db_tail = NULL;
    J->db_busy = 0;
    J->s->pending_work--;
    if (op->st && op->kind != DB_PROGRESS)
        fprintf(stderr, "kiln serve: job %" PRId64 ": %s\n", op->id, op->msg);
    if (op->kind == DB_CREATE) {
        jobs_after_create(J, op);
    } else if (op->c) {
        if (op->st)
            http_respond_error(op->c, store_http_status(op->st), NULL, "%s", op->msg);
        else
            respond_json(op->c, 200, NULL, op->answer), op->answer = NULL;
    }
    jobs_dbop_free(op);
    db_kick(J);
}

void jobs_dbop_cancel_conn(void *arg)
{
    ((dbop *)arg)->c = NULL;
}

/* ---- JSON of a job ------------------------------------------------------ */

json_t *jobs_row_json(const store_job *r)
{
    json_t *params = r->params ? json_loads(r->params, 0, NULL) : NULL;
    json_t *result = r->result ? json_loads(r->result, 0, NULL) : NULL;
    json_t *progress = json_object();
    json_t *p = json_object_get(result, "progress");
    if (json_is_object(p)) json_object_update(progress, p);
    json_object_set_new(progress, "fraction", json_real(r->progress));
    if (result) json_object_del(result, "progress");
    return json_pack(
        "{s:I, s:s, s:s, s:o, s:o, s:o, s:s?, s:I, s:o, s:o}", "id", (json_int_t)r->id, "kind",
        r->kind, "state", store_job_state_name(r->state), "params", params ? params : json_null(),
        "progress", progress, "result", result ? result : json_null(), "error", r->error, "created",
        (json_int_t)r->created, "started", r->started ? json_integer(r->started) : json_null(),
        "finished", r->finished ? json_integer(r->finished) : json_null());
}

/* What the store keeps in `result` while a job runs: the progress so far. */
char *job_live_result(const job *j)
{
    json_t *r = json_object();
    if (j->progress) json_object_set(r, "progress", j->progress);
    if (j->test) json_object_set(r, "test", j->test);
    if (j->summary) json_object_update(r, j->summary), json_object_del(r, "done");
    char *text = jobs_dump(r);
    json_decref(r);
    return text;
}
