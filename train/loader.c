#include "train/loader.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/error.h"

void loader_options_default(LoaderOptions *o, bool train) {
    memset(o, 0, sizeof *o);
    o->img_size = 640;
    o->batch = train ? 16 : 32;
    o->workers = 2;
    o->prefetch = 2;
    o->augment = train;
    o->shuffle = train;
    o->rect = !train;
    o->stride = 32;
    o->pad = 0.5f;
    o->shard = 0, o->shards = 1;
    Hyp h;
    hyp_default(&h);
    o->hyp = h.aug;
}

enum { SLOT_FREE, SLOT_BUILDING, SLOT_READY, SLOT_HELD };

typedef struct {
    Batch b;
    int state;
    int rc;
    char err[512];
    float *rows;  /* targets storage */
    int rows_cap; /* in rows of 6 */
    int *index;   /* batch-size entries */
    Letterbox *letterbox;
} Slot;

/* Per-thread scratch, reused from sample to sample. */
typedef struct {
    Loader *L;
    pthread_t tid;
    Image img;
    Boxes boxes;
} Worker;

struct Loader {
    const Dataset *ds;
    LoaderOptions o;
    int nb;          /* batches per epoch */
    int *order;      /* this epoch's order */
    int *rect_order; /* validation with rect: aspect-ratio order */
    int *rect_hw;    /* validation with rect: [nb][2] batch h, w */

    pthread_mutex_t mu;
    pthread_cond_t work; /* a worker may have something to do */
    pthread_cond_t done; /* a slot became READY */
    Slot *slots;
    int nslots;
    int epoch;
    bool active; /* an epoch was started */
    bool mosaic, mosaic_next;
    int next_build, next_deliver;
    int held; /* slot the caller holds, -1 if none */
    bool stop;
    Worker *workers;
    int nworkers;
    Worker inline_worker; /* workers == 0 */
};

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One generator per (seed, epoch, purpose/position): independent streams. */
static void stream_seed(Rng *r, uint64_t seed, int epoch, uint64_t what) {
    rng_seed(r, mix64(mix64(mix64(seed) ^ (uint64_t)(uint32_t)epoch) ^ what));
}

int loader_epoch_order(const Loader *L, int epoch, int *order) {
    int n = L->ds->n;
    if (L->o.rect && !L->o.augment) {
        memcpy(order, L->rect_order, sizeof(int) * n);
        return 0;
    }
    for (int i = 0; i < n; i++) order[i] = i;
    if (L->o.shuffle) {
        Rng r;
        stream_seed(&r, L->o.seed, epoch, 0x5348554646ull); /* "SHUFF" */
        for (int i = n - 1; i > 0; i--) {
            int j = (int)rng_below(&r, (uint32_t)i + 1), t = order[i];
            order[i] = order[j], order[j] = t;
        }
    }
    return 0;
}

/* ---- building a batch --------------------------------------------------- */

void loader_shard_range(int n, int k, int shards, int *lo, int *hi) {
    if (shards <= 1 || n < shards) {
        *lo = k == 0 || shards <= 1 ? 0 : n, *hi = n;
        return;
    }
    const int q = n / shards, r = n % shards;
    *lo = k * q + (k < r ? k : r);
    *hi = *lo + q + (k < r);
}

