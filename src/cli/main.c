/* The kiln binary: one table of subcommands, dispatch, top-level help. */
#include "cli.h"
#include "kiln.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Only commands that work are listed. */
static const cli_command commands[] = {
    {"info", "CPU features, chosen ISA, OpenBLAS configuration, build options", cmd_info},
    {"serve", "serve functions over HTTP (OpenFaaS and KServe v2 APIs) on worker processes",
     cmd_serve},
    {"worker", "one worker process of kiln serve (started by the server)", cmd_worker},
    {"import", "convert an ONNX model or YAML architecture to .kiln", cmd_import},
    {"inspect", "layers, shapes, parameters, FLOPs and arena size of a model", cmd_inspect},
    {"run", "run a model on a float32 .npy tensor", cmd_run},
    {"predict", "top-k labels for JPEG/PNG images", cmd_predict},
    {"bench",
     "kernels | model | cold: GFLOP/s against the measured peak; model latency; cold start",
     cmd_bench},
    {"train", "train a CNN from a YAML architecture on a data set", cmd_train},
    {"eval", "accuracy, per-class accuracy and confusion matrix of a model", cmd_eval},
    {"models", "list, show, add and remove models on a kiln server (its /v1/models API)",
     cmd_models},
    {"load", "load test a server: k6-style ramping VUs or a constant arrival rate", cmd_load},
};
static const size_t n_commands = sizeof commands / sizeof commands[0];

int cli_error(int code, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

static void usage(FILE *out)
{
    fprintf(out, "kiln %s - edge inference engine and serverless runtime\n\n", kiln_version());
    fprintf(out, "usage: kiln <command> [options]   (kiln <command> --help for its options)\n\n");
    fprintf(out, "commands:\n");
    for (size_t i = 0; i < n_commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    kiln_blas_select_coretype(argv); /* may re-execute kiln under OPENBLAS_CORETYPE */
    if (argc < 2) {
        usage(stderr);
        return KILN_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return KILN_EXIT_OK;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "version")) {
        printf("kiln %s\n", kiln_version());
        return KILN_EXIT_OK;
    }
    for (size_t i = 0; i < n_commands; i++)
        if (!strcmp(commands[i].name, name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s' (kiln --help lists them)\n", name);
    return KILN_EXIT_USAGE;
}
