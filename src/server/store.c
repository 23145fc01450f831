/*
 * The store's database: open, checks, migrations, crash recovery, and the
 * rows for models, versions, functions and jobs. Every statement is prepared
 * once (lazily) and every outside string is bound as a parameter.
 */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ------------------------------------------------------------- */

static _Thread_local char last_error[512];

const char *store_last_error(void)
{
    return last_error;
}

store_status store_fail(store_status s, const char *fmt, ...)
{
    /* errno is still the failed call's: its arguments were evaluated first. */
    if (s == STORE_IO && (errno == ENOSPC || errno == EDQUOT)) s = STORE_NOSPACE;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

store_status store_fail_db(sqlite3 *db, const char *what)
{
    int ext = sqlite3_extended_errcode(db);
    store_status s = STORE_DB;
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE)
        s = STORE_EXISTS;
    else if (ext == SQLITE_CONSTRAINT_CHECK || ext == SQLITE_CONSTRAINT_NOTNULL ||
             ext == SQLITE_CONSTRAINT_FOREIGNKEY)
        s = STORE_INVALID;
    else if (ext == SQLITE_NOMEM)
        s = STORE_NOMEM;
    else if (ext == SQLITE_CORRUPT || ext == SQLITE_NOTADB)
        s = STORE_CORRUPT;
    else if ((ext & 0xff) == SQLITE_FULL)
        s = STORE_NOSPACE;
    else if ((ext & 0xff) == SQLITE_IOERR)
        s = STORE_IO;
    return store_fail(s, "%s: %s", what, sqlite3_errmsg(db));
}

const char *store_status_name(store_status s)
{
    switch (s) {
    case STORE_OK:
        return "ok";
    case STORE_INVALID:
        return "invalid";
    case STORE_NOT_FOUND:
        return "not found";
    case STORE_EXISTS:
        return "exists";
    case STORE_TOO_LARGE:
        return "too large";
    case STORE_IO:
        return "i/o error";
    case STORE_DB:
        return "database error";
    case STORE_CORRUPT:
        return "corrupt";
    case STORE_BUSY:
        return "busy";
    case STORE_NOMEM:
        return "out of memory";
    case STORE_NOSPACE:
        return "no space left";
    }
    return "unknown";
}

int64_t store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store_name_valid(const char *s)
{
    if (!s || s[0] == '\0' || s[0] == '.') return 0;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        if (!ok || n >= STORE_NAME_MAX) return 0;
    }
    return 1;
}

int store_sha256_valid(const char *s)
{
    if (!s) return 0;
    for (int i = 0; i < STORE_SHA256_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[STORE_SHA256_HEX] == '\0';
}

/* ---- schema ------------------------------------------------------------- */

/* Migration N (1-based) takes the schema from version N-1 to N. Append only:
 * a released migration never changes. Timestamps are unix milliseconds. */
static const char *const migrations[] = {
    /* 1: models, their versions, functions */
    "CREATE TABLE models ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE model_versions ("
    "  model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,"
    "  version TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL CHECK (length(sha256) = 64),"
    "  size INTEGER NOT NULL CHECK (size >= 0),"
    "  path TEXT NOT NULL,"
    "  metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata)),"
    "  created INTEGER NOT NULL,"
    "  PRIMARY KEY (model, version));"
    "CREATE INDEX model_versions_sha256 ON model_versions(sha256);"
    "CREATE TABLE functions ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  model TEXT,"
    "  config TEXT CHECK (config IS NULL OR json_valid(config)),"
    "  updated INTEGER NOT NULL);",
    /* 2: training jobs */
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),"
    "  progress REAL NOT NULL DEFAULT 0,"
    "  params TEXT CHECK (params IS NULL OR json_valid(params)),"
    "  result TEXT CHECK (result IS NULL OR json_valid(result)),"
    "  error TEXT,"
    "  created INTEGER NOT NULL,"
    "  started INTEGER,"
    "  finished INTEGER,"
    "  updated INTEGER NOT NULL);"
    "CREATE INDEX jobs_state ON jobs(state);",
    /* 3: the invocation log */
    "CREATE TABLE invocations ("
    "  id INTEGER PRIMARY KEY,"
    "  function TEXT NOT NULL,"
    "  start TEXT NOT NULL CHECK (start IN ('cold', 'warm')),"
    "  worker INTEGER,"
    "  queue_us INTEGER NOT NULL,"
    "  init_us INTEGER NOT NULL,"
    "  exec_us INTEGER NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  bytes_in INTEGER NOT NULL,"
    "  bytes_out INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL);"
    "CREATE INDEX invocations_function ON invocations(function, id);"
    "CREATE INDEX invocations_ts ON invocations(ts);",
    /* 4: job states of the jobs API: 'done' becomes 'succeeded', 'cancelled' is
     * new (SQLite cannot change a CHECK: the table is rebuilt). */
    "CREATE TABLE jobs_v4 ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL"
    "    CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),"
    "  progress REAL NOT NULL DEFAULT 0,"
    "  params TEXT CHECK (params IS NULL OR json_valid(params)),"
    "  result TEXT CHECK (result IS NULL OR json_valid(result)),"
    "  error TEXT,"
    "  created INTEGER NOT NULL,"
    "  started INTEGER,"
    "  finished INTEGER,"
    "  updated INTEGER NOT NULL);"
    "INSERT INTO jobs_v4 SELECT id, kind,"
    "  CASE state WHEN 'done' THEN 'succeeded' ELSE state END,"
    "  progress, params, result, error, created, started, finished, updated FROM jobs;"
    "DROP TABLE jobs;"
    "ALTER TABLE jobs_v4 RENAME TO jobs;"
    "CREATE INDEX jobs_state ON jobs(state);",
    /* 5: start 'none' for invocations that never ran on a worker (refused
     * with 429, or run by the server itself: kinds train and models) */
    "CREATE TABLE invocations_v5 ("
    "  id INTEGER PRIMARY KEY,"
    "  function TEXT NOT NULL,"
    "  start TEXT NOT NULL CHECK (start IN ('cold', 'warm', 'none')),"
    "  worker INTEGER,"
    "  queue_us INTEGER NOT NULL,"
    "  init_us INTEGER NOT NULL,"
    "  exec_us INTEGER NOT NULL,"
    "  status INTEGER NOT NULL,"
    "  bytes_in INTEGER NOT NULL,"
    "  bytes_out INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL);"
    "INSERT INTO invocations_v5 SELECT * FROM invocations;"
    "DROP TABLE invocations;"
    "ALTER TABLE invocations_v5 RENAME TO invocations;"
    "CREATE INDEX invocations_function ON invocations(function, id);"
    "CREATE INDEX invocations_ts ON invocations(ts);",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int store_schema_latest(void)
{
    return N_MIGRATIONS;
}

int store_schema_version(store *st)
{
    return st->schema;
}

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) return -1;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? 0 : -1;
}

