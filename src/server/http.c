/* HTTP/1.1 connections: parsing, limits, timeouts, responses (http.h). */
#include "http.h"

#include <jansson.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A connection that must close drains its input this long at most. */
#define LINGER_MS 2000

typedef enum conn_state {
    CONN_IDLE,       /* between requests: idle timer */
    CONN_READING,    /* inside a request: read timer */
    CONN_PROCESSING, /* request complete, handler running: request timer */
    CONN_WRITING,    /* response being written: write timer */
    CONN_LINGERING,  /* error answered: draining input before close */
    CONN_CLOSING,
} conn_state;

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    http_server *srv;
    http_parser parser;
    conn_state state;
    int counted; /* counts against max_connections */
    int handles; /* open libuv handles; freed at 0 */
    int close_after_write;
    int reading;
    buf in;  /* received, not yet parsed */
    buf out; /* response being written */
    buf url, body, hfield, hvalue;
    int in_value; /* last header callback was a value */
    size_t header_bytes;
    int reject_status; /* set by a parser callback that refuses the request */
    char reject_msg[160];
    int expect_continue;
    http_request req;
    void (*cancel)(void *);
    void *cancel_arg;
    http_respond_hook hook; /* http_set_respond_hook */
    void *hook_arg;
    http_conn *prev, *next;
    /* A detached connection (http_conn_open_detached) has no socket: its
     * output goes to sink, and a response counts as written when
     * http_conn_flush() says so. */
    http_sink sink;
    void *sink_arg;
    int write_pending;
    http_conn *written_next; /* in srv->written_head while written_queued */
    int written_queued;
};

/* Bytes of pipelined requests buffered while one is processed. */
#define PIPELINE_BUFFER_BYTES 65536

static void conn_close(http_conn *c);
static void conn_process(http_conn *c);
static void start_reading(http_conn *c);

const char *http_status_text(int s)
{
    switch (s) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

int http_parse_listen(const char *listen, struct sockaddr_storage *addr)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || !colon[1]) return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    char host[64];
    size_t hl = (size_t)(colon - listen);
    if (listen[0] == '[') {
        if (hl < 3 || listen[hl - 1] != ']' || hl - 2 >= sizeof host) return -1;
        memcpy(host, listen + 1, hl - 2);
        host[hl - 2] = 0;
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr) ? -1 : 0;
    }
    if (hl >= sizeof host) return -1;
    memcpy(host, listen, hl);
    host[hl] = 0;
    if (!strcmp(host, "localhost")) strcpy(host, "127.0.0.1");
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr) ? -1 : 0;
}

/* ---- timers ------------------------------------------------------------ */

static void on_timer(uv_timer_t *t)
{
    http_conn *c = t->data;
    const server_config *cfg = c->srv->cfg;
    switch (c->state) {
    case CONN_READING:
        c->srv->m->rejected[REJECT_READ_TIMEOUT]++;
        c->close_after_write = 1;
        http_respond_error(c, 408, NULL,
                           "request not received within %llu ms (server.timeouts.read)",
                           (unsigned long long)cfg->read_timeout_ms);
        break;
    case CONN_PROCESSING:
        if (c->cancel) {
            void (*cancel)(void *) = c->cancel;
            c->cancel = NULL;
            cancel(c->cancel_arg);
        }
        c->close_after_write = 1;
        http_respond_error(c, 504, NULL, "no response within %llu ms (server.timeouts.request)",
                           (unsigned long long)cfg->request_timeout_ms);
        break;
    default: /* idle, writing, lingering: give up on the client */
        conn_close(c);
        break;
    }
}

static void arm_timer(http_conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

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

static void request_reset(http_conn *c)
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
    request_reset(c);
    c->state = CONN_READING;
    arm_timer(c, c->srv->cfg->read_timeout_ms);
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

static void conn_process(http_conn *c)
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
    arm_timer(c, c->srv->cfg->request_timeout_ms);
    if (request_finish(c)) {
        c->close_after_write = 1;
        http_respond_error(c, 503, NULL, "out of memory reading the request");
        return;
    }
    c->srv->handler(c->srv->handler_ctx, c, &c->req);
}

