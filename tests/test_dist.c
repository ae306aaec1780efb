/* Data-parallel training, the parts one process can check (tests/mpi_test.sh runs
 * the rest under mpirun): shards of a batch partition it and build exactly its
 * images, targets and augmentation; the loss of shards normalised by the global
 * target scores sums to the loss and gradient of the whole batch; batch norm with
 * the sync hook equals batch norm over the concatenated batch, with another
 * "rank" played by the hook; the one-process dist API; the checksum. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tests/testutil.h"
#include "train/dist.h"
#include "train/loader.h"
#include "train/trainer.h"

/* ---- shards of a batch ------------------------------------------------------------ */

static void test_shard_ranges(void) {
    for (int shards = 1; shards <= 5; shards++)
        for (int n = 1; n <= 13; n++) {
            int next = 0, mn = n, mx = 0;
            for (int k = 0; k < shards; k++) {
                int lo, hi;
                loader_shard_range(n, k, shards, &lo, &hi);
                CU_ASSERT_EQUAL(lo, next); /* contiguous, in rank order */
                CU_ASSERT(hi >= lo);
                next = hi;
                if (hi - lo < mn) mn = hi - lo;
                if (hi - lo > mx) mx = hi - lo;
                if (n < shards) CU_ASSERT_EQUAL(hi - lo, k == 0 ? n : 0); /* too small: whole on shard 0 */
            }
            CU_ASSERT_EQUAL(next, n);
            if (n >= shards) CU_ASSERT(mx - mn <= 1 && mn >= 1);
        }
}

static Dataset *shapes_set(int n, DataConfig **cfg) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/gelan_test_dist_%ld.yaml", (long)getpid());
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    fprintf(f, "synthetic: shapes\ntrain_count: %d\nval_count: 2\nimg: 64\nseed: 3\n", n);
    fclose(f);
    *cfg = data_config_load(path);
    remove(path);
    return *cfg ? dataset_open(*cfg, SPLIT_TRAIN) : NULL;
}

/* The shards of every batch of two epochs, put side by side, are the whole batch:
 * the same images bit for bit (mosaic and the other augmentations included), the
 * same targets (image indices re-based), the same data set indices. */
static void check_shards_rebuild_batches(int shards) {
    DataConfig *cfg = NULL;
    Dataset *ds = shapes_set(11, &cfg); /* batch 5: batches of 5, 5, 1 */
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    LoaderOptions o;
    loader_options_default(&o, true);
    o.img_size = 64, o.batch = 5, o.workers = 1, o.seed = 9;
    Loader *whole = loader_new(ds, &o), *part[4] = {0};
    CU_ASSERT_PTR_NOT_NULL_FATAL(whole);
    for (int k = 0; k < shards; k++) {
        o.shard = k, o.shards = shards, o.workers = k % 2; /* with and without loader threads */
        CU_ASSERT_PTR_NOT_NULL_FATAL(part[k] = loader_new(ds, &o));
    }
    for (int epoch = 0; epoch < 2; epoch++) {
        loader_start_epoch(whole, epoch);
        for (int k = 0; k < shards; k++) loader_start_epoch(part[k], epoch);
        const Batch *w, *p;
        while (loader_next(whole, &w) == 1) {
            const size_t per = (size_t)3 * w->h * w->w;
            int at = 0, rows = 0;
            for (int k = 0; k < shards; k++) {
                CU_ASSERT_EQUAL_FATAL(loader_next(part[k], &p), 1);
                int lo, hi;
                loader_shard_range(w->n, k, shards, &lo, &hi);
                CU_ASSERT_EQUAL(p->n, hi - lo);
                CU_ASSERT_EQUAL(p->batch_n, w->n);
                CU_ASSERT_EQUAL(p->batch_index, w->batch_index);
                CU_ASSERT_EQUAL(lo, at);
                if (p->n == 0) {
                    CU_ASSERT_PTR_NULL(p->images);
                    CU_ASSERT_EQUAL(p->targets.n, 0);
                    continue;
                }
                CU_ASSERT(memcmp(p->images->data, w->images->data + lo * per, p->n * per * sizeof(float)) == 0);
                CU_ASSERT(memcmp(p->index, w->index + lo, p->n * sizeof(int)) == 0);
                for (int j = 0; j < p->targets.n; j++, rows++) {
                    const float *a = p->targets.rows + 6 * j, *b = w->targets.rows + 6 * rows;
                    CU_ASSERT_EQUAL(a[0] + lo, b[0]);
                    CU_ASSERT(memcmp(a + 1, b + 1, 5 * sizeof(float)) == 0);
                }
                at = hi;
            }
            CU_ASSERT_EQUAL(at, w->n);
            CU_ASSERT_EQUAL(rows, w->targets.n);
        }
    }
    for (int k = 0; k < shards; k++) loader_free(part[k]);
    loader_free(whole);
    dataset_free(ds);
    data_config_free(cfg);
}

