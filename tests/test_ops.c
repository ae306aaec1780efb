/* Every op of autograd/ops.h except conv2d and batchnorm2d: forward values
 * against hand-computed or plainly computed references, a gradient check over
 * awkward shapes (batch 2, odd and non-square sizes, odd channel counts,
 * stride 2, padding, non-integer upsampling ratios), and one bad input per op
 * with its error message. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tests/testutil.h"

/* ---- helpers ------------------------------------------------------------------ */

static Tensor *rand_tensor(int ndim, const int *shape, Rng *r, float lo, float hi) {
    Tensor *x = tensor_new(ndim, shape);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = rng_range(r, lo, hi);
    x->requires_grad = true;
    return x;
}

static Tensor *rand4(int n, int c, int h, int w, Rng *r) { return rand_tensor(4, (int[]){n, c, h, w}, r, -2, 2); }

/* Values with |x| in [0.05, 2]: far from the kink at 0 compared with the
 * gradcheck step (1e-2). */
static Tensor *away_from_zero(int n, int c, int h, int w, Rng *r) {
    Tensor *x = tensor_new4(n, c, h, w);
    for (size_t i = 0; i < x->numel; i++) {
        float m = rng_range(r, 0.05f, 2.0f);
        x->data[i] = rng_uniform(r) < 0.5f ? -m : m;
    }
    x->requires_grad = true;
    return x;
}

/* A shuffled ramp with steps of 0.05: all values distinct and more than two
 * gradcheck steps apart, so perturbing one never changes a max-pool argmax. */
static Tensor *distinct4(int n, int c, int h, int w, Rng *r) {
    Tensor *x = tensor_new4(n, c, h, w);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = 0.05f * (float)i - 0.025f * (float)x->numel;
    for (size_t i = x->numel; i > 1; i--) {
        size_t j = rng_below(r, (uint32_t)i);
        float tmp = x->data[i - 1];
        x->data[i - 1] = x->data[j];
        x->data[j] = tmp;
    }
    x->requires_grad = true;
    return x;
}

static int error_has(const char *needle) {
    if (strstr(gelan_last_error(), needle)) return 1;
    fprintf(stderr, "\n  error \"%s\" does not contain \"%s\"\n", gelan_last_error(), needle);
    return 0;
}

