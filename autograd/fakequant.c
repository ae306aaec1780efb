/* Fake quantization and the differentiable BN folding of quantization-aware
 * training (contract in ops.h).
 *
 * The scheme is the int8 runtime's (infer/qconv.h), simulated in fp32:
 *   activation, per tensor:  q = clamp(nearbyintf(x * (1/s)) + zp, 0, 255),  x' = (q - zp) * s
 *   weight, per channel c:   s_c = max|w_c| / 127 (1 for zeros),
 *                            q = clamp(nearbyintf(w * (1/s_c)), -127, 127), w' = q * s_c
 * with the very float operations of the runtime (multiply by the reciprocal,
 * round half to even, add the zero point, clamp), so the codes are identical.
 *
 * Gradients are the straight-through estimator of PyTorch's
 * fake_quantize_per_tensor_affine: dx = dy where the code before clamping,
 * nearbyintf(x/s) + zp, lies in [0, 255], else 0. That is exactly "zero where
 * the clamp is active": inside [(0-zp)s, (255-zp)s] the gradient passes, beyond
 * it by more than half a step it is zero (within half a step the value still
 * rounds onto the end code without clamping, and torch lets it through). The
 * scale and zero point come from observers and get no gradient. For weights
 * the scale comes from max|w| itself, so no code is ever clamped and the
 * estimator is the identity.
 *
 * The folding ops (Conv+BN for QAT, the recipe of PyTorch's ConvBn modules):
 *   f = gamma / sqrtf(running_var + eps)        op_bn_fold_factor  (grad to gamma)
 *   w_fold = w * f[c]                           op_scale_channels  (grad to w and f)
 *   y / f[c]                                    op_scale_channels, divide
 *   b_fold = (b - running_mean) * f + beta      op_bn_fold_bias
 *   RepConvN: kxk + 1x1 at the centre           op_merge_center
 * The running statistics are copied at the forward: a train-mode BN later in
 * the same forward updates them in place, the backward must see what the
 * forward used. */
#include <math.h>
#include <string.h>

#include "autograd/ops.h"
#include "tensor/error.h"
#include "tensor/pool.h"

#define FQ_GRAIN 32768

/* ---- the codes ---------------------------------------------------------------- */

/* The runtime's activation code before the clamp (NaN stays NaN). */
static inline float act_code_unclamped(float x, float inv, float zp) { return nearbyintf(x * inv) + zp; }

static inline float act_code(float x, float inv, float zp) {
    float v = act_code_unclamped(x, inv, zp);
    v = v < 255.f ? v : 255.f; /* NaN -> 255, as the runtime */
    return v > 0.f ? v : 0.f;
}

static float weight_channel_scale(const float *w, size_t n) {
    float m = 0.f;
    for (size_t i = 0; i < n; i++) m = fabsf(w[i]) > m ? fabsf(w[i]) : m;
    return m > 0.f ? m / 127.f : 1.f;
}

static inline float weight_code(float w, float inv) {
    float v = nearbyintf(w * inv);
    v = v < 127.f ? v : 127.f;
    return v > -127.f ? v : -127.f;
}

void fake_quant_weight_codes(const float *w, int cout, size_t per_channel, int8_t *codes, float *scale) {
    for (int c = 0; c < cout; c++) {
        const float *wc = w + (size_t)c * per_channel;
        float s = weight_channel_scale(wc, per_channel), inv = 1.f / s;
        for (size_t i = 0; i < per_channel; i++) codes[(size_t)c * per_channel + i] = (int8_t)weight_code(wc[i], inv);
        if (scale) scale[c] = s;
    }
}

/* ---- activation: per tensor, asymmetric uint8 --------------------------------- */

typedef struct {
    const float *x, *g;
    float *y, *gx;
    float scale, inv, zp;
} ActJob;

typedef struct {
    float scale, zp;
} ActSaved;

static void act_fwd(void *ctx, size_t b, size_t e) {
    const ActJob *j = ctx;
    for (size_t i = b; i < e; i++) j->y[i] = (act_code(j->x[i], j->inv, j->zp) - j->zp) * j->scale;
}

static void act_bwd(void *ctx, size_t b, size_t e) {
    const ActJob *j = ctx;
    for (size_t i = b; i < e; i++) {
        float v = act_code_unclamped(j->x[i], j->inv, j->zp);
        if (v >= 0.f && v <= 255.f) j->gx[i] += j->g[i];
    }
}

