/* The server's YAML configuration: defaults, values, and errors with file:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "config.h"

static int parse(server_config *c, const char *text, char *err, size_t errlen)
{
    config_defaults(c);
    return config_parse(c, text, strlen(text), "t.yaml", err, errlen);
}

static void test_embedded_default_parses(void **state)
{
    (void)state;
    server_config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(config_parse(&c, kiln_default_config, strlen(kiln_default_config), "default",
                                  err, sizeof err),
                     0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_true(c.n_functions >= 1);
    assert_int_equal(c.sample_interval_ms, 0);       /* off unless asked for */
    assert_int_equal(c.zygote_preload_bytes, 0);     /* off unless asked for */
    assert_int_equal(c.log_retention_rows, 1000000); /* the log is bounded by default */
    assert_int_equal(c.log_retention_days, 30);
    assert_non_null(config_find_function(&c, "echo", 4));
    config_free(&c);
}

static void test_values(void **state)
{
    (void)state;
    server_config c;
    char err[512];
    const char *y = "server:\n"
                    "  user: nobody\n"
                    "  zygote_preload: 1GiB\n"
                    "  limits: {max_body_bytes: 2MiB, max_json_depth: 9, max_model_bytes: 3MiB}\n"
                    "  timeouts: {idle: 1500ms, request: 2m}\n"
                    "  sample: {interval: 250ms, file: /tmp/s.csv, pss: false}\n"
                    "  log: {retention_rows: 0, retention_days: 7, batch_rows: 50, flush: 2s,\n"
                    "        queue: 128}\n"
                    "functions:\n"
                    "  - {name: m, kind: predict, model: mnist, min_warm: 1, max_workers: 3,\n"
                    "     concurrency: 2, idle_timeout: 1h, timeout: 5s, memory_limit: 512MiB,\n"
                    "     cpu_limit: 1500ms}\n";
    assert_int_equal(parse(&c, y, err, sizeof err), 0);
    assert_int_equal(c.max_body_bytes, 2u << 20);
    assert_int_equal(c.max_json_depth, 9);
    assert_int_equal(c.idle_timeout_ms, 1500);
    assert_int_equal(c.request_timeout_ms, 120000);
    assert_int_equal(c.sample_interval_ms, 250);
    assert_string_equal(c.sample_file, "/tmp/s.csv");
    assert_int_equal(c.sample_pss, 0);
    assert_int_equal(c.log_retention_rows, 0);
    assert_int_equal(c.log_retention_days, 7);
    assert_int_equal(c.log_batch_rows, 50);
    assert_int_equal(c.log_flush_ms, 2000);
    assert_int_equal(c.log_queue, 128);
    const fn_config *f = config_find_function(&c, "m", 1);
    assert_non_null(f);
    assert_int_equal(f->kind, FN_PREDICT);
    assert_string_equal(f->model, "mnist");
    assert_int_equal(f->min_warm, 1);
    assert_int_equal(f->max_workers, 3);
    assert_int_equal(f->concurrency, 2);
    assert_int_equal(f->idle_timeout_ms, 3600000);
    assert_int_equal(f->timeout_ms, 5000);
    assert_int_equal(f->memory_limit, 512u << 20);
    assert_int_equal(f->cpu_limit_s, 2); /* whole seconds, rounded up */
    assert_string_equal(c.user, "nobody");
    assert_int_equal(c.zygote_preload_bytes, 1u << 30);
    assert_int_equal(c.max_model_bytes, 3u << 20);
    config_free(&c);
}

/* Each bad config fails, naming the line and something from the reason. */
static void test_jobs_limits(void **state)
{
    (void)state;
    server_config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(c.jobs_max_running, 1);
    assert_true(c.jobs_max_epochs > 0 && c.jobs_max_queued > 0 && c.jobs_timeout_ms > 0);
    const char *y =
        "server:\n"
        "  jobs: {max_running: 2, max_queued: 0, max_epochs: 7, threads: 2, timeout: 90s}\n"
        "functions:\n"
        "  - {name: train, kind: train}\n";
    assert_int_equal(parse(&c, y, err, sizeof err), 0);
    assert_int_equal(c.jobs_max_running, 2);
    assert_int_equal(c.jobs_max_queued, 0);
    assert_int_equal(c.jobs_max_epochs, 7);
    assert_int_equal(c.jobs_threads, 2);
    assert_int_equal(c.jobs_timeout_ms, 90000);
    assert_int_equal(config_find_function(&c, "train", 5)->kind, FN_TRAIN);
    config_free(&c);
}

