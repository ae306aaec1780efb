/* The optimizer stack against values worked out by hand from the PyTorch and
 * train_dual.py formulas (each expected number is derived in the comment next
 * to it; none comes from the code under test). */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "optim/optim.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tests/testutil.h"

#define BIG 40000 /* larger than one internal chunk, so chunked updates are exercised */

static Tensor *param1(int n, const float *v, bool trainable) {
    Tensor *t = tensor_new1(n);
    for (int i = 0; i < n; i++) t->data[i] = v ? v[i] : 0.f;
    t->requires_grad = trainable;
    tensor_grad(t, NULL);
    return t;
}

static void set_grad(Tensor *t, const float *g) {
    for (size_t i = 0; i < t->numel; i++) t->grad[i] = g[i];
}

/* ---- SGD + Nesterov + weight decay + warmup on a toy model ------------------------ */

/* Hyp: the official defaults (lr0 0.01, lrf 0.01, momentum 0.937, weight_decay
 * 5e-4, warmup_epochs 3, warmup_momentum 0.8, warmup_bias_lr 0.1), linear lf,
 * 10 epochs of 20 iterations: nw = max(round(3 * 20), 100) = 100.
 * Batch 24: accumulate = round(64/24) = 3, weight decay 5e-4 * 24 * 3 / 64 = 5.625e-4.
 *
 * The three steps run at ni = 0, ni = 1 (epoch 0) and ni = 120 (epoch 6, i = 0):
 *   ni = 0:   lr(w, bn) = 0, lr(b) = 0.1, momentum 0.8
 *   ni = 1:   target lr0 * lf(0) = 0.01; lr(w, bn) = 0.01 / 100 = 1e-4,
 *             lr(b) = 0.1 + (0.01 - 0.1) / 100 = 0.0991, momentum = 0.8 + 0.137 / 100 = 0.80137
 *   ni = 120: past warmup; the official LambdaLR runs one epoch behind (scheduler.last_epoch =
 *             start_epoch - 1 after its constructor already stepped), so epoch 6 trains with
 *             lf(5) = 0.5 * 0.99 + 0.01 = 0.505: lr = 0.00505, momentum 0.937
 * SGD: d = g + wd p; buf = d (first) or m buf + d; d = d + m buf; p -= lr d.
 *
 * w[0] = 1, grads 0.5, -0.1, 0.2 (decay 5.625e-4):
 *   s0: d = 0.5005625 = buf; lr 0, w stays 1
 *   s1: d = -0.1 + 5.625e-4 = -0.0994375; buf = 0.80137 * 0.5005625 - 0.0994375 = 0.3016982706;
 *       d = -0.0994375 + 0.80137 * 0.3016982706 = 0.1423344; w = 1 - 1e-4 * 0.1423344 = 0.9999857666
 *   s2: d = 0.2 + 5.625e-4 * 0.9999857666 = 0.2005624920; buf = 0.937 * 0.3016982706 + d = 0.4832537716;
 *       d = 0.2005624920 + 0.937 * 0.4832537716 = 0.6533712760; w = 0.9999857666 - 0.00505 * d = 0.9966862417
 * w[1] = -2, grads 0.25, 0.4, -0.3:
 *   s0: buf = 0.25 - 0.001125 = 0.248875
 *   s1: d = 0.4 - 0.001125 = 0.398875; buf = 0.80137 * 0.248875 + d = 0.5983159587;
 *       d = 0.398875 + 0.80137 * 0.5983159587 = 0.8783475; w = -2 - 1e-4 * d = -2.000087835
 *   s2: d = -0.3 + 5.625e-4 * -2.000087835 = -0.3011250494; buf = 0.937 * 0.5983159587 + d = 0.2594970039;
 *       d = -0.3011250494 + 0.937 * 0.2594970039 = -0.0579763567; w = -2.000087835 + 0.00505 * 0.0579763567
 *       = -1.999795054
 * bn = 0.5 (no decay), grads -1, 0.5, 0.25:
 *   s0: buf = -1, lr 0;  s1: buf = -0.80137 + 0.5 = -0.30137; d = 0.5 + 0.80137 * -0.30137 = 0.25849112;
 *       bn = 0.5 - 1e-4 * 0.25849112 = 0.4999741509
 *   s2: buf = 0.937 * -0.30137 + 0.25 = -0.03238369; d = 0.25 - 0.937 * 0.03238369 = 0.21965648;
 *       bn = 0.4999741509 - 0.00505 * 0.21965648 = 0.4988648857
 * b = 0.2 (no decay), grads 0.3, 0.3, -0.6:
 *   s0: buf = 0.3; d = 0.3 + 0.8 * 0.3 = 0.54; b = 0.2 - 0.1 * 0.54 = 0.146
 *   s1: buf = 0.80137 * 0.3 + 0.3 = 0.540411; d = 0.3 + 0.80137 * 0.540411 = 0.73306916;
 *       b = 0.146 - 0.0991 * 0.73306916 = 0.07335284594
 *   s2: buf = 0.937 * 0.540411 - 0.6 = -0.093634893; d = -0.6 - 0.937 * 0.093634893 = -0.68773590;
 *       b = 0.07335284594 + 0.00505 * 0.68773590 = 0.07682591221 */
