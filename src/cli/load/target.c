/* The target of `kiln load`: http://host[:port][/prefix], resolved once,
 * loopback only unless the user allows remote targets explicitly. */
#include "load.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
        /* ::ffff:127.x.y.z */
        return IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && in6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

int load_target_open(load_target *t, const char *url, bool allow_remote, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (strncasecmp(url, "http://", 7)) {
        snprintf(err, errlen, "%s: only http:// URLs are supported", url);
        return 2;
    }
    const char *p = url + 7;
    const char *host_end;
    const char *after;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end) {
            snprintf(err, errlen, "%s: unterminated '[' in the host", url);
            return 2;
        }
        if ((size_t)(host_end - p - 1) >= sizeof t->host) goto too_long;
        memcpy(t->host, p + 1, (size_t)(host_end - p - 1));
        after = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/?#");
        if ((size_t)(host_end - p) >= sizeof t->host) goto too_long;
        memcpy(t->host, p, (size_t)(host_end - p));
        after = host_end;
    }
    if (!t->host[0]) {
        snprintf(err, errlen, "%s: no host", url);
        return 2;
    }
    if (strchr(t->host, '@')) {
        snprintf(err, errlen, "%s: credentials in the URL are not supported", url);
        return 2;
    }
    snprintf(t->port, sizeof t->port, "80");
    if (*after == ':') {
        const char *q = after + 1;
        size_t n = strspn(q, "0123456789");
        long port = n && n <= 5 ? strtol(q, NULL, 10) : -1;
        if (port < 1 || port > 65535 || (q[n] && q[n] != '/')) {
            snprintf(err, errlen, "%s: the port must be a number from 1 to 65535", url);
            return 2;
        }
        snprintf(t->port, sizeof t->port, "%ld", port);
        after = q + n;
    }
    if (*after && *after != '/') {
        snprintf(err, errlen, "%s: query strings and fragments belong to request paths", url);
        return 2;
    }
    size_t plen = strlen(after);
    while (plen && after[plen - 1] == '/') plen--;
    if (plen >= sizeof t->prefix) goto too_long;
    for (size_t i = 0; i < plen; i++)
        if ((unsigned char)after[i] <= ' ' || after[i] == 0x7f || after[i] == '?' ||
            after[i] == '#') {
            snprintf(err, errlen, "%s: the path holds a space, control, '?' or '#'", url);
            return 2;
        }
    memcpy(t->prefix, after, plen);
    t->prefix[plen] = 0;
    if (strchr(t->host, ':'))
        snprintf(t->hostport, sizeof t->hostport, "[%s]:%s", t->host, t->port);
    else
        snprintf(t->hostport, sizeof t->hostport, "%s:%s", t->host, t->port);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "%s: cannot resolve %s: %s", url, t->host, gai_strerror(rc));
        return 1;
    }
    /* Every address the name resolves to must be loopback: a name that
     * resolves to both is refused rather than half-trusted. */
    if (!allow_remote)
        for (struct addrinfo *a = res; a; a = a->ai_next)
            if (!is_loopback(a->ai_addr)) {
                char text[64] = "?";
                if (a->ai_family == AF_INET)
                    inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, text,
                              sizeof text);
                else if (a->ai_family == AF_INET6)
                    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, text,
                              sizeof text);
                snprintf(err, errlen,
                         "%s: %s is not a loopback address; load tests target this machine "
                         "only unless --allow-remote is given",
                         url, text);
                freeaddrinfo(res);
                return 2;
            }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    if (res->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, t->addr_text,
                  sizeof t->addr_text);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, t->addr_text,
                  sizeof t->addr_text);
    freeaddrinfo(res);
    return 0;

too_long:
    snprintf(err, errlen, "%s: the host or path is too long", url);
    return 2;
}

void load_target_close(load_target *t)
{
    (void)t;
}
