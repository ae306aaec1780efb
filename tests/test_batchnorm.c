/* op_batchnorm2d: training and eval forward against a double-precision reference, the
 * running-statistic update (unbiased variance, as PyTorch), numerics on tiny and on
 * offset activations, gradients against finite differences, and the error messages. */
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

static void fill_uniform(Tensor *t, Rng *r, float lo, float hi) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = rng_range(r, lo, hi);
}

/* y = gamma * (x - mean) / sqrt(var + eps) + beta with the batch statistics (training, biased
 * variance) or the given running ones, in double. */
static void naive_bn(const Tensor *x, const float *gamma, const float *beta, const float *rmean, const float *rvar,
                     double eps, int training, float *y) {
    int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    for (int c = 0; c < C; c++) {
        double mean = 0, var = 0, m = (double)N * HW;
        if (training) {
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) mean += x->data[((size_t)n * C + c) * HW + i];
            mean /= m;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) {
                    double d = x->data[((size_t)n * C + c) * HW + i] - mean;
                    var += d * d;
                }
            var /= m;
        } else {
            mean = rmean[c];
            var = rvar[c];
        }
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                size_t k = ((size_t)n * C + c) * HW + i;
                y[k] = (float)(gamma[c] * (x->data[k] - mean) / sqrt(var + eps) + beta[c]);
            }
    }
}

typedef struct {
    Tensor *x, *gamma, *beta, *rmean, *rvar;
} BnTensors;

static BnTensors make_bn(int N, int C, int H, int W, unsigned seed) {
    Rng r;
    rng_seed(&r, seed);
    BnTensors t = {tensor_new4(N, C, H, W), tensor_new1(C), tensor_new1(C), tensor_new1(C), tensor_new1(C)};
    fill_uniform(t.x, &r, -2, 3);
    fill_uniform(t.gamma, &r, 0.5f, 1.5f);
    fill_uniform(t.beta, &r, -0.5f, 0.5f);
    fill_uniform(t.rmean, &r, -0.3f, 0.3f);
    fill_uniform(t.rvar, &r, 0.5f, 2.0f);
    return t;
}

static void free_bn(BnTensors *t) {
    tensor_free(t->x);
    tensor_free(t->gamma);
    tensor_free(t->beta);
    tensor_free(t->rmean);
    tensor_free(t->rvar);
}

static const int shapes[][4] = {{2, 3, 5, 7}, {1, 5, 3, 3}, {4, 2, 1, 1}, {3, 7, 4, 5}, {2, 8, 64, 64}};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

static void test_forward_train_and_eval(void) {
    Tape *t = tape_new();
    for (size_t k = 0; k < N_SHAPES; k++) {
        const int *s = shapes[k];
        BnTensors b = make_bn(s[0], s[1], s[2], s[3], 10 + (unsigned)k);
        float *want = malloc(b.x->numel * sizeof *want);
        for (int training = 0; training <= 1; training++) {
            Tensor *rm0 = tensor_clone(b.rmean), *rv0 = tensor_clone(b.rvar);
            Tensor *y = op_batchnorm2d(t, b.x, b.gamma, b.beta, b.rmean, b.rvar, 1e-3f, 0.03f, training);
            CU_ASSERT_NONNULL_OK(y);
            if (y) {
                naive_bn(b.x, b.gamma->data, b.beta->data, rm0->data, rv0->data, 1e-3, training, want);
                char name[64];
                snprintf(name, sizeof name, "bn %s [%d,%d,%d,%d]", training ? "train" : "eval", s[0], s[1], s[2], s[3]);
                CU_ASSERT_EQUAL(check_close(name, y->data, want, y->numel, 1e-5, 1e-6), 0);
            }
            if (!training) { /* eval leaves the running statistics alone */
                CU_ASSERT_EQUAL(memcmp(rm0->data, b.rmean->data, rm0->numel * sizeof(float)), 0);
                CU_ASSERT_EQUAL(memcmp(rv0->data, b.rvar->data, rv0->numel * sizeof(float)), 0);
            }
            tensor_free(rm0);
            tensor_free(rv0);
            tape_reset(t);
        }
        free(want);
        free_bn(&b);
    }
    tape_free(t);
}

/* Worked by hand. Channel 0 holds 1,2,3,6: mean 3, squared deviations 4+1+0+9 = 14, biased
 * variance 14/4 = 3.5, unbiased 14/3. Channel 1 holds -1,-1,1,1: mean 0, biased variance 1,
 * unbiased 4/3. With momentum 0.1 and running (mean, var) = (0, 1) and (0.5, 2):
 *   channel 0: 0.9*0 + 0.1*3 = 0.3,    0.9*1 + 0.1*14/3 = 1.366667
 *   channel 1: 0.9*0.5 + 0 = 0.45,     0.9*2 + 0.1*4/3 = 1.933333 */
