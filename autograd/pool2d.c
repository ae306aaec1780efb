/* 2-D max and average pooling, NCHW, floor mode.
 *
 * Both follow PyTorch's CPU kernels: the window of output (oh, ow) starts at
 * (oh*s - p, ow*s - p); max pooling skips the padding (it acts as -inf) and
 * keeps the first maximum in row-major window order (strict `>`), which is
 * where its backward sends the gradient; average pooling divides by the
 * window area including the padding (count_include_pad=True). Planes (one
 * per (n, c)) are independent, so large tensors are split over the pool by
 * plane. */
#include <math.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

/* Elements per parallel_for piece: below this a tensor runs on one thread. */
#define POOL_GRAIN 32768

typedef struct {
    int k, s, p;
    int H, W, OH, OW;
} PoolGeom;

typedef struct {
    PoolGeom g;
    const float *x, *gy;
    float *y, *gx;
    int32_t *argmax; /* max pooling: index in the input plane per output, or NULL */
} PoolJob;

static size_t planes_per_piece(size_t plane_elems) {
    size_t n = POOL_GRAIN / (plane_elems ? plane_elems : 1);
    return n ? n : 1;
}

/* PyTorch's checks (pad at most half the kernel, a window that fits the padded
 * input) with the op and the values in the message. */
static int pool_geometry(const char *op, const Tensor *x, int k, int s, int p, PoolGeom *g) {
    char sh[64];
    if (!x) return gelan_error("%s: input is NULL", op);
    if (x->ndim != 4)
        return gelan_error("%s: expected a 4-D NCHW input, got %s", op, tensor_shape_str(x, sh, sizeof sh));
    if (k < 1 || s < 1 || p < 0)
        return gelan_error("%s: need kernel >= 1, stride >= 1, pad >= 0, got k=%d s=%d p=%d", op, k, s, p);
    if (p > k / 2)
        return gelan_error("%s: pad %d is more than half the kernel %d (input %s)", op, p, k,
                           tensor_shape_str(x, sh, sizeof sh));
    int H = tH(x), W = tW(x);
    if (H + 2 * p < k || W + 2 * p < k)
        return gelan_error("%s: window %dx%d is larger than the padded input %dx%d (input %s, pad %d)", op, k, k,
                           H + 2 * p, W + 2 * p, tensor_shape_str(x, sh, sizeof sh), p);
    *g = (PoolGeom){k, s, p, H, W, (H + 2 * p - k) / s + 1, (W + 2 * p - k) / s + 1};
    return 0;
}

/* ---- max pooling ------------------------------------------------------------ */

static void maxpool_fwd(void *ctx, size_t b, size_t e) {
    const PoolJob *j = ctx;
    const PoolGeom g = j->g;
    for (size_t plane = b; plane < e; plane++) {
        const float *x = j->x + plane * (size_t)g.H * g.W;
        float *y = j->y + plane * (size_t)g.OH * g.OW;
        int32_t *am = j->argmax ? j->argmax + plane * (size_t)g.OH * g.OW : NULL;
        for (int oh = 0; oh < g.OH; oh++) {
            int h0 = oh * g.s - g.p, h1 = h0 + g.k;
            if (h0 < 0) h0 = 0;
            if (h1 > g.H) h1 = g.H;
            for (int ow = 0; ow < g.OW; ow++) {
                int w0 = ow * g.s - g.p, w1 = w0 + g.k;
                if (w0 < 0) w0 = 0;
                if (w1 > g.W) w1 = g.W;
                float best = -INFINITY;
                int32_t best_i = h0 * g.W + w0;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++)
                        if (x[h * g.W + w] > best) {
                            best = x[h * g.W + w];
                            best_i = h * g.W + w;
                        }
                y[oh * g.OW + ow] = best;
                if (am) am[oh * g.OW + ow] = best_i;
            }
        }
    }
}

/* Each output's gradient goes to its argmax, which lies in the same plane. */
static void maxpool_bwd(void *ctx, size_t b, size_t e) {
    const PoolJob *j = ctx;
    size_t in_plane = (size_t)j->g.H * j->g.W, out_plane = (size_t)j->g.OH * j->g.OW;
    for (size_t plane = b; plane < e; plane++) {
        float *gx = j->gx + plane * in_plane;
        const float *gy = j->gy + plane * out_plane;
        const int32_t *am = j->argmax + plane * out_plane;
        for (size_t o = 0; o < out_plane; o++) gx[am[o]] += gy[o];
    }
}

typedef struct {
    PoolGeom g;
    int32_t *argmax;
} MaxPoolSaved;

static int maxpool_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    const MaxPoolSaved *s = n->saved;
    PoolJob j = {.g = s->g, .gy = n->out->grad, .gx = gx, .argmax = s->argmax};
    size_t planes = (size_t)tN(n->out) * tC(n->out);
    parallel_for(planes, planes_per_piece((size_t)s->g.H * s->g.W), maxpool_bwd, &j);
    return 0;
}

