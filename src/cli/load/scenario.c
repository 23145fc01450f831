/* The scenario file of `kiln load`: YAML (libyaml's document API, so every
 * error can name the line it is about) -> load_scenario.
 *
 *   name: smoke
 *   executor: ramping-vus          # or constant-arrival-rate
 *   start_vus: 1
 *   stages: [{target: 10, duration: 5s}, {target: 0, duration: 5s}]
 *   graceful_ramp_down: 5s
 *   think_time: 100ms              # or {min: 50ms, max: 200ms}
 *   rate: 50                       # constant-arrival-rate: iterations per time_unit
 *   time_unit: 1s
 *   duration: 30s
 *   max_vus: 100                   # requests in flight at most
 *   graceful_stop: 10s
 *   timeout: 30s
 *   max_requests: 100000
 *   keep_alive: true
 *   seed: 1
 *   requests:
 *     - {name: echo, method: POST, path: /function/echo, weight: 3,
 *        headers: {Content-Type: application/json}, body: '{"x": 1}'}
 *     - {path: /function/mnist, body_file: digit.png}
 */
#include "load.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <yaml.h>

typedef struct parse_ctx {
    yaml_document_t *doc;
    const char *file;
    char *err;
    size_t errlen;
} parse_ctx;

__attribute__((format(printf, 3, 4))) static int fail_at(parse_ctx *c, const yaml_node_t *n,
                                                         const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n)
        snprintf(c->err, c->errlen, "%s:%zu: %s", c->file, (size_t)n->start_mark.line + 1, msg);
    else
        snprintf(c->err, c->errlen, "%s: %s", c->file, msg);
    return -1;
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int64_t load_parse_duration(const char *text)
{
    /* A sequence of <number><unit>, k6/Go style: "1m30s", "250ms", "1.5s".
     * A bare number is seconds. */
    if (!text || !*text) return -1;
    char *end;
    errno = 0;
    double whole = strtod(text, &end);
    if (!*end) {
        if (errno || !(whole >= 0) || whole * 1e6 > (double)LOAD_MAX_DURATION_US * 10) return -1;
        return (int64_t)llround(whole * 1e6);
    }
    const char *p = text;
    double total = 0;
    while (*p) {
        if (*p < '0' || *p > '9') return -1;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !(v >= 0) || isinf(v)) return -1;
        p = end;
        double unit;
        if (!strncmp(p, "ms", 2)) {
            unit = 1e3;
            p += 2;
        } else if (!strncmp(p, "us", 2)) {
            unit = 1;
            p += 2;
        } else if (!strncmp(p, "\xc2\xb5s", 3)) {
            unit = 1;
            p += 3;
        } else if (*p == 's') {
            unit = 1e6;
            p++;
        } else if (*p == 'm') {
            unit = 60e6;
            p++;
        } else if (*p == 'h') {
            unit = 3600e6;
            p++;
        } else
            return -1;
        total += v * unit;
        if (total > (double)LOAD_MAX_DURATION_US * 10) return -1;
    }
    return (int64_t)llround(total);
}

static int get_duration(parse_ctx *c, const yaml_node_t *n, const char *key, uint64_t max,
                        uint64_t *out)
{
    const char *s = scalar(n);
    int64_t v = s ? load_parse_duration(s) : -1;
    if (v < 0)
        return fail_at(c, n, "%s: expected a duration such as 500ms, 30s or 1m30s, got '%s'", key,
                       s ? s : "(not a scalar)");
    if ((uint64_t)v > max) {
        char b[32];
        return fail_at(c, n, "%s: %s is over the limit of %s", key, s,
                       load_format_us((double)max, b, sizeof b));
    }
    *out = (uint64_t)v;
    return 0;
}

static int get_uint(parse_ctx *c, const yaml_node_t *n, const char *key, uint64_t max,
                    uint64_t *out)
{
    const char *s = scalar(n);
    if (!s || !*s || strspn(s, "0123456789") != strlen(s))
        return fail_at(c, n, "%s: expected a non-negative integer, got '%s'", key,
                       s ? s : "(not a scalar)");
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno || v > max)
        return fail_at(c, n, "%s: %s is over the limit of %llu", key, s, (unsigned long long)max);
    *out = v;
    return 0;
}

