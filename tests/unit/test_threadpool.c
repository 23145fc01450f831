/*
 * kiln's thread pool (src/kernels/threadpool.c): every index of a range
 * is run exactly once, inside and outside kiln_pool_enter/leave, nested,
 * from two threads at once (one of them finds the pool busy and runs its
 * range itself); a slow worker leaves the rest of the range to the caller;
 * outside runs the workers go to sleep rather than spin.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "internal.h"

#define N 1000

typedef struct marks {
    atomic_int hits[N];
} marks;

static void mark(void *ctx, size_t begin, size_t end)
{
    marks *m = ctx;
    for (size_t i = begin; i < end; i++) atomic_fetch_add(&m->hits[i], 1);
}

/* `rounds` parallel_for calls of `threads` over [0, n), each index hit once. */
static void run_rounds(int threads, size_t n, int rounds)
{
    marks *m = calloc(1, sizeof *m);
    assert_non_null(m);
    for (int r = 0; r < rounds; r++) {
        memset(m, 0, sizeof *m);
        kiln__parallel_for(threads, n, mark, m);
        for (size_t i = 0; i < N; i++) assert_int_equal(atomic_load(&m->hits[i]), i < n ? 1 : 0);
    }
    free(m);
}

static void every_index_once(void **state)
{
    (void)state;
    run_rounds(2, N, 50);
    run_rounds(3, 7, 50); /* few indices, more threads asked for */
    run_rounds(2, 1, 10);
    run_rounds(2, 0, 10);
    kiln_pool_enter();
    run_rounds(2, N, 200);
    kiln_pool_enter(); /* nested */
    run_rounds(2, 513, 200);
    kiln_pool_leave();
    run_rounds(2, N, 200);
    kiln_pool_leave();
    run_rounds(2, N, 50);
    kiln_pool_leave(); /* unmatched: ignored */
    kiln_pool_enter();
    run_rounds(2, N, 50);
    kiln_pool_leave();
}

/* A job that itself calls parallel_for finds the pool busy: the inner
 * call runs its whole range on the calling thread, once. */
typedef struct nest {
    marks *inner[2];
} nest;

static void nested(void *ctx, size_t begin, size_t end)
{
    nest *n = ctx;
    for (size_t i = begin; i < end; i++) kiln__parallel_for(2, N, mark, n->inner[i]);
}

static void nested_call_runs_inline(void **state)
{
    (void)state;
    nest n = {{calloc(1, sizeof(marks)), calloc(1, sizeof(marks))}};
    kiln_pool_enter();
    kiln__parallel_for(2, 2, nested, &n);
    kiln_pool_leave();
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < N; i++) assert_int_equal(atomic_load(&n.inner[k]->hits[i]), 1);
        free(n.inner[k]);
    }
}

static void *caller(void *arg)
{
    (void)arg;
    kiln_pool_enter();
    run_rounds(2, N, 300);
    kiln_pool_leave();
    return NULL;
}

static void two_callers_at_once(void **state)
{
    (void)state;
    pthread_t t[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, caller, NULL), 0);
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
}

/* Chunks from both ends: on two threads the caller runs a prefix of the
 * range and the worker the rest, and a worker slowed down (here it sleeps
 * a millisecond per chunk) leaves most of the range to the caller, where
 * an equal split would have made the caller wait for its half. */
typedef struct who {
    pthread_t caller;
    atomic_int by_caller[N];
    atomic_int hits[N];
    atomic_int single; /* calls of more than one unit when n <= threads */
    size_t n;
} who;

static void record(void *ctx, size_t begin, size_t end)
{
    who *w = ctx;
    const int mine = pthread_equal(pthread_self(), w->caller);
    if (w->n <= 2 && end - begin != 1) atomic_fetch_add(&w->single, 1);
    for (size_t i = begin; i < end; i++) {
        atomic_fetch_add(&w->hits[i], 1);
        atomic_store(&w->by_caller[i], mine);
    }
    if (!mine) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void slow_worker_does_less(void **state)
{
    (void)state;
    who *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->caller = pthread_self();
    w->n = N;
    kiln_pool_enter();
    kiln__parallel_for(2, N, record, w);
    int by_caller = 0, switches = 0;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&w->hits[i]), 1);
        by_caller += atomic_load(&w->by_caller[i]);
        if (i && atomic_load(&w->by_caller[i]) != atomic_load(&w->by_caller[i - 1])) switches++;
    }
    /* a prefix for the caller (the worker may have taken none) */
    assert_true(atomic_load(&w->by_caller[0]) == 1);
    assert_true(switches <= 1);
    assert_true(by_caller > N / 2);
    /* n <= threads: one unit per call, each once */
    memset(w, 0, sizeof *w);
    w->caller = pthread_self();
    w->n = 2;
    kiln__parallel_for(2, 2, record, w);
    kiln_pool_leave();
    assert_int_equal(atomic_load(&w->hits[0]) + atomic_load(&w->hits[1]), 2);
    assert_int_equal(atomic_load(&w->single), 0);
    free(w);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* After the run, an idle pool costs no CPU: the workers' spin is bounded
 * and they sleep. 0.3 s of idling must not cost anything near 0.3 s of
 * CPU (a worker left spinning would). */
static void idle_workers_sleep(void **state)
{
    (void)state;
    kiln_pool_enter();
    run_rounds(2, N, 100);
    kiln_pool_leave();
    double c0 = cpu_seconds();
    struct timespec ts = {0, 300000000L};
    nanosleep(&ts, NULL);
    assert_true(cpu_seconds() - c0 < 0.1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_index_once),        cmocka_unit_test(two_callers_at_once),
        cmocka_unit_test(nested_call_runs_inline), cmocka_unit_test(slow_worker_does_less),
        cmocka_unit_test(idle_workers_sleep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