static void test_sgd_nesterov_warmup(void) {
    const float w0[2] = {1.f, -2.f}, bn0 = 0.5f, b0 = 0.2f, frozen0[2] = {7.f, 8.f};
    Tensor *w = param1(2, w0, true), *bn = param1(1, &bn0, true), *b = param1(1, &b0, true);
    Tensor *big = param1(BIG, NULL, true), *frozen = param1(2, frozen0, false);
    tensor_fill(big, 1.f); /* every element follows w[0] */
    OptimParam ps[] = {{"model.0.conv.weight", w, PARAM_WEIGHT_DECAY},
                       {"model.0.bn.weight", bn, PARAM_BN_WEIGHT},
                       {"model.0.bn.bias", b, PARAM_BIAS},
                       {"model.1.conv.weight", big, PARAM_WEIGHT_DECAY},
                       {"model.22.dfl.conv.weight", frozen, PARAM_WEIGHT_DECAY}};
    OptimHyp hyp = optim_hyp_default();
    CU_ASSERT_DOUBLE_EQUAL(optim_scaled_weight_decay(hyp.weight_decay, 24), 5.625e-4, 1e-15);
    OptimConfig cfg = optim_config(OPTIM_SGD, hyp.lr0, hyp.momentum, optim_scaled_weight_decay(hyp.weight_decay, 24));
    CU_ASSERT(cfg.nesterov);
    Optimizer *o = optim_new(&cfg, ps, 5);
    CU_ASSERT_NONNULL_OK(o);
    LrSchedule s;
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_LINEAR, 10, 20));
    CU_ASSERT_EQUAL(s.nw, 100);

    const float gw[3][2] = {{0.5f, 0.25f}, {-0.1f, 0.4f}, {0.2f, -0.3f}};
    const float gbn[3] = {-1.f, 0.5f, 0.25f}, gb[3] = {0.3f, 0.3f, -0.6f};
    const int epoch[3] = {0, 0, 6}, iter[3] = {0, 1, 0};
    for (int k = 0; k < 3; k++) {
        schedule_apply(&s, o, epoch[k], iter[k]);
        set_grad(w, gw[k]);
        set_grad(bn, &gbn[k]);
        set_grad(b, &gb[k]);
        for (int i = 0; i < BIG; i++) big->grad[i] = gw[k][0];
        frozen->grad[0] = frozen->grad[1] = 100.f; /* no requires_grad: must be ignored */
        CU_ASSERT_OK(optim_step(o));
        if (k == 0) { /* lr 0 for the weights in the first warmup step, 0.1 for the bias */
            CU_ASSERT_EQUAL(w->data[0], 1.f);
            CU_ASSERT_DOUBLE_EQUAL(b->data[0], 0.146, 1e-7);
        }
    }
    const float want_w[2] = {0.9966862417f, -1.999795054f};
    CU_ASSERT_OK(check_close("w", w->data, want_w, 2, 1e-6, 1e-7));
    const float want_bn = 0.4988648857f, want_b = 0.07682591221f;
    CU_ASSERT_OK(check_close("bn", bn->data, &want_bn, 1, 1e-6, 1e-7));
    CU_ASSERT_OK(check_close("b", b->data, &want_b, 1, 1e-6, 1e-7));
    int same = 1;
    for (int i = 0; i < BIG; i++) same &= big->data[i] == w->data[0];
    CU_ASSERT(same);
    CU_ASSERT_EQUAL(frozen->data[0], 7.f);
    CU_ASSERT_EQUAL(frozen->data[1], 8.f);
    const float want_buf[2] = {0.4832537716f, 0.2594970039f};
    CU_ASSERT_OK(check_close("buf", o->state[0].buf[0]->data, want_buf, 2, 1e-6, 1e-7));
    CU_ASSERT_FALSE(o->state[4].has_state);
    CU_ASSERT_EQUAL(optim_state_count(o), 4); /* one momentum_buffer per stepped parameter */

    optim_zero_grad(o);
    CU_ASSERT_EQUAL(w->grad[0], 0.f);
    CU_ASSERT_EQUAL(big->grad[BIG - 1], 0.f);
    optim_free(o);
    tensor_free(w), tensor_free(bn), tensor_free(b), tensor_free(big), tensor_free(frozen);
}

/* torch keeps momentum_buffer = None after a step with momentum 0, so the next
 * step with momentum starts a new buffer. lr 0.1, no decay, p = 1, grad 1:
 *   m 0.9: buf = 1, d = 1 + 0.9 = 1.9, p = 0.81
 *   m 0:   d = 1, p = 0.71 (buffer dropped)
 *   m 0.9: buf = 1 again, d = 1.9, p = 0.52 (a kept buffer would give 1.9 and p = 0.439) */
static void test_sgd_momentum_zero_restarts(void) {
    const float one = 1.f;
    Tensor *t = param1(1, &one, true);
    OptimParam p = {"w", t, PARAM_WEIGHT_DECAY};
    OptimConfig cfg = optim_config(OPTIM_SGD, 0.1, 0.9, 0.0);
    Optimizer *o = optim_new(&cfg, &p, 1);
    CU_ASSERT_NONNULL_OK(o);
    if (!o) return;
    const double m[3] = {0.9, 0.0, 0.9}, want[3] = {0.81, 0.71, 0.52};
    for (int k = 0; k < 3; k++) {
        o->group[PARAM_WEIGHT_DECAY].momentum = m[k];
        t->grad[0] = 1.f;
        CU_ASSERT_OK(optim_step(o));
        CU_ASSERT_DOUBLE_EQUAL(t->data[0], want[k], 1e-6);
    }
    optim_free(o);
    tensor_free(t);
}

