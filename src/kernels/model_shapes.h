/*
 * Layer shapes of the models kiln is measured on, shared by the kernel
 * tests (as named cases) and `kiln bench kernels`. Batch 1, 224x224 input.
 */
#ifndef KILN_KERNELS_MODEL_SHAPES_H
#define KILN_KERNELS_MODEL_SHAPES_H

#include "kernels.h"

typedef struct kiln_named_conv {
    const char *name;
    kiln_conv2d_shape shape;
    int count; /* how many times the model runs this shape */
} kiln_named_conv;

/* n, c_in, h, w, c_out, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr, groups */
#define KILN_CONV_(name, cin, hw, cout, k, s, p, count)                      \
    {                                                                        \
        name, {1, cin, hw, hw, cout, k, k, s, s, 1, 1, p, p, p, p, 1}, count \
    }

/* ResNet50 v1.5 (torchvision): every distinct conv shape. */
static const kiln_named_conv kiln_resnet50_convs[] = {
    KILN_CONV_("conv1 7x7/2 3->64 @224", 3, 224, 64, 7, 2, 3, 1),
    KILN_CONV_("l1 1x1 64->64 @56", 64, 56, 64, 1, 1, 0, 1),
    KILN_CONV_("l1 3x3 64->64 @56", 64, 56, 64, 3, 1, 1, 3),
    KILN_CONV_("l1 1x1 64->256 @56", 64, 56, 256, 1, 1, 0, 4),
    KILN_CONV_("l1 1x1 256->64 @56", 256, 56, 64, 1, 1, 0, 2),
    KILN_CONV_("l2 1x1 256->128 @56", 256, 56, 128, 1, 1, 0, 1),
    KILN_CONV_("l2 3x3/2 128->128 @56", 128, 56, 128, 3, 2, 1, 1),
    KILN_CONV_("l2 1x1 128->512 @28", 128, 28, 512, 1, 1, 0, 4),
    KILN_CONV_("l2 ds 1x1/2 256->512 @56", 256, 56, 512, 1, 2, 0, 1),
    KILN_CONV_("l2 1x1 512->128 @28", 512, 28, 128, 1, 1, 0, 3),
    KILN_CONV_("l2 3x3 128->128 @28", 128, 28, 128, 3, 1, 1, 3),
    KILN_CONV_("l3 1x1 512->256 @28", 512, 28, 256, 1, 1, 0, 1),
    KILN_CONV_("l3 3x3/2 256->256 @28", 256, 28, 256, 3, 2, 1, 1),
    KILN_CONV_("l3 1x1 256->1024 @14", 256, 14, 1024, 1, 1, 0, 6),
    KILN_CONV_("l3 ds 1x1/2 512->1024 @28", 512, 28, 1024, 1, 2, 0, 1),
    KILN_CONV_("l3 1x1 1024->256 @14", 1024, 14, 256, 1, 1, 0, 5),
    KILN_CONV_("l3 3x3 256->256 @14", 256, 14, 256, 3, 1, 1, 5),
    KILN_CONV_("l4 1x1 1024->512 @14", 1024, 14, 512, 1, 1, 0, 1),
    KILN_CONV_("l4 3x3/2 512->512 @14", 512, 14, 512, 3, 2, 1, 1),
    KILN_CONV_("l4 1x1 512->2048 @7", 512, 7, 2048, 1, 1, 0, 3),
    KILN_CONV_("l4 ds 1x1/2 1024->2048 @14", 1024, 14, 2048, 1, 2, 0, 1),
    KILN_CONV_("l4 1x1 2048->512 @7", 2048, 7, 512, 1, 1, 0, 2),
    KILN_CONV_("l4 3x3 512->512 @7", 512, 7, 512, 3, 1, 1, 2),
};

#define KILN_DW_(name, c, hw, s)                                    \
    {                                                               \
        name, {1, c, hw, hw, c, 3, 3, s, s, 1, 1, 1, 1, 1, 1, c}, 1 \
    }

/* MobileNetV2: its depthwise 3x3 convs (pad 1). */
static const kiln_named_conv kiln_mobilenetv2_dwconvs[] = {
    KILN_DW_("dw 32 @112", 32, 112, 1),   KILN_DW_("dw/2 96 @112", 96, 112, 2),
    KILN_DW_("dw 144 @56", 144, 56, 1),   KILN_DW_("dw/2 144 @56", 144, 56, 2),
    KILN_DW_("dw 192 @28", 192, 28, 1),   KILN_DW_("dw/2 192 @28", 192, 28, 2),
    KILN_DW_("dw 384 @14", 384, 14, 1),   KILN_DW_("dw 576 @14", 576, 14, 1),
    KILN_DW_("dw/2 576 @14", 576, 14, 2), KILN_DW_("dw 960 @7", 960, 7, 1),
};

#undef KILN_CONV_
#undef KILN_DW_

#endif
