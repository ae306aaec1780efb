/* Data-parallel training (docs/MPI.md): throughput and communication.
 *
 *   build/bench_dist_bench [--cfg CFG] [--img 160] [--batch 8] [--iters 4] [--threads 1]
 *   mpirun -np 2 build/bench_dist_bench ...
 *
 * Training steps of --cfg (default yolov9-t) on random images with a global batch
 * of --batch and an optimizer step after every batch (nbs = batch: the most
 * communication per image); on one process the whole batch, under mpirun a
 * shard per rank. Prints images/s and, per rank, the share of the time spent in
 * train/dist.h calls (the gradient sum, BN buffers, loss sums: communication and
 * waiting for the slower rank). Then the cost of summing the gradients of
 * yolov9-t and yolov9-c over the ranks (dist_sum_grads, 4 MiB buckets), which
 * docs/BENCHMARKS.md uses to project the scaling to more machines. A benchmark
 * prints a table; it never fails on a slow machine. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/rng.h"
#include "train/dist.h"
#include "train/loader.h"
#include "train/trainer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "bench_dist_bench: rank %d: %s: %s\n", dist_rank(), what, gelan_last_error());
    dist_abort(1);
    return 1;
}

/* images/s of training steps; *comm: this rank's seconds in dist calls per step */
static int train_steps(const char *cfg, int img, int batch, int iters, double *sec_per_step, double *comm) {
    ModelOptions mo = {.nc = 80, .seed = 0};
    Model *m = model_build_file(cfg, &mo);
    if (!m) return -1;
    Hyp h;
    hyp_default(&h);
    TrainCore c;
    int rc = train_core_init(&c, m, &h, OPTIM_SGD, LR_LINEAR, 10, batch, batch, iters + 1);
    if (!rc) rc = train_core_set_dist(&c, false, 0);
    int lo, hi;
    loader_shard_range(batch, dist_rank(), dist_size(), &lo, &hi);
    const int n = hi - lo;
    Tensor *x = n ? tensor_new4(n, 3, img, img) : NULL;
    Rng r;
    rng_seed(&r, 1 + (uint64_t)dist_rank());
    for (size_t k = 0; x && k < x->numel; k++) x->data[k] = rng_uniform(&r);
    /* two boxes per image of the shard */
    float *rows = malloc(sizeof(float) * 12 * (size_t)(n + 1));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 2; j++) {
            float *q = rows + 6 * (2 * i + j);
            q[0] = (float)i, q[1] = (float)(rng_below(&r, 80));
            q[2] = 0.25f + 0.5f * rng_uniform(&r), q[3] = 0.25f + 0.5f * rng_uniform(&r);
            q[4] = 0.1f + 0.3f * rng_uniform(&r), q[5] = 0.1f + 0.3f * rng_uniform(&r);
        }
    Targets tg = {2 * n, rows};
    double t0 = 0;
    for (int i = 0; !rc && i <= iters; i++) {
        if (i == 1) { /* the first step allocates; time the others */
            rc = dist_barrier("bench");
            dist_stats_reset();
            t0 = now_s();
        }
        if (!rc) rc = train_core_step_shard(&c, x, &tg, batch, 0, i, NULL, NULL);
    }
    if (!rc) rc = dist_barrier("bench");
    *sec_per_step = (now_s() - t0) / iters;
    *comm = dist_stats().seconds / iters;
    tensor_free(x);
    free(rows);
    train_core_free(&c);
    model_free(m);
    return rc;
}

/* Seconds to sum a model's gradients over the ranks; *mb: their size. */
static int grad_sum_cost(const char *cfg, double *sec, double *mb) {
    ModelOptions mo = {.nc = 80, .seed = 0};
    Model *m = model_build_file(cfg, &mo);
    if (!m) return -1;
    Tensor **ts = malloc(sizeof *ts * (size_t)m->nparams);
    size_t floats = 0;
    int rc = ts ? 0 : gelan_error("out of memory");
    Arena a = {0};
    for (int i = 0; !rc && i < m->nparams; i++) {
        ts[i] = m->params[i].t;
        if (!tensor_grad(ts[i], &a)) rc = gelan_error("out of memory");
        floats += ts[i]->numel;
    }
    const int reps = 5;
    double best = INFINITY;
    for (int k = 0; !rc && k <= reps; k++) {
        if (!rc) rc = dist_barrier("bench");
        double t0 = now_s();
        if (!rc) rc = dist_sum_grads(ts, m->nparams, 0);
        double t = now_s() - t0;
        if (k > 0 && t < best) best = t; /* the first one allocates the buckets */
    }
    /* every rank's best, the slowest of them */
    double v = best;
    if (!rc) rc = dist_sum_f64(&v, 1, "bench");
    *sec = dist_size() > 1 ? v / dist_size() : 0, *mb = floats * 4.0 / (1 << 20);
    free(ts);
    model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    const char *cfg = "configs/models/yolov9-t.yaml";
    int img = 160, batch = 8, iters = 4, threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cfg"))
            cfg = argv[i + 1];
        else if (!strcmp(argv[i], "--img"))
            img = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch"))
            batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iters"))
            iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr,
                    "usage: [mpirun -np N] bench_dist_bench [--cfg CFG] [--img S] [--batch B] [--iters N] "
                    "[--threads T]\n");
            return 2;
        }
    }
    if (dist_init()) return fail("dist_init");
    pool_init(threads);
    const int rank = dist_rank(), size = dist_size();
    double step = 0, comm = 0;
    if (train_steps(cfg, img, batch, iters, &step, &comm)) return fail("training steps");
    double c_all[2] = {comm, comm * comm};
    if (dist_sum_f64(c_all, 1, "bench")) return fail("sum");
    if (rank == 0) {
        printf(
            "data-parallel training: %s at %d px, global batch %d, optimizer step every batch, %d thread%s per "
            "rank, %s\n",
            cfg, img, batch, pool_threads(), pool_threads() > 1 ? "s" : "", dist_available() ? "MPI" : "no MPI");
        printf(
            "| ranks | s/step | images/s | time in dist calls (rank 0) | mean over ranks |\n|---|---|---|---|---|\n");
        printf("| %d | %.3f | %.2f | %.1f%% | %.1f%% |\n", size, step, batch / step, 100 * comm / step,
               100 * c_all[0] / size / step);
    }
    if (size == 1) {
        if (rank == 0) printf("(one process: run under mpirun -np N for N ranks and the gradient sums)\n");
    } else {
        const char *models[] = {"configs/models/yolov9-t.yaml", "configs/models/yolov9-c.yaml"};
        if (rank == 0)
            printf(
                "\nsum of the gradients over %d ranks (dist_sum_grads, 4 MiB buckets, best of 5):\n"
                "| model | gradient MB | ms | algorithm GB/s | bus GB/s (2(n-1)/n) |\n|---|---|---|---|---|\n",
                size);
        for (int k = 0; k < 2; k++) {
            double sec, mb;
            if (grad_sum_cost(models[k], &sec, &mb)) return fail("gradient sum");
            if (rank == 0)
                printf("| %s | %.1f | %.1f | %.2f | %.2f |\n", models[k], mb, 1e3 * sec, mb / 1024 / sec,
                       mb / 1024 / sec * 2 * (size - 1) / size);
        }
    }
    pool_shutdown();
    dist_finalize();
    return 0;
}
