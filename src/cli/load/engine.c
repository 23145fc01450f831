/* The executors of `kiln load` and their HTTP/1.1 client, all on one libuv
 * loop: a virtual user is a small state machine (a connection, a timer and
 * a parser), never a thread.
 *
 * ramping-vus: a controller tick sets how many VUs are active from the
 * stages; an active VU runs iterations back to back (one request each, then
 * the think time). VUs no longer wanted finish their iteration within
 * graceful_ramp_down or are interrupted; at the end every VU gets
 * graceful_stop to finish.
 *
 * constant-arrival-rate: iteration i is due at i * time_unit / rate. It
 * starts on a free slot (at most max_vus in flight); when none is free it
 * waits for one, and its duration still counts from when it was due, so a
 * slow server shows up as latency instead of silently lowering the rate
 * (coordinated omission). More than max_vus waiting are dropped and counted. */
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
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

static void vu_next(vu *v);
static void vu_begin(vu *v, uint64_t scheduled_us);
static void engine_check_done(engine *e);

static uint64_t now_us(engine *e)
{
    return (uv_hrtime() - e->t0_ns) / 1000;
}

static uint64_t rng_next(engine *e)
{
    /* xorshift64*: reproducible from the scenario's seed. */
    uint64_t x = e->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    e->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static size_t pick_request(engine *e)
{
    const load_scenario *s = e->s;
    if (s->n_requests == 1) return 0;
    uint64_t x = rng_next(e) % s->total_weight;
    for (size_t i = 0; i < s->n_requests; i++) {
        if (x < s->requests[i].weight) return i;
        x -= s->requests[i].weight;
    }
    return s->n_requests - 1;
}

/* ---- connections ------------------------------------------------------- */

static void conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void conn_detach(vu *v)
{
    conn *c = v->c;
    if (!c) return;
    v->c = NULL;
    c->owner = NULL;
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, conn_closed);
}

/* ---- finishing an iteration -------------------------------------------- */

static void record(vu *v, const char *error)
{
    engine *e = v->e;
    load_record rec = {
        .sent_us = v->sent_us,
        .scheduled_us = v->scheduled_us,
        .vu = v->id,
        .req_index = v->req_index,
        .status = error ? 0 : v->status,
        .duration_us = now_us(e) - v->scheduled_us,
        .start = error ? LOAD_START_NONE : v->start,
        .worker = v->worker,
        .queue_us = v->queue_us,
        .init_us = v->init_us,
        .exec_us = v->exec_us,
        .bytes = v->bytes,
        .error = error,
    };
    load_results_add(e->r, e->s, &rec);
    load_samples_push(&e->interval, rec.duration_us);
    if (error || rec.status < 200 || rec.status >= 400) e->interval_errors++;
    if (rec.start == LOAD_START_COLD) e->interval_cold++;
    if (rec.start == LOAD_START_WARM) e->interval_warm++;
}

static void vu_park(vu *v)
{
    if (v->state == VU_BUSY) v->e->busy--;
    v->state = VU_PARKED;
    v->stop_after = false;
    v->stop_deadline_us = 0;
    if (v->timer_open) uv_timer_stop(&v->timer);
    /* Idle keep-alive connections of parked VUs are closed; a VU that comes
     * back opens a new one. */
    conn_detach(v);
}

/* The iteration is over (a response, an error or a timeout). */
static void vu_done(vu *v, const char *error)
{
    engine *e = v->e;
    if (v->timer_open) uv_timer_stop(&v->timer);
    record(v, error);
    e->r->iterations++;
    if (error || !v->keep_alive || !e->s->keep_alive) conn_detach(v);
    e->busy--;
    v->state = VU_PARKED;
    vu_next(v);
}

/* Ends the iteration without a result: a graceful window ran out. */
static void vu_interrupt(vu *v)
{
    engine *e = v->e;
    if (v->state != VU_BUSY) return;
    e->r->interrupted++;
    conn_detach(v);
    vu_park(v);
}

/* ---- HTTP response parsing -------------------------------------------- */

