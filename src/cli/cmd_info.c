/* kiln info: what this build is and what it will run on this machine. */
#include "cli.h"
#include "kiln.h"
#include "kiln_config.h"

#include <jansson.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const uint32_t all_features[] = {
    KILN_CPU_AVX2,       KILN_CPU_FMA,      KILN_CPU_F16C,     KILN_CPU_AVX512F,
    KILN_CPU_AVX512BW,   KILN_CPU_AVX512VL, KILN_CPU_AVX512DQ, KILN_CPU_AVX512VNNI,
    KILN_CPU_AVX512BF16, KILN_CPU_NEON,     KILN_CPU_DOTPROD,  KILN_CPU_FP16,
};
#define N_FEATURES (sizeof all_features / sizeof all_features[0])

static json_t *info_json(void)
{
    kiln_blas_info blas;
    kiln_blas_get_info(&blas);
    uint32_t f = kiln_cpu_features();

    json_t *paths = json_array();
    json_array_append_new(paths, json_string("ref"));
    if (KILN_HAVE_AVX2) json_array_append_new(paths, json_string("avx2"));
    if (KILN_HAVE_AVX512) json_array_append_new(paths, json_string("avx512"));
    if (KILN_HAVE_NEON) json_array_append_new(paths, json_string("neon"));
    json_t *feats = json_array();
    for (size_t i = 0; i < N_FEATURES; i++)
        if (f & all_features[i])
            json_array_append_new(feats, json_string(kiln_cpu_feature_name(all_features[i])));
    const char *forced = getenv("KILN_ISA");
    const char *coretype = getenv("OPENBLAS_CORETYPE");

    return json_pack("{s:s, s:{s:s, s:b, s:s, s:s, s:o}, s:{s:s, s:s, s:i, s:o},"
                     " s:{s:s, s:b}, s:{s:s, s:s, s:i, s:s, s:s?}}",
                     "version", kiln_version(), "build", "simd", KILN_BUILD_SIMD, "static",
                     KILN_BUILD_STATIC, "buildtype", KILN_BUILD_TYPE, "compiler",
                     KILN_BUILD_COMPILER, "kernel_isas", paths, "cpu", "arch", kiln_cpu_arch(),
                     "model", kiln_cpu_model(), "logical_cpus", kiln_cpu_count(), "features", feats,
                     "kernels", "isa", kiln_isa_name(kiln_isa_active()), "forced",
                     forced && *forced, "openblas", "version", blas.version, "core", blas.core,
                     "threads", blas.threads, "config", blas.config, "coretype_env",
                     coretype && *coretype ? coretype : NULL);
}

static void print_text(void)
{
    kiln_blas_info blas;
    kiln_blas_get_info(&blas);
    uint32_t f = kiln_cpu_features();
    printf("kiln %s\n", kiln_version());
    printf("build:     %s, simd=%s, static=%s, %s\n", KILN_BUILD_TYPE, KILN_BUILD_SIMD,
           KILN_BUILD_STATIC ? "yes" : "no", KILN_BUILD_COMPILER);
    printf("cpu:       %s (%s, %d logical CPUs)\n", kiln_cpu_model(), kiln_cpu_arch(),
           kiln_cpu_count());
    printf("features: ");
    int any = 0;
    for (size_t i = 0; i < N_FEATURES; i++)
        if (f & all_features[i]) {
            printf(" %s", kiln_cpu_feature_name(all_features[i]));
            any = 1;
        }
    printf("%s\n", any ? "" : " (none)");
    printf("kernels:   %s%s (built: ref%s%s%s)\n", kiln_isa_name(kiln_isa_active()),
           getenv("KILN_ISA") && *getenv("KILN_ISA") ? ", forced by KILN_ISA" : "",
           KILN_HAVE_AVX2 ? " avx2" : "", KILN_HAVE_AVX512 ? " avx512" : "",
           KILN_HAVE_NEON ? " neon" : "");
    printf("openblas:  %s, core %s, %d thread%s\n", blas.version, blas.core, blas.threads,
           blas.threads == 1 ? "" : "s");
}

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
    int json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 'h':
            printf("usage: kiln info [--json]\n"
                   "Prints the build options, the CPU and its features, the kernel ISA\n"
                   "in use (KILN_ISA=ref|avx2|avx512|neon overrides) and OpenBLAS's\n"
                   "version, core type and thread count.\n");
            return KILN_EXIT_OK;
        default:
            return KILN_EXIT_USAGE;
        }
    }
    if (optind < argc)
        return cli_error(KILN_EXIT_USAGE, "info", "unexpected argument '%s'", argv[optind]);
    kiln_status st = kiln_init();
    if (st != KILN_OK)
        return cli_error(KILN_EXIT_FAIL, "info", "KILN_ISA=%s: %s", getenv("KILN_ISA"),
                         st == KILN_ERR_CPU ? "this CPU or build lacks that ISA"
                                            : "not one of ref, avx2, avx512, neon");
    if (json) {
        json_t *root = info_json();
        if (!root || json_dumpf(root, stdout, JSON_INDENT(2)) != 0) {
            json_decref(root);
            return cli_error(KILN_EXIT_FAIL, "info", "cannot write JSON");
        }
        putchar('\n');
        json_decref(root);
    } else {
        print_text();
    }
    return KILN_EXIT_OK;
}
