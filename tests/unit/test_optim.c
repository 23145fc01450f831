/* Optimizers, schedules, clipping, and deterministic training. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/ckpt.h"
#include "train/net.h"
#include "train/optim.h"
#include "fixtures.h"

static void sgd_momentum_and_weight_decay(void **state)
{
    (void)state;
    kt_optim o;
    kt_optim_defaults(&o);
    o.lr = 0.1f;
    o.momentum = 0.5f;
    o.weight_decay = 0.01f;
    float v[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f}, s[2] = {0, 0};
    float bv[1] = {3.0f}, bg[1] = {1.0f}, bs[1] = {0};
    kt_param p[2] = {{v, g, s, 2, 1}, {bv, bg, bs, 1, 0}};
    kt_optim_step(&o, p, 2, o.lr, 1);
    /* d = g + wd v; m = d; v -= lr m */
    double d0 = 0.5 + 0.01 * 1.0;
    assert_float_equal(v[0], 1.0 - 0.1 * d0, 1e-6);
    assert_float_equal(bv[0], 3.0 - 0.1 * 1.0, 1e-6); /* no decay on the bias */
    float v0 = v[0];
    kt_optim_step(&o, p, 2, o.lr, 2);
    double d1 = 0.5 + 0.01 * v0, m1 = 0.5 * d0 + d1;
    assert_float_equal(v[0], v0 - 0.1 * m1, 1e-6);
}

static void adam_first_steps(void **state)
{
    (void)state;
    kt_optim o;
    kt_optim_defaults(&o);
    o.kind = KT_ADAM;
    o.lr = 0.01f;
    float v[3] = {1, 1, 1}, g[3] = {0.3f, -4.0f, 1e-3f}, s[6] = {0};
    kt_param p = {v, g, s, 3, 1};
    kt_optim_step(&o, &p, 1, o.lr, 1);
    /* bias-corrected first step: lr * g / (|g| + eps) = lr * sign(g) */
    assert_float_equal(v[0], 1 - 0.01, 1e-5);
    assert_float_equal(v[1], 1 + 0.01, 1e-5);
    assert_float_equal(v[2], 1 - 0.01, 1e-4);
    /* second step against a reference computed in double */
    double m = 0.1 * 0.3, vv = 0.001 * 0.09;
    m = 0.9 * m + 0.1 * 0.3, vv = 0.999 * vv + 0.001 * 0.09;
    double mh = m / (1 - 0.81), vh = vv / (1 - 0.999 * 0.999);
    double want = v[0] - 0.01 * mh / (sqrt(vh) + 1e-8);
    kt_optim_step(&o, &p, 1, o.lr, 2);
    assert_float_equal(v[0], want, 1e-6);
}

static void schedules_and_clipping(void **state)
{
    (void)state;
    kt_optim o;
    kt_optim_defaults(&o);
    o.lr = 1.0f;
    o.sched = KT_SCHED_STEP;
    o.step_every = 2;
    o.step_gamma = 0.5f;
    assert_float_equal(kt_lr_at(&o, 0, 100, 0), 1.0, 1e-7);
    assert_float_equal(kt_lr_at(&o, 0, 100, 1), 1.0, 1e-7);
    assert_float_equal(kt_lr_at(&o, 0, 100, 2), 0.5, 1e-7);
    assert_float_equal(kt_lr_at(&o, 0, 100, 5), 0.25, 1e-7);
    o.sched = KT_SCHED_COSINE;
    o.min_lr = 0.1f;
    assert_float_equal(kt_lr_at(&o, 0, 100, 0), 1.0, 1e-6);
    assert_float_equal(kt_lr_at(&o, 50, 100, 0), 0.55, 1e-6);
    assert_float_equal(kt_lr_at(&o, 100, 100, 0), 0.1, 1e-6);
    o.warmup_steps = 10;
    assert_float_equal(kt_lr_at(&o, 0, 100, 0), 0.1, 1e-6);
    /* clipping: the update uses g * clip / |g| */
    kt_optim_defaults(&o);
    o.lr = 1.0f;
    o.momentum = 0;
    o.clip_norm = 1.0f;
    float v[2] = {0, 0}, g[2] = {3, 4}, s[2] = {0};
    kt_param p = {v, g, s, 2, 1};
    double norm = kt_optim_step(&o, &p, 1, 1.0f, 1);
    assert_float_equal(norm, 5.0, 1e-6);
    assert_float_equal(v[0], -0.6, 1e-6);
    assert_float_equal(v[1], -0.8, 1e-6);
}

