/* op_conv2d: forward against a plain direct convolution, gradients against finite
 * differences, over awkward shapes (batch > 1, odd and non-square sizes, odd channel
 * counts, strides 1/2, kernels 1/3/5 and non-square, padding 0/1/2, groups 1/2/3/4 and
 * depthwise, with and without bias), and the error messages for bad input. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tests/testutil.h"

typedef struct {
    int N, Cin, H, W, Cout, kh, kw, stride, pad, groups, bias;
} ConvCase;

static const ConvCase cases[] = {
    {2, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1},      /* plain 3x3, odd non-square input */
    {2, 5, 9, 6, 7, 3, 3, 2, 1, 1, 0},      /* stride 2, odd channels */
    {1, 6, 8, 11, 4, 1, 1, 1, 0, 2, 1},     /* 1x1 s1 p0 (no im2col), grouped */
    {3, 4, 6, 7, 6, 1, 1, 2, 0, 1, 0},      /* 1x1 stride 2 (goes through im2col) */
    {1, 3, 4, 5, 2, 1, 1, 1, 2, 1, 1},      /* 1x1 with padding 2: a border of bias only */
    {2, 8, 10, 9, 8, 3, 3, 1, 1, 4, 1},     /* groups 4 */
    {2, 9, 12, 13, 6, 3, 3, 2, 2, 3, 1},    /* groups 3, stride 2, padding 2 */
    {2, 6, 9, 10, 6, 3, 3, 2, 1, 6, 1},     /* depthwise, stride 2 */
    {1, 4, 8, 8, 8, 5, 5, 1, 2, 4, 0},      /* depthwise with channel multiplier 2, 5x5 */
    {2, 3, 7, 9, 5, 5, 3, 1, 2, 1, 1},      /* non-square kernel 5x3 */
    {2, 4, 6, 5, 4, 1, 3, 1, 0, 2, 0},      /* 1x3 kernel, no padding, grouped */
    {1, 2, 5, 5, 3, 5, 5, 2, 0, 1, 1},      /* 5x5 unpadded, stride 2 */
    {1, 2, 3, 3, 2, 5, 5, 1, 1, 1, 1},      /* kernel exactly the padded input: 1x1 output */
    {1, 1, 4, 4, 2, 3, 3, 1, 1, 1, 1},      /* one input channel, groups 1 */
    {1, 16, 17, 15, 32, 3, 3, 1, 1, 1, 0},  /* big enough to split im2col over the pool */
    {2, 32, 40, 40, 16, 1, 1, 1, 0, 1, 1},  /* big pointwise: bias split over the pool */
    {2, 64, 20, 21, 64, 3, 3, 1, 1, 64, 1}, /* big depthwise: planes split over the pool */
    /* more than 2 MiB of columns: conv2d.c works in several blocks of output rows */
    {2, 64, 33, 47, 8, 3, 3, 1, 1, 1, 1},
    {1, 96, 70, 41, 8, 3, 3, 2, 1, 4, 0},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static const char *case_str(const ConvCase *c, char *buf, size_t len) {
    snprintf(buf, len, "x[%d,%d,%d,%d] w[%d,%d,%d,%d] s%d p%d g%d%s", c->N, c->Cin, c->H, c->W, c->Cout,
             c->Cin / c->groups, c->kh, c->kw, c->stride, c->pad, c->groups, c->bias ? " bias" : "");
    return buf;
}

static void fill_uniform(Tensor *t, Rng *r, float lo, float hi) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = rng_range(r, lo, hi);
}

/* The definition, written plainly: y[n,o,i,j] = b[o] + sum over the channels of o's group
 * and the taps of w[o,c,ky,kx] * x[n, g*cig + c, i*s - p + ky, j*s - p + kx] (0 outside). */
static void naive_conv(const ConvCase *c, const float *x, const float *w, const float *b, float *y) {
    int Ho = (c->H + 2 * c->pad - c->kh) / c->stride + 1, Wo = (c->W + 2 * c->pad - c->kw) / c->stride + 1;
    int cig = c->Cin / c->groups, cog = c->Cout / c->groups;
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->Cout; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    double acc = b ? b[o] : 0.0;
                    int grp = o / cog;
                    for (int ci = 0; ci < cig; ci++)
                        for (int ky = 0; ky < c->kh; ky++)
                            for (int kx = 0; kx < c->kw; kx++) {
                                int iy = i * c->stride - c->pad + ky, ix = j * c->stride - c->pad + kx;
                                if (iy < 0 || iy >= c->H || ix < 0 || ix >= c->W) continue;
                                float xv = x[(((size_t)n * c->Cin + grp * cig + ci) * c->H + iy) * c->W + ix];
                                float wv = w[(((size_t)o * cig + ci) * c->kh + ky) * c->kw + kx];
                                acc += (double)xv * wv;
                            }
                    y[(((size_t)n * c->Cout + o) * Ho + i) * Wo + j] = (float)acc;
                }
}

