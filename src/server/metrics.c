/* Server counters, histograms and their Prometheus text form (metrics.h). */
#include "metrics.h"
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_bounds[METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10,
};

static const char *const reject_names[REJECT_REASON_COUNT_] = {
    "connections",  "header_too_large", "body_too_large", "malformed",
    "read_timeout", "queue_full",       "bad_json",
};

int metrics_init(metrics *m, int n_functions)
{
    memset(m, 0, sizeof *m);
    m->fns = calloc(n_functions > 0 ? (size_t)n_functions : 1, sizeof *m->fns);
    if (!m->fns) return -1;
    m->n_fns = n_functions;
    return 0;
}

void metrics_free(metrics *m)
{
    free(m->fns);
    m->fns = NULL;
}

void metrics_hist_observe(metrics_hist *h, double seconds)
{
    for (int i = 0; i < METRICS_BUCKETS; i++)
        if (seconds <= bucket_bounds[i]) {
            h->buckets[i]++;
            break;
        }
    h->count++;
    h->sum += seconds;
}

void metrics_invocation(metrics *m, int fn, int status, double seconds, int cold,
                        double start_seconds)
{
    if (fn < 0 || fn >= m->n_fns) return;
    fn_metrics *f = &m->fns[fn];
    if (status >= 100 && status < 600) f->by_status[status]++;
    metrics_hist_observe(&f->seconds, seconds);
    if (cold == 0 || cold == 1) {
        f->starts[cold]++;
        metrics_hist_observe(&f->start_seconds[cold], start_seconds);
    }
}

static void render_hist(buf *out, const char *name, const char *labels, const metrics_hist *h)
{
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        cum += h->buckets[i];
        buf_printf(out, "%s_bucket{%s,le=\"%g\"} %" PRIu64 "\n", name, labels, bucket_bounds[i],
                   cum);
    }
    buf_printf(out, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, labels, h->count);
    buf_printf(out, "%s_sum{%s} %.9g\n", name, labels, h->sum);
    buf_printf(out, "%s_count{%s} %" PRIu64 "\n", name, labels, h->count);
}

void metrics_render(const metrics *m, const server_config *cfg, const fn_gauges *gauges,
                    int open_connections, buf *out)
{
    char labels[160];
    static const char *const start_names[2] = {"warm", "cold"};

    buf_puts(out, "# HELP gateway_function_invocation_total Function invocations by HTTP "
                  "status code.\n# TYPE gateway_function_invocation_total counter\n");
    for (int f = 0; f < m->n_fns; f++)
        for (int s = 100; s < 600; s++)
            if (m->fns[f].by_status[s])
                buf_printf(out,
                           "gateway_function_invocation_total{function_name=\"%s\",code=\"%d\"} "
                           "%" PRIu64 "\n",
                           cfg->functions[f].name, s, m->fns[f].by_status[s]);

    buf_puts(out, "# HELP gateway_functions_seconds Function invocation time, arrival to "
                  "result.\n# TYPE gateway_functions_seconds histogram\n");
    for (int f = 0; f < m->n_fns; f++) {
        snprintf(labels, sizeof labels, "function_name=\"%s\"", cfg->functions[f].name);
        render_hist(out, "gateway_functions_seconds", labels, &m->fns[f].seconds);
    }

    buf_puts(out, "# HELP kiln_function_starts_total Invocations that reached a worker, by "
                  "cold or warm start.\n# TYPE kiln_function_starts_total counter\n");
    for (int f = 0; f < m->n_fns; f++)
        for (int c = 0; c < 2; c++)
            buf_printf(
                out, "kiln_function_starts_total{function_name=\"%s\",start=\"%s\"} %" PRIu64 "\n",
                cfg->functions[f].name, start_names[c], m->fns[f].starts[c]);

    buf_puts(out, "# HELP kiln_function_start_seconds Time from arrival to dispatch on a "
                  "worker (queue and worker start).\n"
                  "# TYPE kiln_function_start_seconds histogram\n");
    for (int f = 0; f < m->n_fns; f++)
        for (int c = 0; c < 2; c++) {
            snprintf(labels, sizeof labels, "function_name=\"%s\",start=\"%s\"",
                     cfg->functions[f].name, start_names[c]);
            render_hist(out, "kiln_function_start_seconds", labels, &m->fns[f].start_seconds[c]);
        }

    buf_puts(out, "# HELP kiln_worker_init_seconds Worker process start to ready.\n"
                  "# TYPE kiln_worker_init_seconds histogram\n");
    for (int f = 0; f < m->n_fns; f++) {
        snprintf(labels, sizeof labels, "function_name=\"%s\"", cfg->functions[f].name);
        render_hist(out, "kiln_worker_init_seconds", labels, &m->fns[f].init_seconds);
    }

    buf_puts(out, "# HELP kiln_function_workers Worker processes by state.\n"
                  "# TYPE kiln_function_workers gauge\n");
    for (int f = 0; f < m->n_fns; f++) {
        const fn_gauges *g = &gauges[f];
        const int v[4] = {g->starting, g->idle, g->busy, g->stopping};
        static const char *const states[4] = {"starting", "idle", "busy", "stopping"};
        for (int s = 0; s < 4; s++)
            buf_printf(out, "kiln_function_workers{function_name=\"%s\",state=\"%s\"} %d\n",
                       cfg->functions[f].name, states[s], v[s]);
    }

    buf_puts(out, "# HELP kiln_function_queue_length Invocations waiting for a worker.\n"
                  "# TYPE kiln_function_queue_length gauge\n");
    for (int f = 0; f < m->n_fns; f++)
        buf_printf(out, "kiln_function_queue_length{function_name=\"%s\"} %d\n",
                   cfg->functions[f].name, gauges[f].queued);

    buf_puts(out, "# HELP kiln_requests_rejected_total Requests and connections turned away, "
                  "by reason.\n# TYPE kiln_requests_rejected_total counter\n");
    for (int r = 0; r < REJECT_REASON_COUNT_; r++)
        buf_printf(out, "kiln_requests_rejected_total{reason=\"%s\"} %" PRIu64 "\n",
                   reject_names[r], m->rejected[r]);

    buf_printf(out,
               "# HELP kiln_worker_crashes_total Workers that exited while serving.\n"
               "# TYPE kiln_worker_crashes_total counter\nkiln_worker_crashes_total %" PRIu64
               "\n# HELP kiln_worker_timeouts_total Workers killed for exceeding a timeout.\n"
               "# TYPE kiln_worker_timeouts_total counter\nkiln_worker_timeouts_total %" PRIu64
               "\n# HELP kiln_http_requests_total HTTP requests parsed.\n"
               "# TYPE kiln_http_requests_total counter\nkiln_http_requests_total %" PRIu64
               "\n# HELP kiln_http_connections Open client connections.\n"
               "# TYPE kiln_http_connections gauge\nkiln_http_connections %d\n",
               m->worker_crashes, m->worker_timeouts, m->http_requests, open_connections);
}
