/* infer/ kernels: every kernel table this build and CPU have (portable C,
 * AVX2, AVX-512 or NEON) against the definitions, on odd shapes and every
 * stride, kernel size, group count and padding the YOLOv9 configs use.
 * Also built without CUnit by tests/infer_selftest.c (make cross-test). */
#ifndef INFER_SELFTEST
#include <CUnit/CUnit.h>

#include "tests/testutil.h"
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/gemm.h"
#include "infer/kernels.h"
#include "infer/ops.h"
#include "tensor/pool.h"

static const char *const ik_tables[] = {"c", "avx2", "avx512", "neon"};
#define IK_NTABLES 4

static unsigned ik_seed = 12345;
static float ik_rand(void) { /* uniform in [-1, 1) */
    ik_seed = ik_seed * 1664525u + 1013904223u;
    return (float)(ik_seed >> 8) / (float)(1u << 23) - 1.f;
}
static int ik_randint(int lo, int hi) { /* uniform in [lo, hi] */
    int v = lo + (int)((ik_rand() + 1) / 2 * (float)(hi - lo + 1));
    return v > hi ? hi : v;
}
static float *ik_randn(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = scale * ik_rand();
    return p;
}

/* max|a-b| <= tol * (1 + max|b|) */
static int ik_close(const char *what, const float *a, const float *b, size_t n, double tol) {
    double worst = 0, mag = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst)) worst = d, at = i; /* also catches NaN */
        if (fabs(b[i]) > mag) mag = fabs(b[i]);
    }
    if (worst <= tol * (1 + mag)) return 1;
    printf("\n  %s: max error %g at %zu (got %g want %g, max|want| %g)\n", what, worst, at, a[at], b[at], mag);
    return 0;
}

typedef struct {
    int n, cin, cout, h, w, k, s, p, d, g, act;
} IkConv;

/* One conv through conv_run with table `kern` against conv_naive. The input is
 * a channel slice of a wider map and the output is written into one, as the
 * runtime does for split views and in-place concat. */
static int ik_conv_case(const InferKernels *kern, IkConv c) {
    int oh = conv_out_size(c.h, c.k, c.s, c.p, c.d), ow = conv_out_size(c.w, c.k, c.s, c.p, c.d);
    size_t wn = (size_t)c.cout * (c.cin / c.g) * c.k * c.k;
    float *w = ik_randn(wn, 1.f / sqrtf((float)(c.cin / c.g * c.k * c.k))), *b = ik_randn((size_t)c.cout, 0.5f);
    int cin_big = c.cin + 3, cout_big = c.cout + 2; /* slices start at channel 1 */
    float *xbig = ik_randn((size_t)c.n * cin_big * c.h * c.w, 1.f);
    float *x = malloc(sizeof(float) * c.n * c.cin * c.h * c.w);
    for (int i = 0; i < c.n; i++)
        memcpy(x + (size_t)i * c.cin * c.h * c.w, xbig + ((size_t)i * cin_big + 1) * c.h * c.w,
               sizeof(float) * c.cin * c.h * c.w);
    size_t on = (size_t)c.n * c.cout * oh * ow;
    float *want = malloc(sizeof(float) * on), *got = malloc(sizeof(float) * on);
    float *ybig = malloc(sizeof(float) * c.n * cout_big * oh * ow);
    for (size_t i = 0; i < (size_t)c.n * cout_big * oh * ow; i++) ybig[i] = 1234.f;
    conv_naive(x, c.n, c.cin, c.h, c.w, w, b, c.cout, c.k, c.s, c.p, c.d, c.g, c.act, 0.1f, want);
    ConvLayer L;
    int ok = conv_init(&L, kern, c.cin, c.cout, c.k, c.s, c.p, c.d, c.g, c.act, 0.1f, w, b) == 0;
    if (ok) {
        float *scratch = malloc(sizeof(float) * (conv_scratch_floats(&L) * pool_threads() + 1));
        Map in = {xbig + (size_t)c.h * c.w, c.n, c.cin, c.h, c.w, (size_t)cin_big * c.h * c.w};
        Map out = {ybig + (size_t)oh * ow, c.n, c.cout, oh, ow, (size_t)cout_big * oh * ow};
        conv_run(&L, &in, &out, scratch);
        for (int i = 0; i < c.n; i++) {
            memcpy(got + (size_t)i * c.cout * oh * ow, ybig + ((size_t)i * cout_big + 1) * oh * ow,
                   sizeof(float) * c.cout * oh * ow);
            /* the channels around the slice are untouched */
            ok &= ybig[(size_t)i * cout_big * oh * ow] == 1234.f;
            ok &= ybig[((size_t)i * cout_big + cout_big - 1) * oh * ow + oh * ow - 1] == 1234.f;
        }
        free(scratch);
        conv_free(&L);
        char what[160];
        snprintf(what, sizeof what, "%s conv n%d cin%d cout%d %dx%d k%d s%d p%d d%d g%d act%d", kern->name, c.n, c.cin,
                 c.cout, c.h, c.w, c.k, c.s, c.p, c.d, c.g, c.act);
        ok = ok && ik_close(what, got, want, on, 2e-5);
    }
    free(w), free(b), free(xbig), free(x), free(want), free(got), free(ybig);
    return ok;
}