static int build_batch(Loader *L, Worker *w, Slot *sl, int bi, int epoch, bool mosaic) {
    const LoaderOptions *o = &L->o;
    const int batch_n = L->ds->n - bi * o->batch < o->batch ? L->ds->n - bi * o->batch : o->batch;
    int lo, hi;
    loader_shard_range(batch_n, o->shard, o->shards, &lo, &hi);
    /* first: position in the epoch of this shard's first image */
    const int first = bi * o->batch + lo, n = hi - lo;
    int s = o->img_size, bh = s, bw = s;
    if (L->rect_hw) bh = L->rect_hw[2 * bi], bw = L->rect_hw[2 * bi + 1];
    Batch *b = &sl->b;
    if (n == 0) {
        tensor_free(b->images);
        b->images = NULL;
    } else if (!b->images || b->images->shape[0] != n || b->images->shape[2] != bh || b->images->shape[3] != bw) {
        tensor_free(b->images);
        if (!(b->images = tensor_new4(n, 3, bh, bw))) return -1;
    }
    b->n = n, b->batch_n = batch_n, b->h = bh, b->w = bw, b->batch_index = bi;
    b->index = sl->index;
    b->letterbox = o->augment ? NULL : sl->letterbox;
    int m = 0;
    size_t plane = (size_t)bh * bw;
    for (int k = 0; k < n; k++) {
        int idx = L->order[first + k];
        Rng r;
        stream_seed(&r, o->seed, epoch, 0x100000000ull + (uint64_t)(first + k));
        sl->index[k] = idx;
        int rc = o->augment ? sample_train(L->ds, idx, s, &o->hyp, mosaic, &r, &w->img, &w->boxes)
                            : sample_eval(L->ds, idx, s, bw, bh, &w->img, &w->boxes, &sl->letterbox[k]);
        if (rc) return -1;
        if (w->img.w != bw || w->img.h != bh)
            return gelan_error("loader: sample %d came out %dx%d, the batch is %dx%d", idx, w->img.w, w->img.h, bw, bh);
        /* HWC uint8 -> CHW float in [0, 1], as imgs.float() / 255 */
        float *dst = b->images->data + (size_t)k * 3 * plane;
        const uint8_t *p = w->img.data;
        for (size_t i = 0; i < plane; i++, p += 3) {
            dst[i] = p[0] / 255.0f;
            dst[plane + i] = p[1] / 255.0f;
            dst[2 * plane + i] = p[2] / 255.0f;
        }
        if (m + w->boxes.n > sl->rows_cap) {
            int cap = sl->rows_cap ? sl->rows_cap : 64;
            while (cap < m + w->boxes.n) cap *= 2;
            float *t = realloc(sl->rows, sizeof(float) * 6 * (size_t)cap);
            if (!t) return gelan_error("loader: out of memory for %d targets", cap);
            sl->rows = t, sl->rows_cap = cap;
        }
        for (int j = 0; j < w->boxes.n; j++, m++) {
            sl->rows[6 * m] = (float)k;
            memcpy(sl->rows + 6 * m + 1, w->boxes.v + 5 * j, sizeof(float) * 5);
        }
    }
    b->targets.n = m;
    b->targets.rows = sl->rows;
    return 0;
}

/* Builds the batch assigned to slot si with the lock released. */
static void run_build(Loader *L, Worker *w, int si, int bi, int epoch, bool mosaic) {
    Slot *sl = &L->slots[si];
    pthread_mutex_unlock(&L->mu);
    int rc = build_batch(L, w, sl, bi, epoch, mosaic);
    pthread_mutex_lock(&L->mu);
    sl->rc = rc;
    if (rc) snprintf(sl->err, sizeof sl->err, "%s", gelan_last_error());
    sl->state = SLOT_READY;
    pthread_cond_broadcast(&L->done);
}

/* A free slot when there is a batch left to build, else -1 (lock held). */
static int claim_slot(Loader *L) {
    if (!L->active || L->next_build >= L->nb) return -1;
    for (int i = 0; i < L->nslots; i++)
        if (L->slots[i].state == SLOT_FREE) {
            L->slots[i].state = SLOT_BUILDING;
            L->slots[i].b.batch_index = L->next_build++;
            return i;
        }
    return -1;
}

