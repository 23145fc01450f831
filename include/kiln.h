/*
 * kiln.h - the public C API of libkiln, an edge inference engine.
 *
 * Conventions
 *   - Every fallible call returns kiln_status; KILN_OK is 0. kiln_strerror()
 *     names a status. Detail for the last failure of a call on an object is
 *     kept on that object where the API says so.
 *   - Public names start with kiln_ / KILN_. Nothing else is exported.
 *   - Sizes and element counts are int64_t and checked for overflow; a shape
 *     whose byte size does not fit is KILN_ERR_RANGE, never a wrap-around.
 *   - Storage that kiln allocates is aligned to KILN_ALIGN (64) bytes, one
 *     cache line and one AVX-512 register.
 *
 * Thread safety: the functions here keep no hidden global state except the
 * process-wide CPU/ISA/BLAS configuration made once by kiln_init(); a tensor
 * or arena must not be changed by two threads at once.
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KILN_BUILDING) && defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* ---- version ---------------------------------------------------------- */

#define KILN_VERSION_MAJOR  0
#define KILN_VERSION_MINOR  1
#define KILN_VERSION_PATCH  0
#define KILN_VERSION_STRING "0.1.0"
/* One integer that grows with every release: 0x00MMmmpp. */
#define KILN_VERSION_HEX \
    ((KILN_VERSION_MAJOR << 16) | (KILN_VERSION_MINOR << 8) | KILN_VERSION_PATCH)

/* The version of the library actually linked (may differ from the header). */
KILN_API const char *kiln_version(void);
KILN_API unsigned kiln_version_hex(void);

/* ---- status ----------------------------------------------------------- */

/* X(name, message): the one list of statuses; the enum and kiln_strerror()
 * are both generated from it so they cannot drift apart. */
#define KILN_STATUS_MAP(X)                           \
    X(OK, "success")                                 \
    X(ERR_INVALID_ARG, "invalid argument")           \
    X(ERR_NO_MEMORY, "out of memory")                \
    X(ERR_RANGE, "value out of range")               \
    X(ERR_SHAPE, "shape mismatch")                   \
    X(ERR_DTYPE, "unsupported data type")            \
    X(ERR_UNSUPPORTED, "unsupported operation")      \
    X(ERR_IO, "input/output error")                  \
    X(ERR_FORMAT, "malformed or corrupt data")       \
    X(ERR_NOT_FOUND, "not found")                    \
    X(ERR_EXISTS, "already exists")                  \
    X(ERR_STATE, "invalid state for this operation") \
    X(ERR_LIMIT, "configured limit exceeded")        \
    X(ERR_CPU, "CPU lacks a required feature")       \
    X(ERR_INTERNAL, "internal error")

typedef enum kiln_status {
#define KILN_STATUS_ENUM_(name, msg) KILN_##name,
    KILN_STATUS_MAP(KILN_STATUS_ENUM_)
#undef KILN_STATUS_ENUM_
        KILN_STATUS_COUNT_
} kiln_status;

/* A static, human-readable message for a status ("unknown status" for a
 * value outside the enum). Never NULL. */
KILN_API const char *kiln_strerror(kiln_status status);
/* The enum name without prefix, e.g. "ERR_SHAPE". Never NULL. */
KILN_API const char *kiln_status_name(kiln_status status);

/* ---- process-wide initialisation -------------------------------------- */

/* Detects the CPU, chooses the kernel ISA (honouring KILN_ISA=ref|avx2|
 * avx512|neon) and configures OpenBLAS. Idempotent and thread-safe; every
 * other entry point that needs it calls it. Returns KILN_ERR_CPU when
 * KILN_ISA names an ISA this CPU or build lacks, KILN_ERR_INVALID_ARG when
 * it names no ISA at all. */
KILN_API kiln_status kiln_init(void);

typedef enum kiln_isa {
    KILN_ISA_REF = 0, /* portable scalar C: the oracle */
    KILN_ISA_AVX2,    /* x86-64 AVX2 + FMA */
    KILN_ISA_AVX512,  /* x86-64 AVX-512 F/BW/VL/DQ */
    KILN_ISA_NEON,    /* aarch64 Advanced SIMD */
    KILN_ISA_COUNT_
} kiln_isa;

