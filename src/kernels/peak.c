/*
 * The machine's FMA peak, measured rather than looked up: the same CPU
 * model runs AVX-512 at full or half rate depending on its generation,
 * so `kiln bench kernels` reports every kernel as a fraction of this.
 */
#include "internal.h"
#include "kiln_config.h"

#include <pthread.h>
#include <time.h>

typedef double (*fma_loop_fn)(long iters);

typedef struct peak_job {
    fma_loop_fn loop;
    long iters;
    double seconds;
} peak_job;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *peak_thread(void *arg)
{
    peak_job *j = arg;
    double t0 = now_s();
    j->loop(j->iters);
    j->seconds = now_s() - t0;
    return NULL;
}

static fma_loop_fn loop_for(kiln_isa isa)
{
    switch (isa) {
#if KILN_HAVE_AVX2
    case KILN_ISA_AVX2:
        return kiln__fma_loop_avx2;
#endif
#if KILN_HAVE_AVX512
    case KILN_ISA_AVX512:
        return kiln__fma_loop_avx512;
#endif
#if KILN_HAVE_NEON
    case KILN_ISA_NEON:
        return kiln__fma_loop_neon;
#endif
    default:
        return NULL;
    }
}

/* One round: every thread runs `iters`; returns the total GFLOP/s. */
static double peak_round(fma_loop_fn loop, long iters, double flops_per_iter, int threads)
{
    peak_job jobs[256];
    pthread_t tids[256];
    int started = 0;
    for (int i = 0; i < threads; i++) {
        jobs[i] = (peak_job){loop, iters, 0.0};
        if (i == 0) continue;
        if (pthread_create(&tids[i], NULL, peak_thread, &jobs[i]) != 0) break;
        started = i;
    }
    peak_thread(&jobs[0]);
    for (int i = 1; i <= started; i++) pthread_join(tids[i], NULL);
    double total = 0.0;
    for (int i = 0; i <= started; i++)
        if (jobs[i].seconds > 0) total += flops_per_iter * iters / jobs[i].seconds;
    return total * 1e-9;
}

double kiln_kernels_fma_peak(kiln_isa isa, int threads, double seconds)
{
    fma_loop_fn loop = loop_for(isa);
    if (!loop || !kiln_isa_supported(isa)) return 0.0;
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    /* Calibrate rounds of ~5 ms on one thread, then keep the best round:
     * on a shared machine interference only ever lowers a round. */
    long iters = 1 << 16;
    double t0 = now_s(), flops_per_iter = loop(iters) / iters;
    double dt = now_s() - t0;
    if (dt > 0) iters = (long)(iters * (0.005 / dt));
    if (iters < 1 << 14) iters = 1 << 14;
    double best = 0.0, start = now_s();
    do {
        double p = peak_round(loop, iters, flops_per_iter, threads);
        if (p > best) best = p;
    } while (now_s() - start < seconds);
    return best;
}
