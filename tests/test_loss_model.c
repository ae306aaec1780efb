/* The whole training step checked by finite differences: a tiny model's
 * train-mode forward (conv, BN with batch statistics, SiLU, the DDetect
 * branches) followed by the official loss, with the assignment held fixed
 * (it is constant in the official backward too). Every checked parameter's
 * backward gradient must match the central difference of the loss. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "nn/model.h"
#include "tensor/error.h"
#include "tensor/rng.h"
#include "tests/testutil.h"
#include "train/loss.h"
#include "train/trace.h"

static const char *TINY =
    "nc: 3\n"
    "depth_multiple: 1.0\n"
    "width_multiple: 1.0\n"
    "backbone:\n"
    "  [[-1, 1, Conv, [8, 3, 2]],\n"   /* 0: /2 */
    "   [-1, 1, Conv, [16, 3, 2]],\n"  /* 1: /4 */
    "   [-1, 1, ADown, [16]],\n"       /* 2: /8 */
    "   [-1, 1, ELAN1, [16, 16, 8]],\n" /* 3: /8 */
    "   [-1, 1, Conv, [16, 3, 2]],\n"  /* 4: /16 */
    "   [-1, 1, Conv, [16, 3, 2]],\n"  /* 5: /32 */
    "  ]\n"
    "head:\n"
    "  [[[3, 4, 5], 1, DDetect, [nc]]]\n";

typedef struct {
    Model *m;
    Tensor *x;
    LossAssign assign; /* heap copy, fixed */
} Ctx;

static Tensor *loss_fn(Tape *t, Tensor *const *inputs, void *vctx) {
    (void)inputs; /* the checked tensors are the model's own parameters */
    Ctx *c = vctx;
    ModelOutput o;
    if (model_forward(c->m, t, c->x, true, &o)) return NULL;
    float w = 1.0f;
    return yolo_loss_assigned(t, o.maps[0], 1, c->m->head.nl, &w, c->m->head.strides, &c->assign, NULL, NULL);
}

static float *heap_copy(const float *src, size_t n) {
    float *d = malloc(n * sizeof *d);
    memcpy(d, src, n * sizeof *d);
    return d;
}

static void test_tiny_model_finite_differences(void) {
    Model *m = model_build(TINY, "tiny.yaml", &(ModelOptions){.seed = 3});
    CU_ASSERT_NONNULL_OK(m);
    if (!m) return;
    Tensor *x = tensor_new4(2, 3, 64, 64);
    Rng r;
    rng_seed(&r, 11);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = rng_uniform(&r);
    /* boxes in pixels of a 64x64 image: a few per image, some overlapping */
    float rows[] = {0, 0, .30f, .35f, .40f, .45f, 0, 2, .70f, .60f, .35f, .50f, 0, 1, .55f, .40f, .30f, .30f,
                    1, 1, .50f, .50f, .80f, .70f, 1, 0, .25f, .75f, .30f, .25f};
    Targets tg = {5, rows};
    /* the assignment of the unperturbed model, then held fixed */
    Tape *t = tape_new();
    ModelOutput o;
    CU_ASSERT_OK(model_forward(m, t, x, true, &o));
    float w = 1.0f;
    LossAssign a;
    Tensor *loss = yolo_loss(t, o.maps[0], 1, m->head.nl, &w, m->head.strides, &tg, NULL, NULL, &a);
    CU_ASSERT_NONNULL_OK(loss);
    if (!loss) goto out;
    Ctx c = {m, x, a};
    size_t NA = (size_t)a.N * a.A;
    c.assign.target_labels = heap_copy(a.target_labels, NA);
    c.assign.target_bboxes = heap_copy(a.target_bboxes, NA * 4);
    c.assign.target_scores = heap_copy(a.target_scores, NA * a.nc);
    c.assign.fg_mask = heap_copy(a.fg_mask, NA);
    float fg = 0;
    for (size_t i = 0; i < NA; i++) fg += a.fg_mask[i];
    CU_ASSERT(fg >= 5); /* the check must see foreground anchors */
    tape_reset(t);

    /* a first-layer weight, a BN gamma deep inside ELAN1, a box-branch and a
     * class-branch weight of the head: the gradient has to flow through all */
    const char *names[] = {"model.0.conv.weight", "model.3.cv2.bn.weight", "model.6.cv2.0.0.conv.weight",
                           "model.6.cv3.0.2.weight", "model.6.cv2.0.2.bias"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        Tensor *p = model_tensor(m, names[i]);
        CU_ASSERT_PTR_NOT_NULL(p);
        if (!p) continue;
        /* only this tensor is checked: the others keep requires_grad but are
         * not inputs of the checker */
        GradcheckOpts opts = {.eps = 3e-3, .rtol = 2e-2, .atol = 1e-3, .max_elems = 24};
        int rc = gradcheck(names[i], loss_fn, &p, 1, &c, &opts);
        if (rc) fprintf(stderr, "\n  %s\n", gelan_last_error());
        CU_ASSERT_EQUAL(rc, 0);
    }
    free(c.assign.target_labels), free(c.assign.target_bboxes), free(c.assign.target_scores), free(c.assign.fg_mask);
out:
    tape_free(t);
    tensor_free(x);
    model_free(m);
}

SUITE_FN(loss_model) {
    CU_pSuite s = CU_add_suite("loss_model", NULL, NULL);
    if (!s) return -1;
    CU_add_test(s, "tiny model + loss: backward equals finite differences", test_tiny_model_finite_differences);
    return 0;
}