static int act_backward(Tape *t, TapeNode *n) {
    const ActSaved *s = n->saved;
    ActJob j = {
        .x = n->in[0]->data, .g = n->out->grad, .gx = tape_grad_of(t, n->in[0]), .inv = 1.f / s->scale, .zp = s->zp};
    if (j.gx) parallel_for(n->out->numel, FQ_GRAIN, act_bwd, &j);
    return 0;
}

Tensor *op_fake_quant_act(Tape *t, Tensor *x, float scale, int zp) {
    if (!x) {
        gelan_error("fake_quant_act: input is NULL");
        return NULL;
    }
    if (!(scale > 0.f) || !isfinite(scale) || zp < 0 || zp > 255) {
        gelan_error(
            "fake_quant_act: scale %g and zero point %d are not a uint8 quantization (scale > 0, zp in "
            "[0, 255])",
            scale, zp);
        return NULL;
    }
    Tensor *y = tape_tensor(t, x->ndim, x->shape);
    if (!y) return NULL;
    ActJob j = {.x = x->data, .y = y->data, .scale = scale, .inv = 1.f / scale, .zp = (float)zp};
    parallel_for(x->numel, FQ_GRAIN, act_fwd, &j);
    ActSaved *s;
    if (tape_record(t, "fake_quant_act", y, &x, 1, act_backward, sizeof *s, (void **)&s)) {
        s->scale = scale;
        s->zp = (float)zp;
    } else if (tape_wants_grad(t, &x, 1)) {
        return NULL; /* the arena could not hold the node */
    }
    return y;
}

/* ---- weight: per output channel, symmetric int8 ------------------------------- */

typedef struct {
    const float *w;
    float *y, *scale;
    size_t per;
} WeightJob;

static void weight_fwd(void *ctx, size_t b, size_t e) {
    const WeightJob *j = ctx;
    for (size_t c = b; c < e; c++) {
        const float *wc = j->w + c * j->per;
        float *yc = j->y + c * j->per;
        float s = weight_channel_scale(wc, j->per), inv = 1.f / s;
        for (size_t i = 0; i < j->per; i++) yc[i] = weight_code(wc[i], inv) * s;
        if (j->scale) j->scale[c] = s;
    }
}

/* The straight-through estimator: no code is clamped (see the top). */
static int weight_backward(Tape *t, TapeNode *n) {
    float *gw = tape_grad_of(t, n->in[0]);
    if (gw)
        for (size_t i = 0; i < n->out->numel; i++) gw[i] += n->out->grad[i];
    return 0;
}

Tensor *op_fake_quant_weight(Tape *t, Tensor *w, float *scale_out) {
    if (!w || w->ndim < 1 || w->shape[0] < 1) {
        gelan_error("fake_quant_weight: the weight must have an output-channel dimension");
        return NULL;
    }
    Tensor *y = tape_tensor(t, w->ndim, w->shape);
    if (!y) return NULL;
    size_t cout = (size_t)w->shape[0];
    WeightJob j = {.w = w->data, .y = y->data, .scale = scale_out, .per = w->numel / cout};
    parallel_for(cout, j.per >= 4096 ? 1 : 4096 / (j.per + 1) + 1, weight_fwd, &j);
    if (!tape_record(t, "fake_quant_weight", y, &w, 1, weight_backward, 0, NULL) && tape_wants_grad(t, &w, 1))
        return NULL;
    return y;
}

/* ---- BN folding ------------------------------------------------------------- */

static int check_vec(const char *op, const char *what, const Tensor *v, int c) {
    if (!v) return gelan_error("%s: %s is NULL", op, what);
    if (v->ndim != 1 || v->shape[0] != c)
        return gelan_error("%s: %s has %zu elements in %d dims, expected [%d]", op, what, v->numel, v->ndim, c);
    return 0;
}

static int fold_factor_backward(Tape *t, TapeNode *n) {
    const float *invstd = n->saved;
    float *gg = tape_grad_of(t, n->in[0]);
    if (gg)
        for (size_t c = 0; c < n->out->numel; c++) gg[c] += n->out->grad[c] * invstd[c];
    return 0;
}