/* The ISA the kernels use (valid after kiln_init()). */
KILN_API kiln_isa kiln_isa_active(void);
KILN_API const char *kiln_isa_name(kiln_isa isa);
/* Parses "ref", "avx2", "avx512", "neon". */
KILN_API kiln_status kiln_isa_parse(const char *name, kiln_isa *out);
/* Whether this build and this CPU can run `isa`. */
KILN_API int kiln_isa_supported(kiln_isa isa);

/* CPU features, as bits of kiln_cpu_features(). */
enum {
    KILN_CPU_AVX2 = 1u << 0,
    KILN_CPU_FMA = 1u << 1,
    KILN_CPU_AVX512F = 1u << 2,
    KILN_CPU_AVX512BW = 1u << 3,
    KILN_CPU_AVX512VL = 1u << 4,
    KILN_CPU_AVX512DQ = 1u << 5,
    KILN_CPU_AVX512VNNI = 1u << 6,
    KILN_CPU_AVX512BF16 = 1u << 7,
    KILN_CPU_NEON = 1u << 8,
    KILN_CPU_DOTPROD = 1u << 9,
    KILN_CPU_FP16 = 1u << 10,
    KILN_CPU_F16C = 1u << 11,
};

KILN_API uint32_t kiln_cpu_features(void);
/* Name of feature bit `bit` (one of KILN_CPU_*), e.g. "avx512f". */
KILN_API const char *kiln_cpu_feature_name(uint32_t bit);
/* The CPU's model string ("AMD EPYC 9R14 96-Core Processor"). */
KILN_API const char *kiln_cpu_model(void);
/* "x86_64", "aarch64" or "unknown". */
KILN_API const char *kiln_cpu_arch(void);
/* Online logical CPUs. */
KILN_API int kiln_cpu_count(void);

/* ---- tensors ---------------------------------------------------------- */

#define KILN_MAX_DIMS 8
#define KILN_ALIGN    64

typedef enum kiln_dtype {
    KILN_F32 = 0,
} kiln_dtype;

enum {
    KILN_TENSOR_OWNS_DATA = 1u << 0, /* kiln_tensor_free() releases data */
};

/*
 * A tensor is a descriptor: element type, shape, strides and a pointer to
 * its first element. Strides are in elements, not bytes, and may be any
 * non-negative values (views of a transposed or sliced tensor). A tensor
 * made by kiln_tensor_alloc() owns its storage; a view never does and must
 * not outlive the tensor it looks into.
 *
 * Invariants: 0 <= ndim <= KILN_MAX_DIMS; shape[i] >= 0; entries past ndim
 * are 0; a 0-d tensor has one element.
 */
typedef struct kiln_tensor {
    float *data;
    kiln_dtype dtype;
    int ndim;
    int64_t shape[KILN_MAX_DIMS];
    int64_t strides[KILN_MAX_DIMS];
    unsigned flags;
} kiln_tensor;

/* Fills `t` with a contiguous (row-major) descriptor and data = NULL. */
KILN_API kiln_status kiln_tensor_init(kiln_tensor *t, kiln_dtype dtype, int ndim,
                                      const int64_t *shape);
/* Allocates zeroed, KILN_ALIGN-aligned storage for a contiguous tensor. */
KILN_API kiln_status kiln_tensor_alloc(kiln_tensor *t, kiln_dtype dtype, int ndim,
                                       const int64_t *shape);
/* Releases owned storage (no-op for views) and clears the descriptor. */
KILN_API void kiln_tensor_free(kiln_tensor *t);

/* Element count; KILN_ERR_RANGE if it overflows. */
KILN_API kiln_status kiln_tensor_numel(const kiln_tensor *t, int64_t *out);
/* Bytes the elements occupy when contiguous. */
KILN_API kiln_status kiln_tensor_nbytes(const kiln_tensor *t, int64_t *out);
KILN_API size_t kiln_dtype_size(kiln_dtype dtype);
/* 1 when strides are row-major for the shape (dims of size 1 ignored). */
KILN_API int kiln_tensor_is_contiguous(const kiln_tensor *t);
/* Pointer to element at `index` (ndim entries); NULL if out of bounds. */
KILN_API float *kiln_tensor_at(const kiln_tensor *t, const int64_t *index);

