/* Loading and validating the YAML server configuration (see config.h). */
#include "config.h"

#include <yaml.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"echo", "predict", "train", "models"};

const char *fn_kind_name(fn_kind k)
{
    return (unsigned)k < 4 ? kind_names[k] : "unknown";
}

void config_defaults(server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->auth = 1;
    cfg->zygote = 1;
    cfg->max_header_bytes = 16 << 10;
    cfg->max_body_bytes = 16 << 20;
    cfg->max_json_depth = 64;
    cfg->max_tensor_elements = 16 << 20;
    cfg->max_connections = 1024;
    cfg->max_model_bytes = (uint64_t)1 << 30;
    cfg->idle_timeout_ms = 60000;
    cfg->read_timeout_ms = 30000;
    cfg->write_timeout_ms = 30000;
    cfg->request_timeout_ms = 300000;
    cfg->jobs_max_running = 1;
    cfg->jobs_max_queued = 16;
    cfg->jobs_max_epochs = 100;
    cfg->jobs_threads = 1;
    cfg->jobs_timeout_ms = 3600000;
    cfg->sample_pss = 1;
    /* An edge node's disk is small and a busy function logs thousands of
     * rows a second: the log keeps the newest million rows (about 60 MB
     * with its index) and nothing older than 30 days. */
    cfg->log_retention_rows = 1000000;
    cfg->log_retention_days = 30;
    /* log_batch_rows, log_flush_ms, log_queue: 0, the store's own defaults
     * (store_options_defaults()) */
}

static void fn_defaults(fn_config *f)
{
    memset(f, 0, sizeof *f);
    f->max_workers = 1;
    f->concurrency = 1;
    f->max_batch = 8;
    f->queue_limit = 64;
    f->threads = 1;
    f->idle_timeout_ms = 60000;
    f->timeout_ms = 30000;
}

void config_free(server_config *cfg)
{
    for (int i = 0; i < cfg->n_functions; i++) {
        free(cfg->functions[i].name);
        free(cfg->functions[i].model);
    }
    free(cfg->functions);
    free(cfg->listen);
    free(cfg->data_dir);
    free(cfg->user);
    free(cfg->sample_file);
    cfg->functions = NULL;
    cfg->listen = cfg->data_dir = cfg->user = cfg->sample_file = NULL;
    cfg->n_functions = 0;
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    if (!strcmp(s, "0")) {
        *ms = 0;
        return 0;
    }
    if (*s < '0' || *s > '9') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    uint64_t mul;
    if (!strcmp(end, "ms"))
        mul = 1;
    else if (!strcmp(end, "s"))
        mul = 1000;
    else if (!strcmp(end, "m"))
        mul = 60000;
    else if (!strcmp(end, "h"))
        mul = 3600000;
    else
        return -1;
    if (v > UINT64_MAX / mul / 1000) return -1;
    *ms = v * mul;
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    if (*s < '0' || *s > '9') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    unsigned shift;
    if (!*end || !strcmp(end, "B"))
        shift = 0;
    else if (!strcmp(end, "KiB"))
        shift = 10;
    else if (!strcmp(end, "MiB"))
        shift = 20;
    else if (!strcmp(end, "GiB"))
        shift = 30;
    else
        return -1;
    if (v > (UINT64_MAX >> 1) >> shift) return -1;
    *bytes = (uint64_t)v << shift;
    return 0;
}

const fn_config *config_find_function(const server_config *cfg, const char *name, size_t len)
{
    for (int i = 0; i < cfg->n_functions; i++)
        if (strlen(cfg->functions[i].name) == len && !memcmp(cfg->functions[i].name, name, len))
            return &cfg->functions[i];
    return NULL;
}

/* ---- YAML walking ------------------------------------------------------ */

typedef struct parse_ctx {
    yaml_document_t *doc;
    const char *source;
    char *err;
    size_t errlen;
} parse_ctx;

