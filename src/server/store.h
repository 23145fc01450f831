/*
 * The local store of an edge node: one SQLite database (<data-dir>/kiln.db)
 * and a content-addressed directory of model weights beside it
 * (<data-dir>/blobs/sha256/xx/<sha256>).
 *
 * Guarantees
 *   - A model version is visible only once its blob is complete: the blob is
 *     written to a temp file, fsynced, renamed into place and its directory
 *     fsynced before the version row is inserted (in one transaction). A crash
 *     at any point leaves either no version or a complete one.
 *   - store_open() checks the database (PRAGMA integrity_check), applies the
 *     numbered schema migrations (each in its own transaction, recorded in
 *     PRAGMA user_version), marks jobs left 'running' by a crash as failed,
 *     and removes orphan temp files and blobs no version references.
 *   - Every string from outside is bound as an SQL parameter; names are
 *     validated with store_name_valid() before they reach a path or a query.
 *   - One process owns a data dir at a time (an flock on <data-dir>/lock).
 *
 * Threads
 *   Every function below is safe to call from any thread: a mutex serialises
 *   the main database connection. Calls that write a blob (store_blob_*,
 *   store_version_put) or commit a transaction (everything that changes a
 *   row) wait for fsync and belong on a worker thread (uv_queue_work), not
 *   on the event loop. store_log_invocation() never blocks on I/O and is made
 *   for the event loop: the invocation log has its own writer thread and its
 *   own connection, and writes batches in one transaction each.
 *
 * Processes
 *   Only the server process opens the store. Workers never do: the server
 *   hands them a version's blob path (store_version.path), which they open
 *   read-only or mmap; blobs are immutable once in place.
 *
 * Errors
 *   Fallible calls return a store_status; store_last_error() gives a
 *   one-line message for the calling thread's last failure.
 *
 * Use from the server
 *   start (main thread, before the loop): store_token_load (if auth),
 *     store_open, store_function_put for each configured function;
 *   event loop: store_log_invocation per finished invocation,
 *     store_log_stats_get for /metrics (dropped rows), short reads
 *     (store_model_get/list, store_version_get/list, store_job_get,
 *     store_invocations_recent/summary) take the mutex and read SQLite:
 *     cheap, but they may run them in uv_queue_work too;
 *   uv_queue_work: store_version_put / store_blob_* / store_version_add
 *     (uploads), store_model_delete, store_version_delete, store_job_*
 *     writes (each commits with fsync);
 *   shutdown (main thread, after the loop): store_close (flushes the log).
 */
#ifndef KILN_SERVER_STORE_H
#define KILN_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_NAME_MAX   64 /* bytes of a model/function/version name */
#define STORE_SHA256_HEX 64

typedef enum store_status {
    STORE_OK = 0,
    STORE_INVALID,   /* bad argument: a name, JSON, a size (maps to 400) */
    STORE_NOT_FOUND, /* no such model, version, job (404) */
    STORE_EXISTS,    /* already there (409) */
    STORE_TOO_LARGE, /* a blob past max_blob_bytes (413) */
    STORE_IO,        /* file system error (500) */
    STORE_DB,        /* SQLite error (500) */
    STORE_CORRUPT,   /* integrity_check failed, a blob does not match its hash */
    STORE_BUSY,      /* the data dir is used by another process */
    STORE_NOMEM,
    STORE_NOSPACE, /* the data dir's file system is full (ENOSPC, EDQUOT, SQLITE_FULL) (507) */
} store_status;

const char *store_status_name(store_status s);
/* The calling thread's message for its last failed store call ("" if none). */
const char *store_last_error(void);

typedef struct store store;

typedef struct store_options {
    const char *data_dir;       /* created, with missing parents, if absent */
    int busy_timeout_ms;        /* SQLite busy_timeout; default 5000 */
    uint64_t max_blob_bytes;    /* default 4 GiB */
    int log_queue_capacity;     /* invocation records waiting; default 65536 */
    int log_batch_rows;         /* rows per transaction at most; default 1000 */
    int log_flush_ms;           /* a partial batch is written after this; default 200 */
    int64_t log_retention_rows; /* keep the newest N invocation rows; 0 = no limit */
    int64_t log_retention_days; /* drop rows older than N days; 0 = no limit */
    int skip_integrity_check;   /* 1: skip PRAGMA integrity_check on open (huge dbs) */
    int migrate_to;             /* tests: stop at this schema version (only the tables it has work,
                                   the log is off); 0 = latest */
} store_options;

/* What store_open() found and repaired. */
typedef struct store_open_report {
    int schema_from, schema_to; /* user_version before and after migrations */
    int jobs_failed;            /* 'running' jobs marked failed (interrupted) */
    int temp_files_removed;     /* partial blob writes of a crashed process */
    int blobs_removed;          /* blobs no version referenced */
    int versions_missing_blob;  /* blobs named by versions but absent (damage) */
} store_open_report;

void store_options_defaults(store_options *o);

/* Opens (creating if needed) the store in o->data_dir. `report` may be NULL.
 * Errors: STORE_BUSY (another process holds the data dir), STORE_CORRUPT
 * (integrity_check failed, or the schema is newer than this binary), STORE_IO,
 * STORE_DB. Call from the main thread before the loop starts. */
