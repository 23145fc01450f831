/*
 * libFuzzer target: .kiln model files (src/runtime/model_file.c and
 * graph_codec.c) as `kiln serve` and `kiln run` open them, then graph
 * checks, shape inference and the optimizer (what opening a model runs).
 * The bytes sit in a page-aligned buffer, as a mapped file would.
 */
#include "model.h"
#include "model_file.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[KG_ERRLEN];
    kg_graph *g = NULL;
    kg_meta meta = {0};
    kf_image img = {0};
    unsigned char *buf = aligned_alloc(4096, (size + 4096) / 4096 * 4096);
    if (!buf) return 0;
    memcpy(buf, data, size);
    /* Both with and without the weights' crc32 (KILN_OPEN_TRUST_WEIGHTS),
     * so mutated weights reach the decoder too. */
    for (unsigned flags = 0; flags <= KF_LOAD_SKIP_WEIGHT_CRC; flags++) {
        if (kf_load_memory(buf, size, flags, &g, &meta, &img, err) != KILN_OK) continue;
        if (kg_graph_check(g, err) != KILN_OK) abort(); /* the loader validated it */
        kiln_model *m = NULL;
        if (kg_infer_shapes(g, 0, err) != KILN_OK) {
            kg_graph_free(g);
            kg_meta_free(&meta);
        } else if (km_finish(g, &meta, &m, "fuzz") == KILN_OK) { /* takes g and meta */
            kiln_model_free(m);
        }
        kf_image_release(&img);
        break;
    }
    free(buf);
    return 0;
}
