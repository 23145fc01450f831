/*
 * kernels.h - the internal kernel API that the runtime calls.
 *
 * Layout: float32, NCHW, contiguous, unless a function says otherwise.
 *
 * Contract shared by every kernel here:
 *   - Kernels never allocate. A kernel that needs scratch memory has a
 *     *_workspace_size() function; the caller passes at least that many
 *     bytes, aligned to KILN_ALIGN (64). A size of 0 means workspace may be
 *     NULL.
 *   - `threads` (>= 1) is how many threads a kernel may use. conv2d
 *     (kiln's own GEMM, Winograd, packing), pooling and the batch-1 GEMV
 *     split their work over kiln's pool; dense with batch > 1 and the
 *     im2col baseline hand it to OpenBLAS (kiln_blas_set_threads).
 *     Never two pools at once, so 2 threads means 2.
 *   - Weights are packed once (*_pack()) into a buffer of *_packed_size()
 *     bytes; the packed layout is the same for every ISA, so a model file
 *     can store it. It begins with the weights in their ONNX order; paths
 *     that want a transformed copy find it after that prefix.
 *   - Outputs never alias inputs unless a function says so.
 *   - Every kernel exists in every ISA table (kiln_kernels_for()); the
 *     free functions below call the table of kiln_isa_active(). The REF
 *     table is plain scalar C with double accumulators: the test oracle.
 *
 * Additive changes only: the runtime builds on these signatures.
 */
#ifndef KILN_KERNELS_KERNELS_H
#define KILN_KERNELS_KERNELS_H

#include "kiln.h"

#include <stddef.h>

/* ---- activations and the fused epilogue -------------------------------- */

typedef enum kiln_act {
    KILN_ACT_NONE = 0,
    KILN_ACT_RELU,       /* max(x, 0) */
    KILN_ACT_CLIP,       /* min(max(x, lo), hi); ReLU6 is lo = 0, hi = 6 */
    KILN_ACT_LEAKY_RELU, /* x >= 0 ? x : alpha * x */
    KILN_ACT_SIGMOID,    /* 1 / (1 + exp(-x)) */
    KILN_ACT_COUNT_
} kiln_act;

/*
 * What a conv or dense layer does to its accumulator before storing it:
 *   y = act(acc + bias[c] + residual[i])
 * in one pass over the output. `bias` has one value per output channel
 * (dense: per output feature) or is NULL; `residual` has the output's shape
 * or is NULL. A zeroed struct (or a NULL pointer to one) means y = acc.
 */
typedef struct kiln_epilogue {
    const float *bias;
    const float *residual;
    kiln_act act;
    float alpha;  /* LEAKY_RELU slope */
    float lo, hi; /* CLIP bounds */
    /* 1: a max pool 2x2 at stride 2 follows, fused into the conv: y is the
     * pooled output [n][c_out][h_out / 2][w_out / 2], what MaxPool makes of
     * act(acc + bias) (the same floats). Only kiln_conv2d() takes it, and
     * only where kiln_conv2d_pool2_ok() says so and without a residual;
     * elsewhere KILN_ERR_INVALID_ARG. */
    int pool2;
    /* 1: a max pool 3x3 at stride 2 with one row and column of padding on
     * each side (floor; ResNet's after its stem) follows, fused into the
     * conv: y is [n][c_out][(h_out - 1) / 2 + 1][(w_out - 1) / 2 + 1], what
     * MaxPool makes of act(acc + bias) (the same floats). Only kiln_conv2d()
     * takes it, with a workspace, only where kiln_conv2d_pool3_ok() says so,
     * without a residual and not with pool2; elsewhere KILN_ERR_INVALID_ARG. */
    int pool3;
} kiln_epilogue;

/* ---- conv2d ------------------------------------------------------------- */

/*
 * One 2-D convolution (ONNX Conv): x [n][c_in][h_in][w_in], weights
 * [c_out][c_in/groups][k_h][k_w], y [n][c_out][h_out][w_out]. Pads are
 * per side (ONNX pads = [pad_t, pad_l, pad_b, pad_r]). Depthwise is
 * groups == c_in == c_out (or a channel multiplier: c_out = m * c_in).
 * Invariants checked by kiln_conv2d(): every size >= 1 (pads >= 0),
 * groups divides c_in and c_out, and the output is at least 1x1.
 */
typedef struct kiln_conv2d_shape {
    int n, c_in, h_in, w_in;
    int c_out, k_h, k_w;
    int stride_h, stride_w;
    int dil_h, dil_w;
    int pad_t, pad_l, pad_b, pad_r;
    int groups;
} kiln_conv2d_shape;

/* Bumped whenever kiln_conv2d_pack()'s layout changes (including which
 * shapes carry a Winograd copy), so stored packed weights can be checked. */
