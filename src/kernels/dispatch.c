/*
 * Kernel ISA dispatch: the ISA is chosen once per process, from the CPU's
 * features and the paths compiled into this build, unless KILN_ISA names
 * one. Later kernels hang their per-ISA function tables off this choice.
 */
#include "cpu.h"
#include "kiln_config.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const char *const isa_names[KILN_ISA_COUNT_] = {"ref", "avx2", "avx512", "neon"};

const char *kiln_isa_name(kiln_isa isa)
{
    return (unsigned)isa < KILN_ISA_COUNT_ ? isa_names[isa] : "unknown";
}

kiln_status kiln_isa_parse(const char *name, kiln_isa *out)
{
    if (!name || !out) return KILN_ERR_INVALID_ARG;
    for (int i = 0; i < KILN_ISA_COUNT_; i++)
        if (!strcmp(name, isa_names[i])) {
            *out = (kiln_isa)i;
            return KILN_OK;
        }
    return KILN_ERR_INVALID_ARG;
}

int kiln__isa_usable(kiln_isa isa, uint32_t f)
{
    switch (isa) {
    case KILN_ISA_REF:
        return 1;
    case KILN_ISA_AVX2:
        return KILN_HAVE_AVX2 && (f & KILN_CPU_AVX2) && (f & KILN_CPU_FMA);
    case KILN_ISA_AVX512: {
        uint32_t need = KILN_CPU_AVX512F | KILN_CPU_AVX512BW | KILN_CPU_AVX512VL |
                        KILN_CPU_AVX512DQ | KILN_CPU_FMA;
        return KILN_HAVE_AVX512 && (f & need) == need;
    }
    case KILN_ISA_NEON:
        return KILN_HAVE_NEON && (f & KILN_CPU_NEON);
    default:
        return 0;
    }
}

kiln_isa kiln__isa_best(uint32_t f)
{
    static const kiln_isa order[] = {KILN_ISA_AVX512, KILN_ISA_AVX2, KILN_ISA_NEON};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (kiln__isa_usable(order[i], f)) return order[i];
    return KILN_ISA_REF;
}

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static kiln_cpu cpu_info;

static void cpu_detect_once(void)
{
    kiln__cpu_detect(&cpu_info);
}

const kiln_cpu *kiln__cpu(void)
{
    pthread_once(&cpu_once, cpu_detect_once);
    return &cpu_info;
}

uint32_t kiln_cpu_features(void)
{
    return kiln__cpu()->features;
}
const char *kiln_cpu_model(void)
{
    return kiln__cpu()->model;
}
const char *kiln_cpu_arch(void)
{
    return kiln__cpu()->arch;
}
int kiln_cpu_count(void)
{
    return kiln__cpu()->count;
}

int kiln_isa_supported(kiln_isa isa)
{
    return kiln__isa_usable(isa, kiln_cpu_features());
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static kiln_status init_status = KILN_OK;
static kiln_isa active_isa = KILN_ISA_REF;

static void init_once_fn(void)
{
    const kiln_cpu *cpu = kiln__cpu();
    active_isa = kiln__isa_best(cpu->features);
    const char *forced = getenv("KILN_ISA");
    if (forced && *forced) {
        kiln_isa isa;
        if (kiln_isa_parse(forced, &isa) != KILN_OK) {
            init_status = KILN_ERR_INVALID_ARG;
            return;
        }
        if (!kiln__isa_usable(isa, cpu->features)) {
            init_status = KILN_ERR_CPU;
            return;
        }
        active_isa = isa;
    }
}

kiln_status kiln_init(void)
{
    pthread_once(&init_once, init_once_fn);
    return init_status;
}

kiln_isa kiln_isa_active(void)
{
    kiln_init();
    return active_isa;
}
