/* The server's /proc sampler of itself and its workers (sampler.h). */
#include "sampler.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

/* Reads a small /proc file whole into buf (NUL-terminated). Length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

static double uptime_s(void)
{
    char buf[128];
    if (read_small("/proc/uptime", buf, sizeof buf) <= 0) return 0;
    return strtod(buf, NULL);
}

int proc_usage_read(int pid, int with_pss, proc_usage *u)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (read_small(path, buf, sizeof buf) <= 0) return -1;
    /* The command name may hold spaces and ')': the fields start after the
     * last ')'. Field 3 (state) is index 0 from there. */
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p++;
    unsigned long long v[22];
    for (int i = 0; i < 22; i++) {
        while (*p == ' ') p++;
        if (i == 0) { /* the state letter */
            if (!*p) return -1;
            p++;
            v[0] = 0;
            continue;
        }
        char *end;
        errno = 0;
        v[i] = strtoull(p, &end, 10);
        if (end == p || errno) return -1;
        p = end;
    }
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    if (tick <= 0) tick = 100;
    if (page <= 0) page = 4096;
    u->cpu_ticks = v[11] + v[12];                         /* utime + stime */
    u->age_s = uptime_s() - (double)v[19] / (double)tick; /* starttime */
    if (u->age_s < 0) u->age_s = 0;
    u->rss_kb = (int64_t)(v[21] * (unsigned long long)page / 1024);
    u->pss_kb = -1;
    if (with_pss) {
        char sm[4096];
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
        if (read_small(path, sm, sizeof sm) > 0) {
            const char *q = strstr(sm, "\nPss:");
            if (q) u->pss_kb = strtoll(q + 5, NULL, 10);
            /* smaps_rollup counts pages; stat's RSS is the kernel's
             * per-CPU counters, which can read 0 for a small new process. */
            q = strstr(sm, "\nRss:");
            if (q) u->rss_kb = strtoll(q + 5, NULL, 10);
        }
    }
    return 0;
}

double proc_cpu_pct(uint64_t ticks, double wall_s)
{
    long tick = sysconf(_SC_CLK_TCK);
    if (tick <= 0) tick = 100;
    if (wall_s <= 0) return 0;
    return (double)ticks / (double)tick / wall_s * 100.0;
}

typedef struct prev_entry {
    int pid;
    uint64_t ticks;
} prev_entry;

struct sampler {
    uv_timer_t timer;
    FILE *out;
    int with_pss;
    sampler_list_fn list;
    void *list_ctx;
    uint64_t last_ns; /* uv_hrtime of the previous sample, 0 before the first */
    prev_entry *prev, *cur;
    size_t n_prev, n_cur, cap;
    double wall_s, ts;
};

static int64_t prev_ticks(const sampler *s, int pid)
{
    for (size_t i = 0; i < s->n_prev; i++)
        if (s->prev[i].pid == pid) return (int64_t)s->prev[i].ticks;
    return -1;
}

static void sample_one(void *ctx, const char *function, int pid)
{
    sampler *s = ctx;
    proc_usage u;
    if (pid <= 0 || proc_usage_read(pid, s->with_pss, &u)) return;
    if (s->n_cur == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        prev_entry *a = realloc(s->prev, cap * sizeof *a);
        if (!a) return;
        s->prev = a;
        prev_entry *b = realloc(s->cur, cap * sizeof *b);
        if (!b) return;
        s->cur = b;
        s->cap = cap;
    }
    s->cur[s->n_cur++] = (prev_entry){pid, u.cpu_ticks};
    if (!s->last_ns) return; /* the baseline: no interval yet */
    /* A process new since the previous sample: its CPU since it started
     * (a forked worker's counters start at zero). */
    int64_t before = prev_ticks(s, pid);
    double span = s->wall_s;
    uint64_t used = u.cpu_ticks;
    if (before >= 0 && (uint64_t)before <= u.cpu_ticks)
        used = u.cpu_ticks - (uint64_t)before;
    else if (u.age_s < span)
        span = u.age_s > 1e-3 ? u.age_s : 1e-3;
    double pct = proc_cpu_pct(used, span);
    fprintf(s->out, "%.3f,%s,%d,%.1f,%lld,", s->ts, function, pid, pct, (long long)u.rss_kb);
    if (u.pss_kb >= 0) fprintf(s->out, "%lld", (long long)u.pss_kb);
    fputc('\n', s->out);
}

void sampler_sample(sampler *s)
{
    uint64_t now = uv_hrtime();
    struct timeval tv;
    gettimeofday(&tv, NULL);
    s->ts = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    s->wall_s = s->last_ns ? (double)(now - s->last_ns) / 1e9 : 0;
    s->n_cur = 0;
    s->list(s->list_ctx, sample_one, s);
    fflush(s->out);
    prev_entry *t = s->prev;
    s->prev = s->cur;
    s->cur = t;
    s->n_prev = s->n_cur;
    s->last_ns = now;
}

static void on_tick(uv_timer_t *t)
{
    sampler_sample(t->data);
}

sampler *sampler_start(uv_loop_t *loop, const char *path, uint64_t interval_ms, int with_pss,
                       sampler_list_fn list, void *list_ctx, char *err, size_t errlen)
{
    sampler *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->out = fopen(path, "ae");
    if (!s->out) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        free(s);
        return NULL;
    }
    if (ftell(s->out) == 0) fputs("ts,function,worker_pid,cpu_pct,rss_kb,pss_kb\n", s->out);
    s->with_pss = with_pss;
    s->list = list;
    s->list_ctx = list_ctx;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_tick, interval_ms, interval_ms);
    /* The baseline for the first interval's CPU; no rows. */
    sampler_sample(s);
    return s;
}

static void on_closed(uv_handle_t *h)
{
    sampler *s = h->data;
    free(s->prev);
    free(s->cur);
    free(s);
}

void sampler_stop(sampler *s)
{
    if (!s) return;
    uv_timer_stop(&s->timer);
    if (s->out) fclose(s->out);
    s->out = NULL;
    uv_close((uv_handle_t *)&s->timer, on_closed);
}
