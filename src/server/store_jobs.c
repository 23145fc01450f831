/*
 * The store's training jobs: queued -> running -> succeeded | failed |
 * cancelled, with progress and results as JSON. The statements are in
 * store.c.
 */
#include "store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const job_states[] = {"queued", "running", "succeeded", "failed", "cancelled"};
#define N_JOB_STATES ((int)(sizeof job_states / sizeof job_states[0]))

const char *store_job_state_name(store_job_state s)
{
    return (unsigned)s < N_JOB_STATES ? job_states[s] : "unknown";
}

void store_job_clear(store_job *j)
{
    if (!j) return;
    free(j->params);
    free(j->result);
    free(j->error);
    j->params = j->result = j->error = NULL;
}

static void job_from_row(store *st, sqlite3_stmt *q, void *row)
{
    (void)st;
    store_job *out = row;
    memset(out, 0, sizeof *out);
    out->id = sqlite3_column_int64(q, 0);
    store_copy_col(out->kind, sizeof out->kind, q, 1);
    const char *state = (const char *)sqlite3_column_text(q, 2);
    for (int i = 0; i < N_JOB_STATES; i++)
        if (state && strcmp(state, job_states[i]) == 0) out->state = (store_job_state)i;
    out->progress = sqlite3_column_double(q, 3);
    out->params = store_dup_col(q, 4);
    out->result = store_dup_col(q, 5);
    out->error = store_dup_col(q, 6);
    out->created = sqlite3_column_int64(q, 7);
    out->started = sqlite3_column_int64(q, 8);
    out->finished = sqlite3_column_int64(q, 9);
    out->updated = sqlite3_column_int64(q, 10);
}

static store_status job_get_locked(store *st, int64_t id, store_job *out)
{
    sqlite3_stmt *q = store_query(st, Q_JOB_GET);
    if (!q) return STORE_DB;
    sqlite3_bind_int64(q, 1, id);
    store_status s = store_one_row(st, q, job_from_row, out, "reading a job");
    return s == STORE_NOT_FOUND ? store_fail(s, "no job %lld", (long long)id) : s;
}

store_status store_job_get(store *st, int64_t id, store_job *out)
{
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    pthread_mutex_lock(&st->mu);
    store_status s = job_get_locked(st, id, out);
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_job_create(store *st, const char *kind, const char *params, int64_t *id)
{
    store_status s = store_check_name("job kind", kind);
    if (s != STORE_OK) return s;
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_JOB_INSERT);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, kind);
        store_bind_text(q, 2, params);
        sqlite3_bind_int64(q, 3, store_now_ms());
        s = store_step_done(st, q, "creating a job");
        if (s == STORE_INVALID) s = store_fail(s, "job parameters are not valid JSON");
        if (s == STORE_OK) *id = sqlite3_last_insert_rowid(st->db);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

/* After an UPDATE of job `id` changed no row: not found, or in the wrong state. */
static store_status job_unchanged(store *st, int64_t id, const char *what)
{
    store_job j;
    store_status s = job_get_locked(st, id, &j);
    if (s != STORE_OK) return s;
    s = store_fail(STORE_INVALID, "job %lld is %s: cannot %s", (long long)id,
                   store_job_state_name(j.state), what);
    store_job_clear(&j);
    return s;
}

store_status store_job_start(store *st, int64_t id)
{
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    pthread_mutex_lock(&st->mu);
    store_status s;
    sqlite3_stmt *q = store_query(st, Q_JOB_START);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, store_now_ms());
        s = store_step_done(st, q, "starting a job");
        if (s == STORE_OK && sqlite3_changes(st->db) == 0) s = job_unchanged(st, id, "start");
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_job_progress(store *st, int64_t id, double progress, const char *result)
{
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    if (!(progress >= 0)) progress = 0; /* NaN too */
    if (progress > 1) progress = 1;
    pthread_mutex_lock(&st->mu);
    store_status s;
    sqlite3_stmt *q = store_query(st, Q_JOB_PROGRESS);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_double(q, 2, progress);
        store_bind_text(q, 3, result);
        sqlite3_bind_int64(q, 4, store_now_ms());
        s = store_step_done(st, q, "updating a job");
        if (s == STORE_INVALID) s = store_fail(s, "job result is not valid JSON");
        if (s == STORE_OK && sqlite3_changes(st->db) == 0)
            s = job_unchanged(st, id, "report progress");
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_job_finish(store *st, int64_t id, const char *result, const char *error)
{
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    pthread_mutex_lock(&st->mu);
    store_status s;
    sqlite3_stmt *q = store_query(st, Q_JOB_FINISH);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        store_bind_text(q, 2, error ? "failed" : "succeeded");
        store_bind_text(q, 3, result);
        store_bind_text(q, 4, error);
        sqlite3_bind_int64(q, 5, store_now_ms());
        s = store_step_done(st, q, "finishing a job");
        if (s == STORE_INVALID) s = store_fail(s, "job result is not valid JSON");
        if (s == STORE_OK && sqlite3_changes(st->db) == 0) s = job_unchanged(st, id, "finish");
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_job_cancel(store *st, int64_t id, const char *reason)
{
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    pthread_mutex_lock(&st->mu);
    store_status s;
    sqlite3_stmt *q = store_query(st, Q_JOB_CANCEL);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        store_bind_text(q, 2, reason);
        sqlite3_bind_int64(q, 3, store_now_ms());
        s = store_step_done(st, q, "cancelling a job");
        if (s == STORE_OK && sqlite3_changes(st->db) == 0) s = job_unchanged(st, id, "cancel");
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

void store_jobs_free(store_job *j, int n)
{
    for (int i = 0; j && i < n; i++) store_job_clear(&j[i]);
    free(j);
}

store_status store_job_list(store *st, int state, int limit, store_job **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    if (limit <= 0 || state >= N_JOB_STATES) return store_fail(STORE_INVALID, "bad job query");
    pthread_mutex_lock(&st->mu);
    store_status s = STORE_OK;
    sqlite3_stmt *q = store_query(st, Q_JOB_LIST);
    if (!q) {
        pthread_mutex_unlock(&st->mu);
        return STORE_DB;
    }
    store_bind_text(q, 1, state >= 0 ? job_states[state] : NULL);
    sqlite3_bind_int(q, 2, limit);
    s = store_all_rows(st, q, job_from_row, sizeof **out, (void **)out, n, "listing jobs");
    pthread_mutex_unlock(&st->mu);
    if (s != STORE_OK) {
        store_jobs_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return s;
}
