/* kiln load's scenario parser: good files give the right plan, bad files
 * give one line naming the file, the line and the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "load.h"

static load_scenario *parse(const char *text, char *err, size_t errlen)
{
    return load_scenario_parse_string(text, strlen(text), "s.yaml", NULL, err, errlen);
}

static void test_ramping_vus(void **state)
{
    (void)state;
    char err[512] = "";
    load_scenario *s = parse("name: ramp\n"
                             "executor: ramping-vus\n"
                             "start_vus: 2\n"
                             "stages:\n"
                             "  - {target: 10, duration: 10s}\n"
                             "  - {target: 10, duration: 5s}\n"
                             "  - {target: 0, duration: 5s}\n"
                             "think_time: {min: 10ms, max: 20ms}\n"
                             "keep_alive: false\n"
                             "requests:\n"
                             "  - {path: /function/echo, weight: 3, body: hi}\n"
                             "  - {name: health, path: /healthz}\n",
                             err, sizeof err);
    assert_non_null(s);
    assert_string_equal(s->name, "ramp");
    assert_int_equal(s->executor, LOAD_RAMPING_VUS);
    assert_int_equal(s->n_stages, 3);
    assert_int_equal(load_scenario_duration_us(s), 20000000);
    assert_int_equal(load_scenario_vus_max(s), 10);
    assert_int_equal(load_scenario_vus_at(s, 0), 2);
    assert_int_equal(load_scenario_vus_at(s, 5000000), 6);
    assert_int_equal(load_scenario_vus_at(s, 12000000), 10);
    assert_int_equal(load_scenario_vus_at(s, 17500000), 5);
    assert_int_equal(load_scenario_vus_at(s, 30000000), 0);
    assert_int_equal(s->think_min_us, 10000);
    assert_int_equal(s->think_max_us, 20000);
    assert_false(s->keep_alive);
    assert_int_equal(s->n_requests, 2);
    assert_int_equal(s->total_weight, 4);
    assert_string_equal(s->requests[0].method, "POST"); /* a body implies POST */
    assert_string_equal(s->requests[0].name, "/function/echo");
    assert_string_equal(s->requests[1].method, "GET");
    assert_int_equal(load_scenario_prepare(s, "127.0.0.1:9", "/base", err, sizeof err), 0);
    assert_non_null(strstr(s->requests[0].head, "POST /base/function/echo HTTP/1.1\r\n"));
    assert_non_null(strstr(s->requests[0].head, "Content-Length: 2\r\n"));
    assert_non_null(strstr(s->requests[0].head, "Connection: close\r\n"));
    assert_non_null(strstr(s->requests[1].head, "Host: 127.0.0.1:9\r\n"));
    load_scenario_scale(s, 0.5);
    assert_int_equal(load_scenario_duration_us(s), 10000000);
    load_scenario_free(s);
}

static void test_arrival_rate(void **state)
{
    (void)state;
    char err[512] = "";
    load_scenario *s = parse("executor: constant-arrival-rate\n"
                             "rate: 50\n"
                             "time_unit: 1s\n"
                             "duration: 1m\n"
                             "max_vus: 30\n"
                             "requests: [{path: /x, headers: {X-A: b}}]\n",
                             err, sizeof err);
    assert_non_null(s);
    assert_int_equal(s->executor, LOAD_CONSTANT_ARRIVAL_RATE);
    assert_int_equal(load_scenario_duration_us(s), 60000000);
    assert_int_equal(load_scenario_vus_max(s), 30);
    assert_float_equal(s->rate, 50, 0);
    assert_int_equal(s->requests[0].n_headers, 1);
    load_scenario_free(s);
}

/* Each bad scenario and the "s.yaml:LINE: ..." prefix and words its error
 * must carry. */
