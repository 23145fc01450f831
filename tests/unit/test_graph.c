#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "graph.h"

/* x[N,3,32,32] -> conv(3->ch1, 3x3, pad 1) -> relu -> conv(ch2_in->8) */
static kg_graph *two_convs(int ch1, int ch2_in)
{
    kg_graph *g = kg_graph_new();
    int64_t xs[] = {1, 3, 32, 32}, w1s[] = {ch1, 3, 3, 3}, b1s[] = {ch1}, w2s[] = {8, ch2_in, 1, 1};
    int x = kg_add_value(g, "x", KG_INPUT, 4, xs);
    int w1 = kg_add_const_zeros(g, "w1", 4, w1s);
    int b1 = kg_add_const_zeros(g, "b1", 1, b1s);
    int w2 = kg_add_const_zeros(g, "w2", 4, w2s);
    int c1 = kg_add_value(g, "c1", KG_ACTIVATION, 0, NULL);
    int r1 = kg_add_value(g, "r1", KG_ACTIVATION, 0, NULL);
    int c2 = kg_add_value(g, "c2", KG_ACTIVATION, 0, NULL);
    kg_attrs a;
    kg_attrs_default(&a);
    a.pad[0] = a.pad[1] = a.pad[2] = a.pad[3] = 1;
    assert_true(kg_add_node(g, "layer1.conv1", KG_OP_CONV, (int[]){x, w1, b1}, 3, c1, &a) >= 0);
    assert_true(kg_add_node(g, "layer1.relu", KG_OP_RELU, (int[]){c1}, 1, r1, NULL) >= 0);
    assert_true(kg_add_node(g, "layer3.1.conv2", KG_OP_CONV, (int[]){r1, w2, -1}, 3, c2, NULL) >=
                0);
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = c2;
    return g;
}

static void shapes_are_inferred_for_any_batch(void **state)
{
    (void)state;
    char err[KG_ERRLEN] = "";
    kg_graph *g = two_convs(16, 16);
    assert_int_equal(kg_infer_shapes(g, 4, err), KILN_OK);
    const kg_value *c2 = &g->values[g->outputs[0]];
    assert_int_equal(c2->ndim, 4);
    assert_int_equal(c2->dims[0], 4);
    assert_int_equal(c2->dims[1], 8);
    assert_int_equal(c2->dims[2], 32);
    assert_int_equal(c2->dims[3], 32);
    /* 2 * out elements * C * KH * KW */
    assert_int_equal(kg_node_flops(g, &g->nodes[0]), 2LL * 4 * 16 * 32 * 32 * 27);
    kg_graph_free(g);
}

static void channel_mismatch_names_the_node(void **state)
{
    (void)state;
    char err[KG_ERRLEN] = "";
    kg_graph *g = two_convs(64, 128);
    assert_int_equal(kg_infer_shapes(g, 1, err), KILN_ERR_SHAPE);
    assert_string_equal(err, "layer3.1.conv2: expects 128 input channels, got 64");
    kg_graph_free(g);
}

static void kernel_bigger_than_input_is_an_error(void **state)
{
    (void)state;
    char err[KG_ERRLEN] = "";
    kg_graph *g = two_convs(16, 16);
    g->values[g->inputs[0]].dims[2] = 1; /* 1 + 2 pad < 3? no: fits; make it fail via stride */
    g->nodes[0].a.pad[0] = g->nodes[0].a.pad[2] = 0;
    assert_int_equal(kg_infer_shapes(g, 1, err), KILN_ERR_SHAPE);
    assert_non_null(strstr(err, "layer1.conv1"));
    kg_graph_free(g);
}

static void structure_errors_are_reported(void **state)
{
    (void)state;
    char err[KG_ERRLEN] = "";
    kg_graph *g = kg_graph_new();
    assert_int_equal(kg_graph_check(g, err), KILN_ERR_FORMAT);
    int64_t s[] = {1, 4};
    int x = kg_add_value(g, "x", KG_INPUT, 2, s);
    assert_int_equal(kg_add_value(g, "x", KG_INPUT, 2, s), -1); /* duplicate name */
    int y = kg_add_value(g, "y", KG_ACTIVATION, 0, NULL);
    int z = kg_add_value(g, "z", KG_ACTIVATION, 0, NULL);
    /* y is read by a node before any node computes it */
    assert_true(kg_add_node(g, "first", KG_OP_RELU, (int[]){y}, 1, z, NULL) >= 0);
    assert_true(kg_add_node(g, "second", KG_OP_RELU, (int[]){x}, 1, y, NULL) >= 0);
    assert_int_equal(kg_add_node(g, "third", KG_OP_RELU, (int[]){x}, 1, y, NULL), -1);
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = z;
    assert_int_equal(kg_graph_check(g, err), KILN_ERR_FORMAT);
    assert_non_null(strstr(err, "first"));
    kg_graph_free(g);
}

static void dense_concat_reshape_and_broadcast(void **state)
{
    (void)state;
    char err[KG_ERRLEN] = "";
    kg_graph *g = kg_graph_new();
    int64_t xs[] = {2, 4, 3, 3}, ws[] = {10, 72}, bs[] = {1, 4, 1, 1};
    int x = kg_add_value(g, "x", KG_INPUT, 4, xs);
    int b = kg_add_const_zeros(g, "b", 4, bs);
    int w = kg_add_const_zeros(g, "w", 2, ws);
    int m = kg_add_value(g, "m", KG_ACTIVATION, 0, NULL);
    int c = kg_add_value(g, "c", KG_ACTIVATION, 0, NULL);
    int f = kg_add_value(g, "f", KG_ACTIVATION, 0, NULL);
    int d = kg_add_value(g, "d", KG_ACTIVATION, 0, NULL);
    kg_attrs a;
    kg_attrs_default(&a);
    assert_true(kg_add_node(g, "mul", KG_OP_MUL, (int[]){x, b}, 2, m, NULL) >= 0);
    assert_true(kg_add_node(g, "cat", KG_OP_CONCAT, (int[]){x, m}, 2, c, &a) >= 0);
    a.shape_n = 2;
    a.shape[0] = 0;
    a.shape[1] = -1;
    assert_true(kg_add_node(g, "flat", KG_OP_RESHAPE, (int[]){c}, 1, f, &a) >= 0);
    assert_true(kg_add_node(g, "fc", KG_OP_DENSE, (int[]){f, w, -1}, 3, d, NULL) >= 0);
    g->inputs[g->n_inputs++] = x;
    g->outputs[g->n_outputs++] = d;
    assert_int_equal(kg_infer_shapes(g, 0, err), KILN_OK);
    assert_int_equal(g->values[c].dims[1], 8);
    assert_int_equal(g->values[f].dims[1], 72);
    assert_int_equal(g->values[d].dims[0], 2);
    assert_int_equal(g->values[d].dims[1], 10);
    /* batch 3: still consistent; a dense layer of the wrong width is named */
    g->values[w].dims[1] = 71;
    assert_int_equal(kg_infer_shapes(g, 3, err), KILN_ERR_SHAPE);
    assert_string_equal(err, "fc: expects 71 input features, got 72");
    kg_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shapes_are_inferred_for_any_batch),
        cmocka_unit_test(channel_mismatch_names_the_node),
        cmocka_unit_test(kernel_bigger_than_input_is_an_error),
        cmocka_unit_test(structure_errors_are_reported),
        cmocka_unit_test(dense_concat_reshape_and_broadcast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