/* Views: share the source's storage, never own it. `view` may be `src`. */
/* Elements start..stop-1 (step > 0) along `dim`; bounds are clamped like
 * Python slices for non-negative values, and must satisfy 0<=start<=stop. */
KILN_API kiln_status kiln_tensor_slice(const kiln_tensor *src, int dim, int64_t start, int64_t stop,
                                       int64_t step, kiln_tensor *view);
/* Same elements in a new shape; requires a contiguous source. One entry of
 * shape may be -1 and is inferred. */
KILN_API kiln_status kiln_tensor_reshape(const kiln_tensor *src, int ndim, const int64_t *shape,
                                         kiln_tensor *view);
/* Dimensions reordered: view dim i is src dim perm[i]. */
KILN_API kiln_status kiln_tensor_permute(const kiln_tensor *src, const int *perm,
                                         kiln_tensor *view);
/* Copies elements of `src` into `dst` (same shape, any strides). */
KILN_API kiln_status kiln_tensor_copy(kiln_tensor *dst, const kiln_tensor *src);

/* ---- arena ------------------------------------------------------------ */

/*
 * An arena is one aligned block handed out by bumping an offset. A compiled
 * model plans every intermediate tensor to an offset inside one arena, so a
 * run allocates nothing. Allocations are released all at once with
 * kiln_arena_reset() (to zero or to a mark).
 */
typedef struct kiln_arena kiln_arena;

/* An arena that owns `capacity` bytes of KILN_ALIGN-aligned memory. */
KILN_API kiln_status kiln_arena_create(size_t capacity, kiln_arena **out);
/* An arena over caller-owned memory; `buffer` must stay valid and is not
 * freed by kiln_arena_destroy(). `buffer` must be KILN_ALIGN-aligned. */
KILN_API kiln_status kiln_arena_wrap(void *buffer, size_t capacity, kiln_arena **out);
KILN_API void kiln_arena_destroy(kiln_arena *arena);

/* `size` bytes aligned to `align` (a power of two, at least 1; 0 means
 * KILN_ALIGN). NULL when the arena is full or arguments are invalid. */
KILN_API void *kiln_arena_alloc(kiln_arena *arena, size_t size, size_t align);
/* A tensor whose storage comes from the arena. */
KILN_API kiln_status kiln_arena_tensor(kiln_arena *arena, kiln_tensor *t, kiln_dtype dtype,
                                       int ndim, const int64_t *shape);
/* Pointer `offset` bytes into the arena (for planned layouts); NULL when
 * offset + size is past the capacity. */
KILN_API void *kiln_arena_at(kiln_arena *arena, size_t offset, size_t size);

KILN_API size_t kiln_arena_mark(const kiln_arena *arena);
/* Releases everything allocated after `mark` (0 = everything). */
KILN_API void kiln_arena_reset(kiln_arena *arena, size_t mark);
KILN_API size_t kiln_arena_used(const kiln_arena *arena);
KILN_API size_t kiln_arena_capacity(const kiln_arena *arena);
/* The largest `used` seen since creation. */
KILN_API size_t kiln_arena_peak(const kiln_arena *arena);

/* ---- kiln's thread pool ------------------------------------------------ */

/*
 * Kernels called with threads > 1 split their work over kiln's pool. While
 * a caller is between kiln_pool_enter() and kiln_pool_leave() (calls nest
 * and may come from any thread), the pool's workers spin for the next job
 * for a short while (KILN_POOL_SPIN_US, default 1000) instead of sleeping
 * after each one, which saves a futex wake per kernel call. Bracket a
 * sequence of kernel calls with them; kiln_session_run does so itself
 * when it runs on more than one thread. Outside, idle workers spin on for
 * KILN_POOL_LINGER_US (default 1000; for the next run of a caller that
 * runs back to back), then sleep.
 */
KILN_API void kiln_pool_enter(void);
KILN_API void kiln_pool_leave(void);

/* ---- OpenBLAS --------------------------------------------------------- */

typedef struct kiln_blas_info {
    const char *version; /* "0.3.21" or "unknown" */
    const char *config;  /* openblas_get_config() */
    const char *core;    /* the kernel core type OpenBLAS chose, e.g. "Haswell" */
    int threads;         /* threads OpenBLAS will use */
} kiln_blas_info;