/* ---- warmup interpolation and LR factors ----------------------------------------- */

/* 10 epochs x 50 iterations, warmup 3 epochs: nw = max(150, 100) = 150. lf(e) = (1 - e/10) * 0.99 + 0.01.
 *   ni = 0   (e0 i0):  bias 0.1, others 0, momentum 0.8
 *   ni = 75  (e1 i25): target 0.01 * lf(1) = 0.00901; others 0.00901 * 75/150 = 0.004505;
 *                      bias 0.1 + (0.00901 - 0.1) / 2 = 0.054505; momentum 0.8 + 0.137 / 2 = 0.8685
 *   ni = 149 (e2 i49): target 0.01 * lf(2) = 0.00802; others 0.00802 * 149/150 = 0.0079665333;
 *                      bias 0.1 - 0.09198 * 149/150 = 0.0086332; momentum 0.8 + 0.137 * 149/150 = 0.9360866667
 *   ni = 150 (e3 i0):  end of warmup, all 0.01 * lf(3) = 0.00703, momentum 0.937
 *   ni = 160 (e3 i10): the warmup's final value stays for the rest of its epoch: 0.00703
 *   ni = 200 (e4 i0):  LambdaLR, one epoch behind (see test_sgd_nesterov_warmup): lf(3), 0.00703
 *   ni = 410 (e8 i10): 0.01 * lf(7) = 0.01 * (0.3 * 0.99 + 0.01) = 0.00307, momentum 0.937 */
static void test_warmup_schedule(void) {
    OptimHyp hyp = optim_hyp_default();
    LrSchedule s;
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_LINEAR, 10, 50));
    CU_ASSERT_EQUAL(s.nw, 150);
    struct {
        int epoch, i;
        double bias, other, momentum;
    } want[] = {{0, 0, 0.1, 0.0, 0.8},
                {1, 25, 0.054505, 0.004505, 0.8685},
                {2, 49, 0.0086332, 0.0079665333333, 0.9360866666667},
                {3, 0, 0.00703, 0.00703, 0.937},
                {3, 10, 0.00703, 0.00703, 0.937},
                {4, 0, 0.00703, 0.00703, 0.937},
                {8, 10, 0.00307, 0.00307, 0.937}};
    Tensor *t = param1(1, NULL, true);
    OptimParam p = {"x", t, PARAM_BIAS};
    OptimConfig sgd = optim_config(OPTIM_SGD, hyp.lr0, hyp.momentum, hyp.weight_decay);
    OptimConfig adamw = optim_config(OPTIM_ADAMW, hyp.lr0, hyp.momentum, hyp.weight_decay);
    Optimizer *o = optim_new(&sgd, &p, 1), *a = optim_new(&adamw, &p, 1);
    CU_ASSERT_NONNULL_OK(o);
    CU_ASSERT_NONNULL_OK(a);
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        CU_ASSERT_DOUBLE_EQUAL(schedule_lr(&s, PARAM_BIAS, want[k].epoch, want[k].i), want[k].bias, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(schedule_lr(&s, PARAM_WEIGHT_DECAY, want[k].epoch, want[k].i), want[k].other, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(schedule_lr(&s, PARAM_BN_WEIGHT, want[k].epoch, want[k].i), want[k].other, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(schedule_momentum(&s, want[k].epoch, want[k].i), want[k].momentum, 1e-12);
        schedule_apply(&s, o, want[k].epoch, want[k].i);
        CU_ASSERT_DOUBLE_EQUAL(o->group[PARAM_BIAS].lr, want[k].bias, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(o->group[PARAM_BN_WEIGHT].lr, want[k].other, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(o->group[PARAM_WEIGHT_DECAY].momentum, want[k].momentum, 1e-12);
        /* torch's Adam groups have no 'momentum': beta1 stays */
        schedule_apply(&s, a, want[k].epoch, want[k].i);
        CU_ASSERT_DOUBLE_EQUAL(a->group[PARAM_BIAS].lr, want[k].bias, 1e-12);
        CU_ASSERT_DOUBLE_EQUAL(a->group[PARAM_WEIGHT_DECAY].momentum, 0.937, 0);
    }
    /* the targets scale the group's initial_lr (x['initial_lr']), here 0.001: e4 -> 0.001 * lf(3), and the
     * bias warmup still starts at 0.1: e1 i25 -> 0.1 + (0.001 * 0.901 - 0.1) / 2 = 0.0504505 */
    a->group[PARAM_BIAS].initial_lr = 0.001;
    schedule_apply(&s, a, 4, 0);
    CU_ASSERT_DOUBLE_EQUAL(a->group[PARAM_BIAS].lr, 0.000703, 1e-15);
    schedule_apply(&s, a, 1, 25);
    CU_ASSERT_DOUBLE_EQUAL(a->group[PARAM_BIAS].lr, 0.0504505, 1e-12);
    /* nw = max(round(warmup_epochs * nb), 100), round halving to even as Python's */
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_LINEAR, 10, 10)); /* 30 -> 100 */
    CU_ASSERT_EQUAL(s.nw, 100);
    hyp.warmup_epochs = 2.5;
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_LINEAR, 10, 41)); /* 102.5 -> 102 */
    CU_ASSERT_EQUAL(s.nw, 102);
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_LINEAR, 10, 43)); /* 107.5 -> 108 */
    CU_ASSERT_EQUAL(s.nw, 108);
    CU_ASSERT_NOT_EQUAL(schedule_init(&s, &hyp, LR_LINEAR, 0, 43), 0);
    optim_free(o);
    optim_free(a);
    tensor_free(t);
}

