/*
 * .kiln files: writing (to a temporary file, then rename) and opening
 * (mmap + validation). The layout is described in model_file.h. Opening
 * checks the header, the section table and every section's bounds and
 * crc32 before any section is parsed, so a truncated or corrupt file is an
 * error message, never a crash.
 */
#include "bytes.h"
#include "model_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define KF_MAX_FILE     ((uint64_t)16 << 30) /* 16 GiB */
#define KF_MAX_EXPANDED ((uint64_t)4 << 30)  /* one expanded section */
/* deflate's best ratio is 1032:1 (a 258-byte match per 2 bits), so a section
 * claiming more than this times its stored size is corrupt: refused before
 * the expanded buffer is allocated. */
#define KF_MAX_ZLIB_RATIO 1032
#define KF_MAX_SECTIONS   16

static const char *sec_name(unsigned type)
{
    switch (type) {
    case KF_SEC_META:
        return "meta";
    case KF_SEC_GRAPH:
        return "graph";
    case KF_SEC_WEIGHTS:
        return "weights";
    }
    return "unknown";
}

/* crc32 over any length (zlib's takes a uInt). */
static uint32_t crc_of(const unsigned char *p, size_t n)
{
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

void kf_image_release(kf_image *img)
{
    if (!img) return;
    if (img->map) munmap(img->map, img->map_len);
    for (int i = 0; i < KF_SEC_COUNT_; i++) free(img->heap[i]);
    memset(img, 0, sizeof *img);
}

/* ---- writing ---------------------------------------------------------- */

typedef struct section_out {
    unsigned type, flags;
    const unsigned char *p;
    size_t len, expanded;
    unsigned char *owned; /* compressed copy */
} section_out;

static kiln_status compress_section(section_out *s, char *err)
{
    uLong bound = compressBound((uLong)s->len);
    unsigned char *c = malloc(bound ? bound : 1);
    if (!c) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory compressing a section");
    uLongf clen = bound;
    if (compress2(c, &clen, s->p, (uLong)s->len, 6) != Z_OK) {
        free(c);
        return kg_fail(err, KILN_ERR_INTERNAL, "zlib failed on the %s section", sec_name(s->type));
    }
    s->owned = c;
    s->expanded = s->len;
    s->p = c;
    s->len = clen;
    s->flags |= 1;
    return KILN_OK;
}

static int write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

kiln_status kf_write(const char *path, const kg_graph *g, const kg_meta *meta, unsigned flags,
                     char err[KG_ERRLEN])
{
    kb_writer mw = {0}, gw = {0}, ww = {0}, out = {0};
    section_out sec[3] = {{0}};
    kiln_status st;
    int fd = -1;
    char *tmp = NULL;
    if ((st = kf_graph_encode(g, &gw, &ww, err))) goto done;
    if (meta)
        kf_meta_encode(meta, &mw);
    else
        kb_u32(&mw, 0);
    if (mw.oom) {
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory encoding metadata");
        goto done;
    }
    sec[0] = (section_out){.type = KF_SEC_META, .p = mw.buf, .len = mw.len, .expanded = mw.len};
    sec[1] = (section_out){.type = KF_SEC_GRAPH, .p = gw.buf, .len = gw.len, .expanded = gw.len};
    sec[2] = (section_out){.type = KF_SEC_WEIGHTS, .p = ww.buf, .len = ww.len, .expanded = ww.len};
    if (flags & KF_WRITE_COMPRESS)
        for (int i = 0; i < 3; i++)
            if ((st = compress_section(&sec[i], err))) goto done;

    /* Lay out: header, table, meta, graph, weights (page-aligned when not
     * compressed, so the mapping's weights start on a page). */
    uint64_t off[3];
    uint64_t pos = KF_HEADER_SIZE + 3 * KF_ENTRY_SIZE;
    for (int i = 0; i < 3; i++) {
        if (sec[i].type == KF_SEC_WEIGHTS && !(flags & KF_WRITE_COMPRESS))
            pos = (pos + KF_PAGE - 1) / KF_PAGE * KF_PAGE;
        off[i] = pos;
        pos += sec[i].len;
    }
    uint64_t file_size = pos;

    unsigned char hdr[KF_HEADER_SIZE] = {0};
    kb_writer hw = {0};
    kb_put(&hw, KF_MAGIC, 8);
    kb_u32(&hw, KF_MAJOR | (uint32_t)KF_MINOR << 16);
    kb_u32(&hw, KF_HEADER_SIZE);
    kb_u32(&hw, (flags & KF_WRITE_COMPRESS) ? 1u : 0u);
    kb_u32(&hw, 3);
    kb_u64(&hw, file_size);
    kb_u64(&hw, KF_HEADER_SIZE);
    if (hw.oom) {
        kb_writer_free(&hw);
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    memcpy(hdr, hw.buf, hw.len);
    kb_writer_free(&hw);
    kb_put(&out, hdr, KF_HEADER_SIZE);
    for (int i = 0; i < 3; i++) {
        kb_u32(&out, sec[i].type);
        kb_u32(&out, sec[i].flags);
        kb_u64(&out, off[i]);
        kb_u64(&out, sec[i].len);
        kb_u64(&out, sec[i].expanded);
        kb_u32(&out, crc_of(sec[i].p, sec[i].len));
        kb_u32(&out, 0);
    }
    if (out.oom) {
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    uint32_t tcrc = crc_of(out.buf + KF_HEADER_SIZE, 3 * KF_ENTRY_SIZE);
    for (int b = 0; b < 4; b++) out.buf[44 + b] = (unsigned char)(tcrc >> (8 * b));
    uint32_t hcrc = crc_of(out.buf, KF_HEADER_SIZE); /* crc field (40..43) is still zero */
    for (int b = 0; b < 4; b++) out.buf[40 + b] = (unsigned char)(hcrc >> (8 * b));

    size_t plen = strlen(path);
    tmp = malloc(plen + 16);
    if (!tmp) {
        st = kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    snprintf(tmp, plen + 16, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = kg_fail(err, KILN_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    int bad = write_all(fd, out.buf, out.len);
    uint64_t at = out.len;
    static const unsigned char zeros[KF_PAGE];
    for (int i = 0; i < 3 && !bad; i++) {
        while (at < off[i] && !bad) {
            size_t n = off[i] - at < KF_PAGE ? (size_t)(off[i] - at) : KF_PAGE;
            bad = write_all(fd, zeros, n);
            at += n;
        }
        if (!bad) bad = write_all(fd, sec[i].p, sec[i].len);
        at += sec[i].len;
    }
    if (bad || fsync(fd) != 0) {
        st = kg_fail(err, KILN_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = kg_fail(err, KILN_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = kg_fail(err, KILN_ERR_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    st = KILN_OK;
done:
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    for (int i = 0; i < 3; i++) free(sec[i].owned);
    kb_writer_free(&mw);
    kb_writer_free(&gw);
    kb_writer_free(&ww);
    kb_writer_free(&out);
    return st;
}

/* ---- opening ---------------------------------------------------------- */

typedef struct section_in {
    const unsigned char *p;
    size_t len;
} section_in;

static kiln_status load_sections(const unsigned char *base, size_t size, unsigned flags,
                                 kg_graph **g, kg_meta *meta, kf_image *img, char *err)
{
    kiln_status st;
    section_in sec[KF_SEC_COUNT_] = {{0}};
    *g = NULL;
    memset(meta, 0, sizeof *meta);
    if (size < KF_HEADER_SIZE)
        return kg_fail(err, KILN_ERR_FORMAT, "file is %zu bytes, shorter than a header", size);
    if (memcmp(base, KF_MAGIC, 8))
        return kg_fail(err, KILN_ERR_FORMAT, "not a .kiln file (bad magic)");
    kb_reader r = {.p = base, .len = KF_HEADER_SIZE, .pos = 8};
    uint32_t ver = kb_get_u32(&r), hsize = kb_get_u32(&r), hflags = kb_get_u32(&r),
             count = kb_get_u32(&r);
    uint64_t fsize = kb_get_u64(&r), table = kb_get_u64(&r);
    uint32_t hcrc = kb_get_u32(&r), tcrc = kb_get_u32(&r);
    if ((ver & 0xffff) != KF_MAJOR)
        return kg_fail(err, KILN_ERR_FORMAT, "format version %u.%u; this build reads %d.x",
                       ver & 0xffff, ver >> 16, KF_MAJOR);
    unsigned char hdr[KF_HEADER_SIZE];
    memcpy(hdr, base, KF_HEADER_SIZE);
    memset(hdr + 40, 0, 4);
    if (crc_of(hdr, KF_HEADER_SIZE) != hcrc)
        return kg_fail(err, KILN_ERR_FORMAT, "header checksum mismatch");
    if (hsize != KF_HEADER_SIZE || (hflags & ~1u))
        return kg_fail(err, KILN_ERR_FORMAT, "bad header size or flags");
    if (fsize != size)
        return kg_fail(err, KILN_ERR_FORMAT, "file is %zu bytes but its header says %llu%s", size,
                       (unsigned long long)fsize, size < fsize ? " (truncated)" : "");
    if (count < 1 || count > KF_MAX_SECTIONS || table < KF_HEADER_SIZE || table > size ||
        (uint64_t)count * KF_ENTRY_SIZE > size - table)
        return kg_fail(err, KILN_ERR_FORMAT, "bad section table (%u sections at %llu)", count,
                       (unsigned long long)table);
    uint64_t table_end = table + (uint64_t)count * KF_ENTRY_SIZE;
    if (crc_of(base + table, (size_t)count * KF_ENTRY_SIZE) != tcrc)
        return kg_fail(err, KILN_ERR_FORMAT, "section table checksum mismatch");
    kb_reader t = {.p = base + table, .len = (size_t)count * KF_ENTRY_SIZE};
    for (uint32_t i = 0; i < count; i++) {
        uint32_t type = kb_get_u32(&t), sflags = kb_get_u32(&t);
        uint64_t off = kb_get_u64(&t), len = kb_get_u64(&t), exp = kb_get_u64(&t);
        uint32_t crc = kb_get_u32(&t);
        (void)kb_get_u32(&t);
        if (type < 1 || type >= KF_SEC_COUNT_) continue; /* unknown sections are skipped */
        const char *nm = sec_name(type);
        if (sec[type].p) return kg_fail(err, KILN_ERR_FORMAT, "%s section appears twice", nm);
        if (off < table_end || off > size || len > size - off || (sflags & ~1u))
            return kg_fail(err, KILN_ERR_FORMAT,
                           "%s section (%llu bytes at %llu) lies outside the file", nm,
                           (unsigned long long)len, (unsigned long long)off);
        const unsigned char *p = base + off;
        if (!(type == KF_SEC_WEIGHTS && (flags & KF_LOAD_SKIP_WEIGHT_CRC)) &&
            crc_of(p, (size_t)len) != crc)
            return kg_fail(err, KILN_ERR_FORMAT, "%s section checksum mismatch", nm);
        if (sflags & 1) {
            if (exp > KF_MAX_EXPANDED || exp == 0)
                return kg_fail(err, KILN_ERR_LIMIT, "%s section expands to %llu bytes", nm,
                               (unsigned long long)exp);
            if (exp / KF_MAX_ZLIB_RATIO > len)
                return kg_fail(err, KILN_ERR_FORMAT,
                               "%s section claims %llu bytes from %llu compressed, more than zlib "
                               "can expand to",
                               nm, (unsigned long long)exp, (unsigned long long)len);
            unsigned char *buf =
                aligned_alloc(KF_PAGE, ((size_t)exp + KF_PAGE - 1) / KF_PAGE * KF_PAGE);
            if (!buf) return kg_fail(err, KILN_ERR_NO_MEMORY, "out of memory expanding %s", nm);
            uLongf got = (uLongf)exp;
            int zr = uncompress(buf, &got, p, (uLong)len);
            if (zr != Z_OK || got != exp) {
                free(buf);
                return kg_fail(err, KILN_ERR_FORMAT, "%s section does not expand to %llu bytes", nm,
                               (unsigned long long)exp);
            }
            img->heap[type] = buf;
            sec[type] = (section_in){buf, (size_t)exp};
        } else {
            if (exp != len) return kg_fail(err, KILN_ERR_FORMAT, "%s section sizes disagree", nm);
            if (type == KF_SEC_WEIGHTS && ((uintptr_t)p % KILN_ALIGN))
                return kg_fail(err, KILN_ERR_FORMAT, "weights section is not 64-byte aligned");
            sec[type] = (section_in){p, (size_t)len};
        }
    }
    if (!sec[KF_SEC_GRAPH].p || !sec[KF_SEC_WEIGHTS].p)
        return kg_fail(err, KILN_ERR_FORMAT, "file lacks a graph or weights section");
    if (sec[KF_SEC_META].p &&
        (st = kf_meta_decode(sec[KF_SEC_META].p, sec[KF_SEC_META].len, meta, err)))
        return st;
    st = kf_graph_decode(sec[KF_SEC_GRAPH].p, sec[KF_SEC_GRAPH].len, sec[KF_SEC_WEIGHTS].p,
                         sec[KF_SEC_WEIGHTS].len, g, err);
    if (st) kg_meta_free(meta);
    return st;
}

kiln_status kf_load_memory(const unsigned char *base, size_t size, unsigned flags, kg_graph **g,
                           kg_meta *meta, kf_image *img, char err[KG_ERRLEN])
{
    kiln_status st = load_sections(base, size, flags, g, meta, img, err);
    if (st)
        for (int i = 0; i < KF_SEC_COUNT_; i++) {
            free(img->heap[i]);
            img->heap[i] = NULL;
        }
    return st;
}

kiln_status kf_load(const char *path, unsigned flags, kg_graph **g, kg_meta *meta, kf_image *img,
                    char err[KG_ERRLEN])
{
    memset(img, 0, sizeof *img);
    memset(meta, 0, sizeof *meta);
    *g = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kg_fail(err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO, "%s: %s", path,
                       strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return kg_fail(err, KILN_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > KF_MAX_FILE) {
        close(fd);
        return kg_fail(err, KILN_ERR_LIMIT, "%s: %lld bytes is over the model size limit", path,
                       (long long)sb.st_size);
    }
    if (sb.st_size < KF_HEADER_SIZE) {
        close(fd);
        return kg_fail(err, KILN_ERR_FORMAT, "%s: %lld bytes is shorter than a header", path,
                       (long long)sb.st_size);
    }
    /* A copy this process (or the zygote it was forked from) preloaded
     * into huge pages (preload.c), else a mapping of the file. */
    void *map = (void *)kf_preloaded(&sb);
    if (!map) {
        map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return kg_fail(err, KILN_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        }
        img->map = map;
        img->map_len = (size_t)sb.st_size;
    }
    close(fd);
    char detail[KG_ERRLEN] = "";
    kiln_status st = kf_load_memory(map, (size_t)sb.st_size, flags, g, meta, img, detail);
    if (st) {
        kf_image_release(img);
        kg_fail(err, st, "%s: %s", path, detail);
    }
    return st;
}