static store_status migrate(store *st, int target, store_open_report *rep)
{
    int v;
    if (pragma_int(st->db, "PRAGMA user_version", &v) != 0)
        return store_fail_db(st->db, "reading the schema version");
    rep->schema_from = v;
    if (v > N_MIGRATIONS)
        return store_fail(STORE_CORRUPT,
                          "%s/kiln.db: schema version %d is newer than this kiln knows (%d)",
                          st->data_dir, v, N_MIGRATIONS);
    if (v < 0) return store_fail(STORE_CORRUPT, "kiln.db: negative schema version %d", v);
    for (; v < target; v++) {
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            return store_fail_db(st->db, "migration: begin");
        if (sqlite3_exec(st->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(st->db, set, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            char what[64];
            snprintf(what, sizeof what, "migration %d", v + 1);
            store_status s = store_fail_db(st->db, what);
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return s;
        }
    }
    st->schema = v;
    rep->schema_to = v;
    return STORE_OK;
}

/* ---- prepared statements ------------------------------------------------ */

enum {
    Q_MODEL_INSERT,
    Q_MODEL_INSERT_IGNORE,
    Q_MODEL_GET,
    Q_MODEL_LIST,
    Q_MODEL_DELETE,
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

#define MODEL_COLS                                                                       \
    "m.name, m.created, (SELECT count(*) FROM model_versions v WHERE v.model = m.name)," \
    " (SELECT version FROM model_versions v WHERE v.model = m.name ORDER BY rowid DESC LIMIT 1)"
#define VERSION_COLS "model, version, sha256, size, metadata, created"
#define JOB_COLS \
    "id, kind, state, progress, params, result, error, created, started, finished, updated"

static const char *const queries[Q_COUNT] = {
    [Q_MODEL_INSERT] = "INSERT INTO models(name, created) VALUES (?1, ?2)",
    [Q_MODEL_INSERT_IGNORE] = "INSERT OR IGNORE INTO models(name, created) VALUES (?1, ?2)",
    [Q_MODEL_GET] = "SELECT " MODEL_COLS " FROM models m WHERE m.name = ?1",
    [Q_MODEL_LIST] = "SELECT " MODEL_COLS " FROM models m ORDER BY m.name",
    [Q_MODEL_DELETE] = "DELETE FROM models WHERE name = ?1",
    [Q_MODEL_BLOBS] = "SELECT DISTINCT sha256 FROM model_versions WHERE model = ?1",
    [Q_VERSION_GET] =
        "SELECT " VERSION_COLS " FROM model_versions WHERE model = ?1 AND version = ?2",
    [Q_VERSION_LATEST] =
        "SELECT " VERSION_COLS " FROM model_versions WHERE model = ?1 ORDER BY rowid DESC LIMIT 1",
    [Q_VERSION_LIST] =
        "SELECT " VERSION_COLS " FROM model_versions WHERE model = ?1 ORDER BY rowid",
    [Q_VERSION_INSERT] = "INSERT INTO model_versions(model, version, sha256, size, path, metadata,"
                         " created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_VERSION_NEXT] =
        "SELECT COALESCE(MAX(CAST(version AS INTEGER)), 0) + 1 FROM model_versions"
        " WHERE model = ?1 AND version NOT GLOB '*[^0-9]*' AND length(version) <= 15",
    [Q_VERSION_DELETE] = "DELETE FROM model_versions WHERE model = ?1 AND version = ?2"
                         " RETURNING sha256",
    [Q_FN_PUT] = "INSERT INTO functions(name, kind, model, config, updated)"
                 " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO UPDATE SET"
                 " kind = excluded.kind, model = excluded.model, config = excluded.config,"
                 " updated = excluded.updated",
    [Q_FN_GET] = "SELECT name, kind, model, config, updated FROM functions WHERE name = ?1",
    [Q_FN_LIST] = "SELECT name, kind, model, config, updated FROM functions ORDER BY name",
    [Q_FN_DELETE] = "DELETE FROM functions WHERE name = ?1",
    [Q_JOB_INSERT] = "INSERT INTO jobs(kind, state, progress, params, created, updated)"
                     " VALUES (?1, 'queued', 0, ?2, ?3, ?3)",
    [Q_JOB_START] = "UPDATE jobs SET state = 'running', started = ?2, updated = ?2"
                    " WHERE id = ?1 AND state = 'queued'",
    [Q_JOB_PROGRESS] = "UPDATE jobs SET progress = ?2, result = COALESCE(?3, result), updated = ?4"
                       " WHERE id = ?1 AND state = 'running'",
    [Q_JOB_FINISH] = "UPDATE jobs SET state = ?2, result = COALESCE(?3, result), error = ?4,"
                     " finished = ?5, updated = ?5,"
                     " progress = CASE WHEN ?2 = 'succeeded' THEN 1 ELSE progress END"
                     " WHERE id = ?1 AND state IN ('queued', 'running')",
    [Q_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    /* ?1: a state or NULL for all; newest first */
    [Q_JOB_LIST] = "SELECT " JOB_COLS " FROM jobs WHERE ?1 IS NULL OR state = ?1"
                   " ORDER BY id DESC LIMIT ?2",
    [Q_JOB_CANCEL] = "UPDATE jobs SET state = 'cancelled', error = ?2, finished = ?3, updated = ?3"
                     " WHERE id = ?1 AND state IN ('queued', 'running')",
};

sqlite3_stmt *store_cached(store *st, sqlite3_stmt **slot, const char *sql)
{
    if (!*slot &&
        sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        store_fail_db(st->db, "preparing a statement");
        *slot = NULL;
        return NULL;
    }
    sqlite3_reset(*slot);
    sqlite3_clear_bindings(*slot);
    return *slot;
}

/* The statement `q`, prepared on first use, reset and unbound. Caller holds
 * st->mu. NULL (with the error set) if it does not prepare. */
static sqlite3_stmt *query(store *st, int q)
{
    return store_cached(st, &st->stmts[q], queries[q]);
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

static void copy_col(char *dst, size_t cap, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static char *dup_col(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? strdup((const char *)t) : NULL;
}

/* Runs a statement that returns no rows; STORE_OK or the mapped error. */
static store_status step_done(store *st, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return store_fail_db(st->db, what);
    return STORE_OK;
}

static store_status tx(store *st, const char *sql)
{
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) return store_fail_db(st->db, sql);
    return STORE_OK;
}

/* ---- open and close ----------------------------------------------------- */

void store_options_defaults(store_options *o)
{
    memset(o, 0, sizeof *o);
    o->data_dir = "./var";
    o->busy_timeout_ms = 5000;
    o->max_blob_bytes = (uint64_t)4 << 30;
    o->log_queue_capacity = 8192;
    o->log_batch_rows = 100;
    o->log_flush_ms = 200;
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    return p;
}

static store_status make_dir(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return STORE_OK;
        return store_fail(STORE_IO, "%s: not a directory", path);
    }
    return store_fail(STORE_IO, "%s: %s", path, strerror(errno));
}

/* Creates `dir` and its missing parents. */
static store_status make_dirs(const char *dir)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return store_fail(STORE_INVALID, "data dir path too long");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        store_status s = make_dir(buf);
        *p = '/';
        if (s != STORE_OK) return s;
    }
    return make_dir(buf);
}

store_status store_open_conn(store *st, sqlite3 **db, int synchronous_full)
{
    char *path = path_join(st->data_dir, "kiln.db");
    if (!path) return store_fail(STORE_NOMEM, "out of memory");
    int rc = sqlite3_open_v2(
        path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        store_status s =
            store_fail(STORE_DB, "%s: %s", path, *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        free(path);
        sqlite3_close(*db);
        *db = NULL;
        return s;
    }
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, st->opt.busy_timeout_ms);
    char *mode = NULL;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(*db, "PRAGMA journal_mode = WAL", -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        mode = dup_col(s, 0);
    sqlite3_finalize(s);
    store_status ret = STORE_OK;
    if (!mode || strcmp(mode, "wal") != 0) {
        ret = store_fail_db(*db, path);
        if (ret == STORE_EXISTS || ret == STORE_INVALID || ret == STORE_DB) ret = STORE_CORRUPT;
        if (mode) ret = store_fail(STORE_DB, "%s: journal mode is %s, WAL needed", path, mode);
    } else if (sqlite3_exec(*db,
                            synchronous_full ? "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"
                                             : "PRAGMA synchronous = NORMAL",
                            NULL, NULL, NULL) != SQLITE_OK) {
        ret = store_fail_db(*db, path);
    }
    free(mode);
    free(path);
    if (ret != STORE_OK) {
        sqlite3_close(*db);
        *db = NULL;
    }
    return ret;
}

static store_status integrity_check(store *st)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "PRAGMA integrity_check", -1, &s, NULL) != SQLITE_OK)
        return store_fail_db(st->db, "integrity_check");
    store_status ret = STORE_OK;
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        ret = store_fail_db(st->db, "integrity_check");
        if (ret != STORE_NOMEM && ret != STORE_IO) ret = STORE_CORRUPT;
    } else {
        const char *r = (const char *)sqlite3_column_text(s, 0);
        if (!r || strcmp(r, "ok") != 0)
            ret = store_fail(STORE_CORRUPT, "%s/kiln.db fails PRAGMA integrity_check: %s",
                             st->data_dir, r ? r : "(no result)");
    }
    sqlite3_finalize(s);
    return ret;
}

