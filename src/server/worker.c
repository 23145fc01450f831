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

/* Frames from the server, read in as few read() calls as they arrive in
 * (usually one per invocation: header and payload together). */
typedef struct frame_reader {
    uint8_t *data;
    size_t len;  /* bytes held */
    size_t cap;  /* bytes allocated */
    size_t used; /* the frame handed out last, dropped at the next call */
} frame_reader;

#define FRAME_READ_CHUNK 65536

/* The next frame: 0 with its header and payload (valid until the next
 * call), 1 on EOF between frames, -1 on a bad or oversized frame, a read
 * error or EOF inside a frame. */
static int next_frame(frame_reader *r, int fd, size_t max_frame, proto_header *h,
                      const uint8_t **payload)
{
    if (r->used) {
        memmove(r->data, r->data + r->used, r->len - r->used);
        r->len -= r->used;
        r->used = 0;
    }
    for (;;) {
        size_t need = PROTO_HEADER_SIZE;
        if (r->len >= PROTO_HEADER_SIZE) {
            const char *why;
            if (proto_get_header(r->data, h, &why) || h->length > max_frame) return -1;
            need += h->length;
            if (r->len >= need) {
                *payload = r->data + PROTO_HEADER_SIZE;
                r->used = need;
                return 0;
            }
        }
        if (need < FRAME_READ_CHUNK) need = FRAME_READ_CHUNK;
        if (need > r->cap) {
            uint8_t *d = realloc(r->data, need);
            if (!d) return -1;
            r->data = d;
            r->cap = need;
        }
        ssize_t n = read(fd, r->data + r->len, r->cap - r->len);
        if (n == 0) return r->len ? -1 : 1;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        r->len += (size_t)n;
    }
}

/* Sends and frees a frame built by a proto_build_* call. */
static int send_frame(int fd, uint8_t *frame, const size_t *len)
{
    if (!frame) return -1;
    int r = write_full(fd, frame, *len);
    free(frame);
    return r;
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
    if (send_frame(fd, proto_build_ready(now_us() - t0, &len), &len)) {
        ops->fini(state);
        return 2;
    }

    frame_reader in = {0};
    int rc = 2;
    backend_response res = {0};
    for (;;) {
        proto_header h;
        const uint8_t *payload;
        int r = next_frame(&in, fd, o->max_frame, &h, &payload);
        if (r == 1) {
            rc = 0; /* the server closed the pipe */
            break;
        }
        if (r) break;
        if (h.type == PROTO_SHUTDOWN) {
            rc = 0;
            break;
        }
        const char *why;
        proto_invoke inv;
        if (h.type != PROTO_INVOKE || proto_parse_invoke(payload, h.length, &inv, &why)) break;
        backend_request req = {inv.ctype,     inv.ctype_len, inv.query,
                               inv.query_len, inv.body,      inv.body_len};
        res.status = 200;
        snprintf(res.ctype, sizeof res.ctype, "application/json");
        res.body.len = 0;
        res.body.oom = 0;
        res.exit_after = 0;
        ops->invoke(state, &req, &res);
        if (res.body.oom) backend_error(&res, 500, "out of memory building the response");
        uint8_t *f = proto_build_result(h.id, res.status, res.ctype,
                                        res.body.data ? res.body.data : "", res.body.len, &len);
        if (send_frame(fd, f, &len)) break;
        if (res.exit_after) {
            rc = 0; /* the backend's state is suspect: the server starts a new worker */
            break;
        }
        /* Do not keep huge buffers. */
        if (res.body.cap > (16u << 20)) buf_free(&res.body);
        if (in.cap > (16u << 20) && in.len == in.used) {
            free(in.data);
            in = (frame_reader){0};
        }
    }
    buf_free(&res.body);
    free(in.data);
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
