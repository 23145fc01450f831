/* kiln eval: accuracy, per-class accuracy and confusion matrix of a model. */
#include "cli.h"
#include "kiln.h"
#include "train/export.h"
#include "train/trainer.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void eval_usage(FILE *out)
{
    fprintf(out, "usage: kiln eval M.kiln --data DATASET [--split test|train] [--json]\n"
                 "                        [--batch B] [--threads N] [--limit N] [--size N]\n");
}

/* Line `i` of a newline-separated list, copied into buf. */
static const char *nth_line(const char *s, int i, char *buf, size_t size)
{
    for (; s && i > 0; i--) {
        s = strchr(s, '\n');
        if (s) s++;
    }
    if (!s || !*s) {
        snprintf(buf, size, "%d", i);
        return buf;
    }
    size_t n = strcspn(s, "\n");
    if (n >= size) n = size - 1;
    memcpy(buf, s, n);
    buf[n] = 0;
    return buf;
}

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", 1, 0, 'd'},  {"split", 1, 0, 'S'},   {"json", 0, 0, 'j'},
        {"batch", 1, 0, 'b'}, {"threads", 1, 0, 't'}, {"limit", 1, 0, 'L'},
        {"size", 1, 0, 'z'},  {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
    const char *data = NULL, *split = "test";
    int json = 0, batch = 256, threads = 1, size = 0;
    long long limit = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'S':
            split = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'b':
            batch = (int)strtol(optarg, &end, 10);
            break;
        case 't':
            threads = (int)strtol(optarg, &end, 10);
            break;
        case 'L':
            limit = strtoll(optarg, &end, 10);
            break;
        case 'z':
            size = (int)strtol(optarg, &end, 10);
            break;
        case 'h':
            eval_usage(stdout);
            return KILN_EXIT_OK;
        default:
            eval_usage(stderr);
            return KILN_EXIT_USAGE;
        }
        if (end && (*end || end == optarg))
            return cli_error(KILN_EXIT_USAGE, "eval", "bad number '%s'", optarg);
    }
    if (optind + 1 != argc || !data) {
        eval_usage(stderr);
        return KILN_EXIT_USAGE;
    }
    if (batch <= 0 || batch > 65536 || threads <= 0 || threads > 1024 || limit < 0 || size < 0)
        return cli_error(KILN_EXIT_USAGE, "eval", "--batch, --threads, --limit out of range");
    const char *path = argv[optind];
    kiln_init();
    kiln_blas_set_threads(threads);
    kiln_errbuf err = {{0}};
    /* a .kiln model, or a training checkpoint */
    char magic[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return cli_error(KILN_EXIT_FAIL, "eval", "%s: cannot open", path);
    size_t got = fread(magic, 1, sizeof magic, f);
    fclose(f);
    kt_ckpt ck = {0};
    kt_net net;
    kiln_dataset ds = {0};
    kt_eval_result r = {0};
    int rc = KILN_EXIT_FAIL;
    kiln_status st;
    if (got == 8 && !memcmp(magic, KT_CKPT_MAGIC, 8)) {
        st = kt_ckpt_load(path, &ck, &err);
        if (st != KILN_OK) return cli_error(KILN_EXIT_FAIL, "eval", "%s", err.msg);
        kt_optim opt;
        kt_optim_defaults(&opt);
        st = kt_ckpt_to_net(&ck, path, batch, &opt, 0, &net, &err);
    } else {
        st = kt_import_kiln(path, batch, &net, &ck.meta, &err);
    }
    if (st != KILN_OK) {
        kt_ckpt_free(&ck);
        return cli_error(KILN_EXIT_FAIL, "eval", "%s", err.msg);
    }
    float mean[4] = {0}, std[4] = {1, 1, 1, 1};
    const char *m = kt_meta_get(&ck.meta, "mean"), *s = kt_meta_get(&ck.meta, "std");
    if ((m && kt_parse_floats(m, mean, 4) != net.arch.channels) ||
        (s && kt_parse_floats(s, std, 4) != net.arch.channels)) {
        cli_error(KILN_EXIT_FAIL, "eval", "%s: bad mean/std metadata", path);
        goto done;
    }
    kiln_dataset_limits lim = {0};
    st = kiln__dataset_open(data, split, size > 0 ? size : net.arch.height, &lim, &ds, &err);
    if (st == KILN_OK) st = kt_evaluate(&net, &ds, mean, std, limit, &r, &err);
    if (st != KILN_OK) {
        cli_error(KILN_EXIT_FAIL, "eval", "%s", err.msg);
        goto done;
    }
    const char *labels = kt_meta_get(&ck.meta, "labels");
    const int k = r.num_classes;
    char nb[256];
    if (json) {
        json_t *per = json_array(), *conf = json_array();
        for (int i = 0; i < k; i++) {
            int64_t tot = 0;
            json_t *row = json_array();
            for (int j = 0; j < k; j++) {
                tot += r.confusion[(size_t)i * k + j];
                json_array_append_new(row, json_integer(r.confusion[(size_t)i * k + j]));
            }
            json_array_append_new(conf, row);
            json_array_append_new(
                per, json_pack("{s:s, s:I, s:I, s:f}", "class", nth_line(labels, i, nb, sizeof nb),
                               "count", (json_int_t)tot, "correct",
                               (json_int_t)r.confusion[(size_t)i * k + i], "accuracy",
                               tot ? (double)r.confusion[(size_t)i * k + i] / tot : 0.0));
        }
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:o, s:o}", "model", path,
                              "data", data, "split", split, "count", (json_int_t)r.count, "correct",
                              (json_int_t)r.correct, "accuracy", (double)r.correct / r.count,
                              "loss", r.loss, "per_class", per, "confusion", conf);
        char *txt = json_dumps(o, JSON_INDENT(2));
        puts(txt);
        free(txt);
        json_decref(o);
    } else {
        printf("model %s  data %s (%s)  samples %lld\n", path, data, split, (long long)r.count);
        printf("accuracy %.2f%% (%lld/%lld)  loss %.4f\n\n", 100.0 * r.correct / r.count,
               (long long)r.correct, (long long)r.count, r.loss);
        printf("per class:\n");
        for (int i = 0; i < k; i++) {
            int64_t tot = 0;
            for (int j = 0; j < k; j++) tot += r.confusion[(size_t)i * k + j];
            printf("  %3d %-16s %6.2f%%  (%lld/%lld)\n", i, nth_line(labels, i, nb, sizeof nb),
                   tot ? 100.0 * r.confusion[(size_t)i * k + i] / tot : 0.0,
                   (long long)r.confusion[(size_t)i * k + i], (long long)tot);
        }
        printf("\nconfusion (rows: true class, columns: predicted):\n     ");
        for (int j = 0; j < k; j++) printf(" %5d", j);
        printf("\n");
        for (int i = 0; i < k; i++) {
            printf("  %3d", i);
            for (int j = 0; j < k; j++) printf(" %5lld", (long long)r.confusion[(size_t)i * k + j]);
            printf("\n");
        }
    }
    rc = KILN_EXIT_OK;
done:
    kt_eval_free(&r);
    kiln__dataset_free(&ds);
    kt_net_free(&net);
    kt_ckpt_free(&ck);
    return rc;
}