static store_status recover_jobs(store *st, store_open_report *rep)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE jobs SET state = 'failed', finished = ?1, updated = ?1,"
                           " error = 'interrupted: the server stopped while the job was running'"
                           " WHERE state = 'running'",
                           -1, &s, NULL) != SQLITE_OK)
        return store_fail_db(st->db, "recovering jobs");
    sqlite3_bind_int64(s, 1, store_now_ms());
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return store_fail_db(st->db, "recovering jobs");
    rep->jobs_failed = sqlite3_changes(st->db);
    return STORE_OK;
}

store_status store_open(const store_options *o, store **out, store_open_report *report)
{
    store_open_report dummy;
    if (!report) report = &dummy;
    memset(report, 0, sizeof *report);
    *out = NULL;
    if (!o || !o->data_dir || !o->data_dir[0])
        return store_fail(STORE_INVALID, "no data dir given");
    if (o->log_queue_capacity < 1 || o->log_batch_rows < 1 || o->log_flush_ms < 1 ||
        o->busy_timeout_ms < 0 || o->migrate_to < 0 || o->migrate_to > N_MIGRATIONS ||
        o->log_retention_rows < 0 || o->log_retention_days < 0)
        return store_fail(STORE_INVALID, "store options out of range");

    store *st = calloc(1, sizeof *st);
    if (!st) return store_fail(STORE_NOMEM, "out of memory");
    st->opt = *o;
    st->lock_fd = -1;
    pthread_mutex_init(&st->mu, NULL);
    store_status s = STORE_NOMEM;
    st->data_dir = strdup(o->data_dir);
    st->stmts = calloc(Q_COUNT, sizeof *st->stmts);
    if (!st->data_dir || !st->stmts) goto fail;
    st->opt.data_dir = st->data_dir;
    if ((s = make_dirs(st->data_dir)) != STORE_OK) goto fail;

    char *lock = path_join(st->data_dir, "lock");
    if (!lock) goto fail;
    st->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (st->lock_fd < 0 || flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        s = e == EWOULDBLOCK
                ? store_fail(STORE_BUSY, "%s: data dir is in use by another process", st->data_dir)
                : store_fail(STORE_IO, "%s: %s", lock, strerror(e));
        free(lock);
        goto fail;
    }
    free(lock);

    char *blobs = path_join(st->data_dir, "blobs");
    st->blob_dir = path_join(st->data_dir, "blobs/sha256");
    st->tmp_dir = path_join(st->data_dir, "blobs/tmp");
    s = STORE_NOMEM;
    if (!blobs || !st->blob_dir || !st->tmp_dir) {
        free(blobs);
        goto fail;
    }
    s = make_dir(blobs);
    free(blobs);
    if (s != STORE_OK || (s = make_dir(st->blob_dir)) != STORE_OK ||
        (s = make_dir(st->tmp_dir)) != STORE_OK)
        goto fail;

    if ((s = store_open_conn(st, &st->db, 1)) != STORE_OK) goto fail;
    if (!o->skip_integrity_check && (s = integrity_check(st)) != STORE_OK) goto fail;
    if ((s = migrate(st, o->migrate_to ? o->migrate_to : N_MIGRATIONS, report)) != STORE_OK)
        goto fail;
    if (st->schema >= STORE_SCHEMA_JOBS && (s = recover_jobs(st, report)) != STORE_OK) goto fail;
    if ((s = blob_gc_open(st, report)) != STORE_OK) goto fail;
    if (st->schema >= STORE_SCHEMA_INVOCATIONS && (s = store_log_start(st)) != STORE_OK) goto fail;
    *out = st;
    return STORE_OK;
fail:
    store_close(st);
    return s;
}

