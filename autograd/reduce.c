/* Sum and mean of all elements, as a one-element tensor of shape [1].
 *
 * The forward accumulates in double, serially: losses are sums over tens of
 * thousands of terms, and one thread in a fixed order gives the same bits
 * whatever the thread count. The backward hands every element the same
 * gradient (divided by the count for the mean). */
#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define REDUCE_GRAIN 32768

typedef struct {
    float *gx;
    float g;
} FillJob;

static void add_constant(void *ctx, size_t b, size_t e) {
    const FillJob *j = ctx;
    for (size_t i = b; i < e; i++) j->gx[i] += j->g;
}

/* saved: the divisor, 1 for the sum and the element count for the mean
 * (PyTorch divides the gradient by the count rather than multiplying). */
static int reduce_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    FillJob j = {gx, n->out->grad[0] / *(const float *)n->saved};
    parallel_for(n->in[0]->numel, REDUCE_GRAIN, add_constant, &j);
    return 0;
}

static Tensor *reduce(Tape *t, const char *op, Tensor *x, bool mean) {
    if (!x) {
        gelan_error("%s: input is NULL", op);
        return NULL;
    }
    Tensor *y = tape_tensor(t, 1, (int[]){1});
    if (!y) return NULL;
    double sum = 0;
    for (size_t i = 0; i < x->numel; i++) sum += x->data[i];
    /* the mean of nothing is NaN, as in PyTorch */
    y->data[0] = (float)(mean ? sum / (double)x->numel : sum);
    float *divisor;
    if (tape_record(t, op, y, &x, 1, reduce_backward, sizeof *divisor, (void **)&divisor))
        *divisor = mean ? (float)x->numel : 1.0f;
    else if (tape_wants_grad(t, &x, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}

Tensor *op_sum(Tape *t, Tensor *x) { return reduce(t, "sum", x, false); }
Tensor *op_mean(Tape *t, Tensor *x) { return reduce(t, "mean", x, true); }