static int get_double(parse_ctx *c, const yaml_node_t *n, const char *key, double *out)
{
    const char *s = scalar(n);
    char *end = NULL;
    double v = s ? strtod(s, &end) : NAN;
    if (!s || end == s || *end || !(v > 0) || isinf(v))
        return fail_at(c, n, "%s: expected a positive number, got '%s'", key,
                       s ? s : "(not a scalar)");
    *out = v;
    return 0;
}

static int get_bool(parse_ctx *c, const yaml_node_t *n, const char *key, bool *out)
{
    const char *s = scalar(n);
    if (s && (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on"))) {
        *out = true;
        return 0;
    }
    if (s && (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off"))) {
        *out = false;
        return 0;
    }
    return fail_at(c, n, "%s: expected true or false, got '%s'", key, s ? s : "(not a scalar)");
}

static int get_string(parse_ctx *c, const yaml_node_t *n, const char *key, char **out)
{
    const char *s = scalar(n);
    if (!s) return fail_at(c, n, "%s: expected a string", key);
    free(*out);
    *out = strdup(s);
    if (!*out) return fail_at(c, n, "out of memory");
    return 0;
}

/* A token character of RFC 9110 (method and header names). */
static bool is_token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!(((*s | 32) >= 'a' && (*s | 32) <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

/* No control characters (CR, LF, NUL...) in a header value or a path. */
static bool is_clean(const char *s, bool allow_space)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || (!allow_space && *s == ' ')) return false;
    return true;
}

static int parse_stages(parse_ctx *c, load_scenario *s, const yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return fail_at(c, n, "stages: expected a list of {target, duration}");
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0) return fail_at(c, n, "stages: the list is empty");
    if (count > LOAD_MAX_STAGES)
        return fail_at(c, n, "stages: %zu stages, more than the limit of %d", count,
                       LOAD_MAX_STAGES);
    s->stages = calloc(count, sizeof *s->stages);
    if (!s->stages) return fail_at(c, n, "out of memory");
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *it = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
        if (!it || it->type != YAML_MAPPING_NODE)
            return fail_at(c, it ? it : n, "stages[%zu]: expected {target: N, duration: D}", i);
        bool have_target = false, have_duration = false;
        for (yaml_node_pair_t *p = it->data.mapping.pairs.start; p < it->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
            yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
            const char *key = scalar(k);
            if (key && !strcmp(key, "target")) {
                uint64_t t;
                if (get_uint(c, v, "target", LOAD_MAX_VUS, &t)) return -1;
                s->stages[i].target = (uint32_t)t;
                have_target = true;
            } else if (key && !strcmp(key, "duration")) {
                if (get_duration(c, v, "duration", LOAD_MAX_DURATION_US, &s->stages[i].duration_us))
                    return -1;
                have_duration = true;
            } else
                return fail_at(c, k, "stages[%zu]: unknown key '%s' (target, duration)", i,
                               key ? key : "?");
        }
        if (!have_target || !have_duration)
            return fail_at(c, it, "stages[%zu]: needs both target and duration", i);
        s->n_stages++;
    }
    return 0;
}

static int parse_think(parse_ctx *c, load_scenario *s, const yaml_node_t *n)
{
    if (n->type == YAML_SCALAR_NODE) {
        if (get_duration(c, n, "think_time", LOAD_MAX_DURATION_US, &s->think_min_us)) return -1;
        s->think_max_us = s->think_min_us;
        return 0;
    }
    if (n->type != YAML_MAPPING_NODE)
        return fail_at(c, n, "think_time: expected a duration or {min, max}");
    bool have_min = false, have_max = false;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *key = scalar(k);
        if (key && !strcmp(key, "min")) {
            if (get_duration(c, v, "think_time.min", LOAD_MAX_DURATION_US, &s->think_min_us))
                return -1;
            have_min = true;
        } else if (key && !strcmp(key, "max")) {
            if (get_duration(c, v, "think_time.max", LOAD_MAX_DURATION_US, &s->think_max_us))
                return -1;
            have_max = true;
        } else
            return fail_at(c, k, "think_time: unknown key '%s' (min, max)", key ? key : "?");
    }
    if (!have_min || !have_max) return fail_at(c, n, "think_time: needs both min and max");
    if (s->think_min_us > s->think_max_us)
        return fail_at(c, n, "think_time: min is greater than max");
    return 0;
}