/* ---- I/O --------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    http_conn *c = h->data;
    (void)hint;
    if (buf_reserve(&c->in, 65536)) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init(c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len - 1));
}

static void stop_reading(http_conn *c)
{
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    http_conn *c = s->data;
    (void)b;
    int busy = c->state == CONN_PROCESSING || c->state == CONN_WRITING;
    if (n == UV_EOF && busy) {
        /* The client half-closed after its request: it still gets the
         * response, then the connection closes. */
        stop_reading(c);
        c->close_after_write = 1;
        return;
    }
    if (n < 0) { /* EOF, reset, or no buffer */
        conn_close(c);
        return;
    }
    if (n == 0) return;
    if (c->state == CONN_LINGERING) return; /* draining: discard */
    c->in.len += (size_t)n;
    c->in.data[c->in.len] = 0;
    if (busy) {
        /* Pipelined requests wait for this response; beyond a bound the
         * client is not read until the response has been written. */
        if (c->in.len >= PIPELINE_BUFFER_BYTES) stop_reading(c);
        return;
    }
    if (c->state == CONN_IDLE) arm_timer(c, c->srv->cfg->read_timeout_ms);
    conn_process(c);
}

static void start_reading(http_conn *c)
{
    if (c->sink) return; /* detached: input arrives through http_conn_feed() */
    if (!c->reading && !uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb)) c->reading = 1;
}

static void shutdown_cb(uv_shutdown_t *r, int status)
{
    (void)r;
    (void)status;
}

/* Half-closes and drains input until EOF or LINGER_MS, so that the client
 * reads the last response rather than a connection reset. */
static void conn_linger(http_conn *c)
{
    c->state = CONN_LINGERING;
    c->in.len = 0;
    if (c->sink) return;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, shutdown_cb)) {
        conn_close(c);
        return;
    }
    start_reading(c);
    arm_timer(c, LINGER_MS);
}

static void write_cb(uv_write_t *w, int status)
{
    http_conn *c = w->data;
    c->out.len = 0;
    if (c->state == CONN_CLOSING) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->close_after_write || c->srv->closing) {
        conn_linger(c);
        return;
    }
    c->parser.data = c;
    http_parser_pause(&c->parser, 0);
    c->state = CONN_IDLE;
    arm_timer(c, c->srv->cfg->idle_timeout_ms);
    start_reading(c);
    conn_process(c); /* pipelined requests already buffered */
}

static void on_written(uv_idle_t *h)
{
    http_server *s = h->data;
    http_conn *c = s->written_head;
    s->written_head = NULL;
    uv_idle_stop(h);
    while (c) {
        http_conn *next = c->written_next;
        c->written_queued = 0;
        c->written_next = NULL;
        write_cb(&c->write_req, 0);
        c = next;
    }
}

/* The response in c->out went out whole: finish it in on_written. */
static void queue_written(http_conn *c)
{
    http_server *s = c->srv;
    c->written_queued = 1;
    c->written_next = s->written_head;
    s->written_head = c;
    uv_idle_start(&s->written, on_written);
}

static void unqueue_written(http_conn *c)
{
    if (!c->written_queued) return;
    http_conn **p = &c->srv->written_head;
    while (*p != c) p = &(*p)->written_next;
    *p = c->written_next;
    c->written_queued = 0;
}

void http_set_pending(http_conn *c, void (*cancel)(void *), void *arg)
{
    c->cancel = cancel;
    c->cancel_arg = arg;
}

void http_set_respond_hook(http_conn *c, http_respond_hook hook, void *arg)
{
    c->hook = hook;
    c->hook_arg = arg;
}