static void test_errors_name_line_and_reason(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *where, *why;
    } cases[] = {
        {"server:\n  bogus: 1\n", "t.yaml:2:", "bogus"},
        {"functions:\n  - name: a\n    kind: nope\n", "t.yaml:3:", "nope"},
        {"functions:\n  - name: a\n    kind: predict\n", "t.yaml:2:", "model"},
        {"functions:\n  - {name: a, kind: echo}\n  - {name: a, kind: echo}\n",
         "t.yaml:3:", "twice"},
        {"functions:\n  - name: a\n    kind: echo\n    timeout: 5 seconds\n",
         "t.yaml:4:", "duration"},
        {"functions:\n  - name: ../x\n    kind: echo\n", "t.yaml:2:", "name"},
        {"functions:\n  - {name: a, kind: echo, min_warm: 3, max_workers: 2}\n",
         "t.yaml:2:", "min_warm"},
        {"server:\n  limits:\n    max_body_bytes: 12XB\n", "t.yaml:3:", "size"},
        {"server: [1\n", "t.yaml:", ""},
        {"functions:\n  - {name: a, kind: echo, cpu_limit: 10ms}\n", "t.yaml:2:", "cpu_limit"},
        {"server:\n  user: \"\"\n", "t.yaml:2:", "user"},
        {"server:\n  sample: {interval: 5ms}\n", "t.yaml:2:", "10ms"},
        {"server:\n  sample:\n    every: 1s\n", "t.yaml:3:", "every"},
        {"server:\n  log:\n    retention_rows: -1\n", "t.yaml:3:", "retention_rows"},
        {"server:\n  log:\n    batch_rows: 0\n", "t.yaml:3:", "batch_rows"},
        {"server:\n  log:\n    flush: 0ms\n", "t.yaml:3:", "flush"},
        {"server:\n  log:\n    keep: 3\n", "t.yaml:3:", "keep"},
        {"functions:\n  - name: p\n    kind: predict\n    model: m\n    faults: true\n",
         "t.yaml:2:", "faults"},
        {"server:\n  jobs:\n    max_running: 0\n", "t.yaml:3:", "max_running"},
        {"server:\n  jobs:\n    max_epoch: 3\n", "t.yaml:3:", "max_epoch"},
        {"server:\n  jobs: 3\n", "t.yaml:2:", "server.jobs"},
        {"functions:\n  - {name: t, kind: train, min_warm: 1, max_workers: 1}\n",
         "t.yaml:2:", "min_warm"},
        {"functions:\n  - {name: m, kind: models, min_warm: 1, max_workers: 1}\n",
         "t.yaml:2:", "min_warm"},
        {"functions:\n  - {name: m, kind: models, model: x}\n", "t.yaml:2:", "no model"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        server_config c;
        char err[512] = "";
        assert_int_equal(parse(&c, cases[i].yaml, err, sizeof err), -1);
        if (!strstr(err, cases[i].where) || !strstr(err, cases[i].why))
            fail_msg("case %zu: '%s' lacks '%s' or '%s'", i, err, cases[i].where, cases[i].why);
        assert_null(c.functions); /* freed on failure */
    }
}

static void test_durations_and_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(config_parse_duration("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(config_parse_duration("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(config_parse_duration("3", &v), -1);
    assert_int_equal(config_parse_duration("-1s", &v), -1);
    assert_int_equal(config_parse_duration("99999999999999999999h", &v), -1);
    assert_int_equal(config_parse_size("64KiB", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(config_parse_size("7", &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(config_parse_size("1TiB", &v), -1);
    assert_int_equal(config_parse_size("", &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_default_parses),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_jobs_limits),
        cmocka_unit_test(test_errors_name_line_and_reason),
        cmocka_unit_test(test_durations_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
