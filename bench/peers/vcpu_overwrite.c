/*
 * What it costs a CPU to overwrite memory another CPU has touched: CPU A
 * times writing a buffer after (1) A itself wrote and read it, (2) A wrote
 * it and CPU B read it (B's copies clean), (3) B wrote and read it (B's
 * copies dirty). A kernel's workspace and the activations of a model run
 * on two threads are overwritten like this from layer to layer. On the
 * AMD EPYC (Zen 4) VM of the README's "2026-12-07" table (400 KB), case 2
 * took 6.5x case 1 when the two vCPUs shared a cache (46 against 7 us)
 * and 18-27x when they did not (186-231 us, vcpu_pingpong's far mode);
 * case 3 1.0-1.3x and 2.5-3.9x. It is why kiln's 1x1 convs on the
 * turned-around GEMM read their input in place rather than pack a copy
 * that both threads read (f32-gemm-t.inc.c, gemm_d_ok()).
 *
 *     build/rel/bench/peers/vcpu_overwrite [CPU_A CPU_B [KB [ROUNDS]]]
 *
 * Defaults: CPUs 0 and 1, 400 KB, 200 rounds. Prints the median
 * microseconds of each case and its ratio to case 1; exits 1 with a
 * reason when a CPU cannot be used.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CASES = 3, OP_WRITE_READ = 1, OP_READ = 2, OP_QUIT = 3 };

static float *buf;
static size_t n_floats;
static int cpu_b = 1;
/* a request to B: (sequence << 2) | op; B answers with the sequence */
static _Atomic long request, answer;
static volatile float sink;

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static void fill(float v)
{
    for (size_t i = 0; i < n_floats; i++) buf[i] = v;
}

static void sum(void)
{
    float s = 0.0f;
    for (size_t i = 0; i < n_floats; i += 16) s += buf[i];
    sink = s;
}

/* CPU B: runs the requests until OP_QUIT. */
static void *other(void *arg)
{
    (void)arg;
    if (pin(cpu_b) != 0) return (void *)1;
    long seen = 0;
    for (;;) {
        long r;
        while ((r = atomic_load_explicit(&request, memory_order_acquire)) == seen) {
        }
        seen = r;
        const int op = (int)(r & 3);
        if (op == OP_QUIT) return NULL;
        if (op == OP_WRITE_READ) fill((float)(r >> 2));
        sum();
        atomic_store_explicit(&answer, r >> 2, memory_order_release);
    }
}

/* Has B run op; returns 0 when B does not answer within about 10 s. */
static int ask(long seq, int op)
{
    atomic_store_explicit(&request, seq << 2 | op, memory_order_release);
    const double t0 = now_us();
    while (atomic_load_explicit(&answer, memory_order_acquire) != seq)
        if (now_us() - t0 > 1e7) return 0;
    return 1;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int cpu_a = 0;
    long kb = 400, rounds = 200;
    if (argc == 2) {
        fprintf(stderr, "usage: vcpu_overwrite [CPU_A CPU_B [KB [ROUNDS]]]\n");
        return 2;
    }
    if (argc > 2) {
        cpu_a = atoi(argv[1]);
        cpu_b = atoi(argv[2]);
    }
    if (argc > 3) kb = atol(argv[3]);
    if (argc > 4) rounds = atol(argv[4]);
    if (cpu_a < 0 || cpu_b < 0 || cpu_a == cpu_b || kb < 1 || kb > 1 << 20 || rounds < 1 ||
        rounds > 100000) {
        fprintf(stderr, "vcpu_overwrite: need two different CPUs, 1 to 1048576 KB and 1 to "
                        "100000 rounds\n");
        return 2;
    }
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || cpu_a >= CPU_SETSIZE ||
        cpu_b >= CPU_SETSIZE || !CPU_ISSET(cpu_a, &allowed) || !CPU_ISSET(cpu_b, &allowed) ||
        pin(cpu_a) != 0) {
        fprintf(stderr, "vcpu_overwrite: this process may not run on CPU %d or %d\n", cpu_a, cpu_b);
        return 1;
    }
    n_floats = (size_t)kb * 1024 / sizeof(float);
    buf = aligned_alloc(64, n_floats * sizeof(float));
    double *us = malloc(sizeof(double) * CASES * (size_t)rounds);
    if (!buf || !us) {
        fprintf(stderr, "vcpu_overwrite: out of memory\n");
        return 1;
    }
    memset(buf, 0, n_floats * sizeof(float));
    pthread_t t;
    if (pthread_create(&t, NULL, other, NULL) != 0) {
        fprintf(stderr, "vcpu_overwrite: cannot start a thread\n");
        return 1;
    }
    long seq = 0;
    for (long r = 0; r < rounds; r++)
        for (int c = 0; c < CASES; c++) {
            /* the state before the timed write */
            if (c == 0) {
                fill((float)r);
                sum();
            } else if (c == 1) {
                fill((float)r);
                if (!ask(++seq, OP_READ)) goto no_answer;
            } else if (!ask(++seq, OP_WRITE_READ)) {
                goto no_answer;
            }
            const double t0 = now_us();
            fill((float)(r + c));
            us[(size_t)c * rounds + r] = now_us() - t0;
        }
    atomic_store_explicit(&request, ++seq << 2 | OP_QUIT, memory_order_release);
    void *rc;
    pthread_join(t, &rc);
    static const char *name[CASES] = {"A wrote and read it", "A wrote it, B read it",
                                      "B wrote and read it"};
    double base = 0.0;
    printf("cpus %d %d, %ld KB, median of %ld rounds: CPU A overwrites a buffer that\n", cpu_a,
           cpu_b, kb, rounds);
    for (int c = 0; c < CASES; c++) {
        double *u = us + (size_t)c * rounds;
        qsort(u, (size_t)rounds, sizeof *u, cmp_double);
        const double med = u[rounds / 2];
        if (c == 0) base = med;
        printf("  %-24s %9.1f us  %5.1fx\n", name[c], med, med / base);
    }
    return 0;
no_answer:
    fprintf(stderr, "vcpu_overwrite: CPU %d does not answer (cannot run there?)\n", cpu_b);
    return 1;
}