static int parse_headers(parse_ctx *c, load_request *r, const yaml_node_t *n)
{
    if (n->type != YAML_MAPPING_NODE) return fail_at(c, n, "headers: expected {Name: value}");
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count > LOAD_MAX_HEADERS)
        return fail_at(c, n, "headers: %zu headers, more than the limit of %d", count,
                       LOAD_MAX_HEADERS);
    r->headers = calloc(count ? count : 1, sizeof *r->headers);
    if (!r->headers) return fail_at(c, n, "out of memory");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *name = scalar(k), *value = scalar(v);
        if (!name || !is_token(name))
            return fail_at(c, k, "headers: '%s' is not a valid header name", name ? name : "?");
        if (!strcasecmp(name, "host") || !strcasecmp(name, "content-length") ||
            !strcasecmp(name, "connection") || !strcasecmp(name, "transfer-encoding"))
            return fail_at(c, k, "headers: %s is set by kiln load (see keep_alive)", name);
        if (!value || !is_clean(value, true))
            return fail_at(c, v, "headers: the value of %s must be one line of text", name);
        load_header *h = &r->headers[r->n_headers++];
        h->name = strdup(name);
        h->value = strdup(value);
        if (!h->name || !h->value) return fail_at(c, v, "out of memory");
    }
    return 0;
}

static int parse_request(parse_ctx *c, load_scenario *s, size_t i, const yaml_node_t *n)
{
    load_request *r = &s->requests[i];
    r->weight = 1;
    if (n->type != YAML_MAPPING_NODE)
        return fail_at(c, n, "requests[%zu]: expected a mapping with at least a path", i);
    bool have_body = false;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *key = scalar(k);
        if (!key) return fail_at(c, k, "requests[%zu]: keys must be strings", i);
        if (!strcmp(key, "name")) {
            if (get_string(c, v, "name", &r->name)) return -1;
            if (!is_clean(r->name, true) || strchr(r->name, ',') || strchr(r->name, '"'))
                return fail_at(c, v, "name: no commas, quotes or control characters");
        } else if (!strcmp(key, "method")) {
            if (get_string(c, v, "method", &r->method)) return -1;
            if (!is_token(r->method))
                return fail_at(c, v, "method: '%s' is not a valid HTTP method", r->method);
        } else if (!strcmp(key, "path")) {
            if (get_string(c, v, "path", &r->path)) return -1;
            if (r->path[0] != '/' || !is_clean(r->path, false))
                return fail_at(c, v, "path: must start with '/' and hold no spaces or controls");
        } else if (!strcmp(key, "weight")) {
            uint64_t w;
            if (get_uint(c, v, "weight", 1000000, &w)) return -1;
            if (w == 0) return fail_at(c, v, "weight: must be at least 1");
            r->weight = (uint32_t)w;
        } else if (!strcmp(key, "headers")) {
            if (r->headers) return fail_at(c, k, "headers: given twice");
            if (parse_headers(c, r, v)) return -1;
        } else if (!strcmp(key, "body") || !strcmp(key, "body_file")) {
            if (have_body)
                return fail_at(c, k, "requests[%zu]: body and body_file exclude each other", i);
            have_body = true;
            if (!strcmp(key, "body")) {
                if (get_string(c, v, "body", &r->body)) return -1;
                r->body_len = strlen(r->body);
                if (r->body_len > LOAD_MAX_BODY)
                    return fail_at(c, v, "body: longer than the limit of %u bytes", LOAD_MAX_BODY);
            } else {
                if (get_string(c, v, "body_file", &r->body_file)) return -1;
                if (!*r->body_file) return fail_at(c, v, "body_file: empty path");
            }
        } else
            return fail_at(c, k,
                           "requests[%zu]: unknown key '%s' (name, method, path, weight, headers, "
                           "body, body_file)",
                           i, key);
    }
    if (!r->path) return fail_at(c, n, "requests[%zu]: needs a path", i);
    if (!r->method && !(r->method = strdup(have_body ? "POST" : "GET")))
        return fail_at(c, n, "out of memory");
    if (!r->name && !(r->name = strdup(r->path))) return fail_at(c, n, "out of memory");
    return 0;
}

static int parse_requests(parse_ctx *c, load_scenario *s, const yaml_node_t *n)
{
    if (n->type != YAML_SEQUENCE_NODE) return fail_at(c, n, "requests: expected a list");
    size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (count == 0) return fail_at(c, n, "requests: the list is empty");
    if (count > LOAD_MAX_REQUESTS)
        return fail_at(c, n, "requests: %zu entries, more than the limit of %d", count,
                       LOAD_MAX_REQUESTS);
    s->requests = calloc(count, sizeof *s->requests);
    if (!s->requests) return fail_at(c, n, "out of memory");
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *it = yaml_document_get_node(c->doc, n->data.sequence.items.start[i]);
        s->n_requests++;
        if (parse_request(c, s, i, it ? it : n)) return -1;
        s->total_weight += s->requests[i].weight;
    }
    return 0;
}