static void header_pair(vu *v)
{
    if (!v->hname_len) return;
    v->hname[v->hname_len] = 0;
    v->hvalue[v->hvalue_len] = 0;
    if (!strcasecmp(v->hname, "X-Kiln-Start")) {
        if (!strcasecmp(v->hvalue, "cold"))
            v->start = LOAD_START_COLD;
        else if (!strcasecmp(v->hvalue, "warm"))
            v->start = LOAD_START_WARM;
    } else if (!strcasecmp(v->hname, "X-Kiln-Worker")) {
        /* The CSV is comma separated: keep the value printable and plain. */
        size_t j = 0;
        for (size_t i = 0; i < v->hvalue_len && j + 1 < sizeof v->worker; i++)
            if ((unsigned char)v->hvalue[i] > ' ' && v->hvalue[i] != ',' && v->hvalue[i] != '"' &&
                (unsigned char)v->hvalue[i] < 0x7f)
                v->worker[j++] = v->hvalue[i];
        v->worker[j] = 0;
    } else {
        int64_t *dst = !strcasecmp(v->hname, "X-Kiln-Queue-Us")  ? &v->queue_us
                       : !strcasecmp(v->hname, "X-Kiln-Init-Us") ? &v->init_us
                       : !strcasecmp(v->hname, "X-Kiln-Exec-Us") ? &v->exec_us
                                                                 : NULL;
        if (dst && v->hvalue_len && strspn(v->hvalue, "0123456789") == v->hvalue_len &&
            v->hvalue_len < 16)
            *dst = strtoll(v->hvalue, NULL, 10);
    }
    v->hname_len = v->hvalue_len = 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    vu *v = c->owner;
    if (!v) return 0;
    if (v->in_value) {
        header_pair(v);
        v->in_value = false;
    }
    size_t room = sizeof v->hname - 1 - v->hname_len;
    if (len > room) len = room;
    memcpy(v->hname + v->hname_len, at, len);
    v->hname_len += len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    conn *c = p->data;
    vu *v = c->owner;
    if (!v) return 0;
    v->in_value = true;
    size_t room = sizeof v->hvalue - 1 - v->hvalue_len;
    if (len > room) len = room;
    memcpy(v->hvalue + v->hvalue_len, at, len);
    v->hvalue_len += len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    conn *c = p->data;
    vu *v = c->owner;
    if (!v) return 0;
    if (v->in_value) header_pair(v);
    v->in_value = false;
    v->status = (int)p->status_code;
    /* A response to HEAD has no body whatever its Content-Length says. */
    return !strcmp(v->e->s->requests[v->req_index].method, "HEAD") ? 1 : 0;
}

static int on_message_complete(http_parser *p)
{
    conn *c = p->data;
    vu *v = c->owner;
    if (!v) return 0;
    v->complete = true;
    v->keep_alive = http_should_keep_alive(p) != 0;
    /* One response per request: stop here, ignore anything after it. */
    http_parser_pause(p, 1);
    return 0;
}

/* ---- sending ------------------------------------------------------------ */

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void vu_retry_or_fail(vu *v, const char *error)
{
    /* A keep-alive connection the server closed between two requests: send
     * again once on a fresh connection, as HTTP clients do. */
    if (v->c && v->c->responses > 0 && v->bytes == 0 && !v->retried) {
        v->retried = true;
        conn_detach(v);
        uint64_t scheduled = v->scheduled_us;
        v->e->busy--;
        v->state = VU_PARKED;
        vu_begin(v, scheduled);
        return;
    }
    vu_done(v, error);
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    vu *v = c->owner;
    if (!v) return;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread == UV_EOF && v->bytes > 0) {
            /* A response delimited by the end of the connection. */
            http_parser_execute(&c->parser, &v->e->settings, NULL, 0);
            if (v->complete) {
                v->keep_alive = false;
                vu_done(v, NULL);
                return;
            }
        }
        if (nread == UV_EOF)
            vu_retry_or_fail(v, v->bytes ? "connection closed mid-response"
                                         : "connection closed before a response");
        else
            vu_retry_or_fail(v, uv_err_name((int)nread));
        return;
    }
    v->bytes += (uint64_t)nread;
    size_t used = http_parser_execute(&c->parser, &v->e->settings, buf->base, (size_t)nread);
    if (v->complete) {
        c->responses++;
        vu_done(v, NULL);
        return;
    }
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)nread) {
        vu_done(v, http_errno_name(HTTP_PARSER_ERRNO(&c->parser)));
        return;
    }
}

