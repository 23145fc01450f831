/*
 * Shared by the kernel implementations, not by their callers: the ref
 * kernels (each ISA table falls back to them for what it does not
 * specialise), scalar helpers and the per-ISA tables.
 */
#ifndef KILN_KERNELS_INTERNAL_H
#define KILN_KERNELS_INTERNAL_H

#include "kernels.h"

#include <math.h>

/* The scalar activation, the definition every SIMD path must match. */
static inline float kiln__act1(float v, kiln_act act, float alpha, float lo, float hi)
{
    switch (act) {
    case KILN_ACT_RELU:
        return v > 0.0f ? v : 0.0f;
    case KILN_ACT_CLIP:
        return v < lo ? lo : (v > hi ? hi : v);
    case KILN_ACT_LEAKY_RELU:
        return v >= 0.0f ? v : alpha * v;
    case KILN_ACT_SIGMOID:
        return 1.0f / (1.0f + expf(-v));
    default:
        return v;
    }
}

/* First input row/column of output position `o` (may be negative). */
static inline int kiln__win_start(int o, int stride, int pad)
{
    return o * stride - pad;
}

/* Pooled sides of kiln_epilogue.pool3's 3x3/2 max pool (one pad each
 * side, floor) over n conv rows or columns. */
static inline int kiln__pool3_side(int n)
{
    return (n - 1) / 2 + 1;
}

/* ---- threads (threadpool.c) ------------------------------------------------ */

typedef void (*kiln__range_fn)(void *ctx, size_t begin, size_t end);
/* Runs fn over [0, n) on up to `threads` threads, the calling thread and
 * kiln's pool, and returns when all of it is done. [0, n) goes in chunks
 * (about 8 a thread) that the threads take as they get to them, the
 * caller from the front and the pool's threads from the back: on two
 * threads each still runs one contiguous run, the split falling where
 * they meet, while the thread that runs slower does less of it (the two
 * vCPUs of these VMs do not run at the same speed, and which one is the
 * slower changes from minute to minute). So fn is called on any number
 * of subranges, one at a time per thread; with n <= threads, on single
 * units, which a caller may use as a slot index that no two threads use
 * at once. threads <= 1, or a pool busy with another caller's job, runs
 * fn(ctx, 0, n) on the calling thread. */
void kiln__parallel_for(int threads, size_t n, kiln__range_fn fn, void *ctx);

/* Dense batches up to this size run a multi-row GEMV whose every row is
 * bit-identical to batch 1; larger ones go to SGEMM. */
#define KILN_DENSE_EXACT_MAX_BATCH 8

/* ---- ref/ ---------------------------------------------------------------- */

int kiln__ref_conv2d_pool2_ok(const kiln_conv2d_shape *s);
int kiln__ref_conv2d_pool3_ok(const kiln_conv2d_shape *s);
int kiln__ref_conv2d_residual_in_place_ok(const kiln_conv2d_shape *s);
kiln_status kiln__ref_conv2d(const kiln_conv2d_shape *s, const float *x, const float *packed,
                             const kiln_epilogue *ep, float *y, void *workspace, int threads);
kiln_status kiln__ref_dense(const kiln_dense_shape *s, const float *x, const float *packed,
                            const kiln_epilogue *ep, float *y, void *workspace, int threads);
void kiln__ref_maxpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
void kiln__ref_avgpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads);
void kiln__ref_global_avgpool(int n, int c, size_t hw, const float *x, float *y);
void kiln__ref_global_maxpool(int n, int c, size_t hw, const float *x, float *y);
void kiln__ref_activation(size_t count, const float *x, float *y, kiln_act act, float alpha,
                          float lo, float hi);
void kiln__ref_epilogue_apply(int n, int c, size_t hw, const float *x, const kiln_epilogue *ep,
                              float *y);
void kiln__ref_add(size_t count, const float *a, const float *b, float *y);
void kiln__ref_softmax(size_t outer, size_t axis, size_t inner, const float *x, float *y);
void kiln__ref_batchnorm(int n, int c, size_t hw, const float *x, const float *scale,
                         const float *shift, float *y);
void kiln__ref_concat_channels(int n, size_t hw, int n_inputs, const float *const *inputs,
                               const int *channels, float *y);

