/* Data set loaders: IDX, CIFAR binary batches, image folders. */
#include "dataset.h"

#include "fileio.h"
#include "kiln_config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEFAULT_MAX_FILE_BYTES ((int64_t)1 << 30)
#define DEFAULT_MAX_SAMPLES    ((int64_t)10000000)

static int64_t lim_file(const kiln_dataset_limits *lim)
{
    return lim && lim->max_file_bytes > 0 ? lim->max_file_bytes : DEFAULT_MAX_FILE_BYTES;
}

static int64_t lim_samples(const kiln_dataset_limits *lim)
{
    return lim && lim->max_samples > 0 ? lim->max_samples : DEFAULT_MAX_SAMPLES;
}

void kiln__dataset_free(kiln_dataset *ds)
{
    if (!ds) return;
    free(ds->labels);
    free(ds->pixels);
    if (ds->paths)
        for (int64_t i = 0; i < ds->count; i++) free(ds->paths[i]);
    free(ds->paths);
    if (ds->class_names)
        for (int c = 0; c < ds->num_classes; c++) free(ds->class_names[c]);
    free(ds->class_names);
    memset(ds, 0, sizeof *ds);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* num_classes = max label + 1, checked against the limit. */
static kiln_status set_num_classes(kiln_dataset *ds, int max_classes, kiln_errbuf *err)
{
    int32_t mx = -1;
    for (int64_t i = 0; i < ds->count; i++)
        if (ds->labels[i] > mx) mx = ds->labels[i];
    if (mx >= max_classes)
        return kiln__fail(err, KILN_ERR_FORMAT, "%s: label %d, more than %d classes", ds->name,
                          (int)mx, max_classes);
    ds->num_classes = mx + 1;
    return KILN_OK;
}

kiln_status kiln__idx_parse(const uint8_t *buf, size_t len, int ndim, uint32_t dims[3],
                            const uint8_t **payload, const char *what, kiln_errbuf *err)
{
    if (len < 4) return kiln__fail(err, KILN_ERR_FORMAT, "%s: %zu bytes, no IDX header", what, len);
    if (buf[0] != 0 || buf[1] != 0)
        return kiln__fail(err, KILN_ERR_FORMAT, "%s: not an IDX file (bad magic)", what);
    if (buf[2] != 0x08)
        return kiln__fail(err, KILN_ERR_FORMAT, "%s: IDX element type 0x%02x, want 0x08 (u8)", what,
                          buf[2]);
    if (buf[3] != ndim)
        return kiln__fail(err, KILN_ERR_FORMAT, "%s: IDX with %d dimensions, want %d", what, buf[3],
                          ndim);
    size_t header = 4 + 4 * (size_t)ndim;
    if (len < header)
        return kiln__fail(err, KILN_ERR_FORMAT, "%s: truncated IDX header (%zu bytes)", what, len);
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        dims[d] = be32(buf + 4 + 4 * d);
        if (dims[d] == 0 || dims[d] > (1u << 30))
            return kiln__fail(err, KILN_ERR_FORMAT, "%s: IDX dimension %d is %u", what, d, dims[d]);
        n *= dims[d];
        if (n > ((uint64_t)1 << 40))
            return kiln__fail(err, KILN_ERR_FORMAT, "%s: IDX dimensions too large", what);
    }
    if (len - header != n)
        return kiln__fail(err, KILN_ERR_FORMAT, "%s: IDX data is %zu bytes, header says %llu (%s)",
                          what, len - header, (unsigned long long)n,
                          len - header < n ? "file truncated" : "trailing bytes");
    *payload = buf + header;
    return KILN_OK;
}

