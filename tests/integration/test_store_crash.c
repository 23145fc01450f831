/*
 * Crash safety of the store: a child process writes model versions, job
 * updates and invocation-log rows in a loop and reports each version it was
 * told is stored (an acknowledgement) over a pipe; the parent SIGKILLs it at
 * a random moment, reopens the store and checks: the database passes
 * integrity_check (store_open runs it), every acknowledged version is there
 * with a blob whose content hashes to its name, no visible version has a
 * partial blob, no temp file survives, no job is left running.
 *
 * KILN_CRASH_ROUNDS (default 8) sets the number of kills; KILN_CRASH_SEED
 * the random seed (default: time), printed so a failure can be replayed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>

#include "../unit/store_tmpdir.h"
#include "sha256.h"
#include "store.h"

#define MAX_ACKS 100000

typedef struct ack {
    char model[STORE_NAME_MAX + 1];
    char version[STORE_NAME_MAX + 1];
    char sha256[STORE_SHA256_HEX + 1];
} ack;

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* The child: writes until killed. Never returns. */
static void writer(const char *dir, int round, int fd, uint64_t seed)
{
    store_options o;
    store_options_defaults(&o);
    o.data_dir = dir;
    o.log_batch_rows = 50;
    o.log_flush_ms = 5;
    store *st;
    if (store_open(&o, &st, NULL) != STORE_OK) {
        fprintf(stderr, "child: store_open: %s\n", store_last_error());
        _exit(3);
    }
    static uint8_t buf[256 * 1024];
    int64_t job = 0;
    for (int i = 0;; i++) {
        size_t len = 1 + rng_next(&seed) % sizeof buf;
        for (size_t k = 0; k < len; k += 8) {
            uint64_t r = rng_next(&seed);
            memcpy(buf + k, &r, len - k < 8 ? len - k : 8);
        }
        char model[32], version[32], meta[64];
        snprintf(model, sizeof model, "m%d", i % 3);
        snprintf(version, sizeof version, "r%d-%d", round, i);
        snprintf(meta, sizeof meta, "{\"round\": %d, \"i\": %d}", round, i);
        store_version v;
        if (store_version_put(st, model, version, buf, len, meta, &v) != STORE_OK) {
            fprintf(stderr, "child: put: %s\n", store_last_error());
            _exit(4);
        }
        char line[256];
        int n = snprintf(line, sizeof line, "%s %s %s\n", v.model, v.version, v.sha256);
        store_version_clear(&v);
        if (write(fd, line, (size_t)n) != n) _exit(5); /* < PIPE_BUF: atomic */
        for (int k = 0; k < 40; k++) {
            store_invocation inv = {0};
            snprintf(inv.function, sizeof inv.function, "fn%d", k % 4);
            inv.cold = k == 0;
            inv.exec_us = k;
            inv.status = 200;
            store_log_invocation(st, &inv);
        }
        if (i % 5 == 0) {
            if (job) store_job_finish(st, job, "{\"ok\": true}", NULL);
            store_job_create(st, "train", NULL, &job);
            store_job_start(st, job);
        } else if (job) {
            store_job_progress(st, job, (i % 5) / 5.0, "{\"loss\": 0.5}");
        }
        if (i % 7 == 6) { /* deletes happen too, and are never acknowledged as present */
            char old[32];
            snprintf(old, sizeof old, "r%d-%d", round, i - 6);
            char m6[32];
            snprintf(m6, sizeof m6, "m%d", (i - 6) % 3);
            n = snprintf(line, sizeof line, "- %s %s\n", m6, old);
            if (write(fd, line, (size_t)n) != n) _exit(5);
            store_version_delete(st, m6, old);
        }
    }
}

/* Applies a round's lines to the set of acknowledged versions: "m v sha"
 * adds one, "- m v" (sent before a delete is attempted) removes one. */
static int apply_acks(char *text, ack *acks, int n, int max)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        ack a;
        if (line[0] == '-') {
            if (sscanf(line, "- %64s %64s", a.model, a.version) != 2) continue;
            for (int i = 0; i < n; i++)
                if (strcmp(acks[i].model, a.model) == 0 && strcmp(acks[i].version, a.version) == 0)
                    acks[i] = acks[--n];
        } else if (sscanf(line, "%64s %64s %64s", a.model, a.version, a.sha256) == 3 && n < max) {
            acks[n++] = a;
        }
    }
    return n;
}