/* The ways conv_run can compute a conv, forced one at a time: im2col + GEMM; the
 * direct convolution; Winograd F(4x4,3x3); F(2x2,3x3); each where it pays (the default). */
#define IK_NMODES 5
static void ik_set_mode(int mode) {
    conv_set_direct(mode == 1 ? 2 : mode == 4);
    conv_set_winograd(mode == 2 ? 4 : mode == 3 ? 2 : mode == 4);
}

static void test_ik_conv_vs_naive(void) {
    /* k, s, g and padding of every conv in the YOLOv9/GELAN configs (k 1/3 s 1/2,
     * the detect head's groups=4, depthwise for ShuffleNet units), plus k 5, a
     * dilation and odd sizes so that every tile has ragged edges */
    static const IkConv cases[] = {
        {1, 3, 16, 17, 19, 3, 2, 1, 1, 1, ACT_SILU},  /* stem conv */
        {1, 16, 32, 9, 11, 3, 2, 1, 1, 1, ACT_SILU},  /* conv down */
        {1, 32, 32, 13, 7, 1, 1, 0, 1, 1, ACT_SILU},  /* 1x1 */
        {2, 24, 40, 7, 9, 3, 1, 1, 1, 1, ACT_LEAKY},  /* batch 2 */
        {1, 64, 64, 5, 5, 3, 1, 1, 1, 4, ACT_SILU},   /* detect head g=4 */
        {1, 64, 64, 6, 5, 1, 1, 0, 1, 4, ACT_NONE},   /* detect head 1x1 g=4 */
        {1, 50, 33, 11, 13, 3, 1, 1, 1, 1, ACT_RELU}, /* K = 450: two K blocks */
        {1, 130, 17, 5, 7, 3, 1, 1, 1, 1, ACT_SILU},  /* K = 1170: four K blocks */
        {1, 7, 5, 15, 15, 5, 1, 2, 1, 1, ACT_SILU},   /* k 5 */
        {1, 8, 8, 12, 10, 3, 1, 2, 2, 1, ACT_SILU},   /* dilation 2 */
        {1, 12, 9, 10, 10, 3, 2, 0, 1, 1, ACT_NONE},  /* no padding, stride 2 */
        {1, 5, 3, 1, 1, 1, 1, 0, 1, 1, ACT_LEAKY},    /* a single pixel */
        {1, 6, 6, 3, 2, 3, 1, 2, 1, 1, ACT_SILU},     /* padding wider than the input */
        {1, 16, 16, 9, 13, 3, 1, 1, 1, 16, ACT_SILU}, /* depthwise s1 */
        {2, 24, 24, 11, 8, 3, 2, 1, 1, 24, ACT_RELU}, /* depthwise s2 */
        {1, 8, 8, 7, 9, 5, 1, 2, 1, 8, ACT_LEAKY},    /* depthwise k5 */
        {1, 16, 32, 9, 9, 3, 1, 1, 1, 8, ACT_SILU},   /* 2 in, 4 out per group */
        {1, 8, 200, 6, 6, 1, 1, 0, 1, 1, ACT_SILU},   /* many output channels, few pixels */
        {1, 4, 8, 40, 37, 3, 1, 1, 1, 1, ACT_SILU},   /* several pixel blocks */
        /* shapes for the Winograd path (3x3 s1, >= 16 channels): odd output
         * sizes, tile blocks that end mid-row, several input-channel blocks,
         * several output-channel chunks, padding 0 and 2, batch 2 */
        {1, 16, 16, 23, 31, 3, 1, 1, 1, 1, ACT_SILU},
        {2, 150, 20, 13, 11, 3, 1, 1, 1, 1, ACT_LEAKY},
        {1, 17, 136, 9, 7, 3, 1, 0, 1, 1, ACT_RELU},
        {1, 32, 24, 6, 5, 3, 1, 2, 1, 1, ACT_NONE},
        {1, 20, 18, 1, 30, 3, 1, 1, 1, 1, ACT_SILU},
        /* big enough (> 3 MFLOP) to run on every thread of the pool */
        {1, 64, 48, 30, 30, 3, 2, 1, 1, 1, ACT_SILU},
        {1, 96, 80, 25, 27, 1, 1, 0, 1, 1, ACT_SILU},
        {2, 48, 40, 21, 19, 3, 1, 1, 1, 1, ACT_SILU},
    };
    for (int mode = 0; mode < IK_NMODES; mode++) {
        ik_set_mode(mode);
        for (int t = 0; t < IK_NTABLES; t++) {
            const InferKernels *kern = infer_kernels_get(ik_tables[t]);
            if (!kern) continue;
            for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) CU_ASSERT(ik_conv_case(kern, cases[i]));
        }
    }
    conv_set_winograd(1);
    conv_set_direct(1);
}

