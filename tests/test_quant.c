/* Quantization: the fake-quant ops (codes by hand, against the int8 runtime's
 * rule, straight-through gradients), the observer arithmetic, the QAT forward
 * of conv units against the int8 arithmetic composed by hand and against the
 * runtime's qconv, folding for export, exclusions, and the qat.* state. */
#include <CUnit/CUnit.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "infer/qconv.h"
#include "nn/calibrate.h"
#include "nn/model.h"
#include "nn/quant.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"

/* ---- the ops -------------------------------------------------------------------- */

/* scale 0.25 (an exact reciprocal), zp 10: codes 0..255 cover [-2.5, 61.25]. */
static void test_fake_quant_act_by_hand(void) {
    const float x[] = {0.125f, 0.375f, -0.375f, -2.5f, -2.625f, -3.0f, 61.25f, 61.375f, 61.3f, 100.f, 1.1f, 1.2f};
    /* code = clamp(nearbyint(4x) + 10, 0, 255), half to even; value (code - 10) / 4 */
    const float want[] = {0.f, 0.5f, -0.5f, -2.5f, -2.5f, -2.5f, 61.25f, 61.25f, 61.25f, 61.25f, 1.0f, 1.25f};
    /* gradient passes where the code before clamping is in [0, 255]: -2.625 rounds to
     * code 0 (not clamped), -3 to -2 (clamped), 61.375 to 256 (clamped), 61.3 to 255 */
    const float want_grad[] = {1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1};
    const int n = (int)(sizeof x / sizeof x[0]);
    Tape *t = tape_new();
    Tensor *xt = tensor_new1(n);
    memcpy(xt->data, x, sizeof x);
    xt->requires_grad = true;
    Tensor *y = op_fake_quant_act(t, xt, 0.25f, 10);
    CU_ASSERT_NONNULL_OK(y);
    if (y) {
        for (int i = 0; i < n; i++) CU_ASSERT_EQUAL(y->data[i], want[i]);
        float ones[16];
        for (int i = 0; i < n; i++) ones[i] = 1.f;
        CU_ASSERT_OK(tape_backward_from(t, y, ones));
        for (int i = 0; i < n; i++) CU_ASSERT_EQUAL(xt->grad[i], want_grad[i]);
    }
    /* NaN becomes code 255, as the runtime's quantizer */
    tape_reset(t);
    xt->data[0] = NAN;
    y = op_fake_quant_act(t, xt, 0.25f, 10);
    CU_ASSERT(y && y->data[0] == 61.25f);
    /* a bad quantization is refused */
    CU_ASSERT_PTR_NULL(op_fake_quant_act(t, xt, 0.f, 10));
    CU_ASSERT_PTR_NULL(op_fake_quant_act(t, xt, 0.1f, 256));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "fake_quant_act"));
    tensor_free(xt);
    tape_free(t);
}

/* Bit for bit the runtime's quantizer: (qconv_quantize1 - zp) * s, ties included. */
static void test_fake_quant_act_matches_runtime(void) {
    Rng r;
    rng_seed(&r, 7);
    const int n = 4096;
    const float scales[] = {0.0173f, 1.f / 255.f, 0.25f, 3.1f};
    const int zps[] = {0, 17, 128, 255};
    Tape *t = tape_new();
    tape_set_grad_enabled(t, false);
    Tensor *x = tensor_new1(n);
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        float s = scales[k], inv = 1.f / s;
        for (int i = 0; i < n; i++) /* half of them on exact half-steps */
            x->data[i] = i % 2 ? rng_range(&r, -300.f, 300.f) * s : ((float)(int)rng_range(&r, -600, 600) + 0.5f) * s;
        Tensor *y = op_fake_quant_act(t, x, s, zps[k]);
        CU_ASSERT_NONNULL_OK(y);
        for (int i = 0; y && i < n; i++) {
            float want = ((float)qconv_quantize1(x->data[i], inv, zps[k]) - (float)zps[k]) * s;
            bad += y->data[i] != want;
        }
        tape_reset(t);
    }
    CU_ASSERT_EQUAL(bad, 0);
    tensor_free(x);
    tape_free(t);
}

typedef struct {
    float scale;
    int zp;
} ActCtx;

static Tensor *fq_act_fn(Tape *t, Tensor *const *in, void *ctx) {
    const ActCtx *c = ctx;
    return op_fake_quant_act(t, in[0], c->scale, c->zp);
}

/* Over steps much larger than the quantization step the fake quant is the
 * identity inside the range and flat outside: the finite differences of the
 * real forward then check the straight-through gradient, 1 inside and 0 outside. */
static void test_fake_quant_act_gradcheck(void) {
    ActCtx c = {1.f / 256.f, 100}; /* range [-100/256, 155/256] = [-0.39, 0.605] */
    const float lo = -100.f / 256.f, hi = 155.f / 256.f, h = 0.1f;
    Rng r;
    rng_seed(&r, 3);
    Tensor *x = tensor_new4(2, 3, 4, 5);
    for (size_t i = 0; i < x->numel; i++) {
        float v;
        do v = rng_range(&r, -1.2f, 1.4f);
        while (fabsf(v - lo) < 1.5f * h || fabsf(v - hi) < 1.5f * h);
        x->data[i] = v;
    }
    x->requires_grad = true;
    /* with h = 0.1 the staircase spans 51 or 52 steps of 1/256 across 2h: within 2% of slope 1 */
    GradcheckOpts o = {.eps = h, .rtol = 0.03, .atol = 1e-3};
    CU_ASSERT_OK(gradcheck("fake_quant_act", fq_act_fn, &x, 1, &c, &o));
    tensor_free(x);
}

static void test_fake_quant_weight_by_hand(void) {
    /* channel 0: max 63.5 -> scale 0.5: codes 127, round(-2.5) = -2, round(1.5) = 2, round(0.4) = 0;
     * channel 1: zeros -> scale 1; channel 2: max |w| = 12.7 -> code -127 */
    const float w[] = {63.5f, -1.25f, 0.75f, 0.2f, 0, 0, 0, 0, -12.7f, 3.f, 0.f, 1.f};
    Tape *t = tape_new();
    Tensor *wt = tensor_new(4, (int[]){3, 1, 2, 2});
    memcpy(wt->data, w, sizeof w);
    wt->requires_grad = true;
    float scale[3];
    Tensor *y = op_fake_quant_weight(t, wt, scale);
    CU_ASSERT_NONNULL_OK(y);
    if (y) {
        CU_ASSERT_EQUAL(scale[0], 0.5f);
        CU_ASSERT_EQUAL(scale[1], 1.f);
        CU_ASSERT_EQUAL(scale[2], 12.7f / 127.f);
        const float want0[] = {63.5f, -1.f, 1.f, 0.f};
        for (int i = 0; i < 4; i++) CU_ASSERT_EQUAL(y->data[i], want0[i]);
        for (int i = 4; i < 8; i++) CU_ASSERT_EQUAL(y->data[i], 0.f);
        CU_ASSERT_EQUAL(y->data[8], -127.f * scale[2]);
        CU_ASSERT_EQUAL(y->data[9], nearbyintf(3.f / scale[2]) * scale[2]);
        /* the straight-through estimator: the identity (no weight code is ever clamped) */
        float g[12];
        for (int i = 0; i < 12; i++) g[i] = (float)(i + 1);
        CU_ASSERT_OK(tape_backward_from(t, y, g));
        for (int i = 0; i < 12; i++) CU_ASSERT_EQUAL(wt->grad[i], g[i]);
    }
    tensor_free(wt);
    tape_free(t);
}

