/* Batch loader: order, augmentation, normalisation, double buffering. */
#include "loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { SLOT_EMPTY = 0, SLOT_FULL };

struct kiln_loader {
    kiln_loader_config cfg;
    int64_t count;   /* samples used */
    int64_t batches; /* per epoch */
    int64_t *order;  /* this epoch's permutation */
    float *scratch[2];
    kiln_batch slot[2];
    int state[2];
    kiln_status slot_status[2];
    kiln_errbuf slot_err[2];
    int epoch;
    int64_t next_fill;    /* next batch number the producer fills */
    int64_t next_consume; /* next batch number next() returns */
    uint64_t generation;  /* bumped by start(); the producer drops stale work */
    int stop;
    int busy; /* the producer is filling a slot (with the lock released) */
    int have_thread;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

uint64_t kiln__mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void kiln__loader_config_defaults(kiln_loader_config *cfg, const kiln_dataset *ds)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->ds = ds;
    cfg->batch = 64;
    cfg->threaded = 1;
    for (int c = 0; c < 4; c++) cfg->std[c] = 1.0f;
}

void kiln__augment_sample(const float *src, float *dst, int c, int h, int w, int pad, int dy,
                          int dx, int flip)
{
    for (int ch = 0; ch < c; ch++) {
        const float *s = src + (size_t)ch * h * w;
        float *d = dst + (size_t)ch * h * w;
        for (int y = 0; y < h; y++) {
            int sy = y + dy - pad;
            for (int x = 0; x < w; x++) {
                int ox = flip ? w - 1 - x : x;
                int sx = ox + dx - pad;
                d[(size_t)y * w + x] =
                    (sy >= 0 && sy < h && sx >= 0 && sx < w) ? s[(size_t)sy * w + sx] : 0.0f;
            }
        }
    }
}

/* Fills slot s with batch number `number` of the current epoch. */
static kiln_status fill(kiln_loader *l, int s, int64_t number, int epoch, kiln_errbuf *err)
{
    const kiln_loader_config *c = &l->cfg;
    const kiln_dataset *ds = c->ds;
    const int64_t sz = kiln__dataset_sample_size(ds);
    const int64_t plane = (int64_t)ds->height * ds->width;
    kiln_batch *b = &l->slot[s];
    int64_t first = number * c->batch;
    int64_t n = l->count - first < c->batch ? l->count - first : c->batch;
    b->n = (int)n;
    b->number = number;
    for (int64_t k = 0; k < n; k++) {
        int64_t pos = first + k;
        int64_t idx = l->order[pos];
        float *dst = b->x + k * sz;
        int augment = c->pad_crop > 0 || c->hflip;
        kiln_status st = kiln__dataset_read(ds, idx, augment ? l->scratch[s] : dst, err);
        if (st != KILN_OK) return st;
        if (augment) {
            uint64_t r =
                kiln__mix64(c->seed ^ kiln__mix64(((uint64_t)epoch << 40) ^ (uint64_t)pos));
            int span = 2 * c->pad_crop + 1;
            int dy = c->pad_crop > 0 ? (int)(r % (uint64_t)span) : 0;
            int dx = c->pad_crop > 0 ? (int)((r >> 16) % (uint64_t)span) : 0;
            int flip = c->hflip ? (int)((r >> 40) & 1) : 0;
            kiln__augment_sample(l->scratch[s], dst, ds->channels, ds->height, ds->width,
                                 c->pad_crop, dy, dx, flip);
        }
        kiln__normalize_chw(dst, ds->channels, plane, c->mean, c->std);
        b->y[k] = ds->labels[idx];
        b->index[k] = idx;
    }
    return KILN_OK;
}

static void *producer(void *arg)
{
    kiln_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && (l->next_fill >= l->batches || l->state[l->next_fill & 1] != SLOT_EMPTY))
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        int64_t number = l->next_fill;
        int s = (int)(number & 1);
        uint64_t gen = l->generation;
        int epoch = l->epoch;
        l->busy = 1;
        pthread_mutex_unlock(&l->mu);
        kiln_errbuf e = {{0}};
        kiln_status st = fill(l, s, number, epoch, &e);
        pthread_mutex_lock(&l->mu);
        l->busy = 0;
        pthread_cond_broadcast(&l->cv);
        if (gen != l->generation) continue; /* start() reset the epoch meanwhile */
        l->slot_status[s] = st;
        l->slot_err[s] = e;
        l->state[s] = SLOT_FULL;
        l->next_fill++;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

