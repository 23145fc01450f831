/*
 * JPEG (libjpeg-turbo) and PNG (libpng) decoding from memory into float CHW
 * images. Both libraries report fatal errors by calling a function that must
 * not return; here it longjmps back to the decoder, which frees what it took
 * and returns KILN_ERR_FORMAT with the library's message. Locals changed
 * between setjmp and longjmp are volatile.
 */
#include "image.h"
#include "fileio.h"

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

kiln_status kiln__image_alloc(kiln_image *img, int channels, int height, int width)
{
    if (!img) return KILN_ERR_INVALID_ARG;
    memset(img, 0, sizeof *img);
    if (channels < 1 || channels > 4 || height < 0 || width < 0) return KILN_ERR_INVALID_ARG;
    size_t n = (size_t)channels * (size_t)height * (size_t)width;
    if (height && width && n / (size_t)height / (size_t)width != (size_t)channels)
        return KILN_ERR_RANGE;
    if (n > SIZE_MAX / sizeof(float)) return KILN_ERR_RANGE;
    img->data = calloc(n ? n : 1, sizeof(float));
    if (!img->data) return KILN_ERR_NO_MEMORY;
    img->channels = channels;
    img->height = height;
    img->width = width;
    return KILN_OK;
}

void kiln__image_free(kiln_image *img)
{
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}

kiln_image_format kiln__image_sniff(const void *buf, size_t len)
{
    const uint8_t *b = buf;
    if (!b) return KILN_IMAGE_UNKNOWN;
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return KILN_IMAGE_JPEG;
    if (len >= 8 && !png_sig_cmp(b, 0, 8)) return KILN_IMAGE_PNG;
    return KILN_IMAGE_UNKNOWN;
}

static int64_t limit_or_default(int64_t max_pixels)
{
    return max_pixels > 0 ? max_pixels : KILN_IMAGE_DEFAULT_MAX_PIXELS;
}

static kiln_status check_size(const char *fmt, int64_t h, int64_t w, int64_t max_pixels,
                              kiln_errbuf *err)
{
    if (h <= 0 || w <= 0) return kiln__fail(err, KILN_ERR_FORMAT, "%s: empty image", fmt);
    if (h * w > limit_or_default(max_pixels))
        return kiln__fail(err, KILN_ERR_LIMIT, "%s: %lldx%lld is more than %lld pixels", fmt,
                          (long long)w, (long long)h, (long long)limit_or_default(max_pixels));
    return KILN_OK;
}

/* Writes one decoded row of interleaved samples (`src_ch` per pixel, values
 * already scaled to [0, 1] by `scale`) into row y of `img`, converting the
 * channel layout. `sample(i)` reads sample i of the row. */
#define STORE_ROW(img, y, src_ch, count, sample)                                         \
    do {                                                                                 \
        const int64_t plane_ = (int64_t)(img)->height * (img)->width;                    \
        float *row_ = (img)->data + (int64_t)(y) * (img)->width;                         \
        for (int x_ = 0; x_ < (count); x_++) {                                           \
            float px_[4];                                                                \
            for (int c_ = 0; c_ < (src_ch); c_++) px_[c_] = sample(x_ * (src_ch) + c_);  \
            float r_, g_, b_, a_ = 1.0f;                                                 \
            if ((src_ch) <= 2) {                                                         \
                r_ = g_ = b_ = px_[0];                                                   \
                if ((src_ch) == 2) a_ = px_[1];                                          \
            } else {                                                                     \
                r_ = px_[0], g_ = px_[1], b_ = px_[2];                                   \
                if ((src_ch) == 4) a_ = px_[3];                                          \
            }                                                                            \
            if ((img)->channels == 1) {                                                  \
                row_[x_] = (src_ch) <= 2 ? r_ : 0.299f * r_ + 0.587f * g_ + 0.114f * b_; \
            } else {                                                                     \
                row_[x_] = r_;                                                           \
                row_[plane_ + x_] = g_;                                                  \
                row_[2 * plane_ + x_] = b_;                                              \
                if ((img)->channels == 4) row_[3 * plane_ + x_] = a_;                    \
            }                                                                            \
        }                                                                                \
    } while (0)