/* The codes and scales are the runtime's qconv_quantize_weights, bit for bit. */
static void test_fake_quant_weight_matches_runtime(void) {
    Rng r;
    rng_seed(&r, 11);
    const int cout = 24, per = 3 * 3 * 5;
    float *w = malloc(sizeof(float) * cout * per), *s1 = malloc(sizeof(float) * cout),
          *s2 = malloc(sizeof(float) * cout);
    int8_t *q1 = malloc((size_t)cout * per), *q2 = malloc((size_t)cout * per);
    for (int i = 0; i < cout * per; i++) w[i] = rng_normal(&r) * (1.f + (float)(i / per));
    for (int i = 0; i < per; i++) w[5 * per + i] = 0.f; /* a zero channel */
    fake_quant_weight_codes(w, cout, per, q1, s1);
    qconv_quantize_weights(w, cout, per, q2, s2);
    CU_ASSERT_EQUAL(memcmp(q1, q2, (size_t)cout * per), 0);
    CU_ASSERT_EQUAL(memcmp(s1, s2, sizeof(float) * cout), 0);
    /* and the op's output is code * scale */
    Tape *t = tape_new();
    Tensor *wt = tensor_new(2, (int[]){cout, per});
    memcpy(wt->data, w, sizeof(float) * cout * per);
    Tensor *y = op_fake_quant_weight(t, wt, NULL);
    int bad = 0;
    for (int i = 0; y && i < cout * per; i++) bad += y->data[i] != (float)q1[i] * s1[i / per];
    CU_ASSERT_EQUAL(bad, 0);
    tensor_free(wt);
    tape_free(t);
    free(w), free(s1), free(s2), free(q1), free(q2);
}

/* The smooth folding ops: ordinary gradient checks. */
static Tensor *fold_chain_fn(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    /* in: w [4,3,3,3], w1 [4,3,1,1], gamma [4], beta [4], bias [4], x [2,4,3,3]; var, mean fixed */
    static float var[4] = {0.5f, 1.5f, 2.f, 0.1f}, mean[4] = {0.3f, -0.2f, 1.f, 0.f};
    Tensor vt = {.ndim = 1, .shape = {4}, .numel = 4, .data = var};
    Tensor mt = {.ndim = 1, .shape = {4}, .numel = 4, .data = mean};
    Tensor *f = op_bn_fold_factor(t, in[2], &vt, 1e-3f);
    Tensor *wf = op_scale_channels(t, in[0], f, 0, false);
    Tensor *wm = op_merge_center(t, wf, in[1]);
    Tensor *b = op_bn_fold_bias(t, in[3], in[4], &mt, f);
    Tensor *xd = op_scale_channels(t, in[5], f, 1, true);
    /* one scalar-ish output touching everything: cat of flattened pieces */
    Tensor *parts[3] = {op_reshape(t, wm, 1, (int[]){(int)wm->numel}), b,
                        op_reshape(t, xd, 1, (int[]){(int)xd->numel})};
    return op_concat(t, parts, 3, 0);
}

static void test_fold_ops_gradcheck(void) {
    Rng r;
    rng_seed(&r, 5);
    const int shapes[6][5] = {{4, 4, 3, 3, 3}, {4, 4, 3, 1, 1}, {1, 4}, {1, 4}, {1, 4}, {4, 2, 4, 3, 3}};
    Tensor *in[6];
    for (int i = 0; i < 6; i++) {
        in[i] = tensor_new(shapes[i][0], shapes[i] + 1);
        for (size_t k = 0; k < in[i]->numel; k++) in[i]->data[k] = rng_range(&r, -1.5f, 1.5f);
        in[i]->requires_grad = true;
    }
    for (int c = 0; c < 4; c++) in[2]->data[c] = 0.5f + 0.25f * (float)c; /* gamma away from 0 */
    GradcheckOpts o = {.eps = 1e-3, .rtol = 1e-2, .atol = 1e-3};
    CU_ASSERT_OK(gradcheck("bn folding", fold_chain_fn, in, 6, NULL, &o));
    for (int i = 0; i < 6; i++) tensor_free(in[i]);
}

/* ---- observers ------------------------------------------------------------------ */

