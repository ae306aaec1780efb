/* infer/qconv: the int8 conv. Every kernel path this build and CPU have against the portable C
 * path bit for bit; the portable path against a float computation of the documented
 * arithmetic; extreme codes and weights for overflow; the quantize step's rounding and
 * clamping. Also built without CUnit by tests/qconv_selftest.c (make cross-test-qconv). */
#ifndef QCONV_SELFTEST
#include <CUnit/CUnit.h>

#include "tests/testutil.h"
#endif
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infer/qconv.h"
#include "tensor/error.h"

static unsigned qt_seed = 2024;
static uint32_t qt_next(void) {
    qt_seed = qt_seed * 1664525u + 1013904223u;
    return qt_seed >> 8;
}
static float qt_uniform(float lo, float hi) { return lo + (hi - lo) * (float)qt_next() / (float)(1u << 24); }
static int qt_int(int lo, int hi) { return lo + (int)(qt_next() % (uint32_t)(hi - lo + 1)); }

typedef struct {
    int n, cin, cout, h, w, k, s, p, d, g, act;
} QtShape;

/* A random layer: codes spread over the whole u8 range (the input is drawn in the real range of
 * the codes, a bit beyond so that clamping happens), weights over [-127, 127]. */
typedef struct {
    QtShape sh;
    int oh, ow;
    float *x, *wscale, *bias;
    int8_t *wq;
    float xs;
    int zp;
    size_t xn, yn;
} QtCase;

static void qt_make(QtCase *c, QtShape sh) {
    c->sh = sh;
    c->oh = qconv_out_size(sh.h, sh.k, sh.s, sh.p, sh.d);
    c->ow = qconv_out_size(sh.w, sh.k, sh.s, sh.p, sh.d);
    c->xs = qt_uniform(0.005f, 0.05f);
    c->zp = qt_int(0, 255);
    c->xn = (size_t)sh.n * sh.cin * sh.h * sh.w;
    c->yn = (size_t)sh.n * sh.cout * c->oh * c->ow;
    size_t wn = (size_t)sh.cout * (sh.cin / sh.g) * sh.k * sh.k;
    c->x = malloc(c->xn * sizeof(float));
    c->wq = malloc(wn);
    c->wscale = malloc(sh.cout * sizeof(float));
    c->bias = malloc(sh.cout * sizeof(float));
    for (size_t i = 0; i < c->xn; i++) c->x[i] = qt_uniform(-c->zp - 8.f, 263.f - c->zp) * c->xs;
    for (size_t i = 0; i < wn; i++) c->wq[i] = (int8_t)qt_int(-127, 127);
    for (int i = 0; i < sh.cout; i++) c->wscale[i] = qt_uniform(1e-3f, 2e-2f), c->bias[i] = qt_uniform(-1.f, 1.f);
}

static void qt_free(QtCase *c) {
    free(c->x);
    free(c->wq);
    free(c->wscale);
    free(c->bias);
}

/* The layer through one path; out is [n][cout+2][oh][ow] with the conv written to channels
 * 1..cout (a channel slice, as the runtime writes concat inputs); the input is read through a
 * batch stride too. Returns the output slice copied out contiguously, or NULL. */
static float *qt_run(const QtCase *c, const QConvKernels *kern, float alpha) {
    const QtShape *s = &c->sh;
    size_t plane = (size_t)c->oh * c->ow, in_img = (size_t)s->cin * s->h * s->w;
    size_t in_b = in_img + 5, out_b = (size_t)(s->cout + 2) * plane;
    float *xin = malloc(in_b * s->n * sizeof(float));
    float *yout = malloc(out_b * s->n * sizeof(float));
    float *y = malloc(c->yn * sizeof(float));
    for (int i = 0; i < s->n; i++) memcpy(xin + i * in_b, c->x + i * in_img, in_img * sizeof(float));
    QConv L;
    int rc = qconv_init(&L, kern, s->cin, s->cout, s->k, s->s, s->p, s->d, s->g, s->act, alpha, c->wq, c->wscale,
                        c->bias, c->xs, c->zp);
    if (rc == 0) {
        rc = qconv_forward(&L, xin, in_b, s->n, s->h, s->w, yout + plane, out_b, NULL);
        qconv_free(&L);
    }
    if (rc) printf("\n  qconv (%s): %s\n", kern->name, gelan_last_error());
    for (int i = 0; i < s->n; i++)
        memcpy(y + i * s->cout * plane, yout + i * out_b + plane, s->cout * plane * sizeof(float));
    free(xin);
    free(yout);
    if (rc) {
        free(y);
        return NULL;
    }
    return y;
}

