/*
 * Content-addressed blobs: <data>/blobs/sha256/xx/<sha256>, where xx are the
 * first two hex digits. A blob is written to <data>/blobs/tmp/, fsynced,
 * renamed into place and its directory fsynced; only then may a version row
 * name it. Blobs are immutable once in place.
 *
 * Removal: a blob is unlinked when the last version naming it is deleted,
 * unless a writer pinned it (committed, not yet registered); on open, temp
 * files and blobs no row names are removed (nothing is pinned then).
 */
#include "sha256.h"
#include "store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct store_blob_writer {
    store *st;
    int fd;
    char tmp[PATH_MAX];
    sha256_ctx hash;
    uint64_t size;
};

void blob_path_of(const store *st, const char *sha256, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%.2s/%s", st->blob_dir, sha256, sha256);
}

store_status store_blob_path(store *st, const char *sha256, char *buf, size_t buf_len)
{
    if (!store_sha256_valid(sha256))
        return store_fail(STORE_INVALID, "invalid sha256: 64 lowercase hex digits expected");
    if ((size_t)snprintf(buf, buf_len, "%s/%.2s/%s", st->blob_dir, sha256, sha256) >= buf_len)
        return store_fail(STORE_INVALID, "path buffer too small");
    return STORE_OK;
}

/* fsync of a directory, so that a rename or a new entry in it is durable. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* ---- pins (caller holds st->mu) ----------------------------------------- */

void blob_pin_locked(store *st, const char *sha256)
{
    for (int i = 0; i < st->n_pins; i++)
        if (strcmp(st->pins[i].sha256, sha256) == 0) {
            st->pins[i].refs++;
            return;
        }
    if (st->n_pins == st->cap_pins) {
        int cap = st->cap_pins ? st->cap_pins * 2 : 8;
        store_pin *p = realloc(st->pins, (size_t)cap * sizeof *p);
        if (!p) return; /* unpinned: at worst a concurrent delete removes it and add fails */
        st->pins = p;
        st->cap_pins = cap;
    }
    snprintf(st->pins[st->n_pins].sha256, sizeof st->pins[0].sha256, "%s", sha256);
    st->pins[st->n_pins++].refs = 1;
}

void blob_unpin_locked(store *st, const char *sha256)
{
    for (int i = 0; i < st->n_pins; i++)
        if (strcmp(st->pins[i].sha256, sha256) == 0) {
            if (--st->pins[i].refs == 0) st->pins[i] = st->pins[--st->n_pins];
            return;
        }
}

void store_blob_unpin(store *st, const char *sha256)
{
    if (!store_sha256_valid(sha256)) return;
    pthread_mutex_lock(&st->mu);
    blob_unpin_locked(st, sha256);
    pthread_mutex_unlock(&st->mu);
}

void blob_release_locked(store *st, const char *sha256)
{
    if (!store_sha256_valid(sha256)) return;
    for (int i = 0; i < st->n_pins; i++)
        if (strcmp(st->pins[i].sha256, sha256) == 0) return;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM model_versions WHERE sha256 = ?1", -1, &q,
                           NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(q, 1, sha256, -1, SQLITE_TRANSIENT);
    int refs = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : -1;
    sqlite3_finalize(q);
    if (refs != 0) return; /* referenced, or unknown: keep it; open-time GC decides later */
    char path[PATH_MAX];
    blob_path_of(st, sha256, path, sizeof path);
    unlink(path);
}

/* ---- writing ------------------------------------------------------------ */

store_status store_blob_begin(store *st, store_blob_writer **out)
{
    *out = NULL;
    store_blob_writer *w = calloc(1, sizeof *w);
    if (!w) return store_fail(STORE_NOMEM, "out of memory");
    w->st = st;
    if ((size_t)snprintf(w->tmp, sizeof w->tmp, "%s/blob-XXXXXX", st->tmp_dir) >= sizeof w->tmp) {
        free(w);
        return store_fail(STORE_INVALID, "data dir path too long");
    }
    w->fd = mkostemp(w->tmp, O_CLOEXEC);
    if (w->fd < 0) {
        store_status s = store_fail(STORE_IO, "%s: %s", st->tmp_dir, strerror(errno));
        free(w);
        return s;
    }
    sha256_init(&w->hash);
    *out = w;
    return STORE_OK;
}

store_status store_blob_write(store_blob_writer *w, const void *data, size_t len)
{
    if (len > w->st->opt.max_blob_bytes || w->size > w->st->opt.max_blob_bytes - len)
        return store_fail(STORE_TOO_LARGE, "blob larger than the limit of %llu bytes",
                          (unsigned long long)w->st->opt.max_blob_bytes);
    sha256_update(&w->hash, data, len);
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(w->fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return store_fail(STORE_IO, "writing a blob: %s", strerror(errno));
        }
        p += n;
        left -= (size_t)n;
    }
    w->size += len;
    return STORE_OK;
}

void store_blob_abort(store_blob_writer *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    unlink(w->tmp);
    free(w);
}

