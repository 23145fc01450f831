/*
 * The kernel API's free functions: shape checks, packing and workspace
 * sizes (the same for every ISA), and dispatch through the table of the
 * active ISA.
 */
#include "internal.h"
#include "kiln_config.h"

#include <stdint.h>
#include <string.h>

#define ALIGN_UP(n) (((n) + (KILN_ALIGN - 1)) & ~(size_t)(KILN_ALIGN - 1))

/* Output length of one axis, or 0 when the window does not fit. */
static int out_len(int in, int k, int stride, int dil, int pad0, int pad1, int ceil_mode)
{
    long span = (long)in + pad0 + pad1 - ((long)(k - 1) * dil + 1);
    if (span < 0) return 0;
    long o = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
    /* The last window must start inside the input or the leading pad. */
    if (ceil_mode && (o - 1) * stride >= (long)in + pad0) o--;
    return o > 0x7fffffff ? 0 : (int)o;
}

kiln_status kiln_conv2d_out_hw(const kiln_conv2d_shape *s, int *h_out, int *w_out)
{
    if (!s) return KILN_ERR_INVALID_ARG;
    if (s->n < 1 || s->c_in < 1 || s->h_in < 1 || s->w_in < 1 || s->c_out < 1 || s->k_h < 1 ||
        s->k_w < 1 || s->stride_h < 1 || s->stride_w < 1 || s->dil_h < 1 || s->dil_w < 1 ||
        s->pad_t < 0 || s->pad_l < 0 || s->pad_b < 0 || s->pad_r < 0 || s->groups < 1)
        return KILN_ERR_INVALID_ARG;
    if (s->c_in % s->groups || s->c_out % s->groups) return KILN_ERR_SHAPE;
    int h = out_len(s->h_in, s->k_h, s->stride_h, s->dil_h, s->pad_t, s->pad_b, 0);
    int w = out_len(s->w_in, s->k_w, s->stride_w, s->dil_w, s->pad_l, s->pad_r, 0);
    if (h < 1 || w < 1) return KILN_ERR_SHAPE;
    if (h_out) *h_out = h;
    if (w_out) *w_out = w;
    return KILN_OK;
}

/*
 * Packed conv weights (KILN_CONV2D_PACK_VERSION 8; version 5 moved strided
 * convs of 197 to 784 positions, 3x3/2 and the like, to the W^T panels,
 * version 6 the 3x3 convs of up to 32 input channels that fit the W^T
 * panels from Winograd to them, version 7 the small-plane 3x3 convs of
 * kiln__conv2d_is_winograd_t() to U^T panels, version 8 the wide ones,
 * up to 256 channels, from Winograd's U to U^T panels and the 3x3/2 ones
 * of up to 128 input channels from W^T to 25 U^T panels, version 9 the
 * stride-1 ones of more than 256 positions, up to 128 input channels,
 * from Winograd's F(4x4) U to 36 U^T panels, version 10 the wide ones of
 * 257 to 512 channels or 16 to 31 tiles from W^T to U^T panels):
 *   1. the ONNX-order weights (what ref and the OpenBLAS paths read);
 *   2. for shapes on kiln's GEMM (kiln__conv2d_is_gemm()): each group's
 *      weights as packed A; for shapes on the turned-around GEMM
 *      (kiln__conv2d_is_gemm_t(), new in version 4): W^T in panels; for
 *      turned-around Winograd shapes (version 7): U^T[e] in panels; for Winograd shapes: U[e] = G g
 * G^T for the sixteen (F(2x2, 3x3)) or thirty-six (F(4x4, 3x3), see kiln__winograd_tile()) e, each
 * as packed A (c_out x c_in);
 *   3. one KILN_ALIGN block that holds the pack version, so that no
 *      shape's packed size equals its version-1 size: a model file packed
 *      by an older kiln is repacked from its ONNX-order prefix on load.
 * Every part starts at a KILN_ALIGN boundary.
 */
