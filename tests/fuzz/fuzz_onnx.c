/*
 * libFuzzer target: ONNX import (src/runtime/onnx.c: protobuf-c decoding,
 * operator mapping, initializers), then graph checks, shape inference and
 * the optimizer, as `kiln import` and a model upload run them. The importer
 * reads a path: the bytes go to a memfd, opened as /proc/self/fd/N.
 */
#include "fuzz_model.h"
#include "model.h"
#include "onnx_import.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[KG_ERRLEN], path[64];
    kg_graph *g = NULL;
    kg_meta meta = {0};
    int fd = memfd_create("fuzz.onnx", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (kx_import(path, NULL, 0, &g, &meta, err) == KILN_OK) fuzz_finish_model(g, &meta, err);
    }
    close(fd);
    return 0;
}
