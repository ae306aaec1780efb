/* The YOLOv9 loss: CIoU, the assigner, the loss values and its analytic
 * gradient, against the official golden data and finite differences. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/tape.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/safetensors.h"
#include "tests/testutil.h"
#include "train/bbox.h"
#include "train/loss.h"

#define PI 3.14159265358979323846

/* ---- CIoU ------------------------------------------------------------------ */

static void test_ciou_values(void) {
    /* overlapping squares: iou = 1/7, enclosing 3x3 (c2 = 18), centre distance^2 = 2, same aspect (v = 0) */
    float a[4] = {0, 0, 2, 2}, b[4] = {1, 1, 3, 3};
    CU_ASSERT_DOUBLE_EQUAL(bbox_ciou(a, b), 1.0 / 7 - 2.0 / 18, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(bbox_iou(a, b), 1.0 / 7, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(bbox_ciou(a, a), 1.0, 1e-6);
    /* 4x2 against 2x4 sharing a corner: iou = 4/12, c2 = 32, rho2 = 2, v from the aspect angles */
    float c[4] = {0, 0, 4, 2}, d[4] = {0, 0, 2, 4};
    double v = 4 / (PI * PI) * pow(atan(2.0) - atan(0.5), 2);
    double alpha = v / (v - 1.0 / 3 + 1);
    CU_ASSERT_DOUBLE_EQUAL(bbox_ciou(c, d), 1.0 / 3 - 2.0 / 32 - alpha * v, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(bbox_ciou(d, c), bbox_ciou(c, d), 1e-12);
    /* disjoint boxes: iou 0, CIoU negative */
    float e[4] = {10, 10, 12, 13};
    CU_ASSERT(bbox_ciou(a, e) < 0);
    /* candidate test is strict */
    CU_ASSERT(bbox_contains(a, 1, 1, 1e-9f));
    CU_ASSERT_FALSE(bbox_contains(a, 2, 1, 1e-9f));
    CU_ASSERT_FALSE(bbox_contains(a, 1, 0, 1e-9f));
}

/* CIoU with alpha frozen at its value at (a0, b): the function whose gradient
 * the official autograd (alpha under no_grad) and bbox_ciou_grad compute. */
static double ciou_frozen_alpha(const float a[4], const float b[4], double alpha0) {
    double v = 4 / (PI * PI) * pow(bbox_aspect(b) - bbox_aspect(a), 2);
    double alpha = v / (v - bbox_iou(a, b) + 1 + 1e-7);
    return bbox_ciou(a, b) + (alpha - alpha0) * v;
}

static void test_ciou_gradient(void) {
    Rng r;
    rng_seed(&r, 11);
    double worst = 0;
    int checked = 0;
    for (int trial = 0; trial < 200; trial++) {
        float a[4], b[4];
        float ax = rng_range(&r, 2, 8), ay = rng_range(&r, 2, 8), bx = ax + rng_range(&r, -3, 3),
              by = ay + rng_range(&r, -3, 3);
        float aw = rng_range(&r, 1, 6), ah = rng_range(&r, 1, 6), bw = rng_range(&r, 1, 6), bh = rng_range(&r, 1, 6);
        float axywh[4] = {ax, ay, aw, ah}, bxywh[4] = {bx, by, bw, bh};
        bbox_xywh_to_xyxy(axywh, a);
        bbox_xywh_to_xyxy(bxywh, b);
        /* CIoU has kinks where a coordinate of a meets the same one of b (min/max) and where the
           intersection closes (clamp): skip pairs within reach of the finite-difference step */
        int near_kink = fabsf(fminf(a[2], b[2]) - fmaxf(a[0], b[0])) < 0.05f ||
                        fabsf(fminf(a[3], b[3]) - fmaxf(a[1], b[1])) < 0.05f;
        for (int i = 0; i < 4; i++) near_kink |= fabsf(a[i] - b[i]) < 0.05f;
        if (near_kink) continue;
        checked++;
        double g[4];
        double c = bbox_ciou_grad(a, b, g);
        CU_ASSERT_DOUBLE_EQUAL(c, bbox_ciou(a, b), 1e-12);
        double v = 4 / (PI * PI) * pow(bbox_aspect(b) - bbox_aspect(a), 2);
        double alpha0 = v / (v - bbox_iou(a, b) + 1 + 1e-7);
        for (int i = 0; i < 4; i++) {
            float ap[4], am[4];
            memcpy(ap, a, sizeof ap);
            memcpy(am, a, sizeof am);
            ap[i] += 1e-2f;
            am[i] -= 1e-2f;
            double num =
                (ciou_frozen_alpha(ap, b, alpha0) - ciou_frozen_alpha(am, b, alpha0)) / ((double)ap[i] - am[i]);
            double err = fabs(num - g[i]);
            if (err > worst) worst = err;
            if (err > 2e-4) {
                fprintf(stderr, "\n  ciou grad trial %d coord %d: analytic %.7g numeric %.7g\n", trial, i, g[i], num);
                CU_FAIL("CIoU gradient disagrees with the finite difference");
                return;
            }
        }
    }
    CU_ASSERT(checked > 150);
    printf("[%d box pairs, max abs err %.2g] ", checked, worst);
}

/* ---- helpers ------------------------------------------------------------------ */

static Tensor *read_tensor(const SafeTensors *st, const char *name) {
    const StTensorInfo *ti = st_find(st, name);
    if (!ti) {
        fprintf(stderr, "\n  golden tensor %s missing\n", name);
        return NULL;
    }
    int shape[TENSOR_MAX_DIMS], nd = ti->ndim ? ti->ndim : 1;
    for (int i = 0; i < nd; i++) shape[i] = ti->ndim ? (int)ti->shape[i] : 1;
    Tensor *x = tensor_new(nd, shape);
    if (x && st_read_f32(st, name, x->data, x->numel)) {
        tensor_free(x);
        return NULL;
    }
    return x;
}

static int count_mismatch(const float *got, const float *want, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += got[i] != want[i];
    return bad;
}

/* ---- golden cases -------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int n_heads;
    const char *heads[3];
    float weights[3];
    int detect;       /* index of the detect layer (grad.model.D.*) */
    double grad_rtol; /* README tolerance of grad.* for the case */
} GoldenCase;

static const GoldenCase golden_cases[] = {
    {"gelan-t_64_train", 1, {"main"}, {1.0f}, 22, 2e-2},
    {"yolov9-t_64_warm", 2, {"aux", "main"}, {0.25f, 1.0f}, 29, 2e-3},
    {"yolov9-c-mini_64", 2, {"aux", "main"}, {0.25f, 1.0f}, 38, 2e-3},
    {"yolov9-c-triple-mini_64", 3, {"aux1", "aux2", "main"}, {0.25f, 0.25f, 1.0f}, 53, 2e-3},
};

static const float golden_strides[3] = {8, 16, 32};

/* Compares the items with loss.box/cls/dfl/total (rtol 1e-3); err[4] gets the relative errors. */
static void check_items(const char *cs, const LossItems *it, const SafeTensors *ex, double err[4]) {
    const char *names[4] = {"loss.box", "loss.cls", "loss.dfl", "loss.total"};
    float got[4] = {it->box, it->cls, it->dfl, it->total};
    for (int i = 0; i < 4; i++) {
        float want;
        CU_ASSERT_OK(st_read_f32(ex, names[i], &want, 1));
        char label[128];
        snprintf(label, sizeof label, "%s %s", cs, names[i]);
        CU_ASSERT_EQUAL(check_close(label, &got[i], &want, 1, 1e-3, 0), 0);
        err[i] = rel_error(&got[i], &want, 1);
    }
}

static void run_golden_case(const GoldenCase *gc) {
    CU_ASSERT_FATAL(shared_available());
    SafeTensors *in = st_open(golden_path(gc->name, "input.safetensors"));
    SafeTensors *ex = st_open(golden_path(gc->name, "expected.safetensors"));
    CU_ASSERT_NONNULL_OK(in);
    CU_ASSERT_NONNULL_OK(ex);
    if (!in || !ex) goto out_files;

    Tensor *tg = read_tensor(in, "targets");
    Tensor *maps[9] = {0};
    int nm = gc->n_heads * 3, ok = tg != NULL;
    for (int i = 0; i < nm; i++) {
        char name[64];
        snprintf(name, sizeof name, "train.level.%s%d", gc->heads[i / 3], i % 3);
        maps[i] = read_tensor(ex, name);
        if (!maps[i])
            ok = 0;
        else
            maps[i]->requires_grad = true;
    }
    CU_ASSERT_FATAL(ok);
    Targets targets = {tg->shape[0], tg->data};
    Tape *t = tape_new();
    LossItems it;
    LossAssign asg[3];
    Tensor *loss = yolo_loss(t, maps, gc->n_heads, 3, gc->weights, golden_strides, &targets, NULL, &it, asg);
    CU_ASSERT_NONNULL_OK(loss);
    if (!loss) goto out;
    double e_items[4], e_box = 0, e_sc = 0, e_grad = 0;
    check_items(gc->name, &it, ex, e_items);
    CU_ASSERT_DOUBLE_EQUAL(loss->data[0], it.total, 0);

    /* the assignment of every head */
    int n_fg = 0;
    for (int h = 0; h < gc->n_heads; h++) {
        const LossAssign *a = &asg[h];
        size_t NA = (size_t)a->N * a->A;
        CU_ASSERT_EQUAL(a->A, 84);
        CU_ASSERT_EQUAL(a->nc, 80);
        float *want = malloc(NA * a->nc * sizeof(float));
        char name[96], label[160];
        snprintf(name, sizeof name, "assign.%s.target_labels", gc->heads[h]);
        CU_ASSERT_OK(st_read_f32(ex, name, want, NA));
        CU_ASSERT_EQUAL(count_mismatch(a->target_labels, want, NA), 0);
        snprintf(name, sizeof name, "assign.%s.fg_mask", gc->heads[h]);
        CU_ASSERT_OK(st_read_f32(ex, name, want, NA));
        CU_ASSERT_EQUAL(count_mismatch(a->fg_mask, want, NA), 0);
        for (size_t i = 0; i < NA; i++) n_fg += a->fg_mask[i] != 0;
        snprintf(name, sizeof name, "assign.%s.target_bboxes", gc->heads[h]);
        snprintf(label, sizeof label, "%s %s", gc->name, name);
        CU_ASSERT_OK(st_read_f32(ex, name, want, NA * 4));
        CU_ASSERT_EQUAL(check_close(label, a->target_bboxes, want, NA * 4, 1e-6, 0), 0);
        e_box = fmax(e_box, rel_error(a->target_bboxes, want, NA * 4));
        snprintf(name, sizeof name, "assign.%s.target_scores", gc->heads[h]);
        snprintf(label, sizeof label, "%s %s", gc->name, name);
        CU_ASSERT_OK(st_read_f32(ex, name, want, NA * a->nc));
        CU_ASSERT_EQUAL(check_close(label, a->target_scores, want, NA * a->nc, 1e-3, 0), 0);
        e_sc = fmax(e_sc, rel_error(a->target_scores, want, NA * a->nc));
        free(want);
    }
    CU_ASSERT(n_fg > 40 * gc->n_heads); /* README: 45-47 foreground anchors per head */

    /* backward vs the official autograd: d total / d bias = sum over N, H, W of d total / d map */
    CU_ASSERT_OK(tape_backward(t, loss));
    for (int h = 0; h < gc->n_heads; h++)
        for (int k = 0; k < 3; k++) {
            Tensor *m = maps[h * 3 + k];
            CU_ASSERT_PTR_NOT_NULL_FATAL(m->grad);
            int C = m->shape[1], hw = m->shape[2] * m->shape[3];
            float sum[144] = {0};
            for (int n = 0; n < m->shape[0]; n++)
                for (int c = 0; c < C; c++) {
                    double s = 0;
                    for (int p = 0; p < hw; p++) s += m->grad[((size_t)n * C + c) * hw + p];
                    sum[c] += (float)s;
                }
            for (int branch = 0; branch < 2; branch++) {
                char name[96];
                int nch = branch ? 80 : 64;
                float want[80];
                snprintf(name, sizeof name, "grad.model.%d.cv%d.%d.2.bias", gc->detect, 2 + 2 * h + branch, k);
                CU_ASSERT_OK(st_read_f32(ex, name, want, nch));
                char label[160];
                snprintf(label, sizeof label, "%s %s", gc->name, name);
                CU_ASSERT_EQUAL(check_close(label, sum + branch * 64, want, nch, gc->grad_rtol, 1e-6), 0);
                double e = rel_error(sum + branch * 64, want, nch);
                /* the P5 (and P4) box branches are analytically ~0 (no foreground there): atol, not rtol */
                if (branch == 1 || k == 0) e_grad = fmax(e_grad, e);
            }
        }

    /* the loss alone, driven by the official assignment */
    LossAssign given[3];
    float *buf[3] = {0};
    for (int h = 0; h < gc->n_heads; h++) {
        size_t NA = 2 * 84;
        buf[h] = malloc(NA * (1 + 4 + 80 + 1) * sizeof(float));
        given[h] = (LossAssign){2, 84, 80, buf[h], buf[h] + NA, buf[h] + NA * 5, buf[h] + NA * 85};
        const char *fields[4] = {"target_labels", "target_bboxes", "target_scores", "fg_mask"};
        float *dst[4] = {given[h].target_labels, given[h].target_bboxes, given[h].target_scores, given[h].fg_mask};
        size_t cnt[4] = {NA, NA * 4, NA * 80, NA};
        for (int f = 0; f < 4; f++) {
            char name[96];
            snprintf(name, sizeof name, "assign.%s.%s", gc->heads[h], fields[f]);
            CU_ASSERT_OK(st_read_f32(ex, name, dst[f], cnt[f]));
        }
    }
    tape_reset(t);
    LossItems it2;
    Tensor *loss2 = yolo_loss_assigned(t, maps, gc->n_heads, 3, gc->weights, golden_strides, given, NULL, &it2);
    CU_ASSERT_NONNULL_OK(loss2);
    double e_items2[4] = {0};
    if (loss2) check_items(gc->name, &it2, ex, e_items2);
    for (int h = 0; h < gc->n_heads; h++) free(buf[h]);

    printf(
        "\n    %-24s rel.err: box %.1e cls %.1e dfl %.1e total %.1e (official assignment: %.1e %.1e %.1e %.1e)"
        "\n    %-24s          target_bboxes %.1e, target_scores %.1e, bias grads %.1e ",
        gc->name, e_items[0], e_items[1], e_items[2], e_items[3], e_items2[0], e_items2[1], e_items2[2], e_items2[3],
        "", e_box, e_sc, e_grad);
out:
    tape_free(t);
    for (int i = 0; i < nm; i++) tensor_free(maps[i]);
    tensor_free(tg);
out_files:
    st_close(in);
    st_close(ex);
}

static void test_golden_single(void) { run_golden_case(&golden_cases[0]); }
static void test_golden_dual_t(void) { run_golden_case(&golden_cases[1]); }
static void test_golden_dual_c(void) { run_golden_case(&golden_cases[2]); }
static void test_golden_triple(void) { run_golden_case(&golden_cases[3]); }

/* ---- a tiny random problem ---------------------------------------------------------------------- */

/* N = 2, nc = 3, levels 4x4 / 2x2 / 1x1 at strides 8 / 16 / 32 (a 32x32 image), n_heads heads. */
#define TINY_NC 3
#define TINY_C (64 + TINY_NC)
static const float tiny_strides[3] = {8, 16, 32};
static const float tiny_weights[2] = {0.25f, 1.0f};

static void tiny_maps(Tensor **maps, int n_heads, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n_heads * 3; i++) {
        int s = 4 >> (i % 3);
        maps[i] = tensor_new4(2, TINY_C, s, s);
        maps[i]->requires_grad = true;
        int hw = s * s;
        for (int n = 0; n < 2; n++)
            for (int p = 0; p < hw; p++) {
                /* box logits peaked at bin 3 (distances ~3 cells, near-square boxes): every predicted box
                   then strictly contains its target, whose edges are < 2.5 cells from the anchor, so no
                   min/max/clamp kink of CIoU lies within a finite-difference step */
                float base[16];
                for (int j = 0; j < 16; j++) base[j] = -0.5f * (j - 3) * (j - 3) + 0.3f * rng_normal(&r);
                for (int side = 0; side < 4; side++)
                    for (int j = 0; j < 16; j++)
                        maps[i]->data[((size_t)n * TINY_C + side * 16 + j) * hw + p] = base[j] + 0.2f * rng_normal(&r);
                for (int c = 0; c < TINY_NC; c++)
                    maps[i]->data[((size_t)n * TINY_C + 64 + c) * hw + p] = rng_normal(&r) - 1.0f;
            }
    }
}

static void free_maps(Tensor **maps, int n) {
    for (int i = 0; i < n; i++) tensor_free(maps[i]);
}

/* image 0: two boxes, image 1: one box (so image 1 has a padding row) */
static const float tiny_rows[3 * 6] = {
    0, 1, 0.40f, 0.45f, 0.50f, 0.45f,  //
    1, 2, 0.52f, 0.50f, 0.60f, 0.55f,  //
    0, 0, 0.62f, 0.60f, 0.35f, 0.40f,
};

typedef struct {
    int n_heads;
    const LossAssign *given;
    LossHyp hyp;
} FixedCtx;

static Tensor *fixed_loss_fn(Tape *t, Tensor *const *in, void *ctx) {
    FixedCtx *c = ctx;
    return yolo_loss_assigned(t, in, c->n_heads, 3, tiny_weights + (2 - c->n_heads), tiny_strides, c->given, &c->hyp,
                              NULL);
}

/* Copies the arena-held assignment to the heap (it must outlive tape resets). */
static void copy_assign(LossAssign *dst, const LossAssign *src, float **buf) {
    size_t NA = (size_t)src->N * src->A, nc = src->nc;
    *buf = malloc(NA * (6 + nc) * sizeof(float));
    *dst = (LossAssign){src->N, src->A, src->nc, *buf, *buf + NA, *buf + 5 * NA, *buf + (5 + nc) * NA};
    memcpy(dst->target_labels, src->target_labels, NA * sizeof(float));
    memcpy(dst->target_bboxes, src->target_bboxes, NA * 4 * sizeof(float));
    memcpy(dst->target_scores, src->target_scores, NA * nc * sizeof(float));
    memcpy(dst->fg_mask, src->fg_mask, NA * sizeof(float));
}

/* The loss output is float32, so the finite differences carry noise of about
 * ulp(total) / (2 eps): atol covers it; a broken backward is off by far more. */
static void run_gradcheck(float gbox, float gcls, float gdfl, double eps, double rtol, double atol, const char *label) {
    Tensor *maps[6];
    tiny_maps(maps, 2, 5);
    Targets tg = {3, tiny_rows};
    Tape *t = tape_new();
    LossAssign asg[2], fixed[2];
    float *buf[2];
    LossItems it;
    CU_ASSERT_NONNULL_OK(yolo_loss(t, maps, 2, 3, tiny_weights, tiny_strides, &tg, NULL, &it, asg));
    int fg = 0;
    for (int h = 0; h < 2; h++) {
        copy_assign(&fixed[h], &asg[h], &buf[h]);
        for (int i = 0; i < 2 * 21; i++) fg += fixed[h].fg_mask[i] != 0;
    }
    CU_ASSERT(fg >= 4); /* the box and DFL terms are exercised */
    CU_ASSERT(it.box > 0 && it.dfl > 0 && it.cls > 0);
    tape_free(t);

    FixedCtx ctx = {2, fixed, {gbox, gcls, gdfl, 10, 0.5f, 6.0f, 16}};
    GradcheckOpts o = {.eps = eps, .rtol = rtol, .atol = atol};
    int rc = gradcheck(label, fixed_loss_fn, maps, 6, &ctx, &o);
    if (rc) fprintf(stderr, "\n  %s\n", gelan_last_error());
    CU_ASSERT_EQUAL(rc, 0);
    for (int h = 0; h < 2; h++) free(buf[h]);
    free_maps(maps, 6);
}

/* BCE and DFL have exact gradients: a tight check. */
static void test_gradcheck_cls_dfl(void) { run_gradcheck(0, 0.5f, 1.5f, 1e-2, 3e-3, 1e-5, "loss cls+dfl"); }

/* (1 - CIoU) through the DFL expectation: the official gradient holds CIoU's
 * alpha constant, which the finite difference does not; the boxes here are
 * near-square (small v), so the difference (v d alpha) stays well inside the
 * tolerance (the aspect term itself is checked in "CIoU gradient"). The box
 * gradients are small next to the loss value, hence the larger step. */
static void test_gradcheck_box(void) { run_gradcheck(7.5f, 0, 0, 3e-2, 1e-2, 2e-5, "loss box"); }

/* yolo_loss and yolo_loss_assigned with yolo_loss's own assignment agree
 * exactly, value and gradient. */
static void test_given_assignment_consistent(void) {
    Tensor *maps[6];
    tiny_maps(maps, 2, 9);
    Targets tg = {3, tiny_rows};
    Tape *t = tape_new();
    LossAssign asg[2], fixed[2];
    float *buf[2];
    LossItems a, b;
    Tensor *la = yolo_loss(t, maps, 2, 3, tiny_weights, tiny_strides, &tg, NULL, &a, asg);
    CU_ASSERT_NONNULL_OK(la);
    CU_ASSERT_OK(tape_backward(t, la));
    float *g1 = malloc(6 * 2 * TINY_C * 16 * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < 6; i++) {
        memcpy(g1 + off, maps[i]->grad, maps[i]->numel * sizeof(float));
        off += maps[i]->numel;
        tensor_zero_grad(maps[i]);
    }
    for (int h = 0; h < 2; h++) copy_assign(&fixed[h], &asg[h], &buf[h]);
    tape_reset(t);
    Tensor *lb = yolo_loss_assigned(t, maps, 2, 3, tiny_weights, tiny_strides, fixed, NULL, &b);
    CU_ASSERT_NONNULL_OK(lb);
    CU_ASSERT_OK(tape_backward(t, lb));
    CU_ASSERT_EQUAL(a.total, b.total);
    CU_ASSERT_EQUAL(a.box, b.box);
    off = 0;
    int same = 1;
    for (int i = 0; i < 6; i++) {
        same &= memcmp(g1 + off, maps[i]->grad, maps[i]->numel * sizeof(float)) == 0;
        off += maps[i]->numel;
    }
    CU_ASSERT(same);
    /* a scaled upstream gradient scales the map gradient */
    tensor_zero_grad(maps[5]);
    float two = 2.0f;
    tape_reset(t);
    lb = yolo_loss_assigned(t, maps, 2, 3, tiny_weights, tiny_strides, fixed, NULL, &b);
    CU_ASSERT_OK(tape_backward_from(t, lb, &two));
    off = 0; /* maps[5]'s gradient follows those of maps 0..4 in g1 */
    for (int i = 0; i < 5; i++) off += maps[i]->numel;
    for (size_t e = 0; e < maps[5]->numel; e++) g1[off + e] *= 2;
    CU_ASSERT_EQUAL(check_close("scaled grad", maps[5]->grad, g1 + off, maps[5]->numel, 1e-6, 0), 0);
    free(g1);
    for (int h = 0; h < 2; h++) free(buf[h]);
    tape_free(t);
    free_maps(maps, 6);
}

/* ---- edge cases ----------------------------------------------------------------------------- */

static double bce0(float x) { return fmax(x, 0) + log1p(exp(-fabs(x))); }

/* README: with no targets at all the assigner returns labels = nc, zero boxes,
 * zero scores, no foreground; box = dfl = 0 and cls = sum BCE(x, 0) / 1. */
static void test_no_targets(void) {
    Tensor *maps[3];
    tiny_maps(maps, 1, 21);
    float w = 1.0f;
    Targets tg = {0, NULL};
    Tape *t = tape_new();
    LossItems it;
    LossAssign asg;
    Tensor *loss = yolo_loss(t, maps, 1, 3, &w, tiny_strides, &tg, NULL, &it, &asg);
    CU_ASSERT_NONNULL_OK(loss);
    if (!loss) goto out;
    double cls = 0;
    for (int k = 0; k < 3; k++) {
        int hw = maps[k]->shape[2] * maps[k]->shape[3];
        for (int n = 0; n < 2; n++)
            for (int c = 64; c < TINY_C; c++)
                for (int p = 0; p < hw; p++) cls += bce0(maps[k]->data[((size_t)n * TINY_C + c) * hw + p]);
    }
    CU_ASSERT_EQUAL(it.box, 0);
    CU_ASSERT_EQUAL(it.dfl, 0);
    CU_ASSERT_DOUBLE_EQUAL(it.cls, 0.5 * cls, 1e-5 * cls);
    CU_ASSERT_DOUBLE_EQUAL(it.total, 2 * 0.5 * cls, 1e-5 * cls);
    int labels_ok = 1, zero_ok = 1;
    for (int i = 0; i < 2 * 21; i++) {
        labels_ok &= asg.target_labels[i] == TINY_NC && asg.fg_mask[i] == 0;
        for (int c = 0; c < 4; c++) zero_ok &= asg.target_bboxes[4 * i + c] == 0;
        for (int c = 0; c < TINY_NC; c++) zero_ok &= asg.target_scores[i * TINY_NC + c] == 0;
    }
    CU_ASSERT(labels_ok);
    CU_ASSERT(zero_ok);
    /* gradient: N * 0.5 * sigmoid(x) on the class logits, 0 on the box logits */
    CU_ASSERT_OK(tape_backward(t, loss));
    double err = 0;
    for (int k = 0; k < 3; k++) {
        int hw = maps[k]->shape[2] * maps[k]->shape[3];
        for (size_t e = 0; e < maps[k]->numel; e++) {
            int c = (int)(e / hw % TINY_C);
            double want = c >= 64 ? 2 * 0.5 / (1 + exp(-maps[k]->data[e])) : 0.0;
            err = fmax(err, fabs(maps[k]->grad[e] - want));
        }
    }
    CU_ASSERT(err < 1e-6);
out:
    tape_free(t);
    free_maps(maps, 3);
}

/* Targets only for image 0: image 1 is all background with the label/box of
 * its (padding) gt row 0 = class 0, zero box; its class gradient is pure
 * N * gain * sigmoid(x) / tss. An image with fewer targets than M gets
 * padding rows that are never assigned, and its background anchors carry
 * its first target's label and box. */
static void test_empty_image_and_padding(void) {
    Tensor *maps[3];
    tiny_maps(maps, 1, 33);
    float w = 1.0f;
    Tape *t = tape_new();
    LossItems it;
    LossAssign asg;
    /* image 0 only */
    float rows0[12];
    memcpy(rows0, tiny_rows, 6 * sizeof(float));
    memcpy(rows0 + 6, tiny_rows + 12, 6 * sizeof(float));
    Targets only0 = {2, rows0};
    Tensor *loss = yolo_loss(t, maps, 1, 3, &w, tiny_strides, &only0, NULL, &it, &asg);
    CU_ASSERT_NONNULL_OK(loss);
    if (!loss) goto out;
    int fg0 = 0, img1_ok = 1;
    double tss = 0;
    for (int a = 0; a < 21; a++) fg0 += asg.fg_mask[a] != 0;
    for (int i = 0; i < 42 * TINY_NC; i++) tss += asg.target_scores[i];
    for (int a = 21; a < 42; a++) {
        img1_ok &= asg.fg_mask[a] == 0 && asg.target_labels[a] == 0;
        for (int c = 0; c < 4; c++) img1_ok &= asg.target_bboxes[4 * a + c] == 0;
    }
    CU_ASSERT(fg0 > 0);
    CU_ASSERT(img1_ok);
    CU_ASSERT_OK(tape_backward(t, loss));
    double kc = 2 * 0.5 / fmax(tss, 1), err = 0;
    for (int k = 0; k < 3; k++) {
        int hw = maps[k]->shape[2] * maps[k]->shape[3];
        for (int c = 0; c < TINY_C; c++)
            for (int p = 0; p < hw; p++) {
                size_t e = ((size_t)1 * TINY_C + c) * hw + p;
                double want = c >= 64 ? kc / (1 + exp(-maps[k]->data[e])) : 0.0;
                err = fmax(err, fabs(maps[k]->grad[e] - want));
            }
    }
    CU_ASSERT(err < 1e-6);

    /* padding: image 1 has one target (class 2), image 0 two */
    tape_reset(t);
    Targets all = {3, tiny_rows};
    CU_ASSERT_NONNULL_OK(yolo_loss(t, maps, 1, 3, &w, tiny_strides, &all, NULL, &it, &asg));
    float box1[4], xywh1[4] = {0.52f * 32, 0.50f * 32, 0.60f * 32, 0.55f * 32};
    bbox_xywh_to_xyxy(xywh1, box1);
    int bg_ok = 1, fg1 = 0;
    for (int a = 21; a < 42; a++) {
        if (asg.fg_mask[a]) {
            fg1++;
            bg_ok &= asg.target_labels[a] == 2;
            continue;
        }
        bg_ok &= asg.target_labels[a] == 2 && memcmp(asg.target_bboxes + 4 * a, box1, sizeof box1) == 0;
    }
    for (int a = 0; a < 21; a++)
        if (!asg.fg_mask[a]) bg_ok &= asg.target_labels[a] == 1; /* image 0's row 0 is class 1 */
    CU_ASSERT(fg1 > 0);
    CU_ASSERT(bg_ok);
out:
    tape_free(t);
    free_maps(maps, 3);
}

static void expect_error(Tensor **maps, int n_heads, const Targets *tg, const char *needle) {
    Tape *t = tape_new();
    gelan_clear_error();
    Tensor *l = yolo_loss(t, maps, n_heads, 3, tiny_weights + (2 - n_heads), tiny_strides, tg, NULL, NULL, NULL);
    CU_ASSERT_PTR_NULL(l);
    if (!strstr(gelan_last_error(), needle)) {
        fprintf(stderr, "\n  expected an error with '%s', got '%s'\n", needle, gelan_last_error());
        CU_FAIL("error message");
    }
    tape_free(t);
}

static void test_errors(void) {
    Tensor *maps[6];
    tiny_maps(maps, 2, 3);
    float rows[6] = {0, 1, 0.5f, 0.5f, 0.3f, 0.3f};
    Targets tg = {1, rows};
    rows[1] = TINY_NC; /* class == nc */
    expect_error(maps, 2, &tg, "class");
    rows[1] = 1.5f;
    expect_error(maps, 2, &tg, "class");
    rows[1] = 1;
    rows[0] = 2; /* image index == N */
    expect_error(maps, 2, &tg, "image index");
    rows[0] = 0;
    rows[4] = NAN;
    expect_error(maps, 2, &tg, "non-finite");
    rows[4] = 0.3f;
    float keep = maps[4]->data[7];
    maps[4]->data[7] = INFINITY;
    expect_error(maps, 2, &tg, "non-finite");
    maps[4]->data[7] = keep;
    /* head 1 level 1 of another size than head 0 level 1 */
    Tensor *good = maps[4];
    maps[4] = tensor_new4(2, TINY_C, 3, 3);
    expect_error(maps, 2, &tg, "shape");
    tensor_free(maps[4]);
    maps[4] = tensor_new4(2, TINY_C + 1, 2, 2);
    expect_error(maps, 2, &tg, "shape");
    tensor_free(maps[4]);
    maps[4] = good;
    /* and the valid call works */
    Tape *t = tape_new();
    CU_ASSERT_NONNULL_OK(yolo_loss(t, maps, 2, 3, tiny_weights, tiny_strides, &tg, NULL, NULL, NULL));
    tape_free(t);
    free_maps(maps, 6);
}

SUITE_FN(loss) {
    CU_pSuite s = CU_add_suite("loss", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "CIoU values", test_ciou_values);
    CU_add_test(s, "CIoU gradient (alpha constant)", test_ciou_gradient);
    CU_add_test(s, "golden gelan-t_64_train (single head)", test_golden_single);
    CU_add_test(s, "golden yolov9-t_64_warm (dual)", test_golden_dual_t);
    CU_add_test(s, "golden yolov9-c-mini_64 (dual)", test_golden_dual_c);
    CU_add_test(s, "golden yolov9-c-triple-mini_64 (triple)", test_golden_triple);
    CU_add_test(s, "gradcheck cls + dfl (fixed assignment)", test_gradcheck_cls_dfl);
    CU_add_test(s, "gradcheck box (fixed assignment)", test_gradcheck_box);
    CU_add_test(s, "given assignment = own assignment", test_given_assignment_consistent);
    CU_add_test(s, "no targets", test_no_targets);
    CU_add_test(s, "image without targets, padding rows", test_empty_image_and_padding);
    CU_add_test(s, "errors", test_errors);
    return 0;
}