/* The documented arithmetic in double: codes from the quantize rule, real values
 * (x_q - zp) * s_x and w_q * s_w, zero padding, bias, activation with expf. */
static void qt_naive(const QtCase *c, float alpha, double *y) {
    const QtShape *s = &c->sh;
    int cin_g = s->cin / s->g, cout_g = s->cout / s->g;
    float inv = 1.f / c->xs;
    for (int img = 0; img < s->n; img++)
        for (int co = 0; co < s->cout; co++)
            for (int oy = 0; oy < c->oh; oy++)
                for (int ox = 0; ox < c->ow; ox++) {
                    double acc = 0;
                    int gi = co / cout_g;
                    for (int ci = 0; ci < cin_g; ci++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->s - s->p + ky * s->d, ix = ox * s->s - s->p + kx * s->d;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                float xv = c->x[(((size_t)img * s->cin + gi * cin_g + ci) * s->h + iy) * s->w + ix];
                                double q = rint((double)(xv * inv)) + c->zp;
                                q = q < 0 ? 0 : q > 255 ? 255 : q;
                                double wv = c->wq[((size_t)(co * cin_g + ci) * s->k + ky) * s->k + kx];
                                acc += ((q - c->zp) * c->xs) * (wv * c->wscale[co]);
                            }
                    double v = acc + c->bias[co];
                    if (s->act == QACT_RELU) v = v > 0 ? v : 0;
                    if (s->act == QACT_LEAKY) v = v > 0 ? v : v * alpha;
                    if (s->act == QACT_SILU) v = v / (1 + exp(-v));
                    y[(((size_t)img * s->cout + co) * c->oh + oy) * c->ow + ox] = v;
                }
}

static QtShape qt_random_shape(void) {
    static const int ks[] = {1, 3, 5};
    QtShape sh;
    sh.k = ks[qt_int(0, 2)];
    sh.s = qt_int(1, 2);
    sh.p = qt_int(0, sh.k / 2 + 1);
    sh.d = 1;
    int gk = qt_int(0, 3); /* groups 1, 1, 4, depthwise */
    sh.g = gk < 2 ? 1 : gk == 2 ? 4 : 0;
    sh.cin = sh.g == 4 ? 4 * qt_int(1, 9) : qt_int(1, 37);
    if (sh.g == 0) sh.g = sh.cin;
    sh.cout = sh.g == sh.cin ? sh.cin : sh.g * qt_int(1, 40 / sh.g + 1);
    sh.h = qt_int(sh.k, 19);
    sh.w = qt_int(sh.k, 23);
    sh.n = 2;
    sh.act = qt_int(0, 3);
    return sh;
}

static int qt_kernel_count(const QConvKernels **out) {
    int n = 0;
    for (const char *const *nm = qconv_kernel_names; *nm; nm++) {
        const QConvKernels *k = qconv_kernels_get(*nm);
        if (k) out[n++] = k;
    }
    return n;
}

static void qt_report_mismatch(const char *path, const QtShape *s, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof(float))) {
            printf("\n  %s != c at %zu: %.9g vs %.9g (n%d cin%d cout%d %dx%d k%d s%d p%d d%d g%d act%d)\n", path, i,
                   a[i], b[i], s->n, s->cin, s->cout, s->h, s->w, s->k, s->s, s->p, s->d, s->g, s->act);
            return;
        }
}

/* every path against the portable one, bit for bit */
static void qt_check_paths(QtShape sh, float alpha) {
    const QConvKernels *paths[8];
    int np = qt_kernel_count(paths);
    QtCase c;
    qt_make(&c, sh);
    float *ref = qt_run(&c, qconv_kernels_get("c"), alpha);
    CU_ASSERT_PTR_NOT_NULL(ref);
    for (int i = 0; ref && i < np; i++) {
        float *y = qt_run(&c, paths[i], alpha);
        CU_ASSERT_PTR_NOT_NULL(y);
        if (!y) continue;
        int same = memcmp(y, ref, c.yn * sizeof(float)) == 0;
        if (!same) qt_report_mismatch(paths[i]->name, &sh, y, ref, c.yn);
        CU_ASSERT(same);
        free(y);
    }
    free(ref);
    qt_free(&c);
}

