/*
 * Internals shared by the store's files (store.c: database, migrations,
 * models, functions, jobs; blob.c: content-addressed files and garbage
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
