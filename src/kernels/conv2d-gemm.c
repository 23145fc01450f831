/*
 * conv2d through a GEMM, shared by every SIMD table (each lends its
 * epilogue, depthwise, Winograd and GEMM microkernels through
 * kiln__conv_ops).
 *
 * Layout stays NCHW end to end: per image and group the output
 * y[c_out/g][h_out*w_out] is W[c_out/g][K] x cols[K][h_out*w_out], with
 * K = c_in/g * k_h * k_w, so the GEMM writes the output in place and no
 * layout transform is paid at the edges of the layer. A 1x1/stride-1
 * conv without padding needs no im2col at all: the input plane is already
 * the [K][h*w] matrix.
 *
 * With ops->gemm (every SIMD table) the GEMM is kiln's own: cols are packed
 * straight into its panel layout (kiln__pack_b_conv(), no im2col matrix in
 * between), the weights come packed with the model, and the epilogue runs
 * in the microkernel's store. Without it (and in the benchmark's baseline)
 * the GEMM is OpenBLAS's cblas_sgemm on `threads` OpenBLAS threads, then
 * the epilogue in one pass over each GEMM's output. Packing and kiln's GEMM
 * run on kiln's pool, never at the same time as OpenBLAS's threads.
 */
#include "internal.h"

#include <cblas.h>
#include <string.h>

int kiln__conv2d_is_pointwise(const kiln_conv2d_shape *s)
{
    return s->k_h == 1 && s->k_w == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_t == 0 &&
           s->pad_l == 0 && s->pad_b == 0 && s->pad_r == 0;
}

/* Winograd pays where the 2.25-fold fewer multiplies outweigh the
 * transforms and its sixteen smaller GEMMs: enough tiles per GEMM. Measured
 * on ResNet50 (Zen 5, OpenBLAS SkylakeX, 1 thread): 1.4-1.5x at 14x14 and
 * 28x28, even at 56x56 (64 channels), 0.8-0.9x at 7x7 (16 tiles). */
#define WINOGRAD_MIN_TILES 32

static int gemm_t_shape_ok(const kiln_conv2d_shape *s);

/* Few input channels make Winograd's sixteen GEMMs short (K = c_in) while
 * its transforms cost the same per tile; where the turned-around GEMM
 * takes the shape, it is faster up to 32 input channels: the MNIST
 * model's conv2 (3x3, 32 -> 64 at 14x14, 49 tiles) 0.063 -> 0.057 ms at
 * batch 1, 0.245 -> 0.225 ms at batch 4 (2026-12-05, 1 thread, two
 * alternating rounds of `kiln bench model models/mnist.kiln --layers`). */
#define WINOGRAD_GEMM_T_MAX_C_IN 32

static int winograd_shape_ok(const kiln_conv2d_shape *s)
{
    if (s->k_h != 3 || s->k_w != 3 || s->stride_h != 1 || s->stride_w != 1 || s->dil_h != 1 ||
        s->dil_w != 1 || s->groups != 1 || s->c_in < 4)
        return 0;
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    long tiles = (long)((h_out + 1) / 2) * ((w_out + 1) / 2);
    /* The padded input row buffer: 2 * tiles across + 2, plus vector slack. */
    return tiles >= WINOGRAD_MIN_TILES && 2L * ((w_out + 1) / 2) + 2 + 64 <= KILN_WINOGRAD_ROW_MAX;
}

int kiln__conv2d_is_winograd(const kiln_conv2d_shape *s)
{
    return winograd_shape_ok(s) && !(s->c_in <= WINOGRAD_GEMM_T_MAX_C_IN && gemm_t_shape_ok(s)) &&
           !kiln__conv2d_is_winograd_t(s);
}