void store_close(store *st)
{
    if (!st) return;
    store_log_stop(st);
    if (st->stmts)
        for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(st->stmts[i]);
    free(st->stmts);
    for (int i = 0; i < 8; i++) sqlite3_finalize(st->extra[i]);
    if (st->db) sqlite3_close(st->db);
    if (st->lock_fd >= 0) close(st->lock_fd);
    pthread_mutex_destroy(&st->mu);
    free(st->pins);
    free(st->data_dir);
    free(st->blob_dir);
    free(st->tmp_dir);
    free(st);
}

/* ---- rows ---------------------------------------------------------------- */

/* Reads the current row of q into one element of a table's row struct. */
typedef void (*row_reader)(store *st, sqlite3_stmt *q, void *row);

/* Steps q (prepared and bound; the caller holds st->mu) for at most one
 * row and reads it into out: STORE_OK, STORE_NOT_FOUND without a message
 * (the caller names what is missing), or a database error about `what`. */
static store_status one_row(store *st, sqlite3_stmt *q, row_reader read, void *out,
                            const char *what)
{
    store_status s = STORE_OK;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        read(st, q, out);
    else if (rc == SQLITE_DONE)
        s = STORE_NOT_FOUND;
    else
        s = store_fail_db(st->db, what);
    sqlite3_reset(q);
    return s;
}

