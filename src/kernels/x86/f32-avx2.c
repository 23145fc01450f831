/* The AVX2 + FMA kernel table (8 lanes). */
#include "vec-avx2.h"

#include "../simd/f32-kernels.inc.c"