#define KILN_CONV2D_PACK_VERSION 10

/* KILN_OK and the output height/width, or KILN_ERR_SHAPE/INVALID_ARG when
 * the shape breaks an invariant above. */
kiln_status kiln_conv2d_out_hw(const kiln_conv2d_shape *s, int *h_out, int *w_out);
/* Bytes of packed weights (a multiple of KILN_ALIGN). */
size_t kiln_conv2d_packed_size(const kiln_conv2d_shape *s);
/* Packs w [c_out][c_in/groups][k_h][k_w] into `packed`. */
void kiln_conv2d_pack(const kiln_conv2d_shape *s, const float *w, float *packed);
/* Scratch bytes kiln_conv2d() needs for this shape (its batch n included:
 * the turned-around Winograd path holds the whole batch's tiles) and
 * thread count, on any ISA path. */
size_t kiln_conv2d_workspace_size(const kiln_conv2d_shape *s, int threads);
kiln_status kiln_conv2d(const kiln_conv2d_shape *s, const float *x, const float *packed,
                        const kiln_epilogue *ep, float *y, void *workspace, int threads);
/* Whether kiln_conv2d() on the active kernels takes kiln_epilogue.pool2 for
 * this shape: its output height and width are even, and the path it runs
 * can pool as it stores (the direct conv of a network's first layers; the
 * turned-around GEMM and Winograd of small planes). */
int kiln_conv2d_pool2_ok(const kiln_conv2d_shape *s);
/* Whether kiln_conv2d() on the active kernels takes kiln_epilogue.pool3 for
 * this shape: the path it runs computes each pool window's conv rows into
 * L1 (the stride-2 direct conv of a network's stem, output rows of at most
 * 256 columns; the ref kernels: every shape). */
int kiln_conv2d_pool3_ok(const kiln_conv2d_shape *s);
/* Whether kiln_conv2d() on the active kernels, given a workspace, may
 * write y over its own residual (y == kiln_epilogue.residual, x elsewhere)
 * for this shape: the path it runs reads each element of the residual
 * before it writes that element of y and writes no other element of y
 * before that (the GEMM paths of 1x1 convs; every shape on the scalar
 * reference). A session then lets a conv+add take over the buffer of a
 * residual it is the last to read. */
int kiln_conv2d_residual_in_place_ok(const kiln_conv2d_shape *s);

/* The plain baseline that `kiln bench kernels` measures the conv paths
 * against: im2col for every shape (1x1 too), one SGEMM per image and
 * group on `threads` OpenBLAS threads, then the epilogue as a separate
 * scalar pass. Same contract as kiln_conv2d(), with its own workspace. */
size_t kiln_conv2d_im2col_baseline_workspace_size(const kiln_conv2d_shape *s);
kiln_status kiln_conv2d_im2col_baseline(const kiln_conv2d_shape *s, const float *x,
                                        const float *packed, const kiln_epilogue *ep, float *y,
                                        void *workspace, int threads);

/* ---- dense (fully connected; ONNX Gemm with transB = 1) ---------------- */

/* x [batch][in], weights [out][in], y [batch][out]. */
typedef struct kiln_dense_shape {
    int batch, in, out;
} kiln_dense_shape;

size_t kiln_dense_packed_size(const kiln_dense_shape *s);
void kiln_dense_pack(const kiln_dense_shape *s, const float *w, float *packed);
size_t kiln_dense_workspace_size(const kiln_dense_shape *s, int threads);
/* ep->bias is [out]; ep->residual is [batch][out]. */
kiln_status kiln_dense(const kiln_dense_shape *s, const float *x, const float *packed,
                       const kiln_epilogue *ep, float *y, void *workspace, int threads);

/* ---- pooling ------------------------------------------------------------ */

/*
 * Max / average pooling (ONNX MaxPool, AveragePool). Output size:
 *   floor or ceil((h_in + pad_t + pad_b - ((k_h - 1) * dil_h + 1)) / stride_h) + 1
 * and, in ceil mode, a last window that would start past the input plus
 * the leading pad is dropped (PyTorch's rule, so every window sees at
 * least one input element). Max ignores padding. Average divides by the
 * taps inside the input (count_include_pad = 0) or inside the padded
 * input [-pad_t, h_in + pad_b) (count_include_pad = 1; a ceil-mode window
 * hanging past the end pad does not count what hangs over).
 * Invariants: pads < the dilated kernel extent on that axis.
 */
typedef struct kiln_pool2d_shape {
    int n, c, h_in, w_in;
    int k_h, k_w;
    int stride_h, stride_w;
    int dil_h, dil_w;
    int pad_t, pad_l, pad_b, pad_r;
    int ceil_mode;
    int count_include_pad; /* average pooling only */
} kiln_pool2d_shape;

