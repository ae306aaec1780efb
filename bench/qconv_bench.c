/* int8 conv (infer/qconv) against the runtime's fp32 conv (infer/conv.c) on the convolutions of
 * the fused gelan-t and gelan-c at 640, batch 1.
 *
 * The shape lists follow the official modules of models/detect/gelan-{t,c}.yaml after
 * reparameterization (RepConvN merged into one 3x3, BN folded): Conv is k x k with padding k/2,
 * AConv/ADown convolve the (H-1)x(W-1) output of a 2x2 stride-1 average pool, DDetect has 3x3
 * convs, grouped (g=4) 3x3 and 1x1 convs and plain 1x1 outputs (no activation). Identical
 * shapes are timed once and weighted by how often the model has them.
 *
 * Each shape is timed as the minimum wall time over a few runs after a warm-up (the machine is
 * shared; the minimum is the least disturbed run). The int8 time is qconv_forward: the
 * quantize step of the fp32 input plus the int8 conv and its fp32 epilogue, all that the
 * runtime pays per int8 conv. GOP = 2 x multiply-adds. On x86 the program also measures the
 * peak of vpdpbusd and vfmadd231ps with a register-only loop (per core, CPU time), which gives
 * the ceiling each path is measured against.
 *
 * usage: bench_qconv_bench [--models t,c] [--img N] [--threads N] [--paths c,avx2,...] [--reps N]
 *                          [--clock wall|cpu] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infer/kernels.h"
#include "infer/ops.h"
#include "infer/qconv.h"
#include "tensor/error.h"
#include "tensor/pool.h"

typedef struct {
    int cin, cout, k, s, g, act, h; /* square input h x h, padding k/2 */
    int count;
} Shape;

#define MAX_SHAPES 128
typedef struct {
    const char *name;
    Shape v[MAX_SHAPES];
    int n, convs;
} Model;

static int out_size(int h, int k, int s) { return (h + 2 * (k / 2) - k) / s + 1; }

static void conv(Model *m, int cin, int cout, int k, int s, int g, int act, int h) {
    m->convs++;
    for (int i = 0; i < m->n; i++) {
        Shape *p = &m->v[i];
        if (p->cin == cin && p->cout == cout && p->k == k && p->s == s && p->g == g && p->act == act && p->h == h) {
            p->count++;
            return;
        }
    }
    if (m->n < MAX_SHAPES) m->v[m->n++] = (Shape){cin, cout, k, s, g, act, h, 1};
}
static void conv_silu(Model *m, int cin, int cout, int k, int s, int h) { conv(m, cin, cout, k, s, 1, ACT_SILU, h); }

/* RepNCSP(c1, c2, n): two 1x1 to c_ = c2/2, n RepNBottlenecks (merged RepConvN 3x3, Conv 3x3),
 * a 1x1 from 2c_ to c2 */
static void repncsp(Model *m, int c1, int c2, int n, int h) {
    int c_ = c2 / 2;
    conv_silu(m, c1, c_, 1, 1, h);
    conv_silu(m, c1, c_, 1, 1, h);
    for (int i = 0; i < n; i++) {
        conv_silu(m, c_, c_, 3, 1, h);
        conv_silu(m, c_, c_, 3, 1, h);
    }
    conv_silu(m, 2 * c_, c2, 1, 1, h);
}
/* RepNCSPELAN4(c1, c2, c3, c4, n) */
static void repncspelan4(Model *m, int c1, int c2, int c3, int c4, int n, int h) {
    conv_silu(m, c1, c3, 1, 1, h);
    repncsp(m, c3 / 2, c4, n, h);
    conv_silu(m, c4, c4, 3, 1, h);
    repncsp(m, c4, c4, n, h);
    conv_silu(m, c4, c4, 3, 1, h);
    conv_silu(m, c3 + 2 * c4, c2, 1, 1, h);
}
static void elan1(Model *m, int c1, int c2, int c3, int c4, int h) {
    conv_silu(m, c1, c3, 1, 1, h);
    conv_silu(m, c3 / 2, c4, 3, 1, h);
    conv_silu(m, c4, c4, 3, 1, h);
    conv_silu(m, c3 + 2 * c4, c2, 1, 1, h);
}
/* ADown: 3x3 s2 on half the channels after the 2x2 avg pool, 1x1 on the other half after a
 * 3x3 s2 max pool */