/* Steps q (prepared and bound; the caller holds st->mu) to its end, reading
 * every row into a growing array of `size`-byte elements at *out with *n
 * of them. On an error the rows read so far stay in *out and *n for the
 * caller to free. */
static store_status all_rows(store *st, sqlite3_stmt *q, row_reader read, size_t size, void **out,
                             int *n, const char *what)
{
    store_status s = STORE_OK;
    int cap = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            void *p = realloc(*out, (size_t)cap * size);
            if (!p) {
                s = store_fail(STORE_NOMEM, "out of memory");
                break;
            }
            *out = p;
        }
        read(st, q, (char *)*out + (size_t)(*n)++ * size);
    }
    if (s == STORE_OK && rc != SQLITE_DONE) s = store_fail_db(st->db, what);
    sqlite3_reset(q);
    return s;
}

/* ---- models ------------------------------------------------------------- */

static store_status check_name(const char *what, const char *name)
{
    if (store_name_valid(name)) return STORE_OK;
    return store_fail(STORE_INVALID,
                      "invalid %s name: use 1-%d of [A-Za-z0-9._-], not starting with '.'", what,
                      STORE_NAME_MAX);
}

static store_status check_version_name(const char *v)
{
    store_status s = check_name("version", v);
    if (s == STORE_OK && strcmp(v, "latest") == 0)
        return store_fail(STORE_INVALID, "\"latest\" is reserved and cannot name a version");
    return s;
}

store_status store_model_create(store *st, const char *name)
{
    store_status s = check_name("model", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_MODEL_INSERT);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, name);
        sqlite3_bind_int64(q, 2, store_now_ms());
        s = step_done(st, q, "creating a model");
        if (s == STORE_EXISTS) s = store_fail(STORE_EXISTS, "model %s exists", name);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

static void read_model(store *st, sqlite3_stmt *q, void *row)
{
    (void)st;
    store_model *m = row;
    copy_col(m->name, sizeof m->name, q, 0);
    m->created = sqlite3_column_int64(q, 1);
    m->n_versions = sqlite3_column_int(q, 2);
    copy_col(m->latest, sizeof m->latest, q, 3);
}

store_status store_model_get(store *st, const char *name, store_model *out)
{
    store_status s = check_name("model", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_MODEL_GET);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, name);
        s = one_row(st, q, read_model, out, "reading a model");
    }
    pthread_mutex_unlock(&st->mu);
    return s == STORE_NOT_FOUND ? store_fail(s, "no model %s", name) : s;
}

