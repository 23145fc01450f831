/*
 * The store's model registry: models, their versions (each a blob in the
 * content-addressed directory, see blob.c) and the functions table. The
 * statements are in store.c.
 */
#include "store_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static store_status check_version_name(const char *v)
{
    store_status s = store_check_name("version", v);
    if (s == STORE_OK && strcmp(v, "latest") == 0)
        return store_fail(STORE_INVALID, "\"latest\" is reserved and cannot name a version");
    return s;
}

store_status store_model_create(store *st, const char *name)
{
    store_status s = store_check_name("model", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_MODEL_INSERT);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, name);
        sqlite3_bind_int64(q, 2, store_now_ms());
        s = store_step_done(st, q, "creating a model");
        if (s == STORE_EXISTS) s = store_fail(STORE_EXISTS, "model %s exists", name);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

/* metadata: NULL, or text that must be a JSON object (SQLite's json_valid
 * also accepts arrays and scalars). */
static store_status check_metadata(const char *metadata)
{
    if (!metadata) return STORE_OK;
    size_t n = strlen(metadata);
    if (n > STORE_METADATA_MAX)
        return store_fail(STORE_TOO_LARGE, "model metadata is %zu bytes; the limit is %d", n,
                          STORE_METADATA_MAX);
    const char *p = metadata;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p != '{') return store_fail(STORE_INVALID, "model metadata must be a JSON object");
    return STORE_OK;
}

store_status store_model_put(store *st, const char *name, const char *metadata, int must_create,
                             int *created)
{
    store_status s = store_check_name("model", name);
    if (s == STORE_OK) s = check_metadata(metadata);
    if (s != STORE_OK) return s;
    if (st->schema < STORE_SCHEMA_MODEL_META)
        return store_fail(STORE_DB, "schema has no model metadata");
    pthread_mutex_lock(&st->mu);
    int existed = 0;
    sqlite3_stmt *q = store_query(st, Q_MODEL_META);
    if (!q) {
        s = STORE_DB;
    } else {
        store_bind_text(q, 1, name);
        int rc = sqlite3_step(q);
        existed = rc == SQLITE_ROW;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) s = store_fail_db(st->db, "reading a model");
        sqlite3_reset(q);
    }
    if (s == STORE_OK && must_create && existed)
        s = store_fail(STORE_EXISTS, "model %s exists", name);
    if (s == STORE_OK) {
        q = store_query(st, must_create ? Q_MODEL_INSERT_META : Q_MODEL_UPSERT_META);
        if (!q) {
            s = STORE_DB;
        } else {
            store_bind_text(q, 1, name);
            sqlite3_bind_int64(q, 2, store_now_ms());
            store_bind_text(q, 3, metadata);
            s = store_step_done(st, q, "writing a model");
            if (s == STORE_EXISTS) s = store_fail(STORE_EXISTS, "model %s exists", name);
            if (s == STORE_INVALID) s = store_fail(STORE_INVALID, "model metadata is not JSON");
        }
    }
    pthread_mutex_unlock(&st->mu);
    if (s == STORE_OK && created) *created = !existed;
    return s;
}