static void test_running_stats_by_hand(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new4(2, 2, 1, 2), *gamma = tensor_new1(2), *beta = tensor_new1(2);
    Tensor *rm = tensor_new1(2), *rv = tensor_new1(2);
    const float xv[8] = {1, 2, -1, -1, 3, 6, 1, 1}; /* [n][c][w] */
    memcpy(x->data, xv, sizeof xv);
    tensor_fill(gamma, 1);
    rm->data[0] = 0, rm->data[1] = 0.5f;
    rv->data[0] = 1, rv->data[1] = 2;
    Tensor *y = op_batchnorm2d(t, x, gamma, beta, rm, rv, 0.f, 0.1f, true);
    CU_ASSERT_NONNULL_OK(y);
    CU_ASSERT_DOUBLE_EQUAL(rm->data[0], 0.3, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(rv->data[0], 0.9 + 1.4 / 3, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(rm->data[1], 0.45, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(rv->data[1], 1.8 + 0.4 / 3, 1e-6);
    /* y of channel 0 = (x - 3)/sqrt(3.5); of channel 1 = x / 1 */
    if (y) {
        CU_ASSERT_DOUBLE_EQUAL(y->data[0], -2 / sqrt(3.5), 1e-6);
        CU_ASSERT_DOUBLE_EQUAL(y->data[5], 3 / sqrt(3.5), 1e-6);
        CU_ASSERT_DOUBLE_EQUAL(y->data[2], -1.0, 1e-6);
        CU_ASSERT_DOUBLE_EQUAL(y->data[7], 1.0, 1e-6);
    }
    /* no-grad training forwards (calibration) update the statistics too */
    tape_reset(t);
    tape_set_grad_enabled(t, false);
    y = op_batchnorm2d(t, x, gamma, beta, rm, rv, 0.f, 0.1f, true);
    CU_ASSERT_NONNULL_OK(y);
    CU_ASSERT_DOUBLE_EQUAL(rm->data[0], 0.9 * 0.3 + 0.3, 1e-6);
    /* no running statistics: training still works, nothing to update */
    y = op_batchnorm2d(t, x, gamma, beta, NULL, NULL, 0.f, 0.1f, true);
    CU_ASSERT_NONNULL_OK(y); /* (the macro evaluates its argument twice) */
    tensor_free(x);
    tensor_free(gamma);
    tensor_free(beta);
    tensor_free(rm);
    tensor_free(rv);
    tape_free(t);
}

/* Numerics: activations of ~1e-9 (a fresh YOLOv9 model) and activations far from zero
 * (|mean| = 100 >> std = 1e-3, where a float E[x^2]-E[x]^2 gives garbage). */
static void test_numerics(void) {
    Tape *t = tape_new();
    const struct {
        float offset, spread, eps;
    } cases[] = {{3e-9f, 1e-9f, 1e-3f}, {3e-9f, 1e-9f, 1e-20f}, {100.f, 1e-3f, 1e-10f}};
    for (size_t k = 0; k < 3; k++) {
        BnTensors b = make_bn(2, 3, 9, 11, 40 + (unsigned)k);
        for (size_t i = 0; i < b.x->numel; i++) b.x->data[i] = cases[k].offset + cases[k].spread * b.x->data[i];
        Tensor *y = op_batchnorm2d(t, b.x, b.gamma, b.beta, b.rmean, b.rvar, cases[k].eps, 0.03f, true);
        CU_ASSERT_NONNULL_OK(y);
        float *want = malloc(b.x->numel * sizeof *want);
        naive_bn(b.x, b.gamma->data, b.beta->data, NULL, NULL, cases[k].eps, 1, want);
        char name[64];
        snprintf(name, sizeof name, "bn numerics case %zu", k);
        if (y) CU_ASSERT_EQUAL(check_close(name, y->data, want, y->numel, 2e-5, 0), 0);
        free(want);
        tape_reset(t);
        free_bn(&b);
    }
    tape_free(t);
}

typedef struct {
    Tensor *rmean, *rvar;
    bool training;
} BnArgs;

static Tensor *bn_fn(Tape *t, Tensor *const *in, void *ctx) {
    const BnArgs *a = ctx;
    return op_batchnorm2d(t, in[0], in[1], in[2], a->rmean, a->rvar, 1e-3f, 0.03f, a->training);
}

static void test_gradcheck(void) {
    for (size_t k = 0; k < N_SHAPES; k++) {
        const int *s = shapes[k];
        for (int training = 0; training <= 1; training++) {
            BnTensors b = make_bn(s[0], s[1], s[2], s[3], 20 + (unsigned)k);
            b.x->requires_grad = b.gamma->requires_grad = b.beta->requires_grad = true;
            /* gradcheck runs many training forwards: give it throwaway running statistics */
            BnArgs a = {b.rmean, b.rvar, training};
            GradcheckOpts o = {.max_elems = 200};
            char name[64];
            snprintf(name, sizeof name, "bn %s [%d,%d,%d,%d]", training ? "train" : "eval", s[0], s[1], s[2], s[3]);
            Tensor *inputs[3] = {b.x, b.gamma, b.beta};
            int rc = gradcheck(name, bn_fn, inputs, 3, &a, &o);
            if (rc) fprintf(stderr, "\n  %s\n", gelan_last_error());
            CU_ASSERT_EQUAL(rc, 0);
            free_bn(&b);
        }
    }
}

/* Frozen input (x needs no grad): only gamma and beta get gradients. */
static void test_gradcheck_affine_only(void) {
    BnTensors b = make_bn(2, 3, 4, 5, 77);
    b.gamma->requires_grad = b.beta->requires_grad = true;
    BnArgs a = {b.rmean, b.rvar, true};
    Tensor *inputs[3] = {b.x, b.gamma, b.beta};
    CU_ASSERT_OK(gradcheck("bn gamma/beta", bn_fn, inputs, 3, &a, NULL));
    CU_ASSERT_PTR_NULL(b.x->grad);
    free_bn(&b);
}

static void expect_error(Tensor *x, Tensor *gamma, Tensor *beta, Tensor *rm, Tensor *rv, bool training,
                         const char *msg) {
    Tape *t = tape_new();
    gelan_clear_error();
    CU_ASSERT_PTR_NULL(op_batchnorm2d(t, x, gamma, beta, rm, rv, 1e-3f, 0.03f, training));
    if (strcmp(gelan_last_error(), msg) != 0)
        fprintf(stderr, "\n  got  \"%s\"\n  want \"%s\"\n", gelan_last_error(), msg);
    CU_ASSERT_STRING_EQUAL(gelan_last_error(), msg);
    tape_free(t);
}

static void test_errors(void) {
    BnTensors b = make_bn(2, 4, 3, 3, 5);
    Tensor *v3 = tensor_new1(3);
    expect_error(b.x, v3, b.beta, NULL, NULL, true,
                 "batchnorm2d: gamma has 3 elements, input has 4 channels (gamma [3], input [2,4,3,3])");
    expect_error(b.x, b.gamma, v3, NULL, NULL, true,
                 "batchnorm2d: beta has 3 elements, input has 4 channels (beta [3], input [2,4,3,3])");
    expect_error(b.x, b.gamma, b.beta, b.rmean, v3, false,
                 "batchnorm2d: running_var has 3 elements, input has 4 channels (running_var [3], input [2,4,3,3])");
    expect_error(b.x, b.gamma, b.beta, NULL, NULL, false,
                 "batchnorm2d: eval mode needs running_mean and running_var (input [2,4,3,3])");
    expect_error(b.x, b.gamma, b.beta, b.rmean, NULL, true,
                 "batchnorm2d: running_mean and running_var must both be given or both be NULL");
    Tensor *one = tensor_new4(1, 4, 1, 1);
    expect_error(one, b.gamma, b.beta, b.rmean, b.rvar, true,
                 "batchnorm2d: training needs more than one value per channel, got input [1,4,1,1]");
    int s2[2] = {2, 4};
    Tensor *x2 = tensor_new(2, s2);
    expect_error(x2, b.gamma, b.beta, NULL, NULL, true, "batchnorm2d: input must be 4-D [N,C,H,W], got [2,4]");
    tensor_free(x2);
    tensor_free(one);
    tensor_free(v3);
    free_bn(&b);
}

SUITE_FN(batchnorm) {
    CU_pSuite s = CU_add_suite("batchnorm", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "forward, training and eval", test_forward_train_and_eval);
    CU_add_test(s, "running statistics worked by hand", test_running_stats_by_hand);
    CU_add_test(s, "tiny and offset activations", test_numerics);
    CU_add_test(s, "gradcheck x, gamma, beta (train and eval)", test_gradcheck);
    CU_add_test(s, "gradcheck gamma, beta only", test_gradcheck_affine_only);
    CU_add_test(s, "errors name the op and the shapes", test_errors);
    return 0;
}
