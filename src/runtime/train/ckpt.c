/* Trained-model and checkpoint files (see ckpt.h). */
#include "ckpt.h"

#include "fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

void kt_meta_free(kt_meta *m)
{
    for (int i = 0; i < m->n; i++) {
        free(m->key[i]);
        free(m->val[i]);
    }
    m->n = 0;
}

kiln_status kt_meta_set(kt_meta *m, const char *key, const char *val)
{
    char *v = strdup(val);
    if (!v) return KILN_ERR_NO_MEMORY;
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) {
            free(m->val[i]);
            m->val[i] = v;
            return KILN_OK;
        }
    if (m->n >= KT_CKPT_MAX_META) {
        free(v);
        return KILN_ERR_LIMIT;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return KILN_ERR_NO_MEMORY;
    }
    m->key[m->n] = k;
    m->val[m->n++] = v;
    return KILN_OK;
}

const char *kt_meta_get(const kt_meta *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->key[i], key)) return m->val[i];
    return NULL;
}

void kt_ckpt_free(kt_ckpt *c)
{
    kt_meta_free(&c->meta);
    free(c->params);
    free(c->state);
    memset(c, 0, sizeof *c);
}

typedef struct wr {
    FILE *f;
    uLong crc;
    int bad;
} wr;

static void put(wr *w, const void *p, size_t n)
{
    if (n == 0) return;
    if (fwrite(p, 1, n, w->f) != n) w->bad = 1;
    w->crc = crc32(w->crc, p, (uInt)n);
}

static void put32(wr *w, uint32_t v)
{
    put(w, &v, 4);
}

static void put64(wr *w, uint64_t v)
{
    put(w, &v, 8);
}

