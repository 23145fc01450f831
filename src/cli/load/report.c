/* What `kiln load` writes: the per-request CSV and the per-second timeline
 * while it runs, and at the end a summary in k6's vocabulary, as text and as
 * JSON.
 *
 * requests.csv, one row per finished request:
 *   t_start      Unix seconds when the request was sent
 *   scheduled    Unix seconds when it was due (arrival rate); = t_start (VUs)
 *   latency_us   from `scheduled` to the last byte of the response
 *   status       HTTP status, 0 when there was no response
 *   start        cold | warm (X-Kiln-Start), empty when absent
 *   worker       X-Kiln-Worker, empty when absent
 *   function     the request's name in the scenario
 *   bytes        response bytes received (head and body)
 *   vu           the virtual user (or arrival slot), 1-based
 *   queue_us, init_us, exec_us   X-Kiln-Queue-Us / -Init-Us / -Exec-Us, empty when absent
 *   error        why there was no response (timeout, ECONNREFUSED...), else empty
 *
 * timeline.csv, one row per progress interval (1 s):
 *   t_s, vus, busy, reqs, rps, p50_ms, p90_ms, p95_ms, p99_ms, max_ms, errors, cold, warm
 */
#include "load.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int load_results_init(load_results *r, const load_scenario *s, const char *out_dir, char *err,
                      size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->errors = json_object();
    r->per_request = calloc(s->n_requests, sizeof *r->per_request);
    if (!r->errors || !r->per_request) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!out_dir) return 0;
    if (mkdir(out_dir, 0777) && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", out_dir, strerror(errno));
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/requests.csv", out_dir);
    r->csv = fopen(path, "w");
    if (!r->csv) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    fputs("t_start,scheduled,latency_us,status,start,worker,function,bytes,vu,queue_us,init_us,"
          "exec_us,error\n",
          r->csv);
    snprintf(path, sizeof path, "%s/timeline.csv", out_dir);
    r->timeline = fopen(path, "w");
    if (!r->timeline) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    fputs("t_s,vus,busy,reqs,rps,p50_ms,p90_ms,p95_ms,p99_ms,max_ms,errors,cold,warm\n",
          r->timeline);
    return 0;
}

static void csv_opt(FILE *f, int64_t v)
{
    if (v >= 0) fprintf(f, "%" PRId64, v);
    fputc(',', f);
}

void load_results_add(load_results *r, const load_scenario *s, const load_record *rec)
{
    bool failed = rec->error || rec->status < 200 || rec->status >= 400;
    load_samples_push(&r->durations, rec->duration_us);
    if (rec->start == LOAD_START_COLD) load_samples_push(&r->cold_durations, rec->duration_us);
    if (rec->start == LOAD_START_WARM) load_samples_push(&r->warm_durations, rec->duration_us);
    if (failed) r->failed++;
    int cls = rec->status >= 100 && rec->status < 600 ? rec->status / 100 : 0;
    r->status_counts[cls]++;
    r->bytes_received += rec->bytes;
    const load_request *rq = &s->requests[rec->req_index];
    r->bytes_sent += rq->head_len + rq->body_len;
    if (rec->error) {
        json_t *n = json_object_get(r->errors, rec->error);
        json_object_set_new(r->errors, rec->error, json_integer(n ? json_integer_value(n) + 1 : 1));
    } else if (failed) {
        char key[32];
        snprintf(key, sizeof key, "HTTP %d", rec->status);
        json_t *n = json_object_get(r->errors, key);
        json_object_set_new(r->errors, key, json_integer(n ? json_integer_value(n) + 1 : 1));
    }
    load_req_stats *st = &r->per_request[rec->req_index];
    st->count++;
    st->failed += failed;
    st->sum_us += rec->duration_us;
    if (rec->start == LOAD_START_COLD) {
        st->cold++;
        st->cold_sum_us += rec->duration_us;
    } else if (rec->start == LOAD_START_WARM) {
        st->warm++;
        st->warm_sum_us += rec->duration_us;
    }
    if (!r->csv) return;
    FILE *f = r->csv;
    fprintf(f, "%.6f,%.6f,%" PRIu64 ",%d,%s,%s,%s,%" PRIu64 ",%u,",
            r->started_at + (double)rec->sent_us / 1e6,
            r->started_at + (double)rec->scheduled_us / 1e6, rec->duration_us, rec->status,
            rec->start == LOAD_START_COLD   ? "cold"
            : rec->start == LOAD_START_WARM ? "warm"
                                            : "",
            rec->worker ? rec->worker : "", rq->name, rec->bytes, rec->vu);
    csv_opt(f, rec->queue_us);
    csv_opt(f, rec->init_us);
    csv_opt(f, rec->exec_us);
    fprintf(f, "%s\n", rec->error ? rec->error : "");
}

