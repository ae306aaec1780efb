/* One training step (forward in train mode + the official loss + backward +
 * clip + SGD) of yolov9-t and gelan-c at 320 with batch 4, timed in C and, in
 * the same run, in PyTorch (tools/bench_train_torch.py, our faithful
 * re-implementation of the official model and loss) with the same threads.
 * Prints a table, the ratio ours / PyTorch, a per-op breakdown from the tape
 * profiler and the peak activation memory of a step.
 *
 *   build/bench_train_step_bench [--threads 2] [--iters 5] [--img 320] [--batch 4] [--no-torch] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "autograd/tape.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/rng.h"
#include "train/loss.h"
#include "train/trace.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static ParamGroup group_of(ParamKind k) {
    return k == NN_PARAM_BN_WEIGHT ? PARAM_BN_WEIGHT : k == NN_PARAM_BIAS ? PARAM_BIAS : PARAM_WEIGHT_DECAY;
}

/* 3-5 targets per image as the golden warm steps: class uniform, w,h in
 * [0.1, 0.6], cx, cy in [0.15, 0.85]. */
static int random_targets(Rng *r, int batch, int nc, float *rows) {
    int n = 0;
    for (int j = 0; j < batch; j++) {
        int k = 3 + (int)rng_below(r, 3);
        for (int i = 0; i < k; i++, n++) {
            float *row = rows + n * 6;
            row[0] = (float)j;
            row[1] = (float)rng_below(r, (uint32_t)nc);
            row[2] = rng_range(r, 0.15f, 0.85f), row[3] = rng_range(r, 0.15f, 0.85f);
            row[4] = rng_range(r, 0.1f, 0.6f), row[5] = rng_range(r, 0.1f, 0.6f);
        }
    }
    return n;
}

typedef struct {
    double median_ms, min_ms;
    double fwd_ms, loss_ms, bwd_ms, opt_ms; /* medians */
    double peak_mb;
} StepTimes;

static int bench_c(const char *cfg, int img, int batch, int warmup, int iters, StepTimes *out, bool print_ops) {
    Model *m = model_build_file(cfg, &(ModelOptions){.seed = 1});
    if (!m) return -1;
    const NamedParam *np;
    int n = model_params(m, &np);
    OptimParam *op = calloc((size_t)n, sizeof *op);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (np[i].t->requires_grad) op[k++] = (OptimParam){np[i].name, np[i].t, group_of(np[i].kind)};
    OptimConfig oc = optim_config(OPTIM_SGD, 0.01, 0.937, 5e-4);
    Optimizer *o = optim_new(&oc, op, k);
    Tape *t = tape_new();
    Tensor *x = tensor_new4(batch, 3, img, img);
    float *rows = malloc((size_t)batch * 5 * 6 * sizeof *rows);
    Rng r;
    rng_seed(&r, 1000);
    double *tot = calloc((size_t)iters, sizeof(double)), *f = calloc((size_t)iters, sizeof(double));
    double *l = calloc((size_t)iters, sizeof(double)), *b = calloc((size_t)iters, sizeof(double));
    double *s = calloc((size_t)iters, sizeof(double));
    int rc = o && t && x ? 0 : -1;
    float hw[DETECT_MAX_HEADS];
    loss_head_weights(m->head.nheads, hw);
    for (int it = 0; it < warmup + iters && !rc; it++) {
        for (size_t i = 0; i < x->numel; i++) x->data[i] = rng_uniform(&r);
        Targets tg = {random_targets(&r, batch, m->head.nc, rows), rows};
        if (it == warmup) tape_profile(t, true);
        tape_reset(t);
        tape_profile_mark(t);
        double t0 = now_s();
        ModelOutput mo;
        rc = model_forward(m, t, x, true, &mo);
        if (rc) break;
        double t1 = now_s();
        Tensor *maps[DETECT_MAX_HEADS * DETECT_MAX_LEVELS];
        for (int h = 0; h < m->head.nheads; h++)
            for (int lv = 0; lv < m->head.nl; lv++) maps[h * m->head.nl + lv] = mo.maps[h][lv];
        Tensor *loss = yolo_loss(t, maps, m->head.nheads, m->head.nl, hw, m->head.strides, &tg, NULL, NULL, NULL);
        if (!loss) {
            rc = -1;
            break;
        }
        double t2 = now_s();
        rc = tape_backward(t, loss);
        double t3 = now_s();
        if (!rc) rc = clip_grad_norm(op, k, 10.0, NULL);
        if (!rc) rc = optim_step(o);
        optim_zero_grad(o);
        double t4 = now_s();
        if (it >= warmup) {
            int j = it - warmup;
            tot[j] = (t4 - t0) * 1e3, f[j] = (t1 - t0) * 1e3, l[j] = (t2 - t1) * 1e3, b[j] = (t3 - t2) * 1e3,
            s[j] = (t4 - t3) * 1e3;
        }
    }
    if (!rc) {
        qsort(tot, (size_t)iters, sizeof(double), cmp_double), qsort(f, (size_t)iters, sizeof(double), cmp_double);
        qsort(l, (size_t)iters, sizeof(double), cmp_double), qsort(b, (size_t)iters, sizeof(double), cmp_double);
        qsort(s, (size_t)iters, sizeof(double), cmp_double);
        out->median_ms = tot[iters / 2], out->min_ms = tot[0];
        out->fwd_ms = f[iters / 2], out->loss_ms = l[iters / 2], out->bwd_ms = b[iters / 2], out->opt_ms = s[iters / 2];
        out->peak_mb = t->arena.peak / 1048576.0;
        if (print_ops) {
            const TapeOpStat *st;
            int ns = tape_profile_stats(t, &st);
            printf("  per op, ms per step (forward / backward):\n");
            for (int i = 0; i < ns; i++)
                printf("    %-18s %8.1f / %8.1f\n", st[i].op, st[i].fwd_s * 1e3 / iters, st[i].bwd_s * 1e3 / iters);
        }
    }
    free(tot), free(f), free(l), free(b), free(s), free(rows), free(op);
    tensor_free(x);
    tape_free(t);
    optim_free(o);
    model_free(m);
    return rc;
}