/* Random shapes: a different mix on every table, same seed every run. */
static void test_ik_conv_random(void) {
    static const int ks[] = {1, 3, 5};
    for (int t = 0; t < IK_NMODES * IK_NTABLES; t++) { /* every table in every mode */
        const InferKernels *kern = infer_kernels_get(ik_tables[t / IK_NMODES]);
        if (!kern) continue;
        ik_set_mode(t % IK_NMODES);
        ik_seed = 777;
        for (int i = 0; i < 12; i++) {
            IkConv c;
            c.k = ks[ik_randint(0, 2)];
            c.s = ik_randint(1, 2);
            c.d = 1;
            c.p = ik_randint(0, c.k / 2);
            c.g = ik_randint(1, 3);
            c.cin = c.g * ik_randint(1, 20);
            c.cout = c.g * ik_randint(1, 24);
            c.h = c.k + ik_randint(0, 16);
            c.w = c.k + ik_randint(0, 24);
            c.n = ik_randint(1, 2);
            c.act = ik_randint(ACT_NONE, ACT_SILU);
            CU_ASSERT(ik_conv_case(kern, c));
        }
    }
    conv_set_winograd(1);
    conv_set_direct(1);
}

/* One conv layer run on maps of several sizes, as a model is when its input size changes:
 * conv_run picks F(2x2) on the small map, F(4x4) on the big one and the direct conv on
 * the smallest, transforming the weights for each Winograd variant on its first use; every
 * run matches the definition, also when a variant is used again. */
static void test_ik_conv_map_sizes(void) {
    conv_set_winograd(1);
    conv_set_direct(1);
    const int cin = 128, cout = 136, sizes[] = {20, 40, 8, 20, 40};
    float *w = ik_randn((size_t)cout * cin * 9, 1.f / sqrtf(cin * 9.f)), *b = ik_randn((size_t)cout, 0.5f);
    ConvLayer L;
    int ok = conv_init(&L, infer_kernels(), cin, cout, 3, 1, 1, 1, 1, ACT_SILU, 0.f, w, b) == 0;
    CU_ASSERT(ok);
    if (!ok) {
        free(w), free(b);
        return;
    }
    CU_ASSERT(L.winograd && !L.wino[0] && !L.wino[1]); /* nothing transformed at load */
    float *scratch = malloc(sizeof(float) * conv_scratch_floats(&L) * pool_threads());
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int h = sizes[i];
        size_t xn = (size_t)cin * h * h, yn = (size_t)cout * h * h;
        float *x = ik_randn(xn, 1.f), *got = malloc(sizeof(float) * yn), *want = malloc(sizeof(float) * yn);
        conv_naive(x, 1, cin, h, h, w, b, cout, 3, 1, 1, 1, 1, ACT_SILU, 0.f, want);
        Map in = {x, 1, cin, h, h, xn}, out = {got, 1, cout, h, h, yn};
        conv_run(&L, &in, &out, scratch);
        char what[64];
        snprintf(what, sizeof what, "conv 128->136 on %dx%d, run %zu", h, h, i);
        CU_ASSERT(ik_close(what, got, want, yn, 2e-5));
        if (h == 20) CU_ASSERT(L.wino[0] != NULL); /* F(2x2) */
        if (h == 40) CU_ASSERT(L.wino[1] != NULL); /* F(4x4) */
        free(x), free(got), free(want);
    }
    conv_free(&L);
    free(w), free(b), free(scratch);
}

