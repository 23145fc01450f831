/*
 * Internals of the HTTP connections (http.h), shared by their files:
 *   http.c        sockets, timers, responses, the connection life cycle;
 *   http_parse.c  the parser's callbacks (limits on the request line,
 *                 headers and body) and a complete request's dispatch.
 * Everything runs on the server's loop.
 */
#ifndef KILN_SERVER_HTTP_INTERNAL_H
#define KILN_SERVER_HTTP_INTERNAL_H

#include "http.h"

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
    uv_timer_t timer;  /* due at or before deadline (http_arm_timer()) */
    uint64_t deadline; /* loop time (ms) of the current state's timeout */
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

/* Parses what c->in holds and hands a complete request to the handler
 * (http_parse.c). */
void http_conn_process(http_conn *c);
/* Clears the parsed request for the next one (http_parse.c). */
void http_request_reset(http_conn *c);
/* (Re)starts c's one timer: idle, read, request or write (http.c). */
void http_arm_timer(http_conn *c, uint64_t ms);

#endif