static size_t prefix_floats(const kiln_conv2d_shape *s)
{
    size_t n = (size_t)s->c_out * (s->c_in / s->groups) * s->k_h * s->k_w;
    return ALIGN_UP(n * sizeof(float)) / sizeof(float);
}

static int gemm_k(const kiln_conv2d_shape *s)
{
    return s->c_in / s->groups * s->k_h * s->k_w;
}

size_t kiln__winograd_u_stride(const kiln_conv2d_shape *s)
{
    return kiln__gemm_packed_a_floats(s->c_out, s->c_in);
}

/*
 * F(4x4, 3x3) against F(2x2, 3x3), per shape (not per ISA: the choice
 * fixes the packed weights). F(4x4) does 36 GEMMs over a quarter of the
 * tiles (4x fewer multiplies than a direct conv, against 2.25x), but its
 * tiles pad the output to a multiple of 4 and its GEMMs' columns (tiles)
 * fill whole panels of up to WINOGRAD_PANEL columns (AVX-512's and NEON's
 * panel width), so it counts the padded columns of both: F(4x4) wins when
 * its 36 GEMMs have at most WINOGRAD_F4_MAX_RATIO of F(2x2)'s sixteen
 * GEMMs' padded columns. Its U is 36/16 of F(2x2)'s, which the tile GEMMs
 * stream once per image: small maps (few tiles per weight) stay on F(2x2).
 */
#define WINOGRAD_PANEL        32
#define WINOGRAD_F4_MAX_RATIO 0.75

static size_t padded_cols(size_t tiles)
{
    return (tiles + WINOGRAD_PANEL - 1) / WINOGRAD_PANEL * WINOGRAD_PANEL;
}

int kiln__winograd_tile(const kiln_conv2d_shape *s)
{
    if (!kiln__conv2d_is_winograd(s)) return 0;
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    size_t t2 = (size_t)((h_out + 1) / 2) * ((w_out + 1) / 2);
    size_t t4 = (size_t)((h_out + 3) / 4) * ((w_out + 3) / 4);
    return 36.0 * padded_cols(t4) <= WINOGRAD_F4_MAX_RATIO * 16.0 * padded_cols(t2) ? 4 : 2;
}

size_t kiln__winograd_path_workspace_floats(const kiln_conv2d_shape *s)
{
    /* V (packed as the GEMM's B) and M, then the slack the output
     * transforms' last vector reads past M. */
    return kiln__winograd_tile(s) == 4 ? kiln__winograd4_workspace_floats(s)
                                       : kiln__winograd_workspace_floats(s) + KILN_GEMM_NR_MAX;
}

/* A band of the Winograd path (f32-winograd.inc.c, wino_band_rows() and
 * wino_band_slot_floats()) is as many tile rows as one GEMM panel of tiles
 * holds (at least one): at most KILN_GEMM_NR_MAX tiles, or one tile row. */
size_t kiln__winograd_threads_workspace_floats(const kiln_conv2d_shape *s, int threads)
{
    const size_t whole = kiln__winograd_path_workspace_floats(s);
    int h_out, w_out;
    if (threads < 2 || kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return whole;
    const int m = kiln__winograd_tile(s), ne = (m + 2) * (m + 2), TW = (w_out + m - 1) / m;
    const int rows = KILN_GEMM_NR_MAX / TW < 1 ? 1 : KILN_GEMM_NR_MAX / TW;
    const size_t tiles = (size_t)rows * TW, align = KILN_ALIGN / sizeof(float);
    size_t slot = (size_t)ne * (kiln__gemm_packed_b_floats(s->c_in, tiles) + KILN_WINOGRAD_V_SKEW +
                                (size_t)s->c_out * tiles) +
                  KILN_GEMM_NR_MAX;
    slot = (slot + align - 1) / align * align;
    return whole > threads * slot ? whole : threads * slot;
}

size_t kiln__winograd4_workspace_floats(const kiln_conv2d_shape *s)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    size_t tiles = (size_t)((h_out + 3) / 4) * ((w_out + 3) / 4);
    /* V[36] in the GEMM's packed B panels, then M[36], then the slack
     * the output transform's last vector reads past M (one vector). */
    return 36 * (kiln__gemm_packed_b_floats(s->c_in, tiles) + KILN_WINOGRAD_V_SKEW +
                 tiles * s->c_out) +
           KILN_GEMM_NR_MAX;
}

