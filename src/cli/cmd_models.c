/*
 * kiln models list|show|add|rm|meta: a client of a kiln server's model API
 * (/v1/models). One blocking HTTP/1.1 request per command on a plain socket;
 * libhttp-parser reads the response. The token comes from --token, else
 * KILN_TOKEN, else DATA_DIR/token (--data-dir, default ./var), and is only
 * sent when one was found.
 *
 * With --local the same requests run on the store in --data-dir itself
 * (models_ops.c, what the server runs for them), for a data dir no server
 * holds: models can be provisioned on a device before it serves. A running
 * server holds its data dir's lock, and --local then says so.
 */
#include "cli.h"
#include "config.h"
#include "load.h"
#include "models_ops.h"

#include <http_parser.h>
#include <jansson.h>

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CMD "models"

static void models_usage(FILE *out)
{
    fprintf(out,
            "usage: kiln models list [options]\n"
            "       kiln models show NAME [VERSION] [options]\n"
            "       kiln models add NAME FILE [--version V] [options]   (.kiln, compressed .kiln "
            "or ONNX)\n"
            "       kiln models rm NAME [VERSION] [options]\n"
            "       kiln models meta NAME JSON [options]   (replace the model's metadata, a JSON "
            "object;\n"
            "                                               creates the model if needed)\n\n"
            "  --url URL         the server (default http://127.0.0.1:8080)\n"
            "  --local           no server: work on the store in --data-dir itself (which\n"
            "                    no running server may hold)\n"
            "  --token T         API token (else $KILN_TOKEN, else DATA_DIR/token)\n"
            "  --data-dir D      where to find the token file, or with --local the store\n"
            "                    (default ./var)\n"
            "  --version V       add: the version's name (default: the next number)\n"
            "  --timeout S       seconds to wait for the server (default 120)\n"
            "  --json            print the server's JSON answer\n");
}

/* ---- one HTTP request ----------------------------------------------------- */

typedef struct response {
    int status;
    char *body;
    size_t len, cap;
    int complete;
    int oom;
    int local; /* answered by --local, not over HTTP */
} response;

static int on_body(http_parser *p, const char *at, size_t len)
{
    response *r = p->data;
    if (r->len + len + 1 > r->cap) {
        size_t cap = (r->len + len + 1) * 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            r->oom = 1;
            return -1;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, at, len);
    r->len += len;
    r->body[r->len] = 0;
    return 0;
}