static void test_observer_math(void) {
    float mn = INFINITY, mx = -INFINITY;
    qat_observer_update(&mn, &mx, -1.f, 3.f, 0.01f); /* the first batch sets both */
    CU_ASSERT_EQUAL(mn, -1.f);
    CU_ASSERT_EQUAL(mx, 3.f);
    qat_observer_update(&mn, &mx, -2.f, 5.f, 0.01f); /* then min += 0.01 (batch - min) */
    CU_ASSERT_DOUBLE_EQUAL(mn, -1.01, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(mx, 3.02, 1e-6);

    float s;
    int zp;
    qat_qparams(-1.f, 3.f, &s, &zp); /* 4/255 per step, zero at 1/(4/255) = 63.75 -> 64 */
    CU_ASSERT_EQUAL(s, 4.f / 255.f);
    CU_ASSERT_EQUAL(zp, 64);
    qat_qparams(0.5f, 2.f, &s, &zp); /* the range always includes 0 */
    CU_ASSERT_EQUAL(s, 2.f / 255.f);
    CU_ASSERT_EQUAL(zp, 0);
    qat_qparams(-3.f, -1.f, &s, &zp);
    CU_ASSERT_EQUAL(s, 3.f / 255.f);
    CU_ASSERT_EQUAL(zp, 255);
    qat_qparams(0.f, 0.f, &s, &zp); /* an empty range: torch's eps */
    CU_ASSERT_EQUAL(s, FLT_EPSILON);
    CU_ASSERT_EQUAL(zp, 0);
    qat_qparams(-1.01f, 3.02f, &s, &zp); /* 1.01 / (4.03/255) = 63.9 */
    CU_ASSERT_EQUAL(zp, 64);
    /* 2.5 steps below zero: a tie, rounded to even */
    qat_qparams(-2.5f, 252.5f, &s, &zp);
    CU_ASSERT_EQUAL(s, 1.f);
    CU_ASSERT_EQUAL(zp, 2);
}

/* ---- a small model ----------------------------------------------------------------- */

/* A Conv, a RepNCSPELAN4 (with a RepConvN), strided Convs and a DDetect head; 32x32 input. */
static const char *SMALL_YAML =
    "nc: 2\n"
    "depth_multiple: 1.0\n"
    "width_multiple: 1.0\n"
    "backbone:\n"
    "  [[-1, 1, Conv, [8, 3, 2]],\n"
    "   [-1, 1, Conv, [16, 3, 2]],\n"
    "   [-1, 1, RepNCSPELAN4, [16, 16, 8, 1]],\n"
    "   [-1, 1, Conv, [16, 3, 2]],\n"
    "   [-1, 1, Conv, [16, 3, 2]],\n"
    "   [-1, 1, Conv, [16, 3, 2]],\n"
    "  ]\n"
    "head:\n"
    "  [[[3, 4, 5], 1, DDetect, [nc]]]\n";

/* The model with BN statistics and affine parameters far from their defaults, so
 * that folding matters. */
static Model *small_model(uint64_t seed) {
    ModelOptions mo = {.seed = seed};
    Model *m = model_build(SMALL_YAML, "small.yaml", &mo);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return NULL;
    Rng r;
    rng_seed(&r, seed + 100);
    for (int i = 0; i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (!u->bn_weight) continue;
        for (int c = 0; c < u->c2; c++) {
            u->bn_weight->data[c] = rng_range(&r, 0.5f, 1.5f);
            u->bn_bias->data[c] = rng_range(&r, -0.5f, 0.5f);
            u->bn_mean->data[c] = rng_range(&r, -0.2f, 0.2f);
            u->bn_var->data[c] = rng_range(&r, 0.02f, 0.5f);
        }
    }
    return m;
}

static Tensor *rand_input(int n, int c, int h, int w, float lo, float hi, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    Tensor *x = tensor_new4(n, c, h, w);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = rng_range(&r, lo, hi);
    return x;
}

static ConvUnit *find_unit(const Model *m, const char *name) {
    for (int i = 0; i < m->nunits; i++)
        if (!strcmp(m->units[i]->name, name)) return m->units[i];
    return NULL;
}

static double silu_d(double v) { return v / (1.0 + exp(-v)); }

/* The int8 arithmetic by hand: x codes, the folded weight's codes (the runtime's
 * qconv_quantize_weights), integer accumulation with the padding at code zp, then
 * acc * s_x * s_w + bias in double. wf [cout][cin/g*k*k] is the folded float weight. */
static void int8_conv_by_hand(const Tensor *x, float sx, int zp, const float *wf, const float *bias, int cout, int k,
                              int s, int p, int g, double *out, int *oh_, int *ow_) {
    const int N = tN(x), C = tC(x), H = tH(x), W = tW(x), cg = C / g, og = cout / g;
    const int oh = (H + 2 * p - k) / s + 1, ow = (W + 2 * p - k) / s + 1;
    const size_t per = (size_t)cg * k * k;
    int8_t *wq = malloc((size_t)cout * per);
    float *ws = malloc(sizeof(float) * cout);
    uint8_t *xq = malloc(x->numel);
    qconv_quantize_weights(wf, cout, per, wq, ws);
    for (size_t i = 0; i < x->numel; i++) xq[i] = qconv_quantize1(x->data[i], 1.f / sx, zp);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < cout; o++)
            for (int yy = 0; yy < oh; yy++)
                for (int xx = 0; xx < ow; xx++) {
                    long acc = 0;
                    int gi = o / og;
                    for (int ci = 0; ci < cg; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = yy * s - p + ky, ix = xx * s - p + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue; /* code zp: 0 */
                                int code = xq[(((size_t)n * C + gi * cg + ci) * H + iy) * W + ix];
                                acc += (long)wq[(size_t)o * per + ((size_t)ci * k + ky) * k + kx] * (code - zp);
                            }
                    out[(((size_t)n * cout + o) * oh + yy) * ow + xx] =
                        (double)acc * sx * ws[o] + (bias ? bias[o] : 0.0);
                }
    *oh_ = oh, *ow_ = ow;
    free(wq), free(ws), free(xq);
}

/* f, the folded weight and bias of a Conv+BN unit, in the float operations the fold uses. */
static void fold_by_hand(const ConvUnit *u, float *f, float *wf, float *bf) {
    size_t per = u->weight->numel / (size_t)u->c2;
    for (int c = 0; c < u->c2; c++) {
        f[c] = u->bn_weight->data[c] / sqrtf(u->bn_var->data[c] + BN_EPS);
        for (size_t i = 0; i < per; i++) wf[c * per + i] = u->weight->data[c * per + i] * f[c];
        bf[c] = (0.f - u->bn_mean->data[c]) * f[c] + u->bn_bias->data[c];
    }
}

static int compare(const char *what, const Tensor *y, const double *want, double tol) {
    float *w = malloc(sizeof(float) * y->numel);
    for (size_t i = 0; i < y->numel; i++) w[i] = (float)want[i];
    int rc = check_close(what, y->data, w, y->numel, tol, tol);
    free(w);
    return rc;
}

/* A Conv+BN+SiLU unit: eval and BN-frozen training equal conv(fq(x), fq(w f)) + b_fold
 * computed as the int8 conv does; training with batch statistics is
 * BN_batch(conv(fq(x), fq(w f)) / f). */