static void adown(Model *m, int c1, int c2, int h) {
    conv_silu(m, c1 / 2, c2 / 2, 3, 2, h - 1);
    conv_silu(m, c1 / 2, c2 / 2, 1, 1, out_size(h - 1, 3, 2));
}
static void aconv(Model *m, int c1, int c2, int h) { conv_silu(m, c1, c2, 3, 2, h - 1); }
static void sppelan(Model *m, int c1, int c2, int c3, int h) {
    conv_silu(m, c1, c3, 1, 1, h);
    conv_silu(m, 4 * c3, c2, 1, 1, h);
}
/* DDetect: per level, box branch 3x3, 3x3 g=4, 1x1 g=4 (4*reg_max out), class branch 3x3, 3x3, 1x1 */
static void ddetect(Model *m, const int *ch, const int *hs, int nc) {
    int c2 = ch[0] / 4 > 64 ? ch[0] / 4 : 64, c3 = ch[0] > (nc < 100 ? nc : 100) ? ch[0] : (nc < 100 ? nc : 100);
    for (int i = 0; i < 3; i++) {
        conv_silu(m, ch[i], c2, 3, 1, hs[i]);
        conv(m, c2, c2, 3, 1, 4, ACT_SILU, hs[i]);
        conv(m, c2, 64, 1, 1, 4, ACT_NONE, hs[i]);
        conv_silu(m, ch[i], c3, 3, 1, hs[i]);
        conv_silu(m, c3, c3, 3, 1, hs[i]);
        conv(m, c3, nc, 1, 1, 1, ACT_NONE, hs[i]);
    }
}

static void gelan_c(Model *m, int img) {
    int p1 = img / 2, p2 = p1 / 2, p3 = p2 / 2, p4 = p3 / 2, p5 = p4 / 2;
    conv_silu(m, 3, 64, 3, 2, img);
    conv_silu(m, 64, 128, 3, 2, p1);
    repncspelan4(m, 128, 256, 128, 64, 1, p2);
    adown(m, 256, 256, p2);
    repncspelan4(m, 256, 512, 256, 128, 1, p3);
    adown(m, 512, 512, p3);
    repncspelan4(m, 512, 512, 512, 256, 1, p4);
    adown(m, 512, 512, p4);
    repncspelan4(m, 512, 512, 512, 256, 1, p5);
    sppelan(m, 512, 512, 256, p5);
    repncspelan4(m, 1024, 512, 512, 256, 1, p4);
    repncspelan4(m, 1024, 256, 256, 128, 1, p3);
    adown(m, 256, 256, p3);
    repncspelan4(m, 768, 512, 512, 256, 1, p4);
    adown(m, 512, 512, p4);
    repncspelan4(m, 1024, 512, 512, 256, 1, p5);
    const int ch[3] = {256, 512, 512}, hs[3] = {p3, p4, p5};
    ddetect(m, ch, hs, 80);
}

static void gelan_t(Model *m, int img) {
    int p1 = img / 2, p2 = p1 / 2, p3 = p2 / 2, p4 = p3 / 2, p5 = p4 / 2;
    conv_silu(m, 3, 16, 3, 2, img);
    conv_silu(m, 16, 32, 3, 2, p1);
    elan1(m, 32, 32, 32, 16, p2);
    aconv(m, 32, 64, p2);
    repncspelan4(m, 64, 64, 64, 32, 3, p3);
    aconv(m, 64, 96, p3);
    repncspelan4(m, 96, 96, 96, 48, 3, p4);
    aconv(m, 96, 128, p4);
    repncspelan4(m, 128, 128, 128, 64, 3, p5);
    sppelan(m, 128, 128, 64, p5);
    repncspelan4(m, 224, 96, 96, 48, 3, p4);
    repncspelan4(m, 160, 64, 64, 32, 3, p3);
    aconv(m, 64, 48, p3);
    repncspelan4(m, 144, 96, 96, 48, 3, p4);
    aconv(m, 96, 64, p4);
    repncspelan4(m, 192, 128, 128, 64, 3, p5);
    const int ch[3] = {64, 96, 128}, hs[3] = {p3, p4, p5};
    ddetect(m, ch, hs, 80);
}