static void conn_written(uv_write_t *w, int status)
{
    conn *c = w->data;
    vu *v = c->owner;
    if (!v || status == 0) return;
    vu_retry_or_fail(v, uv_err_name(status));
}

static void vu_send(vu *v)
{
    engine *e = v->e;
    conn *c = v->c;
    load_request *rq = &e->s->requests[v->req_index];
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    uv_buf_t bufs[2] = {uv_buf_init(rq->head, (unsigned)rq->head_len),
                        uv_buf_init(rq->body ? rq->body : rq->head, (unsigned)rq->body_len)};
    c->write_req.data = c;
    int rc =
        uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, rq->body_len ? 2 : 1, conn_written);
    if (rc) {
        vu_retry_or_fail(v, uv_err_name(rc));
        return;
    }
    if (!uv_is_active((uv_handle_t *)&c->tcp)) {
        rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
        if (rc) vu_done(v, uv_err_name(rc));
    }
}

static void conn_connected(uv_connect_t *req, int status)
{
    conn *c = req->data;
    vu *v = c->owner;
    if (!v) return;
    if (status) {
        vu_done(v, uv_err_name(status));
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    vu_send(v);
}

static void vu_timeout(uv_timer_t *t)
{
    vu *v = t->data;
    if (v->state == VU_BUSY) vu_done(v, "request timeout");
}

/* Starts one iteration: pick a request, send it on the kept-alive
 * connection or a new one. */
static void vu_begin(vu *v, uint64_t scheduled_us)
{
    engine *e = v->e;
    v->state = VU_BUSY;
    e->busy++;
    if (!v->retried) v->req_index = pick_request(e);
    v->scheduled_us = scheduled_us;
    v->sent_us = now_us(e);
    v->status = 0;
    v->start = LOAD_START_NONE;
    v->worker[0] = 0;
    v->queue_us = v->init_us = v->exec_us = -1;
    v->bytes = 0;
    v->complete = false;
    v->keep_alive = false;
    v->hname_len = v->hvalue_len = 0;
    v->in_value = false;
    uv_timer_start(&v->timer, vu_timeout, (e->s->timeout_us + 999) / 1000, 0);
    if (v->c) {
        vu_send(v);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        vu_done(v, "out of memory");
        return;
    }
    c->owner = v;
    c->tcp.data = c;
    c->connect_req.data = c;
    int rc = uv_tcp_init(&e->loop, &c->tcp);
    if (rc) {
        free(c);
        vu_done(v, uv_err_name(rc));
        return;
    }
    v->c = c;
    rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&e->t->addr,
                        conn_connected);
    if (rc) vu_done(v, uv_err_name(rc));
}

static bool may_start(engine *e)
{
    if (e->ending) return false;
    if (e->max_requests && e->started >= e->max_requests) {
        e->ending = true;
        e->r->stopped_by_max_requests = true;
        return false;
    }
    return true;
}

static void vu_think_done(uv_timer_t *t)
{
    vu *v = t->data;
    engine *e = v->e;
    v->state = VU_PARKED;
    if (!may_start(e)) {
        engine_check_done(e);
        return;
    }
    e->started++;
    v->retried = false;
    vu_begin(v, now_us(e));
}