static void test_qt_paths_random(void) {
    for (int t = 0; t < 60; t++) qt_check_paths(qt_random_shape(), 0.1f);
}

/* the shapes of the YOLOv9 convs, scaled down, with big K to cross the pixel-block sizes */
static void test_qt_paths_yolo(void) {
    QtShape shapes[] = {
        {1, 3, 16, 33, 31, 3, 2, 1, 1, 1, QACT_SILU},   {1, 64, 48, 17, 15, 3, 1, 1, 1, 1, QACT_SILU},
        {1, 96, 72, 9, 11, 1, 1, 0, 1, 1, QACT_SILU},   {2, 200, 24, 7, 9, 3, 2, 1, 1, 1, QACT_LEAKY},
        {1, 40, 40, 13, 13, 5, 1, 2, 1, 1, QACT_RELU},  {1, 600, 16, 6, 5, 3, 1, 1, 1, 1, QACT_NONE},
        {1, 24, 24, 21, 19, 3, 1, 1, 1, 24, QACT_SILU}, {1, 32, 32, 12, 12, 3, 2, 1, 1, 4, QACT_SILU},
        {1, 16, 16, 15, 15, 3, 1, 2, 2, 1, QACT_SILU},  {2, 7, 9, 40, 37, 1, 1, 0, 1, 1, QACT_SILU},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) qt_check_paths(shapes[i], 0.1f);
}

/* the portable path against the documented arithmetic in double */
static void test_qt_c_vs_naive(void) {
    const QConvKernels *kc = qconv_kernels_get("c");
    for (int t = 0; t < 30; t++) {
        QtShape sh = qt_random_shape();
        QtCase c;
        qt_make(&c, sh);
        float *y = qt_run(&c, kc, 0.1f);
        double *want = malloc(c.yn * sizeof(double));
        qt_naive(&c, 0.1f, want);
        double mag = 0, worst = 0;
        size_t at = 0;
        for (size_t i = 0; y && i < c.yn; i++) {
            mag = fabs(want[i]) > mag ? fabs(want[i]) : mag;
            double e = fabs(y[i] - want[i]);
            if (!(e <= worst)) worst = e, at = i;
        }
        /* a few fp32 roundings of values up to mag */
        int ok = y && worst <= 4e-6 * (mag + 1);
        if (!ok && y)
            printf("\n  c vs naive: error %g at %zu (%g vs %g), max|y| %g, act %d\n", worst, at, y[at], want[at], mag,
                   sh.act);
        CU_ASSERT(ok);
        free(y);
        free(want);
        qt_free(&c);
    }
}

/* all codes 255 or 0 against weights of +-127, K at QCONV_KMAX: the int32 sums reach
 * 65536 * 127 * 255 = 2122383360, just under 2^31; every path must give the exact product. */