/* The SIMD tables against the portable one on the same packed problem. */
static void test_ik_simd_vs_c(void) {
    const InferKernels *ref = infer_kernels_get("c");
    for (int t = 1; t < IK_NTABLES; t++) {
        const InferKernels *kern = infer_kernels_get(ik_tables[t]);
        if (!kern) continue;
        IkConv c = {1, 19, 21, 23, 29, 3, 1, 1, 1, 1, ACT_SILU};
        int oh = c.h, ow = c.w;
        float *w = ik_randn((size_t)c.cout * c.cin * 9, 0.2f), *b = ik_randn((size_t)c.cout, 0.5f);
        float *x = ik_randn((size_t)c.cin * c.h * c.w, 1.f);
        float *y0 = malloc(sizeof(float) * c.cout * oh * ow), *y1 = malloc(sizeof(float) * c.cout * oh * ow);
        ConvLayer L0, L1;
        CU_ASSERT(conv_init(&L0, ref, c.cin, c.cout, 3, 1, 1, 1, 1, ACT_SILU, 0, w, b) == 0);
        CU_ASSERT(conv_init(&L1, kern, c.cin, c.cout, 3, 1, 1, 1, 1, ACT_SILU, 0, w, b) == 0);
        size_t sc =
            conv_scratch_floats(&L0) > conv_scratch_floats(&L1) ? conv_scratch_floats(&L0) : conv_scratch_floats(&L1);
        float *scratch = malloc(sizeof(float) * sc * pool_threads());
        Map in = {x, 1, c.cin, c.h, c.w, (size_t)c.cin * c.h * c.w};
        Map o0 = {y0, 1, c.cout, oh, ow, (size_t)c.cout * oh * ow}, o1 = o0;
        o1.p = y1;
        conv_run(&L0, &in, &o0, scratch);
        conv_run(&L1, &in, &o1, scratch);
        CU_ASSERT(ik_close(kern->name, y1, y0, (size_t)c.cout * oh * ow, 1e-5));
        conv_free(&L0), conv_free(&L1);
        free(w), free(b), free(x), free(y0), free(y1), free(scratch);
    }
}

static void test_ik_activations(void) {
    enum { N = 203 }; /* not a multiple of any vector width */
    float x[N], want[N], got[N];
    for (int i = 0; i < N; i++) x[i] = (i - N / 2) * 0.9f; /* -91 .. 91: the exp clamp range */
    x[0] = -1e4f, x[1] = 1e4f, x[2] = 0.f, x[3] = -0.f, x[4] = 1e-30f, x[5] = -3.5f;
    for (int t = 0; t < IK_NTABLES; t++) {
        const InferKernels *kern = infer_kernels_get(ik_tables[t]);
        if (!kern) continue;
        for (int act = ACT_NONE; act <= ACT_SILU; act++) {
            for (int i = 0; i < N; i++) want[i] = act_scalar(x[i], act, 0.1f), got[i] = x[i];
            kern->activate(got, N, act, 0.1f);
            int ok = 1;
            for (int i = 0; i < N; i++) ok &= fabsf(got[i] - want[i]) <= 2e-6f * (1 + fabsf(want[i]));
            if (!ok) printf("\n  %s act %d differs from act_scalar\n", kern->name, act);
            CU_ASSERT(ok);
        }
    }
}

static void test_ik_expv(void) {
    enum { N = 77 };
    float x[N], y[N];
    for (int t = 0; t < IK_NTABLES; t++) {
        const InferKernels *kern = infer_kernels_get(ik_tables[t]);
        if (!kern) continue;
        for (int i = 0; i < N; i++) x[i] = y[i] = -87.f + (87.f + 88.f) * i / (N - 1);
        kern->expv(y, N);
        int ok = 1;
        for (int i = 0; i < N; i++) ok &= fabsf(y[i] - expf(x[i])) <= 2e-6f * expf(x[i]);
        if (!ok) printf("\n  %s expv differs from expf\n", kern->name);
        CU_ASSERT(ok);
    }
}