typedef struct {
    Tensor *x, *w, *b;
} ConvTensors;

static ConvTensors make_tensors(const ConvCase *c, unsigned seed) {
    Rng r;
    rng_seed(&r, seed);
    ConvTensors t;
    t.x = tensor_new4(c->N, c->Cin, c->H, c->W);
    t.w = tensor_new4(c->Cout, c->Cin / c->groups, c->kh, c->kw);
    t.b = c->bias ? tensor_new1(c->Cout) : NULL;
    fill_uniform(t.x, &r, -1, 1);
    fill_uniform(t.w, &r, -1, 1);
    if (t.b) fill_uniform(t.b, &r, -1, 1);
    return t;
}

static void free_tensors(ConvTensors *t) {
    tensor_free(t->x);
    tensor_free(t->w);
    tensor_free(t->b);
}

static void test_forward_matches_direct(void) {
    Tape *t = tape_new();
    for (size_t k = 0; k < N_CASES; k++) {
        const ConvCase *c = &cases[k];
        char name[128];
        case_str(c, name, sizeof name);
        ConvTensors in = make_tensors(c, 100 + (unsigned)k);
        in.x->requires_grad = true; /* the recording path must give the same output */
        Tensor *y = op_conv2d(t, in.x, in.w, in.b, c->stride, c->pad, c->groups);
        CU_ASSERT_NONNULL_OK(y);
        if (y) {
            int Ho = (c->H + 2 * c->pad - c->kh) / c->stride + 1, Wo = (c->W + 2 * c->pad - c->kw) / c->stride + 1;
            CU_ASSERT(y->ndim == 4 && y->shape[0] == c->N && y->shape[1] == c->Cout && y->shape[2] == Ho &&
                      y->shape[3] == Wo);
            float *want = malloc(y->numel * sizeof *want);
            naive_conv(c, in.x->data, in.w->data, in.b ? in.b->data : NULL, want);
            CU_ASSERT_EQUAL(check_close(name, y->data, want, y->numel, 1e-5, 0), 0);
            free(want);
        }
        tape_reset(t);
        free_tensors(&in);
    }
    tape_free(t);
}

typedef struct {
    int stride, pad, groups;
} ConvArgs;

static Tensor *conv_fn(Tape *t, Tensor *const *in, void *ctx) {
    const ConvArgs *a = ctx;
    return op_conv2d(t, in[0], in[1], in[2], a->stride, a->pad, a->groups);
}

static void test_gradcheck(void) {
    for (size_t k = 0; k < N_CASES; k++) {
        const ConvCase *c = &cases[k];
        char name[128];
        case_str(c, name, sizeof name);
        ConvTensors in = make_tensors(c, 200 + (unsigned)k);
        in.x->requires_grad = in.w->requires_grad = true;
        if (in.b) in.b->requires_grad = true;
        ConvArgs a = {c->stride, c->pad, c->groups};
        /* every element of small cases; an even spread of 150 per input for the big ones */
        GradcheckOpts o = {.max_elems = 150};
        Tensor *inputs[3] = {in.x, in.w, in.b};
        int rc = gradcheck(name, conv_fn, inputs, in.b ? 3 : 2, &a, &o);
        if (rc) fprintf(stderr, "\n  %s\n", gelan_last_error());
        CU_ASSERT_EQUAL(rc, 0);
        free_tensors(&in);
    }
}

/* The first layer of a network: the image needs no gradient, only the weights do. */
static void test_gradcheck_weights_only(void) {
    static const ConvCase c[] = {{2, 3, 9, 8, 4, 3, 3, 2, 1, 1, 1}, {2, 4, 5, 6, 4, 3, 3, 1, 1, 4, 1}};
    for (size_t k = 0; k < 2; k++) {
        ConvTensors in = make_tensors(&c[k], 300 + (unsigned)k);
        in.w->requires_grad = in.b->requires_grad = true;
        ConvArgs a = {c[k].stride, c[k].pad, c[k].groups};
        Tensor *inputs[3] = {in.x, in.w, in.b};
        CU_ASSERT_OK(gradcheck("conv2d weights only", conv_fn, inputs, 3, &a, NULL));
        CU_ASSERT_PTR_NULL(in.x->grad);
        free_tensors(&in);
    }
}

