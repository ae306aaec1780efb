/* The tape, arena, pool and tensor basics. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "tensor/arena.h"
#include "tensor/error.h"
#include "tensor/pool.h"
#include "tensor/rng.h"
#include "tests/testutil.h"

static void test_arena_reuse(void) {
    Arena a;
    arena_init(&a, 1024);
    void *p1 = arena_alloc(&a, 100);
    void *p2 = arena_alloc(&a, 5000); /* bigger than a block */
    CU_ASSERT_PTR_NOT_NULL(p1);
    CU_ASSERT_PTR_NOT_NULL(p2);
    CU_ASSERT_EQUAL((size_t)p1 % 64, 0);
    CU_ASSERT_EQUAL((size_t)p2 % 64, 0);
    memset(p2, 1, 5000);
    size_t peak = a.peak;
    arena_reset(&a);
    CU_ASSERT_EQUAL(a.used, 0);
    void *q1 = arena_alloc(&a, 100);
    CU_ASSERT_PTR_EQUAL(q1, p1); /* the first block is reused */
    arena_alloc(&a, 5000);
    CU_ASSERT_EQUAL(a.peak, peak);
    arena_destroy(&a);
}

static void sum_range(void *ctx, size_t b, size_t e) {
    int *v = ctx;
    for (size_t i = b; i < e; i++) v[i] = (int)i * 2;
}

static void test_pool_covers_range(void) {
    int v[1001];
    memset(v, 0xff, sizeof v);
    parallel_for(1001, 1, sum_range, v);
    int ok = 1;
    for (int i = 0; i < 1001; i++) ok &= v[i] == 2 * i;
    CU_ASSERT(ok);
    CU_ASSERT(pool_threads() >= 1);
}

/* y = x*x via a hand-written op, to test the tape mechanics on their own. */
static int square_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (gx)
        for (size_t i = 0; i < n->out->numel; i++) gx[i] += 2 * n->in[0]->data[i] * n->out->grad[i];
    return 0;
}

static Tensor *square(Tape *t, Tensor *x) {
    Tensor *y = tape_tensor(t, x->ndim, x->shape);
    if (!y) return NULL;
    for (size_t i = 0; i < x->numel; i++) y->data[i] = x->data[i] * x->data[i];
    tape_record(t, "square", y, &x, 1, square_backward, 0, NULL);
    return y;
}

static void test_tape_accumulates_and_resets(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new1(3);
    x->requires_grad = true;
    x->data[0] = 1, x->data[1] = -2, x->data[2] = 3;
    float ones[3] = {1, 1, 1};
    /* y = square(square(x)) = x^4, dy/dx = 4x^3 */
    Tensor *y = square(t, square(t, x));
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    CU_ASSERT_DOUBLE_EQUAL(x->grad[1], -32.0, 1e-5);
    tape_reset(t);
    /* a second pass accumulates into the parameter's grad */
    y = square(t, x);
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    CU_ASSERT_DOUBLE_EQUAL(x->grad[2], 108.0 + 6.0, 1e-4);
    tape_reset(t);
    /* no-grad mode records nothing */
    tape_set_grad_enabled(t, false);
    y = square(t, x);
    CU_ASSERT_EQUAL(t->n_nodes, 0);
    CU_ASSERT_FALSE(y->requires_grad);
    CU_ASSERT_NOT_EQUAL(tape_backward_from(t, y, ones), 0);
    tape_set_grad_enabled(t, true);
    /* backward needs a one-element loss */
    y = square(t, x);
    CU_ASSERT_NOT_EQUAL(tape_backward(t, y), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "[3]"));
    tensor_free(x);
    tape_free(t);
}

static Tensor *square_fn(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    return square(t, square(t, in[0]));
}

static int broken_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (gx) /* forgets the factor 2 */
        for (size_t i = 0; i < n->out->numel; i++) gx[i] += n->in[0]->data[i] * n->out->grad[i];
    return 0;
}

static Tensor *broken_fn(Tape *t, Tensor *const *in, void *ctx) {
    (void)ctx;
    Tensor *x = in[0];
    Tensor *y = tape_tensor(t, x->ndim, x->shape);
    for (size_t i = 0; i < x->numel; i++) y->data[i] = x->data[i] * x->data[i];
    tape_record(t, "broken_square", y, &x, 1, broken_backward, 0, NULL);
    return y;
}

static void test_gradcheck_catches_broken_backward(void) {
    int shape[2] = {3, 5};
    Tensor *x = tensor_new(2, shape);
    Rng r;
    rng_seed(&r, 7);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = rng_range(&r, -2, 2);
    x->requires_grad = true;
    CU_ASSERT_OK(gradcheck("square", square_fn, &x, 1, NULL, NULL));
    CU_ASSERT_NOT_EQUAL(gradcheck("broken", broken_fn, &x, 1, NULL, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "analytic"));
    tensor_free(x);
}

static void test_profile_counts_ops(void) {
    Tape *t = tape_new();
    Tensor *x = tensor_new1(4);
    x->requires_grad = true;
    float ones[4] = {1, 1, 1, 1};
    tape_profile(t, true);
    tape_profile_mark(t);
    Tensor *y = square(t, square(t, x));
    CU_ASSERT_OK(tape_backward_from(t, y, ones));
    const TapeOpStat *st;
    int n = tape_profile_stats(t, &st);
    CU_ASSERT_EQUAL(n, 1);
    if (n == 1) {
        CU_ASSERT_STRING_EQUAL(st[0].op, "square");
        CU_ASSERT_EQUAL(st[0].fwd_n, 2);
        CU_ASSERT_EQUAL(st[0].bwd_n, 2);
        CU_ASSERT(st[0].fwd_s >= 0 && st[0].bwd_s >= 0);
    }
    tensor_free(x);
    tape_free(t);
}

static void test_error_messages(void) {
    int bad[2] = {3, -1};
    CU_ASSERT_PTR_NULL(tensor_new(2, bad));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "negative"));
    gelan_error("inner %d", 5);
    gelan_error_prefix("layer %d", 3);
    CU_ASSERT_STRING_EQUAL(gelan_last_error(), "layer 3: inner 5");
}

SUITE_FN(tape) {
    CU_pSuite s = CU_add_suite("tape", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "arena reuses blocks after reset", test_arena_reuse);
    CU_add_test(s, "parallel_for covers the range once", test_pool_covers_range);
    CU_add_test(s, "tape accumulates, resets, no-grad", test_tape_accumulates_and_resets);
    CU_add_test(s, "gradcheck catches a broken backward", test_gradcheck_catches_broken_backward);
    CU_add_test(s, "error messages", test_error_messages);
    CU_add_test(s, "profiling counts forward and backward per op", test_profile_counts_ops);
    return 0;
}