static void test_qt_extremes(void) {
    const QConvKernels *paths[8];
    int np = qt_kernel_count(paths);
    int cin = QCONV_KMAX, cout = 9, hw = 3; /* 1x1 conv, 3 pixels */
    int8_t *wq = malloc((size_t)cout * cin);
    float *x = malloc((size_t)cin * hw * sizeof(float)), ws[9], bias[9], y[9 * 3];
    for (int o = 0; o < cout; o++) {
        ws[o] = 1.f / 1024;
        bias[o] = (float)o;
        for (int i = 0; i < cin; i++)
            wq[(size_t)o * cin + i] = (int8_t)(o % 3 == 0 ? 127 : o % 3 == 1 ? -127 : (i % 2 ? 127 : -127));
    }
    struct {
        float xval;
        int zp;
    } cases[] = {{1e9f, 0}, {-1e9f, 255}, {1e9f, 255}, {-1e9f, 0}, {1e9f, 128}};
    for (size_t cs = 0; cs < sizeof cases / sizeof *cases; cs++) {
        for (size_t i = 0; i < (size_t)cin * hw; i++) x[i] = cases[cs].xval;
        int code = cases[cs].xval > 0 ? 255 : 0, zp = cases[cs].zp;
        for (int p = 0; p < np; p++) {
            QConv L;
            CU_ASSERT_OK(qconv_init(&L, paths[p], cin, cout, 1, 1, 0, 1, 1, QACT_NONE, 0.f, wq, ws, bias, 0.5f, zp));
            CU_ASSERT_OK(qconv_forward(&L, x, (size_t)cin * hw, 1, 1, hw, y, (size_t)cout * hw, NULL));
            qconv_free(&L);
            for (int o = 0; o < cout; o++) {
                int64_t acc = 0;
                for (int i = 0; i < cin; i++) acc += (int64_t)wq[(size_t)o * cin + i] * (code - zp);
                float want = (float)acc * (0.5f * ws[o]);
                want = want + bias[o];
                for (int j = 0; j < hw; j++)
                    if (y[o * hw + j] != want) {
                        printf("\n  %s: extreme case %zu channel %d: %.9g, want %.9g (acc %lld)\n", paths[p]->name, cs,
                               o, y[o * hw + j], want, (long long)acc);
                        CU_ASSERT(0);
                        o = cout;
                        break;
                    }
            }
        }
    }
    /* K one past the limit is refused */
    QConv L;
    CU_ASSERT_EQUAL(qconv_init(&L, NULL, cin + 1, 1, 1, 1, 0, 1, 1, QACT_NONE, 0.f, wq, ws, bias, 0.5f, 0), -1);
    free(wq);
    free(x);
}

/* The quantize rule on hand-derived cases (s = 0.5, zp = 10: x * 2, half to even, + 10, clamp),
 * then every path against the portable one on random values, ties and non-finite input. */
static void test_qt_quantize(void) {
    const float xs[] = {0.25f,  0.75f, -0.25f,  1.25f,   -1.25f, 3.f,  1000.f,   -1000.f,   -5.f,
                        -5.25f, -5.5f, 122.25f, 122.75f, 0.f,    -0.f, INFINITY, -INFINITY, NAN};
    const uint8_t want[] = {10, 12, 10, 12, 8, 16, 255, 0, 0, 0, 0, 254, 255, 10, 10, 255, 0, 255};
    const QConvKernels *paths[8];
    int np = qt_kernel_count(paths);
    size_t n = sizeof xs / sizeof *xs;
    uint8_t q[sizeof xs / sizeof *xs];
    for (int p = 0; p < np; p++) {
        qconv_quantize(paths[p], xs, n, 0.5f, 10, q);
        for (size_t i = 0; i < n; i++)
            if (q[i] != want[i]) {
                printf("\n  %s: quantize(%g) = %d, want %d\n", paths[p]->name, xs[i], q[i], want[i]);
                CU_ASSERT(0);
            }
    }
    /* random values and exact ties k/2 * s, lengths that leave vector tails */
    size_t m = 100003;
    float *x = malloc(m * sizeof(float));
    uint8_t *ref = malloc(m), *got = malloc(m);
    float s = 0.037f;
    for (size_t i = 0; i < m; i++) x[i] = i % 3 ? qt_uniform(-6.f, 6.f) : (float)((int)(i % 600) - 300) * 0.5f * s;
    qconv_quantize(qconv_kernels_get("c"), x, m, s, 77, ref);
    for (size_t i = 0; i < m; i++) { /* independent check of the portable path */
        float v = x[i] * (1.f / s);
        double r = rint((double)v) + 77;
        uint8_t w = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
        if (ref[i] != w) {
            printf("\n  c: quantize(%.9g) = %d, want %d\n", x[i], ref[i], w);
            CU_ASSERT(0);
            break;
        }
    }
    for (int p = 0; p < np; p++)
        for (size_t len = m - 40; len <= m; len += 13) {
            memset(got, 0xAA, m);
            qconv_quantize(paths[p], x, len, s, 77, got);
            CU_ASSERT(memcmp(got, ref, len) == 0);
            CU_ASSERT(len == m || got[len] == 0xAA);
        }
    free(x);
    free(ref);
    free(got);
}

/* The channel-blocked quantize of every path: byte c of word i is the code of plane c, xor
 * flip; lengths that leave vector tails. */
