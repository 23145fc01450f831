/*
 * Batches for training and evaluation: shuffling, augmentation (random crop
 * with zero padding, horizontal flip), per-channel normalisation, and a
 * loader thread that prepares the next batch while the caller works on the
 * current one.
 *
 * Reproducibility: the epoch's order and every sample's augmentation are
 * functions of (seed, epoch, position) only, so the batches are the same
 * bit for bit whether the loader runs on its own thread or inline.
 *
 * Memory: the two batch buffers are allocated by kiln__loader_create(); no
 * allocation happens per batch (folder data sets decode images, which
 * allocates inside the decoder).
 */
#ifndef KILN_RUNTIME_LOADER_H
#define KILN_RUNTIME_LOADER_H

#include "dataset.h"

typedef struct kiln_loader_config {
    const kiln_dataset *ds;
    int batch;         /* samples per batch, > 0 */
    int shuffle;       /* a new seeded order each epoch */
    uint64_t seed;     /* for the order and the augmentation */
    int pad_crop;      /* > 0: pad by this many pixels, take a random crop */
    int hflip;         /* flip horizontally with probability 1/2 */
    float mean[4];     /* per channel; normalised = (x - mean) / std */
    float std[4];      /* per channel, > 0 */
    int drop_last;     /* skip a last, partial batch */
    int threaded;      /* prepare batches on a loader thread */
    int64_t max_count; /* > 0: use only the first max_count samples */
} kiln_loader_config;

/* Sets batch 64, no shuffling or augmentation, mean 0, std 1, threaded. */
void kiln__loader_config_defaults(kiln_loader_config *cfg, const kiln_dataset *ds);

typedef struct kiln_batch {
    float *x;       /* n x channels x height x width, normalised */
    int32_t *y;     /* n labels */
    int64_t *index; /* n data set indices */
    int n;          /* samples in this batch (<= the configured batch) */
    int64_t number; /* batch number in the epoch, from 0 */
} kiln_batch;

typedef struct kiln_loader kiln_loader;

kiln_status kiln__loader_create(const kiln_loader_config *cfg, kiln_loader **out, kiln_errbuf *err);
void kiln__loader_destroy(kiln_loader *l);

/* Batches per epoch. */
int64_t kiln__loader_batches(const kiln_loader *l);

/* Starts epoch `epoch` (from 0): computes its order and begins preparing
 * the first batch. An unfinished previous epoch is abandoned. */
kiln_status kiln__loader_start(kiln_loader *l, int epoch, kiln_errbuf *err);

/*
 * The next batch of the epoch in *b (valid until the next call), 1 when
 * there is one, 0 at the end of the epoch, or a negative kiln_status
 * (negated) when reading a sample failed (err says which).
 */
int kiln__loader_next(kiln_loader *l, kiln_batch *b, kiln_errbuf *err);

/* The augmentation of one sample, exposed for tests: crops a padded copy of
 * src (c x h x w) at offsets (dy, dx) in [0, 2*pad] and flips it when
 * `flip`, writing c x h x w floats to dst. */
void kiln__augment_sample(const float *src, float *dst, int c, int h, int w, int pad, int dy,
                          int dx, int flip);

/* A 64-bit mix (splitmix64) used for seeded randomness. */
uint64_t kiln__mix64(uint64_t x);

#endif
