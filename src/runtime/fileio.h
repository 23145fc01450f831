/* Whole-file reads with a size limit, plain or gzip'ed, for loaders. */
#ifndef KILN_RUNTIME_FILEIO_H
#define KILN_RUNTIME_FILEIO_H

#include "errbuf.h"
#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

/* Reads the whole file at `path` into a malloc'ed buffer (*data, *len; the
 * caller frees *data). A file longer than max_bytes is KILN_ERR_LIMIT; a
 * missing one KILN_ERR_NOT_FOUND; other failures KILN_ERR_IO. */
kiln_status kiln__read_file(const char *path, int64_t max_bytes, uint8_t **data, size_t *len,
                            kiln_errbuf *err);

/* Reads exactly n bytes at offset off of fd into buf, retrying short
 * reads and EINTR. 0, or -1 with errno set (EIO when the file ends first). */
int kiln__pread_full(int fd, void *buf, size_t n, int64_t off);

/* Like kiln__read_file(), but a gzip'ed file is inflated (zlib; a file that
 * is not gzip'ed is read as it is). max_bytes limits the inflated size. A
 * corrupt or truncated gzip stream is KILN_ERR_FORMAT. */
kiln_status kiln__read_file_gz(const char *path, int64_t max_bytes, uint8_t **data, size_t *len,
                               kiln_errbuf *err);

#endif
