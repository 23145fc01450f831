/*
 * kiln's own small thread pool, for the kernels that do not run on
 * OpenBLAS (depthwise conv, pooling, Winograd transforms, GEMV). A kernel
 * uses either this pool or OpenBLAS's threads at any moment, never both,
 * so `threads` threads are busy at most.
 *
 * Workers are started on first use and live for the process. One job runs
 * at a time: a caller that finds the pool busy (another session's kernel)
 * runs its whole range itself rather than wait or oversubscribe.
 */
#include "internal.h"

#include <pthread.h>

#define POOL_MAX 64

typedef struct pool_job {
    kiln__range_fn fn;
    void *ctx;
    size_t n;
    int parts;
} pool_job;

static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER; /* held for one job */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* guards what follows */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int n_workers;
static unsigned long generation; /* bumped once per job */
static pool_job job;
static int remaining; /* workers still running the current job */

static void run_part(const pool_job *j, int part)
{
    size_t begin = j->n * part / j->parts, end = j->n * (part + 1) / j->parts;
    if (begin < end) j->fn(j->ctx, begin, end);
}

static void *worker(void *arg)
{
    int id = (int)(size_t)arg; /* runs part id; the caller runs part 0 */
    unsigned long seen = 0;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (generation == seen) pthread_cond_wait(&wake, &lock);
        seen = generation;
        if (id >= job.parts) continue;
        pool_job j = job;
        pthread_mutex_unlock(&lock);
        run_part(&j, id);
        pthread_mutex_lock(&lock);
        if (--remaining == 0) pthread_cond_signal(&done);
    }
    return NULL;
}

void kiln__parallel_for(int threads, size_t n, kiln__range_fn fn, void *ctx)
{
    if (threads > POOL_MAX) threads = POOL_MAX;
    if ((size_t)threads > n) threads = (int)n;
    if (threads <= 1 || pthread_mutex_trylock(&busy) != 0) {
        if (n) fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&lock);
    while (n_workers < threads - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&t, &attr, worker, (void *)(size_t)(n_workers + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        n_workers++;
    }
    if (threads > n_workers + 1) threads = n_workers + 1;
    job = (pool_job){fn, ctx, n, threads};
    remaining = threads - 1;
    generation++;
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    run_part(&job, 0);
    pthread_mutex_lock(&lock);
    while (remaining > 0) pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&busy);
}
