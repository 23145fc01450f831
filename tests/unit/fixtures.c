/* Test fixtures in real formats (see fixtures.h). */
#include "fixtures.h"

#include <ftw.h>
#include <stdio.h>
#include <jpeglib.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct membuf {
    uint8_t *data;
    size_t len, cap;
} membuf;

static void png_write_mem(png_structp png, png_bytep src, png_size_t n)
{
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        size_t cap = (m->cap ? m->cap * 2 : 4096) + n;
        uint8_t *d = realloc(m->data, cap);
        if (!d) png_error(png, "out of memory");
        m->data = d;
        m->cap = cap;
    }
    memcpy(m->data + m->len, src, n);
    m->len += n;
}

static void png_flush_mem(png_structp png)
{
    (void)png;
}

uint8_t *fixture_png(const void *pixels, int w, int h, int channels, int bits, int interlace,
                     int palette, size_t *len)
{
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    membuf m = {0};
    uint8_t *volatile indexed = NULL;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) goto fail;
    if (setjmp(png_jmpbuf(png))) goto fail;
    png_set_write_fn(png, &m, png_write_mem, png_flush_mem);
    png_set_compression_level(png, 1);
    const size_t bps = (size_t)bits / 8;
    size_t rowbytes = (size_t)w * (size_t)channels * bps;
    const uint8_t *src = pixels;
    if (palette) {
        png_color pal[256];
        int npal = 0;
        indexed = malloc((size_t)w * (size_t)h);
        if (!indexed) goto fail;
        for (int i = 0; i < w * h; i++) {
            const uint8_t *p = src + (size_t)i * 3;
            int k = 0;
            while (k < npal && !(pal[k].red == p[0] && pal[k].green == p[1] && pal[k].blue == p[2]))
                k++;
            if (k == npal) {
                if (npal == 256) goto fail;
                pal[npal].red = p[0], pal[npal].green = p[1], pal[npal].blue = p[2];
                npal++;
            }
            indexed[i] = (uint8_t)k;
        }
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_PALETTE,
                     interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_set_PLTE(png, info, pal, npal);
        src = indexed;
        rowbytes = (size_t)w;
    } else {
        png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, bits, types[channels],
                     interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    }
    png_write_info(png, info);
    if (bits == 16) png_set_swap(png);
    png_bytep *rows = malloc(sizeof(png_bytep) * (size_t)h);
    if (!rows) goto fail;
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(src + (size_t)y * rowbytes);
    png_write_image(png, rows);
    free(rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(indexed);
    *len = m.len;
    return m.data;
fail:
    png_destroy_write_struct(&png, &info);
    free(indexed);
    free(m.data);
    return NULL;
}

uint8_t *fixture_jpeg(const uint8_t *pixels, int w, int h, int channels, int quality,
                      int progressive, size_t *len)
{
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    unsigned char *out = NULL;
    unsigned long out_len = 0;
    cinfo.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &out, &out_len);
    cinfo.image_width = (JDIMENSION)w;
    cinfo.image_height = (JDIMENSION)h;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    for (int c = 0; c < cinfo.num_components; c++)
        cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * (size_t)w * channels);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    uint8_t *copy = malloc(out_len);
    if (copy) memcpy(copy, out, out_len);
    free(out);
    *len = out_len;
    return copy;
}

static int mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        int bad = mkdir(path, 0755) != 0 && access(path, F_OK) != 0;
        *p = '/';
        if (bad) return -1;
    }
    return 0;
}

int fixture_write(const char *path, const void *data, size_t len)
{
    char *copy = strdup(path);
    if (!copy) return -1;
    int rc = mkdirs(copy);
    free(copy);
    if (rc) return -1;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = len ? fwrite(data, 1, len, f) : 0;
    return (fclose(f) == 0 && n == len) ? 0 : -1;
}

char *fixture_tmpdir(char *buf, size_t size)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, size, "%s/kiln-test-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(buf);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void fixture_rmtree(const char *path)
{
    if (path) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
