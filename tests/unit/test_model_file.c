/* .kiln files: round trips (plain and compressed) and corrupt files that
 * must be clean errors: truncated at every offset, bytes flipped anywhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "model_file.h"

#include <zlib.h>

static kg_graph *small_graph(void)
{
    kg_graph *g = kg_graph_new();
    int64_t xs[] = {1, 2, 5, 5}, ws[] = {3, 2, 3, 3}, bs[] = {3};
    int x = kg_add_value(g, "x", KG_INPUT, 4, xs);
    int w = kg_add_const_zeros(g, "w", 4, ws);
    int b = kg_add_const_zeros(g, "b", 1, bs);
    for (int i = 0; i < 54; i++) g->values[w].data[i] = (float)i * 0.5f - 3.f;
    for (int i = 0; i < 3; i++) g->values[b].data[i] = (float)i;
    int c = kg_add_value(g, "c", KG_ACTIVATION, 0, NULL);
    int r = kg_add_value(g, "r", KG_ACTIVATION, 0, NULL);
    kg_attrs a;
    kg_attrs_default(&a);
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
    kg_add_node(g, "conv", KG_OP_CONV, (int[]){x, w, b}, 3, c, &a);
    kg_add_node(g, "relu", KG_OP_RELU, (int[]){c}, 1, r, NULL);
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = r;
    g->name = strdup("small");
    return g;
}

static char *tmp_path(const char *tag)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/kiln-test-%ld-%s.kiln", (long)getpid(), tag);
    return buf;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(*len);
    assert_int_equal(fread(p, 1, *len, f), *len);
    fclose(f);
    return p;
}

static void same_graph(const kg_graph *a, const kg_graph *b)
{
    assert_int_equal(a->n_values, b->n_values);
    assert_int_equal(a->n_nodes, b->n_nodes);
    for (int i = 0; i < a->n_values; i++) {
        assert_string_equal(a->values[i].name, b->values[i].name);
        assert_int_equal(a->values[i].kind, b->values[i].kind);
        if (a->values[i].kind == KG_CONST) {
            assert_int_equal(0, (uintptr_t)b->values[i].data % KILN_ALIGN);
            assert_memory_equal(a->values[i].data, b->values[i].data,
                                (size_t)kg_numel(&a->values[i]) * 4);
        }
    }
    for (int i = 0; i < a->n_nodes; i++) {
        assert_string_equal(a->nodes[i].name, b->nodes[i].name);
        assert_int_equal(a->nodes[i].op, b->nodes[i].op);
        assert_memory_equal(a->nodes[i].a.pad, b->nodes[i].a.pad, sizeof a->nodes[i].a.pad);
    }
}

static void round_trip(unsigned flags)
{
    char err[KG_ERRLEN] = "";
    kg_graph *g = small_graph(), *h = NULL;
    kg_meta m = {0}, m2;
    kf_image img;
    assert_int_equal(kg_meta_set(&m, "name", "small"), KILN_OK);
    assert_int_equal(kg_meta_set(&m, "labels", "cat\ndog\nbird"), KILN_OK);
    const char *path = tmp_path(flags ? "z" : "plain");
    assert_int_equal(kf_write(path, g, &m, flags, err), KILN_OK);
    kiln_status st = kf_load(path, 0, &h, &m2, &img, err);
    if (st) fail_msg("%s", err);
    same_graph(g, h);
    assert_string_equal(kg_meta_get(&m2, "labels"), "cat\ndog\nbird");
    assert_int_equal(kg_infer_shapes(h, 2, err), KILN_OK);
    kg_graph_free(h);
    kf_image_release(&img);
    kg_meta_free(&m2);
    kg_meta_free(&m);
    kg_graph_free(g);
    unlink(path);
}

static void plain_round_trip(void **state)
{
    (void)state;
    round_trip(0);
}

static void compressed_round_trip(void **state)
{
    (void)state;
    round_trip(KF_WRITE_COMPRESS);
}

/* Every prefix of a valid file and every single flipped byte is either
 * rejected with a message or (for a flip inside padding) loads a graph that
 * still passes the structural checks. */