/* ---- timing ------------------------------------------------------------------------- */
/* --clock cpu: process CPU time divided by the thread count, i.e. the wall time the run would
 * take on cores nobody else uses (the pool's workers sleep when idle, so waiting costs none) */
static int use_cpu_clock;
static double now(void) {
    struct timespec t;
    clock_gettime(use_cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (t.tv_sec + t.tv_nsec * 1e-9) / (use_cpu_clock ? pool_threads() : 1);
}

static unsigned bench_seed = 1;
static float frand(void) {
    bench_seed = bench_seed * 1664525u + 1013904223u;
    return (float)(bench_seed >> 8) / (float)(1u << 24);
}

static double shape_gop(const Shape *s) {
    int o = out_size(s->h, s->k, s->s);
    return 2.0 * s->cout * (s->cin / s->g) * s->k * s->k * o * o / 1e9;
}

typedef struct {
    float *x, *y, *w, *b, *wscale;
    int8_t *wq;
} Buffers;

static void make_buffers(const Shape *s, Buffers *B) {
    int o = out_size(s->h, s->k, s->s);
    size_t xn = (size_t)s->cin * s->h * s->h, yn = (size_t)s->cout * o * o;
    size_t wn = (size_t)s->cout * (s->cin / s->g) * s->k * s->k;
    B->x = malloc(xn * sizeof(float));
    B->y = malloc(yn * sizeof(float));
    B->w = malloc(wn * sizeof(float));
    B->b = malloc(s->cout * sizeof(float));
    B->wscale = malloc(s->cout * sizeof(float));
    B->wq = malloc(wn);
    for (size_t i = 0; i < xn; i++) B->x[i] = 4.f * frand() - 1.f; /* SiLU outputs: mostly in [-0.3, 3] */
    for (size_t i = 0; i < wn; i++) B->w[i] = 0.1f * (frand() - 0.5f);
    for (int i = 0; i < s->cout; i++) B->b[i] = frand() - 0.5f;
    qconv_quantize_weights(B->w, s->cout, wn / s->cout, B->wq, B->wscale);
}

static void free_buffers(Buffers *B) {
    free(B->x);
    free(B->y);
    free(B->w);
    free(B->b);
    free(B->wscale);
    free(B->wq);
}

/* min wall time over reps runs after one warm-up; < 0 on error */
static double time_int8(const Shape *s, const Buffers *B, const QConvKernels *kern, int reps) {
    QConv L;
    if (qconv_init(&L, kern, s->cin, s->cout, s->k, s->s, s->k / 2, 1, s->g, s->act, 0.f, B->wq, B->wscale, B->b,
                   4.f / 255, 64))
        return -1;
    int o = out_size(s->h, s->k, s->s);
    void *scratch = aligned_alloc(64, qconv_scratch_bytes(&L, 1, s->h, s->h));
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t = now();
        if (qconv_forward(&L, B->x, 0, 1, s->h, s->h, B->y, (size_t)s->cout * o * o, scratch)) best = -1, r = reps;
        t = now() - t;
        if (r > 0 && t < best) best = t;
    }
    free(scratch);
    qconv_free(&L);
    return best;
}

static double time_fp32(const Shape *s, const Buffers *B, int reps) {
    ConvLayer L;
    if (conv_init(&L, infer_kernels(), s->cin, s->cout, s->k, s->s, s->k / 2, 1, s->g, s->act, 0.f, B->w, B->b))
        return -1;
    int o = out_size(s->h, s->k, s->s);
    float *scratch = malloc(sizeof(float) * (conv_scratch_floats(&L) * pool_threads() + 1));
    Map in = {B->x, 1, s->cin, s->h, s->h, (size_t)s->cin * s->h * s->h};
    Map out = {B->y, 1, s->cout, o, o, (size_t)s->cout * o * o};
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t = now();
        conv_run(&L, &in, &out, scratch);
        t = now() - t;
        if (r > 0 && t < best) best = t;
    }
    free(scratch);
    conv_free(&L);
    return best;
}