static int winograd_n_u(const kiln_conv2d_shape *s)
{
    int m = kiln__winograd_tile(s);
    return (m + 2) * (m + 2);
}

size_t kiln__winograd_t_u_stride(const kiln_conv2d_shape *s)
{
    return (size_t)s->c_in * s->c_out;
}

const float *kiln__winograd_t_u(const kiln_conv2d_shape *s, const float *packed)
{
    return packed + prefix_floats(s);
}

size_t kiln_conv2d_packed_size(const kiln_conv2d_shape *s)
{
    size_t floats = prefix_floats(s);
    if (kiln__conv2d_is_winograd_t(s))
        /* Two more KILN_ALIGN blocks: then no version-6 packing of the
         * same shape has this size (c_in a multiple of 16 rules out every
         * equation between them), nor a version-7 one of a wide shape
         * (Winograd's U[e] have at least 2 more rows than c_out). */
        floats += (size_t)kiln__winograd_t_ne(s) * kiln__winograd_t_u_stride(s) +
                  2 * KILN_ALIGN / sizeof(float);
    else if (kiln__conv2d_is_winograd(s))
        floats += (size_t)winograd_n_u(s) * kiln__winograd_u_stride(s);
    else if (kiln__conv2d_is_gemm_t(s))
        /* One more KILN_ALIGN block, so that the size differs from the
         * version-3 size of the same shape (packed A with rows padded to
         * 14, at least 256 bytes more or exactly the same: K >= 64). */
        floats += kiln__gemm_t_packed_b_floats(s->c_out, gemm_k(s)) + KILN_ALIGN / sizeof(float);
    else if (kiln__conv2d_is_gemm(s))
        floats += (size_t)s->groups * kiln__gemm_packed_a_floats(s->c_out / s->groups, gemm_k(s));
    return floats * sizeof(float) + KILN_ALIGN;
}

const float *kiln__winograd_u(const kiln_conv2d_shape *s, const float *packed)
{
    return packed + prefix_floats(s);
}

const float *kiln__conv2d_gemm_t_b(const kiln_conv2d_shape *s, const float *packed)
{
    return packed + prefix_floats(s);
}

const float *kiln__conv2d_gemm_a(const kiln_conv2d_shape *s, const float *packed, int g)
{
    return packed + prefix_floats(s) +
           (size_t)g * kiln__gemm_packed_a_floats(s->c_out / s->groups, gemm_k(s));
}

/* U = G g G^T of one 3x3 kernel g, with G = [1 0 0; 1/2 1/2 1/2;
 * 1/2 -1/2 1/2; 0 0 1]: u[4 r + c] = U[r][c]. */
