/*
 * .kiln model files and model metadata.
 *
 * Layout (all integers little-endian):
 *
 *   0   header, 64 bytes
 *         magic "KILNMODL", u16 major (1), u16 minor (0), u32 header size (64),
 *         u32 flags (bit 0: sections are zlib-compressed), u32 section count,
 *         u64 file size, u64 section table offset, u32 crc32 of the header
 *         with this field zeroed, u32 crc32 of the section table, 16
 *         reserved zero bytes
 *   64  section table, 40 bytes per section
 *         u32 type (1 meta, 2 graph, 3 weights), u32 flags (bit 0: zlib),
 *         u64 offset, u64 stored size, u64 expanded size, u32 crc32 of the
 *         stored bytes, u32 reserved
 *   ... the meta and graph sections
 *   ... the weights section, at a 4096-byte (page) offset in an uncompressed
 *       file; each tensor at a 64-byte aligned offset inside it
 *
 * Meta: u32 count, then count pairs of length-prefixed UTF-8 strings.
 * Graph: see graph_codec.c. Weights: float32 elements, conv and dense
 * weights in the kernels' packed layout (which begins with the elements).
 *
 * Opening an uncompressed file maps it read-only and MAP_SHARED, so every
 * process that opens the same file shares one copy of the weights in the
 * page cache; the graph's constants point into the mapping. A compressed
 * file is expanded into memory on open.
 */
#ifndef KILN_RUNTIME_MODEL_FILE_H
#define KILN_RUNTIME_MODEL_FILE_H

#include "graph.h"

#define KF_MAGIC       "KILNMODL"
#define KF_MAJOR       1
#define KF_MINOR       0
#define KF_HEADER_SIZE 64
#define KF_ENTRY_SIZE  40
#define KF_PAGE        4096

enum { KF_SEC_META = 1, KF_SEC_GRAPH = 2, KF_SEC_WEIGHTS = 3, KF_SEC_COUNT_ };

/* Key/value metadata. Conventional keys: name, version, description,
 * input_layout ("NCHW"), mean and std (comma-separated, one per channel),
 * labels (one per line), metrics.<name> (training metrics). */
typedef struct kg_meta {
    int n, cap;
    char **keys, **vals;
} kg_meta;

void kg_meta_free(kg_meta *m);
/* Sets (replaces) key to a copy of val. */
kiln_status kg_meta_set(kg_meta *m, const char *key, const char *val);
/* NULL when absent. */
const char *kg_meta_get(const kg_meta *m, const char *key);

/* The bytes a model lives in: a read-only mapping of the file, or heap
 * buffers holding expanded sections. Constants of a graph loaded from a
 * file point in here, so it must outlive the graph. */
typedef struct kf_image {
    void *map;
    size_t map_len;
    void *heap[KF_SEC_COUNT_];
} kf_image;

void kf_image_release(kf_image *img);

/* preload.c: copies of model files in huge-page memory. kf_preload reads
 * the file at path into one (a no-op when it is there already); the
 * copies together may not exceed max_total bytes (0: no limit).
 * kf_preloaded returns the copy of the file fstat gave sb for, or NULL. */
struct stat;
kiln_status kf_preload(const char *path, size_t max_total, char err[KG_ERRLEN]);
const void *kf_preloaded(const struct stat *sb);

enum {
    KF_WRITE_COMPRESS = 1u << 0, /* zlib every section */
};
enum {
    KF_LOAD_SKIP_WEIGHT_CRC = 1u << 0, /* trust the weights' bytes (header, table,
                                          meta and graph are always checked) */
};

/* Writes g (with constant data) and meta to `path` (via a temporary file and
 * rename, so readers never see half a file). */
kiln_status kf_write(const char *path, const kg_graph *g, const kg_meta *meta, unsigned flags,
                     char err[KG_ERRLEN]);

/* Opens and validates `path`; on success *g and *meta are filled and *img
 * holds the bytes the graph's constants point into. On failure nothing is
 * left allocated. */
kiln_status kf_load(const char *path, unsigned flags, kg_graph **g, kg_meta *meta, kf_image *img,
                    char err[KG_ERRLEN]);

/* The same over bytes already in memory (`base` must stay valid while the
 * graph lives; img receives expanded sections). Used by kf_load and tests. */
kiln_status kf_load_memory(const unsigned char *base, size_t size, unsigned flags, kg_graph **g,
                           kg_meta *meta, kf_image *img, char err[KG_ERRLEN]);

/* The graph and meta sections' codecs (graph_codec.c). Encoding appends
 * constant data to `weights` at 64-byte aligned offsets. Decoding validates
 * every count, index, dimension and offset; constants point into `weights`. */
struct kb_writer;
kiln_status kf_graph_encode(const kg_graph *g, struct kb_writer *graph, struct kb_writer *weights,
                            char err[KG_ERRLEN]);
kiln_status kf_graph_decode(const unsigned char *p, size_t len, const unsigned char *weights,
                            size_t weights_len, kg_graph **out, char err[KG_ERRLEN]);
void kf_meta_encode(const kg_meta *m, struct kb_writer *w);
kiln_status kf_meta_decode(const unsigned char *p, size_t len, kg_meta *m, char err[KG_ERRLEN]);

#endif
