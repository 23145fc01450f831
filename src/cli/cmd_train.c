/* kiln train: trains a sequential CNN from a YAML architecture on a data set. */
#include "cli.h"
#include "kiln.h"
#include "train/trainer.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

static void train_usage(FILE *out)
{
    fprintf(
        out,
        "usage: kiln train --arch A.yaml --data DATASET -o M.kiln [options]\n"
        "       kiln train --resume M.kiln.ckpt --data DATASET -o M.kiln [options]\n\n"
        "  --arch FILE        architecture (models/*.yaml)\n"
        "  --data DATASET     fashion-mnist, mnist, or a directory (IDX, CIFAR, image folder)\n"
        "  -o, --output FILE  model file to write; a checkpoint FILE.ckpt is written each epoch\n"
        "  --resume FILE      continue from a checkpoint\n"
        "  --epochs N         total epochs (default 5)\n"
        "  --batch B          batch size (default 64)\n"
        "  --optimizer NAME   sgd or adam (default sgd)\n"
        "  --lr X             learning rate (default 0.01 sgd, 0.001 adam)\n"
        "  --momentum X       SGD momentum (default 0.9)\n"
        "  --nesterov         Nesterov momentum\n"
        "  --weight-decay X   L2 weight decay (default 0)\n"
        "  --schedule S       const, step, cosine (default const)\n"
        "  --step-every N     step schedule: epochs between decays (default 1)\n"
        "  --gamma X          step schedule: decay factor (default 0.1)\n"
        "  --warmup N         linear warm-up steps (default 0)\n"
        "  --clip X           clip gradients to global L2 norm X\n"
        "  --augment LIST     crop (random crop, 4 px padding), flip; comma-separated\n"
        "  --pad N            padding of the random crop (default 4)\n"
        "  --seed N           seed for initialisation, order, augmentation (default 1)\n"
        "  --threads N        BLAS threads (default 1; 1 is deterministic)\n"
        "  --limit N          train on the first N samples only\n"
        "  --test-limit N     evaluate on the first N test samples only\n"
        "  --size N           image folders: input size (default 224); an architecture with\n"
        "                     global average pooling is built for the data's size\n"
        "  --init FILE        start from the weights of a .kiln or .onnx model (conv, batch\n"
        "                     norm and dense layers in order; a differing dense head is kept\n"
        "                     fresh)\n"
        "  --freeze backbone  train only the dense head: the layers before the first dense\n"
        "                     layer keep their weights and run in inference mode\n"
        "  --feature-cache MB with a frozen backbone and no augmentation, keep each image's\n"
        "                     backbone features for every epoch up to MB (default 1024)\n"
        "  --quiet            no progress output\n"
        "  --progress-fd N    also write progress as JSON lines to file descriptor N (used by\n"
        "                     kiln serve's training jobs; the process exits with its reader)\n");
}

/* --progress-fd: one JSON object per line, at most every 200 ms during an
 * epoch, always for an epoch's last batch and its test result. */
typedef struct progress_pipe {
    int fd;
    double last;
} progress_pipe;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void pipe_printf(progress_pipe *pp, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n <= 0 || (size_t)n >= sizeof line) return;
    for (int off = 0; off < n;) {
        ssize_t w = write(pp->fd, line + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(KILN_EXIT_FAIL); /* the reader is gone: so is the job */
        off += (int)w;
    }
}

static void on_progress(void *ctx, const kt_progress *p)
{
    progress_pipe *pp = ctx;
    if (p->test) {
        pipe_printf(pp,
                    "{\"epoch\":%d,\"epochs\":%d,\"test_loss\":%.6g,\"test_accuracy\":%.6g,"
                    "\"test_samples\":%lld}\n",
                    p->epoch, p->epochs, p->test_loss, p->test_acc, (long long)p->test_count);
        return;
    }
    double t = mono_s();
    if (p->batch != p->batches && t - pp->last < 0.2) return;
    pp->last = t;
    pipe_printf(pp,
                "{\"epoch\":%d,\"epochs\":%d,\"batch\":%lld,\"batches\":%lld,\"loss\":%.6g,"
                "\"accuracy\":%.6g,\"samples_per_s\":%.6g,\"eta_s\":%.6g}\n",
                p->epoch, p->epochs, (long long)p->batch, (long long)p->batches, p->loss, p->acc,
                p->samples_per_s, p->eta_s);
}

