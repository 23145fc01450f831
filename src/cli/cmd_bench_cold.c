/*
 * kiln bench cold: process start to first result for a model, the cold
 * start a scale-to-zero function pays without the server's zygote.
 *
 *   kiln bench cold M.kiln [--repeat N] [--threads T] [--drop-cache] [--json]
 *
 * Each repeat spawns a fresh `kiln bench cold --child M` (a new process:
 * exec, dynamic linking, OpenBLAS start-up) and splits its time, on the
 * system-wide monotonic clock, into
 *   exec    spawn in the parent -> the child's subcommand starts
 *   open    kiln_model_open (mmap + validation)
 *   compile kiln_session_create (plan, arena)
 *   first   the first kiln_session_run on a zero input
 * and the total, spawn to first result. With --drop-cache the page cache is
 * dropped before each repeat (/proc/sys/vm/drop_caches, needs root); when
 * that is not permitted the model file and the kiln binary are evicted
 * with posix_fadvise(DONTNEED) instead, and the output says which was done.
 * Without it the cache is warm (the previous repeat loaded everything).
 */
#include "cli.h"
#include "kiln.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CMD        "bench cold"
#define MAX_REPEAT 1000

extern char **environ;

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* The child: opens, compiles and runs the model once, printing the
 * monotonic time at each boundary on one line. */
static int child(const char *path, int threads)
{
    double t_start = now_ms();
    kiln_model *m = NULL;
    kiln_session *s = NULL;
    kiln_status st = kiln_model_open(path, KILN_OPEN_TRUST_WEIGHTS, &m);
    double t_open = now_ms();
    kiln_session_options so = {threads, 1};
    if (!st) st = kiln_session_create(m, &so, &s);
    double t_compile = now_ms();
    if (st) {
        kiln_model_free(m);
        return cli_error(KILN_EXIT_FAIL, CMD, "%s", kiln_last_error());
    }
    int n_in = kiln_model_input_count(m), n_out = kiln_model_output_count(m);
    float **io[2] = {calloc((size_t)n_in, sizeof(float *)), calloc((size_t)n_out, sizeof(float *))};
    int rc = KILN_EXIT_FAIL;
    for (int k = 0; k < 2 && io[0] && io[1]; k++)
        for (int i = 0; i < (k ? n_out : n_in); i++) {
            kiln_io_info info;
            (k ? kiln_session_output : kiln_session_input)(s, i, &info);
            size_t n = 1;
            for (int d = 0; d < info.ndim; d++) n *= (size_t)info.dims[d];
            if (!(io[k][i] = calloc(n, sizeof(float)))) goto out;
        }
    if (!io[0] || !io[1]) goto out;
    if (kiln_session_run(s, (const float *const *)io[0], io[1])) {
        cli_error(KILN_EXIT_FAIL, CMD, "%s", kiln_last_error());
        goto out;
    }
    printf("%.6f %.6f %.6f %.6f\n", t_start, t_open, t_compile, now_ms());
    rc = KILN_EXIT_OK;
out:
    for (int k = 0; k < 2; k++) {
        for (int i = 0; io[k] && i < (k ? n_out : n_in); i++) free(io[k][i]);
        free(io[k]);
    }
    kiln_session_free(s);
    kiln_model_free(m);
    return rc;
}

/* Evicts one file's pages from the page cache; 0 on success. */
static int evict(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return rc ? -1 : 0;
}

/* Drops the page cache as far as permitted: "drop_caches", "fadvise" (the
 * model and binary only) or NULL when neither worked. */
static const char *drop_cache(const char *model, const char *exe)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, "1", 1);
        close(fd);
        if (w == 1) return "drop_caches";
    }
    if (evict(model) == 0 && evict(exe) == 0) return "fadvise";
    return NULL;
}

/* Milliseconds of one repeat, in the order of PHASE_NAMES. */
enum { EXEC, OPEN, COMPILE, FIRST, TOTAL, N_PHASES };
static const char *const PHASE_NAMES[N_PHASES] = {"exec_ms", "open_ms", "compile_ms",
                                                  "first_run_ms", "total_ms"};
typedef struct phases {
    double ms[N_PHASES];
} phases;