Tensor *op_bn_fold_factor(Tape *t, Tensor *gamma, const Tensor *running_var, float eps) {
    if (!gamma || check_vec("bn_fold_factor", "gamma", gamma, gamma->shape[0]) ||
        check_vec("bn_fold_factor", "running_var", running_var, gamma->shape[0]))
        return NULL;
    int c = gamma->shape[0];
    Tensor *f = tape_tensor(t, 1, &c);
    if (!f) return NULL;
    for (int i = 0; i < c; i++) f->data[i] = gamma->data[i] / sqrtf(running_var->data[i] + eps);
    float *invstd; /* d f / d gamma, of the variance used now */
    if (tape_record(t, "bn_fold_factor", f, &gamma, 1, fold_factor_backward, (size_t)c * sizeof *invstd,
                    (void **)&invstd)) {
        for (int i = 0; i < c; i++) invstd[i] = 1.f / sqrtf(running_var->data[i] + eps);
    } else if (tape_wants_grad(t, &gamma, 1)) {
        return NULL;
    }
    return f;
}

/* x viewed as [outer, C, inner] with C = x->shape[dim]. */
typedef struct {
    const float *x, *s, *g;
    float *y, *gx, *gs;
    size_t outer, inner, C;
    bool divide;
} ChanJob;

static void chan_fwd(void *ctx, size_t b, size_t e) {
    const ChanJob *j = ctx;
    for (size_t c = b; c < e; c++) {
        float s = j->s[c];
        for (size_t o = 0; o < j->outer; o++) {
            const float *x = j->x + (o * j->C + c) * j->inner;
            float *y = j->y + (o * j->C + c) * j->inner;
            if (!j->divide)
                for (size_t i = 0; i < j->inner; i++) y[i] = x[i] * s;
            else if (s != 0.f)
                for (size_t i = 0; i < j->inner; i++) y[i] = x[i] / s;
            else
                memset(y, 0, j->inner * sizeof *y);
        }
    }
}

/* Each channel belongs to one thread: gs[c] and its slices of gx are never shared. */
static void chan_bwd(void *ctx, size_t b, size_t e) {
    const ChanJob *j = ctx;
    for (size_t c = b; c < e; c++) {
        float s = j->s[c];
        if (j->divide && s == 0.f) continue; /* the output was the constant 0 */
        double acc = 0;
        for (size_t o = 0; o < j->outer; o++) {
            size_t off = (o * j->C + c) * j->inner;
            const float *x = j->x + off, *g = j->g + off;
            if (j->gx) {
                float *gx = j->gx + off;
                if (j->divide)
                    for (size_t i = 0; i < j->inner; i++) gx[i] += g[i] / s;
                else
                    for (size_t i = 0; i < j->inner; i++) gx[i] += g[i] * s;
            }
            if (j->gs)
                for (size_t i = 0; i < j->inner; i++) acc += (double)g[i] * x[i];
        }
        /* d(x*s)/ds = x;  d(x/s)/ds = -x/s^2 */
        if (j->gs) j->gs[c] += j->divide ? (float)(-acc / ((double)s * s)) : (float)acc;
    }
}

static int chan_backward(Tape *t, TapeNode *n) {
    ChanJob j = *(const ChanJob *)n->saved;
    j.g = n->out->grad;
    j.gx = tape_grad_of(t, n->in[0]);
    j.gs = tape_grad_of(t, n->in[1]);
    if (j.gx || j.gs) parallel_for(j.C, 1, chan_bwd, &j);
    return 0;
}

Tensor *op_scale_channels(Tape *t, Tensor *x, Tensor *s, int dim, bool divide) {
    const char *op = divide ? "div_channels" : "mul_channels";
    if (!x || !s) {
        gelan_error("%s: input is NULL", op);
        return NULL;
    }
    if (dim < 0 || dim >= x->ndim) {
        gelan_error("%s: dim %d is not a dimension of a %d-d tensor", op, dim, x->ndim);
        return NULL;
    }
    if (check_vec(op, "the factor", s, x->shape[dim])) return NULL;
    ChanJob j = {.x = x->data, .s = s->data, .outer = 1, .inner = 1, .C = (size_t)x->shape[dim], .divide = divide};
    for (int d = 0; d < dim; d++) j.outer *= (size_t)x->shape[d];
    for (int d = dim + 1; d < x->ndim; d++) j.inner *= (size_t)x->shape[d];
    Tensor *y = tape_tensor(t, x->ndim, x->shape);
    if (!y) return NULL;
    j.y = y->data;
    parallel_for(j.C, 1, chan_fwd, &j);
    Tensor *in[2] = {x, s};
    ChanJob *saved;
    if (tape_record(t, op, y, in, 2, chan_backward, sizeof *saved, (void **)&saved))
        *saved = j;
    else if (tape_wants_grad(t, in, 2))
        return NULL;
    return y;
}