static void test_qat_conv_unit_by_hand(void) {
    Model *m = small_model(1);
    if (!m) return;
    CU_ASSERT_OK(model_qat_enable(m, NULL));
    ConvUnit *u = find_unit(m, "model.1.conv");
    CU_ASSERT_PTR_NOT_NULL(u);
    if (!u || !u->q) {
        model_free(m);
        return;
    }
    const float sx = 0.02f;
    const int zp = 15;
    u->q->qparams->data[0] = sx;
    u->q->qparams->data[1] = (float)zp;
    Tensor *x = rand_input(2, 8, 16, 16, -0.3f, 4.5f, 21); /* a SiLU range, some of it clipped at 4.8 */
    size_t per = u->weight->numel / (size_t)u->c2;
    float *f = malloc(sizeof(float) * u->c2), *wf = malloc(sizeof(float) * u->weight->numel),
          *bf = malloc(sizeof(float) * u->c2);
    fold_by_hand(u, f, wf, bf);
    double *want = malloc(sizeof(double) * 2 * u->c2 * 8 * 8), *z = malloc(sizeof(double) * 2 * u->c2 * 8 * 8);
    int oh, ow;
    int8_conv_by_hand(x, sx, zp, wf, bf, u->c2, u->k, u->s, u->p, u->g, want, &oh, &ow);
    for (int i = 0; i < 2 * u->c2 * oh * ow; i++) want[i] = silu_d(want[i]);

    Tape *t = tape_new();
    tape_set_grad_enabled(t, false);
    Tensor *y = unit_forward(u, t, x, false);
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(compare("qat eval", y, want, 1e-5));
    /* BN frozen: training forwards are the eval form exactly, and leave the statistics */
    float mean0 = u->bn_mean->data[0];
    model_qat_freeze_bn(m, true);
    Tensor *yf = unit_forward(u, t, x, true);
    CU_ASSERT(y && yf && memcmp(y->data, yf->data, y->numel * sizeof(float)) == 0);
    CU_ASSERT_EQUAL(u->bn_mean->data[0], mean0);
    model_qat_freeze_bn(m, false);

    /* batch statistics: z = conv / f, normalised per channel over (N, H, W) */
    int8_conv_by_hand(x, sx, zp, wf, NULL, u->c2, u->k, u->s, u->p, u->g, z, &oh, &ow);
    const int HW = oh * ow, C = u->c2;
    double *bmean = calloc((size_t)C, sizeof(double));
    for (int c = 0; c < C; c++) {
        double s1 = 0, s2 = 0;
        for (int n = 0; n < 2; n++)
            for (int i = 0; i < HW; i++) s1 += z[((size_t)n * C + c) * HW + i] / f[c];
        double mu = s1 / (2 * HW);
        for (int n = 0; n < 2; n++)
            for (int i = 0; i < HW; i++) {
                double d = z[((size_t)n * C + c) * HW + i] / f[c] - mu;
                s2 += d * d;
            }
        double var = s2 / (2 * HW);
        bmean[c] = mu;
        for (int n = 0; n < 2; n++)
            for (int i = 0; i < HW; i++) {
                size_t k = ((size_t)n * C + c) * HW + i;
                want[k] = silu_d((z[k] / f[c] - mu) / sqrt(var + BN_EPS) * u->bn_weight->data[c] + u->bn_bias->data[c]);
            }
    }
    float old_mean[64];
    memcpy(old_mean, u->bn_mean->data, sizeof(float) * C);
    Tensor *yt = unit_forward(u, t, x, true);
    CU_ASSERT_NONNULL_OK(yt);
    if (yt) CU_ASSERT_OK(compare("qat train (batch statistics)", yt, want, 1e-4));
    /* the running statistics keep updating (momentum 0.03) */
    int bad = 0;
    for (int c = 0; c < C; c++) bad += fabs(u->bn_mean->data[c] - (0.97 * old_mean[c] + 0.03 * bmean[c])) > 1e-5;
    CU_ASSERT_EQUAL(bad, 0);
    (void)per;
    tape_free(t);
    tensor_free(x);
    free(f), free(wf), free(bf), free(want), free(z), free(bmean);
    model_free(m);
}

/* An unfused RepConvN quantizes merge(w3 f3, w1 f1) as one kernel in eval. */
static void test_qat_repconvn_by_hand(void) {
    Model *m = small_model(2);
    if (!m) return;
    CU_ASSERT_OK(model_qat_enable(m, NULL));
    CU_ASSERT(m->nreps == 2); /* one per RepNCSP of the RepNCSPELAN4 */
    RepConvN *r = m->reps[0];
    ConvUnit *a = r->conv1, *b = r->conv2;
    CU_ASSERT(a->q != NULL && b->q == NULL && a->q->rep == r);
    const float sx = 0.03f;
    const int zp = 9;
    a->q->qparams->data[0] = sx;
    a->q->qparams->data[1] = (float)zp;
    Tensor *x = rand_input(1, a->c1, 8, 8, -0.3f, 6.f, 22);
    const size_t per = a->weight->numel / (size_t)a->c2;
    float *f3 = malloc(sizeof(float) * a->c2), *w3 = malloc(sizeof(float) * a->weight->numel),
          *b3 = malloc(sizeof(float) * a->c2);
    float *f1 = malloc(sizeof(float) * b->c2), *w1 = malloc(sizeof(float) * b->weight->numel),
          *b1 = malloc(sizeof(float) * b->c2);
    fold_by_hand(a, f3, w3, b3);
    fold_by_hand(b, f1, w1, b1);
    for (size_t i = 0; i < b->weight->numel; i++) w3[i * 9 + 4] += w1[i];
    for (int c = 0; c < a->c2; c++) b3[c] += b1[c];
    double *want = malloc(sizeof(double) * a->c2 * 64);
    int oh, ow;
    int8_conv_by_hand(x, sx, zp, w3, b3, a->c2, 3, 1, 1, 1, want, &oh, &ow);
    for (int i = 0; i < a->c2 * oh * ow; i++) want[i] = silu_d(want[i]);
    Tape *t = tape_new();
    tape_set_grad_enabled(t, false);
    Tensor *y = repconvn_forward(r, t, x, false);
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(compare("repconvn eval", y, want, 1e-5));
    (void)per;
    tape_free(t);
    tensor_free(x);
    free(f3), free(w3), free(b3), free(f1), free(w1), free(b1), free(want);
    model_free(m);
}

/* Eval outputs of every layer and every level map (heap copies). */
typedef struct {
    int n;
    Tensor *t[64];
} Outs;

static int collect(const char *name, const Tensor *t, void *ctx) {
    (void)name;
    Outs *o = ctx;
    if (o->n < 64) o->t[o->n++] = tensor_clone(t);
    return 0;
}

static int eval_outputs(Model *m, const Tensor *x, Outs *o) {
    Tape *t = tape_new();
    tape_set_grad_enabled(t, false);
    ModelOutput out;
    o->n = 0;
    int rc = model_forward(m, t, (Tensor *)x, false, &out);
    if (!rc) rc = model_eval_outputs(m, &out, collect, o);
    tape_free(t);
    return rc;
}

static void outs_free(Outs *o) {
    for (int i = 0; i < o->n; i++) tensor_free(o->t[i]);
    o->n = 0;
}

/* One training forward (records gradients, so observers update). */
static int train_forward(Model *m, const Tensor *x) {
    Tape *t = tape_new();
    ModelOutput out;
    int rc = model_forward(m, t, (Tensor *)x, true, &out);
    tape_free(t);
    return rc;
}

static int qact_of(Act a) {
    switch (a.kind) {
        case ACT_SILU:
            return QACT_SILU;
        case ACT_RELU:
            return QACT_RELU;
        case ACT_LEAKY_RELU:
            return QACT_LEAKY;
        case ACT_NONE:
            break;
    }
    return QACT_NONE;
}

/* Folding for export changes nothing in the eval forward (bit for bit), and each
 * folded quantized conv run by the runtime's int8 qconv equals its fake-quant
 * forward to float rounding. */