store_status store_model_metadata(store *st, const char *name, char **metadata)
{
    *metadata = NULL;
    store_status s = store_check_name("model", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = st->schema >= STORE_SCHEMA_MODEL_META ? store_query(st, Q_MODEL_META) : NULL;
    if (st->schema < STORE_SCHEMA_MODEL_META) {
        s = STORE_OK; /* an old schema: no model has metadata */
    } else if (!q) {
        s = STORE_DB;
    } else {
        store_bind_text(q, 1, name);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            *metadata = store_dup_col(q, 0);
        else if (rc == SQLITE_DONE)
            s = store_fail(STORE_NOT_FOUND, "no model %s", name);
        else
            s = store_fail_db(st->db, "reading a model");
        sqlite3_reset(q);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

static void read_model(store *st, sqlite3_stmt *q, void *row)
{
    (void)st;
    store_model *m = row;
    store_copy_col(m->name, sizeof m->name, q, 0);
    m->created = sqlite3_column_int64(q, 1);
    m->n_versions = sqlite3_column_int(q, 2);
    store_copy_col(m->latest, sizeof m->latest, q, 3);
}

store_status store_model_get(store *st, const char *name, store_model *out)
{
    store_status s = store_check_name("model", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_MODEL_GET);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, name);
        s = store_one_row(st, q, read_model, out, "reading a model");
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
    sqlite3_stmt *q = store_query(st, Q_MODEL_LIST);
    if (!q)
        s = STORE_DB;
    else
        s = store_all_rows(st, q, read_model, sizeof **out, (void **)out, n, "listing models");
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
    store_status s = store_check_name("model", name);
    if (s != STORE_OK) return s;
    char(*shas)[STORE_SHA256_HEX + 1] = NULL;
    int n = 0, cap = 0;
    pthread_mutex_lock(&st->mu);
    if ((s = store_tx(st, "BEGIN IMMEDIATE")) != STORE_OK) goto out;
    sqlite3_stmt *q = store_query(st, Q_MODEL_BLOBS);
    if (!q) {
        s = STORE_DB;
        goto rollback;
    }
    store_bind_text(q, 1, name);
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
        store_copy_col(shas[n++], sizeof shas[0], q, 0);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_DONE) {
        s = store_fail_db(st->db, "deleting a model");
        goto rollback;
    }
    if (!(q = store_query(st, Q_MODEL_DELETE))) {
        s = STORE_DB;
        goto rollback;
    }
    store_bind_text(q, 1, name);
    if ((s = store_step_done(st, q, "deleting a model")) != STORE_OK) goto rollback;
    if (sqlite3_changes(st->db) == 0) {
        s = store_fail(STORE_NOT_FOUND, "no model %s", name);
        goto rollback;
    }
    if ((s = store_tx(st, "COMMIT")) != STORE_OK) goto rollback;
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
    store_copy_col(v->model, sizeof v->model, q, 0);
    store_copy_col(v->version, sizeof v->version, q, 1);
    store_copy_col(v->sha256, sizeof v->sha256, q, 2);
    v->size = (uint64_t)sqlite3_column_int64(q, 3);
    v->metadata = store_dup_col(q, 4);
    v->created = sqlite3_column_int64(q, 5);
    blob_path_of(st, v->sha256, v->path, sizeof v->path);
}

/* Caller holds st->mu. */
static store_status version_get_locked(store *st, const char *model, const char *version,
                                       store_version *out)
{
    int latest = !version || strcmp(version, "latest") == 0;
    sqlite3_stmt *q = store_query(st, latest ? Q_VERSION_LATEST : Q_VERSION_GET);
    if (!q) return STORE_DB;
    store_bind_text(q, 1, model);
    if (!latest) store_bind_text(q, 2, version);
    store_status s = store_one_row(st, q, read_version, out, "reading a version");
    if (s == STORE_NOT_FOUND)
        s = latest ? store_fail(s, "model %s has no version", model)
                   : store_fail(s, "no version %s of model %s", version, model);
    return s;
}

store_status store_version_get(store *st, const char *model, const char *version,
                               store_version *out)
{
    store_status s = store_check_name("model", model);
    if (s == STORE_OK && version) s = store_check_name("version", version);
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
    store_status s = store_check_name("model", model);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_VERSION_LIST);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, model);
        s = store_all_rows(st, q, read_version, sizeof **out, (void **)out, n, "listing versions");
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
    store_status s = store_check_name("model", model);
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
    if ((s = store_tx(st, "BEGIN IMMEDIATE")) != STORE_OK) goto out;
    int64_t now = store_now_ms();
    sqlite3_stmt *q = store_query(st, Q_MODEL_INSERT_IGNORE);
    if (!q) goto rollback_db;
    store_bind_text(q, 1, model);
    sqlite3_bind_int64(q, 2, now);
    if ((s = store_step_done(st, q, "creating a model")) != STORE_OK) goto rollback;
    if (!version) {
        if (!(q = store_query(st, Q_VERSION_NEXT))) goto rollback_db;
        store_bind_text(q, 1, model);
        if (sqlite3_step(q) != SQLITE_ROW) {
            s = store_fail_db(st->db, "numbering a version");
            sqlite3_reset(q);
            goto rollback;
        }
        snprintf(next, sizeof next, "%lld", (long long)sqlite3_column_int64(q, 0));
        sqlite3_reset(q);
        version = next;
    }
    if (!(q = store_query(st, Q_VERSION_INSERT))) goto rollback_db;
    char rel[16 + 3 + STORE_SHA256_HEX + 1];
    snprintf(rel, sizeof rel, "blobs/sha256/%.2s/%s", sha256, sha256);
    store_bind_text(q, 1, model);
    store_bind_text(q, 2, version);
    store_bind_text(q, 3, sha256);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)sb.st_size);
    store_bind_text(q, 5, rel);
    store_bind_text(q, 6, metadata);
    sqlite3_bind_int64(q, 7, now);
    s = store_step_done(st, q, "adding a version");
    if (s == STORE_EXISTS)
        s = store_fail(s, "model %s version %s exists", model, version);
    else if (s == STORE_INVALID)
        s = store_fail(s, "version metadata is not valid JSON");
    if (s != STORE_OK) goto rollback;
    if ((s = store_tx(st, "COMMIT")) != STORE_OK) goto rollback;
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
    store_status s = store_check_name("model", model);
    if (s == STORE_OK) s = check_version_name(version);
    if (s != STORE_OK) return s;
    char sha[STORE_SHA256_HEX + 1] = "";
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_VERSION_DELETE);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, model);
        store_bind_text(q, 2, version);
        int rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            store_copy_col(sha, sizeof sha, q, 0);
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
    store_status s = store_check_name("model", model);
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
    store_copy_col(f->name, sizeof f->name, q, 0);
    store_copy_col(f->kind, sizeof f->kind, q, 1);
    store_copy_col(f->model, sizeof f->model, q, 2);
    f->config = store_dup_col(q, 3);
    f->updated = sqlite3_column_int64(q, 4);
}