extern const kiln_kernels kiln__kernels_ref;
extern const kiln_kernels kiln__kernels_avx2;
extern const kiln_kernels kiln__kernels_avx512;
extern const kiln_kernels kiln__kernels_neon;

/* The FMA peak loops (simd/f32-kernels.inc.c): `iters` rounds of 12
 * independent vector FMAs; each returns the flops it did. */
double kiln__fma_loop_avx2(long iters);
double kiln__fma_loop_avx512(long iters);
double kiln__fma_loop_neon(long iters);

/* ---- the fast conv driver (conv2d-gemm.c) and what an ISA lends it ------ */

/*
 * y[i] = act(x[i] + bias + bias_vec[i] + res[i]) for i < count, where a
 * NULL bias_vec or res contributes nothing. y may be x.
 */
typedef void (*kiln__act_row_fn)(size_t count, const float *x, float bias, const float *bias_vec,
                                 const float *res, const kiln_epilogue *ep, float *y);
/* Direct conv for c_in / groups == 1 (depthwise, with any channel
 * multiplier), epilogue included. */
typedef void (*kiln__conv_direct_fn)(const kiln_conv2d_shape *s, int h_out, int w_out,
                                     const float *x, const float *w, const kiln_epilogue *ep,
                                     float *y, int threads);

/* Winograd F(2x2, 3x3) or F(4x4, 3x3) conv (kiln__winograd_tile()) for
 * shapes kiln__conv2d_is_winograd() takes; `u` is the transformed weights
 * (kiln__winograd_u()), `workspace` holds kiln_conv2d_workspace_size()
 * bytes: the 16 (or 36) transformed inputs V[e], each packed as the GEMM's
 * B (kiln__gemm_packed_b_floats(c_in, tiles)), then the products M[e]
 * (c_out x tiles), then one vector of slack. */
typedef void (*kiln__conv_winograd_fn)(const kiln_conv2d_shape *s, int h_out, int w_out,
                                       const float *x, const float *u, const kiln_epilogue *ep,
                                       float *y, float *workspace, int threads);

/*
 * kiln's own SGEMM for the conv paths (simd/f32-gemm.inc.c):
 *   C[M][N] = A[M][K] B[K][N], then per element of C
 *   C = act(C + bias[row] + res[same place as C]) when ep is not NULL,
 * in the microkernel's store, so the epilogue costs no pass of its own.
 * A comes prepacked (kiln__pack_a(), done once with the weights), B packed
 * per call in column panels of `nr` columns, [ceil(N / nr)][K][nr],
 * zero-padded past N (kiln__pack_b_*()). res, when not NULL, has C's
 * layout (ldc).
 */
typedef void (*kiln__gemm_fn)(int M, int N, int K, const float *Ap, const float *Bp, float *C,
                              size_t ldc, const float *bias, const float *res,
                              const kiln_epilogue *ep, int threads);

/* Blocking shared by every ISA's GEMM: the rows of a microkernel tile
 * (every ISA uses 14, so packed A is the same everywhere), the widest
 * panel of B any ISA uses, the rows of A one job covers (a multiple of
 * KILN_GEMM_MR) and the depth of one pass over K. */
#define KILN_GEMM_MR     14
#define KILN_GEMM_NR_MAX 64
#define KILN_GEMM_MC     168
#define KILN_GEMM_KC     256

/*
 * Packed A for an M x K operand: for each depth block pc (KILN_GEMM_KC
 * deep, the last one shorter, kc deep), the slivers of KILN_GEMM_MR rows,
 * each [kc][KILN_GEMM_MR]; rows past M are zero. Block pc starts at
 * pc * m_pad, sliver s of it s * KILN_GEMM_MR * kc further.
 */
static inline size_t kiln__gemm_m_pad(int M)
{
    return (size_t)(M + KILN_GEMM_MR - 1) / KILN_GEMM_MR * KILN_GEMM_MR;
}
/* Floats of packed A, rounded up to a whole KILN_ALIGN. */
static inline size_t kiln__gemm_packed_a_floats(int M, int K)
{
    size_t align = KILN_ALIGN / sizeof(float);
    return (kiln__gemm_m_pad(M) * K + align - 1) / align * align;
}
/* Where A[row][k] lives in packed A. */
static inline size_t kiln__gemm_a_index(int M, int K, int row, int k)
{
    int pc = k / KILN_GEMM_KC * KILN_GEMM_KC;
    int kc = K - pc < KILN_GEMM_KC ? K - pc : KILN_GEMM_KC;
    return (size_t)pc * kiln__gemm_m_pad(M) + (size_t)(row / KILN_GEMM_MR) * KILN_GEMM_MR * kc +
           (size_t)(k - pc) * KILN_GEMM_MR + row % KILN_GEMM_MR;
}
/* A [M][K] row-major (leading dimension lda) into Ap, padding included. */
void kiln__pack_a(int M, int K, const float *A, size_t lda, float *Ap);

