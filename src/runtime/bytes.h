/*
 * Little-endian byte buffers: a growable writer and a bounds-checked reader.
 * The reader never reads past its end: a short buffer sets `bad` and every
 * later read returns zeros, so a parser checks `bad` once per record.
 */
#ifndef KILN_RUNTIME_BYTES_H
#define KILN_RUNTIME_BYTES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct kb_writer {
    unsigned char *buf;
    size_t len, cap;
    int oom; /* an allocation failed; the contents are incomplete */
} kb_writer;

static inline void kb_put(kb_writer *w, const void *p, size_t n)
{
    if (w->oom) return;
    if (n > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->oom = 1;
                return;
            }
            cap *= 2;
        }
        unsigned char *b = realloc(w->buf, cap);
        if (!b) {
            w->oom = 1;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    if (n) memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static inline void kb_u8(kb_writer *w, uint8_t v)
{
    kb_put(w, &v, 1);
}

static inline void kb_u32(kb_writer *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    kb_put(w, b, 4);
}

static inline void kb_u64(kb_writer *w, uint64_t v)
{
    kb_u32(w, (uint32_t)v);
    kb_u32(w, (uint32_t)(v >> 32));
}

static inline void kb_i32(kb_writer *w, int32_t v)
{
    kb_u32(w, (uint32_t)v);
}

static inline void kb_i64(kb_writer *w, int64_t v)
{
    kb_u64(w, (uint64_t)v);
}

static inline void kb_f32(kb_writer *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    kb_u32(w, v);
}

static inline void kb_str(kb_writer *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    kb_u32(w, (uint32_t)n);
    kb_put(w, s, n);
}

/* Pads with zeros to a multiple of `align`. */
static inline void kb_align(kb_writer *w, size_t align)
{
    static const unsigned char zeros[64];
    while (!w->oom && w->len % align) {
        size_t n = align - w->len % align;
        kb_put(w, zeros, n < sizeof zeros ? n : sizeof zeros);
    }
}

static inline void kb_writer_free(kb_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

typedef struct kb_reader {
    const unsigned char *p;
    size_t len, pos;
    int bad; /* a read went past the end or a value was invalid */
} kb_reader;

static inline const unsigned char *kb_take(kb_reader *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const unsigned char *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static inline uint8_t kb_get_u8(kb_reader *r)
{
    const unsigned char *p = kb_take(r, 1);
    return p ? p[0] : 0;
}

static inline uint32_t kb_get_u32(kb_reader *r)
{
    const unsigned char *p = kb_take(r, 4);
    if (!p) return 0;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t kb_get_u64(kb_reader *r)
{
    uint64_t lo = kb_get_u32(r);
    return lo | (uint64_t)kb_get_u32(r) << 32;
}

static inline int32_t kb_get_i32(kb_reader *r)
{
    return (int32_t)kb_get_u32(r);
}

static inline int64_t kb_get_i64(kb_reader *r)
{
    return (int64_t)kb_get_u64(r);
}

static inline float kb_get_f32(kb_reader *r)
{
    uint32_t v = kb_get_u32(r);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* A malloc'd NUL-terminated copy of a length-prefixed string (at most
 * `max` bytes; embedded NULs are invalid), or NULL with r->bad set (or
 * NULL on out-of-memory with bad clear). */
static inline char *kb_get_str(kb_reader *r, size_t max)
{
    uint32_t n = kb_get_u32(r);
    if (n > max) r->bad = 1;
    const unsigned char *p = kb_take(r, n);
    if (!p) return NULL;
    if (memchr(p, 0, n)) {
        r->bad = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

#endif