/*
 * The wide shapes (c_in above KILN_WINOGRAD_T_C_MAX): ResNet50's 14x14
 * 3x3 convs (256 -> 256, 49 tiles) took the Winograd path of
 * f32-winograd.inc.c, tiles in its vectors, 49 of 64 lanes doing work.
 * Turned around, in one process alternating with that path (2026-12-06,
 * Intel Xeon, 30 pairs): those five convs 0.82x the time at 1 thread,
 * 0.94x at 2; the model 0.966x at 1 thread. Its U^T is the same 16 c_in
 * c_out floats as U. At 7x7 (512 -> 512, 16 tiles) it was 0.93-1.01x at
 * 1 thread and 0.98-1.02x at 2 on that machine, for 7.4 MB more weights
 * per conv read from memory each inference, and was left to the
 * turned-around GEMM. On an AMD EPYC Zen 4 (2026-12-06, late night), with
 * the channel groups and bands since added, ResNet50's three 7x7 3x3 convs
 * ran 0.86x the time turned around at 1 thread (the 3x3 convs 0.955-0.961x,
 * the model 0.984x) and the model 0.987-0.990x at 2 (two sessions, one
 * packed for each path, alternating in one process, 2 x 30 pairs);
 * `kiln_conv2d` alone, 1 / 2 threads: 512 -> 512 @7 0.69 / 0.73x, @14
 * 0.78 / 0.80x, 384 -> 384 @8 0.51 / 0.55x, 272 -> 64 @14 0.63 / 0.64x,
 * 256 -> 256 @8 (16 tiles) 0.47 / 0.50x. So the wide shapes now go up to
 * 512 channels and down to 16 tiles.
 *
 * At stride 2 a 2x2 output tile reads a 5x5 input tile and takes 25
 * products where the direct conv takes 36 (kernels.c, winograd_s2_u()).
 * ResNet50's layer2.0 conv2 (128 -> 128, 56 -> 28), which lost most to
 * ONNX Runtime's direct conv, from the turned-around GEMM's X^T (3.6 MB
 * packed per call) to this: 2.18-2.30 -> 1.84-1.86 ms (fastest of 20 runs,
 * 1 thread); layer2's 3x3 convs 0.95-0.965x at 1 thread and 0.97-1.0x at
 * 2, the model 0.991-0.995x at 1 and 1.004x at 2 (30 pairs in one process,
 * 2026-12-06). layer3.0's (256 channels, 6.5 MB of U^T against W^T's
 * 2.4) ran 0.99-1.0x: left to the turned-around GEMM.
 *
 * Planes of more than KILN_WINOGRAD_T_N_MAX positions (ResNet50's @56 and
 * @28 3x3 convs, 64 and 128 channels) take F(4x4, 3x3) turned around,
 * where they took the tile-vector F(4x4): see f32-winograd-t.inc.c. Up
 * to 32 input channels such planes stay on the turned-around GEMM
 * (WINOGRAD_GEMM_T_MAX_C_IN), over 128 or 56x56 on the tile-vector path.
 */
int kiln__conv2d_is_winograd_t(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    const int st = s->stride_h;
    if (s->k_h != 3 || s->k_w != 3 || (st != 1 && st != 2) || s->stride_w != st || s->dil_h != 1 ||
        s->dil_w != 1 || s->groups != 1 || s->c_in % KILN_WINOGRAD_T_C_STEP ||
        s->c_out % KILN_GEMM_T_NR || kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK)
        return 0;
    const long n = (long)h_out * w_out;
    if (st == 2)
        return n <= KILN_WINOGRAD_T_N_MAX_STRIDED && s->c_in <= KILN_WINOGRAD_T_C_MAX &&
               s->c_out <= KILN_WINOGRAD_T_C_OUT_MAX;
    if (n > KILN_WINOGRAD_T_N_MAX) /* F(4x4, 3x3) */
        return n <= KILN_WINOGRAD_T4_N_MAX && s->c_in > WINOGRAD_GEMM_T_MAX_C_IN &&
               s->c_in <= KILN_WINOGRAD_T_C_MAX && s->c_out <= KILN_WINOGRAD_T_C_OUT_MAX;
    if (s->c_in <= KILN_WINOGRAD_T_C_MAX) return 1;
    return s->c_in <= KILN_WINOGRAD_T_WIDE_MAX && s->c_out <= KILN_WINOGRAD_T_WIDE_MAX &&
           ((h_out + 1) / 2) * ((w_out + 1) / 2) >= KILN_WINOGRAD_T_WIDE_TILES;
}

