/* The backend table and helpers shared by backends (backend.h). */
#include "backend.h"

#include <jansson.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const backend_ops backend_echo;
extern const backend_ops backend_predict;

const backend_ops *backend_for(fn_kind kind)
{
    switch (kind) {
    case FN_ECHO:
        return &backend_echo;
    case FN_PREDICT:
        return &backend_predict;
    default:
        return NULL;
    }
}

void backend_error(backend_response *res, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    res->status = status;
    snprintf(res->ctype, sizeof res->ctype, "application/json");
    res->body.len = 0;
    json_t *j = json_pack("{s:s}", "error", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    buf_puts(&res->body, text ? text : "{\"error\":\"out of memory\"}");
    free(text);
    json_decref(j);
}

int backend_query_param(const char *query, size_t len, const char *key, char *out, size_t outlen)
{
    size_t kl = strlen(key);
    const char *p = query, *end = query + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) >= kl && !memcmp(p, key, kl) && (p + kl == e || p[kl] == '=')) {
            const char *v = p + kl == e ? e : p + kl + 1;
            size_t vl = (size_t)(e - v);
            if (vl >= outlen) vl = outlen - 1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return 0;
        }
        p = e + 1;
    }
    return -1;
}

int backend_json_depth_ok(const char *body, size_t len, int max_depth)
{
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) return 0;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 1;
}

static const char *memmem_s(const char *h, size_t hl, const char *n, size_t nl)
{
    return memmem(h, hl, n, nl);
}

int backend_multipart_file(const backend_request *req, const char **part, size_t *part_len,
                           const char **why)
{
    /* boundary=... from the content type, optionally quoted */
    const char *ct = req->ctype, *end = req->ctype + req->ctype_len;
    const char *b = memmem_s(ct, req->ctype_len, "boundary=", 9);
    if (!b) {
        *why = "multipart content type without a boundary";
        return -1;
    }
    b += 9;
    size_t bl = 0;
    if (b < end && *b == '"') {
        b++;
        while (b + bl < end && b[bl] != '"') bl++;
    } else {
        while (b + bl < end && b[bl] != ';' && b[bl] != ' ') bl++;
    }
    if (bl == 0 || bl > 70) {
        *why = "multipart boundary is empty or longer than 70 characters";
        return -1;
    }
    char delim[80];
    size_t dl = (size_t)snprintf(delim, sizeof delim, "--%.*s", (int)bl, b);
    const char *body = req->body, *bend = req->body + req->body_len;
    const char *p = memmem_s(body, req->body_len, delim, dl);
    while (p) {
        p += dl;
        if (bend - p >= 2 && p[0] == '-' && p[1] == '-') break; /* closing delimiter */
        const char *hend = memmem_s(p, (size_t)(bend - p), "\r\n\r\n", 4);
        if (!hend) break;
        const char *data = hend + 4;
        const char *next = memmem_s(data, (size_t)(bend - data), delim, dl);
        if (!next) break;
        size_t hl = (size_t)(hend - p);
        int is_file = memmem_s(p, hl, "filename=", 9) != NULL;
        int is_image = memmem_s(p, hl, "image/", 6) != NULL;
        if (is_file || is_image) {
            *part = data;
            *part_len = (size_t)(next - data);
            if (*part_len >= 2 && data[*part_len - 2] == '\r' && data[*part_len - 1] == '\n')
                *part_len -= 2;
            return 0;
        }
        p = next;
    }
    *why = "no file or image part in the multipart body";
    return -1;
}
