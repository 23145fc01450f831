/*
 * The invocation log: the event loop enqueues one record per invocation into
 * a bounded ring (a mutex held for a copy; never waits for I/O); a writer
 * thread with its own SQLite connection takes up to log_batch_rows records
 * at a time, or what is there after log_flush_ms, and commits each batch in
 * one transaction, applying the retention limits in the same transaction.
 * A full ring drops the record and counts it.
 */
#include "store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INSERT_SQL                                                                         \
    "INSERT INTO invocations(function, start, worker, queue_us, init_us, exec_us, status," \
    " bytes_in, bytes_out, ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"

typedef struct log_writer {
    sqlite3_stmt *insert, *keep_rows, *keep_days;
} log_writer;

static const char *start_name(int cold)
{
    return cold > 0 ? "cold" : cold < 0 ? "none" : "warm";
}

/* Writes `n` records in one transaction. 0 on success. */
static int write_batch(store *st, log_writer *w, const store_invocation *recs, int n)
{
    sqlite3 *db = st->log.db;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return -1;
    for (int i = 0; i < n; i++) {
        const store_invocation *r = &recs[i];
        sqlite3_stmt *q = w->insert;
        sqlite3_reset(q);
        sqlite3_bind_text(q, 1, r->function, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, start_name(r->cold), -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, r->worker);
        sqlite3_bind_int64(q, 4, r->queue_us);
        sqlite3_bind_int64(q, 5, r->init_us);
        sqlite3_bind_int64(q, 6, r->exec_us);
        sqlite3_bind_int(q, 7, r->status);
        sqlite3_bind_int64(q, 8, r->bytes_in);
        sqlite3_bind_int64(q, 9, r->bytes_out);
        sqlite3_bind_int64(q, 10, r->ts);
        if (sqlite3_step(q) != SQLITE_DONE) goto fail;
    }
    sqlite3_reset(w->insert);
    if (st->opt.log_retention_rows > 0) {
        sqlite3_reset(w->keep_rows);
        sqlite3_bind_int64(w->keep_rows, 1, st->opt.log_retention_rows);
        if (sqlite3_step(w->keep_rows) != SQLITE_DONE) goto fail;
        sqlite3_reset(w->keep_rows);
    }
    if (st->opt.log_retention_days > 0) {
        sqlite3_reset(w->keep_days);
        sqlite3_bind_int64(w->keep_days, 1,
                           store_now_ms() - st->opt.log_retention_days * 86400 * (int64_t)1000);
        if (sqlite3_step(w->keep_days) != SQLITE_DONE) goto fail;
        sqlite3_reset(w->keep_days);
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    return 0;
fail:
    sqlite3_reset(w->insert);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static void deadline_after_ms(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *log_thread(void *arg)
{
    store *st = arg;
    store_log *l = &st->log;
    log_writer w = {0};
    int prepared =
        sqlite3_prepare_v3(l->db, INSERT_SQL, -1, SQLITE_PREPARE_PERSISTENT, &w.insert, NULL) ==
            SQLITE_OK &&
        sqlite3_prepare_v3(l->db,
                           "DELETE FROM invocations WHERE id <="
                           " (SELECT max(id) FROM invocations) - ?1",
                           -1, SQLITE_PREPARE_PERSISTENT, &w.keep_rows, NULL) == SQLITE_OK &&
        sqlite3_prepare_v3(l->db, "DELETE FROM invocations WHERE ts < ?1", -1,
                           SQLITE_PREPARE_PERSISTENT, &w.keep_days, NULL) == SQLITE_OK;
    int batch_max = st->opt.log_batch_rows;
    store_invocation *batch = malloc((size_t)batch_max * sizeof *batch);

    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (l->count == 0 && !l->stop) pthread_cond_wait(&l->wake, &l->mu);
        if (l->count == 0) break; /* stop, and nothing left */
        if (l->count < batch_max && !l->stop && !l->flush_wanted) {
            struct timespec until;
            deadline_after_ms(&until, st->opt.log_flush_ms);
            while (l->count < batch_max && !l->stop && !l->flush_wanted)
                if (pthread_cond_timedwait(&l->wake, &l->mu, &until) == ETIMEDOUT) break;
        }
        int n = l->count < batch_max ? l->count : batch_max;
        for (int i = 0; i < n; i++) {
            store_invocation *r = &l->ring[(l->head + i) % l->capacity];
            if (batch) batch[i] = *r;
        }
        l->head = (l->head + n) % l->capacity;
        l->count -= n;
        if (l->count == 0) l->flush_wanted = 0;
        pthread_mutex_unlock(&l->mu);

        int ok = prepared && batch && write_batch(st, &w, batch, n) == 0;

        pthread_mutex_lock(&l->mu);
        if (ok) {
            l->written += (uint64_t)n;
            l->batches++;
        } else {
            l->failed += (uint64_t)n;
        }
        l->settled += (uint64_t)n;
        pthread_cond_broadcast(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    free(batch);
    sqlite3_finalize(w.insert);
    sqlite3_finalize(w.keep_rows);
    sqlite3_finalize(w.keep_days);
    return NULL;
}

store_status store_log_start(store *st)
{
    store_log *l = &st->log;
    l->capacity = st->opt.log_queue_capacity;
    l->ring = calloc((size_t)l->capacity, sizeof *l->ring);
    if (!l->ring) return store_fail(STORE_NOMEM, "out of memory for the invocation log queue");
    store_status s = store_open_conn(st, &l->db, 0);
    if (s != STORE_OK) return s;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, NULL);
    pthread_cond_init(&l->done, NULL);
    if (pthread_create(&l->thread, NULL, log_thread, st) != 0) {
        pthread_cond_destroy(&l->done);
        pthread_cond_destroy(&l->wake);
        pthread_mutex_destroy(&l->mu);
        return store_fail(STORE_NOMEM, "cannot start the invocation log thread");
    }
    l->started = 1;
    return STORE_OK;
}

void store_log_stop(store *st)
{
    store_log *l = &st->log;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_signal(&l->wake);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_cond_destroy(&l->done);
        pthread_cond_destroy(&l->wake);
        pthread_mutex_destroy(&l->mu);
        l->started = 0;
    }
    if (l->db) sqlite3_close(l->db);
    l->db = NULL;
    free(l->ring);
    l->ring = NULL;
}

int store_log_invocation(store *st, const store_invocation *inv)
{
    store_log *l = &st->log;
    if (!l->started) return -1;
    int valid = store_name_valid(inv->function);
    pthread_mutex_lock(&l->mu);
    if (!valid || l->count == l->capacity || l->stop) {
        l->dropped++;
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    store_invocation *r = &l->ring[(l->head + l->count) % l->capacity];
    *r = *inv;
    r->cold = inv->cold > 0 ? 1 : inv->cold < 0 ? -1 : 0;
    if (r->ts == 0) r->ts = store_now_ms();
    l->enqueued++;
    if (++l->count >= st->opt.log_batch_rows)
        pthread_cond_signal(&l->wake);
    else if (l->count == 1)
        pthread_cond_signal(&l->wake); /* start the flush timer */
    pthread_mutex_unlock(&l->mu);
    return 0;
}

void store_log_stats_get(store *st, store_log_stats *out)
{
    store_log *l = &st->log;
    memset(out, 0, sizeof *out);
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    out->enqueued = l->enqueued;
    out->written = l->written;
    out->dropped = l->dropped;
    out->failed = l->failed;
    out->batches = l->batches;
    out->queued = l->count;
    pthread_mutex_unlock(&l->mu);
}

void store_log_flush(store *st)
{
    store_log *l = &st->log;
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    uint64_t target = l->enqueued;
    while (l->settled < target) {
        l->flush_wanted = 1;
        pthread_cond_signal(&l->wake);
        pthread_cond_wait(&l->done, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
}

/* ---- queries (main connection) ------------------------------------------ */

enum { X_RECENT_FN, X_RECENT_ALL, X_SUM_FN, X_SUM_ALL };

#define INV_COLS                                                                            \
    "id, function, start, worker, queue_us, init_us, exec_us, status, bytes_in, bytes_out," \
    " ts"

static const char *const extra_sql[] = {
    [X_RECENT_FN] = "SELECT " INV_COLS " FROM invocations WHERE function = ?1"
                    " ORDER BY id DESC LIMIT ?2",
    [X_RECENT_ALL] = "SELECT " INV_COLS " FROM invocations ORDER BY id DESC LIMIT ?2",
    [X_SUM_FN] = "SELECT start, count(*), avg(queue_us), avg(init_us), avg(exec_us)"
                 " FROM invocations WHERE function = ?1 GROUP BY start",
    [X_SUM_ALL] = "SELECT start, count(*), avg(queue_us), avg(init_us), avg(exec_us)"
                  " FROM invocations GROUP BY start",
};

store_status store_invocations_recent(store *st, const char *function, int limit,
                                      store_invocation **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (function && !store_name_valid(function))
        return store_fail(STORE_INVALID, "invalid function name");
    if (limit < 0) return store_fail(STORE_INVALID, "negative limit");
    if (st->schema < STORE_SCHEMA_INVOCATIONS) return store_fail(STORE_DB, "schema has no log");
    if (limit == 0) return STORE_OK;
    store_invocation *v = calloc((size_t)limit, sizeof *v);
    if (!v) return store_fail(STORE_NOMEM, "out of memory");
    store_status s = STORE_OK;
    pthread_mutex_lock(&st->mu);
    int x = function ? X_RECENT_FN : X_RECENT_ALL;
    sqlite3_stmt *q = store_cached(st, &st->extra[x], extra_sql[x]);
    if (!q)
        s = STORE_DB;
    else {
        if (function) sqlite3_bind_text(q, 1, function, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(q, 2, limit);
        int rc = SQLITE_DONE;
        while (*n < limit && (rc = sqlite3_step(q)) == SQLITE_ROW) {
            store_invocation *r = &v[(*n)++];
            r->id = sqlite3_column_int64(q, 0);
            const unsigned char *f = sqlite3_column_text(q, 1);
            snprintf(r->function, sizeof r->function, "%s", f ? (const char *)f : "");
            const unsigned char *start = sqlite3_column_text(q, 2);
            r->cold = !start                                     ? 0
                      : strcmp((const char *)start, "cold") == 0 ? 1
                      : strcmp((const char *)start, "none") == 0 ? -1
                                                                 : 0;
            r->worker = sqlite3_column_int64(q, 3);
            r->queue_us = sqlite3_column_int64(q, 4);
            r->init_us = sqlite3_column_int64(q, 5);
            r->exec_us = sqlite3_column_int64(q, 6);
            r->status = sqlite3_column_int(q, 7);
            r->bytes_in = sqlite3_column_int64(q, 8);
            r->bytes_out = sqlite3_column_int64(q, 9);
            r->ts = sqlite3_column_int64(q, 10);
        }
        if (*n < limit && rc != SQLITE_DONE) s = store_fail_db(st->db, "reading invocations");
        sqlite3_reset(q);
    }
    pthread_mutex_unlock(&st->mu);
    if (s != STORE_OK) {
        free(v);
        *n = 0;
        return s;
    }
    *out = v;
    return STORE_OK;
}

store_status store_invocation_summary_get(store *st, const char *function,
                                          store_invocation_summary *out)
{
    memset(out, 0, sizeof *out);
    if (function && !store_name_valid(function))
        return store_fail(STORE_INVALID, "invalid function name");
    if (st->schema < STORE_SCHEMA_INVOCATIONS) return store_fail(STORE_DB, "schema has no log");
    store_status s = STORE_OK;
    pthread_mutex_lock(&st->mu);
    int x = function ? X_SUM_FN : X_SUM_ALL;
    sqlite3_stmt *q = store_cached(st, &st->extra[x], extra_sql[x]);
    if (!q)
        s = STORE_DB;
    else {
        if (function) sqlite3_bind_text(q, 1, function, -1, SQLITE_TRANSIENT);
        int rc;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            const unsigned char *start = sqlite3_column_text(q, 0);
            int64_t count = sqlite3_column_int64(q, 1);
            double aq = sqlite3_column_double(q, 2), ai = sqlite3_column_double(q, 3),
                   ae = sqlite3_column_double(q, 4);
            if (start && strcmp((const char *)start, "cold") == 0) {
                out->cold = count;
                out->cold_queue_us = aq;
                out->cold_init_us = ai;
                out->cold_exec_us = ae;
            } else if (start && strcmp((const char *)start, "none") == 0) {
                out->none = count;
            } else {
                out->warm = count;
                out->warm_queue_us = aq;
                out->warm_init_us = ai;
                out->warm_exec_us = ae;
            }
        }
        if (rc != SQLITE_DONE) s = store_fail_db(st->db, "summarising invocations");
        sqlite3_reset(q);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}
