/*
 * Internals of the `kiln load` engine, shared by its files: engine.c runs
 * the executors, the progress line and the run; vu.c is the virtual user,
 * a small state machine (a connection, a timer, an HTTP parser) that sends
 * one request per iteration and records its answer.
 */
#ifndef KILN_LOAD_ENGINE_INTERNAL_H
#define KILN_LOAD_ENGINE_INTERNAL_H

#include "load.h"

#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef enum vu_state {
    VU_PARKED,   /* not running iterations */
    VU_BUSY,     /* a request is in flight */
    VU_THINKING, /* between iterations */
} vu_state;

struct engine;
struct vu;

/* One TCP connection. It outlives its VU's interest in it while libuv
 * closes it, so it is a separate allocation freed in the close callback;
 * `owner` is NULL once detached. */
typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    struct vu *owner;
    http_parser parser;
    bool connected;
    uint32_t responses; /* completed on this connection */
    char rbuf[16384];
} conn;

typedef struct vu {
    struct engine *e;
    uint32_t id; /* 1-based */
    vu_state state;
    bool wanted;               /* ramping-vus: inside the current target */
    bool stop_after;           /* park when the current iteration ends */
    uint64_t stop_deadline_us; /* interrupt the iteration after this (0: none) */
    uv_timer_t timer;          /* think time, then request timeout */
    bool timer_open;
    conn *c;
    /* the request in flight */
    size_t req_index;
    uint64_t scheduled_us, sent_us;
    bool retried;
    int status;
    load_start start;
    char worker[64];
    int64_t queue_us, init_us, exec_us;
    uint64_t bytes;
    bool complete, keep_alive;
    /* header being parsed (only a few names matter; longer ones are cut) */
    char hname[32], hvalue[64];
    size_t hname_len, hvalue_len;
    bool in_value;
} vu;

typedef struct engine {
    uv_loop_t loop;
    const load_scenario *s;
    const load_target *t;
    const load_options *o;
    load_results *r;
    vu *vus;
    uint32_t n_vus;
    uint64_t t0_ns;
    uint64_t duration_us;
    uint64_t max_requests; /* 0: none */
    uint64_t started;      /* iterations started */
    uint64_t rng;
    uv_timer_t tick, progress;
    uv_signal_t sigint;
    int sigints;
    bool ending;              /* no new iterations */
    uint64_t end_deadline_us; /* interrupt what is left after this */
    bool finished;            /* handles closed */
    /* constant-arrival-rate */
    double period_us;
    uint64_t next_arrival; /* index of the next arrival */
    uint64_t n_arrivals;   /* arrivals within the duration */
    uint64_t *backlog;     /* ring of due times waiting for a slot */
    uint32_t backlog_head, backlog_len;
    /* live numbers for the progress line and the timeline */
    load_samples interval;
    uint64_t interval_errors, interval_cold, interval_warm;
    uint64_t last_progress_us;
    uint32_t busy;
    http_parser_settings settings;
} engine;

/* ---- engine.c ---- */

/* Microseconds since the run started. */
uint64_t engine_now_us(engine *e);
/* The run's seeded random numbers. */
uint64_t engine_rng_next(engine *e);
/* The index of the next request of the scenario (by weight). */
size_t engine_pick_request(engine *e);
/* Whether a new iteration may start (not ending, under max_requests). */
bool engine_may_start(engine *e);
/* Ends the run when nothing is left to wait for. */
void engine_check_done(engine *e);

/* ---- vu.c ---- */

/* Starts an iteration that was due at scheduled_us. */
void vu_begin(vu *v, uint64_t scheduled_us);
/* After an iteration: the next one, the think time, or parking. */
void vu_next(vu *v);
/* Interrupts a request in flight (counted as interrupted) and parks. */
void vu_interrupt(vu *v);
/* Stops running iterations and lets go of the connection. */
void vu_park(vu *v);
/* Lets go of the VU's connection (closed when libuv is done with it). */
void vu_detach(vu *v);
/* The response parser's callbacks. */
void vu_parser_settings(http_parser_settings *s);

#endif
