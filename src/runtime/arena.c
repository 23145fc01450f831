/*
 * Bump-pointer arena over one aligned block. The compile phase of a model
 * plans every intermediate tensor to an offset in one arena, so running the
 * model allocates nothing.
 */
#include "hugemem.h"
#include "kiln.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

struct kiln_arena {
    unsigned char *base; /* KILN_ALIGN-aligned */
    size_t capacity;
    size_t used; /* invariant: used <= capacity */
    size_t peak; /* invariant: used <= peak <= capacity */
    int owned;   /* base is ours to free */
    size_t span; /* owned and mapped with kr_huge_alloc: the length to munmap */
};

void *kr_huge_alloc(size_t n, size_t *span)
{
    size_t len = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE, map_len = len + HUGE_PAGE;
    unsigned char *m =
        mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    unsigned char *base =
        (unsigned char *)(((uintptr_t)m + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    /* Give back the slack before and after the aligned span. */
    if (base > m) munmap(m, (size_t)(base - m));
    size_t tail = (size_t)(m + map_len - (base + len));
    if (tail) munmap(base + len, tail);
    madvise(base, len, MADV_HUGEPAGE); /* advice: without THP this is plain memory */
    *span = len;
    return base;
}

kiln_status kiln_arena_create(size_t capacity, kiln_arena **out)
{
    if (!out) return KILN_ERR_INVALID_ARG;
    *out = NULL;
    if (capacity > SIZE_MAX - KILN_ALIGN) return KILN_ERR_RANGE;
    size_t size = (capacity + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN;
    kiln_arena *a = calloc(1, sizeof *a);
    if (!a) return KILN_ERR_NO_MEMORY;
    /* An arena of a few MiB or more (ResNet50's is 14 MB) gets huge pages:
     * a fresh process's first run then takes a handful of page faults for
     * it rather than one per 4 KiB. */
    if (size >= HUGE_PAGE) a->base = kr_huge_alloc(size, &a->span);
    if (!a->base) a->base = aligned_alloc(KILN_ALIGN, size ? size : KILN_ALIGN);
    if (!a->base) {
        free(a);
        return KILN_ERR_NO_MEMORY;
    }
    a->capacity = capacity;
    a->owned = 1;
    *out = a;
    return KILN_OK;
}

kiln_status kiln_arena_wrap(void *buffer, size_t capacity, kiln_arena **out)
{
    if (!out) return KILN_ERR_INVALID_ARG;
    *out = NULL;
    if ((!buffer && capacity) || ((uintptr_t)buffer % KILN_ALIGN)) return KILN_ERR_INVALID_ARG;
    kiln_arena *a = calloc(1, sizeof *a);
    if (!a) return KILN_ERR_NO_MEMORY;
    a->base = buffer;
    a->capacity = capacity;
    *out = a;
    return KILN_OK;
}

void kiln_arena_destroy(kiln_arena *a)
{
    if (!a) return;
    if (a->owned && a->span)
        munmap(a->base, a->span);
    else if (a->owned)
        free(a->base);
    free(a);
}

void *kiln_arena_alloc(kiln_arena *a, size_t size, size_t align)
{
    if (!a) return NULL;
    if (align == 0) align = KILN_ALIGN;
    if (align & (align - 1)) return NULL;
    uintptr_t base = (uintptr_t)a->base;
    uintptr_t cur = base + a->used;
    size_t pad = (size_t)((align - (cur & (align - 1))) & (align - 1));
    if (pad > a->capacity - a->used || size > a->capacity - a->used - pad) return NULL;
    a->used += pad + size;
    if (a->used > a->peak) a->peak = a->used;
    return (void *)(cur + pad);
}

kiln_status kiln_arena_tensor(kiln_arena *a, kiln_tensor *t, kiln_dtype dtype, int ndim,
                              const int64_t *shape)
{
    if (!a) return KILN_ERR_INVALID_ARG;
    kiln_status st = kiln_tensor_init(t, dtype, ndim, shape);
    if (st != KILN_OK) return st;
    int64_t bytes;
    if ((st = kiln_tensor_nbytes(t, &bytes)) != KILN_OK) return st;
    if ((uint64_t)bytes > SIZE_MAX) return KILN_ERR_RANGE;
    void *p = kiln_arena_alloc(a, (size_t)bytes, KILN_ALIGN);
    if (!p) return KILN_ERR_NO_MEMORY;
    t->data = p;
    return KILN_OK;
}

void *kiln_arena_at(kiln_arena *a, size_t offset, size_t size)
{
    if (!a || offset > a->capacity || size > a->capacity - offset) return NULL;
    return a->base + offset;
}

size_t kiln_arena_mark(const kiln_arena *a)
{
    return a ? a->used : 0;
}

void kiln_arena_reset(kiln_arena *a, size_t mark)
{
    if (a && mark <= a->used) a->used = mark;
}

size_t kiln_arena_used(const kiln_arena *a)
{
    return a ? a->used : 0;
}

size_t kiln_arena_capacity(const kiln_arena *a)
{
    return a ? a->capacity : 0;
}

size_t kiln_arena_peak(const kiln_arena *a)
{
    return a ? a->peak : 0;
}
