/* The worker process's main loop (worker.h). */
#include "worker.h"
#include "proto.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <limits.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* 0 when all n bytes were read, 1 on EOF before the first byte, -1 else. */
static int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r == 0) return got ? -1 : 1;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, (const char *)p + done, n - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

/* Switches a worker started as root to `user` (its uid, gid and groups) so
 * the function runs without root; a no-op when not root. 0, or -1 with the
 * reason in err. */
static int drop_privileges(const char *user, char *err, size_t errlen)
{
    if (!user || geteuid() != 0) return 0;
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        snprintf(err, errlen, "user '%s': %s", user, errno ? strerror(errno) : "no such user");
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) || setgid(pw->pw_gid) || setuid(pw->pw_uid)) {
        snprintf(err, errlen, "cannot switch to user '%s': %s", user, strerror(errno));
        return -1;
    }
    if (pw->pw_uid != 0 && setuid(0) == 0) {
        snprintf(err, errlen, "user '%s': root could be regained", user);
        return -1;
    }
    /* A change of credentials clears the parent-death signal: set it again,
     * then check the server did not go in between. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() == 1) {
        snprintf(err, errlen, "the server is gone");
        return -1;
    }
    return 0;
}

/* Frames from the server, read in as few read() calls as they arrive in:
 * one read usually holds every INVOKE waiting in the socket. Frames are
 * taken from `pos`; the taken ones are dropped at the start of the next
 * round (compact), so payloads stay put while a round runs - but a read
 * may move the buffer, hence offsets, not pointers, until the round is
 * collected. */
typedef struct frame_reader {
    uint8_t *data;
    size_t len; /* bytes held */
    size_t cap; /* bytes allocated */
    size_t pos; /* the first byte not taken */
} frame_reader;

#define FRAME_READ_CHUNK 65536

static void reader_compact(frame_reader *r)
{
    if (!r->pos) return;
    memmove(r->data, r->data + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->pos = 0;
}

/* The frame at pos: 0 when it is complete (its header, its payload's
 * offset; pos moves past it), 1 when more bytes are needed (room for them
 * is reserved), -1 for a bad or oversized frame or no memory. */
static int reader_take(frame_reader *r, size_t max_frame, proto_header *h, size_t *payload_off)
{
    size_t have = r->len - r->pos, need = PROTO_HEADER_SIZE;
    if (have >= PROTO_HEADER_SIZE) {
        const char *why;
        if (proto_get_header(r->data + r->pos, h, &why) || h->length > max_frame) return -1;
        need += h->length;
        if (have >= need) {
            *payload_off = r->pos + PROTO_HEADER_SIZE;
            r->pos += need;
            return 0;
        }
    }
    size_t want = r->pos + (need < FRAME_READ_CHUNK ? FRAME_READ_CHUNK : need);
    if (want > r->cap) {
        uint8_t *d = realloc(r->data, want);
        if (!d) return -1;
        r->data = d;
        r->cap = want;
    }
    return 1;
}

/* One read into the free space: bytes read, 0 on EOF, -1 on an error. */
static ssize_t reader_fill(frame_reader *r, int fd)
{
    for (;;) {
        ssize_t n = read(fd, r->data + r->len, r->cap - r->len);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) r->len += (size_t)n;
        return n;
    }
}