static void corrupt(unsigned flags)
{
    char err[KG_ERRLEN];
    kg_graph *g = small_graph();
    const char *path = tmp_path("corrupt");
    assert_int_equal(kf_write(path, g, NULL, flags, err), KILN_OK);
    kg_graph_free(g);
    size_t len;
    unsigned char *good = read_file(path, &len);
    unlink(path);
    unsigned char *buf = aligned_alloc(KF_PAGE, (len + KF_PAGE) / KF_PAGE * KF_PAGE);
    int rejected = 0, accepted = 0;
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(buf, good, cut);
        kg_graph *h = NULL;
        kg_meta m;
        kf_image img = {0};
        err[0] = 0;
        kiln_status st = kf_load_memory(buf, cut, 0, &h, &m, &img, err);
        assert_int_not_equal(st, KILN_OK);
        assert_null(h);
        assert_true(err[0] != 0);
        rejected++;
    }
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            memcpy(buf, good, len);
            buf[i] ^= (unsigned char)(1u << bit);
            kg_graph *h = NULL;
            kg_meta m;
            kf_image img = {0};
            kiln_status st = kf_load_memory(buf, len, 0, &h, &m, &img, err);
            if (st == KILN_OK) {
                assert_int_equal(good[i], 0);
                assert_int_equal(kg_graph_check(h, err), KILN_OK);
                kg_graph_free(h);
                kg_meta_free(&m);
                kf_image_release(&img);
                accepted++;
            } else {
                rejected++;
            }
        }
    }
    /* crc32 catches every single-bit error except in padding and reserved
     * fields, which are zero */
    assert_true(rejected > (int)len);
    (void)accepted;
    free(buf);
    free(good);
}

static void truncated_and_flipped_plain(void **state)
{
    (void)state;
    corrupt(0);
}

static void truncated_and_flipped_compressed(void **state)
{
    (void)state;
    corrupt(KF_WRITE_COMPRESS);
}

/* Sections whose checksums are right but whose contents lie: the decoders
 * must still refuse them. */
static void decoder_rejects_lies(void **state)
{
    (void)state;
    char err[KG_ERRLEN];
    kg_graph *g = small_graph();
    kb_writer gw = {0}, ww = {0};
    assert_int_equal(kf_graph_encode(g, &gw, &ww, err), KILN_OK);
    kg_graph_free(g);
    int rejected = 0;
    for (size_t cut = 0; cut < gw.len; cut++) {
        kg_graph *h = NULL;
        assert_int_not_equal(kf_graph_decode(gw.buf, cut, ww.buf, ww.len, &h, err), KILN_OK);
        assert_null(h);
        rejected++;
    }
    /* weights section too short for the constants */
    kg_graph *h = NULL;
    assert_int_equal(kf_graph_decode(gw.buf, gw.len, ww.buf, ww.len - 4, &h, err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err, "constant"));
    /* any byte set to 0xff: an error or a graph that passes the checks */
    for (size_t i = 0; i < gw.len; i++) {
        unsigned char save = gw.buf[i];
        gw.buf[i] = 0xff;
        h = NULL;
        if (kf_graph_decode(gw.buf, gw.len, ww.buf, ww.len, &h, err) == KILN_OK) {
            assert_int_equal(kg_graph_check(h, err), KILN_OK);
            kg_graph_free(h);
        }
        gw.buf[i] = save;
    }
    assert_true(rejected > 0);
    kb_writer_free(&gw);
    kb_writer_free(&ww);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A compressed section claiming more bytes than zlib can expand its stored
 * bytes to is refused before anything is allocated for it (found by
 * fuzz_kiln: 44 bytes claiming 3.8 GB). */
static void compressed_section_cannot_claim_a_bomb(void **state)
{
    (void)state;
    char err[KG_ERRLEN];
    kg_graph *g = small_graph();
    kg_meta meta = {0};
    const char *path = tmp_path("bomb");
    assert_int_equal(kf_write(path, g, &meta, KF_WRITE_COMPRESS, err), KILN_OK);
    kg_graph_free(g);
    size_t len;
    unsigned char *buf = read_file(path, &len);
    unlink(path);
    uint32_t count = buf[20] | buf[21] << 8;
    unsigned char *table = buf + KF_HEADER_SIZE;
    for (uint32_t i = 0; i < count; i++) {
        unsigned char *e = table + i * KF_ENTRY_SIZE;
        if (e[0] != KF_SEC_GRAPH) continue;
        uint64_t stored = 0;
        for (int b = 7; b >= 0; b--) stored = stored << 8 | e[16 + b];
        uint64_t claim = (stored + 1) * 1032; /* past deflate's 1032:1 */
        for (int b = 0; b < 8; b++) e[24 + b] = (unsigned char)(claim >> (8 * b));
    }
    put_u32(buf + 44, (uint32_t)crc32(0, table, count * KF_ENTRY_SIZE));
    put_u32(buf + 40, 0);
    put_u32(buf + 40, (uint32_t)crc32(0, buf, KF_HEADER_SIZE));
    kf_image img = {0};
    kg_meta m;
    assert_int_equal(kf_load_memory(buf, len, 0, &g, &m, &img, err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err, "more than zlib can expand to"));
    free(buf);
}

static void missing_file_is_not_found(void **state)
{
    (void)state;
    char err[KG_ERRLEN];
    kg_graph *g;
    kg_meta m;
    kf_image img;
    assert_int_equal(kf_load("/nonexistent/x.kiln", 0, &g, &m, &img, err), KILN_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "/nonexistent/x.kiln"));
}

