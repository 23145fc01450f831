/*
 * The store's database: open, checks, migrations, crash recovery, every SQL
 * statement of the tables (the rows themselves are read and written in
 * store_models.c and store_jobs.c), and the helpers those share. Every
 * statement is prepared once (lazily) and every outside string is bound as
 * a parameter.
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

store_status store_check_name(const char *what, const char *name)
{
    if (store_name_valid(name)) return STORE_OK;
    return store_fail(STORE_INVALID,
                      "invalid %s name: use 1-%d of [A-Za-z0-9._-], not starting with '.'", what,
                      STORE_NAME_MAX);
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
    /* 6: a model's own metadata (a JSON object; versions have theirs) */
    "ALTER TABLE models ADD COLUMN metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata));",
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
    [Q_MODEL_INSERT_META] = "INSERT INTO models(name, created, metadata) VALUES (?1, ?2, ?3)",
    [Q_MODEL_UPSERT_META] = "INSERT INTO models(name, created, metadata) VALUES (?1, ?2, ?3)"
                            " ON CONFLICT(name) DO UPDATE SET metadata = excluded.metadata",
    [Q_MODEL_META] = "SELECT metadata FROM models WHERE name = ?1",
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
sqlite3_stmt *store_query(store *st, int q)
{
    return store_cached(st, &st->stmts[q], queries[q]);
}

void store_bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, i);
}

void store_copy_col(char *dst, size_t cap, sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

char *store_dup_col(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? strdup((const char *)t) : NULL;
}

/* Runs a statement that returns no rows; STORE_OK or the mapped error. */
store_status store_step_done(store *st, sqlite3_stmt *s, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return store_fail_db(st->db, what);
    return STORE_OK;
}

store_status store_tx(store *st, const char *sql)
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
    o->log_queue_capacity = 65536;
    o->log_batch_rows = 1000;
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

/* Before SQLite's first use in the process: no memory statistics. With
 * them on (SQLite's default), every allocation takes a global mutex; the
 * invocation log's writer spent a tenth of its time locking and unlocking
 * it. kiln reads none of them. If this process used SQLite before the
 * store, it is initialised already and this is a no-op. */
static pthread_once_t sqlite_configured = PTHREAD_ONCE_INIT;
static void sqlite_configure(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

store_status store_open_conn(store *st, sqlite3 **db, int synchronous_full)
{
    pthread_once(&sqlite_configured, sqlite_configure);
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
        mode = store_dup_col(s, 0);
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

/* Steps q (prepared and bound; the caller holds st->mu) for at most one
 * row and reads it into out: STORE_OK, STORE_NOT_FOUND without a message
 * (the caller names what is missing), or a database error about `what`. */
store_status store_one_row(store *st, sqlite3_stmt *q, store_row_reader read, void *out,
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
store_status store_all_rows(store *st, sqlite3_stmt *q, store_row_reader read, size_t size,
                            void **out, int *n, const char *what)
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