static int fail(parse_ctx *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(parse_ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    int k = snprintf(c->err, c->errlen, "%s:%zu: ", c->source, n ? n->start_mark.line + 1 : 1);
    if (k < 0 || (size_t)k >= c->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *scalar(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int get_string(parse_ctx *c, const yaml_node_t *v, const char *key, char **out)
{
    const char *s = scalar(v);
    if (!s || !*s) return fail(c, v, "%s: expected a non-empty string", key);
    char *d = strdup(s);
    if (!d) return fail(c, v, "out of memory");
    free(*out);
    *out = d;
    return 0;
}

static int get_int(parse_ctx *c, const yaml_node_t *v, const char *key, long lo, long hi, int *out)
{
    const char *s = scalar(v);
    char *end;
    if (!s || !*s) return fail(c, v, "%s: expected an integer", key);
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || *end) return fail(c, v, "%s: '%s' is not an integer", key, s);
    if (x < lo || x > hi) return fail(c, v, "%s: %ld is outside %ld..%ld", key, x, lo, hi);
    *out = (int)x;
    return 0;
}

static int get_duration(parse_ctx *c, const yaml_node_t *v, const char *key, uint64_t *out)
{
    const char *s = scalar(v);
    if (!s || config_parse_duration(s, out))
        return fail(c, v, "%s: expected a duration such as 300ms, 2s, 5m or 1h, got '%s'", key,
                    s ? s : "(not a scalar)");
    return 0;
}

static int get_size(parse_ctx *c, const yaml_node_t *v, const char *key, uint64_t lo, uint64_t *out)
{
    const char *s = scalar(v);
    if (!s || config_parse_size(s, out))
        return fail(c, v, "%s: expected a size such as 65536, 512KiB, 16MiB or 1GiB, got '%s'", key,
                    s ? s : "(not a scalar)");
    if (*out < lo) return fail(c, v, "%s: must be at least %" PRIu64 " bytes", key, lo);
    return 0;
}

static int get_bool(parse_ctx *c, const yaml_node_t *v, const char *key, int *out)
{
    const char *s = scalar(v);
    if (s && (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")))
        *out = 1;
    else if (s && (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")))
        *out = 0;
    else
        return fail(c, v, "%s: expected true or false", key);
    return 0;
}

#define NODE(c, id) yaml_document_get_node((c)->doc, (id))
#define FOR_PAIRS(c, map, kn, vn, key)                                          \
    for (yaml_node_pair_t *p_ = (map)->data.mapping.pairs.start;                \
         p_ < (map)->data.mapping.pairs.top && ((kn) = NODE(c, p_->key)) &&     \
         ((vn) = NODE(c, p_->value)) && ((key) = scalar(kn) ? scalar(kn) : ""); \
         p_++)

static int parse_limits(parse_ctx *c, yaml_node_t *m, server_config *cfg)
{
    yaml_node_t *k, *v;
    const char *key;
    uint64_t n;
    if (m->type != YAML_MAPPING_NODE) return fail(c, m, "server.limits: expected a mapping");
    FOR_PAIRS(c, m, k, v, key)
    {
        if (!strcmp(key, "max_header_bytes")) {
            if (get_size(c, v, key, 1024, &n)) return -1;
            if (n > (1u << 30)) return fail(c, v, "%s: at most 1GiB", key);
            cfg->max_header_bytes = n;
        } else if (!strcmp(key, "max_body_bytes")) {
            if (get_size(c, v, key, 1, &n)) return -1;
            if (n > (1u << 30)) return fail(c, v, "%s: at most 1GiB", key);
            cfg->max_body_bytes = n;
        } else if (!strcmp(key, "max_json_depth")) {
            if (get_int(c, v, key, 1, 10000, &cfg->max_json_depth)) return -1;
        } else if (!strcmp(key, "max_tensor_elements")) {
            if (get_size(c, v, key, 1, &n)) return -1;
            cfg->max_tensor_elements = (int64_t)n;
        } else if (!strcmp(key, "max_connections")) {
            if (get_int(c, v, key, 1, 1000000, &cfg->max_connections)) return -1;
        } else if (!strcmp(key, "max_model_bytes")) {
            if (get_size(c, v, key, 1, &cfg->max_model_bytes)) return -1;
        } else {
            return fail(c, k, "server.limits: unknown key '%s'", key);
        }
    }
    return 0;
}

static int parse_timeouts(parse_ctx *c, yaml_node_t *m, server_config *cfg)
{
    yaml_node_t *k, *v;
    const char *key;
    if (m->type != YAML_MAPPING_NODE) return fail(c, m, "server.timeouts: expected a mapping");
    FOR_PAIRS(c, m, k, v, key)
    {
        uint64_t *dst = !strcmp(key, "idle")      ? &cfg->idle_timeout_ms
                        : !strcmp(key, "read")    ? &cfg->read_timeout_ms
                        : !strcmp(key, "write")   ? &cfg->write_timeout_ms
                        : !strcmp(key, "request") ? &cfg->request_timeout_ms
                                                  : NULL;
        if (!dst) return fail(c, k, "server.timeouts: unknown key '%s'", key);
        if (get_duration(c, v, key, dst)) return -1;
        if (*dst == 0) return fail(c, v, "%s: must be greater than 0", key);
    }
    return 0;
}

static int parse_jobs(parse_ctx *c, yaml_node_t *m, server_config *cfg)
{
    yaml_node_t *k, *v;
    const char *key;
    if (m->type != YAML_MAPPING_NODE) return fail(c, m, "server.jobs: expected a mapping");
    FOR_PAIRS(c, m, k, v, key)
    {
        if (!strcmp(key, "max_running")) {
            if (get_int(c, v, key, 1, 1024, &cfg->jobs_max_running)) return -1;
        } else if (!strcmp(key, "max_queued")) {
            if (get_int(c, v, key, 0, 100000, &cfg->jobs_max_queued)) return -1;
        } else if (!strcmp(key, "max_epochs")) {
            if (get_int(c, v, key, 1, 100000, &cfg->jobs_max_epochs)) return -1;
        } else if (!strcmp(key, "threads")) {
            if (get_int(c, v, key, 1, 1024, &cfg->jobs_threads)) return -1;
        } else if (!strcmp(key, "timeout")) {
            if (get_duration(c, v, key, &cfg->jobs_timeout_ms)) return -1;
        } else {
            return fail(c, k, "server.jobs: unknown key '%s'", key);
        }
    }
    return 0;
}

static int parse_sample(parse_ctx *c, yaml_node_t *m, server_config *cfg)
{
    yaml_node_t *k, *v;
    const char *key;
    if (m->type != YAML_MAPPING_NODE) return fail(c, m, "server.sample: expected a mapping");
    FOR_PAIRS(c, m, k, v, key)
    {
        if (!strcmp(key, "interval")) {
            if (get_duration(c, v, key, &cfg->sample_interval_ms)) return -1;
            if (cfg->sample_interval_ms != 0 && cfg->sample_interval_ms < 10)
                return fail(c, v, "interval: at least 10ms (or 0 for off)");
        } else if (!strcmp(key, "file")) {
            if (get_string(c, v, key, &cfg->sample_file)) return -1;
        } else if (!strcmp(key, "pss")) {
            if (get_bool(c, v, key, &cfg->sample_pss)) return -1;
        } else {
            return fail(c, k, "server.sample: unknown key '%s'", key);
        }
    }
    return 0;
}

static int parse_log(parse_ctx *c, yaml_node_t *m, server_config *cfg)
{
    yaml_node_t *k, *v;
    const char *key;
    if (m->type != YAML_MAPPING_NODE) return fail(c, m, "server.log: expected a mapping");
    FOR_PAIRS(c, m, k, v, key)
    {
        int n;
        if (!strcmp(key, "retention_rows")) {
            if (get_int(c, v, key, 0, 2000000000, &n)) return -1;
            cfg->log_retention_rows = n;
        } else if (!strcmp(key, "retention_days")) {
            if (get_int(c, v, key, 0, 36500, &cfg->log_retention_days)) return -1;
        } else if (!strcmp(key, "batch_rows")) {
            if (get_int(c, v, key, 1, 100000, &cfg->log_batch_rows)) return -1;
        } else if (!strcmp(key, "flush")) {
            if (get_duration(c, v, key, &cfg->log_flush_ms)) return -1;
            if (cfg->log_flush_ms < 1 || cfg->log_flush_ms > 60000)
                return fail(c, v, "flush: between 1ms and 60s");
        } else if (!strcmp(key, "queue")) {
            if (get_int(c, v, key, 1, 10000000, &cfg->log_queue)) return -1;
        } else {
            return fail(c, k, "server.log: unknown key '%s'", key);
        }
    }
    return 0;
}

static int parse_server(parse_ctx *c, yaml_node_t *m, server_config *cfg)
{
    yaml_node_t *k, *v;
    const char *key;
    if (m->type != YAML_MAPPING_NODE) return fail(c, m, "server: expected a mapping");
    FOR_PAIRS(c, m, k, v, key)
    {
        if (!strcmp(key, "listen")) {
            if (get_string(c, v, key, &cfg->listen)) return -1;
        } else if (!strcmp(key, "data_dir")) {
            if (get_string(c, v, key, &cfg->data_dir)) return -1;
        } else if (!strcmp(key, "auth_invoke")) {
            if (get_bool(c, v, key, &cfg->auth_invoke)) return -1;
        } else if (!strcmp(key, "zygote")) {
            if (get_bool(c, v, key, &cfg->zygote)) return -1;
        } else if (!strcmp(key, "zygote_preload")) {
            if (get_size(c, v, key, 0, &cfg->zygote_preload_bytes)) return -1;
        } else if (!strcmp(key, "user")) {
            if (get_string(c, v, key, &cfg->user)) return -1;
        } else if (!strcmp(key, "auth")) {
            if (get_bool(c, v, key, &cfg->auth)) return -1;
        } else if (!strcmp(key, "limits")) {
            if (parse_limits(c, v, cfg)) return -1;
        } else if (!strcmp(key, "timeouts")) {
            if (parse_timeouts(c, v, cfg)) return -1;
        } else if (!strcmp(key, "jobs")) {
            if (parse_jobs(c, v, cfg)) return -1;
        } else if (!strcmp(key, "sample")) {
            if (parse_sample(c, v, cfg)) return -1;
        } else if (!strcmp(key, "log")) {
            if (parse_log(c, v, cfg)) return -1;
        } else {
            return fail(c, k, "server: unknown key '%s'", key);
        }
    }
    return 0;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return 0;
    }
    return 1;
}

static int parse_function(parse_ctx *c, yaml_node_t *m, fn_config *f, const server_config *cfg)
{
    yaml_node_t *k, *v;
    const char *key;
    int have_kind = 0;
    uint64_t n;
    fn_defaults(f);
    if (m->type != YAML_MAPPING_NODE) return fail(c, m, "functions: each entry is a mapping");
    FOR_PAIRS(c, m, k, v, key)
    {
        int r = 0;
        if (!strcmp(key, "name")) {
            if (get_string(c, v, key, &f->name)) return -1;
            if (!valid_name(f->name))
                return fail(c, v, "name: '%s' must be 1-64 of A-Z a-z 0-9 _ - . (not leading .)",
                            f->name);
            for (int i = 0; i < cfg->n_functions && &cfg->functions[i] != f; i++)
                if (!strcmp(cfg->functions[i].name, f->name))
                    return fail(c, v, "name: function '%s' is declared twice", f->name);
        } else if (!strcmp(key, "kind")) {
            const char *s = scalar(v);
            int found = -1;
            for (int i = 0; s && i < 4; i++)
                if (!strcmp(s, kind_names[i])) found = i;
            if (found < 0)
                return fail(c, v, "kind: expected predict, train, models or echo, got '%s'",
                            s ? s : "(not a scalar)");
            f->kind = (fn_kind)found;
            have_kind = 1;
        } else if (!strcmp(key, "model")) {
            r = get_string(c, v, key, &f->model);
        } else if (!strcmp(key, "min_warm")) {
            r = get_int(c, v, key, 0, 1024, &f->min_warm);
        } else if (!strcmp(key, "max_workers")) {
            r = get_int(c, v, key, 1, 1024, &f->max_workers);
        } else if (!strcmp(key, "concurrency")) {
            r = get_int(c, v, key, 1, 4096, &f->concurrency);
        } else if (!strcmp(key, "max_batch")) {
            r = get_int(c, v, key, 1, 256, &f->max_batch);
        } else if (!strcmp(key, "batch_wait_us")) {
            r = get_int(c, v, key, 0, 100000, &f->batch_wait_us);
        } else if (!strcmp(key, "queue_limit")) {
            r = get_int(c, v, key, 0, 1000000, &f->queue_limit);
        } else if (!strcmp(key, "threads")) {
            r = get_int(c, v, key, 1, 1024, &f->threads);
        } else if (!strcmp(key, "idle_timeout")) {
            r = get_duration(c, v, key, &f->idle_timeout_ms);
        } else if (!strcmp(key, "timeout")) {
            r = get_duration(c, v, key, &f->timeout_ms);
            if (!r && f->timeout_ms == 0) return fail(c, v, "timeout: must be greater than 0");
        } else if (!strcmp(key, "faults")) {
            r = get_bool(c, v, key, &f->faults);
        } else if (!strcmp(key, "memory_limit")) {
            r = get_size(c, v, key, 0, &n);
            if (!r && n != 0 && n < (16u << 20))
                return fail(c, v, "memory_limit: at least 16MiB (or 0 for none)");
            f->memory_limit = n;
        } else if (!strcmp(key, "cpu_limit")) {
            r = get_duration(c, v, key, &n);
            if (!r && n != 0 && n < 1000)
                return fail(c, v, "cpu_limit: at least 1s (or 0 for none)");
            f->cpu_limit_s = (n + 999) / 1000;
        } else {
            return fail(c, k, "functions: unknown key '%s'", key);
        }
        if (r) return -1;
    }
    if (!f->name) return fail(c, m, "functions: an entry has no name");
    if (!have_kind) return fail(c, m, "function '%s': no kind", f->name);
    if (f->kind == FN_PREDICT && !f->model)
        return fail(c, m, "function '%s': kind predict needs a model", f->name);
    if (f->kind == FN_TRAIN && f->min_warm)
        return fail(c, m, "function '%s': kind train runs jobs, not workers: min_warm must be 0",
                    f->name);
    if (f->kind == FN_MODELS && f->min_warm)
        return fail(c, m,
                    "function '%s': kind models is served by the server itself, not workers: "
                    "min_warm must be 0",
                    f->name);
    if (f->kind == FN_MODELS && f->model)
        return fail(c, m, "function '%s': kind models manages every model: it takes no model",
                    f->name);
    if (f->faults && f->kind != FN_ECHO)
        return fail(c, m, "function '%s': faults is only for kind echo", f->name);
    if (f->min_warm > f->max_workers)
        return fail(c, m, "function '%s': min_warm %d is more than max_workers %d", f->name,
                    f->min_warm, f->max_workers);
    return 0;
}

static int parse_functions(parse_ctx *c, yaml_node_t *s, server_config *cfg)
{
    if (s->type != YAML_SEQUENCE_NODE) return fail(c, s, "functions: expected a list");
    size_t n = (size_t)(s->data.sequence.items.top - s->data.sequence.items.start);
    fn_config *fs = calloc(n ? n : 1, sizeof *fs);
    if (!fs) return fail(c, s, "out of memory");
    cfg->functions = fs;
    cfg->n_functions = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = NODE(c, s->data.sequence.items.start[i]);
        /* Counted before parsing so that a failed entry is freed too. */
        cfg->n_functions++;
        if (parse_function(c, item, &fs[i], cfg)) return -1;
    }
    return 0;
}

int config_parse(server_config *cfg, const char *text, size_t len, const char *source, char *err,
                 size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    parse_ctx c = {&doc, source, err, errlen};
    int rc = -1;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "%s: cannot initialise the YAML parser", source);
        config_free(cfg);
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%zu: %s", source, parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "malformed YAML");
        yaml_parser_delete(&parser);
        config_free(cfg);
        return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        fail(&c, NULL, "the configuration is empty");
        goto out;
    }
    if (root->type != YAML_MAPPING_NODE) {
        fail(&c, root, "expected a mapping with 'server' and 'functions'");
        goto out;
    }
    yaml_node_t *k, *v;
    const char *key;
    FOR_PAIRS(&c, root, k, v, key)
    {
        if (!strcmp(key, "server")) {
            if (parse_server(&c, v, cfg)) goto out;
        } else if (!strcmp(key, "functions")) {
            if (cfg->functions) {
                fail(&c, k, "functions: declared twice");
                goto out;
            }
            if (parse_functions(&c, v, cfg)) goto out;
        } else {
            fail(&c, k, "unknown top-level key '%s' (expected server, functions)", key);
            goto out;
        }
    }
    rc = 0;
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc) config_free(cfg);
    return rc;
}

int config_load_file(server_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        config_free(cfg);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            char *nb = cap <= (1u << 24) ? realloc(buf, cap) : NULL;
            if (!nb) {
                snprintf(err, errlen, "%s: larger than 16MiB or out of memory", path);
                goto fail;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto fail;
    }
    fclose(f);
    int rc = config_parse(cfg, buf, len, path, err, errlen);
    free(buf);
    return rc;
fail:
    fclose(f);
    free(buf);
    config_free(cfg);
    return -1;
}
