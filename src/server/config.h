/*
 * The server configuration: a YAML file (config/default.yaml documents every
 * key), or the copy of config/default.yaml embedded in the binary when no
 * file is given. Loading validates everything up front; an error names the
 * file, the line and the reason.
 */
#ifndef KILN_SERVER_CONFIG_H
#define KILN_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum fn_kind {
    FN_ECHO = 0, /* test/health kind: answers with its input */
    FN_PREDICT,
    FN_TRAIN,
    FN_MODELS,
} fn_kind;

const char *fn_kind_name(fn_kind k);

typedef struct fn_config {
    char *name; /* [A-Za-z0-9_.-]{1,64}, unique */
    fn_kind kind;
    char *model;              /* predict: model name (required); others: NULL */
    int min_warm;             /* workers kept running; 0 = scale to zero */
    int max_workers;          /* >= 1, >= min_warm */
    int concurrency;          /* in-flight invocations per worker, >= 1 */
    int max_batch;            /* invocations a worker runs in one round, 1..256 */
    int batch_wait_us;        /* a worker waits this long for a round to fill; 0 = no wait */
    int queue_limit;          /* invocations waiting for a worker beyond which 429 */
    int threads;              /* compute threads per worker, >= 1 */
    uint64_t idle_timeout_ms; /* an idle worker above min_warm exits after this */
    uint64_t timeout_ms;      /* one invocation, queue included; the worker is killed past it */
    uint64_t memory_limit;    /* bytes of address space per worker; 0 = none */
    uint64_t cpu_limit_s;     /* CPU seconds per worker process (RLIMIT_CPU); 0 = none */
    int faults;               /* echo only: honour ?crash=1 and ?sleep_ms=N (for tests) */
} fn_config;

typedef struct server_config {
    char *listen;                  /* "HOST:PORT" */
    char *data_dir;                /* where the store keeps its database and weights */
    int auth;                      /* 1: state-changing endpoints need the bearer token */
    int zygote;                    /* 1: workers are forked from a pre-initialised process */
    uint64_t zygote_preload_bytes; /* predict models the zygote copies into huge pages (0: none) */
    int auth_invoke;               /* 1: invocation endpoints need the bearer token too */
    char *user; /* workers run as this user when the server runs as root; NULL = same */
    size_t max_header_bytes;
    size_t max_body_bytes;
    int max_json_depth;
    int64_t max_tensor_elements;
    int max_connections;
    uint64_t max_model_bytes;    /* an uploaded model, expanded (decompression bombs) */
    uint64_t idle_timeout_ms;    /* keep-alive connection with no request */
    uint64_t read_timeout_ms;    /* from a request's first byte to its last */
    uint64_t write_timeout_ms;   /* one response's write */
    uint64_t request_timeout_ms; /* from a request's last byte to its response */
    /* training jobs (/v1/jobs and functions of kind train) */
    int jobs_max_running;        /* jobs training at once; more wait in the queue */
    int jobs_max_queued;         /* jobs waiting; beyond that 429 */
    int jobs_max_epochs;         /* epochs one job may ask for */
    int jobs_threads;            /* BLAS threads per job */
    uint64_t jobs_timeout_ms;    /* a job running longer is killed and failed; 0 = none */
    uint64_t sample_interval_ms; /* /proc sampling of server and workers; 0 = off */
    char *sample_file;           /* its CSV; relative to data_dir; NULL = cpu.csv */
    int sample_pss;              /* 1: PSS too (reads smaps_rollup) */
    /* the invocation log (server.log): a row per invocation in DATA_DIR/kiln.db */
    int64_t log_retention_rows; /* keep the newest N rows; 0 = no limit */
    int log_retention_days;     /* drop rows older than N days; 0 = no limit */
    /* 0 below: the store's default (store_options_defaults()) */
    int log_batch_rows;    /* rows per transaction at most */
    uint64_t log_flush_ms; /* a partial batch is written after this */
    int log_queue;         /* records waiting for the writer; more are dropped, counted */
    fn_config *functions;
    int n_functions;
} server_config;

/* The embedded default configuration (NUL-terminated). */
extern const char kiln_default_config[];

/* Fills `cfg` with built-in defaults (no functions). */
void config_defaults(server_config *cfg);

/* Parses YAML `text` (named `source` in messages) over `cfg`, which must
 * hold defaults. Returns 0, or -1 with "source:line: reason" in err. On
 * failure cfg is freed. */
int config_parse(server_config *cfg, const char *text, size_t len, const char *source, char *err,
                 size_t errlen);

/* Reads and parses a file; the same contract as config_parse. */
int config_load_file(server_config *cfg, const char *path, char *err, size_t errlen);

/* Parses "300ms", "2s", "1m", "1h" ("0" alone is allowed). 0 or -1. */
int config_parse_duration(const char *s, uint64_t *ms);
/* Parses "1048576", "512KiB", "16MiB", "1GiB". 0 or -1. */
int config_parse_size(const char *s, uint64_t *bytes);

const fn_config *config_find_function(const server_config *cfg, const char *name, size_t len);

void config_free(server_config *cfg);

#endif
