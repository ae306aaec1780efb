/* Same-shape add and multiply, and scaling by a constant.
 *
 * No broadcasting: the model only ever combines tensors of one shape, and a
 * silent broadcast would hide a wiring mistake. Large tensors are split over
 * the thread pool by element. */
#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define EW_GRAIN 32768

typedef struct {
    const float *a, *b, *g;
    float *y, *ga, *gb;
    float s;
} EwJob;

static int check_pair(const char *op, const Tensor *a, const Tensor *b) {
    char sa[64], sb[64];
    if (!a || !b) return gelan_error("%s: input is NULL", op);
    if (!tensor_same_shape(a, b))
        return gelan_error("%s: shapes differ: %s vs %s", op, tensor_shape_str(a, sa, sizeof sa),
                           tensor_shape_str(b, sb, sizeof sb));
    return 0;
}

/* ---- add ------------------------------------------------------------------- */

static void add_fwd(void *ctx, size_t b, size_t e) {
    const EwJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = j->a[i] + j->b[i];
}

/* ga and gb may be the same buffer (x + x) or NULL; each element is touched
 * by one thread only, so the two updates never race. */
static void add_bwd(void *ctx, size_t b, size_t e) {
    const EwJob *j = ctx;
    for (size_t i = b; i < e; i++) {
        if (j->ga) j->ga[i] += j->g[i];
        if (j->gb) j->gb[i] += j->g[i];
    }
}

static int add_backward(Tape *t, TapeNode *n) {
    EwJob j = {.g = n->out->grad, .ga = tape_grad_of(t, n->in[0]), .gb = tape_grad_of(t, n->in[1])};
    parallel_for(n->out->numel, EW_GRAIN, add_bwd, &j);
    return 0;
}

Tensor *op_add(Tape *t, Tensor *a, Tensor *b) {
    if (check_pair("add", a, b)) return NULL;
    Tensor *y = tape_tensor(t, a->ndim, a->shape);
    if (!y) return NULL;
    EwJob j = {.a = a->data, .b = b->data, .y = y->data};
    parallel_for(y->numel, EW_GRAIN, add_fwd, &j);
    Tensor *in[2] = {a, b};
    if (!tape_record(t, "add", y, in, 2, add_backward, 0, NULL) && tape_wants_grad(t, in, 2))
        return NULL; /* the arena could not hold the node */
    return y;
}

/* ---- mul ------------------------------------------------------------------- */

static void mul_fwd(void *ctx, size_t b, size_t e) {
    const EwJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = j->a[i] * j->b[i];
}

static void mul_bwd(void *ctx, size_t b, size_t e) {
    const EwJob *j = ctx;
    for (size_t i = b; i < e; i++) {
        if (j->ga) j->ga[i] += j->g[i] * j->b[i];
        if (j->gb) j->gb[i] += j->g[i] * j->a[i];
    }
}

static int mul_backward(Tape *t, TapeNode *n) {
    EwJob j = {.a = n->in[0]->data,
               .b = n->in[1]->data,
               .g = n->out->grad,
               .ga = tape_grad_of(t, n->in[0]),
               .gb = tape_grad_of(t, n->in[1])};
    parallel_for(n->out->numel, EW_GRAIN, mul_bwd, &j);
    return 0;
}

Tensor *op_mul(Tape *t, Tensor *a, Tensor *b) {
    if (check_pair("mul", a, b)) return NULL;
    Tensor *y = tape_tensor(t, a->ndim, a->shape);
    if (!y) return NULL;
    EwJob j = {.a = a->data, .b = b->data, .y = y->data};
    parallel_for(y->numel, EW_GRAIN, mul_fwd, &j);
    Tensor *in[2] = {a, b};
    if (!tape_record(t, "mul", y, in, 2, mul_backward, 0, NULL) && tape_wants_grad(t, in, 2))
        return NULL; /* the arena could not hold the node */
    return y;
}

/* ---- scale ----------------------------------------------------------------- */

static void scale_fwd(void *ctx, size_t b, size_t e) {
    const EwJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = j->a[i] * j->s;
}

static void scale_bwd(void *ctx, size_t b, size_t e) {
    const EwJob *j = ctx;
    for (size_t i = b; i < e; i++) j->ga[i] += j->g[i] * j->s;
}

static int scale_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    EwJob j = {.g = n->out->grad, .ga = gx, .s = *(const float *)n->saved};
    parallel_for(n->out->numel, EW_GRAIN, scale_bwd, &j);
    return 0;
}

Tensor *op_scale(Tape *t, Tensor *x, float s) {
    if (!x) {
        gelan_error("scale: input is NULL");
        return NULL;
    }
    Tensor *y = tape_tensor(t, x->ndim, x->shape);
    if (!y) return NULL;
    EwJob j = {.a = x->data, .y = y->data, .s = s};
    parallel_for(y->numel, EW_GRAIN, scale_fwd, &j);
    float *saved;
    if (tape_record(t, "scale", y, &x, 1, scale_backward, sizeof *saved, (void **)&saved))
        *saved = s;
    else if (tape_wants_grad(t, &x, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}