/* lrf 0.01, 10 epochs.
 * linear: (1 - e/10) * 0.99 + 0.01:        lf(0) = 1, lf(3) = 0.703, lf(10) = 0.01
 * cosine: ((1 - cos(e pi / 10)) / 2) * (0.01 - 1) + 1:
 *   lf(2) = 1 - 0.99 * (1 - 0.8090169944) / 2 = 0.9054634122, lf(5) = 1 - 0.99 / 2 = 0.505, lf(10) = 0.01
 * flat cosine: 1 up to epoch 10 // 2 = 5, then cosine over the remaining 5:
 *   lf(3) = lf(5) = 1, lf(7) = 1 - 0.99 * (1 - cos(0.4 pi)) / 2 = 1 - 0.99 * 0.3454915028 = 0.6579634122,
 *   lf(10) = 0.01
 * fixed: 1 */
static void test_lr_factors(void) {
    OptimHyp hyp = optim_hyp_default();
    LrSchedule s;
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_LINEAR, 10, 100));
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 0), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 3), 0.703, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 10), 0.01, 1e-12);
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_COSINE, 10, 100));
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 0), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 2), 0.9054634122, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 5), 0.505, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 10), 0.01, 1e-12);
    /* after warmup (nw = 300) epoch 6 trains with lf(5): 0.01 * 0.505; epoch 5 with lf(4) = 1 - 0.99 *
     * (1 - cos(0.4 pi)) / 2 = 0.6579634122 */
    CU_ASSERT_DOUBLE_EQUAL(schedule_lr(&s, PARAM_BIAS, 6, 0), 0.00505, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lr(&s, PARAM_BIAS, 5, 99), 0.006579634122, 1e-11);
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_FLAT_COSINE, 10, 100));
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 3), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 5), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 7), 0.6579634122, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 10), 0.01, 1e-12);
    CU_ASSERT_OK(schedule_init(&s, &hyp, LR_FIXED, 10, 100));
    CU_ASSERT_DOUBLE_EQUAL(schedule_lf(&s, 7), 1.0, 0);
}

/* ---- gradient accumulation ---------------------------------------------------------- */

/* Batch 16: accumulate = 64/16 = 4; during warmup (nw = 100) round(interp(ni, [0,100], [1,4])) =
 * round(1 + 0.03 ni): ni 16 -> 1.48 -> 1, 17 -> 1.51 -> 2, 50 -> 2.5 -> 2 (numpy rounds half to even),
 * 83 -> 3.49 -> 3, 84 -> 3.52 -> 4, 100 -> 4. */
static void test_accumulation(void) {
    CU_ASSERT_EQUAL(accumulate_steps(16), 4);
    CU_ASSERT_EQUAL(accumulate_steps(24), 3); /* round(2.667) */
    CU_ASSERT_EQUAL(accumulate_steps(40), 2); /* round(1.6) */
    CU_ASSERT_EQUAL(accumulate_steps(64), 1);
    CU_ASSERT_EQUAL(accumulate_steps(128), 1); /* round(0.5) = 0 -> max(.., 1) */
    CU_ASSERT_EQUAL(accumulate_steps(1), 64);
    /* weight_decay * batch * accumulate / 64 */
    CU_ASSERT_DOUBLE_EQUAL(optim_scaled_weight_decay(5e-4, 16), 5e-4, 1e-15);
    CU_ASSERT_DOUBLE_EQUAL(optim_scaled_weight_decay(5e-4, 40), 6.25e-4, 1e-15); /* 5e-4 * 80 / 64 */
    CU_ASSERT_DOUBLE_EQUAL(optim_scaled_weight_decay(5e-4, 128), 1e-3, 1e-15);   /* 5e-4 * 128 / 64 */

    Accumulator a;
    accumulator_init(&a, 16);
    const long ni[] = {0, 16, 17, 50, 83, 84, 100, 101, 5000};
    const int want[] = {1, 1, 2, 2, 3, 4, 4, 4, 4};
    for (int k = 0; k < 9; k++) CU_ASSERT_EQUAL(accumulator_count(&a, ni[k], 100), want[k]);
    /* last_opt_step = -1: a step at every ni up to 16 (count 1), then 17 waits (17 - 16 < 2) and 18 steps */
    int ok = 1;
    for (long i = 0; i <= 16; i++) ok &= accumulator_should_step(&a, i, 100);
    CU_ASSERT(ok);
    CU_ASSERT_FALSE(accumulator_should_step(&a, 17, 100));
    CU_ASSERT_TRUE(accumulator_should_step(&a, 18, 100));
    /* after warmup: every 4th iteration */
    accumulator_init(&a, 16);
    CU_ASSERT_TRUE(accumulator_should_step(&a, 200, 100)); /* 200 - (-1) >= 4 */
    CU_ASSERT_FALSE(accumulator_should_step(&a, 201, 100));
    CU_ASSERT_FALSE(accumulator_should_step(&a, 202, 100));
    CU_ASSERT_FALSE(accumulator_should_step(&a, 203, 100));
    CU_ASSERT_TRUE(accumulator_should_step(&a, 204, 100));
    CU_ASSERT_EQUAL(a.last_opt_step, 204);
}

