/* The server's /proc sampler (src/server/sampler.h): reading one process's
 * counters, the CPU percentage, and the CSV it appends. The process under
 * test is a forked child, so that qemu-user (which answers /proc/self/stat
 * itself) is not what is measured. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sampler.h"
#include "store_tmpdir.h"

/* A pid no process has: above the largest pid_max Linux allows. */
#define NO_PID 0x7ffffff0

/* The child of the test running, killed by its teardown even when an
 * assertion failed (it would otherwise spin on, holding the test's output
 * open). */
static pid_t g_child;

static pid_t spinner(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        volatile uint64_t x = 0;
        for (;;) x++;
    }
    g_child = pid;
    return pid;
}

static void reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (pid == g_child) g_child = 0;
}

static int kill_child(void **state)
{
    (void)state;
    if (g_child > 0) reap(g_child);
    return 0;
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits (up to 20 s) until pid has used more than `ticks` clock ticks. */
static uint64_t wait_ticks_above(pid_t pid, uint64_t ticks)
{
    proc_usage u = {0};
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(proc_usage_read(pid, 0, &u), 0);
        if (u.cpu_ticks > ticks) break;
        nap_ms(10);
    }
    return u.cpu_ticks;
}

static void test_reads_a_process(void **state)
{
    (void)state;
    pid_t pid = spinner();
    uint64_t t = wait_ticks_above(pid, 0);
    assert_true(t > 0);
    proc_usage u;
    assert_int_equal(proc_usage_read(pid, 1, &u), 0);
    assert_true(u.cpu_ticks >= t);
    assert_true(u.age_s >= 0);
    /* PSS and the exact RSS need smaps_rollup (Linux 4.14). */
    if (access("/proc/self/smaps_rollup", R_OK) == 0) {
        assert_true(u.rss_kb > 0);
        assert_true(u.pss_kb > 0);
        assert_true(u.pss_kb <= u.rss_kb);
    }
    /* Without PSS, RSS comes from stat's counters (which may lag). */
    assert_int_equal(proc_usage_read(pid, 0, &u), 0);
    assert_int_equal(u.pss_kb, -1);
    assert_true(u.rss_kb >= 0);
    reap(pid);
    assert_int_equal(proc_usage_read(pid, 0, &u), -1);
    assert_int_equal(proc_usage_read(NO_PID, 1, &u), -1);
}

static void test_cpu_pct(void **state)
{
    (void)state;
    long tick = sysconf(_SC_CLK_TCK);
    assert_true(tick > 0);
    assert_true(proc_cpu_pct((uint64_t)tick, 1.0) == 100.0);
    assert_true(proc_cpu_pct((uint64_t)tick, 2.0) == 50.0);
    assert_true(proc_cpu_pct((uint64_t)(2 * tick), 1.0) == 200.0);
    assert_true(proc_cpu_pct(5, 0.0) == 0.0);
}

typedef struct procs {
    pid_t worker;
} procs;

static void list(void *ctx, sampler_each_fn each, void *each_ctx)
{
    procs *p = ctx;
    each(each_ctx, "fn-a", p->worker);
    each(each_ctx, "gone", NO_PID);
}

/* Reads up to max lines of a file; returns how many. */
static int read_lines(const char *path, char lines[][128], int max)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    while (n < max && fgets(lines[n], 128, f)) n++;
    fclose(f);
    return n;
}

static void run_sampler(const char *path, procs *p, int samples)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    /* A long interval: the samples below are taken by hand. */
    sampler *s = sampler_start(&loop, path, 3600000, 1, list, p, err, sizeof err);
    assert_non_null(s);
    uint64_t t = wait_ticks_above(p->worker, 0);
    for (int i = 0; i < samples; i++) {
        t = wait_ticks_above(p->worker, t);
        sampler_sample(s);
    }
    sampler_stop(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_csv(void **state)
{
    (void)state;
    char dir[256], path[300];
    tmpdir_make(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/cpu.csv", dir);
    procs p = {spinner()};
    run_sampler(path, &p, 3);
    char lines[16][128];
    int n = read_lines(path, lines, 16);
    /* The header, and one row per sample after the baseline: the process
     * that does not exist has none. */
    assert_int_equal(n, 4);
    assert_string_equal(lines[0], "ts,function,worker_pid,cpu_pct,rss_kb,pss_kb\n");
    double sum = 0;
    for (int i = 1; i < n; i++) {
        double ts, cpu;
        char fn[32];
        int pid;
        long long rss;
        assert_int_equal(sscanf(lines[i], "%lf,%31[^,],%d,%lf,%lld,", &ts, fn, &pid, &cpu, &rss),
                         5);
        assert_string_equal(fn, "fn-a");
        assert_int_equal(pid, p.worker);
        assert_true(ts > 1e9);
        assert_true(cpu >= 0);
        /* From smaps_rollup (pages counted) when there is one. */
        assert_true(access("/proc/self/smaps_rollup", R_OK) ? rss >= 0 : rss > 0);
        sum += cpu;
    }
    /* The child used CPU between every two samples (waited for above). */
    assert_true(sum > 0);
    /* A second run appends rows without a second header. */
    run_sampler(path, &p, 1);
    n = read_lines(path, lines, 16);
    assert_int_equal(n, 5);
    assert_true(strncmp(lines[4], "ts,", 3) != 0);
    reap(p.worker);
    tmpdir_remove(dir);
}

static void test_bad_path(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256] = "";
    procs p = {getpid()};
    sampler *s =
        sampler_start(&loop, "/nonexistent-dir/cpu.csv", 1000, 0, list, &p, err, sizeof err);
    assert_null(s);
    assert_non_null(strstr(err, "/nonexistent-dir/cpu.csv"));
    sampler_stop(NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_reads_a_process, kill_child),
        cmocka_unit_test(test_cpu_pct),
        cmocka_unit_test_teardown(test_csv, kill_child),
        cmocka_unit_test(test_bad_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
