/* Training loop and evaluation (see trainer.h). */
#include "trainer.h"

#include "export.h"

#include "fileio.h"
#include "loader.h"
#include "model_file.h"
#include "onnx_import.h"
#include "train_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void kt_train_defaults(kt_train_config *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = 5;
    c->batch = 64;
    c->threads = 1;
    kt_optim_defaults(&c->opt);
    c->seed = 1;
    c->folder_size = 224;
    c->feature_cache_bytes = (int64_t)1 << 30;
}

void kt_eval_free(kt_eval_result *r)
{
    free(r->confusion);
    memset(r, 0, sizeof *r);
}

int kt_parse_floats(const char *s, float *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || n >= max || !isfinite(v)) return -1;
        out[n++] = (float)v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Per-channel mean and std of a data set (at most `limit` samples). */
static kiln_status channel_stats(const kiln_dataset *ds, int64_t limit, float *mean, float *std,
                                 kiln_errbuf *err)
{
    int64_t n = ds->count < limit ? ds->count : limit;
    int64_t sz = kiln__dataset_sample_size(ds), plane = (int64_t)ds->height * ds->width;
    float *buf = malloc((size_t)sz * sizeof *buf);
    if (!buf) return kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    double s[4] = {0}, s2[4] = {0};
    for (int64_t i = 0; i < n; i++) {
        kiln_status st = kiln__dataset_read(ds, i, buf, err);
        if (st != KILN_OK) {
            free(buf);
            return st;
        }
        for (int c = 0; c < ds->channels; c++)
            for (int64_t j = 0; j < plane; j++) {
                double v = buf[c * plane + j];
                s[c] += v;
                s2[c] += v * v;
            }
    }
    free(buf);
    double m = (double)n * plane;
    for (int c = 0; c < 4; c++) {
        mean[c] = c < ds->channels ? (float)(s[c] / m) : 0.0f;
        double var = c < ds->channels ? s2[c] / m - (s[c] / m) * (s[c] / m) : 1.0;
        std[c] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
    }
    return KILN_OK;
}

/* Adds n rows of logits to r's counts and confusion; returns their summed loss. */
static double tally(kt_eval_result *r, const float *logits, const int32_t *y, int n)
{
    const int k = r->num_classes;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        int arg = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > z[arg]) arg = j;
        r->confusion[(size_t)y[i] * k + arg]++;
        r->correct += arg == y[i];
        r->count++;
    }
    return kt_softmax_xent(n, k, logits, y, NULL, NULL, NULL) * n;
}

/*
 * Backbone features of a data set: every sample once through the net in
 * inference mode; the output of the last frozen layer is kept per sample
 * (in data set order) with its label.
 */
typedef struct feature_cache {
    float *x;   /* count x dim */
    int32_t *y; /* count */
    int64_t count, dim;
} feature_cache;

static void feature_cache_free(feature_cache *c)
{
    free(c->x);
    free(c->y);
    memset(c, 0, sizeof *c);
}

static kiln_status feature_cache_fill(kt_net *net, const kiln_dataset *ds, const float *mean,
                                      const float *std, int64_t max_count, feature_cache *c,
                                      kiln_errbuf *err)
{
    memset(c, 0, sizeof *c);
    const int f = net->frozen;
    c->dim = net->layers[f - 1].out_size;
    c->count = max_count > 0 && max_count < ds->count ? max_count : ds->count;
    c->x = malloc((size_t)(c->count * c->dim) * sizeof(float));
    c->y = malloc((size_t)c->count * sizeof(int32_t));
    if (!c->x || !c->y) {
        feature_cache_free(c);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory for %lld cached features",
                          (long long)c->count);
    }
    kiln_loader_config lc;
    kiln__loader_config_defaults(&lc, ds);
    lc.batch = net->batch;
    lc.max_count = c->count;
    memcpy(lc.mean, mean, sizeof lc.mean);
    memcpy(lc.std, std, sizeof lc.std);
    kiln_loader *ld;
    kiln_status st = kiln__loader_create(&lc, &ld, err);
    if (st != KILN_OK) {
        feature_cache_free(c);
        return st;
    }
    kiln__loader_start(ld, 0, err);
    kiln_batch b;
    int got;
    while ((got = kiln__loader_next(ld, &b, err)) > 0) {
        kt_net_forward(net, b.x, b.n, 0);
        const float *feat = kt_net_output(net, f - 1);
        for (int i = 0; i < b.n; i++) {
            memcpy(c->x + b.index[i] * c->dim, feat + i * c->dim, (size_t)c->dim * sizeof(float));
            c->y[b.index[i]] = b.y[i];
        }
    }
    kiln__loader_destroy(ld);
    if (got < 0) {
        feature_cache_free(c);
        return (kiln_status)-got;
    }
    return KILN_OK;
}