int kiln__winograd_t_wide(const kiln_conv2d_shape *s)
{
    return s->c_in > KILN_WINOGRAD_T_C_MAX || s->stride_h == 2;
}

int kiln__winograd_t_m(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (s->stride_h != 1 || kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 2;
    return (long)h_out * w_out > KILN_WINOGRAD_T_N_MAX ? 4 : 2;
}

int kiln__winograd_t_ne(const kiln_conv2d_shape *s)
{
    return s->stride_h == 2 ? 25 : kiln__winograd_t_m(s) == 4 ? 36 : 16;
}

void kiln__winograd_t_tiles(const kiln_conv2d_shape *s, int h_out, int w_out, int *th, int *tw)
{
    const int m = kiln__winograd_t_m(s);
    *th = (h_out + m - 1) / m;
    *tw = (w_out + m - 1) / m;
}

void kiln__winograd_t_padded(const kiln_conv2d_shape *s, int h_out, int w_out, int *ph, int *pw)
{
    /* tile (th, tw) reads tn padded rows from step th: F(2x2) 4 from 2 th,
     * stride 2 5 from 4 th, F(4x4) 6 from 4 th */
    const int m = kiln__winograd_t_m(s), st = s->stride_h;
    const int tn = st == 2 ? 5 : m + 2, step = m * st;
    int TH, TW;
    kiln__winograd_t_tiles(s, h_out, w_out, &TH, &TW);
    int PH = step * (TH - 1) + tn, PW = step * (TW - 1) + tn;
    if (PH < s->pad_t + s->h_in) PH = s->pad_t + s->h_in;
    if (PW < s->pad_l + s->w_in) PW = s->pad_l + s->w_in;
    *ph = PH;
    *pw = PW;
}

/* The batch's tiles, in slivers of KILN_GEMM_MR. */
static int winograd_t_slivers(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    int TH, TW;
    kiln__winograd_t_tiles(s, h_out, w_out, &TH, &TW);
    const size_t T = (size_t)s->n * TH * TW;
    return (int)(kiln__gemm_m_pad((int)T) / KILN_GEMM_MR);
}

/* A wide conv's threads split its output channels: each then reads half
 * of U^T from memory (splitting the tiles, each read all of it: ResNet50's
 * 14x14 3x3 convs 1.3-1.6x the time) and transforms the band's input for
 * itself, which costs little beside the GEMMs at these depths. */
int kiln__winograd_t_channel_groups(const kiln_conv2d_shape *s, int threads)
{
    if (threads < 2) return 0;
    if (winograd_t_slivers(s) >= 2 * threads && !kiln__winograd_t_wide(s)) return 0;
    const int panels = s->c_out / KILN_GEMM_T_NR;
    return threads < panels ? threads : panels;
}

/* Bytes of V^T and M^T per band of a wide conv or a channel-split call. */
#define WINOGRAD_T_WIDE_BAND_BYTES ((size_t)2 << 20)

int kiln__winograd_t_band(const kiln_conv2d_shape *s)
{
    const int slivers = winograd_t_slivers(s);
    if (!kiln__winograd_t_wide(s)) return slivers;
    const size_t per_sliver =
        (size_t)kiln__winograd_t_ne(s) * KILN_GEMM_MR * (s->c_in + s->c_out) * sizeof(float);
    const size_t fit = WINOGRAD_T_WIDE_BAND_BYTES / per_sliver;
    return fit < 1 ? 1 : fit < (size_t)slivers ? (int)fit : slivers;
}

size_t kiln__winograd_t_workspace_floats(const kiln_conv2d_shape *s, int threads, size_t *xp,
                                         size_t *yt)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    int PH, PW;
    kiln__winograd_t_padded(s, h_out, w_out, &PH, &PW);
    int TH, TW;
    kiln__winograd_t_tiles(s, h_out, w_out, &TH, &TW);
    const int ne = kiln__winograd_t_ne(s);
    const size_t T = (size_t)s->n * TH * TW, align = KILN_ALIGN / sizeof(float);
    const size_t x = ((size_t)s->n * PH * PW * s->c_in + align - 1) / align * align;
    const size_t y = ((size_t)s->n * h_out * w_out * s->c_out + align - 1) / align * align;
    size_t rows = kiln__gemm_m_pad((int)T);
    /* split by output channels, each group holds a band of slivers */
    const int groups = kiln__winograd_t_channel_groups(s, threads);
    const size_t copies = groups > 1 ? (size_t)groups : 1;
    if (groups > 1 || kiln__winograd_t_wide(s))
        rows = (size_t)kiln__winograd_t_band(s) * KILN_GEMM_MR;
    if (xp) *xp = x;
    if (yt) *yt = y;
    return x + y + copies * ne * (rows * (size_t)(s->c_in + s->c_out) + 2 * KILN_WINOGRAD_V_SKEW);
}

