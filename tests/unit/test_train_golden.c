/* The trainer against PyTorch: forward (training mode), loss, every
 * parameter gradient and the batch-norm running statistics after one
 * forward pass, on the small nets in tests/data/train-golden/ (a plain CNN
 * and a residual net with basic and bottleneck blocks and projection
 * shortcuts), from the files make_golden.py wrote with torch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h"
#include "train/net.h"
#include "train/train_ops.h"

typedef struct golden {
    char name[16][16];
    float *data[16];
    uint32_t count[16];
    int n;
} golden;

static const float *get(const golden *g, const char *name, uint32_t want)
{
    for (int i = 0; i < g->n; i++)
        if (!strcmp(g->name[i], name)) {
            if (g->count[i] != want)
                fail_msg("%s: %u values in the golden file, the net has %u", name, g->count[i],
                         want);
            return g->data[i];
        }
    fail_msg("%s: not in the golden file", name);
    return NULL;
}

static void read_golden(const char *path, golden *g)
{
    uint8_t *b;
    size_t len, at = 0;
    kiln_errbuf err = {{0}};
    if (kiln__read_file(path, 1 << 24, &b, &len, &err) != KILN_OK) fail_msg("%s", err.msg);
    memset(g, 0, sizeof *g);
    while (at < len) {
        uint32_t kl, n;
        assert_true(at + 4 <= len && g->n < 16);
        memcpy(&kl, b + at, 4);
        assert_true(kl < 16 && at + 8 + kl <= len);
        memcpy(g->name[g->n], b + at + 4, kl);
        memcpy(&n, b + at + 4 + kl, 4);
        at += 8 + kl;
        assert_true(at + (size_t)n * 4 <= len);
        g->data[g->n] = malloc((size_t)n * 4 + 4);
        memcpy(g->data[g->n], b + at, (size_t)n * 4);
        g->count[g->n++] = n;
        at += (size_t)n * 4;
    }
    free(b);
}

/* aarch64 gcc 12's vectoriser crashes (internal compiler error in
 * vect_transform_reduction) on assert_matches' fmax reduction: not
 * vectorised with gcc. clang has no `optimize` attribute and no such bug. */
#if defined(__GNUC__) && !defined(__clang__)
#define NOT_VECTORISED __attribute__((noinline, optimize("no-tree-vectorize")))
#else
#define NOT_VECTORISED
#endif

/* Elementwise |a - b| <= tol * max|b| (+ a floor for all-zero arrays). */
NOT_VECTORISED static void assert_matches(const char *what, const float *a, const float *b,
                                          int64_t n, double tol)
{
    double scale = 1e-6;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++)
        if (fabs((double)a[i] - b[i]) > tol * scale)
            fail_msg("%s[%lld]: kiln %.7g, torch %.7g (scale %.3g)", what, (long long)i,
                     (double)a[i], (double)b[i], scale);
}

static void check_net(const char *name)
{
    char path[1024];
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/data/train-golden/%s.yaml", src ? src : ".", name);
    uint8_t *y;
    size_t ylen;
    kiln_errbuf err = {{0}};
    if (kiln__read_file(path, 1 << 20, &y, &ylen, &err) != KILN_OK) fail_msg("%s", err.msg);
    kt_arch arch;
    assert_int_equal(kt_arch_parse((const char *)y, ylen, path, &arch, &err), KILN_OK);
    free(y);
    snprintf(path, sizeof path, "%s/tests/data/train-golden/%s.bin", src ? src : ".", name);
    golden g;
    read_golden(path, &g);

    const int64_t in_sz = (int64_t)arch.channels * arch.height * arch.width;
    const float *x0 = g.data[1];
    const int n = (int)(g.count[1] / in_sz);
    assert_true(n > 0 && g.count[1] == n * in_sz);
    kt_optim opt;
    kt_optim_defaults(&opt);
    kt_net net;
    assert_int_equal(kt_net_build(&net, &arch, n, &opt, 1, &err), KILN_OK);
    memcpy(net.params, get(&g, "params", (uint32_t)net.nparams), sizeof(float) * net.nparams);
    const float *x = get(&g, "x", (uint32_t)(n * in_sz));
    assert_ptr_equal(x, x0);
    const float *lf = get(&g, "labels", (uint32_t)n);
    int32_t labels[64];
    for (int i = 0; i < n; i++) labels[i] = (int32_t)lf[i];

    const float *logits = kt_net_forward(&net, x, n, 1);
    assert_matches("logits", logits, get(&g, "logits", (uint32_t)(n * net.num_classes)),
                   n * net.num_classes, 1e-4);
    int correct;
    double loss = kt_net_backward(&net, x, labels, n, &correct);
    const float want_loss = get(&g, "loss", 1)[0];
    if (fabs(loss - want_loss) > 1e-5 * fmax(1, fabs(want_loss)))
        fail_msg("loss: kiln %.7f, torch %.7f", loss, (double)want_loss);
    /* each parameter tensor against its own scale */
    const float *want = get(&g, "grads", (uint32_t)net.nparams);
    for (int k = 0; k < net.ngroups; k++) {
        char what[64];
        snprintf(what, sizeof what, "%s grad group %d", name, k);
        const int64_t off = net.groups[k].value - net.params;
        assert_matches(what, net.groups[k].grad, want + off, net.groups[k].n, 2e-4);
    }
    /* running statistics after the forward pass */
    assert_matches("params after forward", net.params, get(&g, "after", (uint32_t)net.nparams),
                   net.nparams, 1e-5);
    printf("# %s: %lld parameters, %d tensors, loss %.6f (torch %.6f)\n", name,
           (long long)net.nparams, net.ngroups, loss, (double)want_loss);
    kt_net_free(&net);
    for (int i = 0; i < g.n; i++) free(g.data[i]);
}

static void plain_cnn_matches_torch(void **state)
{
    (void)state;
    check_net("cnn");
}

static void residual_net_matches_torch(void **state)
{
    (void)state;
    check_net("resnet");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_cnn_matches_torch),
        cmocka_unit_test(residual_net_matches_torch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