int load_results_finish(load_results *r, char *err, size_t errlen)
{
    int rc = 0;
    if (r->csv) {
        if (ferror(r->csv) | fclose(r->csv)) {
            snprintf(err, errlen, "writing requests.csv failed");
            rc = -1;
        }
        r->csv = NULL;
    }
    if (r->timeline) {
        if ((ferror(r->timeline) | fclose(r->timeline)) && rc == 0) {
            snprintf(err, errlen, "writing timeline.csv failed");
            rc = -1;
        }
        r->timeline = NULL;
    }
    return rc;
}

void load_results_free(load_results *r)
{
    if (r->csv) fclose(r->csv);
    if (r->timeline) fclose(r->timeline);
    load_samples_free(&r->durations);
    load_samples_free(&r->cold_durations);
    load_samples_free(&r->warm_durations);
    json_decref(r->errors);
    free(r->per_request);
    memset(r, 0, sizeof *r);
}

/* A k6 Trend in milliseconds, as k6's summary export writes it. */
static json_t *trend_json(load_samples *v)
{
    load_trend t;
    load_trend_of(v->v, v->n, &t);
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)t.count,
                     "avg", t.avg / 1e3, "min", t.min / 1e3, "med", t.med / 1e3, "max", t.max / 1e3,
                     "p(90)", t.p90 / 1e3, "p(95)", t.p95 / 1e3, "p(99)", t.p99 / 1e3);
}

json_t *load_summary_json(load_results *r, const load_scenario *s, const char *url)
{
    double secs = r->elapsed_us ? (double)r->elapsed_us / 1e6 : 1e-9;
    uint64_t n = r->durations.n;
    json_t *metrics = json_object();
    json_object_set_new(metrics, "http_req_duration", trend_json(&r->durations));
    json_object_set_new(metrics, "http_reqs",
                        json_pack("{s:I, s:f}", "count", (json_int_t)n, "rate", (double)n / secs));
    json_object_set_new(metrics, "http_req_failed",
                        json_pack("{s:f, s:I, s:I}", "rate",
                                  n ? (double)r->failed / (double)n : 0.0, "passes",
                                  (json_int_t)r->failed, "fails", (json_int_t)(n - r->failed)));
    json_object_set_new(metrics, "iterations",
                        json_pack("{s:I, s:f}", "count", (json_int_t)r->iterations, "rate",
                                  (double)r->iterations / secs));
    json_object_set_new(metrics, "interrupted_iterations",
                        json_pack("{s:I}", "count", (json_int_t)r->interrupted));
    json_object_set_new(metrics, "dropped_iterations",
                        json_pack("{s:I}", "count", (json_int_t)r->dropped));
    json_object_set_new(metrics, "vus", json_pack("{s:i}", "max", (int)r->vus_peak));
    json_object_set_new(metrics, "vus_max", json_pack("{s:i}", "value", (int)r->vus_max));
    json_object_set_new(metrics, "data_received",
                        json_pack("{s:I, s:f}", "count", (json_int_t)r->bytes_received, "rate",
                                  (double)r->bytes_received / secs));
    json_object_set_new(metrics, "data_sent",
                        json_pack("{s:I, s:f}", "count", (json_int_t)r->bytes_sent, "rate",
                                  (double)r->bytes_sent / secs));

    json_t *kiln = json_object();
    json_object_set_new(kiln, "cold", trend_json(&r->cold_durations));
    json_object_set_new(kiln, "warm", trend_json(&r->warm_durations));
    json_object_set_new(kiln, "unlabelled",
                        json_integer((json_int_t)(n - r->cold_durations.n - r->warm_durations.n)));
    json_t *status = json_object();
    static const char *const cls[6] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 6; i++)
        if (r->status_counts[i])
            json_object_set_new(status, cls[i], json_integer((json_int_t)r->status_counts[i]));
    json_object_set_new(kiln, "status", status);
    json_object_set(kiln, "errors", r->errors);
    json_t *per = json_object();
    for (size_t i = 0; i < s->n_requests; i++) {
        const load_req_stats *st = &r->per_request[i];
        json_object_set_new(
            per, s->requests[i].name,
            json_pack(
                "{s:I, s:I, s:I, s:I, s:f, s:f, s:f}", "count", (json_int_t)st->count, "failed",
                (json_int_t)st->failed, "cold", (json_int_t)st->cold, "warm", (json_int_t)st->warm,
                "avg_ms", st->count ? (double)st->sum_us / (double)st->count / 1e3 : 0.0,
                "cold_avg_ms", st->cold ? (double)st->cold_sum_us / (double)st->cold / 1e3 : 0.0,
                "warm_avg_ms", st->warm ? (double)st->warm_sum_us / (double)st->warm / 1e3 : 0.0));
    }
    json_object_set_new(kiln, "requests", per);

    const char *stop = r->stopped_by_signal         ? "signal"
                       : r->stopped_by_max_requests ? "max_requests"
                                                    : "duration";
    return json_pack("{s:s, s:s, s:s, s:f, s:f, s:f, s:b, s:s, s:o, s:o}", "scenario", s->name,
                     "url", url, "executor",
                     s->executor == LOAD_RAMPING_VUS ? "ramping-vus" : "constant-arrival-rate",
                     "started_at", r->started_at, "duration_s", secs, "planned_duration_s",
                     (double)load_scenario_duration_us(s) / 1e6, "keep_alive", s->keep_alive,
                     "stopped_by", stop, "metrics", metrics, "kiln", kiln);
}