kiln_status kiln_pool2d_out_hw(const kiln_pool2d_shape *s, int *h_out, int *w_out);
/* KILN_ERR_INVALID_ARG for NULL x or y, KILN_ERR_SHAPE as kiln_pool2d_out_hw(). */
kiln_status kiln_maxpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
kiln_status kiln_avgpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
/* x [n][c][hw] -> y [n][c]: mean / max over each channel's hw values. */
void kiln_global_avgpool(int n, int c, size_t hw, const float *x, float *y);
void kiln_global_maxpool(int n, int c, size_t hw, const float *x, float *y);

/* ---- element-wise ------------------------------------------------------- */

/* y[i] = act(x[i]) for i < count; y may be x (in place). */
void kiln_activation(size_t count, const float *x, float *y, kiln_act act, float alpha, float lo,
                     float hi);
/* The conv epilogue on its own, over x [n][c][hw]:
 *   y = act(x + bias[c] + residual)
 * y may be x. Bias-add, residual-add+ReLU, and plain activations are all
 * this with some fields NULL. */
void kiln_epilogue_apply(int n, int c, size_t hw, const float *x, const kiln_epilogue *ep,
                         float *y);
/* y[i] = a[i] + b[i]; y may be a or b. */
void kiln_add(size_t count, const float *a, const float *b, float *y);
/* Softmax over the middle axis of x viewed as [outer][axis][inner],
 * numerically stable (subtracts the max). y may be x. */
void kiln_softmax(size_t outer, size_t axis, size_t inner, const float *x, float *y);
/* Inference batch norm as a per-channel affine map over x [n][c][hw]:
 *   y = x * scale[c] + shift[c]; y may be x. */
void kiln_batchnorm(int n, int c, size_t hw, const float *x, const float *scale, const float *shift,
                    float *y);
/* scale = gamma / sqrt(var + eps), shift = beta - mean * scale: the form
 * kiln_batchnorm() takes (and that conv weight folding uses). */
void kiln_batchnorm_fold(int c, const float *gamma, const float *beta, const float *mean,
                         const float *var, float eps, float *scale, float *shift);
/* Channel concat: inputs[i] is [n][channels[i]][hw]; y is [n][sum][hw]. */
void kiln_concat_channels(int n, size_t hw, int n_inputs, const float *const *inputs,
                          const int *channels, float *y);

/* ---- per-ISA tables ----------------------------------------------------- */

/* Every kernel, with the same contract as the free function of that name. */
typedef struct kiln_kernels {
    kiln_isa isa;
    kiln_status (*conv2d)(const kiln_conv2d_shape *s, const float *x, const float *packed,
                          const kiln_epilogue *ep, float *y, void *workspace, int threads);
    int (*conv2d_pool2_ok)(const kiln_conv2d_shape *s);
    int (*conv2d_pool3_ok)(const kiln_conv2d_shape *s);
    int (*conv2d_residual_in_place_ok)(const kiln_conv2d_shape *s);
    kiln_status (*dense)(const kiln_dense_shape *s, const float *x, const float *packed,
                         const kiln_epilogue *ep, float *y, void *workspace, int threads);
    void (*maxpool2d)(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
    void (*avgpool2d)(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
    void (*global_avgpool)(int n, int c, size_t hw, const float *x, float *y);
    void (*global_maxpool)(int n, int c, size_t hw, const float *x, float *y);
    void (*activation)(size_t count, const float *x, float *y, kiln_act act, float alpha, float lo,
                       float hi);
    void (*epilogue_apply)(int n, int c, size_t hw, const float *x, const kiln_epilogue *ep,
                           float *y);
    void (*add)(size_t count, const float *a, const float *b, float *y);
    void (*softmax)(size_t outer, size_t axis, size_t inner, const float *x, float *y);
    void (*batchnorm)(int n, int c, size_t hw, const float *x, const float *scale,
                      const float *shift, float *y);
    void (*concat_channels)(int n, size_t hw, int n_inputs, const float *const *inputs,
                            const int *channels, float *y);
} kiln_kernels;

/* This machine's single-precision FMA peak on `isa`, measured: `threads`
 * threads each run independent vector FMAs for about `seconds`; returns
 * the total GFLOP/s, or 0 when `isa` is ref or cannot run here. */
double kiln_kernels_fma_peak(kiln_isa isa, int threads, double seconds);

/* The table for `isa`, or NULL when this build has no kernels for it.
 * Whether the CPU can run them is kiln_isa_supported()'s question. */
const kiln_kernels *kiln_kernels_for(kiln_isa isa);
/* The table for kiln_isa_active(). */
const kiln_kernels *kiln_kernels_default(void);

#endif