/* Loads rows [off, off + n) of the cache (through `order` when not NULL)
 * as the input of the first trainable layer; labels into y. */
static void feature_batch(kt_net *net, const feature_cache *c, const int64_t *order, int64_t off,
                          int n, int32_t *y)
{
    float *dst = kt_net_output(net, net->frozen - 1);
    for (int i = 0; i < n; i++) {
        int64_t j = order ? order[off + i] : off + i;
        memcpy(dst + i * c->dim, c->x + j * c->dim, (size_t)c->dim * sizeof(float));
        y[i] = c->y[j];
    }
}

static kiln_status evaluate_cached(kt_net *net, const feature_cache *c, int32_t *ybuf,
                                   kt_eval_result *r, kiln_errbuf *err)
{
    memset(r, 0, sizeof *r);
    r->num_classes = net->num_classes;
    r->confusion = calloc((size_t)r->num_classes * r->num_classes, sizeof *r->confusion);
    if (!r->confusion) return kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    double loss = 0;
    for (int64_t off = 0; off < c->count; off += net->batch) {
        int n = (int)(c->count - off < net->batch ? c->count - off : net->batch);
        feature_batch(net, c, NULL, off, n, ybuf);
        loss += tally(r, kt_net_forward_from(net, net->frozen, n, 0), ybuf, n);
    }
    r->loss = r->count ? loss / r->count : 0;
    return KILN_OK;
}

/* A seeded permutation of 0..n-1 for one epoch (Fisher-Yates). */
static void shuffle_order(int64_t *order, int64_t n, uint64_t seed, int epoch)
{
    for (int64_t i = 0; i < n; i++) order[i] = i;
    uint64_t r = kiln__mix64(seed ^ kiln__mix64(0xfeed0000u + (uint64_t)epoch));
    for (int64_t i = n - 1; i > 0; i--) {
        r = kiln__mix64(r);
        int64_t j = (int64_t)(r % (uint64_t)(i + 1));
        int64_t t = order[i];
        order[i] = order[j], order[j] = t;
    }
}

/* Weights from a .kiln or .onnx file into net (see kt_net_load_graph);
 * the file's mean/std metadata, when it has them for every channel, into
 * mean/std (*have_stats set). */
static kiln_status load_init(kt_net *net, const char *path, float *mean, float *std,
                             int *have_stats, int *copied, kiln_errbuf *err)
{
    kg_graph *g = NULL;
    kg_meta m = {0};
    kf_image img = {0};
    char ge[KG_ERRLEN];
    size_t len = strlen(path);
    kiln_status st = len > 5 && !strcmp(path + len - 5, ".onnx")
                         ? kx_import(path, NULL, 0, &g, &m, ge)
                         : kf_load(path, 0, &g, &m, &img, ge);
    if (st != KILN_OK) return kiln__fail(err, st, "--init %s", ge);
    st = kt_net_load_graph(net, g, path, copied, err);
    const char *ms = kg_meta_get(&m, "mean"), *ss = kg_meta_get(&m, "std");
    float mv[4], sv[4];
    *have_stats = ms && ss && kt_parse_floats(ms, mv, 4) == net->arch.channels &&
                  kt_parse_floats(ss, sv, 4) == net->arch.channels;
    if (*have_stats) {
        memcpy(mean, mv, sizeof mv);
        memcpy(std, sv, sizeof sv);
    }
    kg_graph_free(g);
    kg_meta_free(&m);
    kf_image_release(&img);
    return st;
}

