/* kiln load: a k6-style HTTP load generator on one libuv loop.
 *
 * The pieces, one file each:
 *   scenario.c  the scenario YAML (executor, stages, request mix) -> load_scenario
 *   target.c    the target URL and the loopback-only rule
 *   stats.c     exact percentiles (sort + linear interpolation, as k6 does)
 *   engine.c    the executors (ramping VUs, constant arrival rate) and HTTP/1.1 client
 *   report.c    per-request CSV, timeline CSV, summary text and JSON
 */
#ifndef KILN_LOAD_H
#define KILN_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include <jansson.h>

/* ---- scenario ---------------------------------------------------------- */

typedef enum load_executor {
    LOAD_RAMPING_VUS,           /* closed loop: N virtual users, each request after the last */
    LOAD_CONSTANT_ARRIVAL_RATE, /* open loop: requests start on a fixed schedule */
} load_executor;

typedef struct load_stage {
    uint32_t target;      /* VUs at the end of the stage */
    uint64_t duration_us; /* linear ramp from the previous target over this long */
} load_stage;

typedef struct load_header {
    char *name;
    char *value;
} load_header;

/* One entry of the weighted request mix. The request head (request line and
 * headers) is built once by load_scenario_prepare(); the body is shared. */
typedef struct load_request {
    char *name;   /* label in the summary; defaults to the path */
    char *method; /* GET, POST, ... */
    char *path;   /* appended to the URL's path; starts with '/' */
    uint32_t weight;
    load_header *headers;
    size_t n_headers;
    char *body_file; /* resolved path, or NULL */
    char *body;      /* file contents or inline `body`, or NULL */
    size_t body_len;
    char *head; /* built by load_scenario_prepare() */
    size_t head_len;
} load_request;

/* Limits the parser enforces, so that a scenario cannot run away. */
#define LOAD_MAX_VUS         10000
#define LOAD_MAX_STAGES      256
#define LOAD_MAX_REQUESTS    64
#define LOAD_MAX_HEADERS     32
#define LOAD_MAX_BODY        (64u << 20)
#define LOAD_MAX_DURATION_US (24ull * 3600 * 1000000) /* one day */

typedef struct load_scenario {
    char *name;
    load_executor executor;
    /* ramping-vus */
    uint32_t start_vus;
    load_stage *stages;
    size_t n_stages;
    uint64_t graceful_ramp_down_us; /* busy VUs no longer wanted finish within this */
    uint64_t think_min_us;          /* pause after each iteration, uniform in [min, max] */
    uint64_t think_max_us;
    /* constant-arrival-rate */
    double rate; /* iterations per time_unit */
    uint64_t time_unit_us;
    uint64_t duration_us; /* how long arrivals are scheduled */
    uint32_t max_vus;     /* bound on requests in flight (and connections) */
    /* both */
    uint64_t graceful_stop_us; /* in-flight requests at the end get this long */
    uint64_t timeout_us;       /* per request */
    uint64_t max_requests;     /* no request starts after this many; 0 = no bound */
    bool keep_alive;
    uint64_t seed; /* request mix and think time draws */
    load_request *requests;
    size_t n_requests;
    uint64_t total_weight;
} load_scenario;

/* Parses a scenario file. Returns NULL and writes a one-line reason,
 * "FILE:LINE: what", to `err` on failure. Paths in the file (body_file) are
 * relative to it. */
load_scenario *load_scenario_parse_file(const char *path, char *err, size_t errlen);
/* The same from a string; `name` labels errors, `base_dir` resolves
 * body_file (NULL: the working directory). */
load_scenario *load_scenario_parse_string(const char *text, size_t len, const char *name,
                                          const char *base_dir, char *err, size_t errlen);
/* Multiplies every duration of the run (stages, duration, think time and
 * graceful windows stay) by `f` > 0. */
void load_scenario_scale(load_scenario *s, double f);
void load_scenario_free(load_scenario *s);
/* Reads body files and builds each request's head for `host` (the Host
 * header) and `prefix` (the URL's path, without a trailing '/'). */
int load_scenario_prepare(load_scenario *s, const char *host, const char *prefix, char *err,
                          size_t errlen);
/* VUs wanted `t_us` into a ramping-vus run (start_vus, then the stages). */
uint32_t load_scenario_vus_at(const load_scenario *s, uint64_t t_us);
/* Sum of the stages' durations, or duration for the arrival-rate executor. */
uint64_t load_scenario_duration_us(const load_scenario *s);
/* The most VUs the scenario can use: k6's vus_max. */
uint32_t load_scenario_vus_max(const load_scenario *s);
/* "1m30s", "250ms", "2s" -> microseconds; -1 when not a duration. */
int64_t load_parse_duration(const char *text);
/* Formats microseconds like k6 ("1.2s", "15.3ms", "870µs") into buf. */
const char *load_format_us(double us, char *buf, size_t len);

/* ---- target ------------------------------------------------------------ */