static void sigkill_at_random_moments_loses_nothing_acknowledged(void **state)
{
    (void)state;
    char dir[256];
    tmpdir_make(dir, sizeof dir);
    const char *r = getenv("KILN_CRASH_ROUNDS");
    int rounds = r ? atoi(r) : 8;
    const char *sd = getenv("KILN_CRASH_SEED");
    uint64_t seed = sd ? strtoull(sd, NULL, 10) : (uint64_t)time(NULL);
    if (seed == 0) seed = 1;
    printf("# store crash test: %d rounds, KILN_CRASH_SEED=%llu\n", rounds,
           (unsigned long long)seed);
    ack *acks = calloc(MAX_ACKS, sizeof *acks);
    int n_acks = 0;
    size_t cap = 1 << 20;
    char *text = malloc(cap);
    int total_checked = 0;

    for (int round = 0; round < rounds; round++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        uint64_t child_seed = rng_next(&seed);
        fflush(stdout);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            writer(dir, round, p[1], child_seed);
        }
        close(p[1]);
        /* Let it run 50-600 ms, reading acknowledgements meanwhile. */
        long wait_ms = 50 + (long)(rng_next(&seed) % 550);
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        size_t len = 0;
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        for (;;) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            long el = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
            if (el >= wait_ms) break;
            ssize_t k = read(p[0], text + len, cap - 1 - len);
            if (k > 0)
                len += (size_t)k;
            else
                nanosleep(&(struct timespec){0, 2000000}, NULL);
            if (len > cap / 2) {
                cap *= 2;
                text = realloc(text, cap);
            }
        }
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
            fail_msg("round %d: the writer exited on its own (status %d)", round, status);
        fcntl(p[0], F_SETFL, 0);
        for (;;) {
            if (len + 4096 > cap) {
                cap *= 2;
                text = realloc(text, cap);
            }
            ssize_t k = read(p[0], text + len, cap - 1 - len);
            if (k <= 0) break;
            len += (size_t)k;
        }
        close(p[0]);
        text[len] = '\0';
        /* Acknowledgements accumulate over rounds: earlier ones must survive too. */
        n_acks = apply_acks(text, acks, n_acks, MAX_ACKS);

        store_options o;
        store_options_defaults(&o);
        o.data_dir = dir;
        store *st;
        store_open_report rep;
        store_status s = store_open(&o, &st, &rep);
        if (s != STORE_OK) fail_msg("round %d: reopen: %s", round, store_last_error());
        assert_int_equal(rep.versions_missing_blob, 0);
        for (int i = 0; i < n_acks; i++) {
            store_version v;
            s = store_version_get(st, acks[i].model, acks[i].version, &v);
            if (s != STORE_OK)
                fail_msg("round %d: acknowledged %s/%s lost: %s", round, acks[i].model,
                         acks[i].version, store_last_error());
            assert_string_equal(v.sha256, acks[i].sha256);
            store_version_clear(&v);
            assert_int_equal(store_blob_verify(st, acks[i].sha256), STORE_OK);
            total_checked++;
        }
        /* Whatever is visible (acknowledged or not) is complete. */
        for (int m = 0; m < 3; m++) {
            char model[8];
            snprintf(model, sizeof model, "m%d", m);
            store_version *list;
            int n;
            assert_int_equal(store_version_list(st, model, &list, &n), STORE_OK);
            for (int i = 0; i < n; i++)
                if (store_blob_verify(st, list[i].sha256) != STORE_OK)
                    fail_msg("round %d: visible %s/%s is partial: %s", round, model,
                             list[i].version, store_last_error());
            store_versions_free(list, n);
        }
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s/blobs/tmp", dir);
        assert_int_equal(tmpdir_count(tmp), 0);
        store_close(st);
        char db_path[512];
        snprintf(db_path, sizeof db_path, "%s/kiln.db", dir);
        sqlite3 *db;
        sqlite3_stmt *q;
        assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM jobs WHERE state = 'running'",
                                            -1, &q, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(q, 0), 0);
        sqlite3_finalize(q);
        sqlite3_close(db);
    }
    printf("# %d acknowledged versions checked over %d kills, %d present at the end\n",
           total_checked, rounds, n_acks);
    assert_true(total_checked > 0);
    free(acks);
    free(text);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sigkill_at_random_moments_loses_nothing_acknowledged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