static double num(const json_t *o, const char *a, const char *b)
{
    return json_number_value(json_object_get(json_object_get(o, a), b));
}

static void print_trend(FILE *out, const char *label, const json_t *t)
{
    char b[7][32];
    const char *keys[7] = {"avg", "min", "med", "max", "p(90)", "p(95)", "p(99)"};
    for (int i = 0; i < 7; i++)
        load_format_us(json_number_value(json_object_get(t, keys[i])) * 1e3, b[i], sizeof b[i]);
    fprintf(out, "     %-22s avg=%-9s min=%-9s med=%-9s max=%-9s p(90)=%-9s p(95)=%-9s p(99)=%s\n",
            label, b[0], b[1], b[2], b[3], b[4], b[5], b[6]);
}

void load_summary_print(FILE *out, const json_t *j)
{
    const json_t *m = json_object_get(j, "metrics");
    const json_t *k = json_object_get(j, "kiln");
    fprintf(out, "\n     scenario: %s (%s) -> %s, %.1fs, stopped by %s\n\n",
            json_string_value(json_object_get(j, "scenario")),
            json_string_value(json_object_get(j, "executor")),
            json_string_value(json_object_get(j, "url")),
            json_number_value(json_object_get(j, "duration_s")),
            json_string_value(json_object_get(j, "stopped_by")));
    print_trend(out, "http_req_duration....:", json_object_get(m, "http_req_duration"));
    const json_t *cold = json_object_get(k, "cold"), *warm = json_object_get(k, "warm");
    if (json_integer_value(json_object_get(cold, "count")))
        print_trend(out, "  { start:cold }.....:", cold);
    if (json_integer_value(json_object_get(warm, "count")))
        print_trend(out, "  { start:warm }.....:", warm);
    json_int_t reqs = json_integer_value(json_object_get(json_object_get(m, "http_reqs"), "count"));
    json_int_t failed =
        json_integer_value(json_object_get(json_object_get(m, "http_req_failed"), "passes"));
    fprintf(out, "     %-22s %.2f%%  %lld out of %lld\n",
            "http_req_failed......:", num(m, "http_req_failed", "rate") * 100, (long long)failed,
            (long long)reqs);
    fprintf(out, "     %-22s %lld  %.2f/s\n", "http_reqs............:", (long long)reqs,
            num(m, "http_reqs", "rate"));
    fprintf(
        out, "     %-22s %lld  %.2f/s\n", "iterations...........:",
        (long long)json_integer_value(json_object_get(json_object_get(m, "iterations"), "count")),
        num(m, "iterations", "rate"));
    json_int_t inter =
        json_integer_value(json_object_get(json_object_get(m, "interrupted_iterations"), "count"));
    json_int_t dropped =
        json_integer_value(json_object_get(json_object_get(m, "dropped_iterations"), "count"));
    if (inter) fprintf(out, "     %-22s %lld\n", "interrupted_iterations:", (long long)inter);
    if (dropped) fprintf(out, "     %-22s %lld\n", "dropped_iterations...:", (long long)dropped);
    fprintf(out, "     %-22s %lld\n", "vus..................:",
            (long long)json_integer_value(json_object_get(json_object_get(m, "vus"), "max")));
    fprintf(out, "     %-22s %lld\n", "vus_max..............:",
            (long long)json_integer_value(json_object_get(json_object_get(m, "vus_max"), "value")));
    fprintf(out, "     %-22s %lld cold, %lld warm, %lld without X-Kiln-Start\n",
            "starts...............:", (long long)json_integer_value(json_object_get(cold, "count")),
            (long long)json_integer_value(json_object_get(warm, "count")),
            (long long)json_integer_value(json_object_get(k, "unlabelled")));
    const json_t *errors = json_object_get(k, "errors");
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)errors, key, val)
        fprintf(out, "     %-22s %lld x %s\n",
                "errors...............:", (long long)json_integer_value(val), key);
    fputc('\n', out);
}