kiln_status kt_ckpt_save(const char *path, const kt_net *net, const kt_meta *meta, int with_state,
                         kiln_errbuf *err)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid()) >= (int)sizeof tmp)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "%s: path too long", path);
    wr w = {.f = fopen(tmp, "wb"), .crc = crc32(0, NULL, 0)};
    if (!w.f) return kiln__fail(err, KILN_ERR_IO, "%s: %s", tmp, strerror(errno));
    put(&w, KT_CKPT_MAGIC, 8);
    put32(&w, 1);
    put32(&w, (uint32_t)meta->n);
    for (int i = 0; i < meta->n; i++) {
        size_t kl = strlen(meta->key[i]), vl = strlen(meta->val[i]);
        put32(&w, (uint32_t)kl);
        put(&w, meta->key[i], kl);
        put32(&w, (uint32_t)vl);
        put(&w, meta->val[i], vl);
    }
    put64(&w, (uint64_t)net->nparams);
    put(&w, net->params, (size_t)net->nparams * sizeof(float));
    /* a frozen prefix has no optimizer state: only the trainable tail's */
    const int64_t skip = net->frozen_params * kt_optim_state_floats(&net->opt);
    int64_t ns = with_state ? net->nstate - skip : 0;
    put64(&w, (uint64_t)ns);
    put(&w, net->state + skip, (size_t)ns * sizeof(float));
    uint32_t crc = (uint32_t)w.crc;
    if (fwrite(&crc, 1, 4, w.f) != 4) w.bad = 1;
    if (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0) w.bad = 1;
    if (fclose(w.f) != 0) w.bad = 1;
    if (w.bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kiln__fail(err, KILN_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return KILN_OK;
}

/* A bounds-checked reader over the file's bytes. */
typedef struct rd {
    const uint8_t *p;
    size_t left;
} rd;

static int get(rd *r, void *dst, size_t n)
{
    if (r->left < n) return -1;
    memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return 0;
}

static int get_str(rd *r, char **out)
{
    uint32_t n;
    if (get(r, &n, 4) || n > r->left || n > (1u << 24)) return -1;
    *out = malloc((size_t)n + 1);
    if (!*out) return -1;
    memcpy(*out, r->p, n);
    (*out)[n] = 0;
    r->p += n;
    r->left -= n;
    return memchr(*out, 0, n) ? -1 : 0;
}

static int get_floats(rd *r, float **out, int64_t *count)
{
    uint64_t n;
    if (get(r, &n, 8) || n > r->left / sizeof(float)) return -1;
    *count = (int64_t)n;
    *out = malloc(n ? n * sizeof(float) : 1);
    if (!*out) return -1;
    return get(r, *out, n * sizeof(float));
}

kiln_status kt_ckpt_load(const char *path, kt_ckpt *out, kiln_errbuf *err)
{
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t len;
    kiln_status st = kiln__read_file(path, KT_CKPT_MAX_BYTES, &buf, &len, err);
    if (st != KILN_OK) return st;
    st = KILN_ERR_FORMAT;
    if (len < 8 + 8 + 16 + 4 || memcmp(buf, KT_CKPT_MAGIC, 8) != 0) {
        kiln__fail(err, st, "%s: not a model file written by kiln train (bad magic)", path);
        goto fail;
    }
    uint32_t crc;
    memcpy(&crc, buf + len - 4, 4);
    if ((uint32_t)crc32(crc32(0, NULL, 0), buf, (uInt)(len - 4)) != crc) {
        kiln__fail(err, st, "%s: checksum mismatch (file corrupt or truncated)", path);
        goto fail;
    }
    rd r = {buf + 8, len - 12};
    uint32_t version, nmeta;
    if (get(&r, &version, 4) || version != 1 || get(&r, &nmeta, 4) || nmeta > KT_CKPT_MAX_META) {
        kiln__fail(err, st, "%s: unsupported version or bad header", path);
        goto fail;
    }
    for (uint32_t i = 0; i < nmeta; i++) {
        char *k = NULL, *v = NULL;
        if (get_str(&r, &k) || get_str(&r, &v)) {
            free(k);
            free(v);
            kiln__fail(err, st, "%s: bad metadata entry %u", path, i);
            goto fail;
        }
        out->meta.key[out->meta.n] = k;
        out->meta.val[out->meta.n++] = v;
    }
    if (get_floats(&r, &out->params, &out->nparams) || get_floats(&r, &out->state, &out->nstate) ||
        r.left != 0) {
        kiln__fail(err, st, "%s: bad parameter sections", path);
        goto fail;
    }
    free(buf);
    return KILN_OK;
fail:
    free(buf);
    kt_ckpt_free(out);
    return st;
}

kiln_status kt_ckpt_to_net(const kt_ckpt *c, const char *path, int batch, const kt_optim *opt,
                           int with_state, kt_net *net, kiln_errbuf *err)
{
    const char *y = kt_meta_get(&c->meta, "arch");
    if (!y) return kiln__fail(err, KILN_ERR_FORMAT, "%s: no architecture in the file", path);
    kt_arch arch;
    kiln_status st = kt_arch_parse(y, strlen(y), path, &arch, err);
    if (st != KILN_OK) return st;
    const char *fz = kt_meta_get(&c->meta, "frozen_layers");
    const int frozen = fz ? atoi(fz) : 0;
    st = kt_net_build_frozen(net, &arch, batch, opt, 0, frozen, err);
    if (st != KILN_OK) return st;
    if (c->nparams != net->nparams) {
        kt_net_free(net);
        return kiln__fail(err, KILN_ERR_FORMAT, "%s: %lld parameters, the architecture has %lld",
                          path, (long long)c->nparams, (long long)net->nparams);
    }
    memcpy(net->params, c->params, (size_t)c->nparams * sizeof(float));
    const int64_t skip = net->frozen_params * kt_optim_state_floats(opt);
    if (with_state && c->nstate == net->nstate - skip)
        memcpy(net->state + skip, c->state, (size_t)c->nstate * sizeof(float));
    return KILN_OK;
}