static int on_complete(http_parser *p)
{
    response *r = p->data;
    r->status = (int)p->status_code;
    r->complete = 1;
    return 0;
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

typedef struct client {
    load_target target;
    const char *url;
    char token[512];
    int timeout_s;
    store *local; /* --local: the store itself, no server */
    const char *data_dir;
} client;

static int request_local(client *cl, const char *method, const char *path, const void *body,
                         size_t body_len, response *r);

/* Sends one request and reads the whole response. 0, or -1 after printing
 * the reason. */
static int request(client *cl, const char *method, const char *path, const char *ctype,
                   const void *body, size_t body_len, response *r)
{
    if (cl->local) return request_local(cl, method, path, body, body_len, r);
    memset(r, 0, sizeof *r);
    const load_target *t = &cl->target;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return cli_error(-1, CMD, "socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = cl->timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    socklen_t alen =
        t->addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (connect(fd, (const struct sockaddr *)&t->addr, alen)) {
        int e = errno;
        close(fd);
        return cli_error(-1, CMD, "cannot connect to %s (%s:%s): %s", cl->url, t->addr_text,
                         t->port, strerror(e));
    }
    char ctype_line[128] = "", auth_line[600] = "", head[2048];
    if (ctype) snprintf(ctype_line, sizeof ctype_line, "Content-Type: %s\r\n", ctype);
    if (cl->token[0])
        snprintf(auth_line, sizeof auth_line, "Authorization: Bearer %s\r\n", cl->token);
    int n = snprintf(head, sizeof head,
                     "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: kiln-models\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n%s%s\r\n",
                     method, t->prefix, path, t->hostport, body_len, ctype_line, auth_line);
    if (n <= 0 || (size_t)n >= sizeof head) {
        close(fd);
        return cli_error(-1, CMD, "request too long");
    }
    if (send_all(fd, head, (size_t)n) || (body_len && send_all(fd, body, body_len))) {
        int e = errno;
        close(fd);
        return cli_error(-1, CMD, "sending to %s: %s", cl->url,
                         e == EAGAIN ? "timed out" : strerror(e));
    }
    http_parser p;
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_body = on_body;
    s.on_message_complete = on_complete;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = r;
    char buf[65536];
    for (;;) {
        ssize_t got = recv(fd, buf, sizeof buf, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            free(r->body);
            return cli_error(-1, CMD, "reading from %s: %s", cl->url,
                             e == EAGAIN ? "timed out (--timeout)" : strerror(e));
        }
        size_t used = http_parser_execute(&p, &s, buf, (size_t)got);
        if (r->oom) {
            close(fd);
            free(r->body);
            return cli_error(-1, CMD, "out of memory");
        }
        if (r->complete) break;
        if (got == 0 || used != (size_t)got) {
            close(fd);
            free(r->body);
            return cli_error(-1, CMD, "%s: %s", cl->url,
                             got == 0 ? "the server closed the connection before answering"
                                      : "not an HTTP response");
        }
    }
    close(fd);
    return 0;
}

/* An answer >= 400: its JSON error as one line. Returns KILN_EXIT_FAIL. */
static int http_failed(const response *r)
{
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *msg = json_string_value(json_object_get(j, "error"));
    char text[512];
    snprintf(text, sizeof text, "%s", msg ? msg : r->body ? r->body : "");
    json_decref(j);
    for (char *c = text; *c; c++)
        if (*c == '\n' || *c == '\r') *c = ' ';
    if (r->status == 401)
        return cli_error(KILN_EXIT_FAIL, CMD,
                         "HTTP 401: %s (give --token, KILN_TOKEN or --data-dir of the server)",
                         text);
    return cli_error(KILN_EXIT_FAIL, CMD, "%s%d: %s", r->local ? "" : "HTTP ", r->status, text);
}

/* ---- commands -------------------------------------------------------------- */

static int name_ok(const char *what, const char *s)
{
    size_t n = strlen(s);
    int ok = n >= 1 && n <= 64 && s[0] != '.';
    for (size_t i = 0; ok && i < n; i++)
        ok = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
             (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-';
    if (!ok)
        cli_error(KILN_EXIT_USAGE, CMD,
                  "bad %s '%.80s': 1-64 of A-Z a-z 0-9 . _ - (not starting "
                  "with .)",
                  what, s);
    return ok;
}

static void fmt_time(json_int_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!ms || !gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm))
        snprintf(buf, len, "-");
}

static int print_json(const response *r)
{
    json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
    if (!j) {
        fwrite(r->body ? r->body : "", 1, r->len, stdout);
        putchar('\n');
        return KILN_EXIT_OK;
    }
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    json_decref(j);
    if (text) puts(text);
    free(text);
    return KILN_EXIT_OK;
}

static json_t *body_json(const response *r)
{
    json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, NULL);
    if (!j) cli_error(KILN_EXIT_FAIL, CMD, "the server's answer is not JSON");
    return j;
}

/* The answer r to a request: an HTTP error is printed and fails; with
 * --json the body is printed as it is; otherwise show() prints the parsed
 * body (ctx is its argument). Frees r's body. */
static int answer(response *r, int as_json, void (*show)(json_t *, const void *), const void *ctx)
{
    int rc = KILN_EXIT_OK;
    if (r->status >= 400)
        rc = http_failed(r);
    else if (as_json)
        rc = print_json(r);
    else {
        json_t *j = body_json(r);
        if (j)
            show(j, ctx);
        else
            rc = KILN_EXIT_FAIL;
        json_decref(j);
    }
    free(r->body);
    return rc;
}

/* /v1/models/NAME/versions/VERSION, or with no version
 * /v1/models/NAME + tail. */
static void model_path(char *path, size_t size, const char *name, const char *version,
                       const char *tail)
{
    if (version)
        snprintf(path, size, "/v1/models/%s/versions/%s", name, version);
    else
        snprintf(path, size, "/v1/models/%s%s", name, tail);
}

static void show_list(json_t *j, const void *ctx)
{
    (void)ctx;
    json_t *m;
    size_t i;
    printf("%-32s %8s  %-12s %s\n", "NAME", "VERSIONS", "LATEST", "CREATED");
    json_array_foreach(json_object_get(j, "models"), i, m)
    {
        char when[32];
        fmt_time(json_integer_value(json_object_get(m, "created")), when, sizeof when);
        const char *latest = json_string_value(json_object_get(m, "latest"));
        printf("%-32s %8lld  %-12s %s\n", json_string_value(json_object_get(m, "name")),
               (long long)json_integer_value(json_object_get(m, "versions")), latest ? latest : "-",
               when);
    }
}

