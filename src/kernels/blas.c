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
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

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

/*
 * Debian's OpenBLAS 0.3.21 maps AMD Zen 4 and Zen 5 to its Haswell (AVX2)
 * kernels on some CPUID tables and Cooperlake (AVX512_BF16) on others. On
 * Zen 5, whose AVX-512 runs at full width, its SkylakeX kernels are about
 * 1.8x faster on ResNet50's GEMMs (measured with `kiln bench kernels
 * --coretype SkylakeX`); on Zen 4 (half-width AVX-512) Haswell's were as
 * fast or faster, so it is left alone.
 *
 * A CPU newer than OpenBLAS's table (e.g. Intel Emerald Rapids, family 6
 * model 207, in 0.3.21) falls back to the generic Prescott (SSE3) kernels:
 * SGEMM at 34 GFLOP/s there, against 186 with SkylakeX (`kiln bench
 * kernels --coretype SkylakeX`, 1 thread). So whenever OpenBLAS picked a
 * core without AVX2, kiln asks for the newest that the CPU runs: SkylakeX
 * with AVX-512 (F, BW, DQ, VL and FMA, as kiln's avx512 kernels need),
 * else Haswell with AVX2 and FMA.
 */
#if defined(__x86_64__)
/* OpenBLAS's x86 core types with AVX2 kernels, by the widest vectors
 * their SGEMM uses: 2 AVX-512, 1 AVX2 (and FMA). Any other name (Prescott,
 * Nehalem, Sandybridge, ...) is older than AVX2. */
static int blas_core_width(const char *core)
{
    static const struct {
        const char *name;
        int width;
    } cores[] = {{"Haswell", 1},  {"Zen", 1},        {"Excavator", 1},
                 {"SkylakeX", 2}, {"Cooperlake", 2}, {"SapphireRapids", 2}};
    for (size_t i = 0; i < sizeof cores / sizeof cores[0]; i++)
        if (!strcasecmp(core, cores[i].name)) return cores[i].width;
    return 0;
}
#endif

const char *kiln_blas_preferred_coretype(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    char vendor[13] = {0};
    const char *have = openblas_get_corename();
    const int width = have ? blas_core_width(have) : 0;
    int avx512 = kiln_isa_supported(KILN_ISA_AVX512), avx2 = kiln_isa_supported(KILN_ISA_AVX2);
    if (have && !width && (avx512 || avx2)) return avx512 ? "SkylakeX" : "Haswell";
    /* OpenBLAS's own AVX-512 picks (Cooperlake on CPUs with AVX512_BF16)
     * run the same SGEMM kernels as SkylakeX. */
    if (!avx512 || width == 2 || !__get_cpuid(0, &a, &b, &c, &d)) return NULL;
    memcpy(vendor, &b, 4);
    memcpy(vendor + 4, &d, 4);
    memcpy(vendor + 8, &c, 4);
    if (strcmp(vendor, "AuthenticAMD") || !__get_cpuid(1, &a, &b, &c, &d)) return NULL;
    unsigned family = (a >> 8) & 0xf;
    if (family == 0xf) family += (a >> 20) & 0xff;
    return family >= 0x1a ? "SkylakeX" : NULL;
#else
    return NULL;
#endif
}

int kiln_blas_select_coretype(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE")) return 0; /* the user's choice, or done already */
    const char *want = kiln_blas_preferred_coretype();
    if (!want) return 0;
    if (setenv("OPENBLAS_CORETYPE", want, 1) != 0) return -1;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); /* exec failed: carry on with the current core */
    return -1;
}
