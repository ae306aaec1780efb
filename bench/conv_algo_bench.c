/* The runtime's ways to compute a conv (infer/conv.c), timed against each other on one
 * shape after another: im2col + packed GEMM, the direct convolution, and (3x3 stride 1)
 * Winograd F(2x2,3x3) and F(4x4,3x3). This is the measurement behind conv.c's choices
 * (direct_pays, direct_beats_winograd, winograd_tile): which way is faster depends on the
 * channel counts and the map size.
 *
 * Each cell is the minimum CPU time of the calling thread over --reps runs after a warm-up, with
 * one thread (--threads 1, the default), so another process on the other core disturbs it little.
 * Channels sweep 16..512 with cout = cin, 2*cin and cin/2; maps 10..320; shapes of more than
 * about 1.7 GFLOP (or under 4 MFLOP) are skipped. Ratios below 1 mean the second way is faster.
 *
 * usage: bench_conv_algo_bench [--kind s1|s2|pw|all] [--threads N] [--reps N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/kernels.h"
#include "infer/ops.h"
#include "tensor/pool.h"

enum { IM2COL, DIRECT, WINO2, WINO4 };

static double thread_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* Minimum time of one conv computed the given way (ms); the ways are forced with the test hooks. */
static double time_conv(int way, int cin, int cout, int h, int k, int s, int reps) {
    conv_set_winograd(way == WINO2 ? 2 : way == WINO4 ? 4 : 0);
    conv_set_direct(way == DIRECT ? 2 : 0);
    int p = k / 2, oh = conv_out_size(h, k, s, p, 1);
    size_t wn = (size_t)cout * cin * k * k, xn = (size_t)cin * h * h, yn = (size_t)cout * oh * oh;
    float *w = malloc(sizeof(float) * wn), *b = calloc((size_t)cout, sizeof(float));
    float *x = malloc(sizeof(float) * xn), *y = malloc(sizeof(float) * yn);
    srand(7);
    for (size_t i = 0; i < wn; i++) w[i] = (float)(rand() % 101 - 50) * 1e-3f;
    for (size_t i = 0; i < xn; i++) x[i] = (float)(rand() % 101 - 50) * 1e-2f;
    ConvLayer L;
    double best = -1;
    if (conv_init(&L, infer_kernels(), cin, cout, k, s, p, 1, 1, ACT_SILU, 0.f, w, b) == 0) {
        float *scratch = malloc(sizeof(float) * (conv_scratch_floats(&L) * pool_threads() + 1));
        Map in = {x, 1, cin, h, h, xn}, out = {y, 1, cout, oh, oh, yn};
        conv_run(&L, &in, &out, scratch); /* warm-up */
        for (int r = 0; r < reps; r++) {
            double t = thread_seconds();
            conv_run(&L, &in, &out, scratch);
            t = thread_seconds() - t;
            if (best < 0 || t < best) best = t;
        }
        free(scratch);
        conv_free(&L);
    }
    free(w), free(b), free(x), free(y);
    return best * 1e3;
}

static void sweep(const char *kind, int threads, int reps) {
    int k = !strcmp(kind, "pw") ? 1 : 3, s = !strcmp(kind, "s2") ? 2 : 1, s1 = !strcmp(kind, "s1");
    static const int chans[] = {16, 32, 64, 128, 256, 512}, maps[] = {10, 20, 40, 80, 160, 320};
    if (s1) {
        printf("\n3x3 stride 1: Winograd F(2x2) and F(4x4) against each other and the direct conv, %d thread(s), "
               "min of %d runs\n\n", threads, reps);
        printf("| cin | cout | input | F(2x2) ms | F(4x4) ms | direct ms | F(4x4) / F(2x2) | direct / F(4x4) |\n"
               "|---|---|---|---|---|---|---|---|\n");
    } else {
        printf("\n%dx%d stride %d (%s): direct against im2col, %d thread(s), min of %d runs\n\n", k, k, s, kind, threads,
               reps);
        printf("| cin | cout | input | im2col ms | direct ms | direct / im2col |\n|---|---|---|---|---|---|\n");
    }
    for (size_t i = 0; i < sizeof chans / sizeof *chans; i++)
        for (int m = 0; m < 3; m++) {
            int cin = chans[i], cout = m == 0 ? cin : m == 1 ? 2 * cin : cin / 2;
            if (cout < 16 || cout > 512) continue;
            for (size_t j = 0; j < sizeof maps / sizeof *maps; j++) {
                int h = maps[j], oh = conv_out_size(h, k, s, k / 2, 1);
                double flops = 2.0 * cin * cout * k * k * oh * oh;
                if (flops > 1.7e9 || flops < 4e6) continue;
                double td = time_conv(DIRECT, cin, cout, h, k, s, reps);
                if (s1) {
                    double t2 = time_conv(WINO2, cin, cout, h, k, s, reps), t4 = time_conv(WINO4, cin, cout, h, k, s, reps);
                    printf("| %d | %d | %dx%d | %.3f | %.3f | %.3f | %.2f | %.2f |\n", cin, cout, h, h, t2, t4, td, t4 / t2,
                           td / t4);
                } else {
                    double ti = time_conv(IM2COL, cin, cout, h, k, s, reps);
                    printf("| %d | %d | %dx%d | %.3f | %.3f | %.2f |\n", cin, cout, h, h, ti, td, td / ti);
                }
                fflush(stdout);
            }
        }
}

int main(int argc, char **argv) {
    const char *kind = "all";
    int threads = 1, reps = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--kind") && i + 1 < argc)
            kind = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--kind s1|s2|pw|all] [--threads N] [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || reps < 1 ||
        (strcmp(kind, "all") && strcmp(kind, "s1") && strcmp(kind, "s2") && strcmp(kind, "pw"))) {
        fprintf(stderr, "%s: --kind s1|s2|pw|all, --threads and --reps >= 1\n", argv[0]);
        return 2;
    }
    pool_init(threads);
    printf("conv algorithms (%s kernels), %d thread(s)\n", infer_kernels()->name, threads);
    const char *kinds[] = {"s1", "s2", "pw"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(kind, "all") || !strcmp(kind, kinds[i])) sweep(kinds[i], threads, reps);
    return 0;
}
