/* kiln load: drives a running server with a scenario and prints a k6-style
 * summary. */
#include "cli.h"
#include "load.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void load_usage(FILE *out)
{
    fprintf(out,
            "usage: kiln load --url URL --scenario S.yaml [options]\n"
            "\n"
            "Runs a load test (k6-style ramping VUs or a constant arrival rate) against\n"
            "an HTTP server and prints a summary in k6's vocabulary, with cold and warm\n"
            "starts counted from the X-Kiln-Start response header.\n"
            "\n"
            "  --url URL              http://host[:port][/prefix]; the scenario's paths follow\n"
            "  --scenario FILE        the scenario (YAML; see bench/scenarios/)\n"
            "  --out DIR              write requests.csv, timeline.csv and summary.json there\n"
            "  --duration-scale F     multiply the scenario's stage durations by F (> 0)\n"
            "  --max-vus N            refuse scenarios with more VUs (default 2000)\n"
            "  --max-duration D       refuse scenarios longer than D (default 1h)\n"
            "  --max-requests N       start no more than N requests (default 10000000)\n"
            "  --allow-remote         allow targets that are not loopback addresses\n"
            "  --json                 print the summary as JSON on stdout\n"
            "  --quiet                no progress lines\n"
            "  --help\n"
            "\n"
            "Exit status: 0 when the run completed (even with failed requests), 1 when it\n"
            "could not run, 2 on bad usage or a bad scenario.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strspn(s, "0123456789") != strlen(s)) return -1;
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno) return -1;
    *out = v;
    return 0;
}