/* ---- peak of the multiply-add instructions (x86) --------------------------------------- */
#if defined(__x86_64__)
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
#define R12(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11)
#define VNNI_Z(i) "vpdpbusd %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define VNNI_Y(i) "%{vex%} vpdpbusd %%ymm14, %%ymm15, %%ymm" #i "\n\t"
#define FMA_Z(i) "vfmadd231ps %%zmm14, %%zmm15, %%zmm" #i "\n\t"
#define FMA_Y(i) "vfmadd231ps %%ymm14, %%ymm15, %%ymm" #i "\n\t"
/* 12 independent accumulators hide the latency; registers only, no memory */
__attribute__((target("avx512f,avx512vnni"))) static void loop_vnni_z(long n) {
    __asm__ volatile("1:\n\t" R12(VNNI_Z) "dec %0\n\tjnz 1b"
                     : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                       "xmm11");
}
__attribute__((target("avx2,avxvnni"))) static void loop_vnni_y(long n) {
    __asm__ volatile("1:\n\t" R12(VNNI_Y) "dec %0\n\tjnz 1b"
                     : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                       "xmm11");
}
__attribute__((target("avx512f"))) static void loop_fma_z(long n) {
    __asm__ volatile("1:\n\t" R12(FMA_Z) "dec %0\n\tjnz 1b"
                     : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                       "xmm11");
}
__attribute__((target("avx2,fma"))) static void loop_fma_y(long n) {
    __asm__ volatile("1:\n\t" R12(FMA_Y) "dec %0\n\tjnz 1b"
                     : "+r"(n)::"xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
                       "xmm11");
}
/* instructions per CPU-second */
static double peak_rate(void (*loop)(long)) {
    long n = 4000000;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t = cpu_now();
        loop(n);
        t = cpu_now() - t;
        if (12.0 * n / t > best) best = 12.0 * n / t;
    }
    return best;
}
static void print_peaks(int threads) {
    __builtin_cpu_init();
    printf("peak per core (register-only loop, CPU time; x%d threads for the pool):\n", threads);
    if (__builtin_cpu_supports("avx512vnni")) {
        double r = peak_rate(loop_vnni_z);
        printf("  vpdpbusd zmm   %5.2f G/s = %5.0f int8 GOP/s per core, %5.0f for %d cores\n", r / 1e9, r * 128 / 1e9,
               r * 128 / 1e9 * threads, threads);
    }
    if (__builtin_cpu_supports("avxvnni")) {
        double r = peak_rate(loop_vnni_y);
        printf("  vpdpbusd ymm   %5.2f G/s = %5.0f int8 GOP/s per core\n", r / 1e9, r * 64 / 1e9);
    }
    if (__builtin_cpu_supports("avx512f")) {
        double r = peak_rate(loop_fma_z);
        printf("  vfmadd231ps zmm %5.2f G/s = %5.0f fp32 GFLOP/s per core, %5.0f for %d cores\n", r / 1e9, r * 32 / 1e9,
               r * 32 / 1e9 * threads, threads);
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        double r = peak_rate(loop_fma_y);
        printf("  vfmadd231ps ymm %5.2f G/s = %5.0f fp32 GFLOP/s per core\n", r / 1e9, r * 16 / 1e9);
    }
}
#endif

static void loadavg(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    char buf[64] = "";
    if (f && fgets(buf, sizeof buf, f)) printf("load average: %s", buf);
    if (f) fclose(f);
}