static int parse_root(parse_ctx *c, load_scenario *s, const yaml_node_t *root)
{
    if (!root) return fail_at(c, NULL, "the file is empty");
    if (root->type != YAML_MAPPING_NODE)
        return fail_at(c, root, "expected a mapping (name, executor, stages, requests, ...)");
    const yaml_node_t *stages = NULL, *executor = NULL, *rate = NULL, *duration = NULL,
                      *requests = NULL;
    s->max_vus = 0;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        const char *key = scalar(k);
        uint64_t u;
        if (!key) return fail_at(c, k, "keys must be strings");
        if (!strcmp(key, "name")) {
            if (get_string(c, v, "name", &s->name)) return -1;
        } else if (!strcmp(key, "executor")) {
            const char *e = scalar(v);
            executor = v;
            if (e && !strcmp(e, "ramping-vus"))
                s->executor = LOAD_RAMPING_VUS;
            else if (e && !strcmp(e, "constant-arrival-rate"))
                s->executor = LOAD_CONSTANT_ARRIVAL_RATE;
            else
                return fail_at(c, v,
                               "executor: '%s' is not one of ramping-vus, constant-arrival-rate",
                               e ? e : "?");
        } else if (!strcmp(key, "start_vus")) {
            if (get_uint(c, v, key, LOAD_MAX_VUS, &u)) return -1;
            s->start_vus = (uint32_t)u;
        } else if (!strcmp(key, "stages")) {
            stages = v;
            if (parse_stages(c, s, v)) return -1;
        } else if (!strcmp(key, "graceful_ramp_down")) {
            if (get_duration(c, v, key, LOAD_MAX_DURATION_US, &s->graceful_ramp_down_us)) return -1;
        } else if (!strcmp(key, "graceful_stop")) {
            if (get_duration(c, v, key, LOAD_MAX_DURATION_US, &s->graceful_stop_us)) return -1;
        } else if (!strcmp(key, "think_time")) {
            if (parse_think(c, s, v)) return -1;
        } else if (!strcmp(key, "rate")) {
            rate = v;
            if (get_double(c, v, key, &s->rate)) return -1;
        } else if (!strcmp(key, "time_unit")) {
            if (get_duration(c, v, key, LOAD_MAX_DURATION_US, &s->time_unit_us)) return -1;
            if (s->time_unit_us == 0) return fail_at(c, v, "time_unit: must be more than 0");
        } else if (!strcmp(key, "duration")) {
            duration = v;
            if (get_duration(c, v, key, LOAD_MAX_DURATION_US, &s->duration_us)) return -1;
        } else if (!strcmp(key, "max_vus")) {
            if (get_uint(c, v, key, LOAD_MAX_VUS, &u)) return -1;
            if (u == 0) return fail_at(c, v, "max_vus: must be at least 1");
            s->max_vus = (uint32_t)u;
        } else if (!strcmp(key, "timeout")) {
            if (get_duration(c, v, key, LOAD_MAX_DURATION_US, &s->timeout_us)) return -1;
            if (s->timeout_us == 0) return fail_at(c, v, "timeout: must be more than 0");
        } else if (!strcmp(key, "max_requests")) {
            if (get_uint(c, v, key, UINT64_MAX / 2, &s->max_requests)) return -1;
        } else if (!strcmp(key, "keep_alive")) {
            if (get_bool(c, v, key, &s->keep_alive)) return -1;
        } else if (!strcmp(key, "seed")) {
            if (get_uint(c, v, key, UINT64_MAX / 2, &s->seed)) return -1;
        } else if (!strcmp(key, "requests")) {
            requests = v;
            if (parse_requests(c, s, v)) return -1;
        } else
            return fail_at(c, k, "unknown key '%s'", key);
    }
    if (!requests) return fail_at(c, root, "needs a 'requests' list");
    if (s->executor == LOAD_RAMPING_VUS) {
        if (!stages) return fail_at(c, executor ? executor : root, "ramping-vus needs 'stages'");
        if (rate || duration)
            return fail_at(c, rate ? rate : duration,
                           "rate and duration belong to constant-arrival-rate; ramping-vus takes "
                           "stages");
        uint64_t total = 0;
        for (size_t i = 0; i < s->n_stages; i++) total += s->stages[i].duration_us;
        if (total == 0) return fail_at(c, stages, "stages: the total duration is 0");
        if (total > LOAD_MAX_DURATION_US)
            return fail_at(c, stages, "stages: the total duration is over the limit of 24h");
    } else {
        if (stages)
            return fail_at(c, stages,
                           "stages belong to ramping-vus; constant-arrival-rate "
                           "takes rate, time_unit and duration");
        if (!rate) return fail_at(c, executor, "constant-arrival-rate needs 'rate'");
        if (!duration || s->duration_us == 0)
            return fail_at(c, duration ? duration : executor,
                           "constant-arrival-rate needs a 'duration' above 0");
        if (s->rate * 1e6 / (double)s->time_unit_us > 1e6)
            return fail_at(c, rate, "rate: more than 1,000,000 requests a second");
        if (s->max_vus == 0) s->max_vus = 100;
    }
    return 0;
}