void http_respond(http_conn *c, int status, const char *headers, const char *ctype,
                  const char *body, size_t len)
{
    if (c->state == CONN_WRITING || c->state >= CONN_LINGERING) return;
    c->cancel = NULL;
    if (!c->req.keep_alive || c->srv->closing) c->close_after_write = 1;
    buf *o = &c->out;
    o->len = 0;
    buf_printf(o, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n", status, http_status_text(status),
               len);
    if (ctype) buf_printf(o, "Content-Type: %s\r\n", ctype);
    if (c->close_after_write) buf_puts(o, "Connection: close\r\n");
    if (headers) buf_puts(o, headers);
    if (c->hook) {
        http_respond_hook hook = c->hook;
        char extra[512];
        c->hook = NULL;
        size_t n = hook(c->hook_arg, status, len, extra, sizeof extra);
        if (n && n < sizeof extra) buf_append(o, extra, n);
    }
    buf_puts(o, "\r\n");
    if (c->req.method != HTTP_HEAD) buf_append(o, body, len);
    if (o->oom) {
        buf_free(o);
        conn_close(c);
        return;
    }
    c->state = CONN_WRITING;
    arm_timer(c, c->srv->cfg->write_timeout_ms);
    c->write_req.data = c;
    if (c->sink) {
        c->sink(c->sink_arg, o->data, o->len);
        c->write_pending = 1;
        return;
    }
    uv_buf_t b = uv_buf_init(o->data, (unsigned)o->len);
    int n = c->srv->have_written ? uv_try_write((uv_stream_t *)&c->tcp, &b, 1) : UV_EAGAIN;
    if (n == (int)o->len) {
        queue_written(c);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (n > 0) b = uv_buf_init(o->data + n, (unsigned)(o->len - (size_t)n));
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_cb)) conn_close(c);
}

void http_respond_error(http_conn *c, int status, const char *headers, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s}", "error", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text) {
        http_respond(c, status, headers, "application/json", text, strlen(text));
    } else {
        static const char oom[] = "{\"error\":\"out of memory\"}";
        http_respond(c, status, headers, "application/json", oom, sizeof oom - 1);
    }
    free(text);
    json_decref(j);
}

/* ---- connection life cycle --------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    http_conn *c = h->data;
    if (--c->handles > 0) return;
    unqueue_written(c);
    request_reset(c);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->url);
    buf_free(&c->body);
    buf_free(&c->hfield);
    buf_free(&c->hvalue);
    free(c);
}

static void conn_close(http_conn *c)
{
    if (c->state == CONN_CLOSING) return;
    c->state = CONN_CLOSING;
    if (c->cancel) {
        void (*cancel)(void *) = c->cancel;
        c->cancel = NULL;
        cancel(c->cancel_arg);
    }
    if (c->hook) {
        http_respond_hook hook = c->hook;
        c->hook = NULL;
        hook(c->hook_arg, 0, 0, NULL, 0);
    }
    http_server *s = c->srv;
    if (c->counted) s->n_conns--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    if (!c->sink) uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

static void on_connection(uv_stream_t *listener, int status)
{
    http_server *s = listener->data;
    if (status < 0) return;
    http_conn *c = calloc(1, sizeof *c);
    if (!c) return; /* the pending connection stays in the backlog */
    c->srv = s;
    c->tcp.data = c->timer.data = c;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->handles = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (s->n_conns >= s->cfg->max_connections) {
        s->m->rejected[REJECT_CONNECTIONS]++;
        c->req.keep_alive = 0;
        c->state = CONN_PROCESSING;
        http_respond_error(c, 503, "Retry-After: 1\r\n",
                           "too many open connections (server.limits.max_connections = %d)",
                           s->cfg->max_connections);
        return;
    }
    c->counted = 1;
    s->n_conns++;
    c->state = CONN_IDLE;
    arm_timer(c, s->cfg->idle_timeout_ms);
    start_reading(c);
}

void http_server_init(http_server *s, uv_loop_t *loop, const server_config *cfg, metrics *m,
                      http_handler h, void *ctx)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->cfg = cfg;
    s->m = m;
    s->handler = h;
    s->handler_ctx = ctx;
    /* The parser's own header cap sits above ours so ours reports first. */
    http_parser_set_max_header_size((uint32_t)(cfg->max_header_bytes * 2 + 4096));
}