static void test_qat_fold_matches_eval_and_runtime(void) {
    Model *m = small_model(3);
    if (!m) return;
    CU_ASSERT_OK(model_qat_enable(m, NULL));
    Tensor *x = rand_input(2, 3, 32, 32, 0.f, 1.f, 31), *x2 = rand_input(2, 3, 32, 32, 0.f, 1.f, 32);
    CU_ASSERT_OK(train_forward(m, x));
    CU_ASSERT_OK(train_forward(m, x2));
    Outs before = {0}, after = {0};
    CU_ASSERT_OK(eval_outputs(m, x, &before));
    CU_ASSERT_OK(model_qat_fold(m));
    CU_ASSERT(m->fused && m->reps[0]->fused);
    CU_ASSERT_PTR_NOT_NULL(find_unit(m, "model.2.cv2.0.m.0.cv1.conv")); /* RepConvN renamed as fused */
    CU_ASSERT_OK(eval_outputs(m, x, &after));
    CU_ASSERT_EQUAL(before.n, after.n);
    int differ = 0;
    for (int i = 0; i < before.n && i < after.n; i++)
        differ += before.t[i]->numel != after.t[i]->numel ||
                  memcmp(before.t[i]->data, after.t[i]->data, before.t[i]->numel * sizeof(float)) != 0;
    CU_ASSERT_EQUAL(differ, 0);
    outs_free(&before);
    outs_free(&after);

    Tape *t = tape_new();
    tape_set_grad_enabled(t, false);
    int checked = 0;
    for (int i = 0; i < m->nunits; i++) {
        ConvUnit *u = m->units[i];
        if (u->removed || !u->q) continue;
        const int H = 8, W = 8;
        float lo = u->q->minmax->data[0], hi = u->q->minmax->data[1], pad = 0.1f * (hi - lo);
        Tensor *xin = rand_input(1, u->c1, H, W, lo - pad, hi + pad, 100 + (uint64_t)i);
        Tensor *y = unit_forward(u, t, xin, false);
        int8_t *wq = malloc(u->weight->numel);
        float *ws = malloc(sizeof(float) * u->c2), sx;
        int zp;
        QConv L;
        CU_ASSERT_OK(qat_unit_int8(u, wq, ws, &sx, &zp));
        CU_ASSERT_OK(qconv_init(&L, NULL, u->c1, u->c2, u->k, u->s, u->p, 1, u->g, qact_of(u->act), u->act.slope, wq,
                                ws, u->bias ? u->bias->data : NULL, sx, zp));
        if (y) {
            float *out = malloc(y->numel * sizeof(float));
            CU_ASSERT_OK(qconv_forward(&L, xin->data, xin->numel, 1, H, W, out, y->numel, NULL));
            if (check_close(u->name, out, y->data, y->numel, 1e-5, 1e-6)) CU_FAIL("int8 runtime != fake quant");
            free(out);
            checked++;
        }
        qconv_free(&L);
        free(wq), free(ws);
        tensor_free(xin);
        tape_reset(t);
    }
    CU_ASSERT_EQUAL(checked, model_qat_count(m));
    tape_free(t);
    tensor_free(x), tensor_free(x2);
    model_free(m);
}

static int count_q(const Model *m) { return model_qat_count(m); }

static void test_qat_exclusions(void) {
    Model *m = small_model(4);
    if (!m) return;
    CU_ASSERT_OK(model_qat_enable(m, NULL));
    const Detect *d = m->detect;
    CU_ASSERT_PTR_NULL(d->dfl[0]->q); /* the DFL is never quantized */
    CU_ASSERT_PTR_NULL(m->reps[0]->conv2->q);
    /* every unit but the DFL and the RepConvNs' second branches */
    CU_ASSERT_EQUAL(count_q(m), m->nunits - 1 - m->nreps);
    const int all = count_q(m);

    const char *ex1[] = {"first", "head-out"};
    QatOptions o = {.exclude = ex1, .nexclude = 2};
    CU_ASSERT_OK(model_qat_enable(m, &o));
    CU_ASSERT_PTR_NULL(find_unit(m, "model.0.conv")->q);
    CU_ASSERT_PTR_NOT_NULL(find_unit(m, "model.1.conv")->q);
    for (int l = 0; l < d->nl; l++) {
        CU_ASSERT_PTR_NULL(d->box[0][l][2]->q);
        CU_ASSERT_PTR_NULL(d->cls[0][l][2]->q);
        CU_ASSERT_PTR_NOT_NULL(d->box[0][l][1]->q);
    }
    CU_ASSERT_EQUAL(count_q(m), all - 1 - 2 * d->nl);

    const char *ex2[] = {"2"}; /* the whole RepNCSPELAN4 layer */
    o = (QatOptions){.exclude = ex2, .nexclude = 1};
    CU_ASSERT_OK(model_qat_enable(m, &o));
    int in2 = 0;
    for (int i = 0; i < m->nunits; i++) in2 += !strncmp(m->units[i]->name, "model.2.", 8) && m->units[i]->q;
    CU_ASSERT_EQUAL(in2, 0);

    /* naming one branch of the RepConvN keeps the pair float; prefixes without "model." */
    const char *ex3[] = {"2.cv2.0.m.0.cv1.conv2"};
    o = (QatOptions){.exclude = ex3, .nexclude = 1};
    CU_ASSERT_OK(model_qat_enable(m, &o));
    CU_ASSERT_PTR_NULL(m->reps[0]->conv1->q);
    CU_ASSERT_EQUAL(count_q(m), all - 1);

    /* a token that names nothing is an error and leaves the model as it was */
    const char *ex4[] = {"model.2.cv9"};
    o = (QatOptions){.exclude = ex4, .nexclude = 1};
    CU_ASSERT_EQUAL(model_qat_enable(m, &o), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "model.2.cv9"));
    CU_ASSERT_EQUAL(count_q(m), all - 1);
    model_qat_disable(m);
    CU_ASSERT(!model_qat_enabled(m));
    model_free(m);
}

/* Observers move only in forwards that record gradients, as PyTorch's
 * MovingAverageMinMaxObserver with averaging constant 0.01. */
