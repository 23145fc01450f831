/* Trained nets as .kiln files: the runtime's inference on the exported
 * model equals the trainer's own forward pass, and the file reads back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "kiln.h"
#include "loader.h"
#include "train/export.h"
#include "train/train_ops.h"

static const char *ARCH =
    "name: exp\n"
    "input: {name: image, shape: [1, 2, 9, 9]}\n"
    "layers:\n"
    "  - {type: conv, filters: 4, kernel: 3, pad: same, bn: true, act: relu}\n"
    "  - {type: maxpool, kernel: 2, stride: 2}\n"
    "  - {type: conv, filters: 6, kernel: 3, stride: 2, pad: 1, act: relu}\n"
    "  - {type: avgpool, kernel: 2, stride: 1}\n"
    "  - {type: dense, units: 8, act: relu}\n"
    "  - {type: dense, units: 5}\n"
    "  - {type: softmax}\n";

/* Residual blocks: a basic block, a bottleneck with a strided projection. */
static const char *RES_ARCH =
    "name: res\n"
    "input: {name: image, shape: [1, 2, 9, 9]}\n"
    "layers:\n"
    "  - {type: conv, filters: 4, kernel: 3, pad: same, bn: true, act: relu}\n"
    "  - {type: basic, filters: 4}\n"
    "  - {type: bottleneck, mid: 2, out: 6, stride: 2}\n"
    "  - {type: gap}\n"
    "  - {type: dense, units: 5}\n"
    "  - {type: softmax}\n";

static void inference_matches_trainer(const char *arch_text)
{
    assert_int_equal(kiln_init(), KILN_OK);
    kt_arch arch;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_arch_parse(arch_text, strlen(arch_text), "exp", &arch, &err), KILN_OK);
    kt_optim opt;
    kt_optim_defaults(&opt);
    kt_net net;
    assert_int_equal(kt_net_build(&net, &arch, 4, &opt, 3, &err), KILN_OK);
    const int in_sz = 2 * 9 * 9;
    float x[4 * 2 * 9 * 9];
    int32_t y[4] = {0, 1, 2, 3};
    uint64_t r = 9;
    for (int i = 0; i < 4 * in_sz; i++) {
        r = kiln__mix64(r);
        x[i] = (float)((r >> 40) * (1.0 / 16777216.0)) * 2 - 1;
    }
    /* a few steps so that batch norm's running statistics are not 0/1 */
    for (int t = 1; t <= 3; t++) {
        kt_net_forward(&net, x, 4, 1);
        int c;
        kt_net_backward(&net, x, y, 4, &c);
        kt_net_step(&net, 0.05f, t);
    }
    const float *logits = kt_net_forward(&net, x, 4, 0);
    float prob[20];
    kt_softmax_xent(4, 5, logits, y, NULL, prob, NULL);

    char dir[512], path[600];
    assert_non_null(fixture_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/m.kiln", dir);
    kt_meta meta = {0};
    char *ay = kt_arch_to_yaml(&arch);
    kt_meta_set(&meta, "arch", ay);
    kt_meta_set(&meta, "labels", "a\nb\nc\nd\ne\n");
    kt_meta_set(&meta, "mean", "0.5,0.25");
    free(ay);
    if (kt_export_kiln(path, &net, &meta, &err) != KILN_OK) fail_msg("%s", err.msg);

    kiln_model *m;
    assert_int_equal(kiln_model_open(path, 0, &m), KILN_OK);
    assert_int_equal(kiln_model_label_count(m), 5);
    assert_string_equal(kiln_model_meta(m, "mean"), "0.5,0.25");
    kiln_session_options so = {.threads = 1, .batch = 4};
    kiln_session *s;
    assert_int_equal(kiln_session_create(m, &so, &s), KILN_OK);
    kiln_io_info oi;
    assert_int_equal(kiln_session_output(s, 0, &oi), KILN_OK);
    assert_int_equal(oi.dims[0], 4);
    assert_int_equal(oi.dims[1], 5);
    float out[20];
    const float *ins[1] = {x};
    float *outs[1] = {out};
    assert_int_equal(kiln_session_run(s, ins, outs), KILN_OK);
    for (int i = 0; i < 20; i++) assert_float_equal(out[i], prob[i], 1e-5);
    kiln_session_free(s);
    kiln_model_free(m);

    /* read back for kiln eval */
    kt_net back;
    kt_meta bm;
    assert_int_equal(kt_import_kiln(path, 4, &back, &bm, &err), KILN_OK);
    assert_int_equal(back.nparams, net.nparams);
    assert_memory_equal(back.params, net.params, sizeof(float) * net.nparams);
    assert_string_equal(kt_meta_get(&bm, "labels"), "a\nb\nc\nd\ne\n");
    kt_net_free(&back);
    kt_meta_free(&bm);

    /* a .kiln without the trainer's metadata is refused with a reason */
    kt_meta bare = {0};
    assert_int_equal(kt_export_kiln(path, &net, &bare, &err), KILN_OK);
    assert_int_equal(kt_import_kiln(path, 4, &back, &bm, &err), KILN_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "arch"));
    kt_meta_free(&meta);
    kt_net_free(&net);
    fixture_rmtree(dir);
}

static void runtime_inference_matches_trainer(void **state)
{
    (void)state;
    inference_matches_trainer(ARCH);
}

static void residual_inference_matches_trainer(void **state)
{
    (void)state;
    inference_matches_trainer(RES_ARCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runtime_inference_matches_trainer),
        cmocka_unit_test(residual_inference_matches_trainer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
