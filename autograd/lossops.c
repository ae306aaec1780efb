/* Ops that losses are built from: elementwise BCE-with-logits and
 * index_select. */
#include <math.h>
#include <string.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define LOSS_GRAIN 32768

/* ---- bce_with_logits --------------------------------------------------------
 * loss = max(x,0) - x*t + log1p(exp(-|x|)) is log(1+exp(x)) - x*t rewritten
 * so that exp() never overflows; d loss / dx = sigmoid(x) - t. The targets
 * are constants: the node keeps a pointer to them, so they must outlive the
 * backward pass (as the loss's target tensors do for a training step). */

typedef struct {
    const float *x, *tg, *g;
    float *y;
} BceJob;

static void bce_fwd(void *ctx, size_t b, size_t e) {
    const BceJob *j = ctx;
    for (size_t i = b; i < e; i++) {
        float x = j->x[i];
        j->y[i] = fmaxf(x, 0.0f) - x * j->tg[i] + log1pf(expf(-fabsf(x)));
    }
}

static void bce_bwd(void *ctx, size_t b, size_t e) {
    const BceJob *j = ctx;
    for (size_t i = b; i < e; i++) {
        float x = j->x[i];
        /* sigmoid with exp() of a non-positive number only */
        float s = x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
        j->y[i] += j->g[i] * (s - j->tg[i]);
    }
}

static int bce_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    const Tensor *target = *(const Tensor *const *)n->saved;
    BceJob j = {n->in[0]->data, target->data, n->out->grad, gx};
    parallel_for(n->out->numel, LOSS_GRAIN, bce_bwd, &j);
    return 0;
}

Tensor *op_bce_with_logits(Tape *t, Tensor *logits, const Tensor *target) {
    char a[64], b[64];
    if (!logits || !target) {
        gelan_error("bce_with_logits: %s is NULL", logits ? "target" : "logits");
        return NULL;
    }
    if (!tensor_same_shape(logits, target)) {
        gelan_error("bce_with_logits: shapes differ: logits %s vs target %s", tensor_shape_str(logits, a, sizeof a),
                    tensor_shape_str(target, b, sizeof b));
        return NULL;
    }
    Tensor *y = tape_tensor(t, logits->ndim, logits->shape);
    if (!y) return NULL;
    BceJob j = {logits->data, target->data, NULL, y->data};
    parallel_for(y->numel, LOSS_GRAIN, bce_fwd, &j);
    const Tensor **saved;
    if (tape_record(t, "bce_with_logits", y, &logits, 1, bce_backward, sizeof *saved, (void **)&saved))
        *saved = target;
    else if (tape_wants_grad(t, &logits, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}

/* ---- index_select -----------------------------------------------------------
 * Along dim, x is [outer, D, inner] and out is [outer, n, inner]; out row i of
 * each outer block is a copy of x row idx[i]. The backward adds each out row
 * back into its source row, so repeated indices accumulate. */

typedef struct {
    int dim, n;
    int *idx; /* a copy: the caller's list need not outlive the call */
} IndexSaved;

static int index_select_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    const IndexSaved *s = n->saved;
    const Tensor *x = n->in[0];
    size_t outer = shape_numel(s->dim, x->shape), inner = shape_numel(x->ndim - s->dim - 1, x->shape + s->dim + 1);
    size_t D = (size_t)x->shape[s->dim];
    for (size_t o = 0; o < outer; o++)
        for (int i = 0; i < s->n; i++) {
            float *dst = gx + (o * D + (size_t)s->idx[i]) * inner;
            const float *src = n->out->grad + (o * (size_t)s->n + (size_t)i) * inner;
            for (size_t e = 0; e < inner; e++) dst[e] += src[e];
        }
    return 0;
}

Tensor *op_index_select(Tape *t, Tensor *x, int dim, const int *idx, int n) {
    char sh[64];
    if (!x) {
        gelan_error("index_select: input is NULL");
        return NULL;
    }
    if (dim < 0 || dim >= x->ndim) {
        gelan_error("index_select: dim %d is out of range for shape %s (0..%d)", dim,
                    tensor_shape_str(x, sh, sizeof sh), x->ndim - 1);
        return NULL;
    }
    if (n < 0 || (n > 0 && !idx)) {
        gelan_error("index_select: bad index list (%d entries)", n);
        return NULL;
    }
    int D = x->shape[dim];
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= D) {
            gelan_error("index_select: index %d (entry %d) is out of range for dim %d of size %d (input %s)", idx[i], i,
                        dim, D, tensor_shape_str(x, sh, sizeof sh));
            return NULL;
        }
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[dim] = n;
    Tensor *y = tape_tensor(t, x->ndim, shape);
    if (!y) return NULL;
    size_t outer = shape_numel(dim, x->shape), inner = shape_numel(x->ndim - dim - 1, x->shape + dim + 1);
    for (size_t o = 0; o < outer; o++)
        for (int i = 0; i < n; i++)
            memcpy(y->data + (o * (size_t)n + (size_t)i) * inner, x->data + (o * (size_t)D + (size_t)idx[i]) * inner,
                   inner * sizeof(float));
    IndexSaved *s;
    if (tape_record(t, "index_select", y, &x, 1, index_select_backward, sizeof *s, (void **)&s)) {
        s->dim = dim;
        s->n = n;
        s->idx = tape_alloc(t, (size_t)(n ? n : 1) * sizeof *s->idx);
        if (!s->idx) return NULL;
        if (n) memcpy(s->idx, idx, (size_t)n * sizeof *s->idx);
    } else if (tape_wants_grad(t, &x, 1)) {
        return NULL; /* the arena could not hold the node */
    }
    return y;
}