static void test_qat_observers_in_model(void) {
    Model *m = small_model(5);
    if (!m) return;
    CU_ASSERT_OK(model_qat_enable(m, NULL));
    QuantState *q = find_unit(m, "model.0.conv")->q; /* its input is the image */
    CU_ASSERT(q->minmax->data[0] == INFINITY && q->minmax->data[1] == -INFINITY && q->qparams->data[0] == 0.f);
    Tensor *x1 = rand_input(2, 3, 32, 32, 0.1f, 0.9f, 41), *x2 = rand_input(2, 3, 32, 32, -0.5f, 2.f, 42);
    Outs o = {0};
    CU_ASSERT_OK(eval_outputs(m, x1, &o)); /* no-grad eval: nothing observed */
    outs_free(&o);
    CU_ASSERT(q->minmax->data[0] == INFINITY);
    float mn1, mx1, mn2, mx2;
    qat_tensor_minmax(x1->data, x1->numel, &mn1, &mx1);
    qat_tensor_minmax(x2->data, x2->numel, &mn2, &mx2);
    CU_ASSERT(mn1 >= 0.1f && mx1 < 0.9f && mn1 < 0.11f);
    CU_ASSERT_OK(train_forward(m, x1));
    CU_ASSERT_EQUAL(q->minmax->data[0], mn1);
    CU_ASSERT_EQUAL(q->minmax->data[1], mx1);
    float s;
    int zp;
    qat_qparams(mn1, mx1, &s, &zp);
    CU_ASSERT_EQUAL(q->qparams->data[0], s);
    CU_ASSERT_EQUAL(q->qparams->data[1], (float)zp);
    CU_ASSERT_OK(train_forward(m, x2));
    CU_ASSERT_DOUBLE_EQUAL(q->minmax->data[0], mn1 + 0.01 * (mn2 - mn1), 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(q->minmax->data[1], mx1 + 0.01 * (mx2 - mx1), 1e-6);
    qat_qparams(q->minmax->data[0], q->minmax->data[1], &s, &zp);
    CU_ASSERT_EQUAL(q->qparams->data[0], s);
    /* frozen observers keep their state */
    float keep = q->minmax->data[1];
    model_qat_freeze_observers(m, true);
    CU_ASSERT_OK(train_forward(m, x1));
    CU_ASSERT_EQUAL(q->minmax->data[1], keep);
    /* the epoch schedule */
    QatOptions opt;
    qat_options_default(&opt, 8);
    CU_ASSERT(opt.freeze_bn_epoch == 4 && opt.freeze_observer_epoch == 6);
    model_qat_apply_epoch(m, &opt, 3);
    CU_ASSERT(q->observe && !q->bn_frozen);
    model_qat_apply_epoch(m, &opt, 6);
    CU_ASSERT(!q->observe && q->bn_frozen);
    qat_options_default(&opt, 1);
    CU_ASSERT(opt.freeze_observer_epoch == 1);
    tensor_free(x1), tensor_free(x2);
    model_free(m);
}

/* Gradients reach weights, BN parameters and both RepConvN branches, with BN
 * statistics training and frozen. */
static void test_qat_backward(void) {
    Model *m = small_model(6);
    if (!m) return;
    CU_ASSERT_OK(model_qat_enable(m, NULL));
    Tensor *x = rand_input(2, 3, 32, 32, 0.f, 1.f, 51);
    const char *names[] = {"model.0.conv.weight", "model.0.bn.weight", "model.2.cv2.0.m.0.cv1.conv2.conv.weight",
                           "model.2.cv2.0.m.0.cv1.conv1.bn.weight", "model.5.conv.weight"};
    for (int frozen = 0; frozen < 2; frozen++) {
        model_qat_freeze_bn(m, frozen);
        for (int i = 0; i < m->nparams; i++) tensor_zero_grad(m->params[i].t);
        Tape *t = tape_new();
        ModelOutput out;
        CU_ASSERT_OK(model_forward(m, t, x, true, &out));
        Tensor *loss = NULL;
        for (int l = 0; l < out.nl; l++) {
            Tensor *s = op_sum(t, out.maps[0][l]);
            loss = loss ? op_add(t, loss, s) : s;
        }
        CU_ASSERT_OK(tape_backward(t, loss));
        for (int k = 0; k < 5; k++) {
            Tensor *p = model_tensor(m, names[k]);
            double norm = 0;
            int finite = 1;
            for (size_t i = 0; p && p->grad && i < p->numel; i++) {
                norm += (double)p->grad[i] * p->grad[i];
                finite &= isfinite(p->grad[i]);
            }
            if (!(norm > 0 && finite))
                fprintf(stderr, "\n  %s: gradient norm %g (frozen %d)\n", names[k], norm, frozen);
            CU_ASSERT(norm > 0 && finite);
        }
        tape_free(t);
    }
    tensor_free(x);
    model_free(m);
}

/* A dual-head PGI model: the auxiliary branch is quantized too, and every
 * quantized conv observes in a training forward, CBLinear included (its unit
 * runs with training=false: observers follow the gradient recording, not the
 * BN mode). */
static void test_qat_dual_head_model(void) {
    const char *cfg = golden_path("yolov9-c-mini_64", "cfg.yaml");
    if (access(cfg, R_OK)) {
        fprintf(stderr, "\n  %s missing: skipped\n", cfg);
        return;
    }
    Model *m = model_build_file(cfg, NULL);
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    CU_ASSERT_EQUAL(m->head.nheads, 2);
    const char *ex[] = {"head-out"};
    QatOptions o = {.exclude = ex, .nexclude = 1};
    CU_ASSERT_OK(model_qat_enable(m, &o));
    const Detect *d = m->detect;
    for (int h = 0; h < 2; h++) {
        CU_ASSERT_PTR_NULL(d->dfl[h]->q);
        CU_ASSERT_PTR_NULL(d->box[h][0][2]->q);
        CU_ASSERT_PTR_NOT_NULL(d->box[h][0][0]->q); /* aux (h = 0) and main */
    }
    int cblinear = 0;
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i].kind == BLOCK_CBLINEAR) cblinear += m->layers[i].blocks[0].u.cblinear.conv->q != NULL;
    CU_ASSERT(cblinear > 0);
    Tensor *x = rand_input(2, 3, 64, 64, 0.f, 1.f, 91);
    CU_ASSERT_OK(train_forward(m, x));
    int unobserved = 0;
    for (int i = 0; i < m->nunits; i++) {
        const QuantState *q = m->units[i]->q;
        if (q && !(q->qparams->data[0] > 0 && isfinite(q->minmax->data[0]))) {
            if (!unobserved++) fprintf(stderr, "\n  not observed: %s\n", m->units[i]->name);
        }
    }
    CU_ASSERT_EQUAL(unobserved, 0);
    tensor_free(x);
    model_free(m);
}

static int st_read_cb(void *ctx, const char *name, Tensor *dst) {
    SafeTensors *st = ctx;
    if (!st_find(st, name)) return 1;
    return st_read_f32(st, name, dst->data, dst->numel);
}

static int same_states(const Model *a, const Model *b) {
    if (a->nunits != b->nunits) return 0;
    for (int i = 0; i < a->nunits; i++) {
        const QuantState *p = a->units[i]->q, *q = b->units[i]->q;
        if (!p != !q) return 0;
        if (p && (memcmp(p->minmax->data, q->minmax->data, 8) || memcmp(p->qparams->data, q->qparams->data, 8)))
            return 0;
    }
    return 1;
}

/* qat.* state: saved with the weights, re-opened without knowing the exclusions,
 * loaded strictly for a resume, copied into an evaluation model. */