static void test_shards_rebuild_batches_2(void) { check_shards_rebuild_batches(2); }
static void test_shards_rebuild_batches_3(void) { check_shards_rebuild_batches(3); }

/* ---- the loss of shards ----------------------------------------------------------- */

/* N = 4, nc = 3, two heads, levels 8x8 / 4x4 / 2x2 at strides 8 / 16 / 32 (a 64x64 image) */
#define LN 4
#define LC (64 + 3)
static const float strides[3] = {8, 16, 32};
static const float head_w[2] = {0.25f, 1.0f};
/* images 0 and 1 with boxes, image 2 without, image 3 with one */
static const float rows[4 * 6] = {
    0, 1, 0.40f, 0.45f, 0.50f, 0.45f,  //
    0, 0, 0.62f, 0.60f, 0.35f, 0.40f,  //
    1, 2, 0.52f, 0.50f, 0.60f, 0.55f,  //
    3, 1, 0.30f, 0.35f, 0.40f, 0.30f,
};

/* Box logits peaked at 2 cells per side (boxes of about the targets' size, so that the
 * target scores sum to more than 1 and their normalisation matters), class logits ~ -1. */
static void make_maps(Tensor **maps, int lo, int hi, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < 6; i++) {
        int s = 8 >> (i % 3), hw = s * s;
        Tensor *full = tensor_new4(LN, LC, s, s);
        for (size_t k = 0; k < full->numel; k++) {
            int ch = (int)(k / hw % LC);
            full->data[k] =
                ch < 64 ? -2.0f * (ch % 16 - 2) * (ch % 16 - 2) + 0.3f * rng_normal(&r) : rng_normal(&r) - 1;
        }
        maps[i] = tensor_new4(hi - lo, LC, s, s);
        memcpy(maps[i]->data, full->data + (size_t)lo * LC * hw, maps[i]->numel * sizeof(float));
        maps[i]->requires_grad = true;
        tensor_free(full);
    }
}

typedef struct {
    double tsum[2][2]; /* per shard, per head */
    int shard;
    bool sum_all;
} TssCtx;

/* Records this shard's target-score sums, or (sum_all) replaces them by the sums of both. */
static int tss_hook(void *vctx, double *tsum, int n_heads) {
    TssCtx *c = vctx;
    for (int h = 0; h < n_heads; h++) {
        if (!c->sum_all)
            c->tsum[c->shard][h] = tsum[h];
        else
            tsum[h] = c->tsum[0][h] + c->tsum[1][h];
    }
    return 0;
}

/* loss items and map gradients of images [lo, hi) of the batch; shard NULL: the whole batch */
static int shard_loss(Tape *t, Tensor **maps, int lo, int hi, const LossShard *shard, LossItems *it) {
    float part[4 * 6];
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (rows[6 * i] >= lo && rows[6 * i] < hi) {
            memcpy(part + 6 * n, rows + 6 * i, sizeof(float) * 6);
            part[6 * n++] -= (float)lo;
        }
    Targets tg = {n, part};
    Tensor *loss = shard ? yolo_loss_shard(t, maps, 2, 3, head_w, strides, &tg, NULL, shard, it)
                         : yolo_loss(t, maps, 2, 3, head_w, strides, &tg, NULL, it, NULL);
    int rc = loss ? tape_backward(t, loss) : -1;
    tape_reset(t);
    return rc;
}

