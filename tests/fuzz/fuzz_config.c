/*
 * libFuzzer target: the YAML server configuration (src/server/config.c:
 * libyaml events, durations, sizes, function entries, limits), as
 * `kiln serve --config F` reads it. A file that loads must satisfy the
 * invariants config.h documents; the duration and size parsers get the
 * first line on their own too.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(const server_config *c)
{
    if (c->n_functions < 0 || (c->n_functions && !c->functions)) abort();
    for (int i = 0; i < c->n_functions; i++) {
        const fn_config *f = &c->functions[i];
        size_t n = f->name ? strlen(f->name) : 0;
        if (n < 1 || n > 64 || f->max_workers < 1 || f->max_workers < f->min_warm ||
            f->concurrency < 1 || f->threads < 1 || (f->kind == FN_PREDICT && !f->model) ||
            !config_find_function(c, f->name, n))
            abort();
        for (int j = 0; j < i; j++)
            if (!strcmp(c->functions[j].name, f->name)) abort(); /* names are unique */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    server_config cfg;
    config_defaults(&cfg);
    if (config_parse(&cfg, (const char *)data, size, "fuzz.yaml", err, sizeof err) == 0) {
        check(&cfg);
        config_free(&cfg);
    } else if (!memchr(err, 0, sizeof err) || !err[0]) {
        abort(); /* a failure always says why */
    }
    char line[128];
    size_t n = size < sizeof line - 1 ? size : sizeof line - 1;
    memcpy(line, data, n);
    line[n] = 0;
    line[strcspn(line, "\n")] = 0;
    uint64_t v;
    config_parse_duration(line, &v);
    config_parse_size(line, &v);
    return 0;
}
