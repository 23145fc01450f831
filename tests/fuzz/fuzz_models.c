/*
 * Fuzz targets for the two model parsers: .kiln files (kf_load_memory)
 * and ONNX files (kx_import). Built with libFuzzer when KILN_LIBFUZZER is
 * defined (clang -fsanitize=fuzzer,address: LLVMFuzzerTestOneInput only).
 * Otherwise main() is a small seeded mutator: it takes one valid file,
 * flips, overwrites, inserts and truncates bytes N times and feeds each
 * variant to the parser, which must return (an error or a valid graph)
 * without crashing; run it under ASan.
 *
 * usage: fuzz_models kiln|onnx SEED_FILE [ITERATIONS]
 */
#include "model_file.h"
#include "onnx_import.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int target_onnx;

static void one_input(const unsigned char *data, size_t size)
{
    char err[KG_ERRLEN];
    kg_graph *g = NULL;
    kg_meta meta = {0};
    if (target_onnx) {
        char path[] = "/tmp/kiln-fuzz-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0) return;
        if (write(fd, data, size) == (ssize_t)size &&
            kx_import(path, NULL, 0, &g, &meta, err) == KILN_OK) {
            if (kg_graph_check(g, err) != KILN_OK) abort();
            kg_graph_free(g);
            kg_meta_free(&meta);
        }
        close(fd);
        unlink(path);
        return;
    }
    /* the mapping a file would get: page-aligned */
    unsigned char *buf = aligned_alloc(4096, (size + 4096) / 4096 * 4096);
    if (!buf) return;
    memcpy(buf, data, size);
    kf_image img = {0};
    if (kf_load_memory(buf, size, 0, &g, &meta, &img, err) == KILN_OK) {
        if (kg_graph_check(g, err) != KILN_OK) abort();
        kg_infer_shapes(g, 0, err);
        kg_graph_free(g);
        kg_meta_free(&meta);
        kf_image_release(&img);
    }
    free(buf);
}

#ifdef KILN_LIBFUZZER
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    target_onnx = getenv("KILN_FUZZ_ONNX") != NULL;
    one_input(data, size);
    return 0;
}
#else
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "kiln") && strcmp(argv[1], "onnx"))) {
        fprintf(stderr, "usage: fuzz_models kiln|onnx SEED_FILE [ITERATIONS]\n");
        return 2;
    }
    target_onnx = !strcmp(argv[1], "onnx");
    int iterations = argc > 3 ? atoi(argv[3]) : 500;
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        printf("SKIP: %s not found\n", argv[2]);
        return 77;
    }
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *seed = malloc(len + 64), *buf = malloc(len + 64);
    if (!seed || !buf || fread(seed, 1, len, f) != len) return 1;
    fclose(f);
    for (int it = 0; it < iterations; it++) {
        size_t n = len;
        memcpy(buf, seed, len);
        int edits = 1 + (int)(next() % 4);
        for (int e = 0; e < edits && n; e++) {
            size_t at = (size_t)(next() % n);
            switch (next() % 4) {
            case 0: /* flip a bit */
                buf[at] ^= (unsigned char)(1u << (next() % 8));
                break;
            case 1: /* an extreme byte */
                buf[at] = (next() & 1) ? 0xff : 0x00;
                break;
            case 2: /* truncate */
                n = at;
                break;
            default: /* a 32-bit extreme value */
                if (at + 4 <= n) memset(buf + at, (next() & 1) ? 0xff : 0x7f, 4);
            }
        }
        one_input(buf, n);
    }
    printf("%d %s variants of %s parsed without a crash\n", iterations, argv[1], argv[2]);
    free(seed);
    free(buf);
    return 0;
}
#endif