/* Floats of packed B for a K x N operand with panels of up to
 * KILN_GEMM_NR_MAX columns, rounded up to a whole KILN_ALIGN. */
size_t kiln__gemm_packed_b_floats(int K, size_t N);
/* Rows [k0, k1) of B [K][N] (row-major, leading dimension ldb) into
 * panels of `nr` columns. */
void kiln__pack_b_rows(const float *B, size_t ldb, size_t N, int K, int k0, int k1, int nr,
                       float *Bp);
/* Rows [k0, k1) of group g's im2col matrix of image x_img, straight from
 * NCHW into panels of `nr` columns (no im2col matrix in between). */
void kiln__pack_b_conv(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x_img, int g,
                       int k0, int k1, int nr, float *Bp);

/* Whether conv2d's SIMD paths run this shape through kiln's GEMM on
 * im2col / the input itself (so the packed weights carry packed A per
 * group): not depthwise, not Winograd. */
int kiln__conv2d_is_gemm(const kiln_conv2d_shape *s);
/* Group g's packed A (c_out/groups x c_in/groups*k_h*k_w) inside packed
 * conv weights. */
const float *kiln__conv2d_gemm_a(const kiln_conv2d_shape *s, const float *packed, int g);

/* Convs with few output positions (at most KILN_GEMM_T_N_MAX: ResNet50's
 * 7x7 and 14x14 stages, 49 and 196; strided convs of more than one tap up
 * to KILN_GEMM_T_N_MAX_STRIDED: ResNet50's l2 3x3/2, 28x28) run the GEMM
 * turned around
 * (simd/f32-gemm-t.inc.c):
 * C^T[pos][c_out] = X^T[pos][K] W^T[K][c_out], so the output channels,
 * not the positions, fill the vector columns. Their packed weights carry
 * W^T in panels of KILN_GEMM_T_NR columns, [ceil(c_out / NR)][K][NR], zero
 * past c_out, instead of packed A. One group, not Winograd, not depthwise,
 * K = c_in * k_h * k_w >= 64, c_out a multiple of KILN_GEMM_T_NR, a padded
 * input plane of at most KILN_GEMM_T_PLANE_MAX floats. */
#define KILN_GEMM_T_N_MAX         196
#define KILN_GEMM_T_N_MAX_STRIDED 784
#define KILN_GEMM_T_NR            32
#define KILN_GEMM_T_PLANE_MAX     4096
int kiln__conv2d_is_gemm_t(const kiln_conv2d_shape *s);
/* Floats of the W^T panels, rounded up to a whole KILN_ALIGN. */
size_t kiln__gemm_t_packed_b_floats(int c_out, int K);
/* W [c_out][K] (row-major) into the W^T panels. */
void kiln__pack_b_t(int c_out, int K, const float *W, float *Bt);
/* The W^T panels inside packed conv weights. */
const float *kiln__conv2d_gemm_t_b(const kiln_conv2d_shape *s, const float *packed);
/* Workspace floats of the turned-around path: packed X^T, then C^T. */
size_t kiln__gemm_t_workspace_floats(const kiln_conv2d_shape *s);

