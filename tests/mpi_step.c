/* The data-parallel acceptance check (run under mpirun by tests/mpi_test.sh):
 * optimizer steps whose global batch is sharded over the ranks end where the
 * same steps of one process on the whole batch end: parameters, BN running
 * statistics, EMA, momentum buffers and the loss items of every step, within
 * float rounding. The reference runs on rank 0 after the distributed steps,
 * from a model built the same way, on the unsharded loader.
 *
 *   mpirun -np 2 build/mpi_step [--sync-bn] [--batch B] [--images N] [--steps S]
 *                               [--img S] [--expect-differ]
 *
 * "Within float rounding": after ONE step the shards differ from one process
 * only in the order of sums (BN statistics in double, gradients in float), a
 * few 1e-7 relative: the bound is TOL. Later steps carry those differences
 * through a fresh model whose train-mode BN re-amplifies near-constant
 * channels, so the bound for several steps is measured, not guessed: a second
 * reference whose initial parameters are each moved by one ulp (a perturbation
 * the size of a rounding error) shows how far rounding alone takes the run;
 * the distributed run must stay within max(TOL, that distance) per category.
 *
 * Without --sync-bn each rank normalises with its own shard's statistics, so
 * the step is NOT the single-process one: --expect-differ checks that the
 * comparison sees that (the ranks must still agree with each other).
 * Prints one line per check and "N passed, M failed"; exit 1 on a failure, 2
 * on bad usage or a build without MPI. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor/error.h"
#include "tensor/pool.h"
#include "train/dist.h"
#include "train/loader.h"
#include "train/trainer.h"

static const char *TINY = "tests/configs/gelan-tiny.yaml";

#define TOL 2e-5

static int passed, failed;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s: ", ok ? "ok" : "FAILED");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    ok ? passed++ : failed++;
}

/* max |a - b| / max |b| over one tensor (0 for an all-zero b equal to a) */
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return m > 0 ? d / m : d;
}

typedef struct {
    Model *m;
    TrainCore c;
    Loader *L;
    LossItems *items; /* [steps] */
} Side;

static int side_open(Side *s, const Dataset *ds, int batch, int img, int steps, int shard, int shards) {
    ModelOptions mo = {.nc = ds->nc, .seed = 0};
    if (!(s->m = model_build_file(TINY, &mo))) return -1;
    if (!(s->items = calloc((size_t)steps, sizeof *s->items))) return gelan_error("out of memory");
    Hyp h;
    hyp_default(&h);
    /* nbs = batch: an optimizer step after every batch */
    if (train_core_init(&s->c, s->m, &h, OPTIM_SGD, LR_LINEAR, 1, batch, batch, steps)) return -1;
    LoaderOptions lo;
    loader_options_default(&lo, true);
    lo.img_size = img, lo.batch = batch, lo.workers = 0, lo.seed = 0, lo.shard = shard, lo.shards = shards;
    if (!(s->L = loader_new(ds, &lo))) return -1;
    return loader_start_epoch(s->L, 0);
}

static void side_close(Side *s) {
    loader_free(s->L);
    train_core_free(&s->c);
    model_free(s->m);
    free(s->items);
}

static int side_run(Side *s, int steps) {
    for (int i = 0; i < steps; i++) {
        const Batch *b;
        int got = loader_next(s->L, &b);
        if (got <= 0) return got < 0 ? -1 : gelan_error("the loader ended after %d batches", i);
        int inst = b->targets.n;
        if (train_core_step_shard(&s->c, b->images, &b->targets, b->batch_n, 0, i, &s->items[i], &inst)) return -1;
    }
    return 0;
}

/* Moves every parameter (and its EMA copy) by one ulp in a pseudo-random direction. */
static void nudge(Side *s) {
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < s->m->nparams; i++) {
        Tensor *t = s->m->params[i].t, *e = ema_find(s->c.ema, s->m->params[i].name);
        for (size_t k = 0; k < t->numel; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            t->data[k] = nextafterf(t->data[k], (x & 1) ? INFINITY : -INFINITY);
        }
        if (e) memcpy(e->data, t->data, t->numel * sizeof(float));
    }
}

enum { C_PARAMS, C_BUFFERS, C_EMA, C_MOMENTUM, C_ITEMS, NCAT };
static const char *const CAT[NCAT] = {"parameters", "BN running statistics", "EMA", "momentum buffers",
                                      "loss items of every step"};

/* Largest relative difference of a from b per category, and where. */
static void compare(const Side *a, const Side *b, int steps, double *worst, const char **where) {
    for (int c = 0; c < NCAT; c++) worst[c] = 0, where[c] = "";
#define TRACK(c, x, y, n, name)                            \
    do {                                                   \
        double d_ = rel_diff(x, y, n);                     \
        if (d_ > worst[c]) worst[c] = d_, where[c] = name; \
    } while (0)
    for (int i = 0; i < a->m->nparams; i++)
        TRACK(C_PARAMS, a->m->params[i].t->data, b->m->params[i].t->data, a->m->params[i].t->numel,
              a->m->params[i].name);
    for (int i = 0; i < a->m->nbuffers; i++)
        TRACK(C_BUFFERS, a->m->buffers[i].t->data, b->m->buffers[i].t->data, a->m->buffers[i].t->numel,
              a->m->buffers[i].name);
    for (int i = 0; i < a->c.ema->n; i++)
        TRACK(C_EMA, a->c.ema->ema[i]->data, b->c.ema->ema[i]->data, a->c.ema->ema[i]->numel, a->c.ema->names[i]);
    for (int i = 0; i < a->c.optim->n; i++) {
        const Tensor *x = a->c.optim->state[i].buf[0], *y = b->c.optim->state[i].buf[0];
        if (x && y) TRACK(C_MOMENTUM, x->data, y->data, x->numel, a->c.optim->params[i].name);
    }
    for (int s = 0; s < steps; s++) {
        const LossItems *x = &a->items[s], *y = &b->items[s];
        const float u[4] = {x->box, x->cls, x->dfl, x->total}, v[4] = {y->box, y->cls, y->dfl, y->total};
        TRACK(C_ITEMS, u, v, 4, "box, cls, dfl, total");
    }
#undef TRACK
}