static void test_qat_state_round_trip(void) {
    Model *a = small_model(7), *b = NULL, *c = small_model(8), *d = small_model(9);
    if (!a || !c || !d) goto done;
    const char *ex[] = {"head-out"};
    QatOptions o = {.exclude = ex, .nexclude = 1};
    CU_ASSERT_OK(model_qat_enable(a, &o));
    Tensor *x = rand_input(2, 3, 32, 32, 0.f, 1.f, 61), *x2 = rand_input(2, 3, 32, 32, -0.1f, 1.2f, 62);
    CU_ASSERT_OK(train_forward(a, x));
    CU_ASSERT_OK(train_forward(a, x2));
    CU_ASSERT_EQUAL(model_qat_state_count(a), 2 * model_qat_count(a));
    char path[256];
    snprintf(path, sizeof path, "/tmp/gelan_test_quant_%d.safetensors", (int)getpid());
    const char *keys[] = {"names", NULL}, *vals[] = {"[\"a\", \"b\"]"};
    CU_ASSERT_OK(model_save_quantized(a, path, keys, vals));

    /* float weights by model_load, then the quantization of the file */
    b = model_load(path, NULL, NULL);
    CU_ASSERT_NONNULL_OK(b);
    SafeTensors *st = st_open(path);
    CU_ASSERT_NONNULL_OK(st);
    if (b && st) {
        CU_ASSERT_STRING_EQUAL(st_metadata(st, "names"), "[\"a\", \"b\"]");
        int count = -1;
        CU_ASSERT_OK(model_qat_enable_from(b, st_read_cb, st, &count));
        CU_ASSERT_EQUAL(count, model_qat_count(a));
        CU_ASSERT(same_states(a, b));
        Outs oa = {0}, ob = {0};
        CU_ASSERT_OK(eval_outputs(a, x, &oa));
        CU_ASSERT_OK(eval_outputs(b, x, &ob));
        int differ = oa.n != ob.n;
        for (int i = 0; !differ && i < oa.n; i++)
            differ += memcmp(oa.t[i]->data, ob.t[i]->data, oa.t[i]->numel * sizeof(float)) != 0;
        CU_ASSERT_EQUAL(differ, 0);
        outs_free(&oa), outs_free(&ob);

        /* a strict load needs every quantized conv's state */
        CU_ASSERT_OK(model_qat_enable(c, NULL));
        CU_ASSERT_EQUAL(model_qat_load(c, st_read_cb, st), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "no state for model.6.cv2.0.2"));
        CU_ASSERT_OK(model_qat_enable(d, &o));
        CU_ASSERT_OK(model_qat_load(d, st_read_cb, st));
        CU_ASSERT(same_states(a, d));
    }
    st_close(st);
    unlink(path);
    /* copying between models with the same convs quantized */
    model_qat_disable(d);
    CU_ASSERT_OK(model_qat_enable(d, &o));
    CU_ASSERT(!same_states(a, d));
    CU_ASSERT_OK(model_qat_copy_state(d, a));
    CU_ASSERT(same_states(a, d));
    CU_ASSERT_EQUAL(model_qat_copy_state(c, a), -1);
    tensor_free(x), tensor_free(x2);
done:
    model_free(a), model_free(b), model_free(c), model_free(d);
}

/* ---- calibration ----------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static CalibHist hist_of(const float *v, size_t n, int bins) {
    float mn, mx;
    qat_tensor_minmax(v, n, &mn, &mx);
    CalibHist h;
    CU_ASSERT_OK(calib_hist_init(&h, bins, mn, mx));
    calib_hist_add(&h, v, n);
    return h;
}

static void test_calib_minmax_and_percentile(void) {
    /* exponential values (inverse CDF on a grid, shuffled order does not matter) */
    const size_t n = 1000000;
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)-log(1.0 - ((double)i + 0.5) / (double)n);
    v[17] = -0.25f; /* one negative value */
    CalibHist h = hist_of(v, n, 2048);
    float lo, hi;
    calib_hist_range(&h, CALIB_MINMAX, 0, &lo, &hi);
    CU_ASSERT_EQUAL(lo, -0.25f);
    CU_ASSERT_EQUAL(hi, v[n - 1]);
    CU_ASSERT_DOUBLE_EQUAL(h.total, (double)n, 0.5);
    /* the 99.99% / 0.01% quantiles of the sorted values, within one bin */
    float *s = malloc(n * sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_float);
    const double width = (h.hi - h.lo) / h.bins;
    calib_hist_range(&h, CALIB_PERCENTILE, 99.99, &lo, &hi);
    CU_ASSERT_DOUBLE_EQUAL(hi, s[(size_t)(0.9999 * n)], width);
    CU_ASSERT_DOUBLE_EQUAL(hi, -log(1e-4), 2 * width); /* the exponential's own quantile, 9.21 */
    CU_ASSERT_DOUBLE_EQUAL(lo, s[(size_t)(0.0001 * n)], width);
    /* the share beyond a range: 1 - (1 - e^-2) below 2 is e^-2; nothing below 0 but one value */
    CU_ASSERT_DOUBLE_EQUAL(calib_hist_outside(&h, -1.0, 2.0), exp(-2.0), 2e-3);
    calib_hist_free(&h);
    free(v), free(s);
}

/* KL on a Gaussian with a few far outliers clips them (minmax would keep a
 * range 10x too wide) but keeps the bulk; on a uniform distribution it keeps
 * (nearly) everything. */
static void test_calib_kl(void) {
    const size_t n = 200000;
    float *v = malloc(n * sizeof *v);
    Rng r;
    rng_seed(&r, 99);
    for (size_t i = 0; i < n; i++) v[i] = rng_normal(&r);
    for (int i = 0; i < 20; i++) v[i * 997] = 40.f;
    CalibHist h = hist_of(v, n, 2048);
    float lo, hi;
    calib_hist_range(&h, CALIB_KL, 0, &lo, &hi);
    CU_ASSERT(hi > 2.5f && hi < 10.f);
    CU_ASSERT_EQUAL(lo, h.min); /* the lower end stays the minimum */
    calib_hist_free(&h);
    for (size_t i = 0; i < n; i++) v[i] = rng_uniform(&r);
    h = hist_of(v, n, 2048);
    calib_hist_range(&h, CALIB_KL, 0, &lo, &hi);
    CU_ASSERT(hi > 0.95f * h.max);
    calib_hist_free(&h);
    free(v);
}

typedef struct {
    Tensor **x;
    int n;
} Batches;

static int next_batch(void *ctx, int i, Tensor **images) {
    Batches *b = ctx;
    if (i < 0 || i >= b->n) return gelan_error("no batch %d", i);
    *images = b->x[i];
    return 0;
}

/* Counts warnings instead of printing them (the calibration tests expect some). */
static void count_warning(const char *msg, void *ctx) {
    (void)msg;
    ++*(int *)ctx;
}

static void batches_free(Batches *b) {
    for (int i = 0; i < b->n; i++) tensor_free(b->x[i]);
}

/* Each method calibrates the small model on random images without complaint;
 * minmax's range of the first conv is exactly the images' range. */