static int shape_is(const Tensor *y, int ndim, const int *shape) {
    if (!y || y->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (y->shape[i] != shape[i]) return 0;
    return 1;
}

/* ---- activations ---------------------------------------------------------------- */

typedef struct {
    int which; /* 0 silu, 1 relu, 2 leaky_relu, 3 sigmoid */
    float slope;
} ActArgs;

static Tensor *apply_act(Tape *t, Tensor *x, const ActArgs *a) {
    switch (a->which) {
        case 0:
            return op_silu(t, x);
        case 1:
            return op_relu(t, x);
        case 2:
            return op_leaky_relu(t, x, a->slope);
        default:
            return op_sigmoid(t, x);
    }
}

static Tensor *gc_act(Tape *t, Tensor *const *in, void *ctx) { return apply_act(t, in[0], ctx); }

static double ref_act(double x, const ActArgs *a) {
    switch (a->which) {
        case 0:
            return x / (1 + exp(-x));
        case 1:
            return x > 0 ? x : 0;
        case 2:
            return x > 0 ? x : a->slope * x;
        default:
            return 1 / (1 + exp(-x));
    }
}

static void test_activations(void) {
    Rng r;
    rng_seed(&r, 11);
    Tape *t = tape_new();
    const char *names[4] = {"silu", "relu", "leaky_relu", "sigmoid"};
    for (int which = 0; which < 4; which++) {
        ActArgs a = {which, 0.1f};
        Tensor *x = away_from_zero(2, 3, 7, 5, &r);
        tape_reset(t);
        Tensor *y = apply_act(t, x, &a);
        CU_ASSERT_NONNULL_OK(y);
        if (!y) continue;
        CU_ASSERT(shape_is(y, 4, x->shape));
        float *want = malloc(x->numel * sizeof *want);
        for (size_t i = 0; i < x->numel; i++) want[i] = (float)ref_act(x->data[i], &a);
        CU_ASSERT_OK(check_close(names[which], y->data, want, x->numel, 1e-6, 1e-7));
        free(want);
        CU_ASSERT_OK(gradcheck(names[which], gc_act, &x, 1, &a, NULL));
        tensor_free(x);
    }
    tape_free(t);
}

/* Hand values, and no overflow / NaN far out in the tails. */
static void test_activation_values(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new1(6);
    const float xs[6] = {1.0f, -1.0f, 0.0f, 100.0f, -100.0f, -1000.0f};
    memcpy(x->data, xs, sizeof xs);
    Tensor *s = op_sigmoid(t, x), *si = op_silu(t, x), *re = op_relu(t, x), *lr = op_leaky_relu(t, x, 0.1f);
    CU_ASSERT_NONNULL_OK(s);
    CU_ASSERT_NONNULL_OK(si);
    CU_ASSERT_NONNULL_OK(re);
    CU_ASSERT_NONNULL_OK(lr);
    if (s && si && re && lr) {
        /* sigmoid(1) = 1/(1+e^-1) = 0.7310585786; sigmoid(-100) = e^-100/(1+e^-100) = 3.72e-44 */
        CU_ASSERT_DOUBLE_EQUAL(s->data[0], 0.7310585786, 1e-7);
        CU_ASSERT_DOUBLE_EQUAL(s->data[1], 0.2689414214, 1e-7);
        CU_ASSERT_DOUBLE_EQUAL(s->data[2], 0.5, 0);
        CU_ASSERT_DOUBLE_EQUAL(s->data[3], 1.0, 0);
        CU_ASSERT(s->data[4] > 0 && s->data[4] < 1e-43);
        CU_ASSERT_EQUAL(s->data[5], 0.0f);
        /* silu(x) = x * sigmoid(x) */
        CU_ASSERT_DOUBLE_EQUAL(si->data[0], 0.7310585786, 1e-7);
        CU_ASSERT_DOUBLE_EQUAL(si->data[1], -0.2689414214, 1e-7);
        CU_ASSERT_EQUAL(si->data[2], 0.0f);
        CU_ASSERT_DOUBLE_EQUAL(si->data[3], 100.0, 0);
        CU_ASSERT(si->data[4] <= 0 && si->data[4] > -1e-40);
        CU_ASSERT(si->data[5] == 0.0f);
        const float relu_want[6] = {1, 0, 0, 100, 0, 0}, leaky_want[6] = {1, -0.1f, 0, 100, -10, -100};
        CU_ASSERT_OK(check_close("relu", re->data, relu_want, 6, 0, 0));
        CU_ASSERT_OK(check_close("leaky_relu", lr->data, leaky_want, 6, 1e-7, 0));
    }
    /* the gradient at exactly 0 is 0 for ReLU and slope for LeakyReLU (PyTorch);
     * far tails give finite gradients */
    x->requires_grad = true;
    tape_reset(t);
    float ones[6] = {1, 1, 1, 1, 1, 1};
    Tensor *y = op_relu(t, x);
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    const float relu_grad[6] = {1, 0, 0, 1, 0, 0};
    CU_ASSERT_OK(check_close("relu grad", x->grad, relu_grad, 6, 0, 0));
    tensor_zero_grad(x);
    tape_reset(t);
    y = op_leaky_relu(t, x, 0.1f);
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    const float leaky_grad[6] = {1, 0.1f, 0.1f, 1, 0.1f, 0.1f};
    CU_ASSERT_OK(check_close("leaky grad", x->grad, leaky_grad, 6, 0, 0));
    tensor_zero_grad(x);
    tape_reset(t);
    y = op_silu(t, op_sigmoid(t, x));
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    for (int i = 0; i < 6; i++) CU_ASSERT(isfinite(x->grad[i]));
    /* silu'(0) = 1/2; sigmoid'(0) = 1/4; so d silu(sigmoid(x))/dx at 0 = silu'(1/2) / 4 */
    double s05 = 1 / (1 + exp(-0.5));
    CU_ASSERT_DOUBLE_EQUAL(x->grad[2], s05 * (1 + 0.5 * (1 - s05)) / 4, 1e-6);
    tensor_free(x);
    tape_free(t);
}

static void test_activation_errors(void) {
    Tape *t = tape_new();
    CU_ASSERT_PTR_NULL(op_silu(t, NULL));
    CU_ASSERT(error_has("silu"));
    CU_ASSERT_PTR_NULL(op_relu(t, NULL));
    CU_ASSERT(error_has("relu"));
    CU_ASSERT_PTR_NULL(op_sigmoid(t, NULL));
    CU_ASSERT(error_has("sigmoid"));
    Tensor *x = tensor_new1(3);
    CU_ASSERT_PTR_NULL(op_leaky_relu(t, x, NAN));
    CU_ASSERT(error_has("leaky_relu: slope nan"));
    tensor_free(x);
    tape_free(t);
}

/* Large enough (> 64K elements) for the parallel path; compared with the
 * serial reference formulas, forward and backward. */
static void test_activation_large(void) {
    Rng r;
    rng_seed(&r, 12);
    Tape *t = tape_new();
    Tensor *x = rand4(2, 8, 72, 64, &r);
    Tensor *y = op_silu(t, x);
    CU_ASSERT_NONNULL_OK(y);
    float *g = malloc(x->numel * sizeof *g), *want = malloc(x->numel * sizeof *want);
    for (size_t i = 0; i < x->numel; i++) g[i] = rng_range(&r, -1, 1);
    CU_ASSERT_OK(tape_backward_from(t, y, g));
    for (size_t i = 0; i < x->numel; i++) want[i] = (float)(x->data[i] / (1 + exp(-(double)x->data[i])));
    CU_ASSERT_OK(check_close("silu large", y->data, want, x->numel, 1e-6, 1e-7));
    for (size_t i = 0; i < x->numel; i++) {
        double s = 1 / (1 + exp(-(double)x->data[i]));
        want[i] = (float)(g[i] * s * (1 + x->data[i] * (1 - s)));
    }
    CU_ASSERT_OK(check_close("silu large grad", x->grad, want, x->numel, 1e-5, 1e-7));
    free(g);
    free(want);
    tensor_free(x);
    tape_free(t);
}

/* ---- pooling -------------------------------------------------------------------- */

typedef struct {
    int k, s, p;
} PoolArgs;

static Tensor *gc_maxpool(Tape *t, Tensor *const *in, void *ctx) {
    const PoolArgs *a = ctx;
    return op_maxpool2d(t, in[0], a->k, a->s, a->p);
}

static Tensor *gc_avgpool(Tape *t, Tensor *const *in, void *ctx) {
    const PoolArgs *a = ctx;
    return op_avgpool2d(t, in[0], a->k, a->s, a->p);
}

/* The plain definition: every window position (i, j) of the k x k window,
 * skipping those in the padding for max; the average divides by k*k
 * (count_include_pad, and a floor-mode window with p <= k/2 never leaves the
 * padded input). */
static float *ref_pool(const Tensor *x, const PoolArgs *a, int is_max, int *OH, int *OW) {
    int H = tH(x), W = tW(x);
    *OH = (H + 2 * a->p - a->k) / a->s + 1;
    *OW = (W + 2 * a->p - a->k) / a->s + 1;
    float *y = malloc((size_t)tN(x) * tC(x) * *OH * *OW * sizeof *y);
    size_t o = 0;
    for (int nc = 0; nc < tN(x) * tC(x); nc++)
        for (int oh = 0; oh < *OH; oh++)
            for (int ow = 0; ow < *OW; ow++) {
                double acc = is_max ? -INFINITY : 0;
                for (int i = 0; i < a->k; i++)
                    for (int j = 0; j < a->k; j++) {
                        int h = oh * a->s - a->p + i, w = ow * a->s - a->p + j;
                        if (h < 0 || h >= H || w < 0 || w >= W) continue;
                        double v = x->data[((size_t)nc * H + h) * W + w];
                        acc = is_max ? fmax(acc, v) : acc + v;
                    }
                y[o++] = (float)(is_max ? acc : acc / (a->k * a->k));
            }
    return y;
}

static void check_pool(Tensor *x, PoolArgs a, int is_max, const char *name) {
    Tape *t = tape_new();
    Tensor *y = is_max ? op_maxpool2d(t, x, a.k, a.s, a.p) : op_avgpool2d(t, x, a.k, a.s, a.p);
    CU_ASSERT_NONNULL_OK(y);
    int OH, OW;
    float *want = ref_pool(x, &a, is_max, &OH, &OW);
    if (y) {
        CU_ASSERT(shape_is(y, 4, (int[]){tN(x), tC(x), OH, OW}));
        CU_ASSERT_OK(check_close(name, y->data, want, y->numel, 1e-6, 1e-6));
    }
    free(want);
    tape_free(t);
    CU_ASSERT_OK(gradcheck(name, is_max ? gc_maxpool : gc_avgpool, &x, 1, &a, NULL));
}

static void test_maxpool(void) {
    Rng r;
    rng_seed(&r, 21);
    Tensor *x = distinct4(2, 3, 9, 6, &r);
    check_pool(x, (PoolArgs){3, 2, 1}, 1, "maxpool k3 s2 p1 9x6"); /* ADown */
    tensor_free(x);
    x = distinct4(2, 5, 7, 5, &r);
    check_pool(x, (PoolArgs){5, 1, 2}, 1, "maxpool k5 s1 p2 7x5"); /* SPPELAN */
    check_pool(x, (PoolArgs){3, 2, 1}, 1, "maxpool k3 s2 p1 7x5");
    check_pool(x, (PoolArgs){2, 2, 1}, 1, "maxpool k2 s2 p1 7x5");
    check_pool(x, (PoolArgs){2, 3, 0}, 1, "maxpool k2 s3 p0 7x5");
    tensor_free(x);
}

/* A 4x4 by hand, and ties: the gradient goes to the first maximum in
 * row-major window order. */
static void test_maxpool_hand_and_ties(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new4(1, 1, 4, 4);
    const float v[16] = {1, 5, 2, 0, /**/ 3, 4, 9, 1, /**/ 7, 0, 6, 8, /**/ 2, 2, 3, 1};
    memcpy(x->data, v, sizeof v);
    /* k3 s2 p1: windows rows {-1..1, 1..3} x cols {-1..1, 1..3}
     * (0,0): rows 0-1, cols 0-1 -> max(1,5,3,4) = 5;  (0,1): rows 0-1, cols 1-3 -> 9
     * (1,0): rows 1-3, cols 0-1 -> 7;                 (1,1): rows 1-3, cols 1-3 -> 9 */
    Tensor *y = op_maxpool2d(t, x, 3, 2, 1);
    const float want[4] = {5, 9, 7, 9};
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(check_close("maxpool 4x4", y->data, want, 4, 0, 0));

    /* all equal 3x3, k3 s1 p1: each window's first element wins */
    Tensor *z = tensor_new4(1, 1, 3, 3);
    tensor_fill(z, 2.5f);
    z->requires_grad = true;
    tape_reset(t);
    y = op_maxpool2d(t, z, 3, 1, 1);
    float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    /* windows (clipped): (0,0),(0,1),(1,0),(1,1) start at (0,0); (0,2),(1,2) at (0,1);
     * (2,0),(2,1) at (1,0); (2,2) at (1,1) */
    const float gwant[9] = {4, 2, 0, 2, 1, 0, 0, 0, 0};
    CU_ASSERT_OK(check_close("maxpool tie grad", z->grad, gwant, 9, 0, 0));
    tensor_free(z);
    tensor_free(x);
    tape_free(t);
}

static void test_avgpool(void) {
    Rng r;
    rng_seed(&r, 22);
    Tensor *x = rand4(2, 3, 9, 6, &r);
    check_pool(x, (PoolArgs){2, 1, 0}, 0, "avgpool k2 s1 p0 9x6"); /* ADown, AConv */
    check_pool(x, (PoolArgs){3, 2, 1}, 0, "avgpool k3 s2 p1 9x6");
    tensor_free(x);
    x = rand4(2, 5, 7, 5, &r);
    check_pool(x, (PoolArgs){2, 1, 0}, 0, "avgpool k2 s1 p0 7x5");
    check_pool(x, (PoolArgs){5, 2, 2}, 0, "avgpool k5 s2 p2 7x5");
    tensor_free(x);

    /* by hand: 1..9 in a 3x3, k2 s1 p0 -> (1+2+4+5)/4 = 3, 4, 6, 7;
     * ones with k3 s2 p1 -> every window holds 4 ones and 5 padding zeros: 4/9 */
    Tape *t = tape_new();
    Tensor *h = tensor_new4(1, 1, 3, 3);
    for (int i = 0; i < 9; i++) h->data[i] = (float)(i + 1);
    Tensor *y = op_avgpool2d(t, h, 2, 1, 0);
    const float want[4] = {3, 4, 6, 7};
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(check_close("avgpool by hand", y->data, want, 4, 0, 0));
    tensor_fill(h, 1);
    y = op_avgpool2d(t, h, 3, 2, 1);
    const float pad_want[4] = {4 / 9.f, 4 / 9.f, 4 / 9.f, 4 / 9.f};
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(check_close("avgpool count_include_pad", y->data, pad_want, 4, 1e-6, 0));
    tensor_free(h);
    tape_free(t);
}

/* SPPELAN-sized input, through the parallel path, against the reference. */
static void test_pool_large(void) {
    Rng r;
    rng_seed(&r, 23);
    Tensor *x = rand4(2, 16, 40, 40, &r);
    Tape *t = tape_new();
    PoolArgs a = {5, 1, 2};
    int OH, OW;
    Tensor *y = op_maxpool2d(t, x, a.k, a.s, a.p);
    float *want = ref_pool(x, &a, 1, &OH, &OW);
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(check_close("maxpool large", y->data, want, y->numel, 0, 0));
    free(want);
    a = (PoolArgs){2, 1, 0};
    y = op_avgpool2d(t, x, a.k, a.s, a.p);
    want = ref_pool(x, &a, 0, &OH, &OW);
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(check_close("avgpool large", y->data, want, y->numel, 1e-6, 1e-6));
    free(want);
    tensor_free(x);
    tape_free(t);
}

static void test_pool_errors(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new4(2, 3, 4, 4);
    CU_ASSERT_PTR_NULL(op_maxpool2d(t, x, 3, 2, 2));
    CU_ASSERT(error_has("maxpool2d: pad 2 is more than half the kernel 3"));
    CU_ASSERT_PTR_NULL(op_avgpool2d(t, x, 2, 1, 2));
    CU_ASSERT(error_has("avgpool2d: pad 2 is more than half the kernel 2"));
    CU_ASSERT_PTR_NULL(op_maxpool2d(t, x, 7, 1, 1));
    CU_ASSERT(error_has("maxpool2d: window 7x7 is larger than the padded input 6x6 (input [2,3,4,4], pad 1)"));
    CU_ASSERT_PTR_NULL(op_avgpool2d(t, x, 2, 0, 0));
    CU_ASSERT(error_has("avgpool2d: need kernel >= 1, stride >= 1, pad >= 0, got k=2 s=0 p=0"));
    Tensor *v = tensor_new(3, (int[]){3, 4, 4});
    CU_ASSERT_PTR_NULL(op_maxpool2d(t, v, 2, 2, 0));
    CU_ASSERT(error_has("maxpool2d: expected a 4-D NCHW input, got [3,4,4]"));
    tensor_free(v);
    tensor_free(x);
    tape_free(t);
}

/* ---- upsample ------------------------------------------------------------------- */

typedef struct {
    int oh, ow;
} SizeArgs;

static Tensor *gc_upsample(Tape *t, Tensor *const *in, void *ctx) {
    const SizeArgs *a = ctx;
    return op_upsample_nearest(t, in[0], a->oh, a->ow);
}

/* src = floor(dst * in / out) in exact integer arithmetic; equal to PyTorch's
 * float formula for these sizes (test_upsample_float_rounding covers a size
 * where they differ). */
static void check_upsample(Tensor *x, int oh, int ow, const char *name) {
    Tape *t = tape_new();
    Tensor *y = op_upsample_nearest(t, x, oh, ow);
    CU_ASSERT_NONNULL_OK(y);
    if (y) {
        CU_ASSERT(shape_is(y, 4, (int[]){tN(x), tC(x), oh, ow}));
        int H = tH(x), W = tW(x), bad = 0;
        for (int nc = 0; nc < tN(x) * tC(x); nc++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    int si = i * H / oh, sj = j * W / ow;
                    bad += y->data[((size_t)nc * oh + i) * ow + j] != x->data[((size_t)nc * H + si) * W + sj];
                }
        if (bad) fprintf(stderr, "\n  %s: %d wrong elements\n", name, bad);
        CU_ASSERT_EQUAL(bad, 0);
    }
    tape_free(t);
    SizeArgs a = {oh, ow};
    CU_ASSERT_OK(gradcheck(name, gc_upsample, &x, 1, &a, NULL));
}

static void test_upsample(void) {
    Rng r;
    rng_seed(&r, 31);
    Tensor *x = rand4(2, 3, 5, 3, &r);
    check_upsample(x, 11, 7, "upsample 5x3 -> 11x7");
    check_upsample(x, 10, 6, "upsample x2");
    check_upsample(x, 20, 12, "upsample x4");
    check_upsample(x, 3, 2, "upsample down 5x3 -> 3x2");
    tensor_free(x);
    x = rand4(2, 5, 7, 5, &r);
    check_upsample(x, 9, 13, "upsample 7x5 -> 9x13");
    tensor_free(x);

    /* by hand: 2x2 -> 4x4 repeats each pixel in a 2x2 block; the gradient of
     * each input pixel is the sum over its block */
    Tape *t = tape_new();
    Tensor *h = tensor_new4(1, 1, 2, 2);
    const float v[4] = {1, 2, 3, 4};
    memcpy(h->data, v, sizeof v);
    h->requires_grad = true;
    Tensor *y = op_upsample_nearest(t, h, 4, 4);
    const float want[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    CU_ASSERT_NONNULL_OK(y);
    if (y) {
        CU_ASSERT_OK(check_close("upsample 2x2->4x4", y->data, want, 16, 0, 0));
        float g[16];
        for (int i = 0; i < 16; i++) g[i] = (float)i;
        CU_ASSERT_OK(tape_backward_from(t, y, g));
        const float gwant[4] = {0 + 1 + 4 + 5, 2 + 3 + 6 + 7, 8 + 9 + 12 + 13, 10 + 11 + 14 + 15};
        CU_ASSERT_OK(check_close("upsample 2x2->4x4 grad", h->grad, gwant, 4, 0, 0));
    }
    tensor_free(h);
    tape_free(t);
}

/* PyTorch computes src = floor(dst * ((float)in / out)) in float. For 2 -> 82,
 * (float)2/82 = 0.024390243 is just below 1/41, so dst 41 gives
 * 41 * 0.024390243f = 0.99999994f and source row 0, where exact arithmetic
 * would give row 1. (Found by comparing the two formulas over all sizes up to
 * 80 -> 400; 2 -> 82 is the smallest.) */
static void test_upsample_float_rounding(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new4(1, 1, 2, 1);
    x->data[0] = 10, x->data[1] = 20;
    Tensor *y = op_upsample_nearest(t, x, 82, 1);
    CU_ASSERT_NONNULL_OK(y);
    if (y) {
        CU_ASSERT_EQUAL(y->data[40], 10);
        CU_ASSERT_EQUAL(y->data[41], 10);
        CU_ASSERT_EQUAL(y->data[42], 20);
        CU_ASSERT_EQUAL(y->data[81], 20);
    }
    tensor_free(x);
    tape_free(t);
}

static void test_upsample_errors(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new4(2, 3, 4, 5);
    CU_ASSERT_PTR_NULL(op_upsample_nearest(t, x, 0, 8));
    CU_ASSERT(error_has("upsample_nearest: input and output sizes must be > 0, got input [2,3,4,5], output 0x8"));
    Tensor *v = tensor_new(2, (int[]){4, 5});
    CU_ASSERT_PTR_NULL(op_upsample_nearest(t, v, 8, 10));
    CU_ASSERT(error_has("upsample_nearest: expected a 4-D NCHW input, got [4,5]"));
    tensor_free(v);
    tensor_free(x);
    tape_free(t);
}

/* ---- concat, slice, split, reshape ------------------------------------------------ */

typedef struct {
    int n, dim;
} ConcatArgs;

static Tensor *gc_concat(Tape *t, Tensor *const *in, void *ctx) {
    const ConcatArgs *a = ctx;
    return op_concat(t, in, a->n, a->dim);
}

/* The element at multi-index idx of the concatenation along dim comes from
 * the input whose range along dim holds idx[dim]. */
static void test_concat(void) {
    Rng r;
    rng_seed(&r, 41);
    const int base[4] = {2, 3, 7, 5};
    const int extra[3] = {1, 4, 2};
    for (int dim = 0; dim < 4; dim++) {
        Tensor *xs[3];
        for (int i = 0; i < 3; i++) {
            int s[4];
            memcpy(s, base, sizeof s);
            s[dim] = extra[i];
            xs[i] = rand_tensor(4, s, &r, -2, 2);
        }
        xs[1]->requires_grad = false; /* an input without grad in the middle */
        Tape *t = tape_new();
        Tensor *y = op_concat(t, xs, 3, dim);
        CU_ASSERT_NONNULL_OK(y);
        if (y) {
            int want_shape[4];
            memcpy(want_shape, base, sizeof want_shape);
            want_shape[dim] = extra[0] + extra[1] + extra[2];
            CU_ASSERT(shape_is(y, 4, want_shape));
            int bad = 0;
            for (size_t e = 0; e < y->numel; e++) {
                int idx[4];
                size_t rem = e;
                for (int d = 3; d >= 0; d--) idx[d] = (int)(rem % (size_t)y->shape[d]), rem /= (size_t)y->shape[d];
                int i = 0;
                while (idx[dim] >= xs[i]->shape[dim]) idx[dim] -= xs[i++]->shape[dim];
                const int *s = xs[i]->shape;
                size_t src = (((size_t)idx[0] * s[1] + idx[1]) * s[2] + idx[2]) * s[3] + idx[3];
                bad += y->data[e] != xs[i]->data[src];
            }
            CU_ASSERT_EQUAL(bad, 0);
        }
        tape_free(t);
        ConcatArgs a = {3, dim};
        char name[32];
        snprintf(name, sizeof name, "concat dim %d", dim);
        CU_ASSERT_OK(gradcheck(name, gc_concat, xs, 3, &a, NULL));
        CU_ASSERT_PTR_NULL(xs[1]->grad);
        for (int i = 0; i < 3; i++) tensor_free(xs[i]);
    }
    /* the same tensor twice gets both gradients */
    Tensor *x = rand4(2, 3, 3, 2, &r);
    Tensor *twice[2] = {x, x};
    Tape *t = tape_new();
    Tensor *y = op_concat(t, twice, 2, 1);
    float *g = malloc(y->numel * sizeof *g);
    for (size_t i = 0; i < y->numel; i++) g[i] = (float)i;
    CU_ASSERT_OK(tape_backward_from(t, y, g));
    /* output element (n, c, hw) with c < 3 comes from x(n, c, hw), c >= 3 from x(n, c-3, hw) */
    int bad = 0;
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 3; c++)
            for (int hw = 0; hw < 6; hw++) {
                float want = (float)((n * 6 + c) * 6 + hw) + (float)((n * 6 + c + 3) * 6 + hw);
                bad += x->grad[(n * 3 + c) * 6 + hw] != want;
            }
    CU_ASSERT_EQUAL(bad, 0);
    free(g);
    tensor_free(x);
    tape_free(t);
}

typedef struct {
    int dim, start, len;
} SliceArgs;

static Tensor *gc_slice(Tape *t, Tensor *const *in, void *ctx) {
    const SliceArgs *a = ctx;
    return op_slice(t, in[0], a->dim, a->start, a->len);
}

static void test_slice(void) {
    Rng r;
    rng_seed(&r, 42);
    Tensor *x = rand4(2, 5, 7, 5, &r);
    const SliceArgs cases[4] = {{0, 1, 1}, {1, 1, 3}, {2, 2, 4}, {3, 4, 1}};
    for (int c = 0; c < 4; c++) {
        SliceArgs a = cases[c];
        Tape *t = tape_new();
        Tensor *y = op_slice(t, x, a.dim, a.start, a.len);
        CU_ASSERT_NONNULL_OK(y);
        if (y) {
            int bad = 0;
            for (int n = 0; n < y->shape[0]; n++)
                for (int ch = 0; ch < y->shape[1]; ch++)
                    for (int h = 0; h < y->shape[2]; h++)
                        for (int w = 0; w < y->shape[3]; w++) {
                            int src[4] = {n, ch, h, w};
                            src[a.dim] += a.start;
                            float got = y->data[(((size_t)n * y->shape[1] + ch) * y->shape[2] + h) * y->shape[3] + w];
                            bad += got != x->data[(((size_t)src[0] * 5 + src[1]) * 7 + src[2]) * 5 + src[3]];
                        }
            CU_ASSERT_EQUAL(bad, 0);
        }
        tape_free(t);
        CU_ASSERT_OK(gradcheck("slice", gc_slice, &x, 1, &a, NULL));
    }
    tensor_free(x);
}

typedef struct {
    int dim, n;
    const int *sizes;
    int piece; /* -1: all pieces concatenated in reverse order */
} SplitArgs;

static Tensor *gc_split(Tape *t, Tensor *const *in, void *ctx) {
    const SplitArgs *a = ctx;
    Tensor *out[8];
    if (op_split(t, in[0], a->dim, a->sizes, a->n, out)) return NULL;
    if (a->piece >= 0) return out[a->piece];
    Tensor *rev[8];
    for (int i = 0; i < a->n; i++) rev[i] = out[a->n - 1 - i];
    return op_concat(t, rev, a->n, a->dim);
}

static void test_split(void) {
    Rng r;
    rng_seed(&r, 43);
    Tensor *x = rand4(2, 5, 7, 5, &r);
    const int ch[3] = {1, 3, 1}, rows[3] = {4, 0, 3};
    Tape *t = tape_new();
    Tensor *out[3];
    CU_ASSERT_OK(op_split(t, x, 1, ch, 3, out));
    /* piece i is the slice starting at the sum of the sizes before it */
    for (int i = 0, start = 0; i < 3; start += ch[i], i++) {
        Tensor *s = op_slice(t, x, 1, start, ch[i]);
        CU_ASSERT(shape_is(out[i], 4, (int[]){2, ch[i], 7, 5}));
        CU_ASSERT_OK(check_close("split piece", out[i]->data, s->data, s->numel, 0, 0));
    }
    CU_ASSERT_OK(op_split(t, x, 2, rows, 3, out)); /* an empty piece is allowed, as in PyTorch */
    CU_ASSERT(shape_is(out[1], 4, (int[]){2, 5, 0, 5}));
    tape_free(t);
    for (int piece = -1; piece < 3; piece++) {
        SplitArgs a = {1, 3, ch, piece};
        CU_ASSERT_OK(gradcheck("split channels", gc_split, &x, 1, &a, NULL));
        SplitArgs b = {2, 3, rows, piece};
        CU_ASSERT_OK(gradcheck("split rows", gc_split, &x, 1, &b, NULL));
    }
    tensor_free(x);
}

static Tensor *gc_reshape(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    /* reshape, then something position-dependent so a wrong mapping shows */
    Tensor *y = op_reshape(t, in[0], 3, (int[]){5, 7, 6});
    return y ? op_slice(t, y, 1, 2, 4) : NULL;
}

static void test_reshape(void) {
    Rng r;
    rng_seed(&r, 44);
    Tensor *x = rand4(2, 3, 7, 5, &r);
    Tape *t = tape_new();
    Tensor *y = op_reshape(t, x, 2, (int[]){6, 35});
    CU_ASSERT_NONNULL_OK(y);
    if (y) {
        CU_ASSERT(shape_is(y, 2, (int[]){6, 35}));
        CU_ASSERT_OK(check_close("reshape", y->data, x->data, x->numel, 0, 0));
    }
    tape_free(t);
    CU_ASSERT_OK(gradcheck("reshape", gc_reshape, &x, 1, NULL, NULL));
    tensor_free(x);
}

static void test_shape_errors(void) {
    Tape *t = tape_new();
    Tensor *a = tensor_new4(2, 3, 4, 4), *b = tensor_new4(2, 3, 4, 5);
    Tensor *ab[2] = {a, b};
    CU_ASSERT_PTR_NULL(op_concat(t, ab, 2, 1));
    CU_ASSERT(error_has("concat: input 1 has shape [2,3,4,5], input 0 has [2,3,4,4]; only dim 1 may differ"));
    CU_ASSERT_PTR_NULL(op_concat(t, ab, 2, 4));
    CU_ASSERT(error_has("concat: dim 4 is out of range for shape [2,3,4,4] (0..3)"));
    CU_ASSERT_PTR_NOT_NULL(op_concat(t, ab, 2, 3)); /* but along the last dim they fit */
    CU_ASSERT_PTR_NULL(op_slice(t, a, 1, 2, 2));
    CU_ASSERT(error_has("slice: [2, 2+2) is outside dim 1 of size 3 (input [2,3,4,4])"));
    CU_ASSERT_PTR_NULL(op_slice(t, a, -1, 0, 1));
    CU_ASSERT(error_has("slice: dim -1 is out of range"));
    Tensor *out[2];
    CU_ASSERT_NOT_EQUAL(op_split(t, a, 1, (int[]){1, 1}, 2, out), 0);
    CU_ASSERT(error_has("split: piece sizes add up to 2, dim 1 of [2,3,4,4] has 3"));
    CU_ASSERT_NOT_EQUAL(op_split(t, a, 1, (int[]){4, -1}, 2, out), 0);
    CU_ASSERT(error_has("split: piece 1 has negative size -1"));
    CU_ASSERT_PTR_NULL(op_reshape(t, a, 2, (int[]){8, 13}));
    CU_ASSERT(error_has("reshape: cannot reshape [2,3,4,4] (96 elements) to [8,13]"));
    tensor_free(a);
    tensor_free(b);
    tape_free(t);
}

/* ---- add, mul, scale ------------------------------------------------------------ */

static Tensor *gc_add(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    return op_add(t, in[0], in[1]);
}
static Tensor *gc_mul(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    return op_mul(t, in[0], in[1]);
}
static Tensor *gc_square(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    return op_mul(t, in[0], in[0]);
}
static Tensor *gc_scale(Tape *t, Tensor *const *in, void *ctx) { return op_scale(t, in[0], *(const float *)ctx); }

static void test_elementwise(void) {
    Rng r;
    rng_seed(&r, 51);
    Tensor *ab[2] = {rand4(2, 3, 7, 5, &r), rand4(2, 3, 7, 5, &r)};
    size_t n = ab[0]->numel;
    float *want = malloc(n * sizeof *want);
    Tape *t = tape_new();
    Tensor *s = op_add(t, ab[0], ab[1]), *p = op_mul(t, ab[0], ab[1]), *k = op_scale(t, ab[0], -2.5f);
    CU_ASSERT_NONNULL_OK(s);
    CU_ASSERT_NONNULL_OK(p);
    CU_ASSERT_NONNULL_OK(k);
    if (s && p && k) {
        for (size_t i = 0; i < n; i++) want[i] = ab[0]->data[i] + ab[1]->data[i];
        CU_ASSERT_OK(check_close("add", s->data, want, n, 0, 0));
        for (size_t i = 0; i < n; i++) want[i] = ab[0]->data[i] * ab[1]->data[i];
        CU_ASSERT_OK(check_close("mul", p->data, want, n, 0, 0));
        for (size_t i = 0; i < n; i++) want[i] = ab[0]->data[i] * -2.5f;
        CU_ASSERT_OK(check_close("scale", k->data, want, n, 0, 0));
    }
    tape_free(t);
    free(want);
    CU_ASSERT_OK(gradcheck("add", gc_add, ab, 2, NULL, NULL));
    CU_ASSERT_OK(gradcheck("mul", gc_mul, ab, 2, NULL, NULL));
    CU_ASSERT_OK(gradcheck("mul x*x", gc_square, ab, 1, NULL, NULL));
    float sc = -2.5f;
    CU_ASSERT_OK(gradcheck("scale", gc_scale, ab, 1, &sc, NULL));
    ab[1]->requires_grad = false; /* one side constant */
    CU_ASSERT_OK(gradcheck("mul by a constant", gc_mul, ab, 2, NULL, NULL));
    tensor_free(ab[0]);
    tensor_free(ab[1]);
}

static void test_elementwise_errors(void) {
    Tape *t = tape_new();
    Tensor *a = tensor_new4(2, 3, 4, 4), *b = tensor_new4(2, 3, 4, 5);
    CU_ASSERT_PTR_NULL(op_add(t, a, b));
    CU_ASSERT_STRING_EQUAL(gelan_last_error(), "add: shapes differ: [2,3,4,4] vs [2,3,4,5]");
    CU_ASSERT_PTR_NULL(op_mul(t, b, a));
    CU_ASSERT_STRING_EQUAL(gelan_last_error(), "mul: shapes differ: [2,3,4,5] vs [2,3,4,4]");
    CU_ASSERT_PTR_NULL(op_scale(t, NULL, 2));
    CU_ASSERT(error_has("scale: input is NULL"));
    tensor_free(a);
    tensor_free(b);
    tape_free(t);
}

/* ---- sum, mean ------------------------------------------------------------------ */

static Tensor *gc_sum(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    return op_sum(t, in[0]);
}
/* mean(x * x): a non-constant gradient, so a wrong divisor or index shows */
static Tensor *gc_mean_sq(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    return op_mean(t, op_mul(t, in[0], in[0]));
}

static void test_reduce(void) {
    Rng r;
    rng_seed(&r, 61);
    Tensor *x = rand4(2, 3, 7, 5, &r);
    double sum = 0;
    for (size_t i = 0; i < x->numel; i++) sum += x->data[i];
    Tape *t = tape_new();
    Tensor *s = op_sum(t, x), *m = op_mean(t, x);
    CU_ASSERT_NONNULL_OK(s);
    CU_ASSERT_NONNULL_OK(m);
    if (s && m) {
        CU_ASSERT(shape_is(s, 1, (int[]){1}) && shape_is(m, 1, (int[]){1}));
        CU_ASSERT_DOUBLE_EQUAL(s->data[0], sum, 1e-5);
        CU_ASSERT_DOUBLE_EQUAL(m->data[0], sum / 210, 1e-7);
    }
    /* d mean / dx = 1/210 everywhere */
    tape_reset(t);
    CU_ASSERT_OK(tape_backward(t, op_mean(t, x)));
    CU_ASSERT_DOUBLE_EQUAL(x->grad[0], 1.0 / 210, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(x->grad[209], 1.0 / 210, 1e-9);
    tensor_zero_grad(x);
    tape_free(t);
    CU_ASSERT_OK(gradcheck("sum", gc_sum, &x, 1, NULL, NULL));
    CU_ASSERT_OK(gradcheck("mean", gc_mean_sq, &x, 1, NULL, NULL));
    tensor_free(x);
}

static void test_reduce_errors(void) {
    Tape *t = tape_new();
    CU_ASSERT_PTR_NULL(op_sum(t, NULL));
    CU_ASSERT(error_has("sum: input is NULL"));
    CU_ASSERT_PTR_NULL(op_mean(t, NULL));
    CU_ASSERT(error_has("mean: input is NULL"));
    tape_free(t);
}

/* ---- softmax -------------------------------------------------------------------- */

typedef struct {
    int dim, log;
} SoftmaxArgs;

static Tensor *gc_softmax(Tape *t, Tensor *const *in, void *ctx) {
    const SoftmaxArgs *a = ctx;
    return a->log ? op_log_softmax(t, in[0], a->dim) : op_softmax(t, in[0], a->dim);
}

/* exp(x - logsumexp) along dim, in double, by walking each line of dim. */
static float *ref_softmax(const Tensor *x, int dim, int want_log) {
    float *y = malloc(x->numel * sizeof *y);
    size_t inner = 1, D = (size_t)x->shape[dim];
    for (int d = dim + 1; d < x->ndim; d++) inner *= (size_t)x->shape[d];
    for (size_t o = 0; o < x->numel / (D * inner); o++)
        for (size_t i = 0; i < inner; i++) {
            const float *xl = x->data + o * D * inner + i;
            double mx = -INFINITY, z = 0;
            for (size_t d = 0; d < D; d++) mx = fmax(mx, xl[d * inner]);
            for (size_t d = 0; d < D; d++) z += exp(xl[d * inner] - mx);
            for (size_t d = 0; d < D; d++) {
                double lp = xl[d * inner] - mx - log(z);
                y[o * D * inner + i + d * inner] = (float)(want_log ? lp : exp(lp));
            }
        }
    return y;
}

static void test_softmax(void) {
    Rng r;
    rng_seed(&r, 71);
    Tensor *x = rand_tensor(4, (int[]){2, 3, 7, 5}, &r, -3, 3);
    for (int lg = 0; lg < 2; lg++)
        for (int dim = 0; dim < 4; dim++) {
            Tape *t = tape_new();
            Tensor *y = lg ? op_log_softmax(t, x, dim) : op_softmax(t, x, dim);
            CU_ASSERT_NONNULL_OK(y);
            float *want = ref_softmax(x, dim, lg);
            char name[48];
            snprintf(name, sizeof name, "%s dim %d", lg ? "log_softmax" : "softmax", dim);
            if (y) CU_ASSERT_OK(check_close(name, y->data, want, x->numel, 1e-5, 1e-6));
            free(want);
            tape_free(t);
            SoftmaxArgs a = {dim, lg};
            CU_ASSERT_OK(gradcheck(name, gc_softmax, &x, 1, &a, NULL));
        }
    tensor_free(x);
    /* 1-D, and the DFL shape: [N, 4, 16, A] along the 16 bins */
    x = rand_tensor(1, (int[]){9}, &r, -3, 3);
    SoftmaxArgs a1 = {0, 0};
    CU_ASSERT_OK(gradcheck("softmax 1-D", gc_softmax, &x, 1, &a1, NULL));
    tensor_free(x);
    x = rand_tensor(4, (int[]){2, 4, 16, 3}, &r, -3, 3);
    SoftmaxArgs a2 = {2, 0};
    CU_ASSERT_OK(gradcheck("softmax DFL", gc_softmax, &x, 1, &a2, NULL));
    tensor_free(x);
}

/* Large logits must not overflow: softmax([1000, 1001]) = [1/(1+e), e/(1+e)]. */
static void test_softmax_stable(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new(2, (int[]){2, 2});
    const float v[4] = {1000, 1001, -1000, -1001};
    memcpy(x->data, v, sizeof v);
    Tensor *y = op_softmax(t, x, 1), *ly = op_log_softmax(t, x, 1);
    double p = 1 / (1 + exp(1.0));
    const float want[4] = {(float)p, (float)(1 - p), (float)(1 - p), (float)p};
    const float lwant[4] = {(float)log(p), (float)log(1 - p), (float)log(1 - p), (float)log(p)};
    CU_ASSERT_NONNULL_OK(y);
    CU_ASSERT_NONNULL_OK(ly);
    if (y && ly) {
        CU_ASSERT_OK(check_close("softmax large", y->data, want, 4, 1e-6, 0));
        CU_ASSERT_OK(check_close("log_softmax large", ly->data, lwant, 4, 1e-6, 0));
    }
    CU_ASSERT_PTR_NULL(op_softmax(t, x, 2));
    CU_ASSERT(error_has("softmax: dim 2 is out of range for shape [2,2] (0..1)"));
    CU_ASSERT_PTR_NULL(op_log_softmax(t, x, -1));
    CU_ASSERT(error_has("log_softmax: dim -1 is out of range for shape [2,2] (0..1)"));
    tensor_free(x);
    tape_free(t);
}

/* A tensor with many rows (> 64K elements) goes through the parallel path. */
static void test_softmax_large(void) {
    Rng r;
    rng_seed(&r, 72);
    Tensor *x = rand_tensor(4, (int[]){2, 4, 16, 1200}, &r, -4, 4);
    Tape *t = tape_new();
    Tensor *y = op_softmax(t, x, 2);
    float *want = ref_softmax(x, 2, 0);
    CU_ASSERT_NONNULL_OK(y);
    if (y) CU_ASSERT_OK(check_close("softmax large", y->data, want, x->numel, 1e-5, 1e-7));
    /* backward against y * (g - sum(g*y)) computed per line */
    float *g = malloc(x->numel * sizeof *g);
    for (size_t i = 0; i < x->numel; i++) g[i] = rng_range(&r, -1, 1);
    CU_ASSERT_OK(tape_backward_from(t, y, g));
    for (size_t o = 0; o < 8; o++)
        for (size_t a = 0; a < 1200; a++) {
            double dot = 0;
            for (size_t d = 0; d < 16; d++) dot += (double)g[(o * 16 + d) * 1200 + a] * want[(o * 16 + d) * 1200 + a];
            for (size_t d = 0; d < 16; d++) {
                size_t e = (o * 16 + d) * 1200 + a;
                want[e] = (float)(want[e] * (g[e] - dot));
            }
        }
    CU_ASSERT_OK(check_close("softmax large grad", x->grad, want, x->numel, 1e-4, 1e-7));
    free(g);
    free(want);
    tensor_free(x);
    tape_free(t);
}

/* ---- bce_with_logits, index_select ---------------------------------------------- */

static Tensor *gc_bce(Tape *t, Tensor *const *in, void *ctx) { return op_bce_with_logits(t, in[0], ctx); }

static void test_bce(void) {
    Rng r;
    rng_seed(&r, 81);
    Tensor *x = rand_tensor(4, (int[]){2, 3, 7, 5}, &r, -6, 6);
    Tensor *tg = tensor_new(4, x->shape);
    for (size_t i = 0; i < tg->numel; i++) tg->data[i] = i % 3 == 0 ? rng_uniform(&r) : (float)(i % 2);
    Tape *t = tape_new();
    Tensor *y = op_bce_with_logits(t, x, tg);
    CU_ASSERT_NONNULL_OK(y);
    if (y) {
        /* the textbook -(t log s + (1-t) log(1-s)), fine in double for |x| <= 6 */
        float *want = malloc(x->numel * sizeof *want);
        for (size_t i = 0; i < x->numel; i++) {
            double s = 1 / (1 + exp(-(double)x->data[i])), tv = tg->data[i];
            want[i] = (float)-(tv * log(s) + (1 - tv) * log(1 - s));
        }
        CU_ASSERT_OK(check_close("bce", y->data, want, x->numel, 1e-6, 1e-6));
        free(want);
    }
    CU_ASSERT_OK(gradcheck("bce_with_logits", gc_bce, &x, 1, tg, NULL));
    CU_ASSERT_PTR_NULL(tg->grad);

    /* far tails: x = 100, t = 0 and x = -100, t = 1 cost 100; no inf/NaN; the
     * gradients are sigmoid(x) - t = 1 and -1 */
    Tensor *xl = tensor_new1(4), *tl = tensor_new1(4);
    const float xv[4] = {100, -100, 100, -100}, tv[4] = {0, 1, 1, 0};
    memcpy(xl->data, xv, sizeof xv);
    memcpy(tl->data, tv, sizeof tv);
    xl->requires_grad = true;
    tape_reset(t);
    y = op_bce_with_logits(t, xl, tl);
    float ones[4] = {1, 1, 1, 1};
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    const float want[4] = {100, 100, 0, 0}, gwant[4] = {1, -1, 0, 0};
    CU_ASSERT_OK(check_close("bce tails", y->data, want, 4, 1e-6, 1e-30));
    CU_ASSERT_OK(check_close("bce tail grads", xl->grad, gwant, 4, 0, 1e-30));

    CU_ASSERT_PTR_NULL(op_bce_with_logits(t, x, xl));
    CU_ASSERT(error_has("bce_with_logits: shapes differ: logits [2,3,7,5] vs target [4]"));
    tensor_free(xl);
    tensor_free(tl);
    tensor_free(x);
    tensor_free(tg);
    tape_free(t);
}

typedef struct {
    int dim, n;
    const int *idx;
} IndexArgs;

static Tensor *gc_index(Tape *t, Tensor *const *in, void *ctx) {
    const IndexArgs *a = ctx;
    return op_index_select(t, in[0], a->dim, a->idx, a->n);
}

static void test_index_select(void) {
    Rng r;
    rng_seed(&r, 91);
    Tensor *x = rand4(2, 5, 7, 6, &r);
    const int idx[6] = {4, 0, 4, 2, 2, 4}; /* repeats, and rows never picked */
    for (int dim = 0; dim < 4; dim++) {
        int n = dim == 0 ? 3 : 6;
        const int idx0[3] = {1, 1, 0};
        const int *ix = dim == 0 ? idx0 : idx;
        Tape *t = tape_new();
        Tensor *y = op_index_select(t, x, dim, ix, n);
        CU_ASSERT_NONNULL_OK(y);
        if (y) {
            int bad = 0;
            for (size_t e = 0; e < y->numel; e++) {
                int id[4];
                size_t rem = e;
                for (int d = 3; d >= 0; d--) id[d] = (int)(rem % (size_t)y->shape[d]), rem /= (size_t)y->shape[d];
                id[dim] = ix[id[dim]];
                bad += y->data[e] != x->data[(((size_t)id[0] * 5 + id[1]) * 7 + id[2]) * 6 + id[3]];
            }
            CU_ASSERT_EQUAL(bad, 0);
        }
        tape_free(t);
        IndexArgs a = {dim, n, ix};
        CU_ASSERT_OK(gradcheck("index_select", gc_index, &x, 1, &a, NULL));
    }
    /* repeated indices accumulate: 1-D x, idx {2, 2, 0}, grad_out {1, 10, 100} */
    Tensor *v = tensor_new1(3);
    v->requires_grad = true;
    Tape *t = tape_new();
    Tensor *y = op_index_select(t, v, 0, (int[]){2, 2, 0}, 3);
    CU_ASSERT_OK(tape_backward_from(t, y, (float[]){1, 10, 100}));
    CU_ASSERT_OK(check_close("index_select repeats", v->grad, (float[]){100, 0, 11}, 3, 0, 0));

    CU_ASSERT_PTR_NULL(op_index_select(t, x, 1, (int[]){0, 5}, 2));
    CU_ASSERT(error_has("index_select: index 5 (entry 1) is out of range for dim 1 of size 5 (input [2,5,7,6])"));
    CU_ASSERT_PTR_NULL(op_index_select(t, x, 2, (int[]){-1}, 1));
    CU_ASSERT(error_has("index_select: index -1 (entry 0) is out of range for dim 2 of size 7"));
    CU_ASSERT_PTR_NULL(op_index_select(t, x, 4, (int[]){0}, 1));
    CU_ASSERT(error_has("index_select: dim 4 is out of range"));
    tensor_free(v);
    tensor_free(x);
    tape_free(t);
}

/* ---- no-grad mode --------------------------------------------------------------- */

/* Outputs are computed but nothing is recorded, and outputs do not claim to
 * need a gradient; the same holds in grad mode when no input requires one. */
static void test_no_grad_records_nothing(void) {
    Rng r;
    rng_seed(&r, 99);
    Tensor *x = rand4(2, 3, 6, 4, &r), *c = rand4(2, 3, 6, 4, &r);
    Tape *t = tape_new();
    for (int mode = 0; mode < 2; mode++) {
        tape_reset(t);
        if (mode == 0) tape_set_grad_enabled(t, false);
        x->requires_grad = mode == 0;
        c->requires_grad = false;
        Tensor *pieces[2];
        Tensor *cat[2] = {x, c};
        Tensor *outs[] = {
            op_silu(t, x),
            op_relu(t, x),
            op_leaky_relu(t, x, 0.1f),
            op_sigmoid(t, x),
            op_maxpool2d(t, x, 3, 2, 1),
            op_avgpool2d(t, x, 2, 1, 0),
            op_upsample_nearest(t, x, 12, 8),
            op_concat(t, cat, 2, 1),
            op_slice(t, x, 1, 1, 2),
            op_split(t, x, 1, (int[]){1, 2}, 2, pieces) == 0 ? pieces[1] : NULL,
            op_reshape(t, x, 1, (int[]){144}),
            op_add(t, x, c),
            op_mul(t, x, c),
            op_scale(t, x, 3),
            op_sum(t, x),
            op_mean(t, x),
            op_softmax(t, x, 1),
            op_log_softmax(t, x, 3),
            op_bce_with_logits(t, x, c),
            op_index_select(t, x, 2, (int[]){1, 0}, 2),
        };
        int bad = 0;
        for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) bad += !outs[i] || outs[i]->requires_grad;
        CU_ASSERT_EQUAL(bad, 0);
        CU_ASSERT_EQUAL(t->n_nodes, 0);
        tape_set_grad_enabled(t, true);
    }
    tensor_free(x);
    tensor_free(c);
    tape_free(t);
}

SUITE_FN(ops) {
    CU_pSuite s = CU_add_suite("ops", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "activations: values and gradcheck", test_activations);
    CU_add_test(s, "activations: hand values, tails, kinks", test_activation_values);
    CU_add_test(s, "activations: errors", test_activation_errors);
    CU_add_test(s, "activations: large (parallel)", test_activation_large);
    CU_add_test(s, "maxpool2d: reference and gradcheck", test_maxpool);
    CU_add_test(s, "maxpool2d: by hand, ties go to the first max", test_maxpool_hand_and_ties);
    CU_add_test(s, "avgpool2d: reference, by hand, gradcheck", test_avgpool);
    CU_add_test(s, "pooling: large (parallel)", test_pool_large);
    CU_add_test(s, "pooling: errors", test_pool_errors);
    CU_add_test(s, "upsample: integer and fractional ratios", test_upsample);
    CU_add_test(s, "upsample: PyTorch's float rounding", test_upsample_float_rounding);
    CU_add_test(s, "upsample: errors", test_upsample_errors);
    CU_add_test(s, "concat along every dim", test_concat);
    CU_add_test(s, "slice", test_slice);
    CU_add_test(s, "split into unequal pieces", test_split);
    CU_add_test(s, "reshape", test_reshape);
    CU_add_test(s, "shape ops: errors", test_shape_errors);
    CU_add_test(s, "add, mul, scale", test_elementwise);
    CU_add_test(s, "add, mul, scale: errors", test_elementwise_errors);
    CU_add_test(s, "sum, mean", test_reduce);
    CU_add_test(s, "sum, mean: errors", test_reduce_errors);
    CU_add_test(s, "softmax, log_softmax along dims 0..3", test_softmax);
    CU_add_test(s, "softmax: large logits, errors", test_softmax_stable);
    CU_add_test(s, "softmax: large (parallel)", test_softmax_large);
    CU_add_test(s, "bce_with_logits", test_bce);
    CU_add_test(s, "index_select", test_index_select);
    CU_add_test(s, "no-grad mode records nothing", test_no_grad_records_nothing);
    return 0;
}
