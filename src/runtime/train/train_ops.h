/*
 * Forward and backward kernels for training, NCHW float32.
 *
 * Layouts: activations N x C x H x W; conv weights Cout x Cin x K x K;
 * dense weights out x in (y = x W^T + b). Convolutions are im2col + SGEMM
 * (OpenBLAS); their backward passes are SGEMM + col2im.
 *
 * Contract: no kernel allocates. Callers pass workspace where a kernel
 * needs it (its size is given next to the kernel). Gradient outputs named
 * d*_acc are accumulated into (+=); others are overwritten. Every pointer
 * may be NULL only where the comment says so.
 */
#ifndef KILN_RUNTIME_TRAIN_OPS_H
#define KILN_RUNTIME_TRAIN_OPS_H

#include <stddef.h>
#include <stdint.h>

/* A 2-D convolution's geometry (square kernel, same stride and padding on
 * both axes). oh, ow are derived by kt_conv_geom(). */
typedef struct kt_conv {
    int n, cin, h, w;
    int cout, k, stride, pad;
    int oh, ow;
} kt_conv;

/* Fills oh, ow; returns 0, or -1 when the output would be empty. */
int kt_conv_geom(kt_conv *g);

/* Floats of workspace the conv kernels need: cin*k*k*oh*ow. */
int64_t kt_conv_workspace(const kt_conv *g);

void kt_im2col(const float *x, int c, int h, int w, int k, int stride, int pad, int oh, int ow,
               float *col);
/* Adds col's entries back into x (x is accumulated into). */
void kt_col2im(const float *col, int c, int h, int w, int k, int stride, int pad, int oh, int ow,
               float *x);

/* y = conv(x, wt) + bias (bias may be NULL). */
void kt_conv_forward(const kt_conv *g, const float *x, const float *wt, const float *bias, float *y,
                     float *ws);
/* dw_acc += dL/dw, db_acc += dL/db (may be NULL), dx = dL/dx (may be NULL
 * when the input needs no gradient). */
void kt_conv_backward(const kt_conv *g, const float *x, const float *wt, const float *dy,
                      float *dw_acc, float *db_acc, float *dx, float *ws);

/*
 * The conv and dense layers split over kiln's thread pool by samples
 * (train_par.c): `threads` parts, part t with the workspace
 * ws + t * ws_floats (KILN_ALIGN-aligned, kt_par_conv_workspace() floats)
 * and, for t > 0, weight-gradient accumulators acc + (t - 1) * acc_floats
 * (at least the layer's weights plus biases); OpenBLAS must run on one
 * thread. The result does not depend on the number of threads beyond
 * float summation order.
 *
 * Convs with more than one input channel run their forward pass through
 * kiln's conv kernel (kiln_conv2d: its own GEMM, or Winograd for 3x3
 * stride-1 layers), and, at stride 1, their data gradient too, as the
 * convolution of dy with the flipped, transposed weights; the weights are
 * packed into pk (kt_par_conv_packed() floats, KILN_ALIGN-aligned) once
 * per call, the transposed ones built in flip (the layer's weight count).
 * Single-channel convs (which kiln_conv2d would run as a depthwise conv,
 * half as fast here), the weight gradient, strided data gradients and the
 * scalar reference ISA (KILN_ISA=ref) keep im2col + OpenBLAS: the kernels
 * above.
 */
typedef struct kt_par {
    int threads;
    float *ws, *acc;
    size_t ws_floats, acc_floats;
    float *pk, *flip;
} kt_par;

/* Floats of workspace one part needs for this conv (kt_conv_workspace()
 * or more), and of packed weights. */
int64_t kt_par_conv_workspace(const kt_conv *g);
int64_t kt_par_conv_packed(const kt_conv *g);

void kt_par_conv_forward(const kt_par *p, const kt_conv *g, const float *x, const float *wt,
                         const float *bias, float *y);
void kt_par_conv_backward(const kt_par *p, const kt_conv *g, const float *x, const float *wt,
                          const float *dy, float *dw_acc, float *db_acc, float *dx);
void kt_par_dense_forward(const kt_par *p, int n, int in, int out, const float *x, const float *w,
                          const float *b, float *y);
void kt_par_dense_backward(const kt_par *p, int n, int in, int out, const float *x, const float *w,
                           const float *dy, float *dw_acc, float *db_acc, float *dx);

/* Pooling with a square window, stride and padding; padded cells never win
 * a max and are not counted in an average (count_include_pad = false). */
typedef struct kt_pool {
    int n, c, h, w;
    int k, stride, pad;
    int oh, ow;
} kt_pool;

int kt_pool_geom(kt_pool *g);
/* argmax (may be NULL) records each output's winning input offset within
 * its plane for the backward pass. */
void kt_maxpool_forward(const kt_pool *g, const float *x, float *y, int32_t *argmax);
/* dx = scatter of dy to the winners (dx is overwritten). */
void kt_maxpool_backward(const kt_pool *g, const float *dy, const int32_t *argmax, float *dx);
/* Max pooling of relu(x), computed as relu of the max pool of x (the same
 * values, and the same gradients: a window whose maximum is not positive
 * passes none), so relu(x) is never stored. The backward pass scatters
 * dy to the winners whose output y (the forward's) is positive. */
void kt_maxpool_relu_forward(const kt_pool *g, const float *x, float *y, int32_t *argmax);
void kt_maxpool_relu_backward(const kt_pool *g, const float *dy, const float *y,
                              const int32_t *argmax, float *dx);