static void test_ik_depthwise_s1(void) {
    static const int shapes[][4] = {{1, 1, 3, 1}, {5, 7, 3, 1},  {17, 33, 3, 1},
                                    {9, 4, 5, 2}, {6, 19, 3, 0}, {3, 2, 3, 2}};
    for (int t = 0; t < IK_NTABLES; t++) {
        const InferKernels *kern = infer_kernels_get(ik_tables[t]);
        if (!kern) continue;
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
            int h = shapes[i][0], w = shapes[i][1], k = shapes[i][2], p = shapes[i][3];
            int oh = h + 2 * p - k + 1, ow = w + 2 * p - k + 1;
            if (oh <= 0 || ow <= 0) continue;
            float *x = ik_randn((size_t)h * w, 1.f), *wt = ik_randn((size_t)k * k, 0.3f);
            float *want = malloc(sizeof(float) * oh * ow), *got = malloc(sizeof(float) * oh * ow);
            conv_naive(x, 1, 1, h, w, wt, NULL, 1, k, 1, p, 1, 1, ACT_NONE, 0, want);
            for (int j = 0; j < oh * ow; j++) want[j] = act_scalar(want[j] + 0.25f, ACT_SILU, 0);
            kern->dw_s1(x, h, w, got, oh, ow, wt, k, p, 0.25f, ACT_SILU, 0);
            CU_ASSERT(ik_close(kern->name, got, want, (size_t)oh * ow, 2e-6));
            free(x), free(wt), free(want), free(got);
        }
    }
}

/* ---- pools and upsample against loops written from the PyTorch definitions ---- */
static float ik_pool_ref(const float *x, int h, int w, int oy, int ox, int k, int s, int p, int is_max, int cip) {
    float m = -INFINITY, sum = 0;
    int cnt = 0;
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) {
            int iy = oy * s - p + ky, ix = ox * s - p + kx;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                float v = x[iy * w + ix];
                m = v > m ? v : m;
                sum += v, cnt++;
            } else if (iy < h + p && ix < w + p) {
                cnt += cip; /* padded taps count, taps past the padded edge do not */
            }
        }
    return is_max ? m : sum / cnt;
}

static void test_ik_pools(void) {
    static const int cfg[][3] = {{2, 1, 0}, {3, 2, 1}, {5, 1, 2}, {2, 2, 0}, {3, 1, 1}, {3, 3, 1}};
    int n = 2, c = 3, h = 9, w = 11;
    float *x = ik_randn((size_t)n * c * h * w, 1.f);
    for (size_t i = 0; i < sizeof cfg / sizeof *cfg; i++) {
        int k = cfg[i][0], s = cfg[i][1], p = cfg[i][2];
        int oh = conv_out_size(h, k, s, p, 1), ow = conv_out_size(w, k, s, p, 1);
        size_t on = (size_t)n * c * oh * ow;
        float *got = malloc(sizeof(float) * on), *want = malloc(sizeof(float) * on);
        Map in = {x, n, c, h, w, (size_t)c * h * w}, out = {got, n, c, oh, ow, (size_t)c * oh * ow};
        for (int mode = 0; mode < 3; mode++) { /* max, avg counting pads, avg without */
            if (mode == 0)
                maxpool_run(&in, &out, k, s, p);
            else
                avgpool_run(&in, &out, k, s, p, mode == 1);
            for (int pl = 0; pl < n * c; pl++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++)
                        want[((size_t)pl * oh + oy) * ow + ox] =
                            ik_pool_ref(x + (size_t)pl * h * w, h, w, oy, ox, k, s, p, mode == 0, mode == 1);
            CU_ASSERT(ik_close(mode == 0 ? "maxpool" : "avgpool", got, want, on, 1e-6));
        }
        free(got), free(want);
    }
    free(x);
}

static void test_ik_upsample(void) {
    int h = 3, w = 5;
    float *x = ik_randn((size_t)2 * h * w, 1.f);
    static const int sizes[][2] = {{6, 10}, {9, 15}, {7, 8}, {3, 5}, {2, 3}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int oh = sizes[i][0], ow = sizes[i][1];
        float *got = malloc(sizeof(float) * 2 * oh * ow);
        Map in = {x, 1, 2, h, w, (size_t)2 * h * w}, out = {got, 1, 2, oh, ow, (size_t)2 * oh * ow};
        upsample_run(&in, &out);
        int ok = 1;
        for (int c = 0; c < 2; c++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) /* floor(dst * in / out) */
                    ok &= got[(c * oh + oy) * ow + ox] == x[(c * h + oy * h / oh) * w + ox * w / ow];
        CU_ASSERT(ok);
        free(got);
    }
    free(x);
}

/* gemm_f32 of every table against a double-precision definition: all four
 * transpose combinations, accumulate on and off, leading dimensions wider than
 * the matrices, and sizes around the blocking (MR, NR, MC 128, KC 256, NC 1024). */