/* What a VU does after an iteration. */
static void vu_next(vu *v)
{
    engine *e = v->e;
    if (e->s->executor == LOAD_CONSTANT_ARRIVAL_RATE) {
        v->retried = false;
        /* Arrivals that were due keep being served after the last one,
         * within the graceful stop. */
        if (e->backlog_len && !(e->max_requests && e->started >= e->max_requests)) {
            uint64_t due = e->backlog[e->backlog_head];
            e->backlog_head = (e->backlog_head + 1) % e->n_vus;
            e->backlog_len--;
            e->started++;
            vu_begin(v, due);
            return;
        }
        vu_park(v);
        engine_check_done(e);
        return;
    }
    if (v->stop_after || !v->wanted || e->ending) {
        vu_park(v);
        engine_check_done(e);
        return;
    }
    uint64_t think = e->s->think_min_us;
    if (e->s->think_max_us > e->s->think_min_us)
        think += rng_next(e) % (e->s->think_max_us - e->s->think_min_us + 1);
    /* Even without think time the next iteration starts from the timer, on
     * the next turn of the loop: a request that fails at once (connection
     * refused) must not recurse. */
    v->state = VU_THINKING;
    uv_timer_start(&v->timer, vu_think_done, (think + 999) / 1000, 0);
}

/* ---- executors ---------------------------------------------------------- */

static uint32_t vus_active(engine *e)
{
    if (e->s->executor == LOAD_CONSTANT_ARRIVAL_RATE) return e->busy;
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->n_vus; i++) n += e->vus[i].state != VU_PARKED;
    return n;
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void engine_finish(engine *e)
{
    if (e->finished) return;
    e->finished = true;
    e->r->elapsed_us = now_us(e);
    uv_timer_stop(&e->tick);
    close_handle((uv_handle_t *)&e->tick);
    close_handle((uv_handle_t *)&e->progress);
    close_handle((uv_handle_t *)&e->sigint);
    for (uint32_t i = 0; i < e->n_vus; i++) {
        vu *v = &e->vus[i];
        conn_detach(v);
        if (v->timer_open) close_handle((uv_handle_t *)&v->timer);
    }
}

static void engine_check_done(engine *e)
{
    if (e->finished || !e->ending || e->busy) return;
    if (e->s->executor == LOAD_CONSTANT_ARRIVAL_RATE && e->backlog_len) return;
    engine_finish(e);
}

static void engine_begin_end(engine *e, uint64_t now, bool drop_backlog)
{
    if (!e->end_deadline_us) e->end_deadline_us = now + e->s->graceful_stop_us;
    e->ending = true;
    for (uint32_t i = 0; i < e->n_vus; i++) {
        vu *v = &e->vus[i];
        if (v->state == VU_THINKING) vu_park(v);
    }
    /* Arrivals still waiting for a slot that will never start: dropped. */
    if (drop_backlog || (e->max_requests && e->started >= e->max_requests)) {
        e->r->dropped += e->backlog_len;
        e->backlog_len = 0;
    }
}

static void tick_ramping(engine *e, uint64_t now)
{
    uint32_t want = load_scenario_vus_at(e->s, now);
    if (want > e->n_vus) want = e->n_vus;
    for (uint32_t i = 0; i < e->n_vus; i++) {
        vu *v = &e->vus[i];
        if (i < want && !v->wanted) {
            v->wanted = true;
            v->stop_after = false;
            v->stop_deadline_us = 0;
            if (v->state == VU_PARKED && may_start(e)) {
                e->started++;
                v->retried = false;
                vu_begin(v, now);
            }
        } else if (i >= want && v->wanted) {
            v->wanted = false;
            if (v->state == VU_THINKING)
                vu_park(v);
            else if (v->state == VU_BUSY) {
                v->stop_after = true;
                v->stop_deadline_us = now + e->s->graceful_ramp_down_us;
            }
        }
        if (v->state == VU_BUSY && v->stop_deadline_us && now >= v->stop_deadline_us)
            vu_interrupt(v);
    }
}

static void tick_arrivals(engine *e, uint64_t now)
{
    while (e->next_arrival < e->n_arrivals) {
        uint64_t due = (uint64_t)llround((double)e->next_arrival * e->period_us);
        if (due > now) break;
        e->next_arrival++;
        if (!may_start(e)) break;
        vu *free_slot = NULL;
        for (uint32_t i = 0; i < e->n_vus && !free_slot; i++)
            if (e->vus[i].state == VU_PARKED) free_slot = &e->vus[i];
        if (free_slot) {
            e->started++;
            free_slot->retried = false;
            vu_begin(free_slot, due);
        } else if (e->backlog_len < e->n_vus) {
            e->backlog[(e->backlog_head + e->backlog_len) % e->n_vus] = due;
            e->backlog_len++;
        } else
            e->r->dropped++;
    }
}

