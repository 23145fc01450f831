/* Shared pieces of the kiln command line: exit codes, errors, the table. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

enum {
    KILN_EXIT_OK = 0,    /* the operation succeeded */
    KILN_EXIT_FAIL = 1,  /* the operation failed */
    KILN_EXIT_USAGE = 2, /* the command line was wrong */
};

/* One subcommand. `run` gets argv with argv[0] = the subcommand name, and
 * returns a KILN_EXIT_* code. */
typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

/* Prints "kiln <cmd>: <message>" as one line on stderr; returns `code`. */
int cli_error(int code, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A JSON string of the build options and runtime configuration. */
int cmd_info(int argc, char **argv);
/* The HTTP server (src/server/server.h). */
int cmd_serve(int argc, char **argv);
/* A worker process of the server (src/server/worker.h). */
int cmd_worker(int argc, char **argv);
/* Top-k labels for images (cmd_predict.c). */
int cmd_predict(int argc, char **argv);
/* Model latency (cmd_bench_model.c); `kiln bench model` routes here. */
int cmd_bench_model(int argc, char **argv);
/* Process start to first result (cmd_bench_cold.c); `kiln bench cold`. */
int cmd_bench_cold(int argc, char **argv);
/* Model files (cmd_model.c). */
int cmd_import(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_run(int argc, char **argv);
/* kiln bench kernels: kernel GFLOP/s against the machine's measured peak. */
int cmd_bench(int argc, char **argv);
/* Training and evaluation (src/cli/cmd_train.c, cmd_eval.c). */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
/* kiln models: a client of a server's model API (cmd_models.c). */
int cmd_models(int argc, char **argv);
/* kiln load: a k6-style load generator (src/cli/load/). */
int cmd_load(int argc, char **argv);

#endif