void kt_avgpool_forward(const kt_pool *g, const float *x, float *y);
void kt_avgpool_backward(const kt_pool *g, const float *dy, float *dx);

/* Global average pool: N x C x HW -> N x C, and back. */
void kt_gap_forward(int n, int c, int hw, const float *x, float *y);
void kt_gap_backward(int n, int c, int hw, const float *dy, float *dx);

/* y[n, out] = x[n, in] . w[out, in] + b[out] (b may be NULL). */
void kt_dense_forward(int n, int in, int out, const float *x, const float *w, const float *b,
                      float *y);
/* dw_acc += dy^T x; db_acc += column sums of dy (may be NULL); dx = dy w
 * (may be NULL). */
void kt_dense_backward(int n, int in, int out, const float *x, const float *w, const float *dy,
                       float *dw_acc, float *db_acc, float *dx);

void kt_relu_forward(int64_t n, const float *x, float *y);
/* dx = dy where y > 0, else 0 (y is the forward output; dx may be dy). */
void kt_relu_backward(int64_t n, const float *y, const float *dy, float *dx);

/* Residual add: y = a + b; backward gives the same gradient to both
 * branches: da_acc += dy, db_acc += dy. */
void kt_add_forward(int64_t n, const float *a, const float *b, float *y);
void kt_add_backward(int64_t n, const float *dy, float *da_acc, float *db_acc);

/*
 * Batch normalisation over N x C x HW, training mode: normalises with the
 * batch's mean and (biased) variance into y (which may be NULL: statistics
 * only), saves mean and inverse std per
 * channel for the backward pass, and updates the running statistics:
 * running = (1 - momentum) * running + momentum * batch (the running
 * variance uses the unbiased batch variance, as PyTorch does).
 */
void kt_bn_forward_train(int n, int c, int hw, const float *x, const float *gamma,
                         const float *beta, float eps, float momentum, float *running_mean,
                         float *running_var, float *save_mean, float *save_invstd, float *y);
/* Inference mode: the running statistics. */
void kt_bn_forward_infer(int n, int c, int hw, const float *x, const float *gamma,
                         const float *beta, float eps, const float *running_mean,
                         const float *running_var, float *y);
/* dgamma_acc, dbeta_acc accumulated; dx overwritten. */
void kt_bn_backward(int n, int c, int hw, const float *x, const float *gamma,
                    const float *save_mean, const float *save_invstd, const float *dy,
                    float *dgamma_acc, float *dbeta_acc, float *dx);
/* The same for channels [c0, c1) of c only (each channel's result is the
 * same however the channels are split). */
void kt_bn_forward_train_range(int n, int c, int c0, int c1, int hw, const float *x,
                               const float *gamma, const float *beta, float eps, float momentum,
                               float *running_mean, float *running_var, float *save_mean,
                               float *save_invstd, float *y);
void kt_bn_backward_range(int n, int c, int c0, int c1, int hw, const float *x, const float *gamma,
                          const float *save_mean, const float *save_invstd, const float *dy,
                          float *dgamma_acc, float *dbeta_acc, float *dx);
void kt_par_bn_forward_train(const kt_par *p, int n, int c, int hw, const float *x,
                             const float *gamma, const float *beta, float eps, float momentum,
                             float *running_mean, float *running_var, float *save_mean,
                             float *save_invstd, float *y);
void kt_par_bn_backward(const kt_par *p, int n, int c, int hw, const float *x, const float *gamma,
                        const float *save_mean, const float *save_invstd, const float *dy,
                        float *dgamma_acc, float *dbeta_acc, float *dx);
/*
 * Batch norm, ReLU and a 2x2 max pool with stride 2 in one forward pass,
 * for a batch norm whose output only the ReLU reads and whose ReLU only
 * the pool reads: the normalised activations are never stored. The batch
 * norm is y = x * scale + shift per channel (kt_bn_scale_shift from the
 * batch statistics, which kt_bn_forward_train with y = NULL computes, or
 * kt_bn_scale_shift_infer from the running statistics); the pool takes
 * relu(y) as kt_maxpool_relu_forward does and records the winners. Its
 * backward pass is kt_maxpool_relu_backward into the batch norm's output
 * gradient, then kt_bn_backward (which reads x, not y).
 */
void kt_bn_scale_shift(int c, const float *gamma, const float *beta, const float *mean,
                       const float *invstd, float *scale, float *shift);
void kt_bn_scale_shift_infer(int c, const float *gamma, const float *beta, float eps,
                             const float *running_mean, const float *running_var, float *scale,
                             float *shift);
void kt_bn_relu_maxpool_forward(const kt_pool *g, const float *x, const float *scale,
                                const float *shift, float *y, int32_t *argmax);
/* The same split by samples over kt_par's threads. */
void kt_par_bn_relu_maxpool_forward(const kt_par *p, const kt_pool *g, const float *x,
                                    const float *scale, const float *shift, float *y,
                                    int32_t *argmax);

/* ReLU over n values, split in ranges. */
void kt_par_relu_forward(const kt_par *p, int64_t n, const float *x, float *y);
void kt_par_relu_backward(const kt_par *p, int64_t n, const float *y, const float *dy, float *dx);

/*
 * Softmax + cross-entropy over n rows of k logits with integer labels.
 * Returns the mean loss; writes dlogits = (softmax - onehot) / n (may be
 * NULL), and the number of rows whose arg-max equals the label into
 * *correct (may be NULL). prob (may be NULL) receives the softmax.
 */
double kt_softmax_xent(int n, int k, const float *logits, const int32_t *labels, float *dlogits,
                       float *prob, int *correct);

#endif