/* Small planes with channels in multiples of 16 (the MNIST CNN's conv2,
 * 32 -> 64 at 14x14; the CIFAR-10 CNN's 16x16 and 8x8 convs; ResNet50's
 * 14x14 stage, 256 -> 256) take
 * Winograd F(2x2, 3x3) turned around (simd/f32-winograd-t.inc.c): the
 * input channels, not the tiles, fill the vectors of its transforms, and
 * its sixteen GEMMs are M^T[e][tile][c_out] = V^T[e][tile][c_in] x
 * U^T[e][c_in][c_out], tiles in the broadcast rows. Their packed weights
 * carry U^T[e] in panels of KILN_GEMM_T_NR output channels,
 * [c_out / NR][c_in][NR], kiln__winograd_t_u_stride() floats apart. 3x3,
 * stride 1, no dilation, one group, c_in a multiple of
 * KILN_WINOGRAD_T_C_STEP up to KILN_WINOGRAD_T_C_MAX, c_out a multiple of
 * KILN_GEMM_T_NR, at most KILN_WINOGRAD_T_N_MAX output positions. Wider
 * convs, c_in and c_out up to KILN_WINOGRAD_T_WIDE_MAX, take it where an
 * image has at least KILN_WINOGRAD_T_WIDE_TILES tiles: their U^T (4 MB at
 * 256 -> 256, 16.8 MB at 512 -> 512) comes from memory once per inference
 * and each of its floats then serves that many tiles. */
#define KILN_WINOGRAD_T_C_STEP     16
#define KILN_WINOGRAD_T_C_MAX      128
#define KILN_WINOGRAD_T_N_MAX      256
#define KILN_WINOGRAD_T_WIDE_MAX   512
#define KILN_WINOGRAD_T_WIDE_TILES 16
/* c_out of the strided and F(4x4) shapes below: at most this many */
#define KILN_WINOGRAD_T_C_OUT_MAX 256
/* 3x3 convs at stride 2 take the same path with a 5x5 input tile per 2x2
 * outputs (f32-winograd-t.inc.c): c_in up to KILN_WINOGRAD_T_C_MAX, c_out
 * up to KILN_WINOGRAD_T_C_OUT_MAX, at most KILN_WINOGRAD_T_N_MAX_STRIDED
 * output positions (ResNet50's layer2.0, 128 channels from 56x56 to
 * 28x28). */
#define KILN_WINOGRAD_T_N_MAX_STRIDED 784
/* Larger planes at stride 1 take F(4x4, 3x3) turned around (36 U^T[e],
 * 4x4 outputs from a 6x6 input tile): c_in above 32 (the turned-around
 * GEMM's, see WINOGRAD_GEMM_T_MAX_C_IN) up to KILN_WINOGRAD_T_C_MAX, c_out
 * up to KILN_WINOGRAD_T_C_OUT_MAX, more than KILN_WINOGRAD_T_N_MAX and at
 * most KILN_WINOGRAD_T4_N_MAX output positions (ResNet50's @56 and @28
 * 3x3 convs). */
#define KILN_WINOGRAD_T4_N_MAX 3136
int kiln__conv2d_is_winograd_t(const kiln_conv2d_shape *s);
size_t kiln__winograd_t_u_stride(const kiln_conv2d_shape *s);
/* U^T[0] inside packed conv weights. */
const float *kiln__winograd_t_u(const kiln_conv2d_shape *s, const float *packed);
/* Workspace floats of the turned-around Winograd path on `threads`
 * threads: the batch's padded input in NHWC (*xp floats, when xp is not
 * NULL), its output before the epilogue in NHWC (*yt), then V^T and M^T
 * for every sliver of tiles, or for a band of them per thread where the
 * call is split by output channels (kiln__winograd_t_band()), each part
 * KILN_ALIGN-aligned. */
size_t kiln__winograd_t_workspace_floats(const kiln_conv2d_shape *s, int threads, size_t *xp,
                                         size_t *yt);
/* How the turned-around Winograd path splits a call on `threads` threads:
 * 0 where its tiles make at least two slivers a thread and its U^T is
 * small (bands of slivers, or one thread), else the number of groups of
 * whole output-channel panels it is split into, one a thread, each with
 * its own V^T and M^T for a band of slivers. */
int kiln__winograd_t_channel_groups(const kiln_conv2d_shape *s, int threads);
/* Whether the conv's U^T is read from memory, streamed a band at a time:
 * the wide ones (c_in above KILN_WINOGRAD_T_C_MAX) and the strided. */
int kiln__winograd_t_wide(const kiln_conv2d_shape *s);
/* Elements per tile, U^T[e] per conv: 16 at stride 1 (F(2x2, 3x3)), 36
 * for F(4x4, 3x3), 25 at stride 2 (a 5x5 input tile). */