store_status store_model_list(store *st, store_model **out, int *n)
{
    *out = NULL;
    *n = 0;
    store_status s = STORE_OK;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_MODEL_LIST);
    if (!q)
        s = STORE_DB;
    else
        s = all_rows(st, q, read_model, sizeof **out, (void **)out, n, "listing models");
    pthread_mutex_unlock(&st->mu);
    if (s != STORE_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return s;
}

store_status store_model_delete(store *st, const char *name)
{
    store_status s = check_name("model", name);
    if (s != STORE_OK) return s;
    char(*shas)[STORE_SHA256_HEX + 1] = NULL;
    int n = 0, cap = 0;
    pthread_mutex_lock(&st->mu);
    if ((s = tx(st, "BEGIN IMMEDIATE")) != STORE_OK) goto out;
    sqlite3_stmt *q = query(st, Q_MODEL_BLOBS);
    if (!q) {
        s = STORE_DB;
        goto rollback;
    }
    bind_text(q, 1, name);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            void *p = realloc(shas, (size_t)cap * sizeof *shas);
            if (!p) {
                sqlite3_reset(q);
                s = store_fail(STORE_NOMEM, "out of memory");
                goto rollback;
            }
            shas = p;
        }
        copy_col(shas[n++], sizeof shas[0], q, 0);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        s = store_fail_db(st->db, "deleting a model");
        goto rollback;
    }
    if (!(q = query(st, Q_MODEL_DELETE))) {
        s = STORE_DB;
        goto rollback;
    }
    bind_text(q, 1, name);
    if ((s = step_done(st, q, "deleting a model")) != STORE_OK) goto rollback;
    if (sqlite3_changes(st->db) == 0) {
        s = store_fail(STORE_NOT_FOUND, "no model %s", name);
        goto rollback;
    }
    if ((s = tx(st, "COMMIT")) != STORE_OK) goto rollback;
    for (int i = 0; i < n; i++) blob_release_locked(st, shas[i]);
    goto out;
rollback:
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
out:
    pthread_mutex_unlock(&st->mu);
    free(shas);
    return s;
}

/* ---- versions ----------------------------------------------------------- */

void store_version_clear(store_version *v)
{
    if (!v) return;
    free(v->metadata);
    v->metadata = NULL;
}

void store_versions_free(store_version *v, int n)
{
    for (int i = 0; v && i < n; i++) store_version_clear(&v[i]);
    free(v);
}

static void read_version(store *st, sqlite3_stmt *q, void *row)
{
    store_version *v = row;
    memset(v, 0, sizeof *v);
    copy_col(v->model, sizeof v->model, q, 0);
    copy_col(v->version, sizeof v->version, q, 1);
    copy_col(v->sha256, sizeof v->sha256, q, 2);
    v->size = (uint64_t)sqlite3_column_int64(q, 3);
    v->metadata = dup_col(q, 4);
    v->created = sqlite3_column_int64(q, 5);
    blob_path_of(st, v->sha256, v->path, sizeof v->path);
}

/* Caller holds st->mu. */
static store_status version_get_locked(store *st, const char *model, const char *version,
                                       store_version *out)
{
    int latest = !version || strcmp(version, "latest") == 0;
    sqlite3_stmt *q = query(st, latest ? Q_VERSION_LATEST : Q_VERSION_GET);
    if (!q) return STORE_DB;
    bind_text(q, 1, model);
    if (!latest) bind_text(q, 2, version);
    store_status s = one_row(st, q, read_version, out, "reading a version");
    if (s == STORE_NOT_FOUND)
        s = latest ? store_fail(s, "model %s has no version", model)
                   : store_fail(s, "no version %s of model %s", version, model);
    return s;
}

store_status store_version_get(store *st, const char *model, const char *version,
                               store_version *out)
{
    store_status s = check_name("model", model);
    if (s == STORE_OK && version) s = check_name("version", version);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    s = version_get_locked(st, model, version, out);
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_version_list(store *st, const char *model, store_version **out, int *n)
{
    *out = NULL;
    *n = 0;
    store_status s = check_name("model", model);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_VERSION_LIST);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, model);
        s = all_rows(st, q, read_version, sizeof **out, (void **)out, n, "listing versions");
    }
    pthread_mutex_unlock(&st->mu);
    if (s != STORE_OK) {
        store_versions_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return s;
}