static void engine_tick(uv_timer_t *t)
{
    engine *e = t->data;
    uint64_t now = now_us(e);
    if (e->finished) return;
    uint32_t vus = vus_active(e);
    if (vus > e->r->vus_peak) e->r->vus_peak = vus;
    if (!e->ending && now >= e->duration_us) engine_begin_end(e, now, false);
    if (e->ending) {
        if (!e->end_deadline_us) e->end_deadline_us = now + e->s->graceful_stop_us;
        if (now >= e->end_deadline_us) {
            e->r->dropped += e->backlog_len;
            e->backlog_len = 0;
            for (uint32_t i = 0; i < e->n_vus; i++) vu_interrupt(&e->vus[i]);
        }
        engine_check_done(e);
        return;
    }
    if (e->s->executor == LOAD_RAMPING_VUS)
        tick_ramping(e, now);
    else {
        tick_arrivals(e, now);
        if (e->next_arrival >= e->n_arrivals && !e->ending) engine_begin_end(e, now, false);
    }
    if (e->ending) engine_check_done(e);
    if (e->finished) return;
    /* Arrivals want the next due time; VU stages are fine at 10 ms steps. */
    uint64_t next_ms = 10;
    if (e->s->executor == LOAD_CONSTANT_ARRIVAL_RATE && e->next_arrival < e->n_arrivals) {
        uint64_t due = (uint64_t)llround((double)e->next_arrival * e->period_us);
        uint64_t in = due > now_us(e) ? due - now_us(e) : 0;
        next_ms = in / 1000;
        if (next_ms > 10) next_ms = 10;
    }
    uv_timer_start(&e->tick, engine_tick, next_ms, 0);
}

/* ---- progress ------------------------------------------------------------ */

static void engine_progress(uv_timer_t *t)
{
    engine *e = t->data;
    uint64_t now = now_us(e);
    double secs = (double)(now - e->last_progress_us) / 1e6;
    e->last_progress_us = now;
    load_trend tr;
    load_trend_of(e->interval.v, e->interval.n, &tr);
    uint32_t vus = vus_active(e);
    if (vus > e->r->vus_peak) e->r->vus_peak = vus;
    double rate = secs > 0 ? (double)tr.count / secs : 0;
    if (e->r->timeline)
        fprintf(e->r->timeline,
                "%.3f,%u,%u,%zu,%.2f,%.3f,%.3f,%.3f,%.3f,%.3f,%" PRIu64 ",%" PRIu64 ",%" PRIu64
                "\n",
                (double)now / 1e6, vus, e->busy, tr.count, rate, tr.med / 1e3, tr.p90 / 1e3,
                tr.p95 / 1e3, tr.p99 / 1e3, tr.max / 1e3, e->interval_errors, e->interval_cold,
                e->interval_warm);
    if (!e->o->quiet && !e->finished) {
        char p90[32], el[32], tot[32];
        load_format_us(tr.p90, p90, sizeof p90);
        load_format_us((double)now, el, sizeof el);
        load_format_us((double)e->duration_us, tot, sizeof tot);
        uint64_t failed = e->r->failed;
        FILE *out = stderr;
        if (e->o->progress_tty) fprintf(out, "\r\033[K");
        fprintf(out, "%s/%s  VUs %u/%u  %.0f req/s  p90 %s  reqs %zu  errors %" PRIu64, el, tot,
                vus, e->n_vus, rate, tr.count ? p90 : "-", e->r->durations.n, failed);
        if (e->r->cold_durations.n || e->r->warm_durations.n)
            fprintf(out, "  cold %zu warm %zu", e->r->cold_durations.n, e->r->warm_durations.n);
        fputc(e->o->progress_tty ? ' ' : '\n', out);
        fflush(out);
    }
    e->interval.n = 0;
    e->interval_errors = e->interval_cold = e->interval_warm = 0;
}