static void check_loss_shards(int split) {
    Tape *t = tape_new();
    Tensor *whole[6], *a[6], *b[6];
    make_maps(whole, 0, LN, 5);
    make_maps(a, 0, split, 5);
    make_maps(b, split, LN, 5);
    LossItems iw, ia, ib;
    CU_ASSERT_OK(shard_loss(t, whole, 0, LN, NULL, &iw));
    TssCtx c = {0};
    LossShard sh = {.batch = LN, .reduce_tss = tss_hook, .ctx = &c};
    /* first the shards' own sums (an allreduce has them all at once) */
    c.shard = 0;
    CU_ASSERT_OK(shard_loss(t, a, 0, split, &sh, &ia));
    c.shard = 1;
    CU_ASSERT_OK(shard_loss(t, b, split, LN, &sh, &ib));
    /* per-shard normalisation is not the batch's: the sums must matter for this test to mean anything */
    CU_ASSERT(fabsf(ia.cls + ib.cls - iw.cls) > 1e-3f * iw.cls);
    for (int i = 0; i < 6; i++) memset(a[i]->grad, 0, a[i]->numel * sizeof(float));
    for (int i = 0; i < 6; i++) memset(b[i]->grad, 0, b[i]->numel * sizeof(float));
    c.sum_all = true;
    CU_ASSERT_OK(shard_loss(t, a, 0, split, &sh, &ia));
    CU_ASSERT_OK(shard_loss(t, b, split, LN, &sh, &ib));
    const float got[4] = {ia.box + ib.box, ia.cls + ib.cls, ia.dfl + ib.dfl, ia.total + ib.total};
    const float want[4] = {iw.box, iw.cls, iw.dfl, iw.total};
    CU_ASSERT_OK(check_close("items of the shards summed", got, want, 4, 1e-5, 0));
    for (int i = 0; i < 6; i++) {
        size_t per = whole[i]->numel / LN;
        CU_ASSERT_OK(check_close("gradient of shard a", a[i]->grad, whole[i]->grad, a[i]->numel, 1e-5, 1e-9));
        CU_ASSERT_OK(
            check_close("gradient of shard b", b[i]->grad, whole[i]->grad + split * per, b[i]->numel, 1e-5, 1e-9));
    }
    for (int i = 0; i < 6; i++) tensor_free(whole[i]), tensor_free(a[i]), tensor_free(b[i]);
    tape_free(t);
}

static void test_loss_shards_2_2(void) { check_loss_shards(2); }
static void test_loss_shards_3_1(void) { check_loss_shards(3); }

/* ---- synchronised batch norm ------------------------------------------------------- */

/* The other rank, played by the hook: adds the sums of its shard x2 (and dy2). */
typedef struct {
    const Tensor *x2;
    const float *dy2;
    int calls;
    double mu[8];
} OtherRank;

static int other_rank(void *vctx, double *v, size_t n) {
    OtherRank *o = vctx;
    const int N = o->x2->shape[0], C = o->x2->shape[1], HW = o->x2->shape[2] * o->x2->shape[3];
    const size_t want[3] = {(size_t)C + 1, (size_t)C, 2 * (size_t)C};
    if (o->calls > 2 || n != want[o->calls]) return gelan_error("sync hook: call %d with %zu values", o->calls, n);
    for (int c = 0; c < C; c++) {
        double s0 = 0, s1 = 0;
        for (int i = 0; i < N; i++)
            for (int p = 0; p < HW; p++) {
                size_t k = ((size_t)i * C + c) * HW + p;
                double x = o->x2->data[k];
                if (o->calls == 0) s0 += x;
                if (o->calls == 1) s0 += (x - o->mu[c]) * (x - o->mu[c]);
                if (o->calls == 2) s0 += o->dy2[k], s1 += o->dy2[k] * (x - o->mu[c]);
            }
        if (o->calls == 2)
            v[2 * c] += s0, v[2 * c + 1] += s1;
        else
            v[c] += s0;
    }
    if (o->calls == 0) {
        v[C] += (double)N * HW;
        for (int c = 0; c < C; c++) o->mu[c] = v[c] / v[C];
    }
    o->calls++;
    return 0;
}

