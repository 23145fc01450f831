/* kiln worker: one worker process of `kiln serve` (not run by hand). */
#include "cli.h"
#include "config.h"
#include "kiln.h"
#include "worker.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end) return -1;
    *out = v;
    return 0;
}

int cmd_worker(int argc, char **argv)
{
    static const struct option opts[] = {{"function", required_argument, NULL, 'f'},
                                         {"kind", required_argument, NULL, 'k'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"data-dir", required_argument, NULL, 'd'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"memory-limit", required_argument, NULL, 'M'},
                                         {"cpu-limit", required_argument, NULL, 'C'},
                                         {"user", required_argument, NULL, 'u'},
                                         {"max-frame", required_argument, NULL, 'F'},
                                         {"faults", no_argument, NULL, 'x'},
                                         {"zygote", no_argument, NULL, 'z'},
                                         {"preload", required_argument, NULL, 'P'},
                                         {"preload-max", required_argument, NULL, 'X'},
                                         {"model-name", required_argument, NULL, 'N'},
                                         {"max-json-depth", required_argument, NULL, 'J'},
                                         {"max-tensor-elements", required_argument, NULL, 'E'},
                                         {"max-batch", required_argument, NULL, 'B'},
                                         {"batch-wait-us", required_argument, NULL, 'W'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    worker_options o = {.fd = 3, .max_frame = 64u << 20, .max_batch = 1};
    o.backend.function = "?";
    o.backend.threads = 1;
    o.backend.max_json_depth = 64;
    o.backend.max_tensor_elements = 16 << 20;
    int c, have_kind = 0, zygote = 0, n_preload = 0;
    const char *preload[64];
    uint64_t preload_max = 0;
    uint64_t v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            o.backend.function = optarg;
            break;
        case 'k':
            for (int k = FN_ECHO; k <= FN_MODELS; k++)
                if (!strcmp(optarg, fn_kind_name((fn_kind)k))) {
                    o.backend.kind = (fn_kind)k;
                    have_kind = 1;
                }
            if (!have_kind)
                return cli_error(KILN_EXIT_USAGE, "worker", "unknown kind '%s'", optarg);
            break;
        case 'm':
            o.backend.model = optarg;
            break;
        case 'd':
            o.backend.data_dir = optarg;
            break;
        case 't':
            if (parse_u64(optarg, &v) || v < 1 || v > 1024)
                return cli_error(KILN_EXIT_USAGE, "worker", "--threads: expected 1..1024");
            o.backend.threads = (int)v;
            break;
        case 'M':
            if (parse_u64(optarg, &o.memory_limit))
                return cli_error(KILN_EXIT_USAGE, "worker", "--memory-limit: expected bytes");
            break;
        case 'C':
            if (parse_u64(optarg, &o.cpu_limit_s))
                return cli_error(KILN_EXIT_USAGE, "worker", "--cpu-limit: expected seconds");
            break;
        case 'u':
            o.user = optarg;
            break;
        case 'F':
            if (parse_u64(optarg, &o.max_frame) || o.max_frame > (1ull << 30))
                return cli_error(KILN_EXIT_USAGE, "worker", "--max-frame: expected bytes <= 1GiB");
            break;
        case 'x':
            o.backend.faults = 1;
            break;
        case 'z':
            zygote = 1;
            break;
        case 'P':
            if (n_preload == (int)(sizeof preload / sizeof preload[0]))
                return cli_error(KILN_EXIT_USAGE, "worker", "--preload: at most 64 models");
            preload[n_preload++] = optarg;
            break;
        case 'X':
            if (parse_u64(optarg, &preload_max))
                return cli_error(KILN_EXIT_USAGE, "worker", "--preload-max: expected bytes");
            break;
        case 'N':
            o.backend.model_name = optarg;
            break;
        case 'J':
            if (parse_u64(optarg, &v) || v < 1 || v > 10000)
                return cli_error(KILN_EXIT_USAGE, "worker", "--max-json-depth: expected 1..10000");
            o.backend.max_json_depth = (int)v;
            break;
        case 'E':
            if (parse_u64(optarg, &v) || v < 1 || v > (1ull << 40))
                return cli_error(KILN_EXIT_USAGE, "worker", "--max-tensor-elements: expected >= 1");
            o.backend.max_tensor_elements = (int64_t)v;
            break;
        case 'B':
            if (parse_u64(optarg, &v) || v < 1 || v > 256)
                return cli_error(KILN_EXIT_USAGE, "worker", "--max-batch: expected 1..256");
            o.max_batch = (int)v;
            break;
        case 'W':
            if (parse_u64(optarg, &v) || v > 100000)
                return cli_error(KILN_EXIT_USAGE, "worker", "--batch-wait-us: expected 0..100000");
            o.batch_wait_us = (int)v;
            break;
        case 'h':
            printf("usage: kiln worker --function NAME --kind KIND [--model M] [--data-dir DIR]\n"
                   "                   [--threads N] [--memory-limit BYTES] [--cpu-limit SECONDS]\n"
                   "                   [--user NAME] [--faults]\n"
                   "       kiln worker --zygote [--preload M.kiln]... [--preload-max BYTES]\n"
                   "A worker process of `kiln serve`; it talks to the server over fd 3.\n");
            return KILN_EXIT_OK;
        default:
            return KILN_EXIT_USAGE;
        }
    }
    if (zygote) {
        /* Models its workers will open, copied once into huge pages that
         * every forked worker shares (kiln_model_preload). A model that
         * cannot be preloaded is mapped from its file by the worker. */
        for (int i = 0; i < n_preload; i++)
            if (kiln_model_preload(preload[i], (size_t)preload_max))
                fprintf(stderr, "kiln worker: not preloading %s: %s\n", preload[i],
                        kiln_last_error());
        return worker_zygote(3, cmd_worker);
    }
    if (!have_kind) return cli_error(KILN_EXIT_USAGE, "worker", "--kind is required");
    return worker_run(&o);
}
