/* The virtual user of `kiln load` (engine_internal.h): one iteration is one
 * request on its keep-alive connection, parsed as it arrives; the answer's
 * status, X-Kiln-* headers and latency are recorded, then the VU thinks,
 * runs the next iteration or parks. */
#include "engine_internal.h"

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

/* ---- connections ------------------------------------------------------- */

static void conn_closed(uv_handle_t *h)
{
    free(h->data);
}

void vu_detach(vu *v)
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
        .duration_us = engine_now_us(e) - v->scheduled_us,
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

/* Stops a VU's iterations. A VU that ramping took away closes its
 * keep-alive connection (one that comes back opens a new one); an idle
 * arrival-rate slot keeps it for its next arrival. */
static void vu_park_keep(vu *v, bool keep_conn)
{
    if (v->state == VU_BUSY) v->e->busy--;
    v->state = VU_PARKED;
    v->stop_after = false;
    v->stop_deadline_us = 0;
    if (v->timer_open) uv_timer_stop(&v->timer);
    if (!keep_conn) vu_detach(v);
}

void vu_park(vu *v)
{
    vu_park_keep(v, false);
}

/* The iteration is over (a response, an error or a timeout). */
static void vu_done(vu *v, const char *error)
{
    engine *e = v->e;
    if (v->timer_open) uv_timer_stop(&v->timer);
    record(v, error);
    e->r->iterations++;
    if (error || !v->keep_alive || !e->s->keep_alive) vu_detach(v);
    e->busy--;
    v->state = VU_PARKED;
    vu_next(v);
}

/* Ends the iteration without a result: a graceful window ran out. */
void vu_interrupt(vu *v)
{
    engine *e = v->e;
    if (v->state != VU_BUSY) return;
    e->r->interrupted++;
    vu_detach(v);
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
        vu_detach(v);
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
    if (v->state != VU_BUSY) {
        /* Between requests (think time, an idle arrival slot) the server
         * closed the kept-alive connection, or sent what nobody asked for:
         * drop the connection; the next request opens a new one. */
        vu_detach(v);
        return;
    }
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
    if (!v || status == 0 || v->state != VU_BUSY) return;
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
void vu_begin(vu *v, uint64_t scheduled_us)
{
    engine *e = v->e;
    v->state = VU_BUSY;
    e->busy++;
    if (!v->retried) v->req_index = engine_pick_request(e);
    v->scheduled_us = scheduled_us;
    v->sent_us = engine_now_us(e);
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

static void vu_think_done(uv_timer_t *t)
{
    vu *v = t->data;
    engine *e = v->e;
    v->state = VU_PARKED;
    if (!engine_may_start(e)) {
        engine_check_done(e);
        return;
    }
    e->started++;
    v->retried = false;
    vu_begin(v, engine_now_us(e));
}

/* What a VU does after an iteration. */
void vu_next(vu *v)
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
        vu_park_keep(v, true);
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
        think += engine_rng_next(e) % (e->s->think_max_us - e->s->think_min_us + 1);
    /* Even without think time the next iteration starts from the timer, on
     * the next turn of the loop: a request that fails at once (connection
     * refused) must not recurse. */
    v->state = VU_THINKING;
    uv_timer_start(&v->timer, vu_think_done, (think + 999) / 1000, 0);
}

void vu_parser_settings(http_parser_settings *s)
{
    *s = (http_parser_settings){
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_message_complete = on_message_complete,
    };
}