static void test_sync_bn_equals_concatenated_batch(void) {
    const int C = 3, H = 4, W = 5, N1 = 2, N2 = 3, N = N1 + N2;
    Rng r;
    rng_seed(&r, 11);
    Tensor *x = tensor_new4(N, C, H, W), *x1 = tensor_new4(N1, C, H, W), *x2 = tensor_new4(N2, C, H, W);
    float *dy = malloc(x->numel * sizeof(float));
    for (size_t k = 0; k < x->numel; k++) x->data[k] = rng_normal(&r) * 2 + 0.5f * (float)(k / (H * W) % C);
    for (size_t k = 0; k < x->numel; k++) dy[k] = rng_normal(&r);
    memcpy(x1->data, x->data, x1->numel * sizeof(float));
    memcpy(x2->data, x->data + x1->numel, x2->numel * sizeof(float));
    Tensor *g[2], *bt[2], *rm[2], *rv[2];
    for (int s = 0; s < 2; s++) {
        g[s] = tensor_new1(C), bt[s] = tensor_new1(C), rm[s] = tensor_new1(C), rv[s] = tensor_new1(C);
        for (int c = 0; c < C; c++)
            g[s]->data[c] = 0.5f + c, bt[s]->data[c] = 0.1f * c, rm[s]->data[c] = 0.2f, rv[s]->data[c] = 1.5f;
        g[s]->requires_grad = bt[s]->requires_grad = true;
    }
    x->requires_grad = x1->requires_grad = true;
    Tape *t = tape_new();
    /* whole batch, one process */
    Tensor *yw = op_batchnorm2d(t, x, g[0], bt[0], rm[0], rv[0], 1e-3f, 0.03f, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(yw);
    CU_ASSERT_OK(tape_backward_from(t, yw, dy));
    Tensor *y = tensor_new4(N, C, H, W);
    memcpy(y->data, yw->data, y->numel * sizeof(float));
    tape_reset(t);
    /* shard 1 here, shard 2 in the hook */
    OtherRank o = {.x2 = x2, .dy2 = dy + x1->numel};
    batchnorm2d_set_sync(other_rank, &o);
    Tensor *y1 = op_batchnorm2d(t, x1, g[1], bt[1], rm[1], rv[1], 1e-3f, 0.03f, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(y1);
    CU_ASSERT_OK(tape_backward_from(t, y1, dy));
    batchnorm2d_set_sync(NULL, NULL);
    CU_ASSERT_EQUAL(o.calls, 3);
    CU_ASSERT_OK(check_close("sync-bn output", y1->data, y->data, y1->numel, 1e-5, 1e-6));
    CU_ASSERT_OK(check_close("sync-bn running_mean", rm[1]->data, rm[0]->data, C, 1e-6, 1e-7));
    CU_ASSERT_OK(check_close("sync-bn running_var (unbiased over both shards)", rv[1]->data, rv[0]->data, C, 1e-6, 0));
    CU_ASSERT_OK(check_close("sync-bn dx", x1->grad, x->grad, x1->numel, 1e-4, 1e-6));
    /* dgamma, dbeta: this shard's share, the gradient allreduce adds the other */
    float dg[3] = {0}, db[3] = {0};
    for (int i = 0; i < N1; i++)
        for (int c = 0; c < C; c++)
            for (int p = 0; p < H * W; p++) {
                size_t k = ((size_t)i * C + c) * H * W + p;
                db[c] += dy[k];
                dg[c] += dy[k] * (y->data[k] - bt[0]->data[c]) / g[0]->data[c];
            }
    CU_ASSERT_OK(check_close("sync-bn dgamma share", g[1]->grad, dg, C, 1e-4, 1e-5));
    CU_ASSERT_OK(check_close("sync-bn dbeta share", bt[1]->grad, db, C, 1e-5, 1e-6));
    tape_free(t);
    for (int s = 0; s < 2; s++) tensor_free(g[s]), tensor_free(bt[s]), tensor_free(rm[s]), tensor_free(rv[s]);
    tensor_free(x), tensor_free(x1), tensor_free(x2), tensor_free(y);
    free(dy);
}

/* ---- one process ------------------------------------------------------------------------ */

static void test_one_process(void) {
    if (!dist_available()) {
        /* a build without MPI refuses to be one of several ranks */
        setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
        CU_ASSERT_EQUAL(dist_init(), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "without MPI"));
        unsetenv("OMPI_COMM_WORLD_SIZE");
    }
    /* not started by mpirun: one process, MPI stays off */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE")) CU_ASSERT_OK(dist_init());
    CU_ASSERT_EQUAL(dist_rank(), 0);
    CU_ASSERT_EQUAL(dist_size(), 1);
    double v[3] = {1.5, -2, 3};
    CU_ASSERT_OK(dist_sum_f64(v, 3, "test"));
    CU_ASSERT(v[0] == 1.5 && v[1] == -2 && v[2] == 3);
    CU_ASSERT_OK(dist_agree(0, "test"));
    gelan_error("mine");
    CU_ASSERT_EQUAL(dist_agree(-1, "test"), -1);
    CU_ASSERT_STRING_EQUAL(gelan_last_error(), "mine");
    CU_ASSERT_OK(dist_wait_root("test"));
    /* a shard smaller than its batch needs data-parallel training */
    TrainCore c;
    memset(&c, 0, sizeof c);
    Tensor *img = tensor_new4(2, 3, 32, 32);
    Targets tg = {0, NULL};
    CU_ASSERT_EQUAL(train_core_step_shard(&c, img, &tg, 4, 0, 0, NULL, NULL), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "shard of 2 images of 4"));
    tensor_free(img);
}