store_status store_blob_commit(store_blob_writer *w, char sha256[STORE_SHA256_HEX + 1],
                               uint64_t *size)
{
    store *st = w->st;
    store_status s = STORE_OK;
    uint8_t digest[SHA256_DIGEST_LEN];
    char dir[PATH_MAX], final[PATH_MAX];

    if (fsync(w->fd) != 0 || fchmod(w->fd, 0644) != 0) {
        s = store_fail(STORE_IO, "syncing a blob: %s", strerror(errno));
        store_blob_abort(w);
        return s;
    }
    int rc = close(w->fd);
    w->fd = -1;
    if (rc != 0) {
        s = store_fail(STORE_IO, "closing a blob: %s", strerror(errno));
        store_blob_abort(w);
        return s;
    }
    sha256_final(&w->hash, digest);
    sha256_to_hex(digest, sha256);
    *size = w->size;

    /* Pin before the file is in place, so that a concurrent delete of a
     * version naming the same content does not remove it under us. */
    pthread_mutex_lock(&st->mu);
    blob_pin_locked(st, sha256);
    pthread_mutex_unlock(&st->mu);

    snprintf(dir, sizeof dir, "%s/%.2s", st->blob_dir, sha256);
    blob_path_of(st, sha256, final, sizeof final);
    if (mkdir(dir, 0755) == 0) {
        if (sync_dir(st->blob_dir) != 0) goto io_fail;
    } else if (errno != EEXIST) {
        goto io_fail;
    }
    struct stat sb;
    if (stat(final, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == w->size) {
        unlink(w->tmp); /* the same content is already stored */
    } else {
        if (rename(w->tmp, final) != 0) goto io_fail;
        if (sync_dir(dir) != 0) goto io_fail;
    }
    free(w);
    return STORE_OK;
io_fail:
    s = store_fail(STORE_IO, "storing blob %s: %s", sha256, strerror(errno));
    store_blob_unpin(st, sha256);
    store_blob_abort(w);
    return s;
}

store_status store_blob_verify(store *st, const char *sha256)
{
    char path[PATH_MAX];
    store_status s = store_blob_path(st, sha256, path, sizeof path);
    if (s != STORE_OK) return s;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return store_fail(STORE_NOT_FOUND, "blob %s is missing", sha256);
        return store_fail(STORE_IO, "%s: %s", path, strerror(errno));
    }
    sha256_ctx c;
    sha256_init(&c);
    static _Thread_local char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            s = store_fail(STORE_IO, "%s: %s", path, strerror(errno));
            close(fd);
            return s;
        }
        if (n == 0) break;
        sha256_update(&c, buf, (size_t)n);
    }
    close(fd);
    uint8_t d[SHA256_DIGEST_LEN];
    char hex[SHA256_HEX_LEN + 1];
    sha256_final(&c, d);
    sha256_to_hex(d, hex);
    if (strcmp(hex, sha256) != 0)
        return store_fail(STORE_CORRUPT, "blob %s has content hashing to %s", sha256, hex);
    return STORE_OK;
}

/* ---- garbage collection on open ----------------------------------------- */

static int cmp_sha(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[n] == '\0';
}

/* Removes every file in blobs/tmp: partial writes of a process that died. */
static void gc_temp(store *st, store_open_report *rep)
{
    DIR *d = opendir(st->tmp_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) rep->temp_files_removed++;
    }
    closedir(d);
}

store_status blob_gc_open(store *st, store_open_report *rep)
{
    gc_temp(st, rep);

    /* The referenced hashes, sorted for bsearch. */
    char(*refs)[STORE_SHA256_HEX + 1] = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT DISTINCT sha256 FROM model_versions ORDER BY sha256", -1,
                           &q, NULL) != SQLITE_OK)
        return store_fail_db(st->db, "collecting blobs");
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(q, 0);
        if (!h || !store_sha256_valid(h)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            void *p = realloc(refs, cap * sizeof *refs);
            if (!p) {
                sqlite3_finalize(q);
                free(refs);
                return store_fail(STORE_NOMEM, "out of memory");
            }
            refs = p;
        }
        memcpy(refs[n++], h, STORE_SHA256_HEX + 1);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        free(refs);
        return store_fail_db(st->db, "collecting blobs");
    }
    if (n > 0) qsort(refs, n, sizeof *refs, cmp_sha);

    DIR *top = opendir(st->blob_dir);
    if (!top) {
        free(refs);
        return store_fail(STORE_IO, "%s: %s", st->blob_dir, strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(top))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (!is_hex(e->d_name, 2)) {
            if (unlinkat(dirfd(top), e->d_name, 0) == 0) rep->blobs_removed++;
            continue; /* a stray directory is left alone */
        }
        int sub_fd = openat(dirfd(top), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *sub = sub_fd >= 0 ? fdopendir(sub_fd) : NULL;
        if (!sub) {
            if (sub_fd >= 0) close(sub_fd);
            continue;
        }
        struct dirent *f;
        while ((f = readdir(sub))) {
            if (strcmp(f->d_name, ".") == 0 || strcmp(f->d_name, "..") == 0) continue;
            int keep = is_hex(f->d_name, STORE_SHA256_HEX) &&
                       memcmp(f->d_name, e->d_name, 2) == 0 && n > 0 &&
                       bsearch(f->d_name, refs, n, sizeof *refs, cmp_sha) != NULL;
            if (!keep && unlinkat(dirfd(sub), f->d_name, 0) == 0) rep->blobs_removed++;
        }
        closedir(sub);
    }
    closedir(top);

    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct stat sb;
        blob_path_of(st, refs[i], path, sizeof path);
        if (stat(path, &sb) != 0) rep->versions_missing_blob++;
    }
    free(refs);
    return STORE_OK;
}