size_t kiln__winograd_workspace_floats(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    size_t tiles = (size_t)((h_out + 1) / 2) * ((w_out + 1) / 2);
    /* V[16] in the GEMM's packed B panels, then M[16]. */
    return 16 *
           (kiln__gemm_packed_b_floats(s->c_in, tiles) + KILN_WINOGRAD_V_SKEW + tiles * s->c_out);
}

/* For kernel column kw: the output columns [*lo, *hi) whose input column
 * (ow * stride_w + the returned offset) lies inside [0, w_in); the others
 * read padding. */
static inline int inside_columns(const kiln_conv2d_shape *s, int kw, int w_out, int *lo, int *hi)
{
    int off = kw * s->dil_w - s->pad_l;
    int l = off < 0 ? (-off + s->stride_w - 1) / s->stride_w : 0;
    int h = s->w_in - 1 - off < 0 ? 0 : (s->w_in - 1 - off) / s->stride_w + 1;
    if (l > w_out) l = w_out;
    if (h > w_out) h = w_out;
    if (h < l) h = l;
    *lo = l;
    *hi = h;
    return off;
}

void kiln__im2col(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x_img, int g,
                  float *cols)
{
    const int cin_g = s->c_in / s->groups;
    const size_t plane = (size_t)s->h_in * s->w_in, n_out = (size_t)h_out * w_out;
    for (int ic = 0; ic < cin_g; ic++) {
        const float *xc = x_img + ((size_t)g * cin_g + ic) * plane;
        for (int kh = 0; kh < s->k_h; kh++)
            for (int kw = 0; kw < s->k_w; kw++) {
                float *row = cols + (((size_t)ic * s->k_h + kh) * s->k_w + kw) * n_out;
                int lo, hi, off = inside_columns(s, kw, w_out, &lo, &hi);
                for (int oh = 0; oh < h_out; oh++) {
                    float *r = row + (size_t)oh * w_out;
                    int ih = oh * s->stride_h - s->pad_t + kh * s->dil_h;
                    if (ih < 0 || ih >= s->h_in) {
                        memset(r, 0, sizeof(float) * w_out);
                        continue;
                    }
                    const float *xr = xc + (size_t)ih * s->w_in + off;
                    for (int ow = 0; ow < lo; ow++) r[ow] = 0.0f;
                    if (s->stride_w == 1)
                        memcpy(r + lo, xr + lo, sizeof(float) * (hi - lo));
                    else
                        for (int ow = lo; ow < hi; ow++) r[ow] = xr[(size_t)ow * s->stride_w];
                    for (int ow = hi; ow < w_out; ow++) r[ow] = 0.0f;
                }
            }
    }
}

size_t kiln__gemm_packed_b_floats(int K, size_t N)
{
    size_t n_pad = (N + KILN_GEMM_NR_MAX - 1) / KILN_GEMM_NR_MAX * KILN_GEMM_NR_MAX;
    size_t align = KILN_ALIGN / sizeof(float);
    return ((size_t)K * n_pad + align - 1) / align * align;
}