static void scenario_defaults(load_scenario *s)
{
    s->executor = LOAD_RAMPING_VUS;
    s->graceful_ramp_down_us = 30000000;
    s->graceful_stop_us = 30000000;
    s->time_unit_us = 1000000;
    s->timeout_us = 60000000;
    s->keep_alive = true;
    s->seed = 1;
}

load_scenario *load_scenario_parse_string(const char *text, size_t len, const char *name,
                                          const char *base_dir, char *err, size_t errlen)
{
    parse_ctx c = {.file = name ? name : "<scenario>", .err = err, .errlen = errlen};
    load_scenario *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    scenario_defaults(s);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%zu: %s%s%s", c.file, (size_t)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "YAML syntax error", parser.context ? " " : "",
                 parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        load_scenario_free(s);
        return NULL;
    }
    c.doc = &doc;
    int rc = parse_root(&c, s, yaml_document_get_root_node(&doc));
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc == 0 && !s->name && !(s->name = strdup(c.file))) rc = fail_at(&c, NULL, "out of memory");
    if (rc == 0) {
        /* body_file paths are resolved against the scenario's directory now,
         * and read by load_scenario_prepare(). */
        for (size_t i = 0; i < s->n_requests; i++) {
            load_request *r = &s->requests[i];
            if (!r->body_file || r->body_file[0] == '/' || !base_dir) continue;
            size_t n = strlen(base_dir) + strlen(r->body_file) + 2;
            char *p = malloc(n);
            if (!p) {
                rc = fail_at(&c, NULL, "out of memory");
                break;
            }
            snprintf(p, n, "%s/%s", base_dir, r->body_file);
            free(r->body_file);
            r->body_file = p;
        }
    }
    if (rc) {
        load_scenario_free(s);
        return NULL;
    }
    return s;
}

load_scenario *load_scenario_parse_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 > cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > (1u << 20)) {
                snprintf(err, errlen, "%s: larger than 1 MiB; is it a scenario?", path);
                free(text);
                fclose(f);
                return NULL;
            }
            char *t = realloc(text, cap);
            if (!t) {
                snprintf(err, errlen, "out of memory");
                free(text);
                fclose(f);
                return NULL;
            }
            text = t;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int read_error = ferror(f);
    fclose(f);
    if (read_error) {
        snprintf(err, errlen, "%s: read error", path);
        free(text);
        return NULL;
    }
    char *dir = strdup(path);
    if (!dir) {
        free(text);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *slash = strrchr(dir, '/');
    const char *base = ".";
    if (slash) {
        *slash = 0;
        base = slash == dir ? "/" : dir;
    }
    load_scenario *s = load_scenario_parse_string(text, len, path, base, err, errlen);
    free(dir);
    free(text);
    return s;
}

void load_scenario_free(load_scenario *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_requests; i++) {
        load_request *r = &s->requests[i];
        free(r->name);
        free(r->method);
        free(r->path);
        for (size_t h = 0; h < r->n_headers; h++) {
            free(r->headers[h].name);
            free(r->headers[h].value);
        }
        free(r->headers);
        free(r->body_file);
        free(r->body);
        free(r->head);
    }
    free(s->requests);
    free(s->stages);
    free(s->name);
    free(s);
}