static int do_list(client *cl, int as_json)
{
    response r;
    if (request(cl, "GET", "/v1/models", NULL, NULL, 0, &r)) return KILN_EXIT_FAIL;
    return answer(&r, as_json, show_list, NULL);
}

static void print_version(json_t *v)
{
    char when[32];
    fmt_time(json_integer_value(json_object_get(v, "created")), when, sizeof when);
    const char *sha = json_string_value(json_object_get(v, "sha256"));
    const char *fmt = json_string_value(json_object_get(json_object_get(v, "metadata"), "format"));
    json_t *job = json_object_get(json_object_get(v, "metadata"), "job");
    printf("  %-12s %12lld bytes  sha256 %.12s  %s  %s",
           json_string_value(json_object_get(v, "version")),
           (long long)json_integer_value(json_object_get(v, "size")), sha ? sha : "-", when,
           fmt ? fmt : "-");
    if (json_is_integer(job)) printf("  (training job %lld)", (long long)json_integer_value(job));
    putchar('\n');
}

typedef struct show_ctx {
    const char *name, *version;
} show_ctx;

static void show_model(json_t *j, const void *ctx)
{
    const show_ctx *c = ctx;
    if (c->version) {
        printf("%s\n", c->name);
        print_version(j);
        return;
    }
    const char *latest = json_string_value(json_object_get(j, "latest"));
    printf("%s  (latest: %s)\n", c->name, latest ? latest : "none");
    json_t *meta = json_object_get(j, "metadata");
    char *text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    if (text) printf("  metadata %s\n", text);
    free(text);
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(j, "versions"), i, v) print_version(v);
}

static int do_show(client *cl, const char *name, const char *version, int as_json)
{
    char path[256];
    model_path(path, sizeof path, name, version, "");
    response r;
    if (request(cl, "GET", path, NULL, NULL, 0, &r)) return KILN_EXIT_FAIL;
    show_ctx c = {name, version};
    return answer(&r, as_json, show_model, &c);
}

static int read_file(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode) ||
        !(*data = malloc((size_t)st.st_size + 1))) {
        fclose(f);
        errno = errno ? errno : EINVAL;
        return -1;
    }
    *len = fread(*data, 1, (size_t)st.st_size, f);
    int bad = ferror(f) || *len != (size_t)st.st_size;
    fclose(f);
    if (bad) {
        free(*data);
        errno = EIO;
        return -1;
    }
    return 0;
}

static void show_added(json_t *j, const void *ctx)
{
    printf("added %s version %s (%lld bytes, sha256 %.12s)\n", (const char *)ctx,
           json_string_value(json_object_get(j, "version")),
           (long long)json_integer_value(json_object_get(j, "size")),
           json_string_value(json_object_get(j, "sha256")));
}

static int do_add(client *cl, const char *name, const char *file, const char *version, int as_json)
{
    char *data;
    size_t len;
    if (read_file(file, &data, &len))
        return cli_error(KILN_EXIT_FAIL, CMD, "%s: %s", file, strerror(errno));
    char path[256];
    model_path(path, sizeof path, name, version, "/versions");
    response r;
    int failed =
        request(cl, version ? "PUT" : "POST", path, "application/octet-stream", data, len, &r);
    free(data);
    if (failed) return KILN_EXIT_FAIL;
    return answer(&r, as_json, show_added, name);
}

static int do_rm(client *cl, const char *name, const char *version)
{
    char path[256];
    model_path(path, sizeof path, name, version, "");
    response r;
    if (request(cl, "DELETE", path, NULL, NULL, 0, &r)) return KILN_EXIT_FAIL;
    int rc = KILN_EXIT_OK;
    if (r.status >= 400)
        rc = http_failed(&r);
    else if (version)
        printf("removed %s version %s\n", name, version);
    else
        printf("removed %s and its versions\n", name);
    free(r.body);
    return rc;
}

static void show_meta(json_t *j, const void *ctx)
{
    (void)j;
    printf("set the metadata of %s\n", (const char *)ctx);
}