kiln_status kiln__loader_create(const kiln_loader_config *cfg, kiln_loader **out, kiln_errbuf *err)
{
    *out = NULL;
    if (!cfg || !cfg->ds || cfg->batch <= 0 || cfg->pad_crop < 0 || cfg->ds->count <= 0)
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "loader: bad configuration");
    for (int c = 0; c < cfg->ds->channels && c < 4; c++)
        if (!(cfg->std[c] > 0))
            return kiln__fail(err, KILN_ERR_INVALID_ARG, "loader: std[%d] must be > 0", c);
    kiln_loader *l = calloc(1, sizeof *l);
    if (!l) return kiln__fail(err, KILN_ERR_NO_MEMORY, "loader: out of memory");
    l->cfg = *cfg;
    l->count = cfg->ds->count;
    if (cfg->max_count > 0 && cfg->max_count < l->count) l->count = cfg->max_count;
    l->batches = cfg->drop_last ? l->count / cfg->batch : (l->count + cfg->batch - 1) / cfg->batch;
    if (l->batches == 0) {
        int64_t count = l->count;
        free(l);
        return kiln__fail(err, KILN_ERR_INVALID_ARG, "loader: %lld samples make no batch of %d",
                          (long long)count, cfg->batch);
    }
    size_t sz = (size_t)kiln__dataset_sample_size(cfg->ds);
    l->order = malloc((size_t)l->count * sizeof *l->order);
    int ok = l->order != NULL;
    for (int s = 0; s < 2 && ok; s++) {
        l->scratch[s] = malloc(sz * sizeof(float));
        l->slot[s].x = malloc(sz * (size_t)cfg->batch * sizeof(float));
        l->slot[s].y = malloc((size_t)cfg->batch * sizeof(int32_t));
        l->slot[s].index = malloc((size_t)cfg->batch * sizeof(int64_t));
        ok = l->scratch[s] && l->slot[s].x && l->slot[s].y && l->slot[s].index;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->next_fill = l->batches; /* nothing to do until start() */
    if (ok && cfg->threaded) {
        if (pthread_create(&l->thread, NULL, producer, l) == 0)
            l->have_thread = 1;
        else
            l->cfg.threaded = 0;
    }
    if (!ok) {
        kiln__loader_destroy(l);
        return kiln__fail(err, KILN_ERR_NO_MEMORY, "loader: out of memory");
    }
    *out = l;
    return KILN_OK;
}

void kiln__loader_destroy(kiln_loader *l)
{
    if (!l) return;
    if (l->have_thread) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    for (int s = 0; s < 2; s++) {
        free(l->scratch[s]);
        free(l->slot[s].x);
        free(l->slot[s].y);
        free(l->slot[s].index);
    }
    free(l->order);
    free(l);
}

int64_t kiln__loader_batches(const kiln_loader *l)
{
    return l->batches;
}

kiln_status kiln__loader_start(kiln_loader *l, int epoch, kiln_errbuf *err)
{
    (void)err;
    pthread_mutex_lock(&l->mu);
    /* A fill in progress belongs to the old epoch: wait for it to end (it
     * reads the order this call rewrites), and the new generation makes the
     * producer drop it. */
    l->generation++;
    while (l->busy) pthread_cond_wait(&l->cv, &l->mu);
    l->epoch = epoch;
    for (int64_t i = 0; i < l->count; i++) l->order[i] = i;
    if (l->cfg.shuffle) {
        uint64_t r = kiln__mix64(l->cfg.seed ^ kiln__mix64(0x5eedull + (uint64_t)epoch));
        for (int64_t i = l->count - 1; i > 0; i--) {
            r = kiln__mix64(r);
            int64_t j = (int64_t)(r % (uint64_t)(i + 1));
            int64_t t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    l->state[0] = l->state[1] = SLOT_EMPTY;
    l->next_fill = 0;
    l->next_consume = 0;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return KILN_OK;
}

int kiln__loader_next(kiln_loader *l, kiln_batch *b, kiln_errbuf *err)
{
    pthread_mutex_lock(&l->mu);
    /* The slot handed out last time is free again. */
    if (l->next_consume > 0) {
        int prev = (int)((l->next_consume - 1) & 1);
        if (l->state[prev] == SLOT_FULL && l->slot[prev].number == l->next_consume - 1) {
            l->state[prev] = SLOT_EMPTY;
            pthread_cond_broadcast(&l->cv);
        }
    }
    if (l->next_consume >= l->batches) {
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    int64_t number = l->next_consume;
    int s = (int)(number & 1);
    kiln_status st;
    if (l->have_thread) {
        while (l->state[s] != SLOT_FULL || l->slot[s].number != number)
            pthread_cond_wait(&l->cv, &l->mu);
        st = l->slot_status[s];
        if (st != KILN_OK && err) *err = l->slot_err[s];
    } else {
        int epoch = l->epoch;
        pthread_mutex_unlock(&l->mu);
        st = fill(l, s, number, epoch, err);
        pthread_mutex_lock(&l->mu);
        l->state[s] = SLOT_FULL;
    }
    l->next_consume++;
    *b = l->slot[s];
    pthread_mutex_unlock(&l->mu);
    return st == KILN_OK ? 1 : -(int)st;
}