/* Trains a tiny net on fixed data for a few steps. */
static void train_steps(kt_net *net, int steps)
{
    float x[8 * 16];
    int32_t y[8];
    for (int i = 0; i < 8; i++) {
        y[i] = i % 2;
        for (int k = 0; k < 16; k++) x[i * 16 + k] = (float)((i * 7 + k * 3) % 11) / 11.0f - y[i];
    }
    for (int t = 1; t <= steps; t++) {
        kt_net_forward(net, x, 8, 1);
        int correct;
        kt_net_backward(net, x, y, 8, &correct);
        kt_net_step(net, net->opt.lr, t);
    }
}

static void training_is_deterministic_and_checkpoints_round_trip(void **state)
{
    (void)state;
    const char *yaml = "input: {channels: 1, height: 4, width: 4}\nlayers:\n"
                       "  - {type: conv, filters: 4, kernel: 3, pad: 1}\n  - {type: batchnorm}\n"
                       "  - {type: relu}\n  - {type: dense, units: 2}\n";
    kt_arch arch;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_arch_parse(yaml, strlen(yaml), "d", &arch, &err), KILN_OK);
    kt_optim o;
    kt_optim_defaults(&o);
    o.kind = KT_ADAM;
    o.lr = 0.01f;
    kt_net a, b;
    assert_int_equal(kt_net_build(&a, &arch, 8, &o, 5, &err), KILN_OK);
    assert_int_equal(kt_net_build(&b, &arch, 8, &o, 5, &err), KILN_OK);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.nparams);
    kt_net c;
    assert_int_equal(kt_net_build(&c, &arch, 8, &o, 6, &err), KILN_OK);
    assert_true(memcmp(a.params, c.params, sizeof(float) * a.nparams) != 0);
    kt_net_free(&c);
    float before = a.params[0];
    train_steps(&a, 5);
    train_steps(&b, 5);
    assert_true(a.params[0] != before);
    assert_memory_equal(a.params, b.params, sizeof(float) * a.nparams);
    assert_memory_equal(a.state, b.state, sizeof(float) * a.nstate);

    /* a checkpoint holds parameters, optimizer state and metadata */
    char dir[512], path[600];
    assert_non_null(fixture_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/m.kiln", dir);
    kt_meta meta = {0};
    char *ay = kt_arch_to_yaml(&a.arch);
    assert_int_equal(kt_meta_set(&meta, "arch", ay), KILN_OK);
    assert_int_equal(kt_meta_set(&meta, "labels", "a\nb\n"), KILN_OK);
    free(ay);
    assert_int_equal(kt_ckpt_save(path, &a, &meta, 1, &err), KILN_OK);
    kt_ckpt ck;
    assert_int_equal(kt_ckpt_load(path, &ck, &err), KILN_OK);
    assert_string_equal(kt_meta_get(&ck.meta, "labels"), "a\nb\n");
    kt_net r;
    assert_int_equal(kt_ckpt_to_net(&ck, path, 8, &o, 1, &r, &err), KILN_OK);
    assert_memory_equal(r.params, a.params, sizeof(float) * a.nparams);
    assert_memory_equal(r.state, a.state, sizeof(float) * a.nstate);
    /* resumed training continues exactly as uninterrupted training */
    train_steps(&a, 3);
    train_steps(&r, 3);
    assert_memory_equal(r.params, a.params, sizeof(float) * a.nparams);
    kt_net_free(&r);
    kt_ckpt_free(&ck);
    /* one flipped byte is a checksum error; a cut file too */
    FILE *f = fopen(path, "r+b");
    fseek(f, 40, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 40, SEEK_SET);
    fputc(ch ^ 1, f);
    fclose(f);
    assert_int_equal(kt_ckpt_load(path, &ck, &err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "checksum"));
    assert_int_equal(fixture_write(path, "KILNTRN1", 8), 0);
    assert_int_equal(kt_ckpt_load(path, &ck, &err), KILN_ERR_FORMAT);
    kt_meta_free(&meta);
    fixture_rmtree(dir);
    kt_net_free(&a);
    kt_net_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sgd_momentum_and_weight_decay),
        cmocka_unit_test(adam_first_steps),
        cmocka_unit_test(schedules_and_clipping),
        cmocka_unit_test(training_is_deterministic_and_checkpoints_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
