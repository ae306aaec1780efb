/* Pointwise activations: SiLU, ReLU, LeakyReLU, sigmoid.
 *
 * Each op is a flat loop over all elements; large tensors are split over the
 * thread pool (every element is independent, so any split gives the same
 * result). Backward passes recompute what they need from the saved input or
 * output instead of storing extra buffers. */
#include <math.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/fastmath.h"
#include "tensor/pool.h"

/* Elements per parallel_for piece: below this a tensor runs on one thread. */
#define ACT_GRAIN 32768

/* The vectorisable sigmoid of tensor/fastmath.h (about 2 ulp): these loops
 * run over every activation of the network, forward and backward. */
static inline float sigmoidf(float x) { return gelan_sigmoidf(x); }

typedef struct {
    const float *x; /* forward input (or output, for sigmoid's backward) */
    const float *g; /* gradient of the output (backward only) */
    float *y;       /* forward output, or the input gradient to accumulate into */
    float slope;    /* LeakyReLU */
} ActJob;

static void silu_fwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = j->x[i] * sigmoidf(j->x[i]);
}

/* d/dx x*s(x) = s + x*s*(1-s) = s*(1 + x*(1-s)) */
static void silu_bwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) {
        float s = sigmoidf(j->x[i]);
        j->y[i] += j->g[i] * s * (1.0f + j->x[i] * (1.0f - s));
    }
}

static void relu_fwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = j->x[i] > 0 ? j->x[i] : 0.0f;
}

/* Gradient 0 at x == 0, as PyTorch. */
static void relu_bwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] += j->x[i] > 0 ? j->g[i] : 0.0f;
}

static void leaky_fwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = j->x[i] > 0 ? j->x[i] : j->x[i] * j->slope;
}

static void leaky_bwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] += j->x[i] > 0 ? j->g[i] : j->g[i] * j->slope;
}

static void sigmoid_fwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = sigmoidf(j->x[i]);
}

/* Here j->x is the forward OUTPUT s: ds/dx = s*(1-s). */
static void sigmoid_bwd(void *ctx, size_t b, size_t e) {
    ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] += j->g[i] * j->x[i] * (1.0f - j->x[i]);
}

/* ---- shared driver --------------------------------------------------------- */

typedef struct {
    parallel_fn bwd;
    float slope;
    bool from_output; /* the backward reads the output instead of the input */
} ActSaved;

static int act_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    const ActSaved *s = n->saved;
    ActJob j = {s->from_output ? n->out->data : n->in[0]->data, n->out->grad, gx, s->slope};
    parallel_for(n->out->numel, ACT_GRAIN, s->bwd, &j);
    return 0;
}

static Tensor *activation(Tape *t, const char *op, Tensor *x, parallel_fn fwd, parallel_fn bwd, float slope,
                          bool from_output) {
    if (!x) {
        gelan_error("%s: input is NULL", op);
        return NULL;
    }
    Tensor *y = tape_tensor(t, x->ndim, x->shape);
    if (!y) return NULL;
    ActJob j = {x->data, NULL, y->data, slope};
    parallel_for(x->numel, ACT_GRAIN, fwd, &j);
    ActSaved *s;
    if (tape_record(t, op, y, &x, 1, act_backward, sizeof *s, (void **)&s)) {
        *s = (ActSaved){bwd, slope, from_output};
    } else if (tape_wants_grad(t, &x, 1)) {
        return NULL; /* the arena could not hold the node */
    }
    return y;
}

Tensor *op_silu(Tape *t, Tensor *x) { return activation(t, "silu", x, silu_fwd, silu_bwd, 0.0f, false); }
Tensor *op_relu(Tape *t, Tensor *x) { return activation(t, "relu", x, relu_fwd, relu_bwd, 0.0f, false); }
Tensor *op_sigmoid(Tape *t, Tensor *x) { return activation(t, "sigmoid", x, sigmoid_fwd, sigmoid_bwd, 0.0f, true); }

Tensor *op_leaky_relu(Tape *t, Tensor *x, float slope) {
    if (!isfinite(slope)) {
        gelan_error("leaky_relu: slope %g is not finite", slope);
        return NULL;
    }
    return activation(t, "leaky_relu", x, leaky_fwd, leaky_bwd, slope, false);
}
