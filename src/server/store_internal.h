/*
 * Internals shared by the store's files (store.c: database, migrations,
 * statements; store_models.c: models, versions, functions; store_jobs.c:
 * jobs; blob.c: content-addressed files and garbage
 * collection; store_log.c: the invocation log writer; token.c). Not for the
 * server: it uses store.h.
 */
#ifndef KILN_SERVER_STORE_INTERNAL_H
#define KILN_SERVER_STORE_INTERNAL_H

#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>

/* Schema versions at which tables appear (see the migrations in store.c). */
#define STORE_SCHEMA_JOBS        4 /* the jobs table as it is now (created at 2, rebuilt at 4) */
#define STORE_SCHEMA_INVOCATIONS 3
#define STORE_SCHEMA_MODEL_META  6 /* models.metadata */

typedef struct store_pin {
    char sha256[STORE_SHA256_HEX + 1];
    int refs;
} store_pin;

typedef struct store_log {
    pthread_t thread;
    int started; /* the thread runs */
    sqlite3 *db; /* the writer's own connection */
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* writer waits for records, a flush or stop */
    pthread_cond_t done;    /* flushers wait for progress */
    store_invocation *ring; /* capacity records; [head, head+count) mod capacity */
    int capacity, head, count;
    int stop;         /* store_close asked the writer to finish */
    int flush_wanted; /* a flusher waits: write a partial batch now */
    uint64_t enqueued, written, dropped, failed, batches;
    uint64_t settled; /* enqueued records written or failed, in order */
} store_log;

struct store {
    store_options opt;
    char *data_dir;
    char *blob_dir; /* <data>/blobs/sha256 */
    char *tmp_dir;  /* <data>/blobs/tmp */
    int lock_fd;
    int schema;
    sqlite3 *db;
    pthread_mutex_t mu; /* guards db, its statements and the pins */
    sqlite3_stmt **stmts;
    sqlite3_stmt *extra[8]; /* statements of store_log.c, see store_cached() */
    store_pin *pins;
    int n_pins, cap_pins;
    store_log log;
};

/* Sets the thread's error message and returns `s`. */
store_status store_fail(store_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An SQLite failure on `db`: STORE_EXISTS / STORE_INVALID for constraint
 * violations, STORE_DB otherwise, with `what` and SQLite's message. */
store_status store_fail_db(sqlite3 *db, const char *what);

int64_t store_now_ms(void);

/* Opens another connection to the database with the store's pragmas
 * (synchronous FULL for the main connection, NORMAL for the log writer). */
store_status store_open_conn(store *st, sqlite3 **db, int synchronous_full);
/* `*slot` prepared from `sql` on first use (on the main connection), reset
 * and unbound; caller holds st->mu. NULL with the error set on failure. */
sqlite3_stmt *store_cached(store *st, sqlite3_stmt **slot, const char *sql);
int store_sha256_valid(const char *s);
/* STORE_OK, or STORE_INVALID naming `what` when name is not a valid name. */
store_status store_check_name(const char *what, const char *name);

/* The statements of store.c's table, by name. */
enum {
    Q_MODEL_INSERT,
    Q_MODEL_INSERT_IGNORE,
    Q_MODEL_GET,
    Q_MODEL_LIST,
    Q_MODEL_DELETE,
    Q_MODEL_INSERT_META,
    Q_MODEL_UPSERT_META,
    Q_MODEL_META,
    Q_MODEL_BLOBS,
    Q_VERSION_GET,
    Q_VERSION_LATEST,
    Q_VERSION_LIST,
    Q_VERSION_INSERT,
    Q_VERSION_NEXT,
    Q_VERSION_DELETE,
    Q_FN_PUT,
    Q_FN_GET,
    Q_FN_LIST,
    Q_FN_DELETE,
    Q_JOB_INSERT,
    Q_JOB_START,
    Q_JOB_PROGRESS,
    Q_JOB_FINISH,
    Q_JOB_GET,
    Q_JOB_LIST,
    Q_JOB_CANCEL,
    Q_COUNT
};

/* Statement q, prepared on first use, reset and unbound; the caller holds
 * st->mu. NULL (with the error set) if it does not prepare. */
sqlite3_stmt *store_query(store *st, int q);
/* Binds v, or NULL when v is NULL. */
void store_bind_text(sqlite3_stmt *s, int i, const char *v);
/* Copies column col's text (or "") into dst[cap]. */
void store_copy_col(char *dst, size_t cap, sqlite3_stmt *s, int col);
/* Column col's text as a malloc'd string, or NULL. */
char *store_dup_col(sqlite3_stmt *s, int col);
/* Runs a statement that returns no rows: STORE_OK or the mapped error. */
store_status store_step_done(store *st, sqlite3_stmt *s, const char *what);
/* Runs sql ("BEGIN IMMEDIATE", "COMMIT", ...) on the main connection. */
store_status store_tx(store *st, const char *sql);

/* Reads the current row of q into one element of a table's row struct. */
typedef void (*store_row_reader)(store *st, sqlite3_stmt *q, void *row);
/* Steps q (prepared and bound; the caller holds st->mu) for at most one
 * row and reads it into out: STORE_OK, STORE_NOT_FOUND without a message
 * (the caller names what is missing), or a database error about `what`. */
store_status store_one_row(store *st, sqlite3_stmt *q, store_row_reader read, void *out,
                           const char *what);
/* Steps q to its end, reading every row into a growing array of
 * `size`-byte elements at *out with *n of them. On an error the rows read
 * so far stay in *out and *n for the caller to free. */
store_status store_all_rows(store *st, sqlite3_stmt *q, store_row_reader read, size_t size,
                            void **out, int *n, const char *what);

/* blob.c; callers hold st->mu where noted. */
void blob_path_of(const store *st, const char *sha256, char *buf, size_t len);
void blob_pin_locked(store *st, const char *sha256);
void blob_unpin_locked(store *st, const char *sha256);
/* Unlinks the blob if no version row references it and it is not pinned. */
void blob_release_locked(store *st, const char *sha256);
/* Open-time cleanup: temp files, unreferenced blobs, missing blobs. */
store_status blob_gc_open(store *st, store_open_report *rep);

/* store_log.c */
store_status store_log_start(store *st);
void store_log_stop(store *st);

#endif