/* Is path mapped into this process (a line of /proc/self/maps names it)? */
static int is_mapped(const char *path)
{
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4608];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, path)) found = 1;
    fclose(f);
    return found;
}

/* kf_preload: a later kf_load of the same file reads the huge-page copy
 * (the file is not mapped, the graph is the same); a rewritten file is
 * read again, not served from the stale copy; the limit and a missing
 * file are errors. */
static void preloaded_copy_serves_unchanged_files_only(void **state)
{
    (void)state;
    char err[KG_ERRLEN] = "";
    kg_graph *g = small_graph(), *h = NULL;
    kg_meta m = {0}, m2;
    kf_image img;
    const char *path = tmp_path("preload");
    assert_int_equal(kf_write(path, g, &m, 0, err), KILN_OK);
    assert_int_equal(kf_preload(path, 16, err), KILN_ERR_LIMIT);
    assert_non_null(strstr(err, "over the limit"));
    assert_int_equal(kf_preload("/nonexistent/x.kiln", 0, err), KILN_ERR_NOT_FOUND);
    assert_int_equal(kf_preload(path, 0, err), KILN_OK);
    assert_int_equal(kf_preload(path, 0, err), KILN_OK); /* again: a no-op */
    assert_int_equal(kf_load(path, 0, &h, &m2, &img, err), KILN_OK);
    assert_null(img.map); /* nothing mapped: the copy is used */
    assert_false(is_mapped(path));
    same_graph(g, h);
    kg_graph_free(h);
    kf_image_release(&img);
    kg_meta_free(&m2);
    /* Rewrite the file shorter (a corrupt one): a different inode or
     * mtime, so loading it must see the new bytes and fail. */
    size_t len;
    unsigned char *bytes = read_file(path, &len);
    unlink(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len / 2, f), len / 2);
    fclose(f);
    free(bytes);
    assert_int_not_equal(kf_load(path, 0, &h, &m2, &img, err), KILN_OK);
    kg_meta_free(&m);
    kg_graph_free(g);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_round_trip),
        cmocka_unit_test(compressed_round_trip),
        cmocka_unit_test(truncated_and_flipped_plain),
        cmocka_unit_test(truncated_and_flipped_compressed),
        cmocka_unit_test(decoder_rejects_lies),
        cmocka_unit_test(missing_file_is_not_found),
        cmocka_unit_test(compressed_section_cannot_claim_a_bomb),
        cmocka_unit_test(preloaded_copy_serves_unchanged_files_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
