/* The store: migrations, blobs, version visibility, jobs and their crash
 * recovery, functions, hostile names and SQL metacharacters, the token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "sha256.h"
#include "store.h"
#include "store_tmpdir.h"

typedef struct fixture {
    char dir[256];
    store_options opt;
    store *st;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tmpdir_make(f->dir, sizeof f->dir);
    store_options_defaults(&f->opt);
    f->opt.data_dir = f->dir;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->st);
    tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static void open_ok(fixture *f, store_open_report *rep)
{
    store_status s = store_open(&f->opt, &f->st, rep);
    if (s != STORE_OK) fail_msg("store_open: %s: %s", store_status_name(s), store_last_error());
}

static void reopen(fixture *f, store_open_report *rep)
{
    store_close(f->st);
    f->st = NULL;
    open_ok(f, rep);
}

static void path_in(const fixture *f, const char *rel, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", f->dir, rel);
}

/* Runs SQL on the database file through a separate connection. */
static void raw_sql(const fixture *f, const char *sql)
{
    char path[512];
    path_in(f, "kiln.db", path, sizeof path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) fail_msg("%s: %s", sql, err);
    sqlite3_close(db);
}

static int raw_count(const fixture *f, const char *sql)
{
    char path[512];
    path_in(f, "kiln.db", path, sizeof path);
    sqlite3 *db;
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    int n = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return n;
}

/* ---- migrations ---------------------------------------------------------- */

