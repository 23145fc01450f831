/*
 * The training loop behind `kiln train` and the evaluation behind
 * `kiln eval`: data set -> batch loader -> net -> optimizer, with progress,
 * a checkpoint after every epoch, resume, and the final model file.
 */
#ifndef KILN_RUNTIME_TRAIN_TRAINER_H
#define KILN_RUNTIME_TRAIN_TRAINER_H

#include "ckpt.h"
#include "dataset.h"
#include "net.h"

#include <stdio.h>

/* One progress report: after every batch (test == 0) and after every
 * epoch's evaluation on the test set (test == 1). */
typedef struct kt_progress {
    int epoch, epochs;      /* 1-based */
    int64_t batch, batches; /* 1-based, within the epoch */
    double loss, acc;       /* running means over the epoch so far */
    double samples_per_s, eta_s;
    int test;
    double test_loss, test_acc;
    int64_t test_count;
} kt_progress;

typedef struct kt_train_config {
    const char *arch_path; /* YAML architecture (ignored when resuming) */
    const char *data;      /* data set name or directory (kiln__dataset_open) */
    const char *out;       /* the model file; the checkpoint is out + ".ckpt" */
    const char *resume;    /* a checkpoint to continue from, or NULL */
    int epochs, batch, threads;
    kt_optim opt;
    uint64_t seed;
    int pad_crop, hflip; /* augmentation */
    int64_t max_train;   /* > 0: train on the first max_train samples */
    int64_t max_test;    /* > 0: evaluate on the first max_test samples */
    int folder_size;     /* image folders: square input size */
    const char *init;    /* weights to start from (.kiln or .onnx), or NULL */
    int freeze;          /* freeze the backbone (the layers before the first dense) */
    /* With a frozen backbone and no augmentation, each image goes through
     * the backbone once and its features are kept for every epoch, when
     * the train and test features take at most this many bytes (else the
     * backbone runs on every batch). */
    int64_t feature_cache_bytes;
    FILE *progress; /* NULL = silent */
    int tty;        /* progress redraws one line when set */
    /* Called on the training thread, when not NULL (in addition to `progress`). */
    void (*on_progress)(void *ctx, const kt_progress *p);
    void *progress_ctx;
} kt_train_config;

void kt_train_defaults(kt_train_config *c);

typedef struct kt_eval_result {
    int num_classes;
    int64_t count, correct;
    double loss;
    int64_t *confusion; /* num_classes^2, [true][predicted] */
} kt_eval_result;

void kt_eval_free(kt_eval_result *r);

typedef struct kt_train_result {
    double train_loss, train_acc, test_acc, seconds, samples_per_s;
    int epochs_run;
} kt_train_result;

kiln_status kt_train(const kt_train_config *cfg, kt_train_result *res, kiln_errbuf *err);

/* Runs net (inference mode) over ds, normalising with mean/std. */
kiln_status kt_evaluate(kt_net *net, const kiln_dataset *ds, const float *mean, const float *std,
                        int64_t max_count, kt_eval_result *r, kiln_errbuf *err);

/* Parses "a,b,c" into up to 4 floats; returns the count, -1 on error. */
int kt_parse_floats(const char *s, float *out, int max);

#endif