/* ---- AdamW ---------------------------------------------------------------------------- */

/* lr 0.01, betas (0.9, 0.999), eps 1e-8. w (weight decay 0.01) = 1, grads 0.5 then 0:
 *   s1: w = 1 * (1 - 0.01 * 0.01) = 0.9999; m = 0.05; v = 0.001 * 0.25 = 2.5e-4;
 *       denom = sqrt(2.5e-4) / sqrt(1 - 0.999) + 1e-8 = 0.5 + 1e-8; step = 0.01 / (1 - 0.9) = 0.1;
 *       w = 0.9999 - 0.1 * 0.05 / 0.50000001 = 0.9899000002
 *   s2: w = 0.9899000002 * 0.9999 = 0.9898010102; m = 0.045; v = 0.999 * 2.5e-4 = 2.4975e-4 (< 2.5e-4,
 *       so amsgrad keeps vmax = 2.5e-4); step = 0.01 / 0.19 = 0.05263157895;
 *       amsgrad:  denom = sqrt(2.5e-4) / sqrt(0.001999) + 1e-8 = 0.3536418221, w = 0.9831037790
 *       vanilla:  denom = sqrt(2.4975e-4) / sqrt(0.001999) + 1e-8 = 0.3534649570, w = 0.9831004278
 * b (bias group, no decay) = -0.5, grads -0.2 then 0.001:
 *   s1: m = -0.02; v = 4e-5; denom = sqrt(4e-5) / sqrt(0.001) + 1e-8 = 0.2 + 1e-8; b = -0.5 + 0.1 * 0.1 = -0.4900000005
 *   s2: m = -0.018 + 0.0001 = -0.0179; v = 3.996e-5 + 1e-9 = 3.9961e-5 (< 4e-5: vmax stays 4e-5);
 *       amsgrad:  b = -0.49 + 0.05263157895 * 0.0179 / (sqrt(4e-5) / sqrt(0.001999) + 1e-8) = -0.4833399764
 *       vanilla:  b = -0.49 + 0.05263157895 * 0.0179 / (sqrt(3.9961e-5) / sqrt(0.001999) + 1e-8) = -0.4833367273 */
static void run_adamw(bool amsgrad, float want_w, float want_b) {
    const float w0 = 1.f, b0 = -0.5f;
    Tensor *w = param1(1, &w0, true), *b = param1(1, &b0, true);
    OptimParam ps[] = {{"w", w, PARAM_WEIGHT_DECAY}, {"b", b, PARAM_BIAS}};
    OptimConfig cfg = optim_config(OPTIM_ADAMW, 0.01, 0.9, 0.01);
    CU_ASSERT(cfg.amsgrad); /* the official smart_optimizer's AdamW */
    cfg.amsgrad = amsgrad;
    Optimizer *o = optim_new(&cfg, ps, 2);
    CU_ASSERT_NONNULL_OK(o);
    if (!o) return;
    w->grad[0] = 0.5f, b->grad[0] = -0.2f;
    CU_ASSERT_OK(optim_step(o));
    const float s1w = 0.9899000002f, s1b = -0.4900000005f;
    CU_ASSERT_OK(check_close("adamw w step 1", w->data, &s1w, 1, 2e-7, 0));
    CU_ASSERT_OK(check_close("adamw b step 1", b->data, &s1b, 1, 2e-7, 0));
    w->grad[0] = 0.f, b->grad[0] = 0.001f;
    CU_ASSERT_OK(optim_step(o));
    CU_ASSERT_OK(check_close("adamw w step 2", w->data, &want_w, 1, 2e-7, 0));
    CU_ASSERT_OK(check_close("adamw b step 2", b->data, &want_b, 1, 2e-7, 0));
    CU_ASSERT_EQUAL(o->state[0].step->data[0], 2.f);
    CU_ASSERT_DOUBLE_EQUAL(o->state[0].buf[0]->data[0], 0.045, 1e-8);
    CU_ASSERT_DOUBLE_EQUAL(o->state[0].buf[1]->data[0], 2.4975e-4, 1e-10);
    CU_ASSERT_EQUAL(optim_state_count(o), amsgrad ? 8 : 6);
    optim_free(o);
    tensor_free(w), tensor_free(b);
}

static void test_adamw(void) {
    run_adamw(true, 0.9831037790f, -0.4833399764f);
    run_adamw(false, 0.9831004278f, -0.4833367273f);
}

/* ---- gradient clipping ------------------------------------------------------------------ */

/* grads (3, 4) and (12): total = sqrt(9 + 16 + 144) = 13 > 10; coef = 10 / (13 + 1e-6) = 0.7692307101;
 * grads become 2.307692130, 3.076922840, 9.230768521. A frozen tensor's grad is neither counted nor scaled.
 * A 40000-element grad of 0.01: norm sqrt(40000 * 1e-4) = 2; max_norm 1 -> coef 1 / 2.000001 = 0.49999975. */