int main(int argc, char **argv) {
    int batch = 8, images = 8, steps = 1, img = 96;
    bool sync_bn = false, expect_differ = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sync-bn"))
            sync_bn = true;
        else if (!strcmp(argv[i], "--expect-differ"))
            expect_differ = true;
        else if (i + 1 < argc && !strcmp(argv[i], "--batch"))
            batch = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--images"))
            images = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--steps"))
            steps = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--img"))
            img = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: mpirun -np N mpi_step [--sync-bn] [--batch B] [--images N] [--steps S] [--img S] "
                    "[--expect-differ]\n");
            return 2;
        }
    }
    if (dist_init()) {
        fprintf(stderr, "mpi_step: %s\n", gelan_last_error());
        return 2;
    }
    if (!dist_available() || dist_size() < 2) {
        fprintf(stderr, "mpi_step: needs a build with MPI, run under mpirun with 2 or more ranks\n");
        dist_finalize();
        return 2;
    }
    const int rank = dist_rank(), size = dist_size();
    pool_init(1);

    char yaml[128];
    snprintf(yaml, sizeof yaml, "/tmp/gelan_mpi_step_%ld.yaml", (long)getpid());
    FILE *f = fopen(yaml, "w");
    if (f) fprintf(f, "synthetic: shapes\ntrain_count: %d\nval_count: 2\nimg: %d\nseed: 0\n", images, img), fclose(f);
    DataConfig *cfg = f ? data_config_load(yaml) : NULL;
    Dataset *ds = cfg ? dataset_open(cfg, SPLIT_TRAIN) : NULL;
    remove(yaml);

    Side d = {0};
    int rc = ds ? side_open(&d, ds, batch, img, steps, rank, size) : -1;
    /* the ranks must agree after every step (a checksum of everything compared with rank 0's) */
    if (!rc) rc = train_core_set_dist(&d.c, sync_bn, 1);
    if (dist_agree(rc, "set-up") || side_run(&d, steps)) {
        fprintf(stderr, "mpi_step: rank %d: %s\n", rank, gelan_last_error());
        dist_abort(1);
        return 1;
    }
    if (rank == 0) {
        printf("mpi_step: %d ranks, %d step%s of batch %d from %d images at %d px, BN statistics %s\n", size, steps,
               steps > 1 ? "s" : "", batch, images, img, sync_bn ? "over all ranks (--sync-bn)" : "per rank");
        for (int s = 0, left = images; s < steps; s++, left -= batch) {
            int n = left < batch ? left : batch, lo, hi;
            printf("  step %d: %d images, shards", s, n);
            for (int k = 0; k < size; k++) loader_shard_range(n, k, size, &lo, &hi), printf(" %d", hi - lo);
            printf("\n");
        }
        /* the same steps in this process alone on whole batches, from the same and from nudged weights */
        Side r = {0}, z = {0};
        if (side_open(&r, ds, batch, img, steps, 0, 1) || side_run(&r, steps) ||
            side_open(&z, ds, batch, img, steps, 0, 1)) {
            fprintf(stderr, "mpi_step: reference: %s\n", gelan_last_error());
            dist_abort(1);
        }
        nudge(&z);
        if (side_run(&z, steps)) {
            fprintf(stderr, "mpi_step: nudged reference: %s\n", gelan_last_error());
            dist_abort(1);
        }
        double wd[NCAT], wz[NCAT];
        const char *at[NCAT], *atz[NCAT];
        compare(&d, &r, steps, wd, at);
        compare(&z, &r, steps, wz, atz);
        printf(
            "  largest difference from one process (relative to the tensor's largest value), and that of one\n"
            "  process started one ulp away:\n");
        for (int c = 0; c < NCAT; c++) printf("    %-26s %.2e (%s)  one ulp: %.2e\n", CAT[c], wd[c], at[c], wz[c]);
        if (expect_differ) {
            check(wd[C_PARAMS] > fmax(10 * TOL, wz[C_PARAMS]) && wd[C_BUFFERS] > fmax(10 * TOL, wz[C_BUFFERS]),
                  "per-rank BN statistics: the step is not one process's (parameters %.2e, BN statistics %.2e)",
                  wd[C_PARAMS], wd[C_BUFFERS]);
        } else {
            for (int c = 0; c < NCAT; c++) {
                const double bound = steps == 1 ? TOL : fmax(TOL, wz[c]);
                check(wd[c] <= bound, "%s equal one process's within %.1e (%.2e)", CAT[c], bound, wd[c]);
            }
        }
        side_close(&r);
        side_close(&z);
    }
    /* the ranks hold the same everything (rank 0's reference ran meanwhile) */
    dist_set_timeout(fmax(dist_timeout(), 120));
    int same = train_core_check_replicas(&d.c, "after the steps");
    if (rank == 0) {
        check(!same, "all %d ranks hold the same parameters, buffers, EMA and optimizer state%s%s", size,
              same ? ": " : "", same ? gelan_last_error() : "");
        printf("%d passed, %d failed\n", passed, failed);
    }
    side_close(&d);
    dataset_free(ds);
    data_config_free(cfg);
    pool_shutdown();
    int bad = failed;
    dist_bcast(&bad, sizeof bad, "result");
    dist_finalize();
    return bad ? 1 : 0;
}