/* PUT /v1/models/NAME {"metadata": JSON}; JSON must be an object. */
static int do_meta(client *cl, const char *name, const char *text, int as_json)
{
    json_error_t je;
    json_t *meta = json_loads(text, 0, &je);
    if (!json_is_object(meta)) {
        json_decref(meta);
        return cli_error(KILN_EXIT_USAGE, CMD, "metadata must be a JSON object, got '%.60s'", text);
    }
    json_t *req = json_pack("{s:o}", "metadata", meta);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) return cli_error(KILN_EXIT_FAIL, CMD, "out of memory");
    char path[256];
    model_path(path, sizeof path, name, NULL, "");
    response r;
    int failed = request(cl, "PUT", path, "application/json", body, strlen(body), &r);
    free(body);
    if (failed) return KILN_EXIT_FAIL;
    return answer(&r, as_json, show_meta, name);
}

/* ---- --local ---------------------------------------------------------------- */

/* The `seg`-th path segment after /v1/models/ (0: the model, 1: "versions",
 * 2: the version) copied into out, or "" when there is none. */
static void path_segment(const char *path, int seg, char *out, size_t len)
{
    const char *p = path + strlen("/v1/models");
    out[0] = 0;
    for (int i = 0; i <= seg; i++) {
        if (*p != '/') return;
        p++;
        size_t n = strcspn(p, "/");
        if (i == seg) {
            snprintf(out, len, "%.*s", (int)n, p);
            return;
        }
        p += n;
    }
}

/* Runs what `method path` asks of the server on the local store instead,
 * and fills r as if the server had answered (the CLI builds only the paths
 * below). */
static int request_local(client *cl, const char *method, const char *path, const void *body,
                         size_t body_len, response *r)
{
    char name[STORE_NAME_MAX + 1], what[16], version[STORE_NAME_MAX + 1];
    path_segment(path, 0, name, sizeof name);
    path_segment(path, 1, what, sizeof what);
    path_segment(path, 2, version, sizeof version);
    int get = !strcmp(method, "GET"), put = !strcmp(method, "PUT");
    int del = !strcmp(method, "DELETE"), post = !strcmp(method, "POST");
    server_config defaults;
    config_defaults(&defaults);
    models_req q = {.st = cl->local,
                    .data_dir = cl->data_dir,
                    .max_model_bytes = defaults.max_model_bytes,
                    .model = name,
                    .version = version};
    config_free(&defaults);
    char *meta = NULL;
    models_op op;
    if (!name[0] && get)
        op = MODELS_LIST;
    else if (name[0] && !what[0])
        op = get ? MODELS_GET : del ? MODELS_DELETE : MODELS_PUT;
    else if (version[0])
        op = get ? MODELS_VERSION_GET : del ? MODELS_VERSION_DELETE : MODELS_UPLOAD;
    else
        op = MODELS_UPLOAD;
    if ((op == MODELS_PUT && !put) || (op == MODELS_UPLOAD && !put && !post))
        return cli_error(-1, CMD, "--local: no operation for %s %s", method, path);
    if (op == MODELS_PUT) { /* the body is {"metadata": {...}} */
        json_t *j = json_loadb(body, body_len, 0, NULL);
        json_t *m = json_object_get(j, "metadata");
        meta = json_is_object(m) ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(j);
        q.metadata = meta;
    }
    q.body = body;
    q.body_len = body_len;
    models_res res;
    memset(r, 0, sizeof *r);
    r->status = models_do(op, &q, &res);
    free(meta);
    json_t *answer = r->status >= 400 ? json_pack("{s:s}", "error", res.error) : res.out;
    if (r->status >= 400) json_decref(res.out);
    r->body = answer ? json_dumps(answer, JSON_COMPACT) : strdup("");
    json_decref(answer);
    free(res.data);
    if (!r->body) return cli_error(-1, CMD, "out of memory");
    r->len = strlen(r->body);
    r->complete = 1;
    r->local = 1;
    return 0;
}

/* --token, else $KILN_TOKEN, else DATA_DIR/token; "" when none. */
static int find_token(client *cl, const char *opt, const char *data_dir)
{
    const char *t = opt ? opt : getenv("KILN_TOKEN");
    if (t && *t) {
        snprintf(cl->token, sizeof cl->token, "%s", t);
    } else {
        char path[4200];
        snprintf(path, sizeof path, "%s/token", data_dir);
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(cl->token, sizeof cl->token, f)) cl->token[0] = 0;
            fclose(f);
        }
        cl->token[strcspn(cl->token, "\r\n")] = 0;
    }
    for (const char *c = cl->token; *c; c++)
        if ((unsigned char)*c < 0x21 || *c == 0x7f)
            return cli_error(-1, CMD, "the token has spaces or control characters");
    return 0;
}