store_status store_function_put(store *st, const char *name, const char *kind, const char *model,
                                const char *config)
{
    store_status s = store_check_name("function", name);
    if (s == STORE_OK && model) s = store_check_name("model", model);
    if (s == STORE_OK && (!kind || !store_name_valid(kind) || strlen(kind) >= 16))
        s = store_fail(STORE_INVALID, "invalid function kind");
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_FN_PUT);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, name);
        store_bind_text(q, 2, kind);
        store_bind_text(q, 3, model);
        store_bind_text(q, 4, config);
        sqlite3_bind_int64(q, 5, store_now_ms());
        s = store_step_done(st, q, "storing a function");
        if (s == STORE_INVALID) s = store_fail(s, "function config is not valid JSON");
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}

store_status store_function_get(store *st, const char *name, store_function *out)
{
    store_status s = store_check_name("function", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_FN_GET);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, name);
        s = store_one_row(st, q, read_function, out, "reading a function");
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
    sqlite3_stmt *q = store_query(st, Q_FN_LIST);
    if (!q)
        s = STORE_DB;
    else
        s = store_all_rows(st, q, read_function, sizeof **out, (void **)out, n,
                           "listing functions");
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
    store_status s = store_check_name("function", name);
    if (s != STORE_OK) return s;
    pthread_mutex_lock(&st->mu);
    sqlite3_stmt *q = store_query(st, Q_FN_DELETE);
    if (!q)
        s = STORE_DB;
    else {
        store_bind_text(q, 1, name);
        s = store_step_done(st, q, "deleting a function");
        if (s == STORE_OK && sqlite3_changes(st->db) == 0)
            s = store_fail(STORE_NOT_FOUND, "no function %s", name);
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}
