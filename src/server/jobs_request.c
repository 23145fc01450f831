/* Training jobs: the body of POST /v1/jobs (and of a train function's
 * invocation), checked field by field (jobs_internal.h). */
#include "jobs_internal.h"

#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- request bodies ------------------------------------------------------ */

static int bad(http_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(http_conn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    http_respond_error(c, 400, NULL, "%s", msg);
    return -1;
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* An integer field: absent -> def; otherwise lo..hi. -1 after answering 400. */
static int int_field(http_conn *c, json_t *body, const char *key, json_int_t lo, json_int_t hi,
                     json_int_t def, json_int_t *out)
{
    json_t *v = json_object_get(body, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return bad(c,
                   "%s: expected an integer from %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT,
                   key, lo, hi);
    *out = json_integer_value(v);
    return 0;
}

/* Validates a job request and returns its normalised parameters, or NULL
 * after answering 400 (the message names the field). */
json_t *jobs_parse_request(jobs *J, http_conn *c, http_request *req)
{
    static const char *const known[] = {"arch",  "arch_yaml",  "data",      "epochs",
                                        "batch", "lr",         "optimizer", "seed",
                                        "limit", "test_limit", "model",     NULL};
    json_error_t je;
    json_t *body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(body)) {
        if (body)
            bad(c, "body: expected a JSON object");
        else
            bad(c, "body: not JSON (%s at line %d)", je.text, je.line);
        json_decref(body);
        return NULL;
    }
    json_t *out = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        int ok = 0;
        for (int i = 0; known[i]; i++) ok |= !strcmp(key, known[i]);
        if (!ok) {
            bad(c,
                "%.64s: unknown field (fields: arch or arch_yaml, data, model, epochs, batch, "
                "lr, optimizer, seed, limit, test_limit)",
                key);
            goto fail;
        }
    }

    /* model: the name the result is registered under */
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!model || !store_name_valid(model)) {
        bad(c, "model: expected the name to register the trained model under (1-64 of A-Z a-z "
               "0-9 . _ -, not starting with .)");
        goto fail;
    }
    json_object_set_new(out, "model", json_string(model));

    /* arch or arch_yaml */
    json_t *arch = json_object_get(body, "arch"), *arch_yaml = json_object_get(body, "arch_yaml");
    if ((arch != NULL) == (arch_yaml != NULL)) {
        bad(c, "arch: give either arch (a models/*.yaml path or a name in models/) or arch_yaml "
               "(the architecture as YAML text)");
        goto fail;
    }
    if (arch) {
        const char *a = json_string_value(arch);
        char path[1100];
        if (!a || !*a || strlen(a) > 1000 || a[0] == '-') {
            bad(c, "arch: expected a path or a name");
            goto fail;
        }
        size_t al = strlen(a);
        int yaml_name =
            (al > 5 && !strcmp(a + al - 5, ".yaml")) || (al > 4 && !strcmp(a + al - 4, ".yml"));
        if (!strchr(a, '/') && !yaml_name)
            snprintf(path, sizeof path, "models/%s.yaml", a);
        else
            snprintf(path, sizeof path, "%s", a);
        if (strchr(a, '/') && !yaml_name) {
            /* Job errors are readable by anyone: never point the trainer at
             * a file that is not an architecture. */
            bad(c, "arch: a path must name a .yaml or .yml file");
            goto fail;
        }
        if (!is_file(path)) {
            bad(c,
                "arch: no architecture file %s (relative paths are from the server's working "
                "directory)",
                path);
            goto fail;
        }
        json_object_set_new(out, "arch", json_string(path));
    } else {
        const char *y = json_string_value(arch_yaml);
        if (!y || !*y || json_string_length(arch_yaml) > (64u << 10)) {
            bad(c, "arch_yaml: expected the architecture as YAML text (at most 64 KiB)");
            goto fail;
        }
        json_object_set_new(out, "arch_yaml", json_string(y));
    }

    /* data: what kiln train --data takes */
    const char *data = json_string_value(json_object_get(body, "data"));
    if (!data || !*data || strlen(data) > 1000 || data[0] == '-') {
        bad(c, "data: expected a data set: fashion-mnist, mnist, or a directory on the server");
        goto fail;
    }
    if (strcmp(data, "fashion-mnist") && strcmp(data, "mnist") && !is_dir(data)) {
        bad(c, "data: '%.200s' is neither fashion-mnist, mnist nor a directory on the server",
            data);
        goto fail;
    }
    json_object_set_new(out, "data", json_string(data));

    json_int_t epochs = 0, batch = 0, seed = 0, limit = 0, test_limit = 0;
    if (int_field(c, body, "epochs", 1, J->s->cfg.jobs_max_epochs, 1, &epochs) ||
        int_field(c, body, "batch", 1, 65536, 64, &batch) ||
        int_field(c, body, "seed", 1, (json_int_t)1 << 53, 1, &seed) ||
        int_field(c, body, "limit", 0, (json_int_t)1 << 40, 0, &limit) ||
        int_field(c, body, "test_limit", 0, (json_int_t)1 << 40, 0, &test_limit))
        goto fail;
    json_object_set_new(out, "epochs", json_integer(epochs));
    json_object_set_new(out, "batch", json_integer(batch));
    json_object_set_new(out, "seed", json_integer(seed));
    if (limit) json_object_set_new(out, "limit", json_integer(limit));
    if (test_limit) json_object_set_new(out, "test_limit", json_integer(test_limit));

    const char *opt = "sgd";
    json_t *o = json_object_get(body, "optimizer");
    if (o) {
        opt = json_string_value(o);
        if (!opt || (strcmp(opt, "sgd") && strcmp(opt, "adam"))) {
            bad(c, "optimizer: expected sgd or adam");
            goto fail;
        }
    }
    json_object_set_new(out, "optimizer", json_string(opt));
    json_t *lr = json_object_get(body, "lr");
    if (lr) {
        double x = json_number_value(lr);
        if (!json_is_number(lr) || !(x > 0) || x > 1e6) {
            bad(c, "lr: expected a number greater than 0");
            goto fail;
        }
        json_object_set_new(out, "lr", json_real(x));
    }
    json_decref(body);
    return out;
fail:
    json_decref(body);
    json_decref(out);
    return NULL;
}