/* ---- JPEG ------------------------------------------------------------- */

typedef struct jpeg_fail {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_fail;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_fail *f = (jpeg_fail *)cinfo->err;
    f->mgr.format_message(cinfo, f->msg);
    longjmp(f->jump, 1);
}

/* Warnings are silent, except that a truncated file is an error: libjpeg
 * would otherwise fill the missing rows with gray and report success. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    jpeg_fail *f = (jpeg_fail *)cinfo->err;
    if (level < 0) {
        f->mgr.num_warnings++;
        if (f->mgr.msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
    }
}

/* A progressive JPEG may hold thousands of tiny scans that each cost a pass
 * over the whole image; real files have at most a few dozen. */
#define JPEG_MAX_SCANS 500

struct jpeg_progress {
    struct jpeg_progress_mgr mgr;
};

static void jpeg_on_progress(j_common_ptr cinfo)
{
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_fail *f = (jpeg_fail *)cinfo->err;
        snprintf(f->msg, sizeof f->msg, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(f->jump, 1);
    }
}

static kiln_status decode_jpeg(const uint8_t *buf, size_t len, int want, int64_t max_pixels,
                               int probe_only, kiln_image *out, int *ph, int *pw, int *pc,
                               kiln_errbuf *err)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_fail fail;
    struct jpeg_progress progress;
    JSAMPLE *volatile row = NULL;
    volatile kiln_status st = KILN_ERR_FORMAT;
    volatile int created = 0;

    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&fail.mgr);
    fail.mgr.error_exit = jpeg_on_error;
    fail.mgr.emit_message = jpeg_on_message;
    fail.msg[0] = 0;
    if (setjmp(fail.jump)) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "jpeg: %s", fail.msg);
        goto done;
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    jpeg_mem_src(&cinfo, buf, (unsigned long)len);
    progress.mgr.progress_monitor = jpeg_on_progress;
    cinfo.progress = &progress.mgr;
    jpeg_read_header(&cinfo, TRUE);

    int src_ch;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        src_ch = 1;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;
        src_ch = 4;
        break;
    default:
        cinfo.out_color_space = JCS_RGB;
        src_ch = 3;
        break;
    }
    if (src_ch == 1) cinfo.out_color_space = JCS_GRAYSCALE;
    int own_ch = src_ch == 1 ? 1 : 3;
    if (probe_only) {
        *ph = (int)cinfo.image_height;
        *pw = (int)cinfo.image_width;
        *pc = own_ch;
        st = KILN_OK;
        goto done;
    }
    st = check_size("jpeg", cinfo.image_height, cinfo.image_width, max_pixels, err);
    if (st != KILN_OK) goto done;
    /* A gray target decodes gray directly: libjpeg takes the Y plane. */
    if (want == 1 && src_ch == 3) {
        cinfo.out_color_space = JCS_GRAYSCALE;
        src_ch = 1;
    }

    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
    if ((int)cinfo.output_components != (src_ch == 4 ? 4 : src_ch)) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "jpeg: unexpected %d output components",
                        cinfo.output_components);
        goto done;
    }
    st = kiln__image_alloc(out, want ? want : own_ch, h, w);
    if (st != KILN_OK) {
        kiln__fail(err, st, "jpeg: cannot allocate a %dx%d image", w, h);
        goto done;
    }
    row = malloc((size_t)w * (size_t)cinfo.output_components);
    if (!row) {
        st = kiln__fail(err, KILN_ERR_NO_MEMORY, "jpeg: cannot allocate a row");
        goto done;
    }
    st = KILN_ERR_FORMAT; /* a longjmp from here on is a decoding error */
    while (cinfo.output_scanline < cinfo.output_height) {
        int y = (int)cinfo.output_scanline;
        JSAMPROW rows[1] = {row};
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) {
            kiln__fail(err, st, "jpeg: no data at row %d", y);
            goto done;
        }
        const JSAMPLE *r = row;
        if (src_ch == 4) {
            /* Adobe CMYK is stored inverted: each sample is 255 - ink. */
#define CMYK_SAMPLE(i) \
    ((i) % 4 == 3      \
         ? 1.0f        \
         : (float)r[(i) / 4 * 4 + (i) % 4] * (float)r[(i) / 4 * 4 + 3] / (255.0f * 255.0f))
            STORE_ROW(out, y, 4, w, CMYK_SAMPLE);
#undef CMYK_SAMPLE
        } else {
#define U8_SAMPLE(i) ((float)r[i] * (1.0f / 255.0f))
            STORE_ROW(out, y, src_ch, w, U8_SAMPLE);
#undef U8_SAMPLE
        }
    }
    jpeg_finish_decompress(&cinfo);
    st = KILN_OK;
