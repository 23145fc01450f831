/*
 * Runs a fuzz target's LLVMFuzzerTestOneInput without libFuzzer, so the
 * corpus and every input that once crashed run as a unit test in every
 * build (gcc, ASan, aarch64 under qemu).
 *
 * usage: TARGET [--mutate N] PATH...
 *
 * Every file named, and every file in a directory named (not recursive),
 * is one input. With --mutate N, each input is also run as N variants made
 * by a seeded mutator (bit flips, extreme bytes, 32-bit extreme values,
 * truncation): the same variants on every run. A path that does not exist
 * is skipped; exit 77 (skipped) when no input was found at all.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long n_inputs, n_runs;
static int mutations;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Runs data (in a buffer of exactly size bytes, so ASan sees overreads). */
static void run(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return;
    memcpy(copy, data, size);
    LLVMFuzzerTestOneInput(copy, size);
    free(copy);
    n_runs++;
}

static void mutate_and_run(const uint8_t *seed, size_t len)
{
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return;
    for (int it = 0; it < mutations; it++) {
        size_t n = len;
        memcpy(buf, seed, len);
        int edits = 1 + (int)(next() % 4);
        for (int e = 0; e < edits && n; e++) {
            size_t at = (size_t)(next() % n);
            switch (next() % 4) {
            case 0: /* flip a bit */
                buf[at] ^= (uint8_t)(1u << (next() % 8));
                break;
            case 1: /* an extreme byte */
                buf[at] = (next() & 1) ? 0xff : 0x00;
                break;
            case 2: /* truncate */
                n = at;
                break;
            default: /* a 32-bit extreme value */
                if (at + 4 <= n) memset(buf + at, (next() & 1) ? 0xff : 0x7f, 4);
            }
        }
        run(buf, n);
    }
    free(buf);
}

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        exit(1);
    }
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *d = realloc(data, cap);
            if (!d) exit(1);
            data = d;
        }
        size_t got = fread(data + len, 1, cap - len, f);
        if (!got) break;
        len += got;
    }
    fclose(f);
    run(data, len);
    n_inputs++;
    if (mutations) mutate_and_run(data, len);
    free(data);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st)) {
        printf("replay: %s does not exist, skipped\n", path);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) return;
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue; /* ., .., .gitkeep */
        char **nn = realloc(names, (n + 1) * sizeof *names);
        if (!nn) exit(1);
        names = nn;
        if (asprintf(&names[n], "%s/%s", path, e->d_name) < 0) exit(1);
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name); /* the same order every run */
    for (size_t i = 0; i < n; i++) {
        if (!stat(names[i], &st) && S_ISREG(st.st_mode)) run_file(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    int i = 1;
    if (i + 1 < argc && !strcmp(argv[i], "--mutate")) {
        mutations = atoi(argv[i + 1]);
        i += 2;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [--mutate N] PATH...\n", argv[0]);
        return 2;
    }
    for (; i < argc; i++) run_path(argv[i]);
    if (!n_inputs) {
        printf("SKIP: no input found\n");
        return 77;
    }
    printf("%ld inputs, %ld runs (%d variants each) without a crash\n", n_inputs, n_runs,
           mutations);
    return 0;
}