int cmd_load(int argc, char **argv)
{
    const char *url = NULL, *scenario_path = NULL, *out_dir = NULL;
    double scale = 1;
    uint64_t max_vus = 2000, max_requests = 10000000;
    uint64_t max_duration_us = 3600ull * 1000000;
    bool allow_remote = false, json_out = false, quiet = false;
    enum {
        O_URL = 256,
        O_SCENARIO,
        O_OUT,
        O_SCALE,
        O_MAXVUS,
        O_MAXDUR,
        O_MAXREQ,
        O_REMOTE,
        O_JSON,
        O_QUIET,
        O_HELP
    };
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"scenario", required_argument, NULL, O_SCENARIO},
        {"out", required_argument, NULL, O_OUT},
        {"duration-scale", required_argument, NULL, O_SCALE},
        {"max-vus", required_argument, NULL, O_MAXVUS},
        {"max-duration", required_argument, NULL, O_MAXDUR},
        {"max-requests", required_argument, NULL, O_MAXREQ},
        {"allow-remote", no_argument, NULL, O_REMOTE},
        {"json", no_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {0},
    };
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_URL:
            url = optarg;
            break;
        case O_SCENARIO:
            scenario_path = optarg;
            break;
        case O_OUT:
            out_dir = optarg;
            break;
        case O_SCALE: {
            char *end;
            scale = strtod(optarg, &end);
            if (*end || !(scale > 0) || isinf(scale))
                return cli_error(KILN_EXIT_USAGE, "load",
                                 "--duration-scale: '%s' is not a "
                                 "positive number",
                                 optarg);
            break;
        }
        case O_MAXVUS:
            if (parse_u64(optarg, &max_vus) || max_vus == 0 || max_vus > LOAD_MAX_VUS)
                return cli_error(KILN_EXIT_USAGE, "load", "--max-vus: expected 1 to %d",
                                 LOAD_MAX_VUS);
            break;
        case O_MAXDUR: {
            int64_t d = load_parse_duration(optarg);
            if (d <= 0)
                return cli_error(KILN_EXIT_USAGE, "load",
                                 "--max-duration: '%s' is not a "
                                 "duration (30s, 5m, 1h)",
                                 optarg);
            max_duration_us = (uint64_t)d;
            break;
        }
        case O_MAXREQ:
            if (parse_u64(optarg, &max_requests) || max_requests == 0)
                return cli_error(KILN_EXIT_USAGE, "load",
                                 "--max-requests: expected a "
                                 "positive integer");
            break;
        case O_REMOTE:
            allow_remote = true;
            break;
        case O_JSON:
            json_out = true;
            break;
        case O_QUIET:
            quiet = true;
            break;
        case O_HELP:
            load_usage(stdout);
            return KILN_EXIT_OK;
        default:
            return cli_error(KILN_EXIT_USAGE, "load",
                             "unknown or incomplete option '%s' "
                             "(kiln load --help)",
                             argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_error(KILN_EXIT_USAGE, "load", "unexpected argument '%s'", argv[optind]);
    if (!url || !scenario_path)
        return cli_error(KILN_EXIT_USAGE, "load",
                         "--url and --scenario are required "
                         "(kiln load --help)");

    char err[512];
    load_scenario *s = load_scenario_parse_file(scenario_path, err, sizeof err);
    if (!s) return cli_error(KILN_EXIT_USAGE, "load", "%s", err);
    int rc = KILN_EXIT_FAIL;
    load_target t;
    load_results r;
    bool have_results = false;
    json_t *summary = NULL;
    if (scale != 1) load_scenario_scale(s, scale);
    uint32_t vus = load_scenario_vus_max(s);
    uint64_t dur = load_scenario_duration_us(s);
    if (vus > max_vus) {
        rc = cli_error(KILN_EXIT_USAGE, "load", "%s: %u VUs, more than --max-vus %llu",
                       scenario_path, vus, (unsigned long long)max_vus);
        goto done;
    }
    if (dur > max_duration_us || dur == 0) {
        char a[32], b[32];
        rc = cli_error(KILN_EXIT_USAGE, "load", "%s: runs %s, %s --max-duration %s", scenario_path,
                       load_format_us((double)dur, a, sizeof a),
                       dur ? "longer than" : "which is not within",
                       load_format_us((double)max_duration_us, b, sizeof b));
        goto done;
    }
    int trc = load_target_open(&t, url, allow_remote, err, sizeof err);
    if (trc) {
        rc = cli_error(trc == 2 ? KILN_EXIT_USAGE : KILN_EXIT_FAIL, "load", "%s", err);
        goto done;
    }
    if (load_scenario_prepare(s, t.hostport, t.prefix, err, sizeof err)) {
        rc = cli_error(KILN_EXIT_USAGE, "load", "%s", err);
        goto done;
    }
    if (load_results_init(&r, s, out_dir, err, sizeof err)) {
        load_results_free(&r);
        rc = cli_error(KILN_EXIT_FAIL, "load", "%s", err);
        goto done;
    }
    have_results = true;
    load_options o = {
        .url = url,
        .out_dir = out_dir,
        .progress_tty = isatty(STDERR_FILENO),
        .quiet = quiet,
        .max_requests = max_requests,
        .progress_every_us = 1000000,
    };
    if (!quiet) {
        char d[32];
        fprintf(stderr, "kiln load: %s -> %s (%s), %u VUs max, %s\n", s->name, url, t.addr_text,
                vus, load_format_us((double)dur, d, sizeof d));
    }
    if (load_run(s, &t, &o, &r, err, sizeof err)) {
        rc = cli_error(KILN_EXIT_FAIL, "load", "%s", err);
        goto done;
    }
    if (load_results_finish(&r, err, sizeof err)) {
        rc = cli_error(KILN_EXIT_FAIL, "load", "%s", err);
        goto done;
    }
    summary = load_summary_json(&r, s, url);
    if (!summary) {
        rc = cli_error(KILN_EXIT_FAIL, "load", "out of memory");
        goto done;
    }
    if (out_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/summary.json", out_dir);
        if (json_dump_file(summary, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10))) {
            rc = cli_error(KILN_EXIT_FAIL, "load", "%s: cannot write", path);
            goto done;
        }
    }
    if (json_out) {
        json_dumpf(summary, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        fputc('\n', stdout);
    } else
        load_summary_print(stdout, summary);
    rc = KILN_EXIT_OK;
done:
    json_decref(summary);
    if (have_results) load_results_free(&r);
    load_scenario_free(s);
    return rc;
}