static void test_checksum(void) {
    Tensor *a = tensor_new1(1001), *b = tensor_new1(1001), *c = tensor_new1(7);
    for (size_t k = 0; k < a->numel; k++) a->data[k] = b->data[k] = sinf((float)k);
    for (size_t k = 0; k < c->numel; k++) c->data[k] = (float)k;
    Tensor *ab[2] = {a, c}, *bb[2] = {b, c}, *ba[2] = {c, a};
    CU_ASSERT_EQUAL(dist_checksum(ab, 2), dist_checksum(bb, 2));
    CU_ASSERT_NOT_EQUAL(dist_checksum(ab, 2), dist_checksum(ba, 2)); /* order matters */
    uint64_t h = dist_checksum(bb, 2);
    const size_t at[3] = {0, 500, 1000}; /* a lane start, the middle, the tail */
    for (int i = 0; i < 3; i++) {
        float keep = b->data[at[i]];
        b->data[at[i]] = nextafterf(keep, INFINITY); /* one ulp */
        CU_ASSERT_NOT_EQUAL(dist_checksum(bb, 2), h);
        b->data[at[i]] = keep;
    }
    b->data[3] = -0.0f, a->data[3] = 0.0f; /* bit-exact: -0 is not +0 */
    CU_ASSERT_NOT_EQUAL(dist_checksum(ab, 2), dist_checksum(bb, 2));
    tensor_free(a), tensor_free(b), tensor_free(c);
}

SUITE_FN(dist) {
    CU_pSuite s = CU_add_suite("dist", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "shards partition a batch, small batches whole on shard 0", test_shard_ranges);
    CU_add_test(s, "2 shards build exactly the batch (images, targets, augmentation)", test_shards_rebuild_batches_2);
    CU_add_test(s, "3 shards build exactly the batch", test_shards_rebuild_batches_3);
    CU_add_test(s, "loss of shards 2+2 with global tss sums to the batch's", test_loss_shards_2_2);
    CU_add_test(s, "loss of shards 3+1 with global tss sums to the batch's", test_loss_shards_3_1);
    CU_add_test(s, "sync-bn equals batch norm over the concatenated batch", test_sync_bn_equals_concatenated_batch);
    CU_add_test(s, "one process: sums are the identity, agree keeps the message", test_one_process);
    CU_add_test(s, "checksum is bit-exact and order-sensitive", test_checksum);
    return 0;
}
