/*
 * Helpers for the kernel tests: deterministic random data, the normalized
 * error used to compare a path with the ref oracle, and the list of ISA
 * tables this build and CPU can run.
 *
 * nmse(out, ref) = sum((out - ref)^2) / sum(ref^2), as in ggml's
 * test-backend-ops. Float rounding over K-term dot products gives about
 * K * 2^-48 (< 1e-10 for every K here); one wrong or missing term gives
 * about 1/K (> 1e-5), so KCHECK_NMSE sits between the two.
 */
#ifndef KILN_TESTS_KERNEL_CHECK_H
#define KILN_TESTS_KERNEL_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define KCHECK_NMSE 1e-9

typedef struct kcheck_rng {
    uint64_t s;
} kcheck_rng;

static inline uint32_t kcheck_next(kcheck_rng *r)
{
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return (uint32_t)(r->s >> 16);
}

/* Uniform integer in [lo, hi]. */
static inline int kcheck_int(kcheck_rng *r, int lo, int hi)
{
    return lo + (int)(kcheck_next(r) % (uint32_t)(hi - lo + 1));
}

static inline float kcheck_float(kcheck_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)(kcheck_next(r) & 0xffffff) / (float)0x1000000;
}

static inline void kcheck_fill(kcheck_rng *r, float *p, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) p[i] = kcheck_float(r, lo, hi);
}

/* 64-byte aligned, NaN-filled (so unwritten outputs fail), freed by free(). */
static inline float *kcheck_alloc(size_t count)
{
    size_t bytes = (count * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) abort();
    for (size_t i = 0; i < bytes / sizeof(float); i++) p[i] = NAN;
    return p;
}

static inline void *kcheck_workspace(size_t bytes)
{
    void *p = aligned_alloc(64, bytes ? (bytes + 63) & ~(size_t)63 : 64);
    if (!p) abort();
    memset(p, 0xA5, bytes);
    return p;
}

/* NaN or Inf in out where ref is finite counts as infinite error. */
static inline double kcheck_nmse(const float *out, const float *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(ref[i]) && !isfinite(out[i])) return INFINITY;
        if (!isfinite(ref[i])) {
            if (out[i] != ref[i]) return INFINITY;
            continue;
        }
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0.0 ? num / den : num;
}

/* Quick mode (KILN_TEST_QUICK set, e.g. under qemu): smaller grids. */
static inline int kcheck_quick(void)
{
    const char *q = getenv("KILN_TEST_QUICK");
    return q && *q && strcmp(q, "0");
}

/* The thread count a test asks for, or 1 in quick mode: OpenBLAS's
 * threads crawl under qemu-user (scripts/test runs it with
 * OPENBLAS_NUM_THREADS=1, which kiln_blas_set_threads() would override). */
static inline int kcheck_threads(int threads)
{
    return kcheck_quick() ? 1 : threads;
}

/* The optimised tables to compare with ref: every non-ref ISA this build
 * has and this CPU runs. Returns how many were put in out[]. */
static inline int kcheck_isas(const kiln_kernels **out)
{
    int n = 0;
    for (int i = 0; i < KILN_ISA_COUNT_; i++) {
        if (i == KILN_ISA_REF || !kiln_isa_supported((kiln_isa)i)) continue;
        const kiln_kernels *k = kiln_kernels_for((kiln_isa)i);
        if (k) out[n++] = k;
    }
    return n;
}

#endif
