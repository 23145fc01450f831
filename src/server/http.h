/*
 * HTTP/1.1 server on a libuv loop, parsed by libhttp-parser.
 *
 * One request at a time per connection: after a request is complete the
 * connection stops reading until its response is written, so pipelined
 * requests are answered in order and buffered input stays bounded. Every
 * phase has a timer (idle, read, request, write) and every size has a limit
 * (see server_config); violations are answered with a JSON error and the
 * connection is closed gracefully (shutdown, drain, close) so the client
 * reads the error instead of a reset.
 */
#ifndef KILN_SERVER_HTTP_H
#define KILN_SERVER_HTTP_H

#include "buf.h"
#include "config.h"
#include "metrics.h"

#include <http_parser.h>
#include <uv.h>

typedef struct http_request {
    int method;          /* enum http_method */
    char *url;           /* NUL-terminated; owned by the connection */
    char *path;          /* url up to '?' (a copy, NUL-terminated) */
    char *query;         /* after '?', or "" */
    char *content_type;  /* NULL when absent */
    char *authorization; /* NULL when absent */
    char *body;          /* NUL-terminated for convenience; body_len excludes it */
    size_t body_len;
    int keep_alive;
} http_request;

typedef struct http_conn http_conn;
typedef struct http_server http_server;

/* Called once per complete request. The handler must eventually answer with
 * http_respond() (now or later); `req` stays valid until then. */
typedef void (*http_handler)(void *ctx, http_conn *c, http_request *req);

struct http_server {
    uv_tcp_t listener;
    uv_loop_t *loop;
    const server_config *cfg;
    metrics *m;
    http_handler handler;
    void *handler_ctx;
    int n_conns;      /* connections counted against max_connections */
    http_conn *conns; /* every open connection, refused ones included */
    int closing;
    /* Responses written at once (uv_try_write) finish in this idle
     * callback, at the start of the next loop iteration (which then polls
     * without blocking): not from inside the handler that answered, and
     * without uv_write, whose completion costs an epoll_ctl per response. */
    uv_idle_t written;
    http_conn *written_head;
    int have_written; /* `written` is initialised */
};

/* Binds cfg->listen (or `listen` when not NULL) and starts accepting.
 * 0, or -1 with the reason in err. The bound address is written to
 * bound[bound_len] ("127.0.0.1:8080"). */
int http_server_start(http_server *s, uv_loop_t *loop, const server_config *cfg, metrics *m,
                      const char *listen, http_handler h, void *ctx, char *bound, size_t bound_len,
                      char *err, size_t errlen);

/* Graceful stop, step one: stops accepting, closes idle connections, and
 * closes the others after their current response. */
void http_server_drain(http_server *s);

/* Connections inside a request (reading, processing or writing it). */
int http_server_busy(const http_server *s);

/* Stops accepting and closes every connection (pending requests are
 * cancelled through their cancel callbacks). */
void http_server_stop(http_server *s);

/* Answers the connection's current request. `headers` holds extra
 * "Name: value\r\n" lines (or NULL). Copies everything it needs. */
void http_respond(http_conn *c, int status, const char *headers, const char *ctype,
                  const char *body, size_t len);

/* Answers {"error": "<message>"} with `status`. */
void http_respond_error(http_conn *c, int status, const char *headers, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* While a request is answered asynchronously: `cancel(arg)` is called if the
 * connection must give up on it first (request timeout, server stop). The
 * registration ends with http_respond(). */
void http_set_pending(http_conn *c, void (*cancel)(void *arg), void *arg);

/* Observes the answer to the connection's current request. hook(arg, ...)
 * runs exactly once: inside http_respond() before the head is written, with
 * the status and body size, and may write extra "Name: value\r\n" header
 * lines into headers[cap] (returning their length); or, when the request is
 * abandoned (the connection closes first), with status 0 and headers NULL.
 * The functions the server runs itself (kinds train and models) use it for
 * their metrics, log record and X-Kiln-* headers. */
typedef size_t (*http_respond_hook)(void *arg, int status, size_t body_len, char *headers,
                                    size_t cap);
void http_set_respond_hook(http_conn *c, http_respond_hook hook, void *arg);

/* ---- connections without a socket --------------------------------------
 * For tests and fuzzing: the request path (parser, limits, router) driven
 * by bytes in memory, on the server's loop but with no socket. */

/* Receives what the connection would write to its socket. */
typedef void (*http_sink)(void *arg, const char *data, size_t len);

/* Sets up `s` without listening (http_server_start does this, then binds). */
void http_server_init(http_server *s, uv_loop_t *loop, const server_config *cfg, metrics *m,
                      http_handler h, void *ctx);

/* A connection whose output goes to sink(arg, ...). NULL when out of memory. */
http_conn *http_conn_open_detached(http_server *s, http_sink sink, void *arg);

/* Bytes as if read from the socket; requests complete in them are handled.
 * 0, or -1 when the connection is closed or out of memory. */
int http_conn_feed(http_conn *c, const char *data, size_t n);

/* Completes the write of a response the sink received (as the socket's
 * write callback would), which lets the next buffered request run. 1 when a
 * write was pending, else 0. */
int http_conn_flush(http_conn *c);

typedef enum http_conn_phase {
    HTTP_CONN_IDLE,       /* between requests */
    HTTP_CONN_READING,    /* a request partly received */
    HTTP_CONN_PROCESSING, /* a request received and not answered yet */
    HTTP_CONN_WRITING,    /* an answer not flushed yet */
    HTTP_CONN_CLOSED,     /* closing, or answered an error and reads no more */
} http_conn_phase;

http_conn_phase http_conn_state(const http_conn *c);

/* Closes the connection; its memory is freed when the loop runs its close
 * callbacks. */
void http_conn_close_detached(http_conn *c);

/* Parses "HOST:PORT" / "[V6]:PORT" into addr. 0 or -1. */
int http_parse_listen(const char *listen, struct sockaddr_storage *addr);

const char *http_status_text(int status);

#endif