static const struct {
    const char *text;
    const char *prefix;
    const char *words;
} bad[] = {
    {"stages: [{target: 1, duration: 1s}]\n", "s.yaml:1:", "requests"},
    {"requests: [{path: /a}]\n", "s.yaml:1:", "needs 'stages'"},
    {"requests: [{path: /a}]\nstages:\n  - {target: 1, duration: 1s}\n  - {target: x, "
     "duration: 1s}\n",
     "s.yaml:4:", "target"},
    {"requests: [{path: /a}]\nstages:\n  - {target: 1, duration: soon}\n", "s.yaml:3:", "duration"},
    {"requests: [{path: /a}]\nstages: [{target: 1}]\n", "s.yaml:2:", "both target and duration"},
    {"requests: [{path: /a}]\nstages: [{target: 20000, duration: 1s}]\n", "s.yaml:2:", "limit"},
    {"requests: [{path: /a}]\nstages: []\n", "s.yaml:2:", "empty"},
    {"name: x\nfrobnicate: 1\n", "s.yaml:2:", "unknown key 'frobnicate'"},
    {"executor: ramping-vus\nexecutor: warp\n", "s.yaml:2:", "warp"},
    {"stages: [{target: 1, duration: 1s}]\nrequests:\n  - {path: /a}\n  - {method: GET}\n",
     "s.yaml:4:", "needs a path"},
    {"stages: [{target: 1, duration: 1s}]\nrequests:\n  - {path: nope}\n",
     "s.yaml:3:", "start with '/'"},
    {"stages: [{target: 1, duration: 1s}]\nrequests:\n  - {path: /a, weight: 0}\n",
     "s.yaml:3:", "weight"},
    {"stages: [{target: 1, duration: 1s}]\nrequests:\n  - path: /a\n    headers: {Host: x}\n",
     "s.yaml:4:", "Host"},
    {"stages: [{target: 1, duration: 1s}]\nrequests:\n  - path: /a\n    body: x\n    body_file: "
     "y\n",
     "s.yaml:5:", "exclude"},
    {"stages: [{target: 1, duration: 1s}]\nrequests:\n  - {path: /a, method: 'G T'}\n",
     "s.yaml:3:", "method"},
    {"stages: [{target: 1, duration: 1s}]\nkeep_alive: maybe\nrequests: [{path: /a}]\n",
     "s.yaml:2:", "true or false"},
    {"stages: [{target: 1, duration: 1s}]\nthink_time: {min: 2s, max: 1s}\nrequests: [{path: "
     "/a}]\n",
     "s.yaml:2:", "min is greater"},
    {"executor: constant-arrival-rate\nduration: 10s\nrequests: [{path: /a}]\n",
     "s.yaml:1:", "needs 'rate'"},
    {"executor: constant-arrival-rate\nrate: -3\nduration: 10s\nrequests: [{path: /a}]\n",
     "s.yaml:2:", "positive"},
    {"executor: constant-arrival-rate\nrate: 5\nstages: [{target: 1, duration: 1s}]\nrequests: "
     "[{path: /a}]\n",
     "s.yaml:3:", "ramping-vus"},
    {"stages: [{target: 1, duration: 1s}\nrequests: [{path: /a}]\n", "s.yaml:", "flow"},
    {"- just\n- a list\n", "s.yaml:1:", "expected a mapping"},
    {"", "s.yaml:", "empty"},
    {"stages: [{target: 1, duration: 25h}]\nrequests: [{path: /a}]\n", "s.yaml:1:", "limit"},
};

static void test_bad_scenarios(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[512] = "";
        load_scenario *s = parse(bad[i].text, err, sizeof err);
        if (s || strncmp(err, bad[i].prefix, strlen(bad[i].prefix)) || !strstr(err, bad[i].words) ||
            strchr(err, '\n')) {
            print_error("case %zu: got '%s', want prefix '%s' and '%s'\n", i, s ? "(parsed)" : err,
                        bad[i].prefix, bad[i].words);
            load_scenario_free(s);
            fail();
        }
    }
}

/* A file's errors carry its path; body_file is relative to the scenario. */
static void test_file_errors_and_body_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-load-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], body[256], err[512] = "";
    snprintf(path, sizeof path, "%s/scn.yaml", dir);
    snprintf(body, sizeof body, "%s/payload.bin", dir);
    FILE *f = fopen(body, "wb");
    assert_non_null(f);
    fwrite("\x00\x01\x02\x03\x04", 1, 5, f);
    fclose(f);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("stages: [{target: 1, duration: 1s}]\nrequests:\n  - {path: /a, body_file: "
          "payload.bin, headers: {Content-Type: application/octet-stream}}\n",
          f);
    fclose(f);
    load_scenario *s = load_scenario_parse_file(path, err, sizeof err);
    assert_non_null(s);
    assert_string_equal(s->requests[0].body_file, body);
    assert_int_equal(load_scenario_prepare(s, "localhost:1", "", err, sizeof err), 0);
    assert_int_equal(s->requests[0].body_len, 5);
    assert_memory_equal(s->requests[0].body, "\x00\x01\x02\x03\x04", 5);
    assert_non_null(strstr(s->requests[0].head, "Content-Length: 5\r\n"));
    load_scenario_free(s);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("stages: [{target: 1, duration: 1s}]\nrequests:\n  - {path: /a, body_file: none}\n", f);
    fclose(f);
    s = load_scenario_parse_file(path, err, sizeof err);
    assert_non_null(s); /* found missing when the bodies are read */
    assert_int_equal(load_scenario_prepare(s, "localhost:1", "", err, sizeof err), -1);
    assert_non_null(strstr(err, "none"));
    load_scenario_free(s);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("# comment\n\nstages: [{target: 1, duration: 1s}]\nrequests:\n  - {path: /a, "
          "weigth: 2}\n",
          f);
    fclose(f);
    s = load_scenario_parse_file(path, err, sizeof err);
    assert_null(s);
    char want[300];
    snprintf(want, sizeof want, "%s:5: ", path);
    assert_memory_equal(err, want, strlen(want));
    assert_non_null(strstr(err, "weigth"));

    unlink(path);
    unlink(body);
    rmdir(dir);
    s = load_scenario_parse_file(path, err, sizeof err);
    assert_null(s);
    assert_non_null(strstr(err, path));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ramping_vus),
        cmocka_unit_test(test_arrival_rate),
        cmocka_unit_test(test_bad_scenarios),
        cmocka_unit_test(test_file_errors_and_body_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
