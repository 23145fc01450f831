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

uint64_t engine_now_us(engine *e)
{
    return (uv_hrtime() - e->t0_ns) / 1000;
}

uint64_t engine_rng_next(engine *e)
{
    /* xorshift64*: reproducible from the scenario's seed. */
    uint64_t x = e->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    e->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

size_t engine_pick_request(engine *e)
{
    const load_scenario *s = e->s;
    if (s->n_requests == 1) return 0;
    uint64_t x = engine_rng_next(e) % s->total_weight;
    for (size_t i = 0; i < s->n_requests; i++) {
        if (x < s->requests[i].weight) return i;
        x -= s->requests[i].weight;
    }
    return s->n_requests - 1;
}

bool engine_may_start(engine *e)
{
    if (e->ending) return false;
    if (e->max_requests && e->started >= e->max_requests) {
        e->ending = true;
        e->r->stopped_by_max_requests = true;
        return false;
    }
    return true;
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
    e->r->elapsed_us = engine_now_us(e);
    uv_timer_stop(&e->tick);
    close_handle((uv_handle_t *)&e->tick);
    close_handle((uv_handle_t *)&e->progress);
    close_handle((uv_handle_t *)&e->sigint);
    for (uint32_t i = 0; i < e->n_vus; i++) {
        vu *v = &e->vus[i];
        vu_detach(v);
        if (v->timer_open) close_handle((uv_handle_t *)&v->timer);
    }
}

void engine_check_done(engine *e)
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
            if (v->state == VU_PARKED && engine_may_start(e)) {
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
        if (!engine_may_start(e)) break;
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
    uint64_t now = engine_now_us(e);
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
        uint64_t in = due > engine_now_us(e) ? due - engine_now_us(e) : 0;
        next_ms = in / 1000;
        if (next_ms > 10) next_ms = 10;
    }
    uv_timer_start(&e->tick, engine_tick, next_ms, 0);
}

/* ---- progress ------------------------------------------------------------ */

static void engine_progress(uv_timer_t *t)
{
    engine *e = t->data;
    uint64_t now = engine_now_us(e);
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
    uint64_t now = engine_now_us(e);
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
    vu_parser_settings(&e->settings);
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