static void test_clip_grad_norm(void) {
    const float a0[2] = {0, 0}, z = 0;
    Tensor *a = param1(2, a0, true), *b = param1(1, &z, true), *fr = param1(1, &z, false);
    const float ga[2] = {3, 4}, gb = 12, gf = 100;
    set_grad(a, ga), set_grad(b, &gb), set_grad(fr, &gf);
    OptimParam ps[] = {{"a", a, PARAM_WEIGHT_DECAY}, {"b", b, PARAM_BIAS}, {"f", fr, PARAM_WEIGHT_DECAY}};
    double total = 0;
    CU_ASSERT_OK(clip_grad_norm(ps, 3, 10.0, &total));
    CU_ASSERT_DOUBLE_EQUAL(total, 13.0, 1e-6);
    const float want_a[2] = {2.307692130f, 3.076922840f}, want_b = 9.230768521f;
    CU_ASSERT_OK(check_close("clip a", a->grad, want_a, 2, 2e-7, 0));
    CU_ASSERT_OK(check_close("clip b", b->grad, &want_b, 1, 2e-7, 0));
    CU_ASSERT_EQUAL(fr->grad[0], 100.f);
    /* under the limit: norm 5, untouched */
    set_grad(a, ga);
    CU_ASSERT_OK(clip_grad_norm(ps, 1, 10.0, &total));
    CU_ASSERT_DOUBLE_EQUAL(total, 5.0, 1e-6);
    CU_ASSERT_EQUAL(a->grad[0], 3.f);
    CU_ASSERT_EQUAL(a->grad[1], 4.f);
    /* chunked sum over a large tensor */
    Tensor *big = param1(BIG, NULL, true);
    for (int i = 0; i < BIG; i++) big->grad[i] = 0.01f;
    OptimParam pb = {"big", big, PARAM_WEIGHT_DECAY};
    CU_ASSERT_OK(clip_grad_norm(&pb, 1, 1.0, &total));
    CU_ASSERT_DOUBLE_EQUAL(total, 2.0, 1e-5);
    const float want_big = 0.0049999975f;
    CU_ASSERT_OK(check_close("clip big[0]", big->grad, &want_big, 1, 1e-6, 0));
    CU_ASSERT_OK(check_close("clip big[last]", big->grad + BIG - 1, &want_big, 1, 1e-6, 0));
    CU_ASSERT_NOT_EQUAL(clip_grad_norm(ps, 1, 0.0, NULL), 0);
    tensor_free(a), tensor_free(b), tensor_free(fr), tensor_free(big);
}

/* ---- EMA ---------------------------------------------------------------------------------- */

/* d(u) = 0.9999 * (1 - exp(-u / 2000)): d(1) = 0.9999 * 4.99875042e-4 = 4.99825033e-4,
 * d(2) = 0.9999 * 9.99500167e-4 = 9.99400217e-4, d(2000) = 0.9999 * (1 - 1/e) = 0.6320573468.
 * p: copy 1; the model moves to 3 then 5:
 *   u1: 1 * d(1) + 3 * (1 - d(1)) = 3 - 2 d(1) = 2.99900035
 *   u2: 2.99900035 * d(2) + 5 * (1 - d(2)) = 5 - 2.00099965 * 9.99400217e-4 = 4.9980002005
 * running_var (a buffer): copy 2, model 4 for both updates: 4 - 2 d(1) d(2) = 3.999999001 */
static void test_ema(void) {
    const float p0 = 1.f, rv0[2] = {2.f, 2.f};
    Tensor *p = param1(1, &p0, true), *rv = param1(2, rv0, false);
    OptimParam ps = {"model.0.bn.weight", p, PARAM_BN_WEIGHT};
    EmaBuffer bufs = {"model.0.bn.running_var", rv};
    ModelEMA *e = ema_new(&ps, 1, &bufs, 1, 0.9999, 2000);
    CU_ASSERT_NONNULL_OK(e);
    if (!e) return;
    CU_ASSERT_DOUBLE_EQUAL(ema_decay(e, 1), 4.99825033e-4, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(ema_decay(e, 2), 9.99400217e-4, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(ema_decay(e, 2000), 0.6320573468, 1e-9);
    p->data[0] = 3.f;
    rv->data[0] = rv->data[1] = 4.f;
    ema_update(e);
    Tensor *ep = ema_find(e, "model.0.bn.weight"), *erv = ema_find(e, "model.0.bn.running_var");
    CU_ASSERT_PTR_NOT_NULL(ep);
    CU_ASSERT_PTR_NOT_NULL(erv);
    CU_ASSERT_PTR_NULL(ema_find(e, "model.0.bn.bias"));
    if (!ep || !erv) return;
    CU_ASSERT_DOUBLE_EQUAL(ep->data[0], 2.99900035, 3e-7);
    p->data[0] = 5.f;
    ema_update(e);
    CU_ASSERT_EQUAL(e->updates, 2);
    CU_ASSERT_DOUBLE_EQUAL(ep->data[0], 4.9980002005, 5e-7);
    CU_ASSERT_DOUBLE_EQUAL(erv->data[1], 3.999999001, 5e-7);
    CU_ASSERT_EQUAL(p->data[0], 5.f); /* the model itself is not touched */
    ema_free(e);
    tensor_free(p), tensor_free(rv);
}

/* ---- checkpoint state round trip --------------------------------------------------------- */

/* An in-memory "checkpoint": what the visit callbacks saw, copied. */
typedef struct {
    int n;
    char name[32][96];
    Tensor *t[32];
} Store;

static int store_put(void *ctx, const char *name, Tensor *t) {
    Store *s = ctx;
    if (s->n == 32 || strlen(name) >= 96) return gelan_error("store: full");
    snprintf(s->name[s->n], 96, "%s", name);
    s->t[s->n++] = tensor_clone(t);
    return 0;
}

static int store_get(void *ctx, const char *name, Tensor *dst) {
    Store *s = ctx;
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->name[i], name) == 0) {
            if (!tensor_same_shape(s->t[i], dst)) return gelan_error("store: %s has another shape", name);
            memcpy(dst->data, s->t[i]->data, dst->numel * sizeof(float));
            return 0;
        }
    return 1;
}

