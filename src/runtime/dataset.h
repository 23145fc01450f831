/*
 * Labelled image data sets for training and evaluation.
 *
 * Formats read:
 *   - IDX (MNIST, Fashion-MNIST): an images file (magic 0x00000803, u8
 *     samples, count x rows x cols, big-endian dimensions) and a labels file
 *     (magic 0x00000801, count), each plain or gzip'ed.
 *   - CIFAR-10 / CIFAR-100 binary batches: records of 1 label byte (CIFAR-10)
 *     or 2 (coarse, fine: CIFAR-100, the fine label is used) followed by
 *     3072 pixel bytes (32 x 32 red, then green, then blue planes).
 *   - An image folder: ROOT/<class>/<image>.{jpg,jpeg,png}, with an optional
 *     labels file naming one class per line (its order is the label order;
 *     without it the class folders sorted by name). Images are decoded when
 *     a sample is read and resized to the data set's size.
 *
 * Validation: headers, magic numbers, dimensions, record counts, file sizes
 * and label ranges are checked when a set is opened; a short, long or
 * corrupt file is KILN_ERR_FORMAT with a message naming the file. Limits
 * (bytes per file, samples) are in kiln_dataset_limits.
 *
 * Samples: kiln__dataset_read() gives channels x height x width floats in
 * [0, 1] (CHW); normalisation and augmentation happen in the batch loader.
 *
 * Thread safety: an open data set is read-only; several threads may read
 * samples at once.
 */
#ifndef KILN_RUNTIME_DATASET_H
#define KILN_RUNTIME_DATASET_H

#include "errbuf.h"
#include "image.h"
#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

#define KILN_DATASET_MAX_CLASSES 1000

typedef struct kiln_dataset_limits {
    int64_t max_file_bytes; /* per file, after inflating; <= 0: 1 GiB */
    int64_t max_samples;    /* <= 0: 10 million */
    int64_t max_pixels;     /* per decoded image (folders); <= 0: image.h default */
} kiln_dataset_limits;

typedef enum kiln_dataset_kind {
    KILN_DATASET_MEMORY = 0, /* u8 samples in memory (IDX, CIFAR) */
    KILN_DATASET_FOLDER,     /* image files decoded on read */
} kiln_dataset_kind;

/* An open data set. Invariants: count >= 0; labels[i] < num_classes;
 * MEMORY: pixels holds count * channels * height * width bytes;
 * FOLDER: paths holds count file names. */
typedef struct kiln_dataset {
    kiln_dataset_kind kind;
    int64_t count;
    int channels, height, width;
    int num_classes;
    int32_t *labels;
    uint8_t *pixels;    /* MEMORY */
    char **paths;       /* FOLDER */
    char **class_names; /* num_classes names, or NULL (then "0", "1", ...) */
    char name[64];      /* "fashion-mnist", "cifar10", ... for messages */
    int64_t max_pixels; /* FOLDER decode limit */
} kiln_dataset;

void kiln__dataset_free(kiln_dataset *ds);

/* Bytes of one sample (channels * height * width). */
static inline int64_t kiln__dataset_sample_size(const kiln_dataset *ds)
{
    return (int64_t)ds->channels * ds->height * ds->width;
}

/* Loads an IDX images file and its labels file (each plain or gzip'ed). */
kiln_status kiln__idx_load(const char *images_path, const char *labels_path,
                           const kiln_dataset_limits *lim, kiln_dataset *out, kiln_errbuf *err);

/* Parses IDX bytes already in memory. `what` names the file in messages.
 * For images ndim must be 3 (count, rows, cols); for labels 1. On success
 * *dims holds the dimensions and *payload points at the first sample. */
kiln_status kiln__idx_parse(const uint8_t *buf, size_t len, int ndim, uint32_t dims[3],
                            const uint8_t **payload, const char *what, kiln_errbuf *err);

/* Loads CIFAR binary batches (n files, concatenated in order). `fine` = 0
 * for CIFAR-10 (3073-byte records), 1 for CIFAR-100 (3074-byte records). */
kiln_status kiln__cifar_load(const char *const *paths, int n, int cifar100,
                             const kiln_dataset_limits *lim, kiln_dataset *out, kiln_errbuf *err);

/* Scans an image folder. labels_path may be NULL (sorted folder names).
 * Every sample is decoded to `channels` and resized to height x width. */
kiln_status kiln__folder_load(const char *root, const char *labels_path, int channels, int height,
                              int width, const kiln_dataset_limits *lim, kiln_dataset *out,
                              kiln_errbuf *err);

/*
 * Opens a data set by name or directory, `split` "train" or "test":
 *   fashion-mnist      $KILN_FASHION_MNIST_DIR or /usr/share/datasets/fashion-mnist
 *                      (Debian's dataset-fashion-mnist)
 *   mnist              $KILN_DATA_DIR/mnist, else ./datasets/mnist, else the source tree's
 *                      datasets/mnist (made by datasets/prepare-mnist)
 *   DIR                a directory holding one of:
 *                        {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]  IDX
 *                        data_batch_{1..5}.bin, test_batch.bin              CIFAR-10
 *                        train.bin, test.bin                                CIFAR-100
 *                        train/, test/ (class folders), labels.txt          image folder
 *                      (cifar-10-batches-bin/ or cifar-100-binary/ inside DIR also work)
 * A folder set is read at `folder_size` (channels 3, folder_size square).
 */
kiln_status kiln__dataset_open(const char *spec, const char *split, int folder_size,
                               const kiln_dataset_limits *lim, kiln_dataset *out, kiln_errbuf *err);

/* Sample i as CHW floats in [0, 1] (writes sample_size floats to out). */
kiln_status kiln__dataset_read(const kiln_dataset *ds, int64_t i, float *out, kiln_errbuf *err);

/* Class name (never NULL); buf holds the number when there are no names. */
const char *kiln__dataset_class_name(const kiln_dataset *ds, int c, char *buf, size_t size);

#endif