void kiln__pack_a(int M, int K, const float *A, size_t lda, float *Ap)
{
    const size_t m_pad = kiln__gemm_m_pad(M);
    for (int pc = 0; pc < K; pc += KILN_GEMM_KC) {
        const int kc = K - pc < KILN_GEMM_KC ? K - pc : KILN_GEMM_KC;
        float *block = Ap + (size_t)pc * m_pad;
        for (size_t row = 0; row < m_pad; row++) {
            float *dst = block + row / KILN_GEMM_MR * KILN_GEMM_MR * kc + row % KILN_GEMM_MR;
            const float *src = A + row * lda + pc;
            for (int k = 0; k < kc; k++)
                dst[(size_t)k * KILN_GEMM_MR] = row < (size_t)M ? src[k] : 0.0f;
        }
    }
}

/* The turned-around GEMM pays where the output positions fill few of the
 * usual tiles' vector columns and the output channels fill whole panels:
 * ResNet50's 7x7 stage (49 positions: 49 of 64 columns, but 49 of 56
 * rows) and 14x14 stage (196: 196 of 224 columns, all of 14 slivers).
 * Measured in ResNet50 (2026-12-05, Zen 5, interleaved with the plain
 * GEMM): the 7x7 stage 11.4 -> 10.0 ms at 1 thread, 9.5-9.9 -> 7.0-7.2 at
 * 2; the 14x14 stage's GEMM layers 10.4-10.7 -> 9.8-10.2 ms at 1 thread,
 * the same at 2. At 28x28 (784) the plain GEMM's columns are full, but
 * its rows may not be: ResNet50's l2 3x3/2 (128 output channels, 9
 * slivers of 14 and one of 2 rows) wastes 12 of 140 rows, where the
 * turned-around GEMM's 784 positions fill 56 slivers and its 128 channels
 * 4 panels; with X^T assembled a vector at a time (f32-gemm-t.inc.c) it
 * ran 1.38 -> 1.28 ms at 1 thread (2026-12-05, Zen 5). For a strided 1x1
 * conv it was slower (l2 1x1/2 1.13 -> 1.28 ms): those are pointwise
 * convs on the subsampled input (conv2d_pointwise_strided). */
static int gemm_t_shape_ok(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (s->groups != 1 || s->c_in * s->k_h * s->k_w < 64 || s->c_out < KILN_GEMM_T_NR ||
        s->c_out % KILN_GEMM_T_NR || kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK)
        return 0;
    long plane = ((long)s->h_in + s->pad_t + s->pad_b) * ((long)s->w_in + s->pad_l + s->pad_r);
    long n = (long)h_out * w_out;
    int strided = (s->stride_h > 1 || s->stride_w > 1) && s->k_h * s->k_w > 1;
    return (n <= KILN_GEMM_T_N_MAX || (strided && n <= KILN_GEMM_T_N_MAX_STRIDED)) &&
           plane <= KILN_GEMM_T_PLANE_MAX;
}

int kiln__conv2d_is_gemm_t(const kiln_conv2d_shape *s)
{
    return gemm_t_shape_ok(s) && !kiln__conv2d_is_winograd(s) && !kiln__conv2d_is_winograd_t(s);
}

size_t kiln__gemm_t_packed_b_floats(int c_out, int K)
{
    size_t n_pad = (size_t)(c_out + KILN_GEMM_T_NR - 1) / KILN_GEMM_T_NR * KILN_GEMM_T_NR;
    size_t align = KILN_ALIGN / sizeof(float);
    return (n_pad * K + align - 1) / align * align;
}

void kiln__pack_b_t(int c_out, int K, const float *W, float *Bt)
{
    const int nr = KILN_GEMM_T_NR;
    for (int p = 0; p < (c_out + nr - 1) / nr; p++)
        for (int k = 0; k < K; k++)
            for (int c = 0; c < nr; c++) {
                int oc = p * nr + c;
                Bt[((size_t)p * K + k) * nr + c] = oc < c_out ? W[(size_t)oc * K + k] : 0.0f;
            }
}