static int parse_pos(const char *s, long long max, long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v <= 0 || v > max) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0) || v > 1e6) return -1;
    *out = (float)v;
    return 0;
}

int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {
        {"arch", 1, 0, 'a'},        {"data", 1, 0, 'd'},         {"output", 1, 0, 'o'},
        {"resume", 1, 0, 'r'},      {"epochs", 1, 0, 'e'},       {"batch", 1, 0, 'b'},
        {"optimizer", 1, 0, 'O'},   {"lr", 1, 0, 'l'},           {"momentum", 1, 0, 'm'},
        {"nesterov", 0, 0, 'N'},    {"weight-decay", 1, 0, 'w'}, {"schedule", 1, 0, 'S'},
        {"step-every", 1, 0, 'E'},  {"gamma", 1, 0, 'g'},        {"warmup", 1, 0, 'W'},
        {"clip", 1, 0, 'c'},        {"augment", 1, 0, 'A'},      {"pad", 1, 0, 'p'},
        {"seed", 1, 0, 's'},        {"threads", 1, 0, 't'},      {"limit", 1, 0, 'L'},
        {"test-limit", 1, 0, 'T'},  {"size", 1, 0, 'z'},         {"quiet", 0, 0, 'q'},
        {"init", 1, 0, 'I'},        {"freeze", 1, 0, 'F'},       {"feature-cache", 1, 0, 'C'},
        {"progress-fd", 1, 0, 'P'}, {"help", 0, 0, 'h'},         {0, 0, 0, 0}};
    kt_train_config cfg;
    kt_train_defaults(&cfg);
    int lr_set = 0, quiet = 0, pad = 4, crop = 0;
    progress_pipe pp = {.fd = -1};
    long long v;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            cfg.arch_path = optarg;
            break;
        case 'd':
            cfg.data = optarg;
            break;
        case 'o':
            cfg.out = optarg;
            break;
        case 'r':
            cfg.resume = optarg;
            break;
        case 'e':
            if (parse_pos(optarg, 100000, &v)) goto bad;
            cfg.epochs = (int)v;
            break;
        case 'b':
            if (parse_pos(optarg, 65536, &v)) goto bad;
            cfg.batch = (int)v;
            break;
        case 'O':
            if (!strcmp(optarg, "sgd"))
                cfg.opt.kind = KT_SGD;
            else if (!strcmp(optarg, "adam"))
                cfg.opt.kind = KT_ADAM;
            else
                goto bad;
            break;
        case 'l':
            if (parse_float(optarg, &cfg.opt.lr) || !(cfg.opt.lr > 0)) goto bad;
            lr_set = 1;
            break;
        case 'm':
            if (parse_float(optarg, &cfg.opt.momentum) || cfg.opt.momentum >= 1) goto bad;
            break;
        case 'N':
            cfg.opt.nesterov = 1;
            break;
        case 'w':
            if (parse_float(optarg, &cfg.opt.weight_decay)) goto bad;
            break;
        case 'S':
            if (!strcmp(optarg, "const"))
                cfg.opt.sched = KT_SCHED_CONST;
            else if (!strcmp(optarg, "step"))
                cfg.opt.sched = KT_SCHED_STEP;
            else if (!strcmp(optarg, "cosine"))
                cfg.opt.sched = KT_SCHED_COSINE;
            else
                goto bad;
            break;
        case 'E':
            if (parse_pos(optarg, 100000, &v)) goto bad;
            cfg.opt.step_every = (int)v;
            break;
        case 'g':
            if (parse_float(optarg, &cfg.opt.step_gamma)) goto bad;
            break;
        case 'W':
            if (parse_pos(optarg, 1 << 30, &v)) goto bad;
            cfg.opt.warmup_steps = (int)v;
            break;
        case 'c':
            if (parse_float(optarg, &cfg.opt.clip_norm)) goto bad;
            break;
        case 'A': {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", optarg);
            for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "crop"))
                    crop = 1;
                else if (!strcmp(t, "flip"))
                    cfg.hflip = 1;
                else if (strcmp(t, "none"))
                    goto bad;
            }
            break;
        }
        case 'p':
            if (parse_pos(optarg, 64, &v)) goto bad;
            pad = (int)v;
            break;
        case 's':
            if (parse_pos(optarg, (long long)1 << 62, &v)) goto bad;
            cfg.seed = (uint64_t)v;
            break;
        case 't':
            if (parse_pos(optarg, 1024, &v)) goto bad;
            cfg.threads = (int)v;
            break;
        case 'L':
            if (parse_pos(optarg, (long long)1 << 40, &v)) goto bad;
            cfg.max_train = v;
            break;
        case 'T':
            if (parse_pos(optarg, (long long)1 << 40, &v)) goto bad;
            cfg.max_test = v;
            break;
        case 'z':
            if (parse_pos(optarg, 4096, &v)) goto bad;
            cfg.folder_size = (int)v;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'I':
            cfg.init = optarg;
            break;
        case 'F':
            if (strcmp(optarg, "backbone")) goto bad;
            cfg.freeze = 1;
            break;
        case 'C':
            if (parse_pos(optarg, (long long)1 << 30, &v)) goto bad;
            cfg.feature_cache_bytes = (int64_t)v << 20;
            break;
        case 'P':
            if (parse_pos(optarg, 1 << 20, &v)) goto bad;
            pp.fd = (int)v;
            break;
        case 'h':
            train_usage(stdout);
            return KILN_EXIT_OK;
        default:
            train_usage(stderr);
            return KILN_EXIT_USAGE;
        }
        continue;
    bad : {
        const char *name = "?";
        for (const struct option *o = opts; o->name; o++)
            if (o->val == c) name = o->name;
        return cli_error(KILN_EXIT_USAGE, "train", "bad value for --%s: '%s'", name,
                         optarg ? optarg : "");
    }
    }
    if (optind != argc)
        return cli_error(KILN_EXIT_USAGE, "train", "unexpected argument '%s'", argv[optind]);
    if ((!cfg.arch_path && !cfg.resume) || !cfg.data || !cfg.out)
        return cli_error(KILN_EXIT_USAGE, "train",
                         "--arch (or --resume), --data and -o are required (kiln train --help)");
    if (!lr_set && cfg.opt.kind == KT_ADAM) cfg.opt.lr = 0.001f;
    if (crop) cfg.pad_crop = pad;
    if (!quiet) {
        cfg.progress = stderr;
        cfg.tty = isatty(fileno(stderr));
    }
    if (pp.fd >= 0) {
        /* A job of kiln serve: its progress goes to the server, and the job
         * ends with the server (a write to the closed pipe ends it too). */
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        signal(SIGPIPE, SIG_DFL);
        cfg.on_progress = on_progress;
        cfg.progress_ctx = &pp;
    }
    kiln_init();
    kt_train_result res;
    kiln_errbuf err = {{0}};
    kiln_status st = kt_train(&cfg, &res, &err);
    if (st != KILN_OK)
        return cli_error(KILN_EXIT_FAIL, "train", "%s", err.msg[0] ? err.msg : kiln_strerror(st));
    printf(
        "epochs %d  train loss %.4f  train acc %.2f%%  test acc %.2f%%  %.1f s  %.0f samples/s\n",
        res.epochs_run, res.train_loss, 100 * res.train_acc, 100 * res.test_acc, res.seconds,
        res.samples_per_s);
    if (pp.fd >= 0)
        pipe_printf(&pp,
                    "{\"done\":true,\"epochs_run\":%d,\"train_loss\":%.6g,\"train_accuracy\":%.6g,"
                    "\"test_accuracy\":%.6g,\"seconds\":%.6g,\"samples_per_s\":%.6g}\n",
                    res.epochs_run, res.train_loss, res.train_acc, res.test_acc, res.seconds,
                    res.samples_per_s);
    return KILN_EXIT_OK;
}