typedef struct {
    const float *bias, *mean, *factor; /* bias may be NULL; mean is a copy */
} FoldBiasSaved;

static int fold_bias_backward(Tape *t, TapeNode *n) {
    const FoldBiasSaved *s = n->saved;
    const float *g = n->out->grad;
    float *gbeta = tape_grad_of(t, n->in[0]), *gf = tape_grad_of(t, n->in[1]);
    float *gb = n->n_in > 2 ? tape_grad_of(t, n->in[2]) : NULL;
    for (size_t c = 0; c < n->out->numel; c++) {
        if (gbeta) gbeta[c] += g[c];
        if (gb) gb[c] += g[c] * s->factor[c];
        if (gf) gf[c] += g[c] * ((s->bias ? s->bias[c] : 0.f) - s->mean[c]);
    }
    return 0;
}

Tensor *op_bn_fold_bias(Tape *t, Tensor *beta, Tensor *bias, const Tensor *running_mean, Tensor *factor) {
    if (!beta) {
        gelan_error("bn_fold_bias: beta is NULL");
        return NULL;
    }
    int c = beta->shape[0];
    if (check_vec("bn_fold_bias", "beta", beta, c) || check_vec("bn_fold_bias", "running_mean", running_mean, c) ||
        check_vec("bn_fold_bias", "the factor", factor, c) || (bias && check_vec("bn_fold_bias", "bias", bias, c)))
        return NULL;
    Tensor *y = tape_tensor(t, 1, &c);
    float *mean = tape_alloc(t, (size_t)c * sizeof *mean);
    if (!y || !mean) return NULL;
    memcpy(mean, running_mean->data, (size_t)c * sizeof *mean);
    for (int i = 0; i < c; i++) y->data[i] = ((bias ? bias->data[i] : 0.f) - mean[i]) * factor->data[i] + beta->data[i];
    Tensor *in[3] = {beta, factor, bias};
    int nin = bias ? 3 : 2;
    FoldBiasSaved *s;
    if (tape_record(t, "bn_fold_bias", y, in, nin, fold_bias_backward, sizeof *s, (void **)&s))
        *s = (FoldBiasSaved){bias ? bias->data : NULL, mean, factor->data};
    else if (tape_wants_grad(t, in, nin))
        return NULL;
    return y;
}

/* ---- RepConvN merge ----------------------------------------------------------- */

static int merge_center_backward(Tape *t, TapeNode *n) {
    const Tensor *wk = n->in[0];
    const float *g = n->out->grad;
    float *gk = tape_grad_of(t, n->in[0]), *g1 = tape_grad_of(t, n->in[1]);
    const size_t kk = (size_t)wk->shape[2] * wk->shape[3], centre = kk / 2;
    if (gk)
        for (size_t i = 0; i < wk->numel; i++) gk[i] += g[i];
    if (g1)
        for (size_t i = 0; i < n->in[1]->numel; i++) g1[i] += g[i * kk + centre];
    return 0;
}

Tensor *op_merge_center(Tape *t, Tensor *wk, Tensor *w1) {
    char a[64], b[64];
    if (!wk || !w1) {
        gelan_error("merge_center: input is NULL");
        return NULL;
    }
    if (wk->ndim != 4 || w1->ndim != 4 || wk->shape[2] != wk->shape[3] || wk->shape[2] % 2 == 0 || w1->shape[2] != 1 ||
        w1->shape[3] != 1 || w1->shape[0] != wk->shape[0] || w1->shape[1] != wk->shape[1]) {
        gelan_error("merge_center: needs a [C,I,k,k] kernel with odd k and a [C,I,1,1] kernel, got %s and %s",
                    tensor_shape_str(wk, a, sizeof a), tensor_shape_str(w1, b, sizeof b));
        return NULL;
    }
    Tensor *y = tape_tensor(t, 4, wk->shape);
    if (!y) return NULL;
    memcpy(y->data, wk->data, wk->numel * sizeof *y->data);
    const size_t kk = (size_t)wk->shape[2] * wk->shape[3], centre = kk / 2;
    for (size_t i = 0; i < w1->numel; i++) y->data[i * kk + centre] += w1->data[i];
    Tensor *in[2] = {wk, w1};
    if (!tape_record(t, "merge_center", y, in, 2, merge_center_backward, 0, NULL) && tape_wants_grad(t, in, 2))
        return NULL;
    return y;
}