/* Runs the PyTorch peer and parses "torch_train_ms median=..". */
static int bench_torch(const char *cfg, int img, int batch, int threads, int warmup, int iters, StepTimes *out) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tools/bench_train_torch.py --cfg %s --img %d --batch %d --threads %d --iters %d "
             "--warmup %d --step 2>/dev/null",
             cfg, img, batch, threads, iters, warmup);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[1024];
    int got = 0;
    while (fgets(line, sizeof line, p)) {
        char *q;
        if ((q = strstr(line, "torch_train_ms")) && (q = strstr(q, "median="))) {
            out->median_ms = atof(q + 7);
            if ((q = strstr(line, "min="))) out->min_ms = atof(q + 4);
            got = 1;
        }
        if ((q = strstr(line, "torch_train_breakdown_ms"))) {
            char *v;
            if ((v = strstr(q, "forward="))) out->fwd_ms = atof(v + 8);
            if ((v = strstr(q, "loss="))) out->loss_ms = atof(v + 5);
            if ((v = strstr(q, "backward="))) out->bwd_ms = atof(v + 9);
            if ((v = strstr(q, "step="))) out->opt_ms = atof(v + 5);
        }
    }
    int status = pclose(p);
    return got && status == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    int threads = 2, iters = 5, warmup = 2, img = 320, batch = 4;
    int use_torch = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--img") && i + 1 < argc) img = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) use_torch = 0;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--iters N] [--warmup N] [--img N] [--batch N] [--no-torch]\n", argv[0]);
            return 2;
        }
    }
    if (iters < 1) iters = 1;
    pool_init(threads);
    const char *cfgs[] = {"configs/models/yolov9-t.yaml", "configs/models/gelan-c.yaml"};
    printf("training step (forward + loss + backward + clip + SGD), img %d, batch %d, %d threads, median of %d\n\n", img,
           batch, threads, iters);
    printf("%-12s %10s %10s %8s | %8s %8s %8s %8s | %9s\n", "model", "ours ms", "torch ms", "ratio", "fwd", "loss",
           "bwd", "optim", "peak MiB");
    for (size_t c = 0; c < sizeof cfgs / sizeof cfgs[0]; c++) {
        StepTimes ours = {0}, torch = {0};
        if (bench_c(cfgs[c], img, batch, warmup, iters, &ours, false)) {
            fprintf(stderr, "%s: %s\n", cfgs[c], gelan_last_error());
            return 1;
        }
        int have_torch = use_torch && bench_torch(cfgs[c], img, batch, threads, warmup, iters, &torch) == 0;
        const char *name = strrchr(cfgs[c], '/') + 1;
        char tbuf[32] = "-", rbuf[32] = "-";
        if (have_torch) {
            snprintf(tbuf, sizeof tbuf, "%.0f", torch.median_ms);
            snprintf(rbuf, sizeof rbuf, "%.2f", ours.median_ms / torch.median_ms);
        }
        printf("%-12.*s %10.0f %10s %8s | %8.0f %8.0f %8.0f %8.0f | %9.0f\n", (int)(strlen(name) - 5), name,
               ours.median_ms, tbuf, rbuf, ours.fwd_ms, ours.loss_ms, ours.bwd_ms, ours.opt_ms, ours.peak_mb);
        if (have_torch)
            printf("%-12s %10s %10s %8s | %8.0f %8.0f %8.0f %8.0f |\n", "  (torch)", "", "", "", torch.fwd_ms,
                   torch.loss_ms, torch.bwd_ms, torch.opt_ms);
    }
    printf("\nbreakdown of yolov9-t by op (tape profiler):\n");
    StepTimes tmp;
    if (bench_c(cfgs[0], img, batch, 1, iters, &tmp, true)) return 1;
    pool_shutdown();
    return 0;
}