/* op_conv2d must fail (NULL) with exactly this message. */
static void expect_error(Tensor *x, Tensor *w, Tensor *b, int stride, int pad, int groups, const char *msg) {
    Tape *t = tape_new();
    gelan_clear_error();
    Tensor *y = op_conv2d(t, x, w, b, stride, pad, groups);
    CU_ASSERT_PTR_NULL(y);
    if (strcmp(gelan_last_error(), msg) != 0)
        fprintf(stderr, "\n  got  \"%s\"\n  want \"%s\"\n", gelan_last_error(), msg);
    CU_ASSERT_STRING_EQUAL(gelan_last_error(), msg);
    tape_free(t);
}

static void test_errors(void) {
    Tensor *x = tensor_new4(1, 128, 64, 64), *w = tensor_new4(64, 256, 1, 1);
    expect_error(x, w, NULL, 1, 0, 1,
                 "conv2d: input has 128 channels, weight expects 256 (weight [64,256,1,1], input [1,128,64,64])");
    tensor_free(x);
    tensor_free(w);

    x = tensor_new4(2, 6, 8, 8);
    w = tensor_new4(8, 2, 3, 3);
    expect_error(x, w, NULL, 1, 1, 4, "conv2d: groups 4 does not divide the 6 input channels (input [2,6,8,8])");
    tensor_free(w);
    w = tensor_new4(7, 2, 3, 3);
    expect_error(x, w, NULL, 1, 1, 3, "conv2d: groups 3 does not divide the 7 output channels (weight [7,2,3,3])");
    tensor_free(w);
    w = tensor_new4(6, 3, 3, 3); /* 3 input channels per group x 3 groups = 9 != 6 */
    expect_error(x, w, NULL, 1, 1, 3,
                 "conv2d: input has 6 channels, weight expects 9 (weight [6,3,3,3], input [2,6,8,8])");
    tensor_free(w);
    w = tensor_new4(4, 6, 3, 3);
    Tensor *b = tensor_new1(5);
    expect_error(x, w, b, 1, 1, 1,
                 "conv2d: bias has 5 elements, weight has 4 output channels (bias [5], weight [4,6,3,3])");
    expect_error(x, w, NULL, 0, 1, 1, "conv2d: stride must be >= 1, got 0");
    expect_error(x, w, NULL, 1, -1, 1, "conv2d: padding must be >= 0, got -1");
    expect_error(x, w, NULL, 1, 1, 0, "conv2d: groups must be >= 1, got 0");
    tensor_free(b);
    tensor_free(w);
    tensor_free(x);

    x = tensor_new4(1, 2, 3, 3);
    w = tensor_new4(2, 2, 5, 5);
    expect_error(x, w, NULL, 1, 0, 1,
                 "conv2d: kernel 5x5 is larger than the padded input 3x3 (pad 0, weight [2,2,5,5], input [1,2,3,3])");
    tensor_free(w);
    int s3[3] = {2, 3, 3}, s2[2] = {4, 2};
    Tensor *x3 = tensor_new(3, s3), *w2 = tensor_new(2, s2);
    w = tensor_new4(2, 2, 3, 3);
    expect_error(x3, w, NULL, 1, 1, 1, "conv2d: input must be 4-D [N,C,H,W], got [2,3,3]");
    expect_error(x, w2, NULL, 1, 1, 1, "conv2d: weight must be 4-D [Cout,Cin/groups,kh,kw], got [4,2]");
    tensor_free(x3);
    tensor_free(w2);
    tensor_free(w);
    tensor_free(x);
}

SUITE_FN(conv2d) {
    CU_pSuite s = CU_add_suite("conv2d", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "forward matches a direct convolution", test_forward_matches_direct);
    CU_add_test(s, "gradcheck x, w, b over awkward shapes", test_gradcheck);
    CU_add_test(s, "gradcheck with an input that needs no grad", test_gradcheck_weights_only);
    CU_add_test(s, "errors name the op and the shapes", test_errors);
    return 0;
}
