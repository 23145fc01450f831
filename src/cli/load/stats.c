/* Exact statistics over every recorded duration: the runs are bounded, so
 * keeping each sample (8 bytes) and sorting once is simpler and more exact
 * than a histogram. */
#include "load.h"

#include <stdlib.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void load_sort_u64(uint64_t *v, size_t n)
{
    if (n > 1) qsort(v, n, sizeof *v, cmp_u64);
}

double load_percentile_sorted(const uint64_t *sorted, size_t n, double p)
{
    if (n == 0) return 0;
    if (p <= 0) return (double)sorted[0];
    if (p >= 100) return (double)sorted[n - 1];
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)rank;
    double frac = rank - (double)lo;
    if (lo + 1 >= n) return (double)sorted[n - 1];
    return (double)sorted[lo] + ((double)sorted[lo + 1] - (double)sorted[lo]) * frac;
}

int load_samples_push(load_samples *s, uint64_t x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint64_t *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

void load_samples_free(load_samples *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

void load_trend_of(uint64_t *v, size_t n, load_trend *out)
{
    *out = (load_trend){.count = n};
    if (n == 0) return;
    load_sort_u64(v, n);
    long double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    out->avg = (double)(sum / n);
    out->min = (double)v[0];
    out->max = (double)v[n - 1];
    out->med = load_percentile_sorted(v, n, 50);
    out->p90 = load_percentile_sorted(v, n, 90);
    out->p95 = load_percentile_sorted(v, n, 95);
    out->p99 = load_percentile_sorted(v, n, 99);
}
