/* The invocation log: batching, the flush timer, drops when the queue is
 * full, flush on close, retention, and the query API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <time.h>

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

static void open_ok(fixture *f)
{
    store_status s = store_open(&f->opt, &f->st, NULL);
    if (s != STORE_OK) fail_msg("store_open: %s", store_last_error());
}

static store_invocation record(const char *fn, int i)
{
    store_invocation r = {0};
    snprintf(r.function, sizeof r.function, "%s", fn);
    r.cold = i % 4 == 0 ? 1 : i % 7 == 3 ? -1 : 0; /* -1: never ran on a worker */
    r.worker = 100 + i % 3;
    r.queue_us = i;
    r.init_us = r.cold > 0 ? 1000 + i : 0;
    r.exec_us = 10 * i;
    r.status = i % 10 == 9 ? 502 : 200;
    r.bytes_in = 784 * 4;
    r.bytes_out = 40 + i;
    return r;
}

static void full_batches_then_flush(void **state)
{
    fixture *f = *state;
    f->opt.log_batch_rows = 10;
    f->opt.log_flush_ms = 600000; /* only full batches or an explicit flush write */
    open_ok(f);
    for (int i = 0; i < 35; i++) {
        store_invocation r = record("mnist", i);
        assert_int_equal(store_log_invocation(f->st, &r), 0);
    }
    store_log_flush(f->st);
    store_log_stats s;
    store_log_stats_get(f->st, &s);
    assert_int_equal(s.enqueued, 35);
    assert_int_equal(s.written, 35);
    assert_int_equal(s.dropped, 0);
    assert_int_equal(s.failed, 0);
    assert_int_equal(s.batches, 4); /* 10 + 10 + 10 + the flushed 5 */
    assert_int_equal(s.queued, 0);

    store_invocation *rows;
    int n;
    assert_int_equal(store_invocations_recent(f->st, "mnist", 100, &rows, &n), STORE_OK);
    assert_int_equal(n, 35);
    for (int k = 0; k < n; k++) { /* newest first, fields as logged */
        store_invocation want = record("mnist", 34 - k);
        assert_string_equal(rows[k].function, "mnist");
        assert_int_equal(rows[k].cold, want.cold);
        assert_int_equal(rows[k].worker, want.worker);
        assert_int_equal(rows[k].queue_us, want.queue_us);
        assert_int_equal(rows[k].init_us, want.init_us);
        assert_int_equal(rows[k].exec_us, want.exec_us);
        assert_int_equal(rows[k].status, want.status);
        assert_int_equal(rows[k].bytes_out, want.bytes_out);
        assert_true(rows[k].ts > 0);
        if (k > 0) assert_true(rows[k].id < rows[k - 1].id);
    }
    free(rows);
    assert_int_equal(store_invocations_recent(f->st, "mnist", 5, &rows, &n), STORE_OK);
    assert_int_equal(n, 5);
    assert_int_equal(rows[0].queue_us, 34);
    free(rows);
    assert_int_equal(store_invocations_recent(f->st, "other", 5, &rows, &n), STORE_OK);
    assert_int_equal(n, 0);
    free(rows);
}

