/*
 * `kiln serve`: the HTTP front end, the router and the process life cycle.
 * The routes are OpenFaaS's (/function/<name>, /system/functions, /healthz),
 * the Open Inference Protocol's (/v2/...), kiln's own (/v1/...) and
 * Prometheus's /metrics.
 */
#ifndef KILN_SERVER_SERVER_H
#define KILN_SERVER_SERVER_H

typedef struct serve_options {
    const char *config_path; /* NULL: the embedded default */
    const char *listen;      /* overrides server.listen when not NULL */
    int port;                /* >= 0: overrides the port of the listen address */
    const char *data_dir;    /* overrides server.data_dir when not NULL */
} serve_options;

/* Loads the config, binds, serves until SIGINT or SIGTERM, then stops
 * workers and returns 0; or prints the reason and returns 1. Prints
 * "kiln serve: listening on http://ADDR" on stdout once bound. */
int serve_run(const serve_options *o);

#endif