int http_server_start(http_server *s, uv_loop_t *loop, const server_config *cfg, metrics *m,
                      const char *listen, http_handler h, void *ctx, char *bound, size_t bound_len,
                      char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    http_server_init(s, loop, cfg, m, h, ctx);
    if (http_parse_listen(listen, &addr)) {
        snprintf(err, errlen, "listen address '%s' is not HOST:PORT with a numeric IP", listen);
        return -1;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    int r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    if (!r) r = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (r) {
        snprintf(err, errlen, "cannot listen on %s: %s", listen, uv_strerror(r));
        uv_close((uv_handle_t *)&s->listener, NULL);
        return -1;
    }
    uv_idle_init(loop, &s->written);
    s->written.data = s;
    s->have_written = 1;
    struct sockaddr_storage got;
    int gl = sizeof got;
    char host[64] = "?";
    int port = 0;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &gl);
    if (got.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&got, host, sizeof host);
        port = ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
        snprintf(bound, bound_len, "[%s]:%d", host, port);
    } else {
        uv_ip4_name((struct sockaddr_in *)&got, host, sizeof host);
        port = ntohs(((struct sockaddr_in *)&got)->sin_port);
        snprintf(bound, bound_len, "%s:%d", host, port);
    }
    return 0;
}

void http_server_drain(http_server *s)
{
    s->closing = 1;
    if (!uv_is_closing((uv_handle_t *)&s->listener)) uv_close((uv_handle_t *)&s->listener, NULL);
    http_conn *c = s->conns, *next;
    for (; c; c = next) {
        next = c->next;
        if (c->state == CONN_IDLE && !c->in.len) conn_close(c);
    }
}

int http_server_busy(const http_server *s)
{
    int n = 0;
    for (const http_conn *c = s->conns; c; c = c->next)
        if (c->state == CONN_READING || c->state == CONN_PROCESSING || c->state == CONN_WRITING)
            n++;
    return n;
}

void http_server_stop(http_server *s)
{
    s->closing = 1;
    if (!uv_is_closing((uv_handle_t *)&s->listener)) uv_close((uv_handle_t *)&s->listener, NULL);
    while (s->conns) conn_close(s->conns);
    if (s->have_written && !uv_is_closing((uv_handle_t *)&s->written))
        uv_close((uv_handle_t *)&s->written, NULL);
}

/* ---- detached connections (no socket) ------------------------------------ */

http_conn *http_conn_open_detached(http_server *s, http_sink sink, void *arg)
{
    http_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->srv = s;
    c->sink = sink;
    c->sink_arg = arg;
    c->timer.data = c;
    uv_timer_init(s->loop, &c->timer);
    c->handles = 1;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->counted = 1;
    s->n_conns++;
    c->state = CONN_IDLE;
    arm_timer(c, s->cfg->idle_timeout_ms);
    return c;
}

int http_conn_feed(http_conn *c, const char *data, size_t n)
{
    if (c->state == CONN_CLOSING) return -1;
    if (c->state == CONN_LINGERING || n == 0) return 0;
    if (buf_reserve(&c->in, n + 1)) return -1;
    memcpy(c->in.data + c->in.len, data, n);
    c->in.len += n;
    c->in.data[c->in.len] = 0;
    if (c->state == CONN_IDLE) arm_timer(c, c->srv->cfg->read_timeout_ms);
    conn_process(c);
    return 0;
}

int http_conn_flush(http_conn *c)
{
    if (!c->write_pending) return 0;
    c->write_pending = 0;
    write_cb(&c->write_req, 0);
    return 1;
}

http_conn_phase http_conn_state(const http_conn *c)
{
    switch (c->state) {
    case CONN_IDLE:
        return HTTP_CONN_IDLE;
    case CONN_READING:
        return HTTP_CONN_READING;
    case CONN_PROCESSING:
        return HTTP_CONN_PROCESSING;
    case CONN_WRITING:
        return HTTP_CONN_WRITING;
    default:
        return HTTP_CONN_CLOSED;
    }
}

void http_conn_close_detached(http_conn *c)
{
    conn_close(c);
}