done:
    if (created) jpeg_destroy_decompress(&cinfo);
    free(row);
    if (st != KILN_OK && !probe_only) kiln__image_free(out);
    return st;
}

/* ---- PNG -------------------------------------------------------------- */

typedef struct png_source {
    const uint8_t *data;
    size_t len, pos;
    jmp_buf jump;
    char msg[160];
} png_source;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_source *src = png_get_error_ptr(png);
    snprintf(src->msg, sizeof src->msg, "%s", msg ? msg : "error");
    longjmp(src->jump, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n)
{
    png_source *src = png_get_io_ptr(png);
    if (n > src->len - src->pos) png_error(png, "file is truncated");
    memcpy(dst, src->data + src->pos, n);
    src->pos += n;
}

static kiln_status decode_png(const uint8_t *buf, size_t len, int want, int64_t max_pixels,
                              int probe_only, kiln_image *out, int *ph, int *pw, int *pc,
                              kiln_errbuf *err)
{
    png_source src = {.data = buf, .len = len};
    png_structp png = NULL;
    png_infop info = NULL;
    png_bytep volatile row = NULL;
    volatile kiln_status st = KILN_ERR_FORMAT;

    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    if (!png) return kiln__fail(err, KILN_ERR_NO_MEMORY, "png: cannot create a reader");
    info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "png: cannot create a reader");
    }
    if (setjmp(src.jump)) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "png: %s", src.msg);
        goto done;
    }
    png_set_read_fn(png, &src, png_read_mem);
    /* libpng's own ceiling on width and height; the pixel limit is ours. */
    png_set_user_limits(png, 1u << 24, 1u << 24);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, color, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    int has_alpha = (color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS);
    int is_color = (color & PNG_COLOR_MASK_COLOR) != 0;
    int own_ch = (is_color ? 3 : 1) + (has_alpha && is_color ? 1 : 0);
    if (probe_only) {
        *ph = (int)h;
        *pw = (int)w;
        *pc = own_ch;
        st = KILN_OK;
        goto done;
    }
    st = check_size("png", h, w, max_pixels, err);
    if (st != KILN_OK) goto done;

    /* Normalise to 8- or 16-bit gray/gray+alpha/RGB/RGBA samples. */
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (depth == 16) png_set_swap(png); /* native-endian uint16_t on little-endian */
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int src_ch = png_get_channels(png, info);
    int bits = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (src_ch < 1 || src_ch > 4 || (bits != 8 && bits != 16) ||
        rowbytes != (size_t)w * (size_t)src_ch * (size_t)(bits / 8)) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "png: unsupported layout (%d channels, %d bits)",
                        src_ch, bits);
        goto done;
    }
    st = kiln__image_alloc(out, want ? want : own_ch, (int)h, (int)w);
    if (st != KILN_OK) {
        kiln__fail(err, st, "png: cannot allocate a %ux%u image", w, h);
        goto done;
    }
    /* Interlaced images need every row in memory; plain ones one row. */
    size_t nrows = passes > 1 ? h : 1;
    row = malloc(rowbytes * nrows);
    if (!row) {
        st =
            kiln__fail(err, KILN_ERR_NO_MEMORY, "png: cannot allocate %zu bytes", rowbytes * nrows);
        goto done;
    }
    st = KILN_ERR_FORMAT;
    if (passes > 1) {
        memset(row, 0, rowbytes * nrows);
        for (int p = 0; p < passes; p++)
            for (png_uint_32 y = 0; y < h; y++) png_read_row(png, row + y * rowbytes, NULL);
    }
    for (png_uint_32 y = 0; y < h; y++) {
        const png_byte *r = passes > 1 ? row + y * rowbytes : row;
        if (passes <= 1) png_read_row(png, row, NULL);
        if (bits == 16) {
            const uint16_t *r16 = (const uint16_t *)r;
#define U16_SAMPLE(i) ((float)r16[i] * (1.0f / 65535.0f))
            STORE_ROW(out, (int)y, src_ch, (int)w, U16_SAMPLE);
#undef U16_SAMPLE
        } else {
#define U8_SAMPLE(i) ((float)r[i] * (1.0f / 255.0f))
            STORE_ROW(out, (int)y, src_ch, (int)w, U8_SAMPLE);
#undef U8_SAMPLE
        }
    }
    png_read_end(png, NULL); /* checks that the file is complete */
    st = KILN_OK;
