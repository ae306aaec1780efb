#include "train/trace.h"

#include <stdio.h>
#include <string.h>

#include "tensor/error.h"

void loss_head_weights(int nheads, float *w) {
    for (int h = 0; h < nheads; h++) w[h] = h == nheads - 1 ? 1.0f : 0.25f;
}

/* Wraps a flat array as a tensor view for the callback (no copy). */
static int emit_array(NamedTensorFn emit, void *ctx, const char *name, float *data, int ndim, const int *shape) {
    Tensor v = {0};
    v.ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) v.shape[i] = i < ndim ? shape[i] : 1;
    v.numel = shape_numel(ndim, shape);
    v.data = data;
    return emit(name, &v, ctx);
}

int trace_train(Model *m, Tape *t, Tensor *input, const Targets *targets, const LossHyp *hyp, NamedTensorFn emit,
                void *ctx, LossItems *items_out) {
    const NamedParam *params;
    const NamedBuffer *buffers;
    int np = model_params(m, &params), nb = model_buffers(m, &buffers);
    for (int i = 0; i < np; i++) tensor_zero_grad(params[i].t);
    tape_reset(t);
    bool old = tape_set_grad_enabled(t, true);

    ModelOutput o;
    int rc = model_forward(m, t, input, true, &o);
    const HeadInfo *hi = &m->head;
    Tensor *maps[DETECT_MAX_HEADS * DETECT_MAX_LEVELS];
    float hw[DETECT_MAX_HEADS];
    LossAssign assign[DETECT_MAX_HEADS];
    LossItems items;
    Tensor *loss = NULL;
    char name[512];
    if (rc) goto done;
    for (int h = 0; h < hi->nheads; h++)
        for (int k = 0; k < hi->nl; k++) maps[h * hi->nl + k] = o.maps[h][k];
    loss_head_weights(hi->nheads, hw);
    loss = yolo_loss(t, maps, hi->nheads, hi->nl, hw, hi->strides, targets, hyp, &items, assign);
    if (!loss) {
        rc = -1;
        goto done;
    }
    rc = tape_backward(t, loss);
    if (rc) goto done;

    for (int h = 0; h < hi->nheads && !rc; h++) {
        const char *head = model_head_name(m, h);
        for (int k = 0; k < hi->nl && !rc; k++) {
            snprintf(name, sizeof name, "train.level.%s%d", head, k);
            rc = emit(name, o.maps[h][k], ctx);
        }
        const LossAssign *a = &assign[h];
        int s2[2] = {a->N, a->A}, s3[3] = {a->N, a->A, 4}, s3c[3] = {a->N, a->A, a->nc};
        snprintf(name, sizeof name, "assign.%s.target_labels", head);
        if (!rc) rc = emit_array(emit, ctx, name, a->target_labels, 2, s2);
        snprintf(name, sizeof name, "assign.%s.target_bboxes", head);
        if (!rc) rc = emit_array(emit, ctx, name, a->target_bboxes, 3, s3);
        snprintf(name, sizeof name, "assign.%s.target_scores", head);
        if (!rc) rc = emit_array(emit, ctx, name, a->target_scores, 3, s3c);
        snprintf(name, sizeof name, "assign.%s.fg_mask", head);
        if (!rc) rc = emit_array(emit, ctx, name, a->fg_mask, 2, s2);
    }
    float vals[4] = {items.box, items.cls, items.dfl, items.total};
    const char *loss_names[4] = {"loss.box", "loss.cls", "loss.dfl", "loss.total"};
    for (int i = 0; i < 4 && !rc; i++) rc = emit_array(emit, ctx, loss_names[i], &vals[i], 0, NULL);
    for (int i = 0; i < nb && !rc; i++) {
        snprintf(name, sizeof name, "running.%s", buffers[i].name);
        rc = emit(name, buffers[i].t, ctx);
    }
    for (int i = 0; i < np && !rc; i++) {
        Tensor *p = params[i].t;
        if (!p->requires_grad) continue; /* the fixed DFL weights have no gradient */
        if (!tensor_grad(p, NULL)) {
            rc = -1;
            break;
        }
        snprintf(name, sizeof name, "grad.%s", params[i].name);
        rc = emit_array(emit, ctx, name, p->grad, p->ndim, p->shape);
    }
    if (!rc && items_out) *items_out = items;
done:
    tape_set_grad_enabled(t, old);
    return rc;
}
