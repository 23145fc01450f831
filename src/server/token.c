/*
 * The bearer token of a data dir: <data>/token, 32 random bytes as 64 hex
 * digits, mode 0600, created once. Compared in constant time.
 */
#include "store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static int hex_digit(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static store_status read_token(const char *path, int fd, char token[STORE_TOKEN_HEX + 1])
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) return store_fail(STORE_IO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return store_fail(STORE_INVALID, "%s: not a regular file", path);
    if ((sb.st_mode & 0777) != 0600)
        return store_fail(STORE_INVALID, "%s: mode %03o, must be 0600 (chmod 600 %s)", path,
                          (unsigned)(sb.st_mode & 0777), path);
    char buf[STORE_TOKEN_HEX + 2];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t n = read(fd, buf + got, sizeof buf - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return store_fail(STORE_IO, "%s: %s", path, strerror(errno));
        if (n == 0) break;
        got += (size_t)n;
    }
    /* 64 hex digits, optionally followed by one newline. */
    int ok = got == STORE_TOKEN_HEX || (got == STORE_TOKEN_HEX + 1 && buf[STORE_TOKEN_HEX] == '\n');
    for (int i = 0; ok && i < STORE_TOKEN_HEX; i++) ok = hex_digit(buf[i]);
    if (!ok) return store_fail(STORE_INVALID, "%s: not 64 lowercase hex digits", path);
    memcpy(token, buf, STORE_TOKEN_HEX);
    token[STORE_TOKEN_HEX] = '\0';
    return STORE_OK;
}

static store_status random_bytes(unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return store_fail(STORE_IO, "getrandom: %s", strerror(errno));
        got += (size_t)n;
    }
    return STORE_OK;
}

store_status store_token_load(const char *data_dir, char token[STORE_TOKEN_HEX + 1], int *created)
{
    char path[4096], tmp[4096];
    *created = 0;
    if (!data_dir || snprintf(path, sizeof path, "%s/token", data_dir) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/token.tmp", data_dir) >= (int)sizeof tmp)
        return store_fail(STORE_INVALID, "data dir path too long");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        store_status s = read_token(path, fd, token);
        close(fd);
        return s;
    }
    if (errno != ENOENT) return store_fail(STORE_IO, "%s: %s", path, strerror(errno));

    unsigned char raw[STORE_TOKEN_HEX / 2];
    store_status s = random_bytes(raw, sizeof raw);
    if (s != STORE_OK) return s;
    static const char hex[] = "0123456789abcdef";
    char line[STORE_TOKEN_HEX + 1];
    for (size_t i = 0; i < sizeof raw; i++) {
        line[2 * i] = hex[raw[i] >> 4];
        line[2 * i + 1] = hex[raw[i] & 15];
    }
    line[STORE_TOKEN_HEX] = '\n';
    memset(raw, 0, sizeof raw);

    /* Written whole to a temp file (0600 from the start, whatever the umask)
     * and linked into place, so a crash never leaves a short token and two
     * starting processes agree on one. */
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return store_fail(STORE_IO, "%s: %s", tmp, strerror(errno));
    if (fchmod(fd, 0600) != 0 || write(fd, line, sizeof line) != (ssize_t)sizeof line ||
        fsync(fd) != 0) {
        s = store_fail(STORE_IO, "%s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return s;
    }
    close(fd);
    if (link(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        if (e == EEXIST) return store_token_load(data_dir, token, created);
        return store_fail(STORE_IO, "%s: %s", path, strerror(e));
    }
    unlink(tmp);
    int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    memcpy(token, line, STORE_TOKEN_HEX);
    token[STORE_TOKEN_HEX] = '\0';
    *created = 1;
    return STORE_OK;
}

int store_token_equal(const char *expected, const char *given, size_t given_len)
{
    if (!expected) return 0;
    size_t n = strlen(expected);
    /* Time depends on n only: every byte of the expected token is compared,
     * against the given byte when there is one. */
    volatile unsigned char diff = (unsigned char)(n != given_len) | (unsigned char)(n == 0);
    for (size_t i = 0; i < n; i++) {
        unsigned char g = i < given_len && given ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(expected[i] ^ g);
    }
    return diff == 0;
}
