/* A growable byte buffer (see buf.h). */
#include "buf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(buf *b, size_t extra)
{
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = 1;
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void buf_append(buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_puts(buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_printf(buf *b, const char *fmt, ...)
{
    /* One vsnprintf into the room there is (most lines fit 64 bytes), a
     * second only when the result did not fit. */
    if (buf_reserve(b, 64)) return;
    va_list ap;
    va_start(ap, fmt);
    const size_t room = b->cap - b->len;
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->data[b->len] = 0;
        return;
    }
    if ((size_t)n >= room) {
        if (buf_reserve(b, (size_t)n)) {
            b->data[b->len] = 0;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/*
 * printf's "%.9g" of a float (the shortest precision that always reads
 * back as the same float), without printf for 0 and 1e-20 <= |v| < 1e9
 * (every probability but the vanishing ones). The value's 9 significant
 * digits come from exact integer arithmetic on its mantissa and exponent,
 * rounded half to even as glibc does, then laid out as %g does (fixed
 * point for exponents -4 to 8, else d.dddddddde-XX, trailing zeros
 * dropped), so the text is byte for byte printf's (tests/unit/test_buf.c
 * compares them over millions of floats). glibc's "%.9g" goes through
 * multiple-precision arithmetic and took about 4% of a worker's CPU when
 * it answered MNIST requests (five probabilities each, the smallest often
 * below 1e-4). Other values go to snprintf.
 */
int buf_fmt_g9(char out[32], float v)
{
    if (v == 0.0f) return snprintf(out, 32, signbit(v) ? "-0" : "0");
    const float a = fabsf(v);
    if (!(a >= 1e-20f && a < 1e9f)) return snprintf(out, 32, "%.9g", (double)v);
    int e2;
    const double fr = frexp((double)a, &e2);    /* a = fr * 2^e2, fr in [0.5, 1) */
    const uint64_t m = (uint64_t)ldexp(fr, 24); /* a = m * 2^(e2 - 24), exactly */
    const int sh = e2 - 24;                     /* -91 .. 6 */
    /* d = floor(log10(a)), in [-21, 8]: a first guess, then fixed by the
     * exact digits below. */
    int d = (int)floor(log10((double)a));
    if (d < -21) d = -21;
    if (d > 8) d = 8;
    uint64_t q = 0;
    for (int tries = 0; tries < 3; tries++) {
        /* q = round(a * 10^(8 - d)): 9 digits when d is right; the product
         * stays below 2^24 * 10^29 < 2^121 */
        unsigned __int128 num = m;
        for (int s = 8 - d; s > 0; s--) num *= 10;
        if (sh >= 0) {
            q = (uint64_t)(num << sh);
        } else {
            const unsigned __int128 half = (unsigned __int128)1 << (-sh - 1);
            const unsigned __int128 rem = num & ((half << 1) - 1);
            q = (uint64_t)(num >> -sh);
            if (rem > half || (rem == half && (q & 1))) q++;
        }
        if (q < 100000000u && d > -21) {
            d--;
            continue;
        }
        if (q >= 1000000000u && d < 8) {
            if (q == 1000000000u) { /* rounded up to a new digit */
                q = 100000000u;
                d++;
                break;
            }
            d++;
            continue;
        }
        break;
    }
    if (q < 100000000u || q >= 1000000000u) return snprintf(out, 32, "%.9g", (double)v);
    char dig[9];
    for (int i = 8; i >= 0; i--, q /= 10) dig[i] = (char)('0' + q % 10);
    int last = 8; /* the last significant digit kept */
    while (last > 0 && dig[last] == '0') last--;
    int n = 0;
    if (signbit(v)) out[n++] = '-';
    if (d >= 0) { /* fixed point, d + 1 digits before the point */
        for (int i = 0; i <= d; i++) out[n++] = dig[i];
        if (last > d) {
            out[n++] = '.';
            for (int i = d + 1; i <= last; i++) out[n++] = dig[i];
        }
    } else if (d >= -4) { /* 0.000ddd */
        out[n++] = '0';
        out[n++] = '.';
        for (int i = -1; i > d; i--) out[n++] = '0';
        for (int i = 0; i <= last; i++) out[n++] = dig[i];
    } else { /* d.dddde-XX */
        out[n++] = dig[0];
        if (last > 0) {
            out[n++] = '.';
            for (int i = 1; i <= last; i++) out[n++] = dig[i];
        }
        out[n++] = 'e';
        out[n++] = '-';
        out[n++] = (char)('0' + -d / 10);
        out[n++] = (char)('0' + -d % 10);
    }
    out[n] = 0;
    return n;
}

char *buf_fmt_u64(char *p, unsigned long long v)
{
    char t[24];
    int n = sizeof t;
    do {
        t[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(p, t + n, sizeof t - (size_t)n);
    return p + (sizeof t - (size_t)n);
}

void buf_put_u64(buf *b, unsigned long long v)
{
    char t[24];
    buf_append(b, t, (size_t)(buf_fmt_u64(t, v) - t));
}

void buf_put_i64(buf *b, long long v)
{
    if (v < 0) {
        buf_append(b, "-", 1);
        buf_put_u64(b, 0ull - (unsigned long long)v);
    } else {
        buf_put_u64(b, (unsigned long long)v);
    }
}

void buf_put_g9(buf *b, float v)
{
    char t[32];
    const int n = buf_fmt_g9(t, v);
    if (n > 0) buf_append(b, t, (size_t)n);
}

void buf_consume(buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = 0;
}

void buf_free(buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}