void load_scenario_scale(load_scenario *s, double f)
{
    for (size_t i = 0; i < s->n_stages; i++)
        s->stages[i].duration_us = (uint64_t)llround((double)s->stages[i].duration_us * f);
    s->duration_us = (uint64_t)llround((double)s->duration_us * f);
}

static int read_body(load_request *r, char *err, size_t errlen)
{
    FILE *f = fopen(r->body_file, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", r->body_file, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", r->body_file);
        fclose(f);
        return -1;
    }
    if ((uint64_t)st.st_size > LOAD_MAX_BODY) {
        snprintf(err, errlen, "%s: %lld bytes, more than the body limit of %u", r->body_file,
                 (long long)st.st_size, LOAD_MAX_BODY);
        fclose(f);
        return -1;
    }
    r->body_len = (size_t)st.st_size;
    r->body = malloc(r->body_len ? r->body_len : 1);
    if (!r->body || fread(r->body, 1, r->body_len, f) != r->body_len) {
        snprintf(err, errlen, "%s: read error", r->body_file);
        fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

int load_scenario_prepare(load_scenario *s, const char *host, const char *prefix, char *err,
                          size_t errlen)
{
    for (size_t i = 0; i < s->n_requests; i++) {
        load_request *r = &s->requests[i];
        if (r->body_file && !r->body && read_body(r, err, errlen)) return -1;
        size_t cap = 256 + strlen(r->method) + strlen(prefix) + strlen(r->path) + strlen(host);
        for (size_t h = 0; h < r->n_headers; h++)
            cap += strlen(r->headers[h].name) + strlen(r->headers[h].value) + 4;
        free(r->head);
        r->head = malloc(cap);
        if (!r->head) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        int n = snprintf(r->head, cap, "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kiln-load\r\n",
                         r->method, prefix, r->path, host);
        for (size_t h = 0; h < r->n_headers; h++)
            n += snprintf(r->head + n, cap - (size_t)n, "%s: %s\r\n", r->headers[h].name,
                          r->headers[h].value);
        if (r->body || strcmp(r->method, "GET"))
            n += snprintf(r->head + n, cap - (size_t)n, "Content-Length: %zu\r\n", r->body_len);
        if (!s->keep_alive) n += snprintf(r->head + n, cap - (size_t)n, "Connection: close\r\n");
        n += snprintf(r->head + n, cap - (size_t)n, "\r\n");
        r->head_len = (size_t)n;
    }
    return 0;
}

uint32_t load_scenario_vus_at(const load_scenario *s, uint64_t t_us)
{
    if (s->executor != LOAD_RAMPING_VUS) return s->max_vus;
    double from = s->start_vus;
    uint64_t t0 = 0;
    for (size_t i = 0; i < s->n_stages; i++) {
        const load_stage *st = &s->stages[i];
        if (t_us < t0 + st->duration_us) {
            double frac = (double)(t_us - t0) / (double)st->duration_us;
            /* k6 rounds down while ramping up and up while ramping down is
             * not worth copying; round to nearest like its chart does. */
            return (uint32_t)llround(from + ((double)st->target - from) * frac);
        }
        t0 += st->duration_us;
        from = st->target;
    }
    return s->n_stages ? s->stages[s->n_stages - 1].target : s->start_vus;
}

uint64_t load_scenario_duration_us(const load_scenario *s)
{
    if (s->executor != LOAD_RAMPING_VUS) return s->duration_us;
    uint64_t t = 0;
    for (size_t i = 0; i < s->n_stages; i++) t += s->stages[i].duration_us;
    return t;
}

uint32_t load_scenario_vus_max(const load_scenario *s)
{
    if (s->executor != LOAD_RAMPING_VUS) return s->max_vus;
    uint32_t m = s->start_vus;
    for (size_t i = 0; i < s->n_stages; i++)
        if (s->stages[i].target > m) m = s->stages[i].target;
    return m;
}

const char *load_format_us(double us, char *buf, size_t len)
{
    if (us >= 60e6)
        snprintf(buf, len, "%.0fm%.0fs", floor(us / 60e6), fmod(us / 1e6, 60));
    else if (us >= 1e6)
        snprintf(buf, len, "%.2fs", us / 1e6);
    else if (us >= 1e3)
        snprintf(buf, len, "%.2fms", us / 1e3);
    else
        snprintf(buf, len, "%.0f\xc2\xb5s", us);
    return buf;
}