store_status store_open(const store_options *o, store **out, store_open_report *report);

/* Flushes the invocation log (everything enqueued is written), stops its
 * thread and closes the database. NULL is a no-op. */
void store_close(store *st);

/* Schema version of the open database, and the latest this binary knows. */
int store_schema_version(store *st);
int store_schema_latest(void);

/* 1 when `s` is a valid name for a model, version or function:
 * [A-Za-z0-9._-]{1,STORE_NAME_MAX}, not starting with '.' (so no ".", "..",
 * no hidden files, no '/' or NUL: safe as a path component). */
int store_name_valid(const char *s);

/* ---- models and versions ---------------------------------------------- */

#define STORE_METADATA_MAX 65536 /* bytes of a model's metadata JSON */

typedef struct store_model {
    char name[STORE_NAME_MAX + 1];
    int64_t created; /* unix ms */
    int n_versions;
    char latest[STORE_NAME_MAX + 1]; /* "" when there is no version */
} store_model;

typedef struct store_version {
    char model[STORE_NAME_MAX + 1];
    char version[STORE_NAME_MAX + 1];
    char sha256[STORE_SHA256_HEX + 1];
    uint64_t size;
    char path[4096]; /* absolute path of the blob: open it read-only or mmap it */
    char *metadata;  /* JSON text or NULL; owned, store_version_clear() frees */
    int64_t created; /* unix ms */
} store_version;

void store_version_clear(store_version *v);
void store_versions_free(store_version *v, int n);

/* Creates a model with no versions. STORE_EXISTS if it is there. */
store_status store_model_create(store *st, const char *name);
store_status store_model_get(store *st, const char *name, store_model *out);
/* A model's own metadata: a JSON object (description, labels, owner, ...)
 * of at most STORE_METADATA_MAX bytes; each version carries its own too.
 * With must_create: creates the model with it (STORE_EXISTS if the name is
 * taken); otherwise creates the model or replaces its metadata, and
 * *created (if not NULL) says which. metadata may be NULL (none). */
store_status store_model_put(store *st, const char *name, const char *metadata, int must_create,
                             int *created);
/* The model's metadata as malloc'd JSON text, or *metadata = NULL when it
 * has none. STORE_NOT_FOUND when there is no such model. */
store_status store_model_metadata(store *st, const char *name, char **metadata);
/* All models by name; *out is malloc'd (free()), *n may be 0. */
store_status store_model_list(store *st, store_model **out, int *n);
/* Deletes a model and its versions; blobs no longer referenced are removed. */
store_status store_model_delete(store *st, const char *name);

/* Versions: `version` is a name; "latest" (or NULL for get) means the newest.
 * "latest" cannot be used as a version's name. */
store_status store_version_get(store *st, const char *model, const char *version,
                               store_version *out);
/* Versions of a model, oldest first; free with store_versions_free(). */
store_status store_version_list(store *st, const char *model, store_version **out, int *n);
store_status store_version_delete(store *st, const char *model, const char *version);

/* Writes `len` bytes as a blob and registers them as `model`/`version` (the
 * model is created if absent; version NULL means the next integer, "1",
 * "2", ...). `metadata` is JSON text or NULL. Returns only once the blob and
 * the row are durable. `out` (may be NULL) receives the version.
 * STORE_EXISTS if the version exists. Blocks on fsync: not on the loop. */
store_status store_version_put(store *st, const char *model, const char *version, const void *data,
                               size_t len, const char *metadata, store_version *out);

/* Streaming form of store_version_put for bodies that arrive in pieces:
 *   store_blob_begin -> store_blob_write... -> store_blob_commit -> store_version_add
 * (or store_blob_abort at any point). commit hashes, fsyncs and renames, and
 * pins the blob so that nothing removes it until store_version_add (which
 * takes the pin over, success or not) or store_blob_unpin. */
typedef struct store_blob_writer store_blob_writer;
store_status store_blob_begin(store *st, store_blob_writer **out);
store_status store_blob_write(store_blob_writer *w, const void *data, size_t len);
/* Finishes and frees `w`: sha256 (65 bytes) and size of the blob. */
store_status store_blob_commit(store_blob_writer *w, char sha256[STORE_SHA256_HEX + 1],
                               uint64_t *size);
void store_blob_abort(store_blob_writer *w);
void store_blob_unpin(store *st, const char *sha256);
store_status store_version_add(store *st, const char *model, const char *version,
                               const char *sha256, const char *metadata, store_version *out);

/* Absolute path of a blob by hash (which must be 64 lowercase hex digits). */
store_status store_blob_path(store *st, const char *sha256, char *buf, size_t buf_len);
/* Re-hashes the blob: STORE_OK, STORE_CORRUPT (content differs), STORE_NOT_FOUND. */
store_status store_blob_verify(store *st, const char *sha256);

/* ---- functions (the config's functions, mirrored for the API) ----------- */

