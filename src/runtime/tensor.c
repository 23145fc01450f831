/*
 * Tensor descriptors: contiguous allocation, views (slice, reshape,
 * permute) and strided copies. Every size computation is overflow-checked:
 * a shape from a file or a request cannot make a small allocation that is
 * later indexed as a big one.
 */
#include "kiln.h"

#include <stdlib.h>
#include <string.h>

size_t kiln_dtype_size(kiln_dtype dtype)
{
    return dtype == KILN_F32 ? sizeof(float) : 0;
}

/* Product of n non-negative factors, or -1 on overflow past INT64_MAX. */
static int64_t checked_product(const int64_t *v, int n)
{
    int64_t p = 1;
    for (int i = 0; i < n; i++) {
        if (v[i] < 0) return -1;
        if (v[i] != 0 && p > INT64_MAX / v[i]) return -1;
        p *= v[i];
    }
    return p;
}

kiln_status kiln_tensor_init(kiln_tensor *t, kiln_dtype dtype, int ndim, const int64_t *shape)
{
    if (!t || ndim < 0 || ndim > KILN_MAX_DIMS || (ndim > 0 && !shape)) return KILN_ERR_INVALID_ARG;
    if (kiln_dtype_size(dtype) == 0) return KILN_ERR_DTYPE;
    memset(t, 0, sizeof *t);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) return KILN_ERR_INVALID_ARG;
    if (checked_product(shape, ndim) < 0) return KILN_ERR_RANGE;
    t->dtype = dtype;
    t->ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->strides[i] = stride;
        stride *= shape[i] ? shape[i] : 1;
    }
    return KILN_OK;
}

kiln_status kiln_tensor_numel(const kiln_tensor *t, int64_t *out)
{
    if (!t || !out) return KILN_ERR_INVALID_ARG;
    int64_t n = checked_product(t->shape, t->ndim);
    if (n < 0) return KILN_ERR_RANGE;
    *out = n;
    return KILN_OK;
}

kiln_status kiln_tensor_nbytes(const kiln_tensor *t, int64_t *out)
{
    int64_t n;
    kiln_status st = kiln_tensor_numel(t, &n);
    if (st != KILN_OK) return st;
    int64_t es = (int64_t)kiln_dtype_size(t->dtype);
    if (es == 0) return KILN_ERR_DTYPE;
    if (n > INT64_MAX / es) return KILN_ERR_RANGE;
    *out = n * es;
    return KILN_OK;
}

kiln_status kiln_tensor_alloc(kiln_tensor *t, kiln_dtype dtype, int ndim, const int64_t *shape)
{
    kiln_status st = kiln_tensor_init(t, dtype, ndim, shape);
    if (st != KILN_OK) return st;
    int64_t bytes;
    if ((st = kiln_tensor_nbytes(t, &bytes)) != KILN_OK) return st;
    if ((uint64_t)bytes > SIZE_MAX - KILN_ALIGN) return KILN_ERR_RANGE;
    /* aligned_alloc wants a multiple of the alignment; never ask for 0. */
    size_t size = ((size_t)bytes + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN;
    if (size == 0) size = KILN_ALIGN;
    float *data = aligned_alloc(KILN_ALIGN, size);
    if (!data) return KILN_ERR_NO_MEMORY;
    memset(data, 0, size);
    t->data = data;
    t->flags |= KILN_TENSOR_OWNS_DATA;
    return KILN_OK;
}

void kiln_tensor_free(kiln_tensor *t)
{
    if (!t) return;
    if (t->flags & KILN_TENSOR_OWNS_DATA) free(t->data);
    memset(t, 0, sizeof *t);
}

int kiln_tensor_is_contiguous(const kiln_tensor *t)
{
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (t->strides[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

float *kiln_tensor_at(const kiln_tensor *t, const int64_t *index)
{
    if (!t || !t->data || (t->ndim > 0 && !index)) return NULL;
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (index[i] < 0 || index[i] >= t->shape[i]) return NULL;
        off += index[i] * t->strides[i];
    }
    return t->data + off;
}

kiln_status kiln_tensor_slice(const kiln_tensor *src, int dim, int64_t start, int64_t stop,
                              int64_t step, kiln_tensor *view)
{
    if (!src || !view || dim < 0 || dim >= src->ndim || step <= 0 || start < 0 || stop < start)
        return KILN_ERR_INVALID_ARG;
    int64_t n = src->shape[dim];
    if (start > n) start = n;
    if (stop > n) stop = n;
    kiln_tensor v = *src;
    v.flags &= ~KILN_TENSOR_OWNS_DATA;
    v.shape[dim] = (stop - start + step - 1) / step;
    if (v.shape[dim] > 0 && src->data) v.data = src->data + start * src->strides[dim];
    v.strides[dim] = src->strides[dim] * step;
    *view = v;
    return KILN_OK;
}

kiln_status kiln_tensor_reshape(const kiln_tensor *src, int ndim, const int64_t *shape,
                                kiln_tensor *view)
{
    if (!src || !view || ndim < 0 || ndim > KILN_MAX_DIMS || (ndim > 0 && !shape))
        return KILN_ERR_INVALID_ARG;
    if (!kiln_tensor_is_contiguous(src)) return KILN_ERR_STATE;
    int64_t total;
    kiln_status st = kiln_tensor_numel(src, &total);
    if (st != KILN_OK) return st;
    int64_t dims[KILN_MAX_DIMS];
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) return KILN_ERR_INVALID_ARG;
            infer = i;
        } else if (shape[i] < 0) {
            return KILN_ERR_INVALID_ARG;
        } else {
            if (shape[i] != 0 && known > INT64_MAX / shape[i]) return KILN_ERR_RANGE;
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || total % known) return KILN_ERR_SHAPE;
        dims[infer] = total / known;
        known = total;
    }
    if (known != total) return KILN_ERR_SHAPE;
    kiln_tensor v;
    if ((st = kiln_tensor_init(&v, src->dtype, ndim, dims)) != KILN_OK) return st;
    v.data = src->data;
    *view = v;
    return KILN_OK;
}