static void winograd2_u(const float *g, float u[16])
{
    float t[4][3]; /* G g */
    for (int c = 0; c < 3; c++) {
        t[0][c] = g[c];
        t[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
        t[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
        t[3][c] = g[6 + c];
    }
    for (int r = 0; r < 4; r++) {
        u[4 * r] = t[r][0];
        u[4 * r + 1] = 0.5f * (t[r][0] + t[r][1] + t[r][2]);
        u[4 * r + 2] = 0.5f * (t[r][0] - t[r][1] + t[r][2]);
        u[4 * r + 3] = t[r][2];
    }
}

/* U = G g G^T (winograd2_u()), each U[e] as packed A. */
static void winograd_pack(const kiln_conv2d_shape *s, const float *w, float *u)
{
    const size_t stride = kiln__winograd_u_stride(s);
    memset(u, 0, 16 * stride * sizeof(float));
    for (int oc = 0; oc < s->c_out; oc++)
        for (int ic = 0; ic < s->c_in; ic++) {
            float v[16];
            winograd2_u(w + ((size_t)oc * s->c_in + ic) * 9, v);
            size_t at = kiln__gemm_a_index(s->c_out, s->c_in, oc, ic);
            for (int e = 0; e < 16; e++) u[(size_t)e * stride + at] = v[e];
        }
}

/* U = G g G^T of one 3x3 kernel g for F(4x4, 3x3) (Lavin & Gray; points
 * 0, 1, -1, 2, -2 and infinity), computed in double: u[6 r + c] = U[r][c],
 * G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
 *      1/24 -1/12 1/6; 0 0 1]. */
static void winograd4_u(const float *g, float u[36])
{
    static const double G[6][3] = {{1.0 / 4, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    double t[6][3]; /* G g */
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 3; c++)
            t[r][c] = G[r][0] * g[c] + G[r][1] * g[3 + c] + G[r][2] * g[6 + c];
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 6; c++)
            u[r * 6 + c] = (float)(t[r][0] * G[c][0] + t[r][1] * G[c][1] + t[r][2] * G[c][2]);
}

/* U = G g G^T for F(4x4, 3x3) (winograd4_u()), each U[e] as packed A. */
static void winograd4_pack(const kiln_conv2d_shape *s, const float *w, float *u)
{
    const size_t stride = kiln__winograd_u_stride(s);
    memset(u, 0, 36 * stride * sizeof(float));
    for (int oc = 0; oc < s->c_out; oc++)
        for (int ic = 0; ic < s->c_in; ic++) {
            float v[36];
            winograd4_u(w + ((size_t)oc * s->c_in + ic) * 9, v);
            size_t at = kiln__gemm_a_index(s->c_out, s->c_in, oc, ic);
            for (int e = 0; e < 36; e++) u[(size_t)e * stride + at] = v[e];
        }
}

/* The stride-2 tile's U = G g G^T, G = [1 0 0; 1 0 1; 0 0 1; 0 1 0;
 * 0 1 0] (5 x 3): in one dimension, outputs y0 = w0 d0 + w1 d1 + w2 d2
 * and y1 = w0 d2 + w1 d3 + w2 d4 are the even inputs' F(2, 2) (products
 * (d0 - d2) w0, d2 (w0 + w2), (d4 - d2) w2) plus the odd ones' d1 w1 and
 * d3 w1 (f32-winograd-t.inc.c). u[5 r + c] = U[r][c]. */
static void winograd_s2_u(const float *g, float u[25])
{
    static const float G[5][3] = {{1, 0, 0}, {1, 0, 1}, {0, 0, 1}, {0, 1, 0}, {0, 1, 0}};
    float t[5][3]; /* G g */
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 3; c++)
            t[r][c] = G[r][0] * g[c] + G[r][1] * g[3 + c] + G[r][2] * g[6 + c];
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 5; c++)
            u[5 * r + c] = t[r][0] * G[c][0] + t[r][1] * G[c][1] + t[r][2] * G[c][2];
}

/* U = G g G^T (winograd2_u(), winograd4_u() for F(4x4, 3x3), or
 * winograd_s2_u() at stride 2), each U^T[e] in panels of KILN_GEMM_T_NR
 * output channels: [c_out / NR][c_in][NR]. */