Tensor *op_maxpool2d(Tape *t, Tensor *x, int k, int stride, int pad) {
    PoolGeom g;
    if (pool_geometry("maxpool2d", x, k, stride, pad, &g)) return NULL;
    Tensor *y = tape_tensor4(t, tN(x), tC(x), g.OH, g.OW);
    if (!y) return NULL;
    /* Record first, so that the forward can write the argmax straight into the
     * node's saved state (and skip it when nothing is recorded). */
    MaxPoolSaved *s;
    if (tape_record(t, "maxpool2d", y, &x, 1, maxpool_backward, sizeof *s, (void **)&s)) {
        s->g = g;
        s->argmax = tape_alloc(t, y->numel * sizeof *s->argmax);
        if (!s->argmax) return NULL;
    } else if (tape_wants_grad(t, &x, 1)) {
        return NULL; /* the arena could not hold the node */
    }
    PoolJob j = {.g = g, .x = x->data, .y = y->data, .argmax = s ? s->argmax : NULL};
    size_t planes = (size_t)tN(x) * tC(x);
    parallel_for(planes, planes_per_piece((size_t)g.H * g.W), maxpool_fwd, &j);
    return y;
}

/* ---- average pooling -------------------------------------------------------- */

/* PyTorch's divisor: the window clipped to the padded input (not to the
 * input), so padding counts. In floor mode with p <= k/2 this is always k*k,
 * but computing it the same way keeps the two in step. */
static inline int avg_divisor(const PoolGeom *g, int oh, int ow) {
    int h0 = oh * g->s - g->p, w0 = ow * g->s - g->p;
    int h1 = h0 + g->k < g->H + g->p ? h0 + g->k : g->H + g->p;
    int w1 = w0 + g->k < g->W + g->p ? w0 + g->k : g->W + g->p;
    return (h1 - h0) * (w1 - w0);
}

static void avgpool_fwd(void *ctx, size_t b, size_t e) {
    const PoolJob *j = ctx;
    const PoolGeom g = j->g;
    for (size_t plane = b; plane < e; plane++) {
        const float *x = j->x + plane * (size_t)g.H * g.W;
        float *y = j->y + plane * (size_t)g.OH * g.OW;
        for (int oh = 0; oh < g.OH; oh++) {
            int h0 = oh * g.s - g.p, h1 = h0 + g.k;
            if (h0 < 0) h0 = 0;
            if (h1 > g.H) h1 = g.H;
            for (int ow = 0; ow < g.OW; ow++) {
                int w0 = ow * g.s - g.p, w1 = w0 + g.k;
                if (w0 < 0) w0 = 0;
                if (w1 > g.W) w1 = g.W;
                float sum = 0.0f;
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) sum += x[h * g.W + w];
                y[oh * g.OW + ow] = sum / (float)avg_divisor(&g, oh, ow);
            }
        }
    }
}

/* Each output spreads gy/divisor over its window, inside the same plane. */
static void avgpool_bwd(void *ctx, size_t b, size_t e) {
    const PoolJob *j = ctx;
    const PoolGeom g = j->g;
    for (size_t plane = b; plane < e; plane++) {
        float *gx = j->gx + plane * (size_t)g.H * g.W;
        const float *gy = j->gy + plane * (size_t)g.OH * g.OW;
        for (int oh = 0; oh < g.OH; oh++) {
            int h0 = oh * g.s - g.p, h1 = h0 + g.k;
            if (h0 < 0) h0 = 0;
            if (h1 > g.H) h1 = g.H;
            for (int ow = 0; ow < g.OW; ow++) {
                int w0 = ow * g.s - g.p, w1 = w0 + g.k;
                if (w0 < 0) w0 = 0;
                if (w1 > g.W) w1 = g.W;
                float share = gy[oh * g.OW + ow] / (float)avg_divisor(&g, oh, ow);
                for (int h = h0; h < h1; h++)
                    for (int w = w0; w < w1; w++) gx[h * g.W + w] += share;
            }
        }
    }
}

static int avgpool_backward(Tape *t, TapeNode *n) {
    float *gx = tape_grad_of(t, n->in[0]);
    if (!gx) return 0;
    const PoolGeom *g = n->saved;
    PoolJob j = {.g = *g, .gy = n->out->grad, .gx = gx};
    size_t planes = (size_t)tN(n->out) * tC(n->out);
    parallel_for(planes, planes_per_piece((size_t)g->H * g->W), avgpool_bwd, &j);
    return 0;
}

Tensor *op_avgpool2d(Tape *t, Tensor *x, int k, int stride, int pad) {
    PoolGeom g;
    if (pool_geometry("avgpool2d", x, k, stride, pad, &g)) return NULL;
    Tensor *y = tape_tensor4(t, tN(x), tC(x), g.OH, g.OW);
    if (!y) return NULL;
    PoolJob j = {.g = g, .x = x->data, .y = y->data};
    size_t planes = (size_t)tN(x) * tC(x);
    parallel_for(planes, planes_per_piece((size_t)g.H * g.W), avgpool_fwd, &j);
    PoolGeom *s;
    if (tape_record(t, "avgpool2d", y, &x, 1, avgpool_backward, sizeof *s, (void **)&s))
        *s = g;
    else if (tape_wants_grad(t, &x, 1))
        return NULL; /* the arena could not hold the node */
    return y;
}