static void engine_sigint(uv_signal_t *s, int signum)
{
    (void)signum;
    engine *e = s->data;
    uint64_t now = now_us(e);
    if (++e->sigints == 1) {
        if (!e->o->quiet)
            fprintf(stderr, "\nkiln load: stopping; in-flight requests get the graceful stop "
                            "(Ctrl-C again to stop now)\n");
        e->r->stopped_by_signal = true;
        engine_begin_end(e, now, true);
        engine_check_done(e);
    } else {
        for (uint32_t i = 0; i < e->n_vus; i++) vu_interrupt(&e->vus[i]);
        engine_check_done(e);
    }
}

/* ---- the run ------------------------------------------------------------- */

static void raise_fd_limit(uint32_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    rlim_t need = (rlim_t)want + 64;
    if (rl.rlim_cur >= need) return;
    rl.rlim_cur = need < rl.rlim_max ? need : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

int load_run(const load_scenario *s, const load_target *t, const load_options *o, load_results *r,
             char *err, size_t errlen)
{
    engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->s = s;
    e->t = t;
    e->o = o;
    e->r = r;
    e->n_vus = load_scenario_vus_max(s);
    if (e->n_vus == 0) e->n_vus = 1;
    e->duration_us = load_scenario_duration_us(s);
    e->max_requests = o->max_requests;
    if (s->max_requests && (!e->max_requests || s->max_requests < e->max_requests))
        e->max_requests = s->max_requests;
    e->rng = s->seed ? s->seed * 0x9E3779B97F4A7C15ull : 0x9E3779B97F4A7C15ull;
    r->vus_max = e->n_vus;
    e->settings = (http_parser_settings){
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_message_complete = on_message_complete,
    };
    raise_fd_limit(e->n_vus);
    int rc = uv_loop_init(&e->loop);
    if (rc) {
        snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(rc));
        free(e);
        return -1;
    }
    e->vus = calloc(e->n_vus, sizeof *e->vus);
    if (s->executor == LOAD_CONSTANT_ARRIVAL_RATE) {
        e->backlog = calloc(e->n_vus, sizeof *e->backlog);
        e->period_us = (double)s->time_unit_us / s->rate;
        /* Arrivals at 0, period, 2 period, ... strictly before the end. */
        e->n_arrivals = (uint64_t)ceil((double)s->duration_us / e->period_us - 1e-9);
    }
    if (!e->vus || (s->executor == LOAD_CONSTANT_ARRIVAL_RATE && !e->backlog)) {
        snprintf(err, errlen, "out of memory");
        free(e->vus);
        free(e->backlog);
        uv_loop_close(&e->loop);
        free(e);
        return -1;
    }
    for (uint32_t i = 0; i < e->n_vus; i++) {
        vu *v = &e->vus[i];
        v->e = e;
        v->id = i + 1;
        uv_timer_init(&e->loop, &v->timer);
        v->timer.data = v;
        v->timer_open = true;
    }
    uv_timer_init(&e->loop, &e->tick);
    e->tick.data = e;
    uv_timer_init(&e->loop, &e->progress);
    e->progress.data = e;
    uv_signal_init(&e->loop, &e->sigint);
    e->sigint.data = e;
    uv_signal_start(&e->sigint, engine_sigint, SIGINT);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    e->t0_ns = uv_hrtime();
    r->started_at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    uint64_t every = o->progress_every_us ? o->progress_every_us : 1000000;
    uv_timer_start(&e->progress, engine_progress, every / 1000, every / 1000);
    uv_timer_start(&e->tick, engine_tick, 0, 0);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    /* A last progress row covers the tail since the last tick. */
    if (e->interval.n || e->interval_errors) engine_progress(&e->progress);
    if (!o->quiet && o->progress_tty) fputc('\n', stderr);
    if (uv_loop_close(&e->loop)) {
        uv_run(&e->loop, UV_RUN_DEFAULT);
        uv_loop_close(&e->loop);
    }
    load_samples_free(&e->interval);
    free(e->backlog);
    free(e->vus);
    free(e);
    return 0;
}
