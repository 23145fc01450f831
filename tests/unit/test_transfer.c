/* Transfer learning as `kiln train --init B.kiln --freeze backbone` does it:
 * a seeded random ResNet-style backbone with another head (bottleneck blocks) imported the
 * way `kiln import` writes it (batch norm folded into the convs), a dense
 * head trained on a small class-per-folder image set the test writes. The
 * head learns (test accuracy well above chance) and the backbone's weights
 * and batch-norm statistics come out bit-identical, with and without the
 * feature cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "kiln.h"
#include "loader.h"
#include "model_file.h"
#include "train/export.h"
#include "train/trainer.h"

/* Built for 224x224; global average pooling lets it train at 20x20. */
static const char *ARCH = "name: tiny-resnet-head\n"
                          "input: {name: image, shape: [1, 3, 224, 224]}\n"
                          "layers:\n"
                          "  - {type: conv, filters: 8, kernel: 3, stride: 2, pad: 1, bn: true, "
                          "act: relu}\n"
                          "  - {type: maxpool, kernel: 3, stride: 2, pad: 1}\n"
                          "  - {type: bottleneck, mid: 4, out: 16, stride: 1}\n"
                          "  - {type: bottleneck, mid: 8, out: 32, stride: 2}\n"
                          "  - {type: gap}\n"
                          "  - {type: flatten}\n"
                          "  - {type: dense, units: 4}\n"
                          "  - {type: softmax}\n";

enum { SIZE = 20, CLASSES = 4 };

/* Class c: noise plus a colour (red, green, blue) or, for class 3, bright
 * vertical stripes. */
static void write_images(const char *root, const char *split, int per_class, uint64_t seed)
{
    static const char *names[CLASSES] = {"red", "green", "blue", "stripes"};
    uint8_t pix[SIZE * SIZE * 3];
    for (int c = 0; c < CLASSES; c++)
        for (int i = 0; i < per_class; i++) {
            for (int p = 0; p < SIZE * SIZE; p++)
                for (int ch = 0; ch < 3; ch++) {
                    seed = kiln__mix64(seed);
                    int v = (int)(seed >> 58) * 2; /* noise 0..126 */
                    if (c < 3 && ch == c) v += 120;
                    if (c == 3 && (p % SIZE) % 4 < 2) v += 120;
                    pix[p * 3 + ch] = (uint8_t)v;
                }
            size_t len;
            uint8_t *png = fixture_png(pix, SIZE, SIZE, 3, 8, 0, 0, &len);
            assert_non_null(png);
            char path[1024];
            snprintf(path, sizeof path, "%s/%s/%s/%d.png", root, split, names[c], i);
            assert_int_equal(fixture_write(path, png, len), 0);
            free(png);
        }
}

static char dir[512], data[600], arch_path[600], init_path[600];

static int setup(void **state)
{
    (void)state;
    if (kiln_init() != KILN_OK || !fixture_tmpdir(dir, sizeof dir)) return -1;
    snprintf(data, sizeof data, "%s/images", dir);
    write_images(data, "train", 24, 1);
    write_images(data, "test", 10, 2);
    snprintf(arch_path, sizeof arch_path, "%s/arch.yaml", dir);
    if (fixture_write(arch_path, ARCH, strlen(ARCH))) return -1;
    /* the stand-in for pretrained weights: the same backbone with a
     * 10-class head, seeded, imported as `kiln import` does */
    char pre_path[700], *pre = strdup(ARCH);
    memcpy(strstr(pre, "units: 4"), "units: 9", 8);
    snprintf(pre_path, sizeof pre_path, "%s/pretrained.yaml", dir);
    int bad = fixture_write(pre_path, pre, strlen(pre));
    free(pre);
    snprintf(init_path, sizeof init_path, "%s/backbone.kiln", dir);
    kiln_model *m;
    if (bad || kiln_model_from_yaml(pre_path, 3, &m) != KILN_OK) return -1;
    kiln_status st = kiln_model_save(m, init_path, 0);
    kiln_model_free(m);
    return st == KILN_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    fixture_rmtree(dir);
    return 0;
}