int main(int argc, char **argv) {
    const char *models = "t,c", *paths_arg = NULL;
    int img = 640, threads = 2, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models") && i + 1 < argc)
            models = argv[++i];
        else if (!strcmp(argv[i], "--img") && i + 1 < argc)
            img = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--paths") && i + 1 < argc)
            paths_arg = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--clock") && i + 1 < argc)
            use_cpu_clock = !strcmp(argv[++i], "cpu");
        else {
            fprintf(
                stderr,
                "usage: %s [--models t,c] [--img N] [--threads N] [--paths c,avx2,...] [--reps N] [--clock wall|cpu]\n",
                argv[0]);
            return 2;
        }
    }
    if (img < 64 || img % 32 || threads < 1 || reps < 1) {
        fprintf(stderr, "%s: --img must be a multiple of 32 (>= 64), --threads and --reps >= 1\n", argv[0]);
        return 2;
    }
    pool_init(threads);
    /* the int8 paths: the SIMD ones this CPU has (portable C only when asked: it is slow) */
    const QConvKernels *paths[8];
    int np = 0;
    for (const char *const *nm = qconv_kernel_names; *nm; nm++) {
        const QConvKernels *k = qconv_kernels_get(*nm);
        int want = strcmp(*nm, "c") != 0;
        if (paths_arg) { /* names separated by commas, matched exactly */
            want = 0;
            for (const char *p = paths_arg; *p;) {
                size_t len = strcspn(p, ",");
                if (len == strlen(*nm) && !strncmp(p, *nm, len)) want = 1;
                p += len + (p[len] == ',');
            }
        }
        if (k && want) paths[np++] = k;
    }
    printf("int8 conv (qconv) vs the runtime's fp32 conv, batch 1, %d threads, %dx%d, min of %d runs, %s\n",
           pool_threads(), img, img, reps, use_cpu_clock ? "CPU time / threads" : "wall time");
    loadavg();
#if defined(__x86_64__)
    print_peaks(pool_threads());
#endif
    for (const char *mp = models; *mp; mp++) {
        if (*mp != 't' && *mp != 'c') continue;
        Model m = {.name = *mp == 't' ? "gelan-t" : "gelan-c"};
        (*mp == 't' ? gelan_t : gelan_c)(&m, img);
        double gop = 0, t32 = 0, t8[8] = {0}, gop3 = 0, gop1 = 0, t32_3 = 0, t32_1 = 0, t8_3[8] = {0}, t8_1[8] = {0};
        printf("\n%s @%d: %d convs, %d shapes\n", m.name, img, m.convs, m.n);
        printf("%5s %5s %2s %2s %2s %4s %3s %7s | %9s", "cin", "cout", "k", "s", "g", "h", "n", "GOP", "fp32 ms");
        for (int p = 0; p < np; p++) printf(" %10s", paths[p]->name);
        printf("   (int8 ms and speed-up)\n");
        for (int i = 0; i < m.n; i++) {
            const Shape *s = &m.v[i];
            Buffers B;
            make_buffers(s, &B);
            double g = shape_gop(s) * s->count, tf = time_fp32(s, &B, reps) * s->count;
            gop += g, t32 += tf;
            *(s->k == 1 ? &gop1 : &gop3) += g;
            *(s->k == 1 ? &t32_1 : &t32_3) += tf;
            printf("%5d %5d %2d %2d %2d %4d %3d %7.3f | %9.3f", s->cin, s->cout, s->k, s->s, s->g, s->h, s->count, g,
                   tf * 1e3);
            for (int p = 0; p < np; p++) {
                double t = time_int8(s, &B, paths[p], reps) * s->count;
                if (t < 0) {
                    printf("\n%s: %s\n", paths[p]->name, gelan_last_error());
                    return 1;
                }
                t8[p] += t;
                (s->k == 1 ? t8_1 : t8_3)[p] += t;
                printf(" %6.3f %3.1fx", t * 1e3, tf / t);
            }
            printf("\n");
            free_buffers(&B);
        }
        printf("%s total: %.2f GOP (3x3 and 5x5: %.2f, 1x1: %.2f)\n", m.name, gop, gop3, gop1);
        printf("  %-12s %8.2f ms %7.1f GOP/s  (k>1: %6.1f GOP/s, 1x1: %6.1f GOP/s)\n", "fp32", t32 * 1e3, gop / t32,
               gop3 / t32_3, gop1 / t32_1);
        for (int p = 0; p < np; p++)
            printf("  int8 %-7s %8.2f ms %7.1f GOP/s  (k>1: %6.1f GOP/s, 1x1: %6.1f GOP/s)  %.2fx fp32\n",
                   paths[p]->name, t8[p] * 1e3, gop / t8[p], gop3 / t8_3[p], gop1 / t8_1[p], t32 / t8[p]);
    }
    pool_shutdown();
    return 0;
}