static void winograd_t_pack(const kiln_conv2d_shape *s, const float *w, float *u)
{
    const size_t stride = kiln__winograd_t_u_stride(s);
    const int nr = KILN_GEMM_T_NR, ne = kiln__winograd_t_ne(s);
    for (int oc = 0; oc < s->c_out; oc++)
        for (int ic = 0; ic < s->c_in; ic++) {
            float v[36];
            const float *g = w + ((size_t)oc * s->c_in + ic) * 9;
            if (ne == 36)
                winograd4_u(g, v);
            else if (ne == 25)
                winograd_s2_u(g, v);
            else
                winograd2_u(g, v);
            const size_t at = ((size_t)(oc / nr) * s->c_in + ic) * nr + oc % nr;
            for (int e = 0; e < ne; e++) u[(size_t)e * stride + at] = v[e];
        }
}

void kiln_conv2d_pack(const kiln_conv2d_shape *s, const float *w, float *packed)
{
    size_t n = (size_t)s->c_out * (s->c_in / s->groups) * s->k_h * s->k_w;
    size_t size = kiln_conv2d_packed_size(s);
    memmove(packed, w, n * sizeof(float)); /* w may be an older packing of this buffer */
    memset(packed + n, 0, size - n * sizeof(float));
    if (kiln__conv2d_is_winograd_t(s)) {
        winograd_t_pack(s, packed, (float *)kiln__winograd_t_u(s, packed));
    } else if (kiln__winograd_tile(s) == 4) {
        winograd4_pack(s, packed, (float *)kiln__winograd_u(s, packed));
    } else if (kiln__conv2d_is_winograd(s)) {
        winograd_pack(s, packed, (float *)kiln__winograd_u(s, packed));
    } else if (kiln__conv2d_is_gemm_t(s)) {
        kiln__pack_b_t(s->c_out, gemm_k(s), packed, (float *)kiln__conv2d_gemm_t_b(s, packed));
    } else if (kiln__conv2d_is_gemm(s)) {
        const int cout_g = s->c_out / s->groups, K = gemm_k(s);
        for (int g = 0; g < s->groups; g++)
            kiln__pack_a(cout_g, K, packed + (size_t)g * cout_g * K, (size_t)K,
                         (float *)kiln__conv2d_gemm_a(s, packed, g));
    }
    uint32_t version = KILN_CONV2D_PACK_VERSION;
    memcpy((char *)packed + size - KILN_ALIGN, &version, sizeof version);
}

size_t kiln_conv2d_workspace_size(const kiln_conv2d_shape *s, int threads)
{
    int h_out, w_out;
    if (kiln_conv2d_out_hw(s, &h_out, &w_out) != KILN_OK) return 0;
    /* Depthwise convs read the input directly. */
    if (s->c_in == s->groups) return 0;
    /* OpenBLAS's path: the im2col matrix for one image and group,
     * [K][h_out*w_out] (none for pointwise convs). kiln's GEMM: that
     * matrix (or the input itself) in packed panels. */
    size_t k = (size_t)gemm_k(s), n_out = (size_t)h_out * w_out;
    size_t bytes = kiln__conv2d_is_pointwise(s) ? 0 : ALIGN_UP(k * n_out * sizeof(float));
    size_t gemm = ALIGN_UP(kiln__gemm_packed_b_floats((int)k, n_out) * sizeof(float));
    if (gemm > bytes) bytes = gemm;
    if (s->k_h == 1 && s->k_w == 1 && !kiln__conv2d_is_pointwise(s)) {
        /* A strided 1x1 conv's subsampled input, then a partial panel of
         * it (simd/f32-kernels.inc.c, conv2d_pointwise_strided). */
        size_t sub = ALIGN_UP(k * n_out * sizeof(float)) + k * KILN_GEMM_NR_MAX * sizeof(float);
        if (sub > bytes) bytes = sub;
    }
    if (kiln__conv2d_is_gemm_t(s)) {
        size_t t = ALIGN_UP(kiln__gemm_t_workspace_floats(s) * sizeof(float));
        if (t > bytes) bytes = t;
    }
    if (kiln__conv2d_is_winograd(s)) {
        size_t wino = ALIGN_UP(kiln__winograd_threads_workspace_floats(s, threads) * sizeof(float));
        if (wino > bytes) bytes = wino;
    }
    if (kiln__conv2d_is_winograd_t(s)) {
        size_t wt =
            ALIGN_UP(kiln__winograd_t_workspace_floats(s, threads, NULL, NULL) * sizeof(float));
        if (wt > bytes) bytes = wt;
    }
    return bytes;
}