static void partial_batch_is_written_by_the_timer(void **state)
{
    fixture *f = *state;
    f->opt.log_batch_rows = 1000;
    f->opt.log_flush_ms = 20;
    open_ok(f);
    for (int i = 0; i < 3; i++) {
        store_invocation r = record("fn", i);
        assert_int_equal(store_log_invocation(f->st, &r), 0);
    }
    /* No flush call: the writer must get there on its own. Poll (bounded). */
    store_log_stats s;
    for (int tries = 0; tries < 3000; tries++) {
        store_log_stats_get(f->st, &s);
        if (s.written == 3) break;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    assert_int_equal(s.written, 3);
    assert_true(s.batches >= 1);
}

static void full_queue_drops_and_counts(void **state)
{
    fixture *f = *state;
    f->opt.log_queue_capacity = 4;
    f->opt.log_batch_rows = 2;
    f->opt.busy_timeout_ms = 600000;
    open_ok(f);
    /* Another connection holds the write lock, so the writer stalls on its
     * first batch and the queue fills. */
    char path[512];
    snprintf(path, sizeof path, "%s/kiln.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    int refused = 0;
    for (int i = 0; i < 100; i++) {
        store_invocation r = record("fn", i);
        if (store_log_invocation(f->st, &r) != 0) refused++;
    }
    store_log_stats s;
    store_log_stats_get(f->st, &s);
    assert_int_equal(s.enqueued + s.dropped, 100);
    assert_int_equal(s.dropped, (uint64_t)refused);
    assert_true(s.enqueued <= 4 + 2); /* the ring plus one batch taken by the writer */
    assert_true(refused >= 94);
    assert_int_equal(s.written, 0);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    store_log_flush(f->st);
    store_log_stats_get(f->st, &s);
    assert_int_equal(s.written, s.enqueued);
    assert_int_equal(s.failed, 0);
    store_invocation *rows;
    int n;
    assert_int_equal(store_invocations_recent(f->st, NULL, 1000, &rows, &n), STORE_OK);
    assert_int_equal(n, (int)s.enqueued);
    free(rows);

    /* An invalid function name is dropped too, never written. */
    store_invocation bad = record("../x'; --", 1);
    assert_int_equal(store_log_invocation(f->st, &bad), -1);
    store_log_stats s2;
    store_log_stats_get(f->st, &s2);
    assert_int_equal(s2.dropped, s.dropped + 1);
}

static void close_flushes_everything(void **state)
{
    fixture *f = *state;
    f->opt.log_batch_rows = 1000;
    f->opt.log_flush_ms = 600000;
    open_ok(f);
    for (int i = 0; i < 250; i++) {
        store_invocation r = record(i % 2 ? "a" : "b", i);
        assert_int_equal(store_log_invocation(f->st, &r), 0);
    }
    store_close(f->st);
    f->st = NULL;
    open_ok(f);
    store_invocation *rows;
    int n;
    assert_int_equal(store_invocations_recent(f->st, NULL, 1000, &rows, &n), STORE_OK);
    assert_int_equal(n, 250);
    free(rows);
    assert_int_equal(store_invocations_recent(f->st, "a", 1000, &rows, &n), STORE_OK);
    assert_int_equal(n, 125);
    free(rows);
}

static void summary_counts_and_averages(void **state)
{
    fixture *f = *state;
    open_ok(f);
    /* cold: exec 100, 300; warm: exec 10, 20, 30; none (no worker): 2 */
    const int cold[] = {1, 1, 0, 0, 0, -1, -1};
    const int exec[] = {100, 300, 10, 20, 30, 0, 0};
    for (int i = 0; i < 7; i++) {
        store_invocation r = record("fn", i);
        r.cold = cold[i];
        r.exec_us = exec[i];
        r.init_us = cold[i] > 0 ? 5000 : 0;
        r.queue_us = 7;
        assert_int_equal(store_log_invocation(f->st, &r), 0);
    }
    store_invocation other = record("other", 0);
    other.cold = 1;
    other.exec_us = 1000000;
    assert_int_equal(store_log_invocation(f->st, &other), 0);
    store_log_flush(f->st);
    store_invocation_summary s;
    assert_int_equal(store_invocation_summary_get(f->st, "fn", &s), STORE_OK);
    assert_int_equal(s.cold, 2);
    assert_int_equal(s.warm, 3);
    assert_int_equal(s.none, 2);
    assert_true(s.cold_exec_us == 200.0);
    assert_true(s.warm_exec_us == 20.0);
    assert_true(s.cold_init_us == 5000.0);
    assert_true(s.warm_init_us == 0.0);
    assert_true(s.warm_queue_us == 7.0);
    assert_int_equal(store_invocation_summary_get(f->st, NULL, &s), STORE_OK);
    assert_int_equal(s.cold, 3);
    assert_int_equal(store_invocation_summary_get(f->st, "none", &s), STORE_OK);
    assert_int_equal(s.cold + s.warm + s.none, 0);
    assert_int_equal(store_invocation_summary_get(f->st, "a/b", &s), STORE_INVALID);
}

static void retention_keeps_the_newest_rows(void **state)
{
    fixture *f = *state;
    f->opt.log_retention_rows = 10;
    f->opt.log_batch_rows = 7;
    open_ok(f);
    for (int i = 0; i < 40; i++) {
        store_invocation r = record("fn", i);
        assert_int_equal(store_log_invocation(f->st, &r), 0);
    }
    store_log_flush(f->st);
    store_invocation *rows;
    int n;
    assert_int_equal(store_invocations_recent(f->st, NULL, 1000, &rows, &n), STORE_OK);
    assert_int_equal(n, 10);
    assert_int_equal(rows[0].queue_us, 39);
    assert_int_equal(rows[9].queue_us, 30);
    free(rows);

    /* Age limit: rows older than the window go at the next batch. */
    store_close(f->st);
    f->st = NULL;
    f->opt.log_retention_rows = 0;
    f->opt.log_retention_days = 1;
    open_ok(f);
    store_invocation old = record("fn", 1000);
    old.ts = 1000; /* 1970 */
    assert_int_equal(store_log_invocation(f->st, &old), 0);
    store_invocation now = record("fn", 1001);
    assert_int_equal(store_log_invocation(f->st, &now), 0);
    store_log_flush(f->st);
    assert_int_equal(store_invocations_recent(f->st, NULL, 1000, &rows, &n), STORE_OK);
    assert_int_equal(n, 11);
    for (int k = 0; k < n; k++) assert_int_not_equal(rows[k].queue_us, 1000);
    free(rows);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(full_batches_then_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(partial_batch_is_written_by_the_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(full_queue_drops_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(close_flushes_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(summary_counts_and_averages, setup, teardown),
        cmocka_unit_test_setup_teardown(retention_keeps_the_newest_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
