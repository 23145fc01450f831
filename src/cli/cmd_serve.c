/* kiln serve: the HTTP server and its worker processes. */
#include "cli.h"
#include "server.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"listen", required_argument, NULL, 'l'},
        {"port", required_argument, NULL, 'p'},   {"data-dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},         {0}};
    serve_options o = {.port = -1};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:l:p:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o.config_path = optarg;
            break;
        case 'l':
            o.listen = optarg;
            break;
        case 'p': {
            char *end;
            long p = strtol(optarg, &end, 10);
            if (*end || end == optarg || p < 0 || p > 65535)
                return cli_error(KILN_EXIT_USAGE, "serve", "--port: expected 0..65535, got '%s'",
                                 optarg);
            o.port = (int)p;
            break;
        }
        case 'd':
            o.data_dir = optarg;
            break;
        case 'h':
            printf("usage: kiln serve [--config FILE] [--listen HOST:PORT] [--port N]\n"
                   "                  [--data-dir DIR]\n"
                   "Serves the functions of FILE (default: the built-in config/default.yaml)\n"
                   "over HTTP on 127.0.0.1:8080 unless the config or --listen/--port say\n"
                   "otherwise (port 0 picks a free one). SIGINT or SIGTERM stops it.\n");
            return KILN_EXIT_OK;
        default:
            return KILN_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return cli_error(KILN_EXIT_USAGE, "serve", "unexpected argument '%s'", argv[optind]);
    return serve_run(&o) ? KILN_EXIT_FAIL : KILN_EXIT_OK;
}