typedef struct load_target {
    char host[256];               /* as written in the URL, without brackets */
    char port[8];                 /* decimal */
    char prefix[512];             /* path before the request paths, no trailing '/' */
    char hostport[300];           /* the Host header */
    struct sockaddr_storage addr; /* first resolved address */
    char addr_text[64];
} load_target;

/* Parses http://host[:port][/prefix] and resolves the host. Unless
 * `allow_remote`, every resolved address must be loopback (127.0.0.0/8, ::1).
 * Returns 0, or 2 for a malformed URL / refused target, 1 for a failed lookup,
 * with a one-line reason in `err`. */
int load_target_open(load_target *t, const char *url, bool allow_remote, char *err, size_t errlen);
void load_target_close(load_target *t);

/* ---- statistics -------------------------------------------------------- */

/* Exact percentile of `n` sorted values, `p` in [0, 100], interpolating
 * linearly between the two closest ranks (k6's Trend and numpy's default):
 * rank = p/100 * (n - 1). 0 when n == 0. */
double load_percentile_sorted(const uint64_t *sorted, size_t n, double p);
/* Sorts `v` ascending in place. */
void load_sort_u64(uint64_t *v, size_t n);

/* A growable array of durations (microseconds). */
typedef struct load_samples {
    uint64_t *v;
    size_t n, cap;
} load_samples;
int load_samples_push(load_samples *s, uint64_t x);
void load_samples_free(load_samples *s);

/* The summary of a set of durations. */
typedef struct load_trend {
    size_t count;
    double avg, min, med, p90, p95, p99, max; /* microseconds */
} load_trend;
/* Computes the trend of `n` values; sorts them in place. */
void load_trend_of(uint64_t *v, size_t n, load_trend *out);

/* ---- results ----------------------------------------------------------- */

typedef enum load_start {
    LOAD_START_NONE = 0, /* no X-Kiln-Start header */
    LOAD_START_COLD,
    LOAD_START_WARM,
} load_start;

/* One finished request, as the CSV row writes it. */
typedef struct load_record {
    uint64_t sent_us;      /* when its first byte was queued, since the run's start */
    uint64_t scheduled_us; /* when it was due: the arrival time, or sent_us (VUs) */
    uint32_t vu;           /* 1-based VU (or slot) number */
    size_t req_index;      /* into the scenario's requests */
    int status;            /* 0 when no response */
    uint64_t duration_us;  /* from scheduled_us to the response's last byte */
    load_start start;
    const char *worker;                 /* X-Kiln-Worker or "" */
    int64_t queue_us, init_us, exec_us; /* X-Kiln-*-Us, -1 when absent */
    uint64_t bytes;                     /* response bytes received */
    const char *error;                  /* NULL on a response */
} load_record;

/* Per request-mix entry. */
typedef struct load_req_stats {
    uint64_t count, failed, cold, warm;
    uint64_t sum_us, cold_sum_us, warm_sum_us;
} load_req_stats;

typedef struct load_results {
    double started_at; /* Unix seconds */
    uint64_t elapsed_us;
    load_samples durations; /* every request's duration */
    load_samples cold_durations, warm_durations;
    uint64_t failed;      /* status outside 200-399 or no response */
    uint64_t iterations;  /* finished (request done, error or not) */
    uint64_t interrupted; /* aborted by a graceful ramp-down or stop deadline */
    uint64_t dropped;     /* arrivals never started (arrival-rate) */
    uint64_t bytes_received, bytes_sent;
    uint32_t vus_max, vus_peak;
    bool stopped_by_max_requests, stopped_by_signal;
    uint64_t status_counts[6];   /* [0] no response, [1..5] 1xx..5xx */
    json_t *errors;              /* {"reason": count} */
    load_req_stats *per_request; /* one per scenario request */
    FILE *csv;                   /* per-request rows, or NULL */
    FILE *timeline;              /* one row a second, or NULL */
} load_results;

int load_results_init(load_results *r, const load_scenario *s, const char *out_dir, char *err,
                      size_t errlen);
/* Counts one finished request and writes its CSV row. */
void load_results_add(load_results *r, const load_scenario *s, const load_record *rec);
/* Closes the CSV files; 0, or -1 with a reason when writing failed. */
int load_results_finish(load_results *r, char *err, size_t errlen);
void load_results_free(load_results *r);
/* The k6-style summary as JSON (new reference). */
json_t *load_summary_json(load_results *r, const load_scenario *s, const char *url);
/* The k6-style summary as text. */
void load_summary_print(FILE *out, const json_t *summary);

/* ---- the run ----------------------------------------------------------- */

typedef struct load_options {
    const char *url;
    const char *out_dir;   /* NULL: no files */
    bool progress_tty;     /* rewrite one progress line (\r) instead of printing lines */
    bool quiet;            /* no progress at all */
    uint64_t max_requests; /* no iteration starts after this many; 0 = no bound */
    uint64_t progress_every_us;
} load_options;

/* Runs the scenario against the target on a fresh libuv loop; fills `r`.
 * Returns 0, or -1 with a reason in `err` when the run could not start. */
int load_run(const load_scenario *s, const load_target *t, const load_options *o, load_results *r,
             char *err, size_t errlen);

#endif