static void test_calib_model_methods(void) {
    int warnings = 0;
    gelan_set_warning_handler(count_warning, &warnings);
    Tensor *x[3] = {rand_input(2, 3, 32, 32, 0.05f, 0.95f, 71), rand_input(2, 3, 32, 32, 0.f, 1.f, 72),
                    rand_input(2, 3, 32, 32, 0.1f, 0.8f, 73)};
    x[1]->data[5] = 0.f, x[1]->data[6] = 1.f;
    Batches b = {x, 3};
    const CalibMethod methods[] = {CALIB_MINMAX, CALIB_PERCENTILE, CALIB_KL};
    Tape *t = tape_new();
    for (int k = 0; k < 3; k++) {
        Model *m = small_model(10);
        if (!m) break;
        CU_ASSERT_OK(model_qat_enable(m, NULL));
        CalibOptions o;
        calib_options_default(&o);
        o.method = methods[k];
        CalibReport rep;
        CU_ASSERT_OK(calibrate_model(m, t, 3, next_batch, &b, &o, &rep));
        CU_ASSERT_EQUAL(rep.nfail, 0);
        CU_ASSERT_EQUAL(rep.images, 6);
        CU_ASSERT_EQUAL(rep.nconvs, model_qat_count(m));
        CU_ASSERT(rep.nouts > 6);
        QuantState *q = find_unit(m, "model.0.conv")->q;
        CU_ASSERT_STRING_EQUAL(rep.convs[0].name, "model.0.conv");
        CU_ASSERT(!q->observe && q->fake_quant && !q->input_hook);
        CU_ASSERT_EQUAL(q->qparams->data[0], rep.convs[0].scale);
        if (methods[k] == CALIB_MINMAX) {
            CU_ASSERT_EQUAL(rep.convs[0].lo, 0.f);
            CU_ASSERT_EQUAL(rep.convs[0].hi, 1.f);
            CU_ASSERT_EQUAL(rep.convs[0].scale, 1.f / 255.f);
            CU_ASSERT_EQUAL(rep.convs[0].zp, 0);
            CU_ASSERT_EQUAL(rep.convs[0].saturated, 0.0);
        }
        /* every conv got a usable quantization */
        int bad = 0;
        for (int i = 0; i < rep.nconvs; i++) bad += !(rep.convs[i].scale > 0) || rep.convs[i].status == CALIB_FAIL;
        CU_ASSERT_EQUAL(bad, 0);
        calib_report_free(&rep);
        model_free(m);
    }
    tape_free(t);
    batches_free(&b);
    gelan_set_warning_handler(NULL, NULL);
}

/* Black calibration images: the first conv's input is constant; refused, named. */
static void test_calib_constant_input_refused(void) {
    int warnings = 0;
    gelan_set_warning_handler(count_warning, &warnings);
    Tensor *x[2] = {tensor_new4(2, 3, 32, 32), tensor_new4(2, 3, 32, 32)};
    Batches b = {x, 2};
    Model *m = small_model(11);
    Tape *t = tape_new();
    if (m) {
        CU_ASSERT_OK(model_qat_enable(m, NULL));
        CalibReport rep;
        unsigned long w0 = gelan_warning_count();
        CU_ASSERT_EQUAL(calibrate_model(m, t, 2, next_batch, &b, NULL, &rep), -1);
        const char *msg = gelan_last_error();
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "model.0.conv"));
        CU_ASSERT_PTR_NOT_NULL(strstr(msg, "constant"));
        CU_ASSERT(rep.nfail > 0 && rep.convs[0].status == CALIB_FAIL);
        CU_ASSERT(gelan_warning_count() > w0 && warnings > 0); /* loud */
        calib_report_free(&rep);
    }
    tape_free(t);
    model_free(m);
    batches_free(&b);
    gelan_set_warning_handler(NULL, NULL);
}

/* One stray pixel of 1e5 in a calibration batch gives minmax a scale ~400 for the
 * first conv: every ordinary pixel becomes the zero code and the first layer's
 * output stops varying. The per-conv checks see nothing wrong (no saturation);
 * the collapse check on the other batches names the layer and its conv. */
static void test_calib_collapse_detected(void) {
    int warnings = 0;
    gelan_set_warning_handler(count_warning, &warnings);
    Tensor *x[3] = {rand_input(2, 3, 32, 32, 0.f, 1.f, 81), rand_input(2, 3, 32, 32, 0.f, 1.f, 82),
                    rand_input(2, 3, 32, 32, 0.f, 1.f, 83)};
    x[2]->data[100] = 1e5f;
    Batches b = {x, 3};
    Tape *t = tape_new();
    for (int force = 0; force < 2; force++) {
        Model *m = small_model(12);
        if (!m) break;
        CU_ASSERT_OK(model_qat_enable(m, NULL));
        CalibOptions o;
        calib_options_default(&o);
        o.method = CALIB_MINMAX;
        o.force = force;
        CalibReport rep;
        int rc = calibrate_model(m, t, 3, next_batch, &b, &o, &rep);
        CU_ASSERT_EQUAL(rc, force ? 0 : -1);
        CU_ASSERT(rep.convs[0].scale > 300.f && rep.convs[0].status == CALIB_OK);
        CU_ASSERT(rep.nouts > 0 && rep.outs[0].status == CALIB_FAIL && rep.outs[0].var_ratio < 0.01);
        CU_ASSERT_STRING_EQUAL(rep.outs[0].name, "layer.0");
        if (!force) {
            const char *msg = gelan_last_error();
            CU_ASSERT_PTR_NOT_NULL(strstr(msg, "layer.0 output: collapsed"));
            CU_ASSERT_PTR_NOT_NULL(strstr(msg, "model.0.conv"));
        }
        calib_report_free(&rep);
        model_free(m);
    }
    tape_free(t);
    batches_free(&b);
    gelan_set_warning_handler(NULL, NULL);
}

SUITE_FN(quant) {
    CU_pSuite s = CU_add_suite("quant", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "fake quant act: codes and gradient by hand", test_fake_quant_act_by_hand);
    CU_add_test(s, "fake quant act: the runtime's quantizer bit for bit", test_fake_quant_act_matches_runtime);
    CU_add_test(s, "fake quant act: straight-through gradcheck", test_fake_quant_act_gradcheck);
    CU_add_test(s, "fake quant weight: codes by hand, identity gradient", test_fake_quant_weight_by_hand);
    CU_add_test(s, "fake quant weight: qconv_quantize_weights bit for bit", test_fake_quant_weight_matches_runtime);
    CU_add_test(s, "BN folding ops: gradcheck", test_fold_ops_gradcheck);
    CU_add_test(s, "observer and qparams arithmetic", test_observer_math);
    CU_add_test(s, "QAT Conv+BN unit = int8 arithmetic by hand (eval, frozen, batch stats)",
                test_qat_conv_unit_by_hand);
    CU_add_test(s, "QAT RepConvN = merged kernel quantized, by hand", test_qat_repconvn_by_hand);
    CU_add_test(s, "fold for export: same eval bits; int8 qconv = fake quant", test_qat_fold_matches_eval_and_runtime);
    CU_add_test(s, "exclusions", test_qat_exclusions);
    CU_add_test(s, "observers in a model", test_qat_observers_in_model);
    CU_add_test(s, "backward through a QAT model", test_qat_backward);
    CU_add_test(s, "dual-head PGI model: aux branch and CBLinear quantized and observed", test_qat_dual_head_model);
    CU_add_test(s, "qat.* state: save, reopen, load, copy", test_qat_state_round_trip);
    CU_add_test(s, "calibration: minmax exact, percentile value", test_calib_minmax_and_percentile);
    CU_add_test(s, "calibration: KL threshold on a Gaussian with outliers", test_calib_kl);
    CU_add_test(s, "calibration of a model: every method", test_calib_model_methods);
    CU_add_test(s, "calibration: constant input refused, named", test_calib_constant_input_refused);
    CU_add_test(s, "calibration: collapse from a far too large scale, named", test_calib_collapse_detected);
    return 0;
}
