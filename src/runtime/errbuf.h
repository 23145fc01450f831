/*
 * Error detail for internal runtime calls. A function that can fail takes an
 * optional `kiln_errbuf *` (NULL = caller wants no detail) and, on failure,
 * writes one line there saying what went wrong ("idx: data/train.idx: 784
 * bytes short"). The status it returns is the machine-readable part.
 */
#ifndef KILN_RUNTIME_ERRBUF_H
#define KILN_RUNTIME_ERRBUF_H

#include "kiln.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct kiln_errbuf {
    char msg[256];
} kiln_errbuf;

/* Formats a message into `err` (when not NULL) and returns `status`, so an
 * error path is one line: return kiln__fail(err, KILN_ERR_FORMAT, "..."). */
static inline kiln_status kiln__fail(kiln_errbuf *err, kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline kiln_status kiln__fail(kiln_errbuf *err, kiln_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

#endif