KILN_API void kiln_blas_get_info(kiln_blas_info *info);
/* Thread count for OpenBLAS calls made by this process (>= 1). */
KILN_API void kiln_blas_set_threads(int threads);
/* The OPENBLAS_CORETYPE kiln prefers on this CPU over OpenBLAS's own pick
 * (e.g. "SkylakeX" on AMD Zen 5, or on a CPU too new for OpenBLAS's table,
 * where it falls back to pre-AVX2 kernels), or NULL to keep OpenBLAS's. */
KILN_API const char *kiln_blas_preferred_coretype(void);
/* OpenBLAS reads OPENBLAS_CORETYPE once, when it is loaded: when it is
 * unset and kiln prefers another core type, sets it and re-executes
 * /proc/self/exe with `argv` (main's). Returns 0 when nothing needed
 * doing, -1 when the exec failed (the process carries on as it was). */
KILN_API int kiln_blas_select_coretype(char **argv);

/* ---- models and sessions ---------------------------------------------- */

/*
 * A kiln_model is a network: its graph, its weights and its metadata. It
 * comes from a .kiln file (kiln_model_open: the file is mapped read-only
 * and shared, so N processes opening one file share one copy of the
 * weights in the page cache), an ONNX file, or a YAML architecture. Opening
 * also optimizes it once (batch-norm folding into conv, fusion of bias,
 * residual add and activation into conv epilogues, weight prepacking).
 *
 * A kiln_session is one execution context for a model at a fixed batch
 * size and thread count: creating it infers every shape and plans all
 * intermediate tensors into one arena with liveness-based reuse; running
 * it allocates nothing, does no I/O and takes no locks.
 *
 * Thread-safety contract:
 *   - A model is immutable once created (kiln_model_set_meta is the only
 *     mutator and must not race with any other use). Any number of threads
 *     may create and run sessions of one model concurrently.
 *   - A session is used by one thread at a time. Give each thread its own.
 *   - The model must outlive its sessions.
 *
 * Errors: a failing call returns a status, and kiln_last_error() gives the
 * detail ("layer3.1.conv2: expects 128 input channels, got 64") for the
 * last failure on the calling thread.
 */
typedef struct kiln_model kiln_model;
typedef struct kiln_session kiln_session;

/* Detail of the last failed kiln_model_* / kiln_session_* call on this
 * thread ("" when none). Valid until the next failing call on the thread. */
KILN_API const char *kiln_last_error(void);

enum {
    /* Skip the crc32 of the weights section (header, table, meta and graph
     * are always checked): opening a large model costs only the mapping. */
    KILN_OPEN_TRUST_WEIGHTS = 1u << 0,
};

KILN_API kiln_status kiln_model_open(const char *path, unsigned flags, kiln_model **out);
/*
 * Reads the .kiln file at path into anonymous memory backed by huge pages
 * and keeps it for the life of the process; a later kiln_model_open of the
 * same, unchanged file (device, inode, size, mtime), in this process or in
 * a child forked after the call, uses that copy instead of mapping the
 * file. A fresh process's first run then costs what a warm one does: it
 * no longer takes a page fault per 4 KiB of weights (ResNet50: ~25,000).
 * Meant for a process that forks workers (kiln serve's zygote): the
 * children share the one copy. All preloaded copies together may not pass
 * max_total_bytes (0: no limit; KILN_ERR_LIMIT). Preloading a file twice
 * is a no-op. The copy costs the file's size in memory until exit.
 */
KILN_API kiln_status kiln_model_preload(const char *path, size_t max_total_bytes);
/* An ONNX model (opsets 9-17; see README for the operators). */
KILN_API kiln_status kiln_model_import_onnx(const char *path, kiln_model **out);
/* A YAML architecture from models/, weights initialised from `seed`
 * (He for conv/dense followed by ReLU, Glorot otherwise). */
KILN_API kiln_status kiln_model_from_yaml(const char *path, uint64_t seed, kiln_model **out);

enum {
    KILN_SAVE_COMPRESS = 1u << 0, /* zlib every section: for transport */
};
/* Writes the optimized model (weights prepacked) to `path` atomically. */
KILN_API kiln_status kiln_model_save(const kiln_model *m, const char *path, unsigned flags);
KILN_API void kiln_model_free(kiln_model *m);

