/* Anonymous memory in 2 MiB-aligned spans with transparent huge pages
 * advised (arena.c): for model copies and large arenas, which a fresh
 * process then maps in a few huge pages instead of thousands of 4 KiB
 * page faults. */
#ifndef KILN_HUGEMEM_H
#define KILN_HUGEMEM_H

#include <stddef.h>

/* At least n bytes, zero-filled, 2 MiB-aligned; *span is the length to
 * munmap. NULL when the mapping fails. */
void *kr_huge_alloc(size_t n, size_t *span);

#endif
