/*
 * CPU feature detection.
 *
 * x86-64: cpuid says what the core implements; xgetbv(XCR0) says what the
 * OS saves on a context switch. A feature counts only when both agree: AVX
 * needs XMM|YMM state (XCR0 bits 1,2), AVX-512 also needs opmask|ZMM_Hi256|
 * Hi16_ZMM state (bits 5,6,7).
 * aarch64: the kernel reports features in the auxiliary vector (AT_HWCAP).
 */
#include "cpu.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_FPHP
#define HWCAP_FPHP (1 << 9)
#endif
#ifndef HWCAP_ASIMDHP
#define HWCAP_ASIMDHP (1 << 10)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t')) s[--n] = '\0';
    size_t lead = strspn(s, " \t");
    if (lead) memmove(s, s + lead, n - lead + 1);
}

#if defined(__x86_64__)
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect_x86(kiln_cpu *cpu)
{
    unsigned a, b, c, d;
    uint32_t f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;
    int os_avx512 = (xcr0 & 0xe6) == 0xe6;
    if (os_avx && avx) {
        if (fma) f |= KILN_CPU_FMA;
        if (f16c) f |= KILN_CPU_F16C;
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
            if ((b >> 5) & 1) f |= KILN_CPU_AVX2;
            if (os_avx512) {
                if ((b >> 16) & 1) f |= KILN_CPU_AVX512F;
                if ((b >> 17) & 1) f |= KILN_CPU_AVX512DQ;
                if ((b >> 30) & 1) f |= KILN_CPU_AVX512BW;
                if ((b >> 31) & 1) f |= KILN_CPU_AVX512VL;
                if ((c >> 11) & 1) f |= KILN_CPU_AVX512VNNI;
                if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1))
                    f |= KILN_CPU_AVX512BF16;
            }
        }
    }
    cpu->features = f;

    unsigned brand[12];
    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &brand[4 * i], &brand[4 * i + 1], &brand[4 * i + 2],
                        &brand[4 * i + 3]);
        memcpy(cpu->model, brand, sizeof brand);
        cpu->model[sizeof brand] = '\0';
        trim(cpu->model);
    }
}
#endif

#if defined(__aarch64__)
/* /proc/cpuinfo on arm64 has no model string; name the implementer/part. */
static void model_aarch64(kiln_cpu *cpu)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256], impl[32] = "", part[32] = "", name[96] = "";
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = '\0';
        char *key = line, *val = colon + 1;
        trim(key);
        trim(val);
        if (!strcmp(key, "CPU implementer") && !impl[0])
            snprintf(impl, sizeof impl, "%s", val);
        else if (!strcmp(key, "CPU part") && !part[0])
            snprintf(part, sizeof part, "%s", val);
        else if (!strcmp(key, "model name") && !name[0])
            snprintf(name, sizeof name, "%s", val);
    }
    fclose(f);
    if (impl[0])
        snprintf(cpu->model, sizeof cpu->model, "aarch64 implementer %s part %s", impl, part);
    else if (name[0])
        snprintf(cpu->model, sizeof cpu->model, "%s", name);
}
#endif

void kiln__cpu_detect(kiln_cpu *cpu)
{
    memset(cpu, 0, sizeof *cpu);
    snprintf(cpu->model, sizeof cpu->model, "unknown");
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu->count = n > 0 ? (int)n : 1;
#if defined(__x86_64__)
    cpu->arch = "x86_64";
    detect_x86(cpu);
#elif defined(__aarch64__)
    cpu->arch = "aarch64";
    unsigned long hw = getauxval(AT_HWCAP);
    if (hw & HWCAP_ASIMD) cpu->features |= KILN_CPU_NEON;
    if (hw & HWCAP_ASIMDDP) cpu->features |= KILN_CPU_DOTPROD;
    if ((hw & HWCAP_FPHP) && (hw & HWCAP_ASIMDHP)) cpu->features |= KILN_CPU_FP16;
    model_aarch64(cpu);
#else
    cpu->arch = "unknown";
#endif
}

static const struct {
    uint32_t bit;
    const char *name;
} feature_names[] = {
    {KILN_CPU_AVX2, "avx2"},
    {KILN_CPU_FMA, "fma"},
    {KILN_CPU_F16C, "f16c"},
    {KILN_CPU_AVX512F, "avx512f"},
    {KILN_CPU_AVX512BW, "avx512bw"},
    {KILN_CPU_AVX512VL, "avx512vl"},
    {KILN_CPU_AVX512DQ, "avx512dq"},
    {KILN_CPU_AVX512VNNI, "avx512vnni"},
    {KILN_CPU_AVX512BF16, "avx512bf16"},
    {KILN_CPU_NEON, "neon"},
    {KILN_CPU_DOTPROD, "dotprod"},
    {KILN_CPU_FP16, "fp16"},
};

const char *kiln_cpu_feature_name(uint32_t bit)
{
    for (size_t i = 0; i < sizeof feature_names / sizeof feature_names[0]; i++)
        if (feature_names[i].bit == bit) return feature_names[i].name;
    return "unknown";
}