/* Waits up to `us` microseconds for fd to become readable: 1, 0 on timeout. */
static int wait_readable(int fd, uint64_t us)
{
    struct pollfd pf = {fd, POLLIN, 0};
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    int r;
    do r = ppoll(&pf, 1, &ts, NULL);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

static int writev_full(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n > IOV_MAX ? IOV_MAX : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Sends and frees a frame built by a proto_build_* call. */
static int send_frame(int fd, uint8_t *frame, const size_t *len)
{
    if (!frame) return -1;
    int r = write_full(fd, frame, *len);
    free(frame);
    return r;
}

/* What one invocation of a round needs. */
typedef struct round_item {
    uint64_t id;
    size_t payload_off;
    uint32_t payload_len;
    backend_response res;
    uint8_t head[PROTO_RESULT_HEAD_MAX];
} round_item;

/* Takes the frames of one round into items[]: blocks for the first, then
 * takes what is already read, up to max_batch, waiting up to batch_wait_us
 * for more. Returns how many INVOKEs were taken (>= 1), 0 after SHUTDOWN or
 * EOF between frames with nothing taken, -1 on a protocol or read error.
 * *stop is set when a SHUTDOWN or EOF ends the round early: the items
 * taken are still answered, then the worker exits. */
static int collect_round(frame_reader *in, int fd, const worker_options *o, round_item *items,
                         int *stop)
{
    int n = 0, max = o->max_batch > 1 ? o->max_batch : 1;
    uint64_t deadline = 0;
    reader_compact(in);
    while (n < max) {
        proto_header h;
        size_t off;
        int t = reader_take(in, o->max_frame, &h, &off);
        if (t < 0) return -1;
        if (t == 0) {
            if (h.type == PROTO_SHUTDOWN) {
                *stop = 1;
                return n;
            }
            if (h.type != PROTO_INVOKE) return -1;
            items[n].id = h.id;
            items[n].payload_off = off;
            items[n].payload_len = h.length;
            if (++n == 1 && o->batch_wait_us) deadline = now_us() + (uint64_t)o->batch_wait_us;
            continue;
        }
        /* Nothing complete is left in the buffer: the first frame of a round
         * is waited for; later ones only within batch_wait_us. */
        if (n) {
            uint64_t now = deadline ? now_us() : 0;
            if (!deadline || now >= deadline || !wait_readable(fd, deadline - now)) break;
        }
        ssize_t r = reader_fill(in, fd);
        if (r < 0) return -1;
        if (r == 0) {
            if (in->len > in->pos) return -1; /* EOF inside a frame */
            *stop = 1;
            return n;
        }
    }
    return n;
}

/* Serves rounds of invocations until SHUTDOWN or EOF; the exit code. */
static int serve(const worker_options *o, const backend_ops *ops, void *state)
{
    int max = o->max_batch > 1 ? o->max_batch : 1;
    round_item *items = calloc((size_t)max, sizeof *items);
    struct iovec *iov = calloc((size_t)max * 2, sizeof *iov);
    backend_request *reqs = calloc((size_t)max, sizeof *reqs);
    backend_response **resp = calloc((size_t)max, sizeof *resp);
    frame_reader in = {0};
    int rc = 2;
    if (!items || !iov || !reqs || !resp) goto out;
    for (;;) {
        int stop = 0;
        int n = collect_round(&in, o->fd, o, items, &stop);
        if (n < 0) break;
        int exit_after = 0, bad = 0;
        for (int i = 0; i < n; i++) {
            round_item *it = &items[i];
            proto_invoke inv;
            const char *why;
            if (proto_parse_invoke(in.data + it->payload_off, it->payload_len, &inv, &why)) {
                bad = 1;
                n = i; /* answer those before it, then stop */
                break;
            }
            reqs[i] = (backend_request){inv.ctype,     inv.ctype_len, inv.query,
                                        inv.query_len, inv.body,      inv.body_len};
            backend_response *res = &it->res;
            res->status = 200;
            snprintf(res->ctype, sizeof res->ctype, "application/json");
            res->body.len = 0;
            res->body.oom = 0;
            res->exit_after = 0;
            resp[i] = res;
        }
        /* A backend that can runs the round at once (a predict batches its
         * images); else one invocation after another. */
        int together = ops->invoke_round && n > 1;
        if (together) ops->invoke_round(state, reqs, resp, n);
        for (int i = 0; i < n; i++) {
            backend_response *res = resp[i];
            if (!together) ops->invoke(state, &reqs[i], res);
            if (res->body.oom) backend_error(res, 500, "out of memory building the response");
            if (res->exit_after) {
                /* The backend's state is suspect: the rest of the round is
                 * not run here. Unanswered, it runs again on the worker the
                 * server starts next (a clean exit requeues what was sent). */
                exit_after = 1;
                n = i + 1;
                break;
            }
        }
        for (int i = 0; i < n; i++) {
            round_item *it = &items[i];
            backend_response *res = &it->res;
            size_t hl =
                proto_result_head(it->head, it->id, res->status, n, res->ctype, res->body.len);
            if (!hl) {
                backend_error(res, 500, "the response is too large for the worker protocol");
                hl = proto_result_head(it->head, it->id, res->status, n, res->ctype, res->body.len);
            }
            iov[2 * i] = (struct iovec){it->head, hl};
            iov[2 * i + 1] = (struct iovec){res->body.data, res->body.len};
        }
        if (n && writev_full(o->fd, iov, 2 * n)) break;
        if (bad) break;
        if (exit_after || stop) {
            /* exit_after: the backend's state is suspect, the server starts
             * a new worker. */
            rc = 0;
            break;
        }
        /* Do not keep huge buffers. */
        for (int i = 0; i < n; i++)
            if (items[i].res.body.cap > (16u << 20)) buf_free(&items[i].res.body);
        if (in.cap > (16u << 20) && in.len == in.pos) {
            free(in.data);
            in = (frame_reader){0};
        }
    }
out:
    if (items)
        for (int i = 0; i < max; i++) buf_free(&items[i].res.body);
    free(items);
    free(iov);
    free(reqs);
    free(resp);
    free(in.data);
    return rc;
}

int worker_run(const worker_options *o)
{
    int fd = o->fd;
    uint64_t t0 = now_us();
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) return 2; /* the server is already gone */
    char comm[16];
    snprintf(comm, sizeof comm, "kiln:%s", o->backend.function);
    prctl(PR_SET_NAME, comm);

    size_t len;
    char err[512];
#if defined(__SANITIZE_ADDRESS__)
    /* AddressSanitizer reserves terabytes of address space: RLIMIT_AS would
     * stop it from starting. Sanitizer builds run without the limit. */
    if (o->memory_limit) fprintf(stderr, "kiln worker: memory_limit not applied under ASan\n");
    if (0) {
#else
    if (o->memory_limit) {
#endif
        struct rlimit rl = {(rlim_t)o->memory_limit, (rlim_t)o->memory_limit};
        if (setrlimit(RLIMIT_AS, &rl)) {
            snprintf(err, sizeof err, "cannot set memory_limit: %s", strerror(errno));
            send_frame(fd, proto_build_init_failed(500, err, &len), &len);
            return 1;
        }
    }
    if (o->cpu_limit_s) {
        /* SIGXCPU (fatal) at the soft limit, SIGKILL one second later. */
        struct rlimit rl = {(rlim_t)o->cpu_limit_s, (rlim_t)o->cpu_limit_s + 1};
        if (setrlimit(RLIMIT_CPU, &rl)) {
            snprintf(err, sizeof err, "cannot set cpu_limit: %s", strerror(errno));
            send_frame(fd, proto_build_init_failed(500, err, &len), &len);
            return 1;
        }
    }
    if (drop_privileges(o->user, err, sizeof err)) {
        send_frame(fd, proto_build_init_failed(500, err, &len), &len);
        return 1;
    }
    const backend_ops *ops = backend_for(o->backend.kind);
    void *state = NULL;
    int status = 500;
    err[0] = 0;
    if (!ops) {
        snprintf(err, sizeof err, "kind '%s' is not available in this build",
                 fn_kind_name(o->backend.kind));
        send_frame(fd, proto_build_init_failed(501, err, &len), &len);
        return 1;
    }
    if (ops->init(&o->backend, &state, &status, err, sizeof err)) {
        send_frame(fd, proto_build_init_failed(status, err[0] ? err : "init failed", &len), &len);
        return 1;
    }
    if (send_frame(fd, proto_build_ready(now_us() - t0, (uint64_t)getpid(), &len), &len)) {
        ops->fini(state);
        return 2;
    }

    int rc = serve(o, ops, state);
    ops->fini(state);
    return rc;
}

/* ---- zygote ---------------------------------------------------------------- */

#define ZYGOTE_MAX_ARGS 64

/* Reads one frame header with the descriptor that came with it (or -1).
 * 0, 1 on EOF, -1 on error. */
static int recv_header(int fd, uint8_t *hdr, int *passed)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = {hdr, PROTO_HEADER_SIZE};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    size_t got = 0;
    *passed = -1;
    while (got < PROTO_HEADER_SIZE) {
        iov.iov_base = hdr + got;
        iov.iov_len = PROTO_HEADER_SIZE - got;
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof ctl.buf;
        ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (r == 0) return got ? -1 : 1;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                c->cmsg_len == CMSG_LEN(sizeof(int))) {
                int f;
                memcpy(&f, CMSG_DATA(c), sizeof f);
                if (*passed >= 0)
                    close(f);
                else
                    *passed = f;
            }
        got += (size_t)r;
    }
    return 0;
}