int kiln__winograd_t_ne(const kiln_conv2d_shape *s);
/* Outputs per tile side: 4 for F(4x4, 3x3), else 2. */
int kiln__winograd_t_m(const kiln_conv2d_shape *s);
/* Tiles of an image down (*th) and across (*tw): m x m outputs each
 * (kiln__winograd_t_m()), the last cut short by the plane's edge. */
void kiln__winograd_t_tiles(const kiln_conv2d_shape *s, int h_out, int w_out, int *th, int *tw);
/* Rows and columns of the padded NHWC input the path copies each image
 * into: what its tiles read, and at least the input after its top and left
 * pads. */
void kiln__winograd_t_padded(const kiln_conv2d_shape *s, int h_out, int w_out, int *ph, int *pw);
/* Slivers of tiles per band where the call is split by output channels
 * (kiln__winograd_t_channel_groups() > 0) or the conv is wide: every
 * sliver, or as many as keep a band's V^T and M^T within 2 MB. */
int kiln__winograd_t_band(const kiln_conv2d_shape *s);

typedef struct kiln__conv_ops {
    kiln__act_row_fn act_row;
    kiln__conv_direct_fn depthwise;
    kiln__conv_winograd_fn winograd;
    /* NULL: the GEMM paths call OpenBLAS's cblas_sgemm instead. */
    kiln__gemm_fn gemm;
    int gemm_nr; /* gemm's panel width */
} kiln__conv_ops;

/* Widest padded input row the Winograd path buffers on the stack. */
#define KILN_WINOGRAD_ROW_MAX 1024
/* Floats between the end of one packed V[e] and the start of the next: the
 * input transform writes all sixteen at once, and at power-of-two sizes
 * (28x28 and 14x14 maps) they would share L1 sets without it. */
#define KILN_WINOGRAD_V_SKEW 16
/* Whether conv2d takes the Winograd path (F(2x2, 3x3) or F(4x4, 3x3), as
 * kiln__winograd_tile() says): 3x3, stride 1, no dilation, one group, and
 * enough F(2x2) output tiles for its GEMMs to pay. */
int kiln__conv2d_is_winograd(const kiln_conv2d_shape *s);
/* The transformed weights inside a packed buffer: 16 (F(2x2)) or 36
 * (F(4x4)) packed A operands U[e] (c_out x c_in),
 * kiln__winograd_u_stride() floats apart. */
const float *kiln__winograd_u(const kiln_conv2d_shape *s, const float *packed);
size_t kiln__winograd_u_stride(const kiln_conv2d_shape *s);
size_t kiln__winograd_workspace_floats(const kiln_conv2d_shape *s);
/* The Winograd path's output tile for this shape: 4 for F(4x4, 3x3), 2
 * for F(2x2, 3x3), 0 when conv2d does not take the Winograd path. */
int kiln__winograd_tile(const kiln_conv2d_shape *s);
/* kiln__winograd_workspace_floats() for F(4x4, 3x3): V[36], then M[36]. */
size_t kiln__winograd4_workspace_floats(const kiln_conv2d_shape *s);
/* The Winograd path's workspace for the tile kiln__winograd_tile() picks:
 * V, M and the slack the output transforms read past M. */
size_t kiln__winograd_path_workspace_floats(const kiln_conv2d_shape *s);
/* The same for a call on `threads` threads: on more than one, at least
 * one band's V and M per thread (f32-winograd.inc.c, wino_bands()). */
size_t kiln__winograd_threads_workspace_floats(const kiln_conv2d_shape *s, int threads);

/* conv2d through SGEMM: 1x1/stride 1/no pad as one GEMM per image and
 * group, everything else im2col + GEMM; c_in/groups == 1 through
 * ops->depthwise. The epilogue runs on each GEMM output right after it. */
kiln_status kiln__conv2d_gemm(const kiln_conv2d_shape *s, const float *x, const float *packed,
                              const kiln_epilogue *ep, float *y, void *workspace, int threads,
                              const kiln__conv_ops *ops);
/* Whether kiln__conv2d_gemm() takes the GEMM-without-im2col path. */
int kiln__conv2d_is_pointwise(const kiln_conv2d_shape *s);
/* cols [c_in/groups * k_h * k_w][h_out * w_out] for group g of image x. */
void kiln__im2col(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x_img, int g,
                  float *cols);

#endif