kiln_status kiln__idx_load(const char *images_path, const char *labels_path,
                           const kiln_dataset_limits *lim, kiln_dataset *out, kiln_errbuf *err)
{
    memset(out, 0, sizeof *out);
    uint8_t *ibuf = NULL, *lbuf = NULL;
    size_t ilen, llen;
    kiln_status st = kiln__read_file_gz(images_path, lim_file(lim), &ibuf, &ilen, err);
    if (st != KILN_OK) return st;
    st = kiln__read_file_gz(labels_path, lim_file(lim), &lbuf, &llen, err);
    if (st != KILN_OK) goto done;
    uint32_t idims[3], ldims[3];
    const uint8_t *ipix, *lab;
    st = kiln__idx_parse(ibuf, ilen, 3, idims, &ipix, images_path, err);
    if (st != KILN_OK) goto done;
    st = kiln__idx_parse(lbuf, llen, 1, ldims, &lab, labels_path, err);
    if (st != KILN_OK) goto done;
    if (idims[0] != ldims[0]) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "%s: %u images but %s has %u labels", images_path,
                        idims[0], labels_path, ldims[0]);
        goto done;
    }
    if ((int64_t)idims[0] > lim_samples(lim) || idims[1] > 4096 || idims[2] > 4096) {
        st = kiln__fail(err, KILN_ERR_LIMIT, "%s: %u images of %ux%u exceed the limits",
                        images_path, idims[0], idims[1], idims[2]);
        goto done;
    }
    out->kind = KILN_DATASET_MEMORY;
    out->count = idims[0];
    out->channels = 1;
    out->height = (int)idims[1];
    out->width = (int)idims[2];
    snprintf(out->name, sizeof out->name, "idx");
    size_t npix = (size_t)out->count * out->height * out->width;
    out->pixels = malloc(npix);
    out->labels = malloc((size_t)out->count * sizeof *out->labels);
    if (!out->pixels || !out->labels) {
        st = kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory", images_path);
        goto done;
    }
    memcpy(out->pixels, ipix, npix);
    for (int64_t i = 0; i < out->count; i++) out->labels[i] = lab[i];
    st = set_num_classes(out, 256, err);
done:
    free(ibuf);
    free(lbuf);
    if (st != KILN_OK) kiln__dataset_free(out);
    return st;
}

kiln_status kiln__cifar_load(const char *const *paths, int n, int cifar100,
                             const kiln_dataset_limits *lim, kiln_dataset *out, kiln_errbuf *err)
{
    memset(out, 0, sizeof *out);
    if (n <= 0) return kiln__fail(err, KILN_ERR_INVALID_ARG, "cifar: no batch files");
    const size_t plane = 32 * 32, pix = 3 * plane, lab = cifar100 ? 2 : 1, rec = lab + pix;
    uint8_t **bufs = calloc((size_t)n, sizeof *bufs);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    kiln_status st = KILN_OK;
    if (!bufs || !lens) {
        st = kiln__fail(err, KILN_ERR_NO_MEMORY, "cifar: out of memory");
        goto done;
    }
    int64_t total = 0;
    for (int f = 0; f < n; f++) {
        st = kiln__read_file(paths[f], lim_file(lim), &bufs[f], &lens[f], err);
        if (st != KILN_OK) goto done;
        if (lens[f] == 0 || lens[f] % rec != 0) {
            st = kiln__fail(err, KILN_ERR_FORMAT,
                            "%s: %zu bytes is not a whole number of %zu-byte CIFAR-%s records",
                            paths[f], lens[f], rec, cifar100 ? "100" : "10");
            goto done;
        }
        total += (int64_t)(lens[f] / rec);
    }
    if (total > lim_samples(lim)) {
        st = kiln__fail(err, KILN_ERR_LIMIT, "cifar: %lld records exceed the limit",
                        (long long)total);
        goto done;
    }
    out->kind = KILN_DATASET_MEMORY;
    out->count = total;
    out->channels = 3;
    out->height = out->width = 32;
    snprintf(out->name, sizeof out->name, cifar100 ? "cifar100" : "cifar10");
    out->pixels = malloc((size_t)total * pix);
    out->labels = malloc((size_t)total * sizeof *out->labels);
    if (!out->pixels || !out->labels) {
        st = kiln__fail(err, KILN_ERR_NO_MEMORY, "cifar: out of memory");
        goto done;
    }
    int64_t k = 0;
    const int max_label = cifar100 ? 100 : 10;
    for (int f = 0; f < n; f++) {
        for (size_t r = 0; r < lens[f] / rec; r++, k++) {
            const uint8_t *p = bufs[f] + r * rec;
            int label = p[lab - 1];
            if (label >= max_label || (cifar100 && p[0] >= 20)) {
                st = kiln__fail(err, KILN_ERR_FORMAT, "%s: record %zu has label %d (of %d)",
                                paths[f], r, label, max_label);
                goto done;
            }
            out->labels[k] = label;
            memcpy(out->pixels + (size_t)k * pix, p + lab, pix);
        }
    }
    out->num_classes = max_label;
done:
    if (bufs)
        for (int f = 0; f < n; f++) free(bufs[f]);
    free(bufs);
    free(lens);
    if (st != KILN_OK) kiln__dataset_free(out);
    return st;
}

