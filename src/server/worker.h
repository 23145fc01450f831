/*
 * `kiln worker`: one worker process. It is started by `kiln serve` with the
 * socketpair to the server on fd 3, runs one function's backend, and speaks
 * the framed protocol of proto.h with blocking reads and writes: READY (or
 * INIT_FAILED) once, then one RESULT per INVOKE, until SHUTDOWN or EOF.
 * When the server keeps several invocations in flight (concurrency > 1),
 * the worker runs them in rounds: every INVOKE already in its socket (up to
 * max_batch, optionally waiting batch_wait_us for more) is taken in one
 * read, run, and answered with one writev.
 * It dies with the server (PR_SET_PDEATHSIG) and applies its memory and CPU
 * limits to itself (RLIMIT_AS, RLIMIT_CPU) and drops root for `user` before
 * loading anything.
 */
#ifndef KILN_SERVER_WORKER_H
#define KILN_SERVER_WORKER_H

#include "backend.h"

#include <stdint.h>

typedef struct worker_options {
    backend_options backend;
    int fd;                /* the socketpair; 3 */
    uint64_t memory_limit; /* bytes of address space; 0 = none */
    uint64_t cpu_limit_s;  /* seconds of CPU time (RLIMIT_CPU: SIGXCPU, then SIGKILL); 0 = none */
    const char *user;      /* when running as root: switch to this user before loading */
    uint64_t max_frame;    /* largest frame accepted from the server */
    int max_batch;         /* invocations run in one round (one read, one write), 1..256 */
    int batch_wait_us;     /* how long a round waits to fill up to max_batch; 0 = no wait */
} worker_options;

/* Runs until SHUTDOWN or EOF. Returns the process exit code: 0 after a
 * normal stop, 1 when init failed, 2 on a protocol or I/O error. */
int worker_run(const worker_options *o);

/* `kiln worker --zygote`: serves SPAWN requests on fd until EOF. Each
 * forks a child that takes the passed socket as fd 3 and returns
 * child_main(argc, argv) as its exit code; SPAWNED and EXITED frames report
 * pids and exits. Returns the zygote's exit code. */
int worker_zygote(int fd, int (*child_main)(int argc, char **argv));

#endif