static void store_free(Store *s) {
    for (int i = 0; i < s->n; i++) tensor_free(s->t[i]);
    s->n = 0;
}

typedef struct {
    Tensor *t[3];
    OptimParam ps[3];
} Toy;

static void toy_init(Toy *m) {
    const int sizes[3] = {BIG, 5, 3};
    const char *names[3] = {"model.0.conv.weight", "model.0.bn.weight", "model.0.bn.bias"};
    Rng r;
    rng_seed(&r, 11);
    for (int k = 0; k < 3; k++) {
        m->t[k] = param1(sizes[k], NULL, true);
        for (int i = 0; i < sizes[k]; i++) m->t[k]->data[i] = rng_range(&r, -1, 1);
        m->ps[k] = (OptimParam){names[k], m->t[k], (ParamGroup)k};
    }
}

static void toy_copy(Toy *dst, const Toy *src) {
    toy_init(dst);
    for (int k = 0; k < 3; k++) memcpy(dst->t[k]->data, src->t[k]->data, src->t[k]->numel * sizeof(float));
}

static void toy_free(Toy *m) {
    for (int k = 0; k < 3; k++) tensor_free(m->t[k]);
}

/* One training iteration: schedule, gradients from a per-step seed, clip, step. */
static void toy_iter(Toy *m, Optimizer *o, const LrSchedule *s, long ni) {
    schedule_apply(s, o, (int)(ni / s->nb), ni % s->nb);
    Rng r;
    rng_seed(&r, 1000 + (uint64_t)ni);
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < m->t[k]->numel; i++) m->t[k]->grad[i] = rng_range(&r, -2, 2);
    CU_ASSERT_OK(clip_grad_norm(m->ps, 3, 10.0, NULL));
    CU_ASSERT_OK(optim_step(o));
}

static void round_trip(OptimKind kind) {
    OptimHyp hyp = optim_hyp_default();
    LrSchedule s;
    schedule_init(&s, &hyp, LR_COSINE, 3, 40); /* nw = 100: the 5 steps span warmup */
    OptimConfig cfg = optim_config(kind, kind == OPTIM_SGD ? hyp.lr0 : 0.001, hyp.momentum, hyp.weight_decay);
    Toy a, b;
    toy_init(&a);
    Optimizer *oa = optim_new(&cfg, a.ps, 3);
    CU_ASSERT_NONNULL_OK(oa);
    if (!oa) return;
    for (long ni = 0; ni < 3; ni++) toy_iter(&a, oa, &s, ni);
    Store st = {0};
    CU_ASSERT_OK(optim_state_foreach(oa, store_put, &st));
    CU_ASSERT_EQUAL(st.n, optim_state_count(oa));
    CU_ASSERT_EQUAL(st.n, kind == OPTIM_SGD ? 3 : 12);
    CU_ASSERT_STRING_EQUAL(st.name[0], kind == OPTIM_SGD ? "optim.model.0.conv.weight.momentum_buffer"
                                                         : "optim.model.0.conv.weight.exp_avg");
    /* "resume": fresh parameters with the saved values, fresh optimizer with the saved state */
    toy_copy(&b, &a);
    Optimizer *ob = optim_new(&cfg, b.ps, 3);
    CU_ASSERT_NONNULL_OK(ob);
    if (!ob) return;
    CU_ASSERT_OK(optim_state_load(ob, store_get, &st));
    for (long ni = 3; ni < 5; ni++) {
        toy_iter(&a, oa, &s, ni);
        toy_iter(&b, ob, &s, ni);
    }
    int same = 1;
    for (int k = 0; k < 3; k++) same &= memcmp(a.t[k]->data, b.t[k]->data, a.t[k]->numel * sizeof(float)) == 0;
    CU_ASSERT(same);
    /* without the state the continuation differs (the test can fail) */
    Toy c;
    toy_copy(&c, &b);
    Optimizer *oc = optim_new(&cfg, c.ps, 3);
    toy_iter(&c, oc, &s, 5);
    toy_iter(&b, ob, &s, 5);
    CU_ASSERT_NOT_EQUAL(memcmp(b.t[2]->data, c.t[2]->data, 3 * sizeof(float)), 0);

    /* a mismatching state is rejected and leaves the optimizer fresh */
    Tensor *wrong = tensor_new1(7);
    tensor_free(st.t[0]);
    st.t[0] = wrong;
    CU_ASSERT_NOT_EQUAL(optim_state_load(oc, store_get, &st), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "shape"));
    CU_ASSERT_EQUAL(optim_state_count(oc), 0);
    /* state of the other kind is rejected */
    Store other = {0};
    OptimConfig ocfg = optim_config(kind == OPTIM_SGD ? OPTIM_ADAMW : OPTIM_SGD, 0.001, 0.9, 0);
    Optimizer *od = optim_new(&ocfg, c.ps, 3);
    toy_iter(&c, od, &s, 0);
    CU_ASSERT_OK(optim_state_foreach(od, store_put, &other));
    CU_ASSERT_NOT_EQUAL(optim_state_load(oc, store_get, &other), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "state"));
    store_free(&other);
    store_free(&st);
    optim_free(oa), optim_free(ob), optim_free(oc), optim_free(od);
    toy_free(&a), toy_free(&b), toy_free(&c);
}

