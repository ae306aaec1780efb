/* Softmax and log-softmax along one dimension of a tensor of any rank.
 *
 * Along dim the tensor is [outer, D, inner]: each of the outer*inner "rows"
 * is D values spaced `inner` apart. Every row is independent, so large
 * tensors are split over the pool by row. Stability comes from subtracting
 * the row maximum before exp(), so exp() never sees a positive argument. */
#include <math.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define SOFTMAX_GRAIN 32768

typedef struct {
    size_t inner;
    int D;
    bool log;
    const float *x, *y, *gy;
    float *out, *gx;
} SoftmaxJob;

/* Row r starts at (r / inner) * D * inner + r % inner. */
static inline size_t row_start(const SoftmaxJob *j, size_t r) {
    return (r / j->inner) * j->D * j->inner + r % j->inner;
}

static void softmax_fwd(void *ctx, size_t b, size_t e) {
    const SoftmaxJob *j = ctx;
    const size_t st = j->inner;
    for (size_t r = b; r < e; r++) {
        const float *x = j->x + row_start(j, r);
        float *y = j->out + row_start(j, r);
        float mx = -INFINITY;
        for (int d = 0; d < j->D; d++) mx = fmaxf(mx, x[d * st]);
        float sum = 0.0f;
        if (j->log) {
            for (int d = 0; d < j->D; d++) sum += expf(x[d * st] - mx);
            float lse = logf(sum);
            for (int d = 0; d < j->D; d++) y[d * st] = x[d * st] - mx - lse;
        } else {
            for (int d = 0; d < j->D; d++) {
                y[d * st] = expf(x[d * st] - mx);
                sum += y[d * st];
            }
            for (int d = 0; d < j->D; d++) y[d * st] /= sum;
        }
    }
}

/* softmax:     gx = y * (gy - sum(gy * y))
 * log_softmax: gx = gy - exp(y) * sum(gy) */
static void softmax_bwd(void *ctx, size_t b, size_t e) {
    const SoftmaxJob *j = ctx;
    const size_t st = j->inner;
    for (size_t r = b; r < e; r++) {
        const float *y = j->y + row_start(j, r), *gy = j->gy + row_start(j, r);
        float *gx = j->gx + row_start(j, r);
        float dot = 0.0f;
        if (j->log) {
            for (int d = 0; d < j->D; d++) dot += gy[d * st];
            for (int d = 0; d < j->D; d++) gx[d * st] += gy[d * st] - expf(y[d * st]) * dot;
        } else {
            for (int d = 0; d < j->D; d++) dot += gy[d * st] * y[d * st];
            for (int d = 0; d < j->D; d++) gx[d * st] += y[d * st] * (gy[d * st] - dot);
        }
    }
}

static size_t rows_per_piece(int D) {
    size_t n = SOFTMAX_GRAIN / (size_t)(D > 0 ? D : 1);
    return n ? n : 1;
}

typedef struct {
    int dim;
    bool log;
} SoftmaxSaved;

static int softmax_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    const SoftmaxSaved *s = n->saved;
    const Tensor *y = n->out;
    int D = y->shape[s->dim];
    size_t inner = shape_numel(y->ndim - s->dim - 1, y->shape + s->dim + 1);
    SoftmaxJob j = {.inner = inner, .D = D, .log = s->log, .y = y->data, .gy = y->grad, .gx = gx};
    size_t rows = D ? y->numel / (size_t)D : 0;
    parallel_for(rows, rows_per_piece(D), softmax_bwd, &j);
    return 0;
}

static Tensor *softmax(Tape *t, const char *op, Tensor *x, int dim, bool log) {
    char sh[64];
    if (!x) {
        gelan_error("%s: input is NULL", op);
        return NULL;
    }
    if (dim < 0 || dim >= x->ndim) {
        gelan_error("%s: dim %d is out of range for shape %s (0..%d)", op, dim, tensor_shape_str(x, sh, sizeof sh),
                    x->ndim - 1);
        return NULL;
    }
    Tensor *y = tape_tensor(t, x->ndim, x->shape);
    if (!y) return NULL;
    int D = x->shape[dim];
    size_t inner = shape_numel(x->ndim - dim - 1, x->shape + dim + 1);
    SoftmaxJob j = {.inner = inner, .D = D, .log = log, .x = x->data, .out = y->data};
    size_t rows = D ? x->numel / (size_t)D : 0;
    parallel_for(rows, rows_per_piece(D), softmax_fwd, &j);
    SoftmaxSaved *s;
    if (tape_record(t, op, y, &x, 1, softmax_backward, sizeof *s, (void **)&s))
        *s = (SoftmaxSaved){dim, log};
    else if (tape_wants_grad(t, &x, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}

Tensor *op_softmax(Tape *t, Tensor *x, int dim) { return softmax(t, "softmax", x, dim, false); }
Tensor *op_log_softmax(Tape *t, Tensor *x, int dim) { return softmax(t, "log_softmax", x, dim, true); }
