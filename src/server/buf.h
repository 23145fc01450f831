/* A growable byte buffer used to build responses and frames. */
#ifndef KILN_SERVER_BUF_H
#define KILN_SERVER_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
    int oom; /* set once an allocation failed; later appends do nothing */
} buf;

int buf_reserve(buf *b, size_t extra);
void buf_append(buf *b, const void *p, size_t n);
void buf_puts(buf *b, const char *s);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the decimal digits of v (printf's "%llu"; a minus sign first
 * for buf_put_i64's negative values): the response paths' numbers without
 * printf. */
void buf_put_u64(buf *b, unsigned long long v);
void buf_put_i64(buf *b, long long v);
/* The same digits at p (no NUL); returns the end. */
char *buf_fmt_u64(char *p, unsigned long long v);
/* printf's "%.9g" of v into out (NUL-terminated); returns its length. */
int buf_fmt_g9(char out[32], float v);
/* Appends buf_fmt_g9(v). */
void buf_put_g9(buf *b, float v);
/* Drops the first n bytes. */
void buf_consume(buf *b, size_t n);
void buf_free(buf *b);

#endif
