/*
 * kiln's own small thread pool, for the kernels that do not run on
 * OpenBLAS (kiln's conv GEMM and its packing, depthwise conv, pooling,
 * Winograd transforms, GEMV). A kernel uses either this pool or OpenBLAS's
 * threads at any moment, never both, so `threads` threads are busy at most.
 *
 * Workers are started on first use and live for the process. One job runs
 * at a time: a caller that finds the pool busy (another session's kernel)
 * runs its whole range itself rather than wait or oversubscribe.
 *
 * A model runs hundreds of short jobs back to back (ResNet50: over a
 * hundred per inference, many under 100 us), and waking a sleeping worker
 * through the kernel for each one (a futex wait and wake, expensive on a
 * VM) costs much of the second thread's gain. So, like ONNX Runtime's
 * intra-op pool, workers spin between jobs while a run is in progress:
 * between kiln_pool_enter() and kiln_pool_leave() (kiln_session_run
 * brackets every multi-threaded run with them) a worker that finished a
 * job spins for the next one for up to KILN_POOL_SPIN_US microseconds
 * (default POOL_SPIN_US_DEFAULT; 0: never), then sleeps on a condition
 * variable; after a run it lingers, spinning for up to KILN_POOL_LINGER_US
 * (default POOL_LINGER_US_DEFAULT; 0: sleep at once), then sleeps, so an
 * idle process burns no CPU. The caller waiting for the workers to finish
 * a job spins the same way. A worker that finds the caller on its own CPU
 * (put there by the scheduler when it woke the worker, or both squeezed
 * onto one core by other work) moves itself to another CPU the process
 * may use (sets its affinity without that CPU, then back), and a thread
 * that still finds the other on its CPU yields the CPU to it and spins on.
 *
 * These came from small models run back to back by a
 * caller that does a little work between runs (bench/peers/pair.py, in
 * Python): LeNet at 2 threads took 0.54-0.73 ms a run there against 0.30
 * alone, its worker sleeping 1.5 times a run, each a futex wake-up of a
 * halted vCPU, mostly because it found the caller on its CPU and slept.
 * With the linger and the yield it slept 0.05 times a run but still often
 * shared the caller's CPU for a whole turn of runs while the other vCPU
 * idled (the scheduler left it there: the two took turns, 0.59-0.66 ms a
 * run); with the move, 0.26-0.33 ms a run and pair.py's kiln/ORT at 2
 * threads 0.72-0.87 for LeNet, 0.60-0.66 for the CIFAR-10 CNN (from
 * 1.72-2.04 and 1.20-1.23; AMD EPYC Zen 4 VM, 2026-12-06). ONNX Runtime's
 * threads spin after a run too.
 *
 * A job's range goes in chunks taken from both ends (kiln__parallel_for()
 * in internal.h): a split into equal halves left the faster of the two
 * vCPUs waiting for the slower at the end of every job. Measured on
 * ResNet50 at 2 threads (2026-12-06, Intel Xeon VM): one thread sat idle
 * 4.5-6.5 ms of a 40-45 ms run while the other finished its half, the
 * direction changing from one minute to the next; with chunks (and the
 * turned-around GEMM's chunked row blocks, gemm_t_run()) the model ran
 * 0.91-0.96x in the minutes when the two vCPUs' speeds differed and
 * 0.99-1.02x when they did not (12 runs of 40 alternating pairs in one
 * process, against equal halves).
 */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define POOL_MAX               64
#define POOL_SPIN_US_DEFAULT   1000
#define POOL_LINGER_US_DEFAULT 1000
#define POOL_SPIN_US_MAX       100000
#define POOL_CHUNKS_PER_THREAD 8

typedef struct pool_job {
    kiln__range_fn fn;
    void *ctx;
    size_t n;
    int parts;
    size_t grain; /* units of [0, n) per chunk taken from `chunks` */
} pool_job;

static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER; /* held for one job */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* for sleeping and start-up */
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int n_workers;                     /* guarded by busy */
static atomic_ulong generation;           /* bumped once per job, after job is written */
static pool_job job;                      /* written only while no worker is reading it */
static atomic_int remaining;              /* workers that have not finished the current job */
static unsigned long start_gen[POOL_MAX]; /* generation when worker i started */
static long spin_ns = -1;                 /* set once, under busy */
static long linger_ns = -1;               /* set once, under busy */
static atomic_int in_run;                 /* kiln_pool_enter() minus kiln_pool_leave() */
static atomic_ullong chunks;              /* the job's next front chunk << 32 | chunk end */

