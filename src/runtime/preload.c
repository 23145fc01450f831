/*
 * Model files held in anonymous huge-page memory (kiln_model_preload).
 *
 * Why: a process that maps a .kiln file and runs it for the first time
 * pays for every 4 KiB page of weights it touches, even when the file is
 * in the page cache: the kernel installs the page-table entries one fault
 * (or one fault-around batch) at a time, and under a hypervisor that
 * shadows page tables each first touch of a page traps once more. For
 * ResNet50 (about 100 MB of packed weights read per inference) that made
 * the first inference of a fresh worker 1.5-2.5x a warm one. A preloaded
 * copy lives in 2 MiB-aligned anonymous memory with MADV_HUGEPAGE, so it
 * is mapped in ~100 huge pages instead of ~25,000 small ones.
 *
 * The intended use is the server's zygote: it preloads the models of its
 * functions once; every worker it forks inherits the copy (copy-on-write
 * pages that nobody writes, so one physical copy however many workers
 * share it) and kiln_model_open of the same file, unchanged since (device,
 * inode, size, mtime), uses it instead of mapping the file.
 *
 * Preloaded images are never freed: they live as long as the process.
 */
#include "fileio.h"
#include "hugemem.h"
#include "model_file.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct preload {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    const unsigned char *base;
    struct preload *next;
} preload;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static preload *images;
static size_t total_bytes;

static int same_file(const preload *p, const struct stat *sb)
{
    return p->dev == sb->st_dev && p->ino == sb->st_ino && p->size == sb->st_size &&
           p->mtime.tv_sec == sb->st_mtim.tv_sec && p->mtime.tv_nsec == sb->st_mtim.tv_nsec;
}

const void *kf_preloaded(const struct stat *sb)
{
    pthread_mutex_lock(&mu);
    const preload *p = images;
    while (p && !same_file(p, sb)) p = p->next;
    pthread_mutex_unlock(&mu);
    return p ? p->base : NULL;
}

kiln_status kf_preload(const char *path, size_t max_total, char err[KG_ERRLEN])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kg_fail(err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, "%s: %s", path,
                       strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
        close(fd);
        return kg_fail(err, KILN_ERR_IO, "%s: not a regular, non-empty file", path);
    }
    if (kf_preloaded(&sb)) {
        close(fd);
        return KILN_OK;
    }
    size_t n = (size_t)sb.st_size;
    pthread_mutex_lock(&mu);
    int over = max_total && (total_bytes + n > max_total || total_bytes + n < total_bytes);
    pthread_mutex_unlock(&mu);
    if (over) {
        close(fd);
        return kg_fail(err, KILN_ERR_LIMIT,
                       "%s: preloading %zu more bytes is over the limit of %zu", path, n,
                       max_total);
    }
    size_t span;
    unsigned char *base = kr_huge_alloc(n, &span);
    preload *p = calloc(1, sizeof *p);
    if (!base || !p) {
        if (base) munmap(base, span);
        free(p);
        close(fd);
        return kg_fail(err, KILN_ERR_NO_MEMORY, "%s: no memory for a %zu-byte copy", path, n);
    }
    if (kiln__pread_full(fd, base, n, 0)) {
        kiln_status st = kg_fail(err, KILN_ERR_IO, "%s: read: %s", path, strerror(errno));
        munmap(base, span);
        free(p);
        close(fd);
        return st;
    }
    close(fd);
    mprotect(base, span, PROT_READ); /* read-only, like the mapping it stands for */
    *p = (preload){sb.st_dev, sb.st_ino, sb.st_size, sb.st_mtim, base, NULL};
    pthread_mutex_lock(&mu);
    p->next = images;
    images = p;
    total_bytes += n;
    pthread_mutex_unlock(&mu);
    return KILN_OK;
}
