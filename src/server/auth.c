/* The API bearer token (auth.h). */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static int valid_token(const char *t)
{
    if (strlen(t) != AUTH_TOKEN_CHARS) return 0;
    for (const char *p = t; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

int auth_load_or_create(const char *data_dir, char *token, int *created, char *err, size_t errlen)
{
    char path[4096];
    *created = 0;
    if (snprintf(path, sizeof path, "%s/token", data_dir) >= (int)sizeof path) {
        snprintf(err, errlen, "data directory path too long");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        struct stat st;
        char buf[AUTH_TOKEN_CHARS + 2];
        ssize_t n = fstat(fd, &st) ? -1 : read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            return -1;
        }
        if (st.st_mode & 077) {
            snprintf(err, errlen, "%s: readable by others (mode %03o); chmod 600 it", path,
                     (unsigned)(st.st_mode & 0777));
            return -1;
        }
        buf[n] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        if (!valid_token(buf)) {
            snprintf(err, errlen, "%s: not a kiln token (64 hex digits)", path);
            return -1;
        }
        memcpy(token, buf, AUTH_TOKEN_CHARS + 1);
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    unsigned char raw[AUTH_TOKEN_CHARS / 2];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        snprintf(err, errlen, "getrandom: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < sizeof raw; i++) sprintf(token + 2 * i, "%02x", raw[i]);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    char line[AUTH_TOKEN_CHARS + 2];
    snprintf(line, sizeof line, "%s\n", token);
    int ok = write(fd, line, AUTH_TOKEN_CHARS + 1) == AUTH_TOKEN_CHARS + 1 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    /* link() fails if another server created it meanwhile: theirs wins. */
    if (!ok || link(tmp, path)) {
        int e = errno;
        unlink(tmp);
        if (ok && e == EEXIST) return auth_load_or_create(data_dir, token, created, err, errlen);
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    unlink(tmp);
    *created = 1;
    return 0;
}

int auth_check(const char *token, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7)) return 0;
    const char *given = authorization + 7;
    while (*given == ' ') given++;
    size_t n = strlen(given);
    while (n && given[n - 1] == ' ') n--;
    if (n != AUTH_TOKEN_CHARS) return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < AUTH_TOKEN_CHARS; i++) diff |= (unsigned char)(given[i] ^ token[i]);
    return diff == 0;
}
