/* The aarch64 NEON kernel table (4 lanes). */
#include "vec-neon.h"

#include "../simd/f32-kernels.inc.c"
