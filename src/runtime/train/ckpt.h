/*
 * Trained-model and checkpoint files written by `kiln train`.
 *
 * Layout (little-endian):
 *   "KILNTRN1"                   8-byte magic
 *   u32 version (1), u32 meta count
 *   meta count x (u32 key length, key, u32 value length, value)
 *   u64 parameter count, that many float32 (weights, biases, BN running stats,
 *       in layer order as kt_net lays them out)
 *   u64 optimizer state count, that many float32 (0 in a final model; with
 *       frozen layers only the trainable tail's, which follows the frozen
 *       parameters)
 *   u32 crc32 of every byte before it
 *
 * Meta keys: arch (the architecture YAML), mean and std (comma-separated,
 * per channel), labels (one per line), epoch, step, dataset, optimizer,
 * metrics.* (final metrics), frozen_layers (the count of frozen leading
 * layers, rebuilt that way on resume), init (the --init file). Files are
 * written to a temporary name and renamed, so a reader never sees half a
 * file.
 */
#ifndef KILN_RUNTIME_TRAIN_CKPT_H
#define KILN_RUNTIME_TRAIN_CKPT_H

#include "errbuf.h"
#include "net.h"

#define KT_CKPT_MAGIC     "KILNTRN1"
#define KT_CKPT_MAX_META  256
#define KT_CKPT_MAX_BYTES ((int64_t)2 << 30)

typedef struct kt_meta {
    int n;
    char *key[KT_CKPT_MAX_META];
    char *val[KT_CKPT_MAX_META];
} kt_meta;

void kt_meta_free(kt_meta *m);
/* Sets (or replaces) key to a copy of val. */
kiln_status kt_meta_set(kt_meta *m, const char *key, const char *val);
const char *kt_meta_get(const kt_meta *m, const char *key);

typedef struct kt_ckpt {
    kt_meta meta;
    float *params;
    int64_t nparams;
    float *state;
    int64_t nstate;
} kt_ckpt;

void kt_ckpt_free(kt_ckpt *c);

/* Writes net's parameters (and optimizer state when with_state) and meta. */
kiln_status kt_ckpt_save(const char *path, const kt_net *net, const kt_meta *meta, int with_state,
                         kiln_errbuf *err);

/* Reads and validates a file (magic, version, sizes, crc). */
kiln_status kt_ckpt_load(const char *path, kt_ckpt *out, kiln_errbuf *err);

/* Parses the arch stored in a checkpoint, builds a net for `batch` and
 * loads its parameters (and the optimizer state when present and
 * `with_state`). */
kiln_status kt_ckpt_to_net(const kt_ckpt *c, const char *path, int batch, const kt_optim *opt,
                           int with_state, kt_net *net, kiln_errbuf *err);

#endif
