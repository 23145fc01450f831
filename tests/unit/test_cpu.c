/*
 * CPU detection, checked against an independent source: on x86-64 the
 * kernel's /proc/cpuinfo flags (which also reflect what the OS enables),
 * on aarch64 the fact that Advanced SIMD is mandatory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "kiln_config.h"

#if defined(__x86_64__)
/* 1 if `flag` is a whole word in the first "flags" line of /proc/cpuinfo,
 * 0 if not, -1 if the file cannot be read. */
static int cpuinfo_has(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    static char line[8192];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5)) continue;
        found = 0;
        for (char *tok = strtok(strchr(line, ':') + 1, " \n"); tok; tok = strtok(NULL, " \n"))
            if (!strcmp(tok, flag)) found = 1;
        break;
    }
    fclose(f);
    return found;
}

static void x86_features_match_proc_cpuinfo(void **state)
{
    (void)state;
    static const struct {
        uint32_t bit;
        const char *flag;
    } pairs[] = {
        {KILN_CPU_AVX2, "avx2"},         {KILN_CPU_FMA, "fma"},
        {KILN_CPU_AVX512F, "avx512f"},   {KILN_CPU_AVX512BW, "avx512bw"},
        {KILN_CPU_AVX512VL, "avx512vl"}, {KILN_CPU_AVX512DQ, "avx512dq"},
    };
    kiln_cpu cpu;
    kiln__cpu_detect(&cpu);
    if (cpuinfo_has("fpu") < 0) skip();
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        int want = cpuinfo_has(pairs[i].flag);
        int got = (cpu.features & pairs[i].bit) != 0;
        if (want != got) fail_msg("%s: cpuinfo says %d, kiln says %d", pairs[i].flag, want, got);
    }
    assert_string_equal(cpu.arch, "x86_64");
    assert_true(strlen(cpu.model) > 0);
    assert_string_not_equal(cpu.model, "unknown");
}
#endif

#if defined(__aarch64__)
static void aarch64_has_neon(void **state)
{
    (void)state;
    kiln_cpu cpu;
    kiln__cpu_detect(&cpu);
    assert_string_equal(cpu.arch, "aarch64");
    assert_true(cpu.features & KILN_CPU_NEON);
    assert_false(cpu.features & (KILN_CPU_AVX2 | KILN_CPU_AVX512F));
}
#endif

static void isa_choice_follows_features_and_build(void **state)
{
    (void)state;
    assert_int_equal(kiln__isa_best(0), KILN_ISA_REF);
    uint32_t avx2 = KILN_CPU_AVX2 | KILN_CPU_FMA;
    uint32_t avx512 =
        avx2 | KILN_CPU_AVX512F | KILN_CPU_AVX512BW | KILN_CPU_AVX512VL | KILN_CPU_AVX512DQ;
    assert_int_equal(kiln__isa_best(avx2), KILN_HAVE_AVX2 ? KILN_ISA_AVX2 : KILN_ISA_REF);
    assert_int_equal(kiln__isa_best(avx512), KILN_HAVE_AVX512 ? KILN_ISA_AVX512
                                             : KILN_HAVE_AVX2 ? KILN_ISA_AVX2
                                                              : KILN_ISA_REF);
    /* AVX-512F alone (no BW/VL/DQ) is not enough for the AVX-512 kernels. */
    assert_false(kiln__isa_usable(KILN_ISA_AVX512, avx2 | KILN_CPU_AVX512F));
    assert_false(kiln__isa_usable(KILN_ISA_AVX2, KILN_CPU_AVX2)); /* needs FMA */
    assert_int_equal(kiln__isa_best(KILN_CPU_NEON), KILN_HAVE_NEON ? KILN_ISA_NEON : KILN_ISA_REF);
    assert_true(kiln__isa_usable(KILN_ISA_REF, 0));
}

static void isa_names_round_trip(void **state)
{
    (void)state;
    for (int i = 0; i < KILN_ISA_COUNT_; i++) {
        kiln_isa isa;
        assert_int_equal(kiln_isa_parse(kiln_isa_name((kiln_isa)i), &isa), KILN_OK);
        assert_int_equal(isa, i);
    }
    kiln_isa isa;
    assert_int_equal(kiln_isa_parse("sse9", &isa), KILN_ERR_INVALID_ARG);
    assert_string_equal(kiln_isa_name((kiln_isa)42), "unknown");
}

static void init_picks_the_best_supported_isa(void **state)
{
    (void)state;
    if (getenv("KILN_ISA")) skip();
    assert_int_equal(kiln_init(), KILN_OK);
    assert_int_equal(kiln_isa_active(), kiln__isa_best(kiln_cpu_features()));
    assert_true(kiln_isa_supported(kiln_isa_active()));
    assert_true(kiln_cpu_count() >= 1);
}

static void blas_reports_and_takes_thread_count(void **state)
{
    (void)state;
    kiln_blas_info info;
    kiln_blas_set_threads(1);
    kiln_blas_get_info(&info);
    assert_int_equal(info.threads, 1);
    assert_string_not_equal(info.version, "unknown");
    assert_string_not_equal(info.core, "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#if defined(__x86_64__)
        cmocka_unit_test(x86_features_match_proc_cpuinfo),
#endif
#if defined(__aarch64__)
        cmocka_unit_test(aarch64_has_neon),
#endif
        cmocka_unit_test(isa_choice_follows_features_and_build),
        cmocka_unit_test(isa_names_round_trip),
        cmocka_unit_test(init_picks_the_best_supported_isa),
        cmocka_unit_test(blas_reports_and_takes_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
