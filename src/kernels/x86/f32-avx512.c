/* The AVX-512 kernel table (16 lanes). */
#include "vec-avx512.h"

#include "../simd/f32-kernels.inc.c"
