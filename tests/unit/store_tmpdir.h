/* Test helpers for the store's tests: a fresh temp dir, removed after. */
#ifndef KILN_TESTS_STORE_TMPDIR_H
#define KILN_TESTS_STORE_TMPDIR_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline int tmpdir_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Creates /tmp/kiln-store-XXXXXX (or under $TMPDIR) into buf. */
static inline void tmpdir_make(char *buf, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, len, "%s/kiln-store-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(buf)) {
        perror("mkdtemp");
        abort();
    }
}

static inline void tmpdir_remove(const char *dir)
{
    nftw(dir, tmpdir_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Number of entries (not . and ..) in a directory; -1 if it cannot be read. */
static inline int tmpdir_count(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

#endif
