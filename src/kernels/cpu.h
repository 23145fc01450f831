/* CPU detection and ISA choice, shared by the kernels and kiln info. */
#ifndef KILN_KERNELS_CPU_H
#define KILN_KERNELS_CPU_H

#include "kiln.h"

/* What the running CPU offers, read once. `features` is a mask of KILN_CPU_*. */
typedef struct kiln_cpu {
    uint32_t features;
    char model[96];
    const char *arch;
    int count;
} kiln_cpu;

/* Reads the CPU (cpuid + xgetbv on x86-64, getauxval on aarch64) into *cpu.
 * Pure: no caching, so tests can call it directly. */
void kiln__cpu_detect(kiln_cpu *cpu);

/* The detected CPU (detected on first use, then cached). */
const kiln_cpu *kiln__cpu(void);

/* The best ISA for `features` in this build (compiled-in paths only). */
kiln_isa kiln__isa_best(uint32_t features);
/* Whether this build has kernels for `isa` and `features` can run them. */
int kiln__isa_usable(kiln_isa isa, uint32_t features);

#endif