size_t kiln__gemm_t_workspace_floats(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    int K = s->c_in * s->k_h * s->k_w, N = h_out * w_out;
    size_t align = KILN_ALIGN / sizeof(float);
    size_t a = (kiln__gemm_m_pad(N) * K + align - 1) / align * align;
    return a + (size_t)N * s->c_out;
}

int kiln__conv2d_is_gemm(const kiln_conv2d_shape *s)
{
    return s->c_in / s->groups > 1 && !kiln__conv2d_is_winograd(s) && !kiln__conv2d_is_gemm_t(s) &&
           !kiln__conv2d_is_winograd_t(s);
}

/* Where column j of row k lives in panels of nr columns. */
static inline float *panel_at(float *Bp, int K, int nr, int k, size_t j)
{
    return Bp + ((j / nr) * K + k) * nr + j % nr;
}

/* Copies src[0], src[stride], ... (n floats; zeros when src is NULL)
 * into row k, columns [j, j + n), across panel boundaries. */
static void panel_gather(float *Bp, int K, int nr, int k, size_t j, const float *src, int stride,
                         size_t n)
{
    while (n > 0) {
        size_t in_panel = (size_t)nr - j % nr, m = n < in_panel ? n : in_panel;
        float *dst = panel_at(Bp, K, nr, k, j);
        if (!src) {
            memset(dst, 0, m * sizeof(float));
        } else if (stride == 1) {
            memcpy(dst, src, m * sizeof(float));
            src += m;
        } else if (stride == 2) {
            /* Every stride-2 conv (ResNet50's stem, 3x3/2 and 1x1/2
             * layers): a constant stride, which the compiler vectorizes. */
            for (size_t q = 0; q < m; q++) dst[q] = src[2 * q];
            src += 2 * m;
        } else {
            for (size_t q = 0; q < m; q++) dst[q] = src[q * stride];
            src += m * stride;
        }
        j += m;
        n -= m;
    }
}

static void panel_put(float *Bp, int K, int nr, int k, size_t j, const float *src, size_t n)
{
    panel_gather(Bp, K, nr, k, j, src, 1, n);
}

/* Zeros the padding columns [N, next multiple of nr) of row k. */
static void panel_pad(float *Bp, int K, int nr, int k, size_t N)
{
    size_t pad = (nr - N % nr) % nr;
    if (pad) panel_put(Bp, K, nr, k, N, NULL, pad);
}

void kiln__pack_b_rows(const float *B, size_t ldb, size_t N, int K, int k0, int k1, int nr,
                       float *Bp)
{
    for (int k = k0; k < k1; k++) {
        panel_put(Bp, K, nr, k, 0, B + (size_t)k * ldb, N);
        panel_pad(Bp, K, nr, k, N);
    }
}

void kiln__pack_b_conv(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x_img, int g,
                       int k0, int k1, int nr, float *Bp)
{
    const int cin_g = s->c_in / s->groups, K = cin_g * s->k_h * s->k_w;
    const size_t plane = (size_t)s->h_in * s->w_in, n_out = (size_t)h_out * w_out;
    for (int k = k0; k < k1; k++) {
        const int ic = k / (s->k_h * s->k_w), kh = k / s->k_w % s->k_h, kw = k % s->k_w;
        const float *xc = x_img + ((size_t)g * cin_g + ic) * plane;
        int lo, hi, off = inside_columns(s, kw, w_out, &lo, &hi);
        for (int oh = 0; oh < h_out; oh++) {
            size_t j = (size_t)oh * w_out;
            int ih = oh * s->stride_h - s->pad_t + kh * s->dil_h;
            if (ih < 0 || ih >= s->h_in) {
                panel_put(Bp, K, nr, k, j, NULL, (size_t)w_out);
                continue;
            }
            const float *xr = xc + (size_t)ih * s->w_in + off;
            panel_put(Bp, K, nr, k, j, NULL, (size_t)lo);
            panel_gather(Bp, K, nr, k, j + lo, xr + (size_t)lo * s->stride_w, s->stride_w,
                         (size_t)(hi - lo));
            panel_put(Bp, K, nr, k, j + hi, NULL, (size_t)(w_out - hi));
        }
        panel_pad(Bp, K, nr, k, n_out);
    }
}