static void test_qt_quantize4(void) {
    const QConvKernels *paths[8];
    int np = qt_kernel_count(paths);
    size_t m = 1000;
    float *x = malloc(4 * m * sizeof(float));
    uint8_t *codes = malloc(4 * m);
    uint32_t *got = malloc(m * sizeof(uint32_t));
    for (size_t i = 0; i < 4 * m; i++) x[i] = i % 7 ? qt_uniform(-3.f, 3.f) : (float)((int)(i % 100) - 50) * 0.25f;
    x[5] = NAN, x[m + 6] = INFINITY, x[2 * m + 7] = -INFINITY;
    qconv_quantize(qconv_kernels_get("c"), x, 4 * m, 0.05f, 100, codes);
    for (int p = 0; p < np; p++)
        for (size_t len = m - 17; len <= m; len += 17 / 2 + 1) {
            uint8_t flip = paths[p]->flip;
            paths[p]->quantize4(x, x + m, x + 2 * m, x + 3 * m, len, 1.f / 0.05f, 100, flip, got);
            int ok = 1;
            for (size_t i = 0; i < len; i++)
                for (int c = 0; c < 4; c++) ok &= (uint8_t)(got[i] >> 8 * c) == (uint8_t)(codes[c * m + i] ^ flip);
            if (!ok) printf("\n  %s: quantize4 differs from quantize (len %zu)\n", paths[p]->name, len);
            CU_ASSERT(ok);
        }
    free(x);
    free(codes);
    free(got);
}

/* qconv_quantize_input + qconv_run_codes is qconv_forward, with caller-provided scratch */
static void test_qt_two_steps(void) {
    QtShape shapes[] = {{2, 13, 10, 9, 11, 3, 1, 1, 1, 1, QACT_SILU}, {1, 8, 8, 7, 7, 3, 2, 1, 1, 8, QACT_RELU}};
    for (size_t t = 0; t < 2; t++) {
        QtCase c;
        qt_make(&c, shapes[t]);
        const QtShape *s = &c.sh;
        QConv L;
        CU_ASSERT_OK(qconv_init(&L, NULL, s->cin, s->cout, s->k, s->s, s->p, s->d, s->g, s->act, 0.f, c.wq, c.wscale,
                                c.bias, c.xs, c.zp));
        size_t in_b = (size_t)s->cin * s->h * s->w, out_b = (size_t)s->cout * c.oh * c.ow;
        float *y1 = malloc(c.yn * sizeof(float)), *y2 = malloc(c.yn * sizeof(float));
        void *scratch = aligned_alloc(64, qconv_scratch_bytes(&L, s->n, s->h, s->w));
        uint8_t *codes = aligned_alloc(64, qconv_codes_bytes(&L, s->n, s->h, s->w));
        CU_ASSERT_OK(qconv_forward(&L, c.x, in_b, s->n, s->h, s->w, y1, out_b, scratch));
        qconv_quantize_input(&L, c.x, in_b, s->n, s->h, s->w, codes);
        CU_ASSERT_OK(qconv_run_codes(&L, codes, s->n, s->h, s->w, y2, out_b, NULL));
        CU_ASSERT(memcmp(y1, y2, c.yn * sizeof(float)) == 0);
        qconv_free(&L);
        free(y1);
        free(y2);
        free(scratch);
        free(codes);
        qt_free(&c);
    }
}

/* weights: s = max|w|/127, half to even, a zero channel gets scale 1. Values chosen so that
 * the scales are powers of two and every quotient is exact: channel 0 has s = 0.5, channel 2
 * s = 0.25. */
static void test_qt_weights(void) {
    const float w[3][4] = {{63.5f, -31.75f, 0.25f, 0.75f}, {0.f, 0.f, 0.f, 0.f}, {-31.75f, 0.375f, 0.625f, -0.125f}};
    const int8_t want[12] = {127, -64, 0,    2, 0, 0,
                             0,   0,   -127, 2, 2, 0}; /* -63.5 -> -64, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2 */
    int8_t q[12];
    float s[3];
    qconv_quantize_weights(&w[0][0], 3, 4, q, s);
    CU_ASSERT(s[0] == 0.5f && s[1] == 1.f && s[2] == 0.25f);
    CU_ASSERT(memcmp(q, want, 12) == 0);
}