store_status store_version_add(store *st, const char *model, const char *version,
                               const char *sha256, const char *metadata, store_version *out)
{
    store_status s = check_name("model", model);
    if (s == STORE_OK && version) s = check_version_name(version);
    if (s == STORE_OK && !store_sha256_valid(sha256))
        s = store_fail(STORE_INVALID, "invalid sha256: 64 lowercase hex digits expected");
    if (s != STORE_OK) {
        if (store_sha256_valid(sha256)) store_blob_unpin(st, sha256);
        return s;
    }
    char path[PATH_MAX];
    char next[24];
    struct stat sb;
    blob_path_of(st, sha256, path, sizeof path);
    pthread_mutex_lock(&st->mu);
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        s = store_fail(STORE_NOT_FOUND, "blob %s is not in the store", sha256);
        goto out;
    }
    if ((s = tx(st, "BEGIN IMMEDIATE")) != STORE_OK) goto out;
    int64_t now = store_now_ms();
    sqlite3_stmt *q = query(st, Q_MODEL_INSERT_IGNORE);
    if (!q) goto rollback_db;
    bind_text(q, 1, model);
    sqlite3_bind_int64(q, 2, now);
    if ((s = step_done(st, q, "creating a model")) != STORE_OK) goto rollback;
    if (!version) {
        if (!(q = query(st, Q_VERSION_NEXT))) goto rollback_db;
        bind_text(q, 1, model);
        if (sqlite3_step(q) != SQLITE_ROW) {
            s = store_fail_db(st->db, "numbering a version");
            sqlite3_reset(q);
            goto rollback;
        }
        snprintf(next, sizeof next, "%lld", (long long)sqlite3_column_int64(q, 0));
        sqlite3_reset(q);
        version = next;
    }
    if (!(q = query(st, Q_VERSION_INSERT))) goto rollback_db;
    char rel[16 + 3 + STORE_SHA256_HEX + 1];
    snprintf(rel, sizeof rel, "blobs/sha256/%.2s/%s", sha256, sha256);
    bind_text(q, 1, model);
    bind_text(q, 2, version);
    bind_text(q, 3, sha256);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)sb.st_size);
    bind_text(q, 5, rel);
    bind_text(q, 6, metadata);
    sqlite3_bind_int64(q, 7, now);
    s = step_done(st, q, "adding a version");
    if (s == STORE_EXISTS)
        s = store_fail(s, "model %s version %s exists", model, version);
    else if (s == STORE_INVALID)
        s = store_fail(s, "version metadata is not valid JSON");
    if (s != STORE_OK) goto rollback;
    if ((s = tx(st, "COMMIT")) != STORE_OK) goto rollback;
    if (out) s = version_get_locked(st, model, version, out);
    goto out;
rollback_db:
    s = STORE_DB;
rollback:
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
out:
    blob_unpin_locked(st, sha256);
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_version_delete(store *st, const char *model, const char *version)
{
    store_status s = check_name("model", model);
    if (s == STORE_OK) s = check_version_name(version);
    if (s != STORE_OK) return s;
    char sha[STORE_SHA256_HEX + 1] = "";
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_VERSION_DELETE);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, model);
        bind_text(q, 2, version);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            copy_col(sha, sizeof sha, q, 0);
            rc = sqlite3_step(q);
        }
        if (rc != SQLITE_DONE)
            s = store_fail_db(st->db, "deleting a version");
        else if (!sha[0])
            s = store_fail(STORE_NOT_FOUND, "no version %s of model %s", version, model);
        sqlite3_reset(q);
        if (s == STORE_OK) blob_release_locked(st, sha);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_version_put(store *st, const char *model, const char *version, const void *data,
                               size_t len, const char *metadata, store_version *out)
{
    store_status s = check_name("model", model);
    if (s == STORE_OK && version) s = check_version_name(version);
    if (s != STORE_OK) return s;
    store_blob_writer *w;
    char sha[STORE_SHA256_HEX + 1];
    uint64_t size;
    if ((s = store_blob_begin(st, &w)) != STORE_OK) return s;
    if ((s = store_blob_write(w, data, len)) != STORE_OK) {
        store_blob_abort(w);
        return s;
    }
    if ((s = store_blob_commit(w, sha, &size)) != STORE_OK) return s;
    return store_version_add(st, model, version, sha, metadata, out);
}

/* ---- functions ---------------------------------------------------------- */

void store_functions_free(store_function *f, int n)
{
    for (int i = 0; f && i < n; i++) free(f[i].config);
    free(f);
}

static void read_function(store *st, sqlite3_stmt *q, void *row)
{
    (void)st;
    store_function *f = row;
    copy_col(f->name, sizeof f->name, q, 0);
    copy_col(f->kind, sizeof f->kind, q, 1);
    copy_col(f->model, sizeof f->model, q, 2);
    f->config = dup_col(q, 3);
    f->updated = sqlite3_column_int64(q, 4);
}