done:
    png_destroy_read_struct(&png, &info, NULL);
    free(row);
    if (st != KILN_OK && !probe_only) kiln__image_free(out);
    return st;
}

/* ---- entry points ----------------------------------------------------- */

static kiln_status decode_any(const void *buf, size_t len, int channels, int64_t max_pixels,
                              int probe_only, kiln_image *out, int *h, int *w, int *c,
                              kiln_errbuf *err)
{
    if (!probe_only) {
        if (!out) return kiln__fail(err, KILN_ERR_INVALID_ARG, "image: no output");
        memset(out, 0, sizeof *out);
    }
    if (!buf && len) return kiln__fail(err, KILN_ERR_INVALID_ARG, "image: no input");
    if (channels != 0 && channels != 1 && channels != 3 && channels != 4)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "image: cannot make %d channels", channels);
    switch (kiln__image_sniff(buf, len)) {
    case KILN_IMAGE_JPEG:
        return decode_jpeg(buf, len, channels, max_pixels, probe_only, out, h, w, c, err);
    case KILN_IMAGE_PNG:
        return decode_png(buf, len, channels, max_pixels, probe_only, out, h, w, c, err);
    default:
        return kiln__fail(err, KILN_ERR_FORMAT, "image: not a JPEG or PNG file (%zu bytes)", len);
    }
}

kiln_status kiln__image_decode(const void *buf, size_t len, int channels, int64_t max_pixels,
                               kiln_image *out, kiln_errbuf *err)
{
    return decode_any(buf, len, channels, max_pixels, 0, out, NULL, NULL, NULL, err);
}

kiln_status kiln__image_probe(const void *buf, size_t len, int *height, int *width, int *channels,
                              kiln_errbuf *err)
{
    int h = 0, w = 0, c = 0;
    kiln_status st = decode_any(buf, len, 0, 0, 1, NULL, &h, &w, &c, err);
    if (st != KILN_OK) return st;
    if (height) *height = h;
    if (width) *width = w;
    if (channels) *channels = c;
    return KILN_OK;
}

kiln_status kiln__image_decode_file(const char *path, int channels, int64_t max_pixels,
                                    int64_t max_file_bytes, kiln_image *out, kiln_errbuf *err)
{
    if (out) memset(out, 0, sizeof *out);
    uint8_t *data;
    size_t len;
    kiln_status st = kiln__read_file(path, max_file_bytes > 0 ? max_file_bytes : (int64_t)256 << 20,
                                     &data, &len, err);
    if (st != KILN_OK) return st;
    kiln_errbuf inner = {{0}};
    st = kiln__image_decode(data, len, channels, max_pixels, out, &inner);
    free(data);
    if (st != KILN_OK) return kiln__fail(err, st, "%s: %s", path, inner.msg);
    return KILN_OK;
}