kiln_status kiln_tensor_permute(const kiln_tensor *src, const int *perm, kiln_tensor *view)
{
    if (!src || !view || (src->ndim > 0 && !perm)) return KILN_ERR_INVALID_ARG;
    int seen[KILN_MAX_DIMS] = {0};
    kiln_tensor v = *src;
    v.flags &= ~KILN_TENSOR_OWNS_DATA;
    for (int i = 0; i < src->ndim; i++) {
        int p = perm[i];
        if (p < 0 || p >= src->ndim || seen[p]++) return KILN_ERR_INVALID_ARG;
        v.shape[i] = src->shape[p];
        v.strides[i] = src->strides[p];
    }
    *view = v;
    return KILN_OK;
}

/* Copies one dimension at a time; the innermost dimension is a tight loop. */
static void copy_dim(float *d, const int64_t *dstr, const float *s, const int64_t *sstr,
                     const int64_t *shape, int ndim)
{
    if (ndim == 1) {
        for (int64_t i = 0; i < shape[0]; i++) d[i * dstr[0]] = s[i * sstr[0]];
        return;
    }
    for (int64_t i = 0; i < shape[0]; i++)
        copy_dim(d + i * dstr[0], dstr + 1, s + i * sstr[0], sstr + 1, shape + 1, ndim - 1);
}

kiln_status kiln_tensor_copy(kiln_tensor *dst, const kiln_tensor *src)
{
    if (!dst || !src || dst->dtype != src->dtype) return KILN_ERR_INVALID_ARG;
    if (dst->ndim != src->ndim) return KILN_ERR_SHAPE;
    for (int i = 0; i < src->ndim; i++)
        if (dst->shape[i] != src->shape[i]) return KILN_ERR_SHAPE;
    int64_t n;
    kiln_status st = kiln_tensor_numel(src, &n);
    if (st != KILN_OK) return st;
    if (n == 0) return KILN_OK;
    if (!dst->data || !src->data) return KILN_ERR_INVALID_ARG;
    if (src->ndim == 0) {
        dst->data[0] = src->data[0];
        return KILN_OK;
    }
    if (kiln_tensor_is_contiguous(dst) && kiln_tensor_is_contiguous(src)) {
        memmove(dst->data, src->data, (size_t)n * kiln_dtype_size(src->dtype));
        return KILN_OK;
    }
    copy_dim(dst->data, dst->strides, src->data, src->strides, src->shape, src->ndim);
    return KILN_OK;
}