static void test_state_round_trip_sgd(void) { round_trip(OPTIM_SGD); }
static void test_state_round_trip_adamw(void) { round_trip(OPTIM_ADAMW); }

static void test_ema_round_trip(void) {
    Toy a, b;
    toy_init(&a);
    toy_copy(&b, &a);
    ModelEMA *ea = ema_new(a.ps, 3, NULL, 0, 0.9999, 2000), *eb = ema_new(b.ps, 3, NULL, 0, 0.9999, 2000);
    CU_ASSERT_NONNULL_OK(ea);
    CU_ASSERT_NONNULL_OK(eb);
    if (!ea || !eb) return;
    for (int k = 0; k < 3; k++) tensor_fill(a.t[k], 0.25f * (float)(k + 1));
    ema_update(ea);
    ema_update(ea);
    Store st = {0};
    CU_ASSERT_OK(ema_foreach(ea, store_put, &st));
    CU_ASSERT_EQUAL(st.n, 3);
    CU_ASSERT_STRING_EQUAL(st.name[1], "ema.model.0.bn.weight");
    CU_ASSERT_OK(ema_load(eb, store_get, &st));
    eb->updates = ea->updates;
    for (int k = 0; k < 3; k++) tensor_fill(b.t[k], 0.25f * (float)(k + 1));
    ema_update(ea);
    ema_update(eb);
    int same = 1;
    for (int k = 0; k < 3; k++) same &= memcmp(ea->ema[k]->data, eb->ema[k]->data, a.t[k]->numel * sizeof(float)) == 0;
    CU_ASSERT(same);
    /* a checkpoint without a tensor is an error */
    tensor_free(st.t[2]);
    st.n = 2;
    CU_ASSERT_NOT_EQUAL(ema_load(eb, store_get, &st), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "ema.model.0.bn.bias"));
    store_free(&st);
    ema_free(ea), ema_free(eb);
    toy_free(&a), toy_free(&b);
}

static void test_bad_arguments(void) {
    Tensor *t = param1(2, NULL, true);
    OptimParam dup[] = {{"a", t, PARAM_BIAS}, {"a", t, PARAM_BIAS}};
    OptimConfig cfg = optim_config(OPTIM_SGD, 0.01, 0.937, 5e-4);
    CU_ASSERT_PTR_NULL(optim_new(&cfg, dup, 2));
    CU_ASSERT_PTR_NOT_NULL(strstr(gelan_last_error(), "twice"));
    cfg.momentum = 0; /* Nesterov without momentum, as torch refuses it */
    CU_ASSERT_PTR_NULL(optim_new(&cfg, dup, 1));
    OptimParam bad = {"a", t, (ParamGroup)5};
    cfg = optim_config(OPTIM_SGD, 0.01, 0.937, 5e-4);
    CU_ASSERT_PTR_NULL(optim_new(&cfg, &bad, 1));
    CU_ASSERT_PTR_NULL(ema_new(dup, 2, NULL, 0, 0.9999, 2000));
    tensor_free(t);
}

SUITE_FN(optim) {
    CU_pSuite s = CU_add_suite("optim", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "SGD + Nesterov + weight decay + warmup, hand-computed", test_sgd_nesterov_warmup);
    CU_add_test(s, "SGD momentum 0 drops the buffer, as torch", test_sgd_momentum_zero_restarts);
    CU_add_test(s, "warmup lr / momentum per group", test_warmup_schedule);
    CU_add_test(s, "linear, cosine, flat-cosine, fixed lf", test_lr_factors);
    CU_add_test(s, "gradient accumulation bookkeeping", test_accumulation);
    CU_add_test(s, "AdamW two steps, amsgrad and not", test_adamw);
    CU_add_test(s, "clip_grad_norm", test_clip_grad_norm);
    CU_add_test(s, "EMA decay and updates", test_ema);
    CU_add_test(s, "SGD state save / restore / continue", test_state_round_trip_sgd);
    CU_add_test(s, "AdamW state save / restore / continue", test_state_round_trip_adamw);
    CU_add_test(s, "EMA save / restore / continue", test_ema_round_trip);
    CU_add_test(s, "bad arguments", test_bad_arguments);
    return 0;
}