typedef struct pack_job {
    const kiln_conv2d_shape *s;
    int h_out, w_out, g, K, nr;
    const float *src; /* the image (conv) or B itself (pointwise) */
    size_t ldb;       /* pointwise: B's leading dimension; 0 for im2col */
    float *Bp;
} pack_job;

static void pack_range(void *ctx, size_t begin, size_t end)
{
    const pack_job *j = ctx;
    if (j->ldb)
        kiln__pack_b_rows(j->src, j->ldb, j->ldb, j->K, (int)begin, (int)end, j->nr, j->Bp);
    else
        kiln__pack_b_conv(j->s, j->h_out, j->w_out, j->src, j->g, (int)begin, (int)end, j->nr,
                          j->Bp);
}

/* Packing is memory-bound and short: split it only when it is big. */
static int pack_threads(int threads, int K, size_t N)
{
    return (size_t)K * N < 65536 ? 1 : threads;
}

/* The conv through kiln's own GEMM: B packed straight from the input (1x1)
 * or from its im2col rows, then one GEMM per image and group with the
 * epilogue in its store. */
static void conv2d_own_gemm(const kiln_conv2d_shape *s, int h_out, int w_out, const float *x,
                            const float *packed, const kiln_epilogue *ep, float *y, float *ws,
                            int threads, const kiln__conv_ops *ops)
{
    const int cin_g = s->c_in / s->groups, cout_g = s->c_out / s->groups;
    const int K = cin_g * s->k_h * s->k_w, pointwise = kiln__conv2d_is_pointwise(s);
    const size_t n_out = (size_t)h_out * w_out, x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t y_img = (size_t)s->c_out * n_out;
    const int has_ep = ep->bias || ep->residual || ep->act != KILN_ACT_NONE;
    float *Bp = ws;
    for (int b = 0; b < s->n; b++)
        for (int g = 0; g < s->groups; g++) {
            pack_job pj = {s, h_out, w_out, g, K, ops->gemm_nr, NULL, 0, Bp};
            if (pointwise) {
                pj.src = x + b * x_img + (size_t)g * cin_g * n_out;
                pj.ldb = n_out;
            } else {
                pj.src = x + b * x_img;
            }
            kiln__parallel_for(pack_threads(threads, K, n_out), (size_t)K, pack_range, &pj);
            const int oc0 = g * cout_g;
            const size_t c_off = b * y_img + (size_t)oc0 * n_out;
            ops->gemm(cout_g, (int)n_out, K, kiln__conv2d_gemm_a(s, packed, g), Bp, y + c_off,
                      n_out, ep->bias ? ep->bias + oc0 : NULL,
                      ep->residual ? ep->residual + c_off : NULL, has_ep ? ep : NULL, threads);
        }
}