int cmd_models(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", 1, 0, 'u'},     {"token", 1, 0, 't'}, {"data-dir", 1, 0, 'd'},
        {"version", 1, 0, 'V'}, {"json", 0, 0, 'j'},  {"timeout", 1, 0, 'T'},
        {"local", 0, 0, 'l'},   {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    const char *url = "http://127.0.0.1:8080", *token = NULL, *data_dir = "./var", *version = NULL;
    int as_json = 0, timeout_s = 120, local = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'u':
            url = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'd':
            data_dir = optarg;
            break;
        case 'V':
            version = optarg;
            break;
        case 'j':
            as_json = 1;
            break;
        case 'l':
            local = 1;
            break;
        case 'T': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 86400)
                return cli_error(KILN_EXIT_USAGE, CMD, "bad value for --timeout: '%s'", optarg);
            timeout_s = (int)v;
            break;
        }
        case 'h':
            models_usage(stdout);
            return KILN_EXIT_OK;
        default:
            models_usage(stderr);
            return KILN_EXIT_USAGE;
        }
    }
    int npos = argc - optind;
    char **pos = argv + optind;
    if (npos < 1)
        return cli_error(KILN_EXIT_USAGE, CMD,
                         "expected list, show, add, rm or meta (kiln models --help)");
    const char *sub = pos[0];
    int want_min, want_max;
    if (!strcmp(sub, "list"))
        want_min = 1, want_max = 1;
    else if (!strcmp(sub, "show") || !strcmp(sub, "rm"))
        want_min = 2, want_max = 3;
    else if (!strcmp(sub, "add") || !strcmp(sub, "meta"))
        want_min = 3, want_max = 3;
    else
        return cli_error(KILN_EXIT_USAGE, CMD,
                         "unknown subcommand '%s' (list, show, add, rm, meta)", sub);
    if (npos < want_min || npos > want_max)
        return cli_error(KILN_EXIT_USAGE, CMD,
                         "wrong number of arguments for '%s' (kiln models "
                         "--help)",
                         sub);
    if (version && strcmp(sub, "add"))
        return cli_error(KILN_EXIT_USAGE, CMD, "--version is for add (show and rm take VERSION)");
    if (npos >= 2 && !name_ok("model name", pos[1])) return KILN_EXIT_USAGE;
    int takes_version = !strcmp(sub, "show") || !strcmp(sub, "rm");
    const char *ver = version ? version : (takes_version && npos == 3 ? pos[2] : NULL);
    if (ver && strcmp(ver, "latest") && !name_ok("version", ver)) return KILN_EXIT_USAGE;

    client cl = {.url = url, .timeout_s = timeout_s, .data_dir = data_dir};
    if (local) {
        store_options so;
        store_options_defaults(&so);
        so.data_dir = data_dir;
        store_status st = store_open(&so, &cl.local, NULL);
        if (st == STORE_BUSY)
            return cli_error(KILN_EXIT_FAIL, CMD,
                             "%s is in use by a running server: drop --local to use its API",
                             data_dir);
        if (st)
            return cli_error(KILN_EXIT_FAIL, CMD, "cannot open the store in %s: %s", data_dir,
                             store_last_error());
    } else {
        char err[512];
        int r = load_target_open(&cl.target, url, true, err, sizeof err);
        if (r) return cli_error(r == 2 ? KILN_EXIT_USAGE : KILN_EXIT_FAIL, CMD, "%s", err);
        if (find_token(&cl, token, data_dir)) {
            load_target_close(&cl.target);
            return KILN_EXIT_USAGE;
        }
    }
    int rc;
    if (!strcmp(sub, "list"))
        rc = do_list(&cl, as_json);
    else if (!strcmp(sub, "show"))
        rc = do_show(&cl, pos[1], ver, as_json);
    else if (!strcmp(sub, "add"))
        rc = do_add(&cl, pos[1], pos[2], ver, as_json);
    else if (!strcmp(sub, "meta"))
        rc = do_meta(&cl, pos[1], pos[2], as_json);
    else
        rc = do_rm(&cl, pos[1], ver);
    if (local)
        store_close(cl.local);
    else
        load_target_close(&cl.target);
    return rc;
}