kiln_status kiln_conv2d(const kiln_conv2d_shape *s, const float *x, const float *packed,
                        const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    kiln_status st = kiln_conv2d_out_hw(s, NULL, NULL);
    if (st != KILN_OK) return st;
    if (!x || !packed || !y) return KILN_ERR_INVALID_ARG;
    return kiln_kernels_default()->conv2d(s, x, packed, ep, y, workspace,
                                          threads < 1 ? 1 : threads);
}

int kiln_conv2d_pool2_ok(const kiln_conv2d_shape *s)
{
    if (kiln_conv2d_out_hw(s, NULL, NULL) != KILN_OK) return 0;
    return kiln_kernels_default()->conv2d_pool2_ok(s);
}

int kiln_conv2d_pool3_ok(const kiln_conv2d_shape *s)
{
    if (kiln_conv2d_out_hw(s, NULL, NULL) != KILN_OK) return 0;
    return kiln_kernels_default()->conv2d_pool3_ok(s);
}

int kiln_conv2d_residual_in_place_ok(const kiln_conv2d_shape *s)
{
    if (kiln_conv2d_out_hw(s, NULL, NULL) != KILN_OK) return 0;
    return kiln_kernels_default()->conv2d_residual_in_place_ok(s);
}

size_t kiln_dense_packed_size(const kiln_dense_shape *s)
{
    return ALIGN_UP((size_t)s->out * s->in * sizeof(float));
}

void kiln_dense_pack(const kiln_dense_shape *s, const float *w, float *packed)
{
    size_t n = (size_t)s->out * s->in;
    memcpy(packed, w, n * sizeof(float));
    memset(packed + n, 0, kiln_dense_packed_size(s) - n * sizeof(float));
}

size_t kiln_dense_workspace_size(const kiln_dense_shape *s, int threads)
{
    (void)s;
    (void)threads;
    return 0;
}

kiln_status kiln_dense(const kiln_dense_shape *s, const float *x, const float *packed,
                       const kiln_epilogue *ep, float *y, void *workspace, int threads)
{
    if (!s || !x || !packed || !y) return KILN_ERR_INVALID_ARG;
    if (s->batch < 1 || s->in < 1 || s->out < 1) return KILN_ERR_INVALID_ARG;
    return kiln_kernels_default()->dense(s, x, packed, ep, y, workspace, threads < 1 ? 1 : threads);
}

kiln_status kiln_pool2d_out_hw(const kiln_pool2d_shape *s, int *h_out, int *w_out)
{
    if (!s) return KILN_ERR_INVALID_ARG;
    if (s->n < 1 || s->c < 1 || s->h_in < 1 || s->w_in < 1 || s->k_h < 1 || s->k_w < 1 ||
        s->stride_h < 1 || s->stride_w < 1 || s->dil_h < 1 || s->dil_w < 1 || s->pad_t < 0 ||
        s->pad_l < 0 || s->pad_b < 0 || s->pad_r < 0)
        return KILN_ERR_INVALID_ARG;
    int ext_h = (s->k_h - 1) * s->dil_h + 1, ext_w = (s->k_w - 1) * s->dil_w + 1;
    if (s->pad_t >= ext_h || s->pad_b >= ext_h || s->pad_l >= ext_w || s->pad_r >= ext_w)
        return KILN_ERR_SHAPE;
    int h = out_len(s->h_in, s->k_h, s->stride_h, s->dil_h, s->pad_t, s->pad_b, s->ceil_mode);
    int w = out_len(s->w_in, s->k_w, s->stride_w, s->dil_w, s->pad_l, s->pad_r, s->ceil_mode);
    if (h < 1 || w < 1) return KILN_ERR_SHAPE;
    if (h_out) *h_out = h;
    if (w_out) *w_out = w;
    return KILN_OK;
}