kiln_status kiln__conv2d_gemm(const kiln_conv2d_shape *s, const float *x, const float *packed,
                              const kiln_epilogue *ep, float *y, void *workspace, int threads,
                              const kiln__conv_ops *ops)
{
    int h_out, w_out;
    kiln_status st = kiln_conv2d_out_hw(s, &h_out, &w_out);
    if (st != KILN_OK) return st;
    static const kiln_epilogue none = {0};
    if (!ep) ep = &none;
    const int cin_g = s->c_in / s->groups, cout_g = s->c_out / s->groups;
    if (cin_g == 1) {
        ops->depthwise(s, h_out, w_out, x, packed, ep, y, threads);
        return KILN_OK;
    }
    const int pointwise = kiln__conv2d_is_pointwise(s);
    if ((!pointwise || ops->gemm) && !workspace) return KILN_ERR_INVALID_ARG;
    if (ops->winograd && kiln__conv2d_is_winograd(s)) {
        ops->winograd(s, h_out, w_out, x, kiln__winograd_u(s, packed), ep, y, workspace, threads);
        return KILN_OK;
    }
    if (ops->gemm) {
        conv2d_own_gemm(s, h_out, w_out, x, packed, ep, y, workspace, threads, ops);
        return KILN_OK;
    }
    const int K = cin_g * s->k_h * s->k_w;
    const size_t n_out = (size_t)h_out * w_out, x_img = (size_t)s->c_in * s->h_in * s->w_in;
    const size_t y_img = (size_t)s->c_out * n_out;
    kiln_blas_set_threads(threads);
    for (int b = 0; b < s->n; b++)
        for (int g = 0; g < s->groups; g++) {
            const float *B;
            if (pointwise) {
                B = x + b * x_img + (size_t)g * cin_g * n_out;
            } else {
                kiln__im2col(s, h_out, w_out, x + b * x_img, g, workspace);
                B = workspace;
            }
            const int oc0 = g * cout_g;
            float *C = y + b * y_img + (size_t)oc0 * n_out;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout_g, (int)n_out, K, 1.0f,
                        packed + (size_t)oc0 * K, K, B, (int)n_out, 0.0f, C, (int)n_out);
            if (!ep->bias && !ep->residual && ep->act == KILN_ACT_NONE) continue;
            for (int i = 0; i < cout_g; i++) {
                float *row = C + (size_t)i * n_out;
                const float *res = ep->residual ? ep->residual + (row - y) : NULL;
                ops->act_row(n_out, row, ep->bias ? ep->bias[oc0 + i] : 0.0f, NULL, res, ep, row);
            }
        }
    return KILN_OK;
}

/* The benchmark's baseline: im2col for every shape (1x1 too), one SGEMM
 * per image and group, then the epilogue as separate scalar passes. */
kiln_status kiln_conv2d_im2col_baseline(const kiln_conv2d_shape *s, const float *x,
                                        const float *packed, const kiln_epilogue *ep, float *y,
                                        void *workspace, int threads)
{
    int h_out, w_out;
    kiln_status st = kiln_conv2d_out_hw(s, &h_out, &w_out);
    if (st != KILN_OK) return st;
    if (!workspace) return KILN_ERR_INVALID_ARG;
    const int cin_g = s->c_in / s->groups, cout_g = s->c_out / s->groups;
    const int K = cin_g * s->k_h * s->k_w;
    const size_t n_out = (size_t)h_out * w_out, x_img = (size_t)s->c_in * s->h_in * s->w_in;
    kiln_blas_set_threads(threads);
    for (int b = 0; b < s->n; b++)
        for (int g = 0; g < s->groups; g++) {
            kiln__im2col(s, h_out, w_out, x + b * x_img, g, workspace);
            float *C = y + ((size_t)b * s->c_out + (size_t)g * cout_g) * n_out;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout_g, (int)n_out, K, 1.0f,
                        packed + (size_t)g * cout_g * K, K, workspace, (int)n_out, 0.0f, C,
                        (int)n_out);
        }
    if (!ep) return KILN_OK;
    /* The epilogue the unfused way: one plain pass per part. */
    const size_t total = (size_t)s->n * s->c_out * n_out;
    if (ep->bias)
        for (int b = 0; b < s->n; b++)
            for (int c = 0; c < s->c_out; c++) {
                float *yc = y + ((size_t)b * s->c_out + c) * n_out;
                for (size_t i = 0; i < n_out; i++) yc[i] += ep->bias[c];
            }
    if (ep->residual)
        for (size_t i = 0; i < total; i++) y[i] += ep->residual[i];
    if (ep->act == KILN_ACT_RELU) /* a loop the compiler vectorizes */
        for (size_t i = 0; i < total; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
    else if (ep->act != KILN_ACT_NONE)
        kiln__ref_activation(total, y, y, ep->act, ep->alpha, ep->lo, ep->hi);
    return KILN_OK;
}

size_t kiln_conv2d_im2col_baseline_workspace_size(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    size_t k = (size_t)(s->c_in / s->groups) * s->k_h * s->k_w;
    return (k * h_out * w_out * sizeof(float) + KILN_ALIGN - 1) & ~(size_t)(KILN_ALIGN - 1);
}
