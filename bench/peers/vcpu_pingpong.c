/*
 * How far apart two CPUs are: two threads, pinned one to each, pass one
 * cache line back and forth, and the mean round trip is printed. On a VM
 * the host may put its vCPUs on cores that share a cache (tens of ns) or
 * on cores far apart (hundreds), and it may change that from minute to
 * minute; kiln at 2 threads is slower in the second case (README,
 * "2026-12-06, late night"), so a benchmark of 2 threads is worth
 * labelling with this.
 *
 *     build/rel/bench/peers/vcpu_pingpong [CPU_A CPU_B [ROUND_TRIPS]]
 *
 * Defaults: CPUs 0 and 1, 1000000 round trips. Prints
 * "cpus A B: round trip N ns"; exits 1 with a reason when a CPU cannot be
 * used.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic long ball __attribute__((aligned(64)));
static long trips = 1000000;
static int cpu_b = 1;

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* The second thread: returns each odd value as the next even one. */
static void *back(void *arg)
{
    (void)arg;
    if (pin(cpu_b) != 0) return (void *)1;
    for (long i = 1; i < 2 * trips; i += 2) {
        while (atomic_load_explicit(&ball, memory_order_acquire) != i) {
        }
        atomic_store_explicit(&ball, i + 1, memory_order_release);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int cpu_a = 0;
    if (argc > 1 && argc < 3) {
        fprintf(stderr, "usage: vcpu_pingpong [CPU_A CPU_B [ROUND_TRIPS]]\n");
        return 2;
    }
    if (argc > 2) {
        cpu_a = atoi(argv[1]);
        cpu_b = atoi(argv[2]);
    }
    if (argc > 3) trips = atol(argv[3]);
    if (trips < 1 || cpu_a < 0 || cpu_b < 0 || cpu_a == cpu_b) {
        fprintf(stderr, "vcpu_pingpong: need two different CPUs and at least one round trip\n");
        return 2;
    }
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || cpu_a >= CPU_SETSIZE ||
        cpu_b >= CPU_SETSIZE || !CPU_ISSET(cpu_a, &allowed) || !CPU_ISSET(cpu_b, &allowed)) {
        fprintf(stderr, "vcpu_pingpong: this process may not run on CPU %d or %d\n", cpu_a, cpu_b);
        return 1;
    }
    if (pin(cpu_a) != 0) {
        fprintf(stderr, "vcpu_pingpong: cannot run on CPU %d\n", cpu_a);
        return 1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, back, NULL) != 0) {
        fprintf(stderr, "vcpu_pingpong: cannot start a thread\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* a thread that could not pin itself never answers: a bounded wait */
    for (long i = 0; i < 2 * trips; i += 2) {
        long spins = 0;
        while (atomic_load_explicit(&ball, memory_order_acquire) != i)
            if (++spins > 2000000000L) {
                fprintf(stderr, "vcpu_pingpong: CPU %d does not answer\n", cpu_b);
                return 1;
            }
        atomic_store_explicit(&ball, i + 1, memory_order_release);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    void *rc;
    pthread_join(t, &rc);
    if (rc) {
        fprintf(stderr, "vcpu_pingpong: cannot run on CPU %d\n", cpu_b);
        return 1;
    }
    const double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    printf("cpus %d %d: round trip %.1f ns\n", cpu_a, cpu_b, ns / (double)trips);
    return 0;
}
