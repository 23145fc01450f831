/* HTTP/1.1 connections: sockets, timeouts, responses and their life cycle
 * (http.h); the parsing is in http_parse.c. */
#include "http_internal.h"

#include <jansson.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A connection that must close drains its input this long at most. */
#define LINGER_MS 2000

static void conn_close(http_conn *c);
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
    const uint64_t now = uv_now(t->loop);
    if (now < c->deadline) { /* the deadline moved on since the timer was set */
        uv_timer_start(t, on_timer, c->deadline - now, 0);
        return;
    }
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

/* The current state's timeout: ms from now. A timer already due no later
 * is left as it is, and on_timer() sets it again for what remains: a
 * request on a keep-alive connection moves its deadline four times
 * (read, request, write, idle), each later than the last, and restarting
 * the timer each time (a heap removal and insertion) took 5% of the
 * event loop's CPU under wrk. */
void http_arm_timer(http_conn *c, uint64_t ms)
{
    c->deadline = uv_now(c->timer.loop) + ms;
    if (uv_is_active((uv_handle_t *)&c->timer) && uv_timer_get_due_in(&c->timer) <= ms) return;
    uv_timer_start(&c->timer, on_timer, ms, 0);
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
    if (c->state == CONN_IDLE) http_arm_timer(c, c->srv->cfg->read_timeout_ms);
    http_conn_process(c);
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
    http_arm_timer(c, LINGER_MS);
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
    http_arm_timer(c, c->srv->cfg->idle_timeout_ms);
    start_reading(c);
    http_conn_process(c); /* pipelined requests already buffered */
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
    /* the status line and lengths appended, not printed: every response
     * passes here */
    buf_puts(o, "HTTP/1.1 ");
    buf_put_i64(o, status);
    buf_puts(o, " ");
    buf_puts(o, http_status_text(status));
    buf_puts(o, "\r\nContent-Length: ");
    buf_put_u64(o, len);
    buf_puts(o, "\r\n");
    if (ctype) {
        buf_puts(o, "Content-Type: ");
        buf_puts(o, ctype);
        buf_puts(o, "\r\n");
    }
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
    http_arm_timer(c, c->srv->cfg->write_timeout_ms);
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
    http_request_reset(c);
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
    http_arm_timer(c, s->cfg->idle_timeout_ms);
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
    http_arm_timer(c, s->cfg->idle_timeout_ms);
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
    if (c->state == CONN_IDLE) http_arm_timer(c, c->srv->cfg->read_timeout_ms);
    http_conn_process(c);
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
