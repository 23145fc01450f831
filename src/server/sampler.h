/*
 * The process sampler: every `interval` it reads the CPU time, RSS and
 * (optionally) PSS of the server, its zygote and its workers from /proc and
 * appends one CSV row per process:
 *
 *   ts,function,worker_pid,cpu_pct,rss_kb,pss_kb
 *
 * ts is Unix seconds; function is the function a worker serves, "server"
 * for the server itself and "zygote" for the template process; cpu_pct is
 * CPU time over wall time since the previous sample in percent of one core
 * (200 = two cores busy), as top counts; pss_kb is empty when PSS is off
 * or unreadable. bench/plot.py and bench/report.py read this file.
 *
 * Runs on the server's event loop: each sample is a few small /proc reads
 * per process and one buffered write.
 */
#ifndef KILN_SERVER_SAMPLER_H
#define KILN_SERVER_SAMPLER_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

/* One process's counters. */
typedef struct proc_usage {
    uint64_t cpu_ticks; /* utime + stime, in clock ticks */
    double age_s;       /* seconds since the process started */
    int64_t rss_kb;     /* from smaps_rollup when PSS is read (exact), else from stat */
    int64_t pss_kb;     /* -1 when not read */
} proc_usage;

/* Reads /proc/PID/stat (and /proc/PID/smaps_rollup when with_pss). 0, or
 * -1 when the process is gone or /proc is unreadable. */
int proc_usage_read(int pid, int with_pss, proc_usage *u);

/* CPU percent of one core: ticks used over wall_s seconds. */
double proc_cpu_pct(uint64_t ticks, double wall_s);

/* The processes to sample: `each` is called once per process. */
typedef void (*sampler_each_fn)(void *each_ctx, const char *function, int pid);
typedef void (*sampler_list_fn)(void *list_ctx, sampler_each_fn each, void *each_ctx);

typedef struct sampler sampler;

/* Opens `path` for appending (writing the header when it is empty) and
 * samples every interval_ms. NULL with the reason in err. */
sampler *sampler_start(uv_loop_t *loop, const char *path, uint64_t interval_ms, int with_pss,
                       sampler_list_fn list, void *list_ctx, char *err, size_t errlen);

/* Takes one sample now (also what the timer does). */
void sampler_sample(sampler *s);

/* Stops the timer, closes the file; the sampler is freed once its timer
 * handle has closed. NULL is allowed. */
void sampler_stop(sampler *s);

#endif