store_status store_function_put(store *st, const char *name, const char *kind, const char *model,
                                const char *config)
{
    store_status s = check_name("function", name);
    if (s == STORE_OK && model) s = check_name("model", model);
    if (s == STORE_OK && (!kind || !store_name_valid(kind) || strlen(kind) >= 16))
        s = store_fail(STORE_INVALID, "invalid function kind");
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_FN_PUT);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, name);
        bind_text(q, 2, kind);
        bind_text(q, 3, model);
        bind_text(q, 4, config);
        sqlite3_bind_int64(q, 5, store_now_ms());
        s = step_done(st, q, "storing a function");
        if (s == STORE_INVALID) s = store_fail(s, "function config is not valid JSON");
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_function_get(store *st, const char *name, store_function *out)
{
    store_status s = check_name("function", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_FN_GET);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, name);
        s = one_row(st, q, read_function, out, "reading a function");
    }
    pthread_mutex_unlock(&st->mu);
    return s == STORE_NOT_FOUND ? store_fail(s, "no function %s", name) : s;
}

store_status store_function_list(store *st, store_function **out, int *n)
{
    *out = NULL;
    *n = 0;
    store_status s = STORE_OK;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_FN_LIST);
    if (!q)
        s = STORE_DB;
    else
        s = all_rows(st, q, read_function, sizeof **out, (void **)out, n, "listing functions");
    pthread_mutex_unlock(&st->mu);
    if (s != STORE_OK) {
        store_functions_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return s;
}

store_status store_function_delete(store *st, const char *name)
{
    store_status s = check_name("function", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_FN_DELETE);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, name);
        s = step_done(st, q, "deleting a function");
        if (s == STORE_OK && sqlite3_changes(st->db) == 0)
            s = store_fail(STORE_NOT_FOUND, "no function %s", name);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

/* ---- jobs --------------------------------------------------------------- */

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
    copy_col(out->kind, sizeof out->kind, q, 1);
    const char *state = (const char *)sqlite3_column_text(q, 2);
    for (int i = 0; i < N_JOB_STATES; i++)
        if (state && strcmp(state, job_states[i]) == 0) out->state = (store_job_state)i;
    out->progress = sqlite3_column_double(q, 3);
    out->params = dup_col(q, 4);
    out->result = dup_col(q, 5);
    out->error = dup_col(q, 6);
    out->created = sqlite3_column_int64(q, 7);
    out->started = sqlite3_column_int64(q, 8);
    out->finished = sqlite3_column_int64(q, 9);
    out->updated = sqlite3_column_int64(q, 10);
}

static store_status job_get_locked(store *st, int64_t id, store_job *out)
{
    sqlite3_stmt *q = query(st, Q_JOB_GET);
    if (!q) return STORE_DB;
    sqlite3_bind_int64(q, 1, id);
    store_status s = one_row(st, q, job_from_row, out, "reading a job");
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
    store_status s = check_name("job kind", kind);
    if (s != STORE_OK) return s;
    if (st->schema < STORE_SCHEMA_JOBS) return store_fail(STORE_DB, "schema has no jobs");
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = query(st, Q_JOB_INSERT);
    if (!q)
        s = STORE_DB;
    else {
        bind_text(q, 1, kind);
        bind_text(q, 2, params);
        sqlite3_bind_int64(q, 3, store_now_ms());
        s = step_done(st, q, "creating a job");
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
    sqlite3_stmt *q = query(st, Q_JOB_START);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, store_now_ms());
        s = step_done(st, q, "starting a job");
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
    sqlite3_stmt *q = query(st, Q_JOB_PROGRESS);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_double(q, 2, progress);
        bind_text(q, 3, result);
        sqlite3_bind_int64(q, 4, store_now_ms());
        s = step_done(st, q, "updating a job");
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
    sqlite3_stmt *q = query(st, Q_JOB_FINISH);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        bind_text(q, 2, error ? "failed" : "succeeded");
        bind_text(q, 3, result);
        bind_text(q, 4, error);
        sqlite3_bind_int64(q, 5, store_now_ms());
        s = step_done(st, q, "finishing a job");
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
    sqlite3_stmt *q = query(st, Q_JOB_CANCEL);
    if (!q)
        s = STORE_DB;
    else {
        sqlite3_bind_int64(q, 1, id);
        bind_text(q, 2, reason);
        sqlite3_bind_int64(q, 3, store_now_ms());
        s = step_done(st, q, "cancelling a job");
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
    sqlite3_stmt *q = query(st, Q_JOB_LIST);
    if (!q) {
        pthread_mutex_unlock(&st->mu);
        return STORE_DB;
    }
    bind_text(q, 1, state >= 0 ? job_states[state] : NULL);
    sqlite3_bind_int(q, 2, limit);
    s = all_rows(st, q, job_from_row, sizeof **out, (void **)out, n, "listing jobs");
    pthread_mutex_unlock(&st->mu);
    if (s != STORE_OK) {
        store_jobs_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return s;
}