void kiln_pool_enter(void)
{
    atomic_fetch_add_explicit(&in_run, 1, memory_order_relaxed);
}

void kiln_pool_leave(void)
{
    /* An unmatched leave is ignored rather than left to unbalance later runs. */
    int v = atomic_load_explicit(&in_run, memory_order_relaxed);
    while (v > 0 && !atomic_compare_exchange_weak_explicit(&in_run, &v, v - 1, memory_order_relaxed,
                                                           memory_order_relaxed)) {
    }
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* The CPU each pool thread last ran on (index 0: the caller), so a thread
 * never spins while the one it waits for shares its CPU: that would only
 * keep the other off it until the spin ends. */
static atomic_int cpu_of[POOL_MAX];

static int shares_cpu(int self)
{
    int cpu = sched_getcpu();
    atomic_store_explicit(&cpu_of[self], cpu, memory_order_relaxed);
    if (self) return atomic_load_explicit(&cpu_of[0], memory_order_relaxed) == cpu;
    for (int i = 1; i <= n_workers; i++)
        if (atomic_load_explicit(&cpu_of[i], memory_order_relaxed) == cpu) return 1;
    return 0;
}

/* Moves the calling worker off the CPU it runs on, to another that the
 * process may use (its affinity then as before), or leaves it where it is
 * when there is no other. */
static void move_off_cpu(void)
{
    cpu_set_t all, other;
    const int cpu = sched_getcpu();
    if (cpu < 0 || sched_getaffinity(0, sizeof all, &all) != 0 || !CPU_ISSET(cpu, &all)) return;
    other = all;
    CPU_CLR(cpu, &other);
    if (CPU_COUNT(&other) == 0 || sched_setaffinity(0, sizeof other, &other) != 0) return;
    sched_setaffinity(0, sizeof all, &all);
}

/* Spins until *gen differs from seen (or, with gen NULL, *left reaches 0),
 * for at most spin_ns; returns whether that happened. self: the spinning
 * thread's index (0: the caller). */
static int spin_until(const atomic_ulong *gen, unsigned long seen, const atomic_int *left, int self)
{
    /* Workers spin inside runs, and outside them for at most linger_ns
     * (then sleep); the caller always may (for spin_ns). */
    if (spin_ns <= 0 ||
        (gen && linger_ns <= 0 && atomic_load_explicit(&in_run, memory_order_relaxed) <= 0))
        return 0;
    long deadline = 0, linger_end = 0;
    int moved = 0;
    for (unsigned i = 0;; i++) {
        if (gen ? atomic_load_explicit(gen, memory_order_acquire) != seen
                : atomic_load_explicit(left, memory_order_acquire) == 0)
            return 1;
        cpu_relax();
        if ((i & 63) == 0 && shares_cpu(self)) {
            /* a worker moves to another CPU (once a wait; the caller's
             * thread is the application's, so it stays), then yields */
            if (self && !moved) {
                move_off_cpu();
                moved = 1;
            } else {
                sched_yield();
            }
        }
        if ((i & 63) == 63) {
            long t = now_ns();
            if (!deadline)
                deadline = t + spin_ns;
            else if (t >= deadline)
                return 0;
            if (gen && atomic_load_explicit(&in_run, memory_order_relaxed) <= 0) {
                if (!linger_end)
                    linger_end = t + linger_ns; /* no run: linger, then sleep */
                else if (t >= linger_end)
                    return 0;
            } else {
                linger_end = 0;
            }
        }
    }
}

/* The job's next chunk, from the front (the caller) or the
 * back (workers); -1 when none are left. */
static long take_chunk(int front)
{
    unsigned long long cur = atomic_load_explicit(&chunks, memory_order_relaxed);
    for (;;) {
        const unsigned long lo = (unsigned long)(cur >> 32),
                            hi = (unsigned long)(cur & 0xffffffffu);
        if (lo >= hi) return -1;
        const unsigned long long next = front ? (unsigned long long)(lo + 1) << 32 | hi
                                              : (unsigned long long)lo << 32 | (hi - 1);
        if (atomic_compare_exchange_weak_explicit(&chunks, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return front ? (long)lo : (long)(hi - 1);
    }
}

/* Part `part` of the job: chunks until none are left, the caller's
 * (part 0) from the front, the workers' from the back. */
static void run_part(const pool_job *j, int part)
{
    for (long c; (c = take_chunk(part == 0)) >= 0;) {
        const size_t begin = (size_t)c * j->grain;
        const size_t end = begin + j->grain < j->n ? begin + j->grain : j->n;
        j->fn(j->ctx, begin, end);
    }
}

static void *worker(void *arg)
{
    int id = (int)(size_t)arg;          /* runs part id; the caller runs part 0 */
    unsigned long seen = start_gen[id]; /* the job being started is not seen yet */
    atomic_store_explicit(&cpu_of[id], sched_getcpu(), memory_order_relaxed);
    for (;;) {
        if (!spin_until(&generation, seen, NULL, id)) {
            pthread_mutex_lock(&lock);
            while (atomic_load_explicit(&generation, memory_order_acquire) == seen)
                pthread_cond_wait(&wake, &lock);
            pthread_mutex_unlock(&lock);
        }
        seen = atomic_load_explicit(&generation, memory_order_acquire);
        /* Every worker counts itself done, parts or not, so the caller
         * never rewrites job while a worker may still read it. */
        if (id < job.parts) run_part(&job, id);
        if (atomic_fetch_sub_explicit(&remaining, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&lock);
            pthread_cond_signal(&done);
            pthread_mutex_unlock(&lock);
        }
    }
    return NULL;
}

/* Nanoseconds from environment variable `name` (microseconds, at most
 * POOL_SPIN_US_MAX), or def_us's when it is unset or not a number. */
static long us_setting(const char *name, long def_us)
{
    const char *e = getenv(name);
    long us = def_us;
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == '\0' && v >= 0) us = v > POOL_SPIN_US_MAX ? POOL_SPIN_US_MAX : v;
    }
    return us * 1000;
}

void kiln__parallel_for(int threads, size_t n, kiln__range_fn fn, void *ctx)
{
    if (threads > POOL_MAX) threads = POOL_MAX;
    /* about POOL_CHUNKS_PER_THREAD chunks a thread (at most 512, so the
     * chunk indices fit take_chunk()'s 32 bits); no more threads than
     * chunks */
    const size_t per = (size_t)(threads < 1 ? 1 : threads) * POOL_CHUNKS_PER_THREAD;
    const size_t grain = n > per ? (n + per - 1) / per : 1;
    if ((size_t)threads > (n + grain - 1) / grain) threads = (int)((n + grain - 1) / grain);
    if (threads <= 1 || pthread_mutex_trylock(&busy) != 0) {
        if (n) fn(ctx, 0, n);
        return;
    }
    if (spin_ns < 0) {
        spin_ns = us_setting("KILN_POOL_SPIN_US", POOL_SPIN_US_DEFAULT);
        linger_ns = us_setting("KILN_POOL_LINGER_US", POOL_LINGER_US_DEFAULT);
    }
    /* No job is running (busy is held and the last one finished), so
     * workers are spinning or asleep and none reads job. */
    while (n_workers < threads - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_gen[n_workers + 1] = atomic_load_explicit(&generation, memory_order_relaxed);
        int ok = pthread_create(&t, &attr, worker, (void *)(size_t)(n_workers + 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        n_workers++;
    }
    if (threads > n_workers + 1) threads = n_workers + 1;
    job = (pool_job){fn, ctx, n, threads, grain};
    /* where the caller runs now, for the workers' shares_cpu(): it may
     * have moved since it last waited */
    atomic_store_explicit(&cpu_of[0], sched_getcpu(), memory_order_relaxed);
    atomic_store_explicit(&chunks, (unsigned long long)((n + grain - 1) / grain),
                          memory_order_relaxed);
    atomic_store_explicit(&remaining, n_workers, memory_order_relaxed);
    pthread_mutex_lock(&lock);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
    run_part(&job, 0);
    if (!spin_until(NULL, 0, &remaining, 0)) {
        pthread_mutex_lock(&lock);
        while (atomic_load_explicit(&remaining, memory_order_acquire) > 0)
            pthread_cond_wait(&done, &lock);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_unlock(&busy);
}