kiln_status kiln_maxpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    kiln_status st = kiln_pool2d_out_hw(s, NULL, NULL);
    if (st != KILN_OK) return st;
    if (!x || !y) return KILN_ERR_INVALID_ARG;
    kiln_kernels_default()->maxpool2d(s, x, y, threads < 1 ? 1 : threads);
    return KILN_OK;
}

kiln_status kiln_avgpool2d(const kiln_pool2d_shape *s, const float *x, float *y, int threads)
{
    kiln_status st = kiln_pool2d_out_hw(s, NULL, NULL);
    if (st != KILN_OK) return st;
    if (!x || !y) return KILN_ERR_INVALID_ARG;
    kiln_kernels_default()->avgpool2d(s, x, y, threads < 1 ? 1 : threads);
    return KILN_OK;
}

void kiln_global_avgpool(int n, int c, size_t hw, const float *x, float *y)
{
    kiln_kernels_default()->global_avgpool(n, c, hw, x, y);
}

void kiln_global_maxpool(int n, int c, size_t hw, const float *x, float *y)
{
    kiln_kernels_default()->global_maxpool(n, c, hw, x, y);
}

void kiln_activation(size_t count, const float *x, float *y, kiln_act act, float alpha, float lo,
                     float hi)
{
    kiln_kernels_default()->activation(count, x, y, act, alpha, lo, hi);
}

void kiln_epilogue_apply(int n, int c, size_t hw, const float *x, const kiln_epilogue *ep, float *y)
{
    kiln_kernels_default()->epilogue_apply(n, c, hw, x, ep, y);
}

void kiln_add(size_t count, const float *a, const float *b, float *y)
{
    kiln_kernels_default()->add(count, a, b, y);
}

void kiln_softmax(size_t outer, size_t axis, size_t inner, const float *x, float *y)
{
    kiln_kernels_default()->softmax(outer, axis, inner, x, y);
}

void kiln_batchnorm(int n, int c, size_t hw, const float *x, const float *scale, const float *shift,
                    float *y)
{
    kiln_kernels_default()->batchnorm(n, c, hw, x, scale, shift, y);
}

void kiln_batchnorm_fold(int c, const float *gamma, const float *beta, const float *mean,
                         const float *var, float eps, float *scale, float *shift)
{
    for (int i = 0; i < c; i++) {
        float sc = gamma[i] / sqrtf(var[i] + eps);
        scale[i] = sc;
        shift[i] = beta[i] - mean[i] * sc;
    }
}

void kiln_concat_channels(int n, size_t hw, int n_inputs, const float *const *inputs,
                          const int *channels, float *y)
{
    kiln_kernels_default()->concat_channels(n, hw, n_inputs, inputs, channels, y);
}

const kiln_kernels *kiln_kernels_for(kiln_isa isa)
{
    switch (isa) {
    case KILN_ISA_REF:
        return &kiln__kernels_ref;
#if KILN_HAVE_AVX2
    case KILN_ISA_AVX2:
        return &kiln__kernels_avx2;
#endif
#if KILN_HAVE_AVX512
    case KILN_ISA_AVX512:
        return &kiln__kernels_avx512;
#endif
#if KILN_HAVE_NEON
    case KILN_ISA_NEON:
        return &kiln__kernels_neon;
#endif
    default:
        return NULL;
    }
}

const kiln_kernels *kiln_kernels_default(void)
{
    const kiln_kernels *k = kiln_kernels_for(kiln_isa_active());
    return k ? k : &kiln__kernels_ref;
}