static int ik_gemm_case(const InferKernels *kern, bool ta, bool tb, int M, int N, int K, bool acc, bool parallel) {
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    float *A = ik_randn((size_t)(ta ? K : M) * lda, 1.f), *B = ik_randn((size_t)(tb ? N : K) * ldb, 1.f);
    float *C = ik_randn((size_t)M * ldc, 1.f), *want = malloc(sizeof(float) * (size_t)M * ldc);
    memcpy(want, C, sizeof(float) * (size_t)M * ldc);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = acc ? C[(size_t)i * ldc + j] : 0.0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                     (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            want[(size_t)i * ldc + j] = (float)s;
        }
    if (parallel) {
        CU_ASSERT(gemm_f32_parallel(kern, ta, tb, M, N, K, A, lda, B, ldb, acc, C, ldc) == 0);
    } else {
        float *scratch = malloc(sizeof(float) * gemm_scratch_floats(kern));
        gemm_f32(kern, ta, tb, M, N, K, A, lda, B, ldb, acc, C, ldc, scratch);
        free(scratch);
    }
    char what[128];
    snprintf(what, sizeof what, "gemm %s ta=%d tb=%d %dx%dx%d acc=%d par=%d", kern->name, ta, tb, M, N, K, acc,
             parallel);
    /* sums of K products of values in [-1, 1): float error grows like sqrt(K) ulp */
    int ok = ik_close(what, C, want, (size_t)M * ldc, 1e-5 * (1 + sqrt((double)K)));
    free(A), free(B), free(C), free(want);
    return ok;
}

static void test_ik_gemm(void) {
    static const int shapes[][3] = {{1, 1, 1},    {8, 32, 16},   {7, 33, 5},     {17, 100, 300}, {130, 40, 257},
                                    {3, 1030, 9}, {64, 70, 600}, {129, 1025, 2}, {16, 27, 2000}, {5, 5, 0}};
    for (int t = 0; t < IK_NTABLES; t++) {
        const InferKernels *kern = infer_kernels_get(ik_tables[t]);
        if (!kern) continue;
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            for (int tr = 0; tr < 4; tr++)
                CU_ASSERT(
                    ik_gemm_case(kern, tr & 1, tr >> 1, shapes[i][0], shapes[i][1], shapes[i][2], (i + tr) % 2, false));
        CU_ASSERT(ik_gemm_case(kern, false, true, 48, 300, 700, false, true));
        CU_ASSERT(ik_gemm_case(kern, true, false, 300, 20, 700, true, true)); /* 8 MFLOP: split by rows */
    }
}

static void test_ik_force(void) {
    CU_ASSERT(infer_kernels_force("c") == 0);
    CU_ASSERT_STRING_EQUAL(infer_kernels()->name, "c");
    CU_ASSERT(infer_kernels_force("sse9") == -1);
    CU_ASSERT(infer_kernels_force(NULL) == 0);
    CU_ASSERT_PTR_NOT_NULL(infer_kernels());
#if defined(__aarch64__)
    CU_ASSERT_STRING_EQUAL(infer_kernels()->name, "neon");
#endif
}

typedef struct {
    const char *name;
    void (*fn)(void);
} InferTestCase;

static const InferTestCase infer_kernels_cases[] = {
    {"conv of every table vs the definition (YOLOv9 shapes)", test_ik_conv_vs_naive},
    {"conv of every table vs the definition (random shapes)", test_ik_conv_random},
    {"SIMD conv vs portable conv", test_ik_simd_vs_c},
    {"one conv on maps of several sizes (Winograd variants made on first use)", test_ik_conv_map_sizes},
    {"activations of every table vs scalar", test_ik_activations},
    {"exp of every table vs expf", test_ik_expv},
    {"depthwise stride-1 kernel of every table", test_ik_depthwise_s1},
    {"max and avg pooling vs definition", test_ik_pools},
    {"nearest upsample vs definition", test_ik_upsample},
    {"gemm of every table vs the definition", test_ik_gemm},
    {"forcing a kernel table", test_ik_force},
    {NULL, NULL},
};

#ifndef INFER_SELFTEST
SUITE_FN(infer_kernels) {
    CU_pSuite s = CU_add_suite("infer_kernels", NULL, NULL);
    if (!s) return -1;
    for (const InferTestCase *t = infer_kernels_cases; t->name; t++) CU_add_test(s, t->name, t->fn);
    return 0;
}
#endif