/* Metadata: conventional keys are name, version, description,
 * input_layout, mean, std (comma-separated per channel), labels (one per
 * line) and metrics.*. NULL when absent. */
KILN_API const char *kiln_model_meta(const kiln_model *m, const char *key);
KILN_API kiln_status kiln_model_set_meta(kiln_model *m, const char *key, const char *value);
KILN_API int kiln_model_meta_count(const kiln_model *m);
KILN_API const char *kiln_model_meta_key(const kiln_model *m, int i);
/* Class labels from the "labels" metadata. */
KILN_API int kiln_model_label_count(const kiln_model *m);
/* Copies label i into buf (len bytes); NULL when i is out of range. */
KILN_API const char *kiln_model_label(const kiln_model *m, int i, char *buf, size_t len);

/* A graph input or output as the model declares it (dims[0] is the batch
 * the model was built with). */
typedef struct kiln_io_info {
    const char *name;
    int ndim;
    int64_t dims[KILN_MAX_DIMS];
} kiln_io_info;

KILN_API int kiln_model_input_count(const kiln_model *m);
KILN_API int kiln_model_output_count(const kiln_model *m);
KILN_API kiln_status kiln_model_input(const kiln_model *m, int i, kiln_io_info *info);
KILN_API kiln_status kiln_model_output(const kiln_model *m, int i, kiln_io_info *info);
/* Layers (nodes after optimization), parameters (constant elements) and
 * multiply-adds x2 at the model's own batch. */
KILN_API int kiln_model_layer_count(const kiln_model *m);
KILN_API int64_t kiln_model_param_count(const kiln_model *m);
KILN_API int64_t kiln_model_flops(const kiln_model *m);

typedef struct kiln_session_options {
    int threads; /* kernel threads; 0 = 1 */
    int batch;   /* dims[0] of every input; 0 = the model's own */
} kiln_session_options;

KILN_API kiln_status kiln_session_create(const kiln_model *m, const kiln_session_options *opts,
                                         kiln_session **out);
KILN_API void kiln_session_free(kiln_session *s);
/* Shapes at this session's batch. */
KILN_API kiln_status kiln_session_input(const kiln_session *s, int i, kiln_io_info *info);
KILN_API kiln_status kiln_session_output(const kiln_session *s, int i, kiln_io_info *info);
/* Bytes of the planned arena (activations + kernel workspace). */
KILN_API size_t kiln_session_arena_bytes(const kiln_session *s);
/* Runs the model. inputs[i] points to input i (contiguous float32 of the
 * session's shape), outputs[i] to caller-owned storage for output i. The
 * buffers stay the caller's; nothing is allocated. */
KILN_API kiln_status kiln_session_run(kiln_session *s, const float *const *inputs,
                                      float *const *outputs);

/* One text line per layer (name, op, output shape, params, FLOPs) for
 * `kiln inspect`, through a callback. */
typedef void (*kiln_layer_fn)(void *ctx, const char *name, const char *op, const char *shape,
                              int64_t params, int64_t flops);
KILN_API void kiln_session_layers(const kiln_session *s, kiln_layer_fn fn, void *ctx);

/* Per-layer time: after kiln_session_profile(s, 1) every run of s adds
 * each layer's wall time (a clock read between layers: tens of
 * nanoseconds each) to the layer's total, which kiln_session_layer_ns()
 * returns for the layer at `layer` in kiln_session_layers()'s order (0 for
 * a layer out of range or when profiling is off). kiln_session_profile(s,
 * 0) stops profiling and drops the totals; turning it on again restarts
 * them at zero. Not to be called while s runs. */
KILN_API kiln_status kiln_session_profile(kiln_session *s, int on);
KILN_API uint64_t kiln_session_layer_ns(const kiln_session *s, int layer);

/* The model's input for one image: decodes a JPEG or PNG held in memory
 * and writes C*H*W floats (input 0's channels and size) to `out`, which
 * holds `count` floats. Preprocessing follows the metadata: "resize" N
 * (scale the shorter side to N, then centre-crop H x W; absent or 0: resize
 * straight to H x W), "mean" and "std" (comma-separated per channel, on
 * the [0, 1] pixel scale). Images over 8192 x 8192 pixels are refused. */
KILN_API kiln_status kiln_model_image_input(const kiln_model *m, const void *buf, size_t len,
                                            float *out, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* KILN_H */
