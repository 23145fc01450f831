/*
 * libFuzzer target: YAML architectures, both readers - the inference
 * builder (src/runtime/yaml.c, `kiln import A.yaml`, seeded weights, then
 * shape inference and the optimizer) and the trainer's (train/arch.c,
 * `kiln train --arch A.yaml`). The builder reads a path: the bytes go to a
 * memfd, opened as /proc/self/fd/N.
 */
#include "model.h"
#include "train/net.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[KG_ERRLEN], path[64];
    kiln_errbuf eb;
    kt_arch *arch = malloc(sizeof *arch);
    if (arch && kt_arch_parse((const char *)data, size, "fuzz.yaml", arch, &eb) == KILN_OK) {
        char *text = kt_arch_to_yaml(arch);
        kt_arch *again = malloc(sizeof *again);
        /* What the trainer stores in a model it reads back the same. */
        if (text && again && kt_arch_parse(text, strlen(text), "stored", again, &eb) != KILN_OK) {
            fprintf(stderr, "fuzz_arch: stored architecture does not parse: %s\n%s\n", eb.msg,
                    text);
            abort();
        }
        free(again);
        free(text);
    }
    free(arch);

    int fd = memfd_create("fuzz.yaml", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        kg_graph *g = NULL;
        kg_meta meta = {0};
        if (kg_from_yaml(path, 1, &g, &meta, err) == KILN_OK) {
            if (kg_graph_check(g, err) != KILN_OK) abort();
            kiln_model *m = NULL;
            if (km_finish(g, &meta, &m, "fuzz") == KILN_OK) kiln_model_free(m);
        }
    }
    close(fd);
    return 0;
}