kiln_status kt_evaluate(kt_net *net, const kiln_dataset *ds, const float *mean, const float *std,
                        int64_t max_count, kt_eval_result *r, kiln_errbuf *err)
{
    memset(r, 0, sizeof *r);
    const kt_arch *a = &net->arch;
    if (ds->channels != a->channels || ds->height != a->height || ds->width != a->width)
        return kiln__fail(err, KILN_ERR_SHAPE, "%s: samples are %dx%dx%d, the model takes %dx%dx%d",
                          ds->name, ds->channels, ds->height, ds->width, a->channels, a->height,
                          a->width);
    if (ds->num_classes > net->num_classes)
        return kiln__fail(err, KILN_ERR_SHAPE, "%s: %d classes, the model has %d", ds->name,
                          ds->num_classes, net->num_classes);
    kiln_loader_config lc;
    kiln__loader_config_defaults(&lc, ds);
    lc.batch = net->batch;
    lc.max_count = max_count;
    memcpy(lc.mean, mean, sizeof lc.mean);
    memcpy(lc.std, std, sizeof lc.std);
    kiln_loader *ld;
    kiln_status st = kiln__loader_create(&lc, &ld, err);
    if (st != KILN_OK) return st;
    const int k = net->num_classes;
    r->num_classes = k;
    r->confusion = calloc((size_t)k * k, sizeof *r->confusion);
    if (!r->confusion) {
        kiln__loader_destroy(ld);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    }
    kiln__loader_start(ld, 0, err);
    kiln_batch b;
    int got;
    double loss = 0;
    while ((got = kiln__loader_next(ld, &b, err)) > 0)
        loss += tally(r, kt_net_forward(net, b.x, b.n, 0), b.y, b.n);
    kiln__loader_destroy(ld);
    if (got < 0) {
        kt_eval_free(r);
        return (kiln_status)-got;
    }
    r->loss = r->count ? loss / r->count : 0;
    return KILN_OK;
}

static void fmt_eta(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e7) s = 0;
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%dh%02dm", t / 3600, t / 60 % 60);
    else
        snprintf(buf, n, "%dm%02ds", t / 60, t % 60);
}

static kiln_status set_meta_float(kt_meta *m, const char *key, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.6g", v);
    return kt_meta_set(m, key, buf);
}

static kiln_status set_meta_floats(kt_meta *m, const char *key, const float *v, int n)
{
    char buf[128];
    size_t k = 0;
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%.9g", i ? "," : "", (double)v[i]);
    return kt_meta_set(m, key, buf);
}

static const char *optim_name(const kt_optim *o)
{
    return o->kind == KT_ADAM ? "adam" : "sgd";
}

