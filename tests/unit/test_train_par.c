/*
 * Training on two threads (kt_net_set_threads: conv and dense split by
 * samples, batch norm by channels, ReLU by ranges) computes the loss and
 * every gradient that one thread computes, up to float summation order,
 * on a net with conv, batch norm, ReLU, max pooling and dense layers and
 * a batch that does not split evenly; and a residual net the same.
 */
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

static void load_arch(const char *name, kt_arch *arch)
{
    char path[1024];
    const char *src = getenv("KILN_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/models/%s", src ? src : ".", name);
    uint8_t *y;
    size_t len;
    kiln_errbuf err = {{0}};
    assert_int_equal(kiln__read_file(path, 1 << 20, &y, &len, &err), KILN_OK);
    assert_int_equal(kt_arch_parse((const char *)y, len, path, arch, &err), KILN_OK);
    free(y);
}

/* Loss and gradients of one forward + backward at `threads`. */
static double grads_at(kt_net *net, int threads, const float *x, const int32_t *labels, int n,
                       float *grads)
{
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_net_set_threads(net, threads, &err), KILN_OK);
    kt_net_forward(net, x, n, 1);
    int correct;
    double loss = kt_net_backward(net, x, labels, n, &correct);
    memcpy(grads, net->grads, (size_t)net->nparams * sizeof(float));
    return loss;
}

static void same_on_two_threads(const char *arch_name)
{
    kiln_init();
    kiln_blas_set_threads(1);
    kt_arch arch;
    load_arch(arch_name, &arch);
    kt_optim opt;
    kt_optim_defaults(&opt);
    const int n = 7; /* 4 + 3 samples on two threads */
    kt_net net;
    kiln_errbuf err = {{0}};
    assert_int_equal(kt_net_build(&net, &arch, n, &opt, 3, &err), KILN_OK);
    const size_t in = (size_t)arch.channels * arch.height * arch.width;
    float *x = malloc(n * in * sizeof(float));
    int32_t labels[7];
    for (size_t i = 0; i < n * in; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (int i = 0; i < n; i++) labels[i] = (i * 3) % net.num_classes;
    float *g1 = malloc((size_t)net.nparams * sizeof(float));
    float *g2 = malloc((size_t)net.nparams * sizeof(float));
    double l1 = grads_at(&net, 1, x, labels, n, g1);
    double l2 = grads_at(&net, 2, x, labels, n, g2);
    assert_true(fabs(l1 - l2) <= 1e-5 * fabs(l1));
    double num = 0, den = 0;
    for (int64_t i = 0; i < net.nparams; i++) {
        num += ((double)g1[i] - g2[i]) * ((double)g1[i] - g2[i]);
        den += (double)g1[i] * g1[i];
    }
    assert_true(den > 0);
    assert_true(num <= 1e-10 * den); /* relative L2 error below 1e-5 */
    free(x);
    free(g1);
    free(g2);
    kt_net_free(&net);
}

static void small_cnn(void **state)
{
    (void)state;
    same_on_two_threads("small-cnn.yaml");
}

static void resnet_mini(void **state)
{
    (void)state;
    same_on_two_threads("resnet-mini.yaml");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_cnn),
        cmocka_unit_test(resnet_mini),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