/* the polynomial exp and the SiLU built on it stay within a few ulp of libm */
static void test_qt_exp(void) {
    double worst = 0;
    for (float x = -87.f; x < 88.f; x += 0.0173f) {
        double e = exp((double)x), got = qconv_exp(x);
        double rel = fabs(got - e) / e;
        worst = rel > worst ? rel : worst;
    }
    CU_ASSERT(worst < 3 * 1.2e-7);
    if (worst >= 3 * 1.2e-7) printf("\n  qconv_exp: relative error %g\n", worst);
    double sw = 0;
    for (float x = -30.f; x < 30.f; x += 0.0071f) {
        double want = x / (1 + exp(-(double)x));
        double e = fabs(qconv_act(x, QACT_SILU, 0.f) - want) / (fabs(want) + 1e-30);
        sw = e > sw ? e : sw;
    }
    CU_ASSERT(sw < 5 * 1.2e-7);
    if (sw >= 5 * 1.2e-7) printf("\n  silu: relative error %g\n", sw);
    CU_ASSERT(qconv_exp(-200.f) > 0.f && isfinite(qconv_exp(200.f)));
}

/* forcing a path, the environment name list, rejected arguments */
static void test_qt_force_and_errors(void) {
    CU_ASSERT_OK(qconv_kernels_force("c"));
    CU_ASSERT_STRING_EQUAL(qconv_kernels()->name, "c");
    CU_ASSERT_EQUAL(qconv_kernels_force("sse9"), -1);
    CU_ASSERT_OK(qconv_kernels_force(NULL));
    CU_ASSERT_PTR_NOT_NULL(qconv_kernels());
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512vnni") && !getenv("GELAN_QCONV_ISA"))
        CU_ASSERT_STRING_EQUAL(qconv_kernels()->name, "avx512vnni");
#endif
    int8_t wq[9] = {0, 1, -128, 3, 4, 5, 6, 7, 8};
    float ws = 0.1f, b = 0.f;
    QConv L;
    CU_ASSERT_EQUAL(qconv_init(&L, NULL, 1, 1, 3, 1, 1, 1, 1, QACT_NONE, 0.f, wq, &ws, &b, 0.1f, 0), -1);
    CU_ASSERT(strstr(gelan_last_error(), "-128") != NULL);
    wq[2] = -127;
    CU_ASSERT_EQUAL(qconv_init(&L, NULL, 1, 1, 3, 1, 1, 1, 1, QACT_NONE, 0.f, wq, &ws, &b, 0.1f, 256), -1);
    CU_ASSERT_EQUAL(qconv_init(&L, NULL, 2, 3, 3, 1, 1, 1, 2, QACT_NONE, 0.f, wq, &ws, &b, 0.1f, 0), -1);
    CU_ASSERT_OK(qconv_init(&L, NULL, 1, 1, 3, 1, 0, 1, 1, QACT_NONE, 0.f, wq, &ws, &b, 0.1f, 3));
    float x[4] = {0}, y[4];
    CU_ASSERT_EQUAL(qconv_forward(&L, x, 4, 1, 2, 2, y, 4, NULL), -1); /* 2x2 input, 3x3 kernel, no padding */
    qconv_free(&L);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} QconvTestCase;

static const QconvTestCase qconv_cases[] = {
    {"every path vs portable C, random shapes", test_qt_paths_random},
    {"every path vs portable C, YOLOv9-like shapes", test_qt_paths_yolo},
    {"portable C vs the arithmetic in double", test_qt_c_vs_naive},
    {"extreme codes and weights at the K limit", test_qt_extremes},
    {"quantize: rounding, clamping, every path", test_qt_quantize},
    {"channel-blocked quantize, every path", test_qt_quantize4},
    {"quantize_input + run_codes = forward", test_qt_two_steps},
    {"weight quantization", test_qt_weights},
    {"polynomial exp and SiLU accuracy", test_qt_exp},
    {"forcing a path, rejected arguments", test_qt_force_and_errors},
    {NULL, NULL},
};

#ifndef QCONV_SELFTEST
SUITE_FN(qconv) {
    CU_pSuite s = CU_add_suite("qconv", NULL, NULL);
    if (!s) return -1;
    for (const QconvTestCase *t = qconv_cases; t->name; t++) CU_add_test(s, t->name, t->fn);
    return 0;
}
#endif
