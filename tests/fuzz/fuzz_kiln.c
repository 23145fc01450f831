/*
 * libFuzzer target: .kiln model files (src/runtime/model_file.c and
 * graph_codec.c) as `kiln serve` and `kiln run` open them, then graph
 * checks, shape inference and the optimizer (what opening a model runs).
 * The bytes sit in a page-aligned buffer, as a mapped file would.
 *
 * Each input is opened twice: as it is, and with its crc32 fields
 * recomputed (header, section table, sections), so that mutations reach the
 * section decoders instead of stopping at a checksum.
 */
#include "fuzz_model.h"
#include "model.h"
#include "model_file.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t crc(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* Rewrites the checksums model_file.h describes, where they fit in size. */
static void repair_crcs(unsigned char *b, size_t size)
{
    if (size < KF_HEADER_SIZE) return;
    uint64_t count = get_le(b + 20, 4), table = get_le(b + 32, 8);
    if (count > 16 || table > size || count * KF_ENTRY_SIZE > size - table) return;
    for (uint64_t i = 0; i < count; i++) {
        unsigned char *e = b + table + i * KF_ENTRY_SIZE;
        uint64_t off = get_le(e + 8, 8), len = get_le(e + 16, 8);
        if (off <= size && len <= size - off) put_le32(e + 32, crc(b + off, (size_t)len));
    }
    put_le32(b + 44, crc(b + table, (size_t)(count * KF_ENTRY_SIZE)));
    put_le32(b + 40, 0);
    put_le32(b + 40, crc(b, KF_HEADER_SIZE));
}

static void open_model(unsigned char *buf, size_t size)
{
    char err[KG_ERRLEN];
    kg_graph *g = NULL;
    kg_meta meta = {0};
    kf_image img = {0};
    /* Both with and without the weights' crc32 (KILN_OPEN_TRUST_WEIGHTS),
     * so mutated weights reach the decoder too. */
    for (unsigned flags = 0; flags <= KF_LOAD_SKIP_WEIGHT_CRC; flags++) {
        if (kf_load_memory(buf, size, flags, &g, &meta, &img, err) != KILN_OK) continue;
        fuzz_finish_model(g, &meta, err);
        kf_image_release(&img);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *buf = aligned_alloc(4096, (size + 4096) / 4096 * 4096);
    if (!buf) return 0;
    memcpy(buf, data, size);
    open_model(buf, size);
    repair_crcs(buf, size);
    if (memcmp(buf, data, size)) open_model(buf, size);
    free(buf);
    return 0;
}
