/* Test fixtures in real formats: PNG and JPEG encoded with libpng and
 * libjpeg, files written to a scratch directory. */
#ifndef KILN_TESTS_FIXTURES_H
#define KILN_TESTS_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

/* PNG of w x h pixels, `channels` interleaved samples each (1 gray, 2 gray +
 * alpha, 3 RGB, 4 RGBA), `bits` 8 or 16 (16-bit samples are uint16_t,
 * native order, in `pixels`). `palette` stores an 8-bit RGB image as a
 * palette PNG (it must have at most 256 colours). Returns a malloc'ed
 * buffer and its length, or NULL. */
uint8_t *fixture_png(const void *pixels, int w, int h, int channels, int bits, int interlace,
                     int palette, size_t *len);

/* JPEG of w x h pixels with 1 (gray) or 3 (RGB) interleaved 8-bit samples. */
uint8_t *fixture_jpeg(const uint8_t *pixels, int w, int h, int channels, int quality,
                      int progressive, size_t *len);

/* Writes len bytes to path, creating missing parent directories. 0 on
 * success. */
int fixture_write(const char *path, const void *data, size_t len);

/* A fresh directory under $TMPDIR (or /tmp); the caller removes it with
 * fixture_rmtree(). Returns a static-lifetime copy in buf. */
char *fixture_tmpdir(char *buf, size_t size);
void fixture_rmtree(const char *path);

#endif
