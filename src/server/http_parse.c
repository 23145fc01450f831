/* HTTP/1.1 request parsing: the parser's callbacks, with the limits on the
 * request line, headers and body, and a complete request's dispatch
 * (http_internal.h). */
#include "http_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- parser callbacks -------------------------------------------------- */

static int reject(http_conn *c, int status, reject_reason why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int reject(http_conn *c, int status, reject_reason why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->reject_msg, sizeof c->reject_msg, fmt, ap);
    va_end(ap);
    c->reject_status = status;
    c->srv->m->rejected[why]++;
    return -1;
}

static int count_header(http_conn *c, size_t n)
{
    c->header_bytes += n;
    if (c->header_bytes > c->srv->cfg->max_header_bytes)
        return reject(c, 431, REJECT_HEADER_SIZE,
                      "request line and headers exceed %zu bytes (server.limits.max_header_bytes)",
                      c->srv->cfg->max_header_bytes);
    return 0;
}

void http_request_reset(http_conn *c)
{
    free(c->req.path);
    free(c->req.content_type);
    free(c->req.authorization);
    memset(&c->req, 0, sizeof c->req);
    c->url.len = c->body.len = c->hfield.len = c->hvalue.len = 0;
    c->in_value = 0;
    c->header_bytes = 0;
    c->expect_continue = 0;
}

static int on_message_begin(http_parser *p)
{
    http_conn *c = p->data;
    http_request_reset(c);
    c->state = CONN_READING;
    http_arm_timer(c, c->srv->cfg->read_timeout_ms);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (count_header(c, n)) return -1;
    buf_append(&c->url, at, n);
    return c->url.oom ? reject(c, 503, REJECT_MALFORMED, "out of memory") : 0;
}

/* Keeps the headers the server uses; the rest are only counted. */
static int finish_header(http_conn *c)
{
    if (!c->hfield.len) return 0;
    const char *f = c->hfield.data, *v = c->hvalue.data ? c->hvalue.data : "";
    char **dst = NULL;
    if (!strcasecmp(f, "content-type"))
        dst = &c->req.content_type;
    else if (!strcasecmp(f, "authorization"))
        dst = &c->req.authorization;
    else if (!strcasecmp(f, "expect") && !strcasecmp(v, "100-continue"))
        c->expect_continue = 1;
    if (dst) {
        free(*dst);
        *dst = strdup(v);
        if (!*dst) return reject(c, 503, REJECT_MALFORMED, "out of memory");
    }
    c->hfield.len = c->hvalue.len = 0;
    if (c->hfield.data) c->hfield.data[0] = 0;
    if (c->hvalue.data) c->hvalue.data[0] = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    /* A new header line also costs its ": " and CRLF. */
    int starts = c->in_value || c->hfield.len == 0;
    if (count_header(c, n + (starts ? 4 : 0))) return -1;
    if (c->in_value && finish_header(c)) return -1;
    c->in_value = 0;
    buf_append(&c->hfield, at, n);
    return c->hfield.oom ? reject(c, 503, REJECT_MALFORMED, "out of memory") : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    if (count_header(c, n)) return -1;
    c->in_value = 1;
    buf_append(&c->hvalue, at, n);
    if (!c->hvalue.data) buf_append(&c->hvalue, "", 0);
    return c->hvalue.oom ? reject(c, 503, REJECT_MALFORMED, "out of memory") : 0;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *c = p->data;
    if (finish_header(c)) return -1;
    size_t max = c->srv->cfg->max_body_bytes;
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX && p->content_length > max)
        return reject(c, 413, REJECT_BODY_SIZE,
                      "request body of %llu bytes exceeds %zu bytes (server.limits.max_body_bytes)",
                      (unsigned long long)p->content_length, max);
    if (c->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
        if (c->sink)
            c->sink(c->sink_arg, cont, sizeof cont - 1);
        else
            uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    http_conn *c = p->data;
    size_t max = c->srv->cfg->max_body_bytes;
    if (c->body.len + n > max)
        return reject(c, 413, REJECT_BODY_SIZE,
                      "request body exceeds %zu bytes (server.limits.max_body_bytes)", max);
    buf_append(&c->body, at, n);
    return c->body.oom ? reject(c, 503, REJECT_MALFORMED, "out of memory") : 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn *c = p->data;
    c->req.keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- request dispatch -------------------------------------------------- */

static int request_finish(http_conn *c)
{
    http_request *r = &c->req;
    buf_append(&c->url, "", 0);
    buf_append(&c->body, "", 0);
    if (c->url.oom || c->body.oom) return -1;
    r->method = c->parser.method;
    r->url = c->url.data;
    const char *q = strchr(r->url, '?');
    size_t pl = q ? (size_t)(q - r->url) : strlen(r->url);
    r->path = strndup(r->url, pl);
    if (!r->path) return -1;
    r->query = q ? (char *)q + 1 : r->url + pl;
    r->body = c->body.data;
    r->body_len = c->body.len;
    return 0;
}

void http_conn_process(http_conn *c)
{
    if (c->state == CONN_PROCESSING || c->state == CONN_WRITING || c->state >= CONN_LINGERING)
        return;
    if (!c->in.len) return;
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->in.data, c->in.len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
        c->close_after_write = 1;
        if (c->reject_status) {
            http_respond_error(c, c->reject_status, NULL, "%s", c->reject_msg);
        } else if (e == HPE_HEADER_OVERFLOW) {
            c->srv->m->rejected[REJECT_HEADER_SIZE]++;
            http_respond_error(
                c, 431, NULL,
                "request line and headers too large (server.limits.max_header_bytes)");
        } else {
            c->srv->m->rejected[REJECT_MALFORMED]++;
            http_respond_error(c, 400, NULL, "malformed HTTP request: %s",
                               http_errno_description(e));
        }
        return;
    }
    buf_consume(&c->in, n);
    if (e != HPE_PAUSED) return; /* the request is not complete yet */
    c->srv->m->http_requests++;
    c->state = CONN_PROCESSING;
    /* Reading goes on while the request is processed (stopping and
     * restarting it costs epoll_ctl calls on every request); what arrives
     * meanwhile is buffered up to PIPELINE_BUFFER_BYTES (read_cb). */
    http_arm_timer(c, c->srv->cfg->request_timeout_ms);
    if (request_finish(c)) {
        c->close_after_write = 1;
        http_respond_error(c, 503, NULL, "out of memory reading the request");
        return;
    }
    c->srv->handler(c->srv->handler_ctx, c, &c->req);
}