/* ---- image folders ------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* out = a/b<suffix>; 0 when it does not fit. */
static int join(char *out, size_t size, const char *a, const char *b, const char *suffix)
{
    int n = snprintf(out, size, "%s/%s%s", a, b, suffix);
    return n >= 0 && (size_t)n < size;
}

static int has_image_ext(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png");
}

/* A growable list of strings. */
typedef struct strlist {
    char **v;
    int64_t n, cap;
} strlist;

static int strlist_push(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    char *d = strdup(s);
    if (!d) return -1;
    l->v[l->n++] = d;
    return 0;
}

static void strlist_free(strlist *l)
{
    for (int64_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Entries of `dir` (sorted), folders when want_dirs, image files otherwise. */
static kiln_status list_dir(const char *dir, int want_dirs, int64_t max, strlist *out,
                            kiln_errbuf *err)
{
    DIR *d = opendir(dir);
    if (!d) return kiln__fail(err, KILN_ERR_NOT_FOUND, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    kiln_status st = KILN_OK;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (!join(path, sizeof path, dir, e->d_name, "")) continue;
        if (want_dirs ? !is_dir(path) : !(has_image_ext(e->d_name) && is_file(path))) continue;
        if (out->n >= max) {
            st = kiln__fail(err, KILN_ERR_LIMIT, "%s: more than %lld entries", dir, (long long)max);
            break;
        }
        if (strlist_push(out, e->d_name)) {
            st = kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory", dir);
            break;
        }
    }
    closedir(d);
    if (st == KILN_OK) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
    return st;
}

/* Class names from a labels file: one per line, blank lines skipped. */
static kiln_status read_labels(const char *path, strlist *out, kiln_errbuf *err)
{
    uint8_t *buf;
    size_t len;
    kiln_status st = kiln__read_file(path, 16 << 20, &buf, &len, err);
    if (st != KILN_OK) return st;
    size_t i = 0;
    while (i < len && st == KILN_OK) {
        size_t j = i;
        while (j < len && buf[j] != '\n') j++;
        size_t e = j;
        while (e > i && (buf[e - 1] == '\r' || buf[e - 1] == ' ' || buf[e - 1] == '\t')) e--;
        if (e > i) {
            if (e - i > 255 || memchr(buf + i, '/', e - i) || memchr(buf + i, 0, e - i))
                st = kiln__fail(err, KILN_ERR_FORMAT, "%s: bad class name on a line", path);
            else if (out->n >= KILN_DATASET_MAX_CLASSES)
                st = kiln__fail(err, KILN_ERR_LIMIT, "%s: more than %d classes", path,
                                KILN_DATASET_MAX_CLASSES);
            else {
                char name[256];
                memcpy(name, buf + i, e - i);
                name[e - i] = 0;
                if (strlist_push(out, name))
                    st = kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory", path);
            }
        }
        i = j + 1;
    }
    free(buf);
    if (st == KILN_OK && out->n == 0)
        st = kiln__fail(err, KILN_ERR_FORMAT, "%s: no class names", path);
    return st;
}

kiln_status kiln__folder_load(const char *root, const char *labels_path, int channels, int height,
                              int width, const kiln_dataset_limits *lim, kiln_dataset *out,
                              kiln_errbuf *err)
{
    memset(out, 0, sizeof *out);
    if ((channels != 1 && channels != 3) || height <= 0 || width <= 0 || height > 4096 ||
        width > 4096)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "%s: bad sample size %dx%dx%d", root, channels,
                          height, width);
    strlist classes = {0}, files = {0}, paths = {0};
    int32_t *labels = NULL;
    int64_t labels_cap = 0;
    kiln_status st = labels_path ? read_labels(labels_path, &classes, err)
                                 : list_dir(root, 1, KILN_DATASET_MAX_CLASSES, &classes, err);
    if (st != KILN_OK) goto fail;
    if (classes.n == 0) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "%s: no class folders", root);
        goto fail;
    }
    char dir[4096], path[4096];
    for (int c = 0; c < classes.n; c++) {
        if (!join(dir, sizeof dir, root, classes.v[c], "")) {
            st = kiln__fail(err, KILN_ERR_LIMIT, "%s: path too long", root);
            goto fail;
        }
        if (!is_dir(dir)) {
            st = kiln__fail(err, KILN_ERR_NOT_FOUND, "%s: class folder missing", dir);
            goto fail;
        }
        strlist_free(&files);
        st = list_dir(dir, 0, lim_samples(lim) - paths.n, &files, err);
        if (st != KILN_OK) goto fail;
        for (int64_t i = 0; i < files.n; i++) {
            if (!join(path, sizeof path, dir, files.v[i], "")) continue;
            if (strlist_push(&paths, path)) goto oom;
            if (paths.n > labels_cap) {
                labels_cap = paths.cap;
                int32_t *l = realloc(labels, (size_t)labels_cap * sizeof *l);
                if (!l) goto oom;
                labels = l;
            }
            labels[paths.n - 1] = c;
        }
    }
    if (paths.n == 0) {
        st = kiln__fail(err, KILN_ERR_FORMAT, "%s: no JPEG or PNG images in the class folders",
                        root);
        goto fail;
    }
    strlist_free(&files);
    out->kind = KILN_DATASET_FOLDER;
    out->count = paths.n;
    out->channels = channels;
    out->height = height;
    out->width = width;
    out->num_classes = (int)classes.n;
    out->labels = labels;
    out->paths = paths.v;
    out->class_names = classes.v;
    out->max_pixels = lim ? lim->max_pixels : 0;
    snprintf(out->name, sizeof out->name, "folder");
    return KILN_OK;