typedef struct store_function {
    char name[STORE_NAME_MAX + 1];
    char kind[16];
    char model[STORE_NAME_MAX + 1]; /* "" when none */
    char *config;                   /* JSON text; owned, free() */
    int64_t updated;                /* unix ms */
} store_function;

/* Inserts or replaces a function. `model` may be NULL, `config` is JSON or NULL. */
store_status store_function_put(store *st, const char *name, const char *kind, const char *model,
                                const char *config);
store_status store_function_get(store *st, const char *name, store_function *out);
store_status store_function_list(store *st, store_function **out, int *n);
store_status store_function_delete(store *st, const char *name);
void store_functions_free(store_function *f, int n);

/* ---- jobs (training) ----------------------------------------------------- */

typedef enum store_job_state {
    STORE_JOB_QUEUED = 0,
    STORE_JOB_RUNNING,
    STORE_JOB_SUCCEEDED,
    STORE_JOB_FAILED,
    STORE_JOB_CANCELLED,
} store_job_state;

const char *store_job_state_name(store_job_state s);

typedef struct store_job {
    int64_t id;
    char kind[STORE_NAME_MAX + 1];
    store_job_state state;
    double progress; /* 0..1 */
    char *params;    /* JSON or NULL; owned */
    char *result;    /* JSON or NULL (loss, accuracy, the model registered); owned */
    char *error;     /* text or NULL; owned */
    int64_t created, started, finished, updated; /* unix ms; 0 = not yet */
} store_job;

void store_job_clear(store_job *j);

/* A new job in state queued; *id receives its id. */
store_status store_job_create(store *st, const char *kind, const char *params, int64_t *id);
/* queued -> running. STORE_INVALID if the job is not queued. */
store_status store_job_start(store *st, int64_t id);
/* Progress (clamped to 0..1) and an optional result JSON of a running job. */
store_status store_job_progress(store *st, int64_t id, double progress, const char *result);
/* running (or queued) -> succeeded (error NULL) or failed (error set). */
store_status store_job_finish(store *st, int64_t id, const char *result, const char *error);
/* running (or queued) -> cancelled, with `reason` (may be NULL) as its error. */
store_status store_job_cancel(store *st, int64_t id, const char *reason);
store_status store_job_get(store *st, int64_t id, store_job *out);
/* The newest `limit` jobs, newest first; `state` is a store_job_state or -1
 * for all. Free with store_jobs_free(). */
store_status store_job_list(store *st, int state, int limit, store_job **out, int *n);
void store_jobs_free(store_job *j, int n);

/* ---- invocation log ------------------------------------------------------ */

typedef struct store_invocation {
    int64_t id; /* filled by queries; ignored when logging */
    char function[STORE_NAME_MAX + 1];
    int cold; /* 1 cold start, 0 warm, -1 none (never ran on a worker) */
    int64_t worker;
    int64_t queue_us, init_us, exec_us;
    int status; /* HTTP status */
    int64_t bytes_in, bytes_out;
    int64_t ts; /* unix ms; 0 = now */
} store_invocation;

/* Enqueues one record for the writer thread. Never blocks on I/O (a mutex is
 * held for a copy). Returns 0, or -1 when the queue is full or the function
 * name is invalid: the record is dropped and counted. For the event loop. */
int store_log_invocation(store *st, const store_invocation *inv);

typedef struct store_log_stats {
    uint64_t enqueued; /* accepted by store_log_invocation */
    uint64_t written;  /* committed to the database */
    uint64_t dropped;  /* refused: queue full or invalid */
    uint64_t failed;   /* accepted but lost to a database error */
    uint64_t batches;  /* transactions committed */
    int queued;        /* waiting now */
} store_log_stats;

void store_log_stats_get(store *st, store_log_stats *out);
/* Waits until every record enqueued before the call is written (or failed). */
void store_log_flush(store *st);

/* The newest `limit` invocations of a function (all functions if NULL),
 * newest first. *out is malloc'd; free(). */
store_status store_invocations_recent(store *st, const char *function, int limit,
                                      store_invocation **out, int *n);

typedef struct store_invocation_summary {
    int64_t cold, warm, none;                         /* counts (none: no worker) */
    double cold_queue_us, cold_init_us, cold_exec_us; /* averages over cold ones */
    double warm_queue_us, warm_init_us, warm_exec_us; /* averages over warm ones */
} store_invocation_summary;

/* Counts and averages for a function (all functions if NULL). */
store_status store_invocation_summary_get(store *st, const char *function,
                                          store_invocation_summary *out);

/* ---- token --------------------------------------------------------------- */

#define STORE_TOKEN_HEX 64

/* Reads <data_dir>/token, or creates it (mode 0600, 32 random bytes from
 * getrandom as 64 hex digits) when absent. *created is 1 when it was made now
 * (the caller prints it once). A token file with a mode other than 0600, or
 * content that is not 64 hex digits, is an error (STORE_INVALID). */
store_status store_token_load(const char *data_dir, char token[STORE_TOKEN_HEX + 1], int *created);

/* Compares a presented token with the expected one in time that depends only
 * on the expected token's length. 1 when equal. */
int store_token_equal(const char *expected, const char *given, size_t given_len);

#endif