/* The backbone as --init loads it, at the data's size. */
static void reference_backbone(kt_net *ref)
{
    kt_arch arch;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_arch_parse(ARCH, strlen(ARCH), "ref", &arch, &err), KILN_OK);
    arch.height = arch.width = SIZE;
    kt_optim opt;
    kt_optim_defaults(&opt);
    assert_int_equal(
        kt_net_build_frozen(ref, &arch, 4, &opt, 99, kt_arch_backbone_layers(&arch), &err),
        KILN_OK);
    kg_graph *g;
    kg_meta meta = {0};
    kf_image img = {0};
    char ge[KG_ERRLEN];
    assert_int_equal(kf_load(init_path, 0, &g, &meta, &img, ge), KILN_OK);
    int copied = 0;
    assert_int_equal(kt_net_load_graph(ref, g, init_path, &copied, &err), KILN_OK);
    /* stem conv+bn, 2 bottlenecks of 3 conv+bn and a projection conv+bn;
     * not the 9-class head */
    assert_int_equal(copied, 2 * (1 + 4 + 4));
    kg_graph_free(g);
    kg_meta_free(&meta);
    kf_image_release(&img);
}

static void train_head(const char *out, int hflip, kt_train_result *res)
{
    kt_train_config cfg;
    kt_train_defaults(&cfg);
    cfg.arch_path = arch_path;
    cfg.data = data;
    cfg.out = out;
    cfg.init = init_path;
    cfg.freeze = 1;
    cfg.epochs = hflip ? 3 : 30;
    cfg.batch = 16;
    cfg.opt.kind = KT_ADAM;
    cfg.opt.lr = 0.02f;
    cfg.folder_size = SIZE;
    cfg.hflip = hflip;
    kiln_errbuf err = {{0}};
    kiln_status st = kt_train(&cfg, res, &err);
    if (st != KILN_OK) fail_msg("kt_train: %s", err.msg);
}

static void check_backbone_unchanged(const char *out, const kt_net *ref)
{
    kt_net got;
    kt_meta meta;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_import_kiln(out, 4, &got, &meta, &err), KILN_OK);
    assert_int_equal(got.nparams, ref->nparams);
    assert_true(ref->frozen_params > 0 && ref->frozen_params < ref->nparams);
    /* every backbone float (weights, BN gamma/beta and running statistics) */
    assert_memory_equal(got.params, ref->params, sizeof(float) * ref->frozen_params);
    /* while the head moved */
    assert_memory_not_equal(got.params + ref->frozen_params, ref->params + ref->frozen_params,
                            sizeof(float) * (ref->nparams - ref->frozen_params));
    char frozen[16];
    snprintf(frozen, sizeof frozen, "%d", ref->frozen);
    assert_string_equal(kt_meta_get(&meta, "frozen_layers"), frozen);
    kt_net_free(&got);
    kt_meta_free(&meta);
}

static void frozen_backbone_dense_head_learns(void **state)
{
    (void)state;
    kt_net ref;
    reference_backbone(&ref);
    char out[700];
    snprintf(out, sizeof out, "%s/head.kiln", dir);
    kt_train_result res;
    train_head(out, 0, &res); /* no augmentation: cached features */
    printf("# transfer: test accuracy %.3f after %d epochs\n", res.test_acc, res.epochs_run);
    assert_true(res.test_acc >= 0.75); /* chance is 0.25 */
    check_backbone_unchanged(out, &ref);

    /* with augmentation the backbone runs on every batch; still untouched */
    snprintf(out, sizeof out, "%s/head-flip.kiln", dir);
    train_head(out, 1, &res);
    check_backbone_unchanged(out, &ref);
    kt_net_free(&ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frozen_backbone_dense_head_learns),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