/* One repeat: spawns the child and reads its timestamps. */
static int one_run(const char *exe, const char *model, int threads, phases *p)
{
    char th[16];
    snprintf(th, sizeof th, "%d", threads);
    char *args[] = {(char *)exe, "bench", "cold", "--child", "--threads", th, (char *)model, NULL};
    int pipefd[2];
    if (pipe(pipefd)) return cli_error(KILN_EXIT_FAIL, CMD, "pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, pipefd[0]);
    pid_t pid;
    double t0 = now_ms();
    int err = posix_spawn(&pid, exe, &fa, NULL, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[1]);
    if (err) {
        close(pipefd[0]);
        return cli_error(KILN_EXIT_FAIL, CMD, "cannot start %s: %s", exe, strerror(err));
    }
    char line[256] = {0};
    size_t len = 0;
    for (ssize_t n;
         len < sizeof line - 1 && (n = read(pipefd[0], line + len, sizeof line - 1 - len)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        len += (size_t)n;
    }
    close(pipefd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    double t[4];
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        sscanf(line, "%lf %lf %lf %lf", &t[0], &t[1], &t[2], &t[3]) != 4)
        return cli_error(KILN_EXIT_FAIL, CMD, "the measured process failed (see above)");
    *p = (phases){{t[0] - t0, t[1] - t[0], t[2] - t[1], t[3] - t[2], t[3] - t0}};
    return KILN_EXIT_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int cmd_bench_cold(int argc, char **argv)
{
    static const struct option opts[] = {{"repeat", required_argument, NULL, 'r'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"drop-cache", no_argument, NULL, 'd'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"child", no_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    int repeat = 5, threads = 1, drop = 0, json = 0, is_child = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "r:t:djh", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            repeat = atoi(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'd':
            drop = 1;
            break;
        case 'j':
            json = 1;
            break;
        case 'c':
            is_child = 1;
            break;
        case 'h':
            printf("usage: kiln bench cold M.kiln [--repeat N] [--threads T] [--drop-cache] "
                   "[--json]\n"
                   "Process start to first result, split into exec (spawn to the command "
                   "starting),\nmodel open, compile and first run; median of N fresh processes. "
                   "--drop-cache\ndrops the page cache before each (as root; else evicts the "
                   "model and binary).\n");
            return KILN_EXIT_OK;
        default:
            return KILN_EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || threads < 1 || threads > 256 || repeat < 1 || repeat > MAX_REPEAT)
        return cli_error(KILN_EXIT_USAGE, CMD,
                         "expects one model, --repeat 1..%d and --threads 1..256", MAX_REPEAT);
    const char *model = argv[optind];
    if (is_child) return child(model, threads);
    if (access(model, R_OK))
        return cli_error(KILN_EXIT_FAIL, CMD, "%s: %s", model, strerror(errno));

    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return cli_error(KILN_EXIT_FAIL, CMD, "cannot find the kiln binary");
    exe[n] = 0;

    phases *runs = calloc((size_t)repeat, sizeof *runs);
    double *col = calloc((size_t)repeat, sizeof *col);
    if (!runs || !col) {
        free(runs);
        free(col);
        return cli_error(KILN_EXIT_FAIL, CMD, "out of memory");
    }
    const char *cache = "warm";
    int rc = KILN_EXIT_OK;
    for (int i = 0; i < repeat && rc == KILN_EXIT_OK; i++) {
        if (drop) {
            const char *how = drop_cache(model, exe);
            if (!how) {
                rc = cli_error(KILN_EXIT_FAIL, CMD, "cannot drop or evict the page cache");
                break;
            }
            cache = !strcmp(how, "drop_caches") ? "dropped (drop_caches)"
                                                : "model and binary evicted (fadvise; "
                                                  "drop_caches not permitted)";
        } else if (i == 0) {
            phases warm; /* an untimed run first, so "warm" means warm */
            rc = one_run(exe, model, threads, &warm);
            if (rc) break;
        }
        rc = one_run(exe, model, threads, &runs[i]);
        if (!json && rc == KILN_EXIT_OK && isatty(STDERR_FILENO))
            fprintf(stderr, "\r\033[K[%d/%d] %.1f ms", i + 1, repeat, runs[i].ms[TOTAL]);
    }
    if (!json && isatty(STDERR_FILENO)) fprintf(stderr, "\r\033[K");
    if (rc == KILN_EXIT_OK) {
        double med[N_PHASES];
        for (int k = 0; k < N_PHASES; k++) {
            for (int i = 0; i < repeat; i++) col[i] = runs[i].ms[k];
            med[k] = median(col, repeat);
        }
        if (json) {
            json_t *root = json_pack("{s:s, s:s, s:i, s:i, s:s}", "bench", "cold", "model", model,
                                     "threads", threads, "repeat", repeat, "page_cache", cache);
            json_t *m = json_object(), *all = json_array();
            for (int k = 0; k < N_PHASES; k++)
                json_object_set_new(m, PHASE_NAMES[k], json_real(med[k]));
            for (int i = 0; i < repeat; i++) {
                json_t *r = json_object();
                for (int k = 0; k < N_PHASES; k++)
                    json_object_set_new(r, PHASE_NAMES[k], json_real(runs[i].ms[k]));
                json_array_append_new(all, r);
            }
            json_object_set_new(root, "median", m);
            json_object_set_new(root, "runs", all);
            json_dumpf(root, stdout, JSON_INDENT(1));
            printf("\n");
            json_decref(root);
        } else {
            printf("%s: cold start, %d fresh process%s, %d thread%s, page cache %s\n", model,
                   repeat, repeat == 1 ? "" : "es", threads, threads == 1 ? "" : "s", cache);
            printf("  median ms: exec %.2f  open %.2f  compile %.2f  first run %.2f  total %.2f\n",
                   med[EXEC], med[OPEN], med[COMPILE], med[FIRST], med[TOTAL]);
        }
    }
    free(runs);
    free(col);
    return rc;
}
