/* JPEG/PNG decoding and conversion to a model's input tensor (image.h). */
#include "image.h"

#include <stdio.h> /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
#include <png.h>

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

void image_free(image_u8 *img)
{
    free(img->pixels);
    img->pixels = NULL;
}

/* ---- JPEG ---------------------------------------------------------------- */

typedef struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr c)
{
    jpeg_err *e = (jpeg_err *)c->err;
    e->mgr.format_message(c, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_on_message(j_common_ptr c)
{
    (void)c; /* warnings are not printed */
}

static int decode_jpeg(const void *data, size_t len, int want, uint64_t max_pixels, image_u8 *out,
                       char *err, size_t errlen)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_err je;
    /* volatile: read after longjmp */
    uint8_t *volatile pixels = NULL;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_on_error;
    je.mgr.output_message = jpeg_on_message;
    if (setjmp(je.jb)) {
        snprintf(err, errlen, "invalid JPEG: %s", je.msg);
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (const unsigned char *)data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if ((uint64_t)cinfo.image_width * cinfo.image_height > max_pixels) {
        snprintf(err, errlen, "JPEG of %ux%u exceeds %llu pixels", cinfo.image_width,
                 cinfo.image_height, (unsigned long long)max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    cinfo.out_color_space = want == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, ch = cinfo.output_components;
    pixels = malloc((size_t)w * h * ch);
    if (!pixels) {
        snprintf(err, errlen, "out of memory decoding a %dx%d JPEG", w, h);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * w * ch;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->width = w;
    out->height = h;
    out->channels = ch;
    out->pixels = pixels;
    return 0;
}

/* ---- PNG ----------------------------------------------------------------- */

typedef struct png_src {
    const uint8_t *p;
    size_t left;
    char msg[200];
} png_src;

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n)
{
    png_src *s = png_get_io_ptr(png);
    if (n > s->left) png_error(png, "truncated PNG");
    memcpy(dst, s->p, n);
    s->p += n;
    s->left -= n;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_src *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static int decode_png(const void *data, size_t len, int want, uint64_t max_pixels, image_u8 *out,
                      char *err, size_t errlen)
{
    png_src src = {data, len, ""};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        snprintf(err, errlen, "invalid PNG: %s", src.msg[0] ? src.msg : "decode error");
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return -1;
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, 1u << 20, 1u << 20);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((uint64_t)w * h > max_pixels) {
        snprintf(err, errlen, "PNG of %ux%u exceeds %llu pixels", (unsigned)w, (unsigned)h,
                 (unsigned long long)max_pixels);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    int ct = png_get_color_type(png, info);
    if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    png_set_strip_alpha(png);
    int grey_src = !(ct & PNG_COLOR_MASK_COLOR);
    if (want == 1 && !grey_src) png_set_rgb_to_gray_fixed(png, 1, -1, -1);
    if (want != 1 && grey_src) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (ch != (want == 1 ? 1 : 3) || rowbytes != (size_t)w * ch)
        png_error(png, "unexpected format");
    pixels = malloc((size_t)h * rowbytes);
    rows = malloc(sizeof *rows * h);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    out->width = (int)w;
    out->height = (int)h;
    out->channels = ch;
    out->pixels = pixels;
    return 0;
}

int image_decode(const void *data, size_t len, int want_channels, uint64_t max_pixels,
                 image_u8 *out, char *err, size_t errlen)
{
    const uint8_t *p = data;
    memset(out, 0, sizeof *out);
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return decode_jpeg(data, len, want_channels, max_pixels, out, err, errlen);
    if (len >= 8 && !png_sig_cmp(p, 0, 8))
        return decode_png(data, len, want_channels, max_pixels, out, err, errlen);
    snprintf(err, errlen, "the body is neither a JPEG nor a PNG image");
    return -1;
}

/* A pixel value (0..255, interpolated or not) as the model takes it. */
static inline float pixel_value(float v, int k, const float *mean, const float *std)
{
    v /= 255.0f;
    if (mean) v -= mean[k];
    if (std) v /= std[k];
    return v;
}

void image_to_tensor(const image_u8 *img, int h, int w, const float *mean, const float *std,
                     float *out)
{
    int c = img->channels;
    if (img->height == h && img->width == w && c >= 1 && c <= 4) {
        /* Same size: the bilinear weights below are 0 and 1, each value is
         * its pixel's; the same arithmetic, without the interpolation,
         * through a table of the 256 values per channel (pixel_value()'s
         * two divisions per pixel took 2.5% of a worker's CPU on MNIST). */
        float lut[4][256];
        for (int k = 0; k < c; k++)
            for (int u = 0; u < 256; u++) lut[k][u] = pixel_value((float)u, k, mean, std);
        const size_t plane = (size_t)h * w;
        if (c == 1) {
            for (size_t i = 0; i < plane; i++) out[i] = lut[0][img->pixels[i]];
            return;
        }
        for (size_t i = 0; i < plane; i++)
            for (int k = 0; k < c; k++) out[k * plane + i] = lut[k][img->pixels[i * c + k]];
        return;
    }
    float sy = (float)img->height / (float)h, sx = (float)img->width / (float)w;
    for (int y = 0; y < h; y++) {
        float fy = ((float)y + 0.5f) * sy - 0.5f;
        if (fy < 0) fy = 0;
        int y0 = (int)fy, y1 = y0 + 1 < img->height ? y0 + 1 : y0;
        float wy = fy - (float)y0;
        for (int x = 0; x < w; x++) {
            float fx = ((float)x + 0.5f) * sx - 0.5f;
            if (fx < 0) fx = 0;
            int x0 = (int)fx, x1 = x0 + 1 < img->width ? x0 + 1 : x0;
            float wx = fx - (float)x0;
            for (int k = 0; k < c; k++) {
                const uint8_t *px = img->pixels;
                size_t W = (size_t)img->width;
                float a = px[((size_t)y0 * W + x0) * c + k], b = px[((size_t)y0 * W + x1) * c + k];
                float d = px[((size_t)y1 * W + x0) * c + k], e = px[((size_t)y1 * W + x1) * c + k];
                float v = (a * (1 - wx) + b * wx) * (1 - wy) + (d * (1 - wx) + e * wx) * wy;
                out[((size_t)k * h + y) * w + x] = pixel_value(v, k, mean, std);
            }
        }
    }
}
