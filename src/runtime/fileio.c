/* Whole-file reads with a size limit, plain or gzip'ed. */
#include "fileio.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

int kiln__pread_full(int fd, void *buf, size_t n, int64_t off)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + (int64_t)got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

kiln_status kiln__read_file(const char *path, int64_t max_bytes, uint8_t **data, size_t *len,
                            kiln_errbuf *err)
{
    if (!path || !data || !len) return kiln__fail(err, KILN_ERR_INVALID_ARG, "read: no path");
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kiln__fail(err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, "%s: %s", path,
                          strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return kiln__fail(err, KILN_ERR_IO, "%s: not a regular file", path);
    }
    if (max_bytes > 0 && sb.st_size > max_bytes) {
        fclose(f);
        return kiln__fail(err, KILN_ERR_LIMIT, "%s: %lld bytes, more than the limit of %lld", path,
                          (long long)sb.st_size, (long long)max_bytes);
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        fclose(f);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes", path, size);
    }
    size_t got = fread(buf, 1, size, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || got != size) {
        free(buf);
        return kiln__fail(err, KILN_ERR_IO, "%s: read %zu of %zu bytes", path, got, size);
    }
    *data = buf;
    *len = size;
    return KILN_OK;
}

kiln_status kiln__read_file_gz(const char *path, int64_t max_bytes, uint8_t **data, size_t *len,
                               kiln_errbuf *err)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    kiln_status st = kiln__read_file(path, 0, &raw, &raw_len, err);
    if (st != KILN_OK) return st;
    if (raw_len < 2 || raw[0] != 0x1f || raw[1] != 0x8b) {
        if (max_bytes > 0 && (int64_t)raw_len > max_bytes) {
            free(raw);
            return kiln__fail(err, KILN_ERR_LIMIT, "%s: %zu bytes, more than the limit of %lld",
                              path, raw_len, (long long)max_bytes);
        }
        *data = raw;
        *len = raw_len;
        return KILN_OK;
    }

    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 15 + 16) != Z_OK) { /* 16: gzip wrapper only */
        free(raw);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: inflateInit failed", path);
    }
    /* Start from 4x the compressed size and double; the gzip trailer's size
     * field is only the size modulo 2^32, so it is not trusted. */
    size_t cap = raw_len < ((size_t)1 << 28) ? raw_len * 4 : raw_len;
    uint8_t *out = malloc(cap);
    if (!out) {
        inflateEnd(&zs);
        free(raw);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes", path, cap);
    }
    zs.next_in = raw;
    zs.avail_in = (uInt)(raw_len > UINT32_MAX ? UINT32_MAX : raw_len);
    size_t in_left = raw_len - zs.avail_in;
    size_t used = 0;
    int rc;
    for (;;) {
        if (used == cap) {
            /* One byte past the limit tells "exactly max_bytes" from "more". */
            if (max_bytes > 0 && (int64_t)cap > max_bytes) {
                st = kiln__fail(err, KILN_ERR_LIMIT,
                                "%s: inflates to more than the limit of %lld bytes", path,
                                (long long)max_bytes);
                goto fail;
            }
            size_t ncap = cap * 2;
            if (max_bytes > 0 && (int64_t)ncap > max_bytes) ncap = (size_t)max_bytes + 1;
            uint8_t *n = realloc(out, ncap);
            if (!n) {
                st = kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes", path,
                                ncap);
                goto fail;
            }
            out = n;
            cap = ncap;
        }
        size_t room = cap - used;
        zs.next_out = out + used;
        zs.avail_out = (uInt)(room > UINT32_MAX ? UINT32_MAX : room);
        uInt before = zs.avail_out;
        if (zs.avail_in == 0 && in_left > 0) {
            zs.avail_in = (uInt)(in_left > UINT32_MAX ? UINT32_MAX : in_left);
            in_left -= zs.avail_in;
        }
        rc = inflate(&zs, Z_NO_FLUSH);
        used += before - zs.avail_out;
        if (rc == Z_STREAM_END) {
            if (max_bytes > 0 && (int64_t)used > max_bytes) {
                st = kiln__fail(err, KILN_ERR_LIMIT,
                                "%s: inflates to more than the limit of %lld bytes", path,
                                (long long)max_bytes);
                goto fail;
            }
            break;
        }
        if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0) {
            st = kiln__fail(err, KILN_ERR_FORMAT, "%s: truncated gzip stream", path);
            goto fail;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            st = kiln__fail(err, KILN_ERR_FORMAT, "%s: corrupt gzip stream (%s)", path,
                            zs.msg ? zs.msg : "inflate error");
            goto fail;
        }
    }
    inflateEnd(&zs);
    free(raw);
    *data = out;
    *len = used;
    return KILN_OK;
fail:
    inflateEnd(&zs);
    free(raw);
    free(out);
    return st;
}