kiln_status kt_train(const kt_train_config *cfg, kt_train_result *res, kiln_errbuf *err)
{
    memset(res, 0, sizeof *res);
    kiln_dataset train = {0}, test = {0};
    kt_net net = {0};
    kt_ckpt ck = {0};
    kt_meta meta = {0};
    kiln_loader *ld = NULL;
    kt_eval_result ev = {0};
    char *arch_yaml = NULL;
    feature_cache fc_train = {0}, fc_test = {0};
    int64_t *order = NULL;
    int32_t *ybuf = NULL;
    int have_test = 0, start_epoch = 0, cached = 0, pooled = 0;
    int64_t step = 0;
    uint64_t seed = cfg->seed;
    float mean[4], std[4];
    kiln_status st;
    if (cfg->epochs <= 0 || cfg->batch <= 0)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "epochs and batch must be positive");
    /* Threads split conv and dense layers by samples on kiln's pool
     * (kt_net_set_threads); OpenBLAS runs on one thread inside each part. */
    const int threads = cfg->threads > 0 ? cfg->threads : 1;
    kiln_blas_set_threads(1);

    kiln_dataset_limits lim = {0};
    st = kiln__dataset_open(cfg->data, "train", cfg->folder_size, &lim, &train, err);
    if (st != KILN_OK) goto done;
    kiln_errbuf terr;
    if (kiln__dataset_open(cfg->data, "test", cfg->folder_size, &lim, &test, &terr) == KILN_OK)
        have_test = 1;

    if (cfg->resume) {
        st = kt_ckpt_load(cfg->resume, &ck, err);
        if (st != KILN_OK) goto done;
        st = kt_ckpt_to_net(&ck, cfg->resume, cfg->batch, &cfg->opt, 1, &net, err);
        if (st != KILN_OK) goto done;
        const char *e = kt_meta_get(&ck.meta, "epoch"), *s = kt_meta_get(&ck.meta, "step");
        const char *m = kt_meta_get(&ck.meta, "mean"), *d = kt_meta_get(&ck.meta, "std");
        if (!e || !s || !m || !d || kt_parse_floats(m, mean, 4) != net.arch.channels ||
            kt_parse_floats(d, std, 4) != net.arch.channels) {
            st = kiln__fail(err, KILN_ERR_FORMAT, "%s: not a checkpoint (no epoch/step/mean/std)",
                            cfg->resume);
            goto done;
        }
        start_epoch = atoi(e);
        step = atoll(s);
        /* the order and augmentation continue the checkpoint's seed */
        const char *sd = kt_meta_get(&ck.meta, "seed");
        if (sd) seed = strtoull(sd, NULL, 10);
        for (int i = 0; i < ck.meta.n; i++) kt_meta_set(&meta, ck.meta.key[i], ck.meta.val[i]);
    } else {
        uint8_t *y;
        size_t ylen;
        st = kiln__read_file(cfg->arch_path, 1 << 20, &y, &ylen, err);
        if (st != KILN_OK) goto done;
        kt_arch arch;
        st = kt_arch_parse((const char *)y, ylen, cfg->arch_path, &arch, err);
        free(y);
        if (st != KILN_OK) goto done;
        /* global average pooling makes a net take any input size: build it
         * for the data's (a 224x224 ResNet on 64x64 images) */
        int has_gap = 0;
        for (int i = 0; i < arch.nlayers; i++) has_gap |= arch.layers[i].kind == KT_GAP;
        if (has_gap && train.channels == arch.channels)
            arch.height = train.height, arch.width = train.width;
        int frozen = 0;
        if (cfg->freeze && !(frozen = kt_arch_backbone_layers(&arch))) {
            st = kiln__fail(err, KILN_ERR_INVALID_ARG,
                            "--freeze backbone: %s has no dense head after a backbone",
                            cfg->arch_path);
            goto done;
        }
        st = kt_net_build_frozen(&net, &arch, cfg->batch, &cfg->opt, cfg->seed, frozen, err);
        if (st != KILN_OK) goto done;
        int have_stats = 0;
        if (cfg->init) {
            int copied = 0;
            st = load_init(&net, cfg->init, mean, std, &have_stats, &copied, err);
            if (st != KILN_OK) goto done;
            if (cfg->progress)
                fprintf(cfg->progress, "init: %d layers from %s%s\n", copied, cfg->init,
                        have_stats ? " (with its mean/std)" : "");
            kt_meta_set(&meta, "init", cfg->init);
        }
        if (frozen) {
            char buf[32];
            snprintf(buf, sizeof buf, "%d", frozen);
            kt_meta_set(&meta, "frozen_layers", buf);
        }
        if (!have_stats) {
            st = channel_stats(&train, train.kind == KILN_DATASET_MEMORY ? train.count : 500, mean,
                               std, err);
            if (st != KILN_OK) goto done;
        }
    }
    if (train.channels != net.arch.channels || train.height != net.arch.height ||
        train.width != net.arch.width) {
        st = kiln__fail(err, KILN_ERR_SHAPE,
                        "%s: samples are %dx%dx%d, the architecture takes %dx%dx%d", cfg->data,
                        train.channels, train.height, train.width, net.arch.channels,
                        net.arch.height, net.arch.width);
        goto done;
    }
    if (train.num_classes > net.num_classes) {
        st = kiln__fail(err, KILN_ERR_SHAPE, "%s: %d classes, the architecture's last layer has %d",
                        cfg->data, train.num_classes, net.num_classes);
        goto done;
    }
    arch_yaml = kt_arch_to_yaml(&net.arch);
    if (!arch_yaml) {
        st = kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    {
        /* Metadata that describes the model. */
        char buf[64];
        kt_meta_set(&meta, "arch", arch_yaml);
        kt_meta_set(&meta, "name", net.arch.name);
        kt_meta_set(&meta, "dataset", cfg->data);
        kt_meta_set(&meta, "input_layout", "NCHW");
        set_meta_floats(&meta, "mean", mean, net.arch.channels);
        set_meta_floats(&meta, "std", std, net.arch.channels);
        kt_meta_set(&meta, "optimizer", optim_name(&cfg->opt));
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
        kt_meta_set(&meta, "seed", buf);
        size_t cap = 64;
        for (int c = 0; c < train.num_classes; c++) {
            char nb[16];
            cap += strlen(kiln__dataset_class_name(&train, c, nb, sizeof nb)) + 1;
        }
        char *labels = malloc(cap);
        if (labels) {
            size_t k = 0;
            for (int c = 0; c < train.num_classes; c++) {
                char nb[16];
                k += (size_t)snprintf(labels + k, cap - k, "%s\n",
                                      kiln__dataset_class_name(&train, c, nb, sizeof nb));
            }
            kt_meta_set(&meta, "labels", labels);
            free(labels);
        }
    }

    kiln_loader_config lc;
    kiln__loader_config_defaults(&lc, &train);
    lc.batch = cfg->batch;
    lc.shuffle = 1;
    lc.seed = seed;
    lc.pad_crop = cfg->pad_crop;
    lc.hflip = cfg->hflip;
    lc.max_count = cfg->max_train;
    memcpy(lc.mean, mean, sizeof mean);
    memcpy(lc.std, std, sizeof std);
    st = kiln__loader_create(&lc, &ld, err);
    if (st != KILN_OK) goto done;
    const int64_t nb = kiln__loader_batches(ld);
    const int64_t total_steps = nb * cfg->epochs;
    const int64_t n_used =
        cfg->max_train > 0 && cfg->max_train < train.count ? cfg->max_train : train.count;
    char ckpt_path[4200];
    snprintf(ckpt_path, sizeof ckpt_path, "%s.ckpt", cfg->out);
    st = kt_net_set_threads(&net, threads, err);
    if (st != KILN_OK) goto done;
    /* A step is a run of kernels back to back: keep the pool spinning. */
    if (threads > 1) {
        kiln_pool_enter();
        pooled = 1;
    }
    if (cfg->progress)
        fprintf(cfg->progress,
                "train: %s, %lld samples (%d classes), %s, %lld parameters, batch %d, %s lr %g, "
                "%d thread(s)\n",
                cfg->data, (long long)n_used, train.num_classes, net.arch.name,
                (long long)kt_net_trainable(&net), cfg->batch, optim_name(&cfg->opt),
                (double)cfg->opt.lr, cfg->threads);
    const double t_start = now_s();
    /* A frozen backbone without augmentation sees the same images every
     * epoch: run it once per image and train the head on its features. */
    if (net.frozen > 0 && !cfg->pad_crop && !cfg->hflip) {
        const int64_t dim = net.layers[net.frozen - 1].out_size;
        const int64_t n_test = !have_test                                        ? 0
                               : cfg->max_test > 0 && cfg->max_test < test.count ? cfg->max_test
                                                                                 : test.count;
        if ((n_used + n_test) * (dim * 4 + 4) <= cfg->feature_cache_bytes) {
            double tf = now_s();
            st = feature_cache_fill(&net, &train, mean, std, n_used, &fc_train, err);
            if (st == KILN_OK && have_test)
                st = feature_cache_fill(&net, &test, mean, std, cfg->max_test, &fc_test, err);
            if (st != KILN_OK) goto done;
            order = malloc((size_t)fc_train.count * sizeof *order);
            ybuf = malloc((size_t)cfg->batch * sizeof *ybuf);
            if (!order || !ybuf) {
                st = kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
                goto done;
            }
            cached = 1;
            if (cfg->progress)
                fprintf(cfg->progress,
                        "features: %lld images through the frozen backbone once (%lld floats "
                        "each), %.1f s\n",
                        (long long)(fc_train.count + fc_test.count), (long long)dim, now_s() - tf);
        } else if (cfg->progress) {
            fprintf(cfg->progress,
                    "features: not cached (%lld bytes > --feature-cache %lld); the backbone "
                    "runs on every batch\n",
                    (long long)((n_used + n_test) * (dim * 4 + 4)),
                    (long long)cfg->feature_cache_bytes);
        }
    }
    int64_t samples_done = 0;
    for (int epoch = start_epoch; epoch < cfg->epochs; epoch++) {
        if (cached)
            shuffle_order(order, fc_train.count, seed, epoch);
        else
            kiln__loader_start(ld, epoch, err);
        double loss_sum = 0, t0 = now_s(), last_print = 0;
        int64_t seen = 0, right = 0, off = 0;
        kiln_batch b = {0};
        int got;
        for (;;) {
            if (cached) {
                if (off >= fc_train.count) {
                    got = 0;
                    break;
                }
                b.n = (int)(fc_train.count - off < cfg->batch ? fc_train.count - off : cfg->batch);
                b.number = off / cfg->batch;
                b.y = ybuf;
                feature_batch(&net, &fc_train, order, off, b.n, ybuf);
                off += b.n;
                kt_net_forward_from(&net, net.frozen, b.n, 1);
            } else {
                if ((got = kiln__loader_next(ld, &b, err)) <= 0) break;
                kt_net_forward(&net, b.x, b.n, 1);
            }
            int correct;
            double loss = kt_net_backward(&net, b.x, b.y, b.n, &correct);
            if (!isfinite(loss)) {
                st = kiln__fail(err, KILN_ERR_RANGE,
                                "epoch %d batch %lld: loss is not finite (lower --lr)", epoch + 1,
                                (long long)b.number + 1);
                goto done;
            }
            float lr = kt_lr_at(&cfg->opt, step, total_steps, epoch);
            step++;
            kt_net_step(&net, lr, step);
            loss_sum += loss * b.n;
            seen += b.n;
            right += correct;
            samples_done += b.n;
            double t = now_s();
            int last = b.number + 1 == nb;
            double rate = seen / (t - t0 + 1e-9);
            double remaining = (double)(n_used - seen) / (rate + 1e-9) +
                               (double)(cfg->epochs - epoch - 1) * n_used / (rate + 1e-9);
            if (cfg->on_progress) {
                kt_progress p = {.epoch = epoch + 1,
                                 .epochs = cfg->epochs,
                                 .batch = b.number + 1,
                                 .batches = nb,
                                 .loss = loss_sum / seen,
                                 .acc = (double)right / seen,
                                 .samples_per_s = rate,
                                 .eta_s = remaining};
                cfg->on_progress(cfg->progress_ctx, &p);
            }
            if (cfg->progress && (last || t - last_print >= (cfg->tty ? 0.25 : 10.0))) {
                last_print = t;
                char eta[32];
                fmt_eta(remaining, eta, sizeof eta);
                fprintf(cfg->progress,
                        "%sepoch %d/%d  batch %lld/%lld  loss %.4f  acc %.2f%%  %.0f samples/s  "
                        "ETA %s%s",
                        cfg->tty ? "\r" : "", epoch + 1, cfg->epochs, (long long)b.number + 1,
                        (long long)nb, loss_sum / seen, 100.0 * right / seen, rate, eta,
                        cfg->tty ? (last ? "\n" : "\033[K") : "\n");
                fflush(cfg->progress);
            }
        }
        if (got < 0) {
            st = (kiln_status)-got;
            goto done;
        }
        res->train_loss = loss_sum / seen;
        res->train_acc = (double)right / seen;
        res->epochs_run++;
        char buf[32];
        snprintf(buf, sizeof buf, "%d", epoch + 1);
        kt_meta_set(&meta, "epoch", buf);
        snprintf(buf, sizeof buf, "%lld", (long long)step);
        kt_meta_set(&meta, "step", buf);
        set_meta_float(&meta, "metrics.train_loss", res->train_loss);
        set_meta_float(&meta, "metrics.train_accuracy", res->train_acc);
        if (have_test) {
            st = cached ? evaluate_cached(&net, &fc_test, ybuf, &ev, err)
                        : kt_evaluate(&net, &test, mean, std, cfg->max_test, &ev, err);
            if (st != KILN_OK) goto done;
            res->test_acc = (double)ev.correct / (double)ev.count;
            set_meta_float(&meta, "metrics.test_accuracy", res->test_acc);
            set_meta_float(&meta, "metrics.test_loss", ev.loss);
            if (cfg->on_progress) {
                kt_progress p = {.epoch = epoch + 1,
                                 .epochs = cfg->epochs,
                                 .batch = nb,
                                 .batches = nb,
                                 .loss = res->train_loss,
                                 .acc = res->train_acc,
                                 .test = 1,
                                 .test_loss = ev.loss,
                                 .test_acc = res->test_acc,
                                 .test_count = ev.count};
                cfg->on_progress(cfg->progress_ctx, &p);
            }
            if (cfg->progress)
                fprintf(cfg->progress, "epoch %d/%d  test: %lld samples  loss %.4f  acc %.2f%%\n",
                        epoch + 1, cfg->epochs, (long long)ev.count, ev.loss,
                        100.0 * res->test_acc);
            kt_eval_free(&ev);
        }
        st = kt_ckpt_save(ckpt_path, &net, &meta, 1, err);
        if (st != KILN_OK) goto done;
    }
    res->seconds = now_s() - t_start;
    res->samples_per_s = samples_done / (res->seconds + 1e-9);
    st = kt_export_kiln(cfg->out, &net, &meta, err);
    if (st == KILN_OK && cfg->progress)
        fprintf(cfg->progress, "wrote %s (checkpoint %s)\n", cfg->out, ckpt_path);
done:
    if (pooled) kiln_pool_leave();
    feature_cache_free(&fc_train);
    feature_cache_free(&fc_test);
    free(order);
    free(ybuf);
    kiln__loader_destroy(ld);
    kt_eval_free(&ev);
    kt_net_free(&net);
    kt_ckpt_free(&ck);
    kt_meta_free(&meta);
    free(arch_yaml);
    kiln__dataset_free(&train);
    kiln__dataset_free(&test);
    return st;
}