static void reap(int fd)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        size_t len;
        int32_t code = WIFEXITED(st) ? WEXITSTATUS(st) : 0;
        int32_t sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
        send_frame(fd, proto_build_exited((uint32_t)pid, code, sig, &len), &len);
    }
}

int worker_zygote(int fd, int (*child_main)(int argc, char **argv))
{
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1) return 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) return 2;
    uint8_t *payload = NULL;
    size_t cap = 0;
    int rc = 2;
    for (;;) {
        struct pollfd pf[2] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (pf[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            }
            reap(fd);
        }
        if (!pf[0].revents) continue;
        uint8_t hdr[PROTO_HEADER_SIZE];
        int passed;
        int r = recv_header(fd, hdr, &passed);
        if (r == 1) {
            rc = 0;
            break;
        }
        proto_header h;
        const char *why;
        if (r || proto_get_header(hdr, &h, &why) || h.type != PROTO_SPAWN || h.length > 65536) {
            if (passed >= 0) close(passed);
            break;
        }
        if (h.length + 1 > cap) {
            uint8_t *np = realloc(payload, h.length + 1);
            if (!np) break;
            payload = np;
            cap = h.length + 1;
        }
        if (h.length && read_full(fd, payload, h.length)) break;
        char *args[ZYGOTE_MAX_ARGS + 1];
        int n = proto_parse_spawn(payload, h.length, args, ZYGOTE_MAX_ARGS, &why);
        pid_t pid = -1;
        if (n > 0 && passed >= 0) pid = fork();
        if (pid == 0) {
            /* The worker: fd 3 is its socket; nothing else of the zygote's. */
            close(sfd);
            if (dup2(passed, 3) < 0) _exit(2);
            close(passed);
            sigprocmask(SIG_UNBLOCK, &set, NULL);
            args[n] = NULL;
            _exit(child_main(n, args));
        }
        if (passed >= 0) close(passed);
        size_t len;
        if (send_frame(fd, proto_build_spawned(h.id, pid > 0 ? (uint32_t)pid : 0, &len), &len))
            break;
    }
    free(payload);
    close(sfd);
    return rc;
}