oom:
    st = kiln__fail(err, KILN_ERR_NO_MEMORY, "%s: out of memory", root);
fail:
    strlist_free(&classes);
    strlist_free(&files);
    strlist_free(&paths);
    free(labels);
    return st;
}

kiln_status kiln__dataset_read(const kiln_dataset *ds, int64_t i, float *out, kiln_errbuf *err)
{
    if (i < 0 || i >= ds->count)
        return kiln__fail(err, KILN_ERR_RANGE, "%s: sample %lld of %lld", ds->name, (long long)i,
                          (long long)ds->count);
    int64_t n = kiln__dataset_sample_size(ds);
    if (ds->kind == KILN_DATASET_MEMORY) {
        const uint8_t *p = ds->pixels + i * n;
        for (int64_t k = 0; k < n; k++) out[k] = (float)p[k] * (1.0f / 255.0f);
        return KILN_OK;
    }
    kiln_preprocess pre;
    kiln__preprocess_defaults(&pre, ds->channels, ds->height, ds->width);
    pre.max_pixels = ds->max_pixels;
    uint8_t *buf;
    size_t len;
    kiln_status st = kiln__read_file(ds->paths[i], 256 << 20, &buf, &len, err);
    if (st != KILN_OK) return st;
    st = kiln__preprocess_encoded(buf, len, &pre, out, err);
    free(buf);
    if (st != KILN_OK && err) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        kiln__fail(err, st, "%s: %s", ds->paths[i], msg);
    }
    return st;
}

const char *kiln__dataset_class_name(const kiln_dataset *ds, int c, char *buf, size_t size)
{
    if (ds->class_names && c >= 0 && c < ds->num_classes) return ds->class_names[c];
    snprintf(buf, size, "%d", c);
    return buf;
}

/* ---- opening by name ---------------------------------------------------- */