static void *worker_main(void *arg) {
    Worker *w = arg;
    Loader *L = w->L;
    pthread_mutex_lock(&L->mu);
    while (!L->stop) {
        int si = claim_slot(L);
        if (si < 0) {
            pthread_cond_wait(&L->work, &L->mu);
            continue;
        }
        run_build(L, w, si, L->slots[si].b.batch_index, L->epoch, L->mosaic);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* ---- rect batches ------------------------------------------------------------ */

static int cmp_aspect(const void *a, const void *b, void *ctx) {
    const Dataset *ds = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    double ai = (double)ds->items[i].h / ds->items[i].w, aj = (double)ds->items[j].h / ds->items[j].w;
    if (ai != aj) return ai < aj ? -1 : 1;
    return i - j; /* stable: ties keep the data set order */
}

static int setup_rect(Loader *L) {
    int n = L->ds->n, B = L->o.batch, s = L->o.img_size;
    L->rect_order = malloc(sizeof(int) * n);
    L->rect_hw = malloc(sizeof(int) * 2 * L->nb);
    if (!L->rect_order || !L->rect_hw) return gelan_error("loader: out of memory");
    for (int i = 0; i < n; i++) L->rect_order[i] = i;
    qsort_r(L->rect_order, (size_t)n, sizeof(int), cmp_aspect, (void *)L->ds);
    for (int bi = 0; bi < L->nb; bi++) {
        double mini = INFINITY, maxi = -INFINITY;
        for (int k = bi * B; k < n && k < (bi + 1) * B; k++) {
            const DataItem *it = &L->ds->items[L->rect_order[k]];
            double ar = (double)it->h / it->w;
            mini = fmin(mini, ar), maxi = fmax(maxi, ar);
        }
        double sh = 1, sw = 1;
        if (maxi < 1)
            sh = maxi;
        else if (mini > 1)
            sw = 1 / mini;
        L->rect_hw[2 * bi] = (int)ceil(sh * s / L->o.stride + L->o.pad) * L->o.stride;
        L->rect_hw[2 * bi + 1] = (int)ceil(sw * s / L->o.stride + L->o.pad) * L->o.stride;
    }
    return 0;
}

/* ---- public -------------------------------------------------------------------- */

Loader *loader_new(const Dataset *ds, const LoaderOptions *o) {
    if (!ds || ds->n <= 0) {
        gelan_error("loader: empty data set");
        return NULL;
    }
    if (o->img_size < 32 || o->img_size > 8192 || o->batch <= 0 || o->workers < 0 || o->workers > 64 ||
        (o->rect && o->stride <= 0) || o->shard < 0 || (o->shards > 0 && o->shard >= o->shards)) {
        gelan_error("loader: bad options (img_size %d, batch %d, workers %d, stride %d, shard %d of %d)", o->img_size,
                    o->batch, o->workers, o->stride, o->shard, o->shards);
        return NULL;
    }
    Loader *L = calloc(1, sizeof *L);
    if (!L) {
        gelan_error("loader: out of memory");
        return NULL;
    }
    L->ds = ds;
    L->o = *o;
    if (L->o.batch > ds->n) L->o.batch = ds->n;
    if (L->o.prefetch < 1) L->o.prefetch = 1;
    L->nb = (ds->n + L->o.batch - 1) / L->o.batch;
    L->mosaic = L->mosaic_next = o->augment;
    L->held = -1;
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->work, NULL);
    pthread_cond_init(&L->done, NULL);
    /* the caller holds one slot while up to `prefetch` others are prepared */
    L->nslots = L->o.workers ? L->o.prefetch + 1 : 1;
    L->slots = calloc((size_t)L->nslots, sizeof(Slot));
    L->order = malloc(sizeof(int) * ds->n);
    int rc = L->slots && L->order ? 0 : gelan_error("loader: out of memory");
    for (int i = 0; !rc && i < L->nslots; i++) {
        L->slots[i].index = malloc(sizeof(int) * L->o.batch);
        L->slots[i].letterbox = calloc((size_t)L->o.batch, sizeof(Letterbox));
        L->slots[i].rows_cap = 64; /* targets.rows is never NULL, even for a batch without boxes */
        L->slots[i].rows = malloc(sizeof(float) * 6 * 64);
        if (!L->slots[i].index || !L->slots[i].letterbox || !L->slots[i].rows)
            rc = gelan_error("loader: out of memory");
    }
    if (!rc && L->o.rect && !L->o.augment) rc = setup_rect(L);
    if (!rc && L->o.workers) {
        L->workers = calloc((size_t)L->o.workers, sizeof(Worker));
        if (!L->workers) rc = gelan_error("loader: out of memory");
        for (int i = 0; !rc && i < L->o.workers; i++) {
            L->workers[i].L = L;
            if (pthread_create(&L->workers[i].tid, NULL, worker_main, &L->workers[i]))
                rc = gelan_error("loader: cannot start loader thread %d", i);
            else
                L->nworkers++;
        }
    }
    L->inline_worker.L = L;
    if (rc) {
        loader_free(L);
        return NULL;
    }
    return L;
}

int loader_num_batches(const Loader *L) { return L->nb; }

void loader_set_mosaic(Loader *L, bool on) {
    pthread_mutex_lock(&L->mu);
    L->mosaic_next = on && L->o.augment;
    pthread_mutex_unlock(&L->mu);
}

int loader_start_epoch(Loader *L, int epoch) {
    pthread_mutex_lock(&L->mu);
    if (L->held >= 0) L->slots[L->held].state = SLOT_FREE, L->held = -1;
    L->active = false; /* workers take nothing new ... */
    for (;;) {         /* ... and the ones in flight finish */
        bool busy = false;
        for (int i = 0; i < L->nslots; i++) busy |= L->slots[i].state == SLOT_BUILDING;
        if (!busy) break;
        pthread_cond_wait(&L->done, &L->mu);
    }
    for (int i = 0; i < L->nslots; i++) L->slots[i].state = SLOT_FREE;
    loader_epoch_order(L, epoch, L->order);
    L->epoch = epoch;
    L->mosaic = L->mosaic_next;
    L->next_build = L->next_deliver = 0;
    L->active = true;
    pthread_cond_broadcast(&L->work);
    pthread_mutex_unlock(&L->mu);
    return 0;
}

int loader_next(Loader *L, const Batch **out) {
    *out = NULL;
    pthread_mutex_lock(&L->mu);
    if (!L->active) {
        pthread_mutex_unlock(&L->mu);
        return gelan_error("loader_next: no epoch started (call loader_start_epoch)");
    }
    if (L->held >= 0) {
        L->slots[L->held].state = SLOT_FREE, L->held = -1;
        pthread_cond_broadcast(&L->work);
    }
    if (L->next_deliver >= L->nb) {
        pthread_mutex_unlock(&L->mu);
        return 0;
    }
    int si = -1;
    for (;;) {
        for (int i = 0; i < L->nslots; i++)
            if (L->slots[i].state == SLOT_READY && L->slots[i].b.batch_index == L->next_deliver) si = i;
        if (si >= 0) break;
        if (!L->nworkers) { /* no threads: build it here */
            int ci = claim_slot(L);
            if (ci >= 0) run_build(L, &L->inline_worker, ci, L->slots[ci].b.batch_index, L->epoch, L->mosaic);
            continue;
        }
        pthread_cond_wait(&L->done, &L->mu);
    }
    Slot *sl = &L->slots[si];
    int rc = 1;
    if (sl->rc) {
        rc = gelan_error("%s", sl->err);
        sl->state = SLOT_FREE;
        L->active = false; /* the epoch cannot go on */
        pthread_cond_broadcast(&L->work);
    } else {
        sl->state = SLOT_HELD;
        L->held = si;
        L->next_deliver++;
        *out = &sl->b;
    }
    pthread_mutex_unlock(&L->mu);
    return rc;
}

void loader_free(Loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    L->stop = true;
    pthread_cond_broadcast(&L->work);
    pthread_mutex_unlock(&L->mu);
    for (int i = 0; i < L->nworkers; i++) pthread_join(L->workers[i].tid, NULL);
    for (int i = 0; L->workers && i < L->o.workers; i++)
        image_free(&L->workers[i].img), boxes_free(&L->workers[i].boxes);
    image_free(&L->inline_worker.img), boxes_free(&L->inline_worker.boxes);
    for (int i = 0; L->slots && i < L->nslots; i++) {
        tensor_free(L->slots[i].b.images);
        free(L->slots[i].rows), free(L->slots[i].index), free(L->slots[i].letterbox);
    }
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->work);
    pthread_cond_destroy(&L->done);
    free(L->slots), free(L->order), free(L->rect_order), free(L->rect_hw), free(L->workers);
    free(L);
}