static void migrations_from_empty_db_and_reopen(void **state)
{
    fixture *f = *state;
    store_open_report rep;
    open_ok(f, &rep);
    assert_int_equal(rep.schema_from, 0);
    assert_int_equal(rep.schema_to, store_schema_latest());
    assert_true(store_schema_latest() >= 3);
    assert_int_equal(store_schema_version(f->st), store_schema_latest());
    assert_int_equal(store_model_create(f->st, "mnist"), STORE_OK);
    reopen(f, &rep);
    assert_int_equal(rep.schema_from, store_schema_latest());
    assert_int_equal(rep.schema_to, store_schema_latest());
    store_model m;
    assert_int_equal(store_model_get(f->st, "mnist", &m), STORE_OK);
    assert_string_equal(m.name, "mnist");
    assert_int_equal(m.n_versions, 0);
    store_close(f->st);
    f->st = NULL;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version");
    assert_int_equal(raw_count(f, sql), store_schema_latest());
    /* WAL is a property of the file: it persists. */
    assert_int_equal(raw_count(f, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
}

static void migrations_apply_one_by_one(void **state)
{
    fixture *f = *state;
    store_open_report rep;
    f->opt.migrate_to = 1;
    open_ok(f, &rep);
    assert_int_equal(rep.schema_to, 1);
    assert_int_equal(store_model_create(f->st, "old"), STORE_OK);
    store_close(f->st);
    f->st = NULL;
    assert_int_equal(raw_count(f, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'"), 0);
    f->opt.migrate_to = 0;
    open_ok(f, &rep);
    assert_int_equal(rep.schema_from, 1);
    assert_int_equal(rep.schema_to, store_schema_latest());
    store_model m;
    assert_int_equal(store_model_get(f->st, "old", &m), STORE_OK);
    int64_t id;
    assert_int_equal(store_job_create(f->st, "train", NULL, &id), STORE_OK);
}

static void model_metadata_is_created_replaced_and_checked(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    int created = -1;
    char *meta;
    assert_int_equal(store_model_put(f->st, "m", "{\"task\": \"digits\"}", 1, &created), STORE_OK);
    assert_int_equal(created, 1);
    assert_int_equal(store_model_put(f->st, "m", "{}", 1, NULL), STORE_EXISTS);
    assert_int_equal(store_model_metadata(f->st, "m", &meta), STORE_OK);
    assert_string_equal(meta, "{\"task\": \"digits\"}");
    free(meta);
    /* replace, keeping the model and its versions */
    assert_int_equal(store_version_put(f->st, "m", NULL, "w", 1, NULL, NULL), STORE_OK);
    assert_int_equal(store_model_put(f->st, "m", "{\"owner\": \"lab\"}", 0, &created), STORE_OK);
    assert_int_equal(created, 0);
    assert_int_equal(store_model_metadata(f->st, "m", &meta), STORE_OK);
    assert_string_equal(meta, "{\"owner\": \"lab\"}");
    free(meta);
    store_model m;
    assert_int_equal(store_model_get(f->st, "m", &m), STORE_OK);
    assert_int_equal(m.n_versions, 1);
    /* upsert creates; NULL clears; a model without metadata reads NULL */
    assert_int_equal(store_model_put(f->st, "n", NULL, 0, &created), STORE_OK);
    assert_int_equal(created, 1);
    assert_int_equal(store_model_metadata(f->st, "n", &meta), STORE_OK);
    assert_null(meta);
    assert_int_equal(store_model_create(f->st, "plain"), STORE_OK);
    assert_int_equal(store_model_metadata(f->st, "plain", &meta), STORE_OK);
    assert_null(meta);
    assert_int_equal(store_model_metadata(f->st, "nope", &meta), STORE_NOT_FOUND);
    /* not an object, not JSON, too large, a bad name */
    assert_int_equal(store_model_put(f->st, "m", "[1, 2]", 0, NULL), STORE_INVALID);
    assert_int_equal(store_model_put(f->st, "m", "{not json", 0, NULL), STORE_INVALID);
    char *big = malloc(STORE_METADATA_MAX + 16);
    assert_non_null(big);
    memset(big, ' ', STORE_METADATA_MAX + 15);
    big[0] = '{';
    big[STORE_METADATA_MAX + 14] = '}';
    big[STORE_METADATA_MAX + 15] = 0;
    assert_int_equal(store_model_put(f->st, "m", big, 0, NULL), STORE_TOO_LARGE);
    free(big);
    assert_int_equal(store_model_put(f->st, "../m", "{}", 0, NULL), STORE_INVALID);
    assert_int_equal(store_model_metadata(f->st, "m", &meta), STORE_OK); /* unchanged */
    assert_string_equal(meta, "{\"owner\": \"lab\"}");
    free(meta);
    reopen(f, NULL);
    assert_int_equal(store_model_metadata(f->st, "m", &meta), STORE_OK);
    assert_string_equal(meta, "{\"owner\": \"lab\"}");
    free(meta);
}

static void newer_schema_is_refused(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    store_close(f->st);
    f->st = NULL;
    raw_sql(f, "PRAGMA user_version = 99");
    assert_int_equal(store_open(&f->opt, &f->st, NULL), STORE_CORRUPT);
    assert_null(f->st);
    assert_non_null(strstr(store_last_error(), "newer"));
}

static void garbage_database_is_refused_clearly(void **state)
{
    fixture *f = *state;
    char path[512];
    path_in(f, "kiln.db", path, sizeof path);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 4096; i++) fputc((i * 37) & 0xff, fp);
    fclose(fp);
    assert_int_equal(store_open(&f->opt, &f->st, NULL), STORE_CORRUPT);
    assert_null(f->st);
    assert_non_null(strstr(store_last_error(), "kiln.db"));
}

static void damaged_page_fails_integrity_check(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    for (int i = 0; i < 200; i++) {
        char name[32];
        snprintf(name, sizeof name, "model-%03d", i);
        assert_int_equal(store_model_create(f->st, name), STORE_OK);
    }
    store_close(f->st);
    f->st = NULL;
    raw_sql(f, "PRAGMA wal_checkpoint(TRUNCATE)");
    /* Scribble over every page but the first (the schema): b-tree pages. */
    char path[512];
    path_in(f, "kiln.db", path, sizeof path);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_true(sb.st_size > 2 * 4096);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    for (off_t off = 4096; off < sb.st_size; off += 4096)
        assert_int_equal(pwrite(fd, junk, sizeof junk, off), (ssize_t)sizeof junk);
    close(fd);
    assert_int_equal(store_open(&f->opt, &f->st, NULL), STORE_CORRUPT);
    assert_null(f->st);
    assert_true(strlen(store_last_error()) > 0);
}

static void second_opener_of_a_data_dir_is_busy(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    store *other = NULL;
    assert_int_equal(store_open(&f->opt, &other, NULL), STORE_BUSY);
    assert_null(other);
    assert_non_null(strstr(store_last_error(), "in use"));
}

/* ---- blobs and versions -------------------------------------------------- */

static void blob_is_content_addressed_and_deduplicated(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    const char data[] = "weights of a small model";
    char want[SHA256_HEX_LEN + 1];
    sha256_hex(data, sizeof data, want);

    store_version v1, v2;
    assert_int_equal(store_version_put(f->st, "m", "1", data, sizeof data, NULL, &v1), STORE_OK);
    assert_string_equal(v1.sha256, want);
    assert_int_equal(v1.size, sizeof data);
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "blobs/sha256/%.2s/%s", want, want);
    path_in(f, rel, path, sizeof path);
    assert_string_equal(v1.path, path);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, (off_t)sizeof data);
    assert_int_equal(sb.st_mode & 0777, 0644);
    FILE *fp = fopen(path, "rb");
    char back[64] = {0};
    assert_int_equal(fread(back, 1, sizeof back, fp), sizeof data);
    fclose(fp);
    assert_memory_equal(back, data, sizeof data);

    /* Same content under another name: one file. */
    assert_int_equal(store_version_put(f->st, "other", NULL, data, sizeof data, NULL, &v2),
                     STORE_OK);
    assert_string_equal(v2.sha256, want);
    char sub[512];
    snprintf(rel, sizeof rel, "blobs/sha256/%.2s", want);
    path_in(f, rel, sub, sizeof sub);
    assert_int_equal(tmpdir_count(sub), 1);
    assert_int_equal(store_blob_verify(f->st, want), STORE_OK);

    /* Removing one user keeps the blob; removing the last removes it. */
    assert_int_equal(store_version_delete(f->st, "m", "1"), STORE_OK);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(store_model_delete(f->st, "other"), STORE_OK);
    assert_int_equal(stat(path, &sb), -1);
    assert_int_equal(store_blob_verify(f->st, want), STORE_NOT_FOUND);
    store_version_clear(&v1);
    store_version_clear(&v2);
    char tmp[512];
    path_in(f, "blobs/tmp", tmp, sizeof tmp);
    assert_int_equal(tmpdir_count(tmp), 0);
}

static void changed_blob_fails_verify(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    store_version v;
    assert_int_equal(store_version_put(f->st, "m", "1", "abcdef", 6, NULL, &v), STORE_OK);
    FILE *fp = fopen(v.path, "r+b");
    fputc('X', fp);
    fclose(fp);
    assert_int_equal(store_blob_verify(f->st, v.sha256), STORE_CORRUPT);
    store_version_clear(&v);
    assert_int_equal(store_blob_verify(f->st, "../../etc/passwd"), STORE_INVALID);
}

static void leftover_temp_files_and_orphan_blobs_are_removed_on_open(void **state)
{
    fixture *f = *state;
    store_open_report rep;
    open_ok(f, &rep);
    store_version kept;
    assert_int_equal(store_version_put(f->st, "m", "1", "keep me", 7, NULL, &kept), STORE_OK);
    store_close(f->st);
    f->st = NULL;

    /* A crashed writer's partial temp file, and a blob no row names. */
    char path[512];
    path_in(f, "blobs/tmp/blob-AbC123", path, sizeof path);
    FILE *fp = fopen(path, "wb");
    fputs("half a mod", fp);
    fclose(fp);
    const char orphan[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char dir[512];
    path_in(f, "blobs/sha256/01", dir, sizeof dir);
    mkdir(dir, 0755);
    char orphan_path[700];
    snprintf(orphan_path, sizeof orphan_path, "%s/%s", dir, orphan);
    fp = fopen(orphan_path, "wb");
    fputs("nobody", fp);
    fclose(fp);

    open_ok(f, &rep);
    assert_int_equal(rep.temp_files_removed, 1);
    assert_int_equal(rep.blobs_removed, 1);
    assert_int_equal(rep.versions_missing_blob, 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), -1);
    assert_int_equal(stat(orphan_path, &sb), -1);
    assert_int_equal(stat(kept.path, &sb), 0);
    assert_int_equal(store_blob_verify(f->st, kept.sha256), STORE_OK);
    store_version_clear(&kept);
}

static void version_is_visible_only_once_registered(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    store_blob_writer *w;
    store_version v;
    store_version *list;
    int n;

    /* Written but not committed: nothing visible. */
    assert_int_equal(store_blob_begin(f->st, &w), STORE_OK);
    assert_int_equal(store_blob_write(w, "part", 4), STORE_OK);
    assert_int_equal(store_version_get(f->st, "m", NULL, &v), STORE_NOT_FOUND);
    assert_int_equal(store_blob_write(w, "ial", 3), STORE_OK);
    char sha[65];
    uint64_t size;
    assert_int_equal(store_blob_commit(w, sha, &size), STORE_OK);
    assert_int_equal(size, 7);
    /* Committed blob, no row yet: still nothing. */
    assert_int_equal(store_version_list(f->st, "m", &list, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_version_add(f->st, "m", "7", sha, "{\"acc\": 0.98}", &v), STORE_OK);
    assert_string_equal(v.version, "7");
    assert_string_equal(v.metadata, "{\"acc\": 0.98}");
    store_version_clear(&v);
    assert_int_equal(store_version_get(f->st, "m", "latest", &v), STORE_OK);
    assert_string_equal(v.sha256, sha);
    store_version_clear(&v);

    /* A row may not name a blob that is not there. */
    const char *absent = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    assert_int_equal(store_version_add(f->st, "m", "8", absent, NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_version_get(f->st, "m", "8", &v), STORE_NOT_FOUND);

    /* Aborted writer: its temp file is gone. */
    assert_int_equal(store_blob_begin(f->st, &w), STORE_OK);
    assert_int_equal(store_blob_write(w, "xyz", 3), STORE_OK);
    store_blob_abort(w);
    char tmp[512];
    path_in(f, "blobs/tmp", tmp, sizeof tmp);
    assert_int_equal(tmpdir_count(tmp), 0);

    /* Committed but never registered (a crash between the two): removed on open. */
    assert_int_equal(store_blob_begin(f->st, &w), STORE_OK);
    assert_int_equal(store_blob_write(w, "never named", 11), STORE_OK);
    assert_int_equal(store_blob_commit(w, sha, &size), STORE_OK);
    store_open_report rep;
    reopen(f, &rep);
    assert_int_equal(rep.blobs_removed, 1);
    assert_int_equal(store_blob_verify(f->st, sha), STORE_NOT_FOUND);
    assert_int_equal(store_version_list(f->st, "m", &list, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_versions_free(list, n);
}

static void versions_number_themselves_and_latest_is_newest(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    store_version v;
    assert_int_equal(store_version_put(f->st, "m", NULL, "a", 1, NULL, &v), STORE_OK);
    assert_string_equal(v.version, "1");
    store_version_clear(&v);
    assert_int_equal(store_version_put(f->st, "m", NULL, "b", 1, NULL, &v), STORE_OK);
    assert_string_equal(v.version, "2");
    store_version_clear(&v);
    assert_int_equal(store_version_put(f->st, "m", "beta-3", "c", 1, NULL, NULL), STORE_OK);
    assert_int_equal(store_version_get(f->st, "m", NULL, &v), STORE_OK);
    assert_string_equal(v.version, "beta-3");
    store_version_clear(&v);
    assert_int_equal(store_version_put(f->st, "m", NULL, "d", 1, NULL, &v), STORE_OK);
    assert_string_equal(v.version, "3");
    store_version_clear(&v);
    assert_int_equal(store_version_put(f->st, "m", "2", "e", 1, NULL, NULL), STORE_EXISTS);
    assert_int_equal(store_version_put(f->st, "m", "latest", "e", 1, NULL, NULL), STORE_INVALID);
    store_model m;
    assert_int_equal(store_model_get(f->st, "m", &m), STORE_OK);
    assert_int_equal(m.n_versions, 4);
    assert_string_equal(m.latest, "3");
    store_model *models;
    int n;
    assert_int_equal(store_model_create(f->st, "a-first"), STORE_OK);
    assert_int_equal(store_model_create(f->st, "a-first"), STORE_EXISTS);
    assert_int_equal(store_model_list(f->st, &models, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(models[0].name, "a-first");
    assert_string_equal(models[1].name, "m");
    free(models);
    /* Deleting the model takes its versions with it. */
    assert_int_equal(store_model_delete(f->st, "m"), STORE_OK);
    assert_int_equal(store_version_get(f->st, "m", "1", &v), STORE_NOT_FOUND);
    assert_int_equal(store_model_delete(f->st, "m"), STORE_NOT_FOUND);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM model_versions"), 0);
}

static void blob_over_the_limit_is_refused(void **state)
{
    fixture *f = *state;
    f->opt.max_blob_bytes = 10;
    open_ok(f, NULL);
    assert_int_equal(store_version_put(f->st, "m", "1", "0123456789", 10, NULL, NULL), STORE_OK);
    assert_int_equal(store_version_put(f->st, "m", "2", "0123456789A", 11, NULL, NULL),
                     STORE_TOO_LARGE);
    store_blob_writer *w;
    assert_int_equal(store_blob_begin(f->st, &w), STORE_OK);
    assert_int_equal(store_blob_write(w, "012345", 6), STORE_OK);
    assert_int_equal(store_blob_write(w, "012345", 6), STORE_TOO_LARGE);
    store_blob_abort(w);
    char tmp[512];
    path_in(f, "blobs/tmp", tmp, sizeof tmp);
    assert_int_equal(tmpdir_count(tmp), 0);
}

/* A write error part-way through a blob (here: RLIMIT_FSIZE, standing in
 * for a full disk) is a clear STORE_IO; nothing partial stays or shows. */
static void write_error_leaves_nothing_behind(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    assert_int_equal(store_version_put(f->st, "m", "1", "small", 5, NULL, NULL), STORE_OK);
    size_t big = 4 << 20;
    char *data = calloc(1, big);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1 << 20;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    store_status s = store_version_put(f->st, "m", "2", data, big, NULL, NULL);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    free(data);
    assert_int_equal(s, STORE_IO);
    assert_non_null(strstr(store_last_error(), "writing a blob"));
    store_version v;
    assert_int_equal(store_version_get(f->st, "m", "2", &v), STORE_NOT_FOUND);
    assert_int_equal(store_version_get(f->st, "m", "latest", &v), STORE_OK);
    assert_string_equal(v.version, "1");
    store_version_clear(&v);
    char tmp[512];
    path_in(f, "blobs/tmp", tmp, sizeof tmp);
    assert_int_equal(tmpdir_count(tmp), 0);
    /* And the store keeps working. */
    assert_int_equal(store_version_put(f->st, "m", "2", "fine", 4, NULL, NULL), STORE_OK);
}

typedef struct churn_arg {
    store *st;
    int id;
} churn_arg;

/* Puts the same content as a version and deletes it again, so the number
 * of versions naming the blob keeps falling to zero across threads. */
static void *churn(void *p)
{
    churn_arg *a = p;
    char model[16], ver[16];
    snprintf(model, sizeof model, "t%d", a->id);
    for (int i = 0; i < 60; i++) {
        snprintf(ver, sizeof ver, "%d", i);
        if (store_version_put(a->st, model, ver, "shared weights", 14, NULL, NULL) != STORE_OK)
            return (void *)1;
        if (store_version_delete(a->st, model, ver) != STORE_OK) return (void *)2;
    }
    if (store_version_put(a->st, model, "final", "shared weights", 14, NULL, NULL) != STORE_OK)
        return (void *)3;
    return NULL;
}

/* Threads sharing one blob while deleting versions that name it: the blob
 * is never removed while a version (or a pending put) needs it. */
static void concurrent_puts_and_deletes_share_blobs_safely(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    pthread_t t[4];
    churn_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (churn_arg){f->st, i};
        assert_int_equal(pthread_create(&t[i], NULL, churn, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    for (int i = 0; i < 4; i++) {
        char model[16];
        snprintf(model, sizeof model, "t%d", i);
        store_version v;
        assert_int_equal(store_version_get(f->st, model, "latest", &v), STORE_OK);
        assert_string_equal(v.version, "final");
        assert_int_equal(store_blob_verify(f->st, v.sha256), STORE_OK);
        store_version_clear(&v);
    }
}

/* ---- jobs ---------------------------------------------------------------- */

static void job_life_cycle(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    int64_t id;
    store_job j;
    assert_int_equal(store_job_create(f->st, "train", "{\"epochs\": 3}", &id), STORE_OK);
    assert_int_equal(store_job_get(f->st, id, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_QUEUED);
    assert_string_equal(j.params, "{\"epochs\": 3}");
    store_job_clear(&j);
    assert_int_equal(store_job_progress(f->st, id, 0.5, NULL), STORE_INVALID); /* not running */
    assert_int_equal(store_job_start(f->st, id), STORE_OK);
    assert_int_equal(store_job_start(f->st, id), STORE_INVALID);
    assert_int_equal(store_job_progress(f->st, id, 0.5, "{\"loss\": 0.7}"), STORE_OK);
    assert_int_equal(store_job_progress(f->st, id, 0.6, "{not json"), STORE_INVALID);
    assert_int_equal(store_job_get(f->st, id, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_RUNNING);
    assert_true(j.progress == 0.5);
    assert_string_equal(j.result, "{\"loss\": 0.7}");
    assert_true(j.started > 0);
    store_job_clear(&j);
    assert_int_equal(store_job_finish(f->st, id, "{\"accuracy\": 0.99}", NULL), STORE_OK);
    assert_int_equal(store_job_finish(f->st, id, NULL, "again"), STORE_INVALID);
    assert_int_equal(store_job_get(f->st, id, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_SUCCEEDED);
    assert_true(j.progress == 1.0);
    assert_null(j.error);
    assert_true(j.finished >= j.started);
    store_job_clear(&j);
    assert_int_equal(store_job_get(f->st, id + 100, &j), STORE_NOT_FOUND);
    assert_int_equal(store_job_start(f->st, id + 100), STORE_NOT_FOUND);
}

static void running_job_is_failed_after_a_crash(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    int64_t running, queued, done;
    assert_int_equal(store_job_create(f->st, "train", NULL, &running), STORE_OK);
    assert_int_equal(store_job_create(f->st, "train", NULL, &queued), STORE_OK);
    assert_int_equal(store_job_create(f->st, "train", NULL, &done), STORE_OK);
    assert_int_equal(store_job_start(f->st, running), STORE_OK);
    assert_int_equal(store_job_progress(f->st, running, 0.3, NULL), STORE_OK);
    assert_int_equal(store_job_start(f->st, done), STORE_OK);
    assert_int_equal(store_job_finish(f->st, done, NULL, NULL), STORE_OK);
    store_close(f->st); /* the process "dies" with the job running */
    f->st = NULL;
    store_open_report rep;
    open_ok(f, &rep);
    assert_int_equal(rep.jobs_failed, 1);
    store_job j;
    assert_int_equal(store_job_get(f->st, running, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_FAILED);
    assert_non_null(j.error);
    assert_non_null(strstr(j.error, "interrupted"));
    assert_true(j.progress == 0.3);
    store_job_clear(&j);
    assert_int_equal(store_job_get(f->st, queued, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_QUEUED);
    store_job_clear(&j);
    assert_int_equal(store_job_get(f->st, done, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_SUCCEEDED);
    store_job_clear(&j);
}

static void jobs_are_listed_and_cancelled(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    int64_t a, b, c;
    assert_int_equal(store_job_create(f->st, "train", NULL, &a), STORE_OK);
    assert_int_equal(store_job_create(f->st, "train", NULL, &b), STORE_OK);
    assert_int_equal(store_job_create(f->st, "train", NULL, &c), STORE_OK);
    assert_int_equal(store_job_start(f->st, b), STORE_OK);
    assert_int_equal(store_job_cancel(f->st, b, "cancelled by a client"), STORE_OK);
    assert_int_equal(store_job_cancel(f->st, b, NULL), STORE_INVALID); /* already cancelled */
    assert_int_equal(store_job_finish(f->st, b, NULL, NULL), STORE_INVALID);
    store_job *list;
    int n;
    assert_int_equal(store_job_list(f->st, -1, 10, &list, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_true(list[0].id == c && list[1].id == b && list[2].id == a); /* newest first */
    assert_int_equal(list[1].state, STORE_JOB_CANCELLED);
    assert_string_equal(list[1].error, "cancelled by a client");
    store_jobs_free(list, n);
    assert_int_equal(store_job_list(f->st, STORE_JOB_QUEUED, 10, &list, &n), STORE_OK);
    assert_int_equal(n, 2);
    store_jobs_free(list, n);
    assert_int_equal(store_job_list(f->st, -1, 1, &list, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_jobs_free(list, n);
    assert_int_equal(store_job_cancel(f->st, c + 100, NULL), STORE_NOT_FOUND);
}

/* A database made before migration 4 keeps its jobs; 'done' reads as succeeded. */
static void old_done_jobs_become_succeeded(void **state)
{
    fixture *f = *state;
    f->opt.migrate_to = 3;
    open_ok(f, NULL);
    store_close(f->st);
    f->st = NULL;
    raw_sql(f, "INSERT INTO jobs(id, kind, state, progress, created, updated)"
               " VALUES (7, 'train', 'done', 1, 1, 1), (8, 'train', 'queued', 0, 2, 2)");
    f->opt.migrate_to = 0;
    open_ok(f, NULL);
    store_job j;
    assert_int_equal(store_job_get(f->st, 7, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_SUCCEEDED);
    store_job_clear(&j);
    assert_int_equal(store_job_get(f->st, 8, &j), STORE_OK);
    assert_int_equal(j.state, STORE_JOB_QUEUED);
    store_job_clear(&j);
    int64_t id;
    assert_int_equal(store_job_create(f->st, "train", NULL, &id), STORE_OK);
    assert_true(id > 8); /* AUTOINCREMENT continues */
}

/* ---- functions ----------------------------------------------------------- */

static void functions_are_upserted(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    store_function fn, *list;
    int n;
    assert_int_equal(
        store_function_put(f->st, "predict-mnist", "predict", "mnist", "{\"max_workers\": 2}"),
        STORE_OK);
    assert_int_equal(store_function_put(f->st, "models", "models", NULL, NULL), STORE_OK);
    assert_int_equal(
        store_function_put(f->st, "predict-mnist", "predict", "mnist2", "{\"max_workers\": 4}"),
        STORE_OK);
    assert_int_equal(store_function_get(f->st, "predict-mnist", &fn), STORE_OK);
    assert_string_equal(fn.model, "mnist2");
    assert_string_equal(fn.config, "{\"max_workers\": 4}");
    free(fn.config);
    assert_int_equal(store_function_list(f->st, &list, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "models");
    assert_string_equal(list[0].model, "");
    store_functions_free(list, n);
    assert_int_equal(store_function_put(f->st, "x", "predict", NULL, "[1,"), STORE_INVALID);
    assert_int_equal(store_function_delete(f->st, "models"), STORE_OK);
    assert_int_equal(store_function_delete(f->st, "models"), STORE_NOT_FOUND);
    assert_int_equal(store_function_get(f->st, "models", &fn), STORE_NOT_FOUND);
}

/* ---- hostile input ------------------------------------------------------- */

static const char *const bad_names[] = {
    "",
    ".",
    "..",
    "../etc",
    "../../etc/passwd",
    "a/b",
    "/abs",
    "a\\b",
    ".hidden",
    "a b",
    "tab\t",
    "new\nline",
    "x'; DROP TABLE models; --",
    "x\"",
    "Robert'); DELETE FROM model_versions;--",
    "%s%n",
    "caf\xc3\xa9",
    ("\xe2\x80\xae" /* right-to-left override */ "gnp.exe"),
    "a*",
    "?",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
};

static void hostile_names_are_refused_everywhere(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    assert_int_equal(store_model_create(f->st, "victim"), STORE_OK);
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        const char *b = bad_names[i];
        store_version v;
        store_model m;
        store_function fn;
        assert_false(store_name_valid(b));
        assert_int_equal(store_model_create(f->st, b), STORE_INVALID);
        assert_int_equal(store_model_get(f->st, b, &m), STORE_INVALID);
        assert_int_equal(store_model_delete(f->st, b), STORE_INVALID);
        assert_int_equal(store_version_put(f->st, b, "1", "x", 1, NULL, NULL), STORE_INVALID);
        assert_int_equal(store_version_put(f->st, "victim", b, "x", 1, NULL, NULL), STORE_INVALID);
        assert_int_equal(store_version_get(f->st, "victim", b, &v), STORE_INVALID);
        assert_int_equal(store_version_delete(f->st, "victim", b), STORE_INVALID);
        assert_int_equal(store_function_put(f->st, b, "predict", NULL, NULL), STORE_INVALID);
        assert_int_equal(store_function_put(f->st, "fn", "predict", b, NULL), STORE_INVALID);
        assert_int_equal(store_function_get(f->st, b, &fn), STORE_INVALID);
        assert_int_equal(store_job_create(f->st, b, NULL, &(int64_t){0}), STORE_INVALID);
        assert_true(strlen(store_last_error()) > 0);
    }
    assert_true(store_name_valid("resnet50_v1.5-int8"));
    assert_true(
        store_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    /* Nothing was dropped or created outside the data dir. */
    store_model *models;
    int n;
    assert_int_equal(store_model_list(f->st, &models, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(models[0].name, "victim");
    free(models);
    char blobs[512];
    path_in(f, "blobs/sha256", blobs, sizeof blobs);
    assert_int_equal(tmpdir_count(blobs), 0);
}

static void sql_metacharacters_in_values_are_stored_verbatim(void **state)
{
    fixture *f = *state;
    open_ok(f, NULL);
    const char *meta = "{\"note\": \"'); DROP TABLE models; -- \\\" %s ? :a @b $c\"}";
    store_version v;
    assert_int_equal(store_version_put(f->st, "m", "1", "w", 1, meta, &v), STORE_OK);
    store_version_clear(&v);
    assert_int_equal(store_version_get(f->st, "m", "1", &v), STORE_OK);
    assert_string_equal(v.metadata, meta);
    store_version_clear(&v);
    assert_int_equal(store_version_put(f->st, "m", "2", "w", 1, "'; DROP TABLE models; --", NULL),
                     STORE_INVALID); /* not JSON */
    int64_t id;
    const char *err = "x'); UPDATE jobs SET state='done' WHERE 1; --";
    assert_int_equal(store_job_create(f->st, "train", "{\"q\": \"' OR 1=1 --\"}", &id), STORE_OK);
    assert_int_equal(store_job_start(f->st, id), STORE_OK);
    assert_int_equal(store_job_finish(f->st, id, NULL, err), STORE_OK);
    store_job j;
    assert_int_equal(store_job_get(f->st, id, &j), STORE_OK);
    assert_string_equal(j.error, err);
    assert_int_equal(j.state, STORE_JOB_FAILED);
    assert_string_equal(j.params, "{\"q\": \"' OR 1=1 --\"}");
    store_job_clear(&j);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM models"), 1);
    assert_int_equal(raw_count(f, "SELECT count(*) FROM model_versions"), 1);
}

/* ---- token --------------------------------------------------------------- */

static void token_is_created_0600_once(void **state)
{
    fixture *f = *state;
    char t1[STORE_TOKEN_HEX + 1], t2[STORE_TOKEN_HEX + 1];
    int created;
    assert_int_equal(store_token_load(f->dir, t1, &created), STORE_OK);
    assert_int_equal(created, 1);
    assert_int_equal(strlen(t1), 64);
    for (int i = 0; i < 64; i++) assert_non_null(strchr("0123456789abcdef", t1[i]));
    char path[512];
    path_in(f, "token", path, sizeof path);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(store_token_load(f->dir, t2, &created), STORE_OK);
    assert_int_equal(created, 0);
    assert_string_equal(t1, t2);

    /* Another data dir gets another token. */
    char other[256];
    tmpdir_make(other, sizeof other);
    assert_int_equal(store_token_load(other, t2, &created), STORE_OK);
    assert_string_not_equal(t1, t2);
    tmpdir_remove(other);

    /* A readable-by-others token is refused, not silently used. */
    chmod(path, 0644);
    assert_int_equal(store_token_load(f->dir, t2, &created), STORE_INVALID);
    assert_non_null(strstr(store_last_error(), "0600"));
    chmod(path, 0600);
    FILE *fp = fopen(path, "w");
    fputs("short\n", fp);
    fclose(fp);
    assert_int_equal(store_token_load(f->dir, t2, &created), STORE_INVALID);
}

static void token_comparison(void **state)
{
    (void)state;
    const char *t = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    char copy[65];
    memcpy(copy, t, 65);
    assert_true(store_token_equal(t, copy, 64));
    copy[63] = '0';
    assert_false(store_token_equal(t, copy, 64));
    copy[63] = 'f';
    copy[0] = '1';
    assert_false(store_token_equal(t, copy, 64));
    assert_false(store_token_equal(t, t, 63)); /* a prefix */
    assert_false(store_token_equal(t, "", 0));
    assert_false(store_token_equal(t, NULL, 0));
    char longer[80];
    snprintf(longer, sizeof longer, "%sXX", t);
    assert_false(store_token_equal(t, longer, 66));
    assert_false(store_token_equal("", "", 0)); /* an empty token never matches */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(migrations_from_empty_db_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(migrations_apply_one_by_one, setup, teardown),
        cmocka_unit_test_setup_teardown(model_metadata_is_created_replaced_and_checked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(garbage_database_is_refused_clearly, setup, teardown),
        cmocka_unit_test_setup_teardown(damaged_page_fails_integrity_check, setup, teardown),
        cmocka_unit_test_setup_teardown(second_opener_of_a_data_dir_is_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(blob_is_content_addressed_and_deduplicated, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(changed_blob_fails_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(leftover_temp_files_and_orphan_blobs_are_removed_on_open,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(version_is_visible_only_once_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(versions_number_themselves_and_latest_is_newest, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(blob_over_the_limit_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(write_error_leaves_nothing_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_puts_and_deletes_share_blobs_safely, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(job_life_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(running_job_is_failed_after_a_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(jobs_are_listed_and_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(old_done_jobs_become_succeeded, setup, teardown),
        cmocka_unit_test_setup_teardown(functions_are_upserted, setup, teardown),
        cmocka_unit_test_setup_teardown(hostile_names_are_refused_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(sql_metacharacters_in_values_are_stored_verbatim, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(token_is_created_0600_once, setup, teardown),
        cmocka_unit_test(token_comparison),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
