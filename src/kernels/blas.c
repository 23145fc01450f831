/*
 * OpenBLAS configuration, in one place: the thread count kiln asks for and
 * what OpenBLAS reports about itself. OpenBLAS picks its core type (the
 * kernel set: Haswell, SkylakeX, Cooperlake, ...) from CPUID when the
 * library initialises, before main(); OPENBLAS_CORETYPE in the environment
 * overrides that choice and is the only way to change it.
 */
#include "kiln.h"

#include <cblas.h>
#include <stdio.h>
#include <string.h>

/* openblas_get_config() reads e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY
 * Haswell MAX_THREADS=64"; the version is its second word. */
static const char *blas_version(void)
{
    static char version[32];
    const char *cfg = openblas_get_config();
    if (!cfg || sscanf(cfg, "OpenBLAS %31s", version) != 1) return "unknown";
    return version;
}

void kiln_blas_get_info(kiln_blas_info *info)
{
    const char *cfg = openblas_get_config();
    const char *core = openblas_get_corename();
    info->version = blas_version();
    info->config = cfg ? cfg : "unknown";
    info->core = core ? core : "unknown";
    info->threads = openblas_get_num_threads();
}

/* Called before every GEMM-based kernel: skips OpenBLAS's call (which
 * takes its lock and may touch its buffers) when nothing changes. */
void kiln_blas_set_threads(int threads)
{
    if (threads < 1) threads = 1;
    if (openblas_get_num_threads() != threads) openblas_set_num_threads(threads);
}