static const char *fashion_names[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                        "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                        "Bag",         "Ankle boot"};
static const char *cifar10_names[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                        "dog",      "frog",       "horse", "ship", "truck"};

/* dir/name, or dir/name.gz when only that exists; 0 when neither does. */
static int find_gz(const char *dir, const char *name, char *out, size_t size)
{
    if (join(out, size, dir, name, "") && is_file(out)) return 1;
    return join(out, size, dir, name, ".gz") && is_file(out);
}

static kiln_status set_names(kiln_dataset *ds, const char *const *names, int n, kiln_errbuf *err)
{
    if (ds->num_classes > n) return KILN_OK;
    ds->class_names = calloc((size_t)n, sizeof *ds->class_names);
    if (!ds->class_names) return kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    for (int c = 0; c < n; c++)
        if (!(ds->class_names[c] = strdup(names[c])))
            return kiln__fail(err, KILN_ERR_NO_MEMORY, "out of memory");
    ds->num_classes = n;
    return KILN_OK;
}

static kiln_status open_dir(const char *dir, int train, int folder_size,
                            const kiln_dataset_limits *lim, kiln_dataset *out, kiln_errbuf *err)
{
    char a[4200], b[4200], sub[4100];
    const char *pre = train ? "train" : "t10k";
    snprintf(a, sizeof a, "%s-images-idx3-ubyte", pre);
    snprintf(b, sizeof b, "%s-labels-idx1-ubyte", pre);
    char ip[4200], lp[4200];
    if (find_gz(dir, a, ip, sizeof ip) && find_gz(dir, b, lp, sizeof lp))
        return kiln__idx_load(ip, lp, lim, out, err);
    /* CIFAR-10 */
    const char *cdir =
        join(sub, sizeof sub, dir, "cifar-10-batches-bin", "") && is_dir(sub) ? sub : dir;
    snprintf(a, sizeof a, "%s/test_batch.bin", cdir);
    if (is_file(a)) {
        char p[5][4200];
        const char *pp[5];
        int n = 0;
        if (train) {
            for (int k = 1; k <= 5; k++) {
                snprintf(p[n], sizeof p[n], "%s/data_batch_%d.bin", cdir, k);
                if (is_file(p[n])) pp[n] = p[n], n++;
            }
            if (n == 0)
                return kiln__fail(err, KILN_ERR_NOT_FOUND, "%s: no data_batch_N.bin files", cdir);
        } else {
            pp[n++] = a;
        }
        kiln_status st = kiln__cifar_load(pp, n, 0, lim, out, err);
        if (st == KILN_OK) st = set_names(out, cifar10_names, 10, err);
        return st;
    }
    /* CIFAR-100 */
    cdir = join(sub, sizeof sub, dir, "cifar-100-binary", "") && is_dir(sub) ? sub : dir;
    snprintf(a, sizeof a, "%s/%s.bin", cdir, train ? "train" : "test");
    if (is_file(a)) {
        const char *pp[1] = {a};
        return kiln__cifar_load(pp, 1, 1, lim, out, err);
    }
    /* Image folder */
    snprintf(a, sizeof a, "%s/%s", dir, train ? "train" : "test");
    if (!train && !is_dir(a)) snprintf(a, sizeof a, "%s/val", dir);
    if (is_dir(a)) {
        snprintf(b, sizeof b, "%s/labels.txt", dir);
        return kiln__folder_load(a, is_file(b) ? b : NULL, 3, folder_size, folder_size, lim, out,
                                 err);
    }
    return kiln__fail(err, KILN_ERR_NOT_FOUND,
                      "%s: no IDX, CIFAR or image-folder data set found (see datasets/README.md)",
                      dir);
}

kiln_status kiln__dataset_open(const char *spec, const char *split, int folder_size,
                               const kiln_dataset_limits *lim, kiln_dataset *out, kiln_errbuf *err)
{
    memset(out, 0, sizeof *out);
    if (!spec || !split) return kiln__fail(err, KILN_ERR_INVALID_ARG, "dataset: no name");
    int train;
    if (!strcmp(split, "train"))
        train = 1;
    else if (!strcmp(split, "test"))
        train = 0;
    else
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "dataset: split '%s' (train or test)", split);
    if (folder_size <= 0) folder_size = 224;
    char dir[4096];
    const char *name = spec;
    if (!strcmp(spec, "fashion-mnist")) {
        const char *env = getenv("KILN_FASHION_MNIST_DIR");
        snprintf(dir, sizeof dir, "%s", env ? env : "/usr/share/datasets/fashion-mnist");
    } else if (!strcmp(spec, "mnist")) {
        const char *env = getenv("KILN_DATA_DIR");
        if (env)
            snprintf(dir, sizeof dir, "%s/mnist", env);
        else if (is_dir("datasets/mnist"))
            snprintf(dir, sizeof dir, "datasets/mnist");
        else
            snprintf(dir, sizeof dir, "%s/datasets/mnist", KILN_SOURCE_DIR);
    } else {
        snprintf(dir, sizeof dir, "%s", spec);
        name = NULL;
    }
    if (!is_dir(dir))
        return kiln__fail(err, KILN_ERR_NOT_FOUND, "%s: data set directory not found%s", dir,
                          !strcmp(spec, "mnist")           ? " (run datasets/prepare-mnist)"
                          : !strcmp(spec, "fashion-mnist") ? " (apt install dataset-fashion-mnist)"
                                                           : "");
    kiln_status st = open_dir(dir, train, folder_size, lim, out, err);
    if (st != KILN_OK) return st;
    if (name) {
        snprintf(out->name, sizeof out->name, "%s", name);
        if (!strcmp(name, "fashion-mnist")) st = set_names(out, fashion_names, 10, err);
    }
    if (st != KILN_OK) kiln__dataset_free(out);
    return st;
}
