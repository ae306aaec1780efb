/* torch.optim.AdamW (PyTorch 1.13, single-tensor path), element by element:
 *     step += 1
 *     p      = p * (1 - lr * weight_decay)          decoupled decay first
 *     m      = beta1 * m + (1 - beta1) * g
 *     v      = beta2 * v + (1 - beta2) * g * g
 *     vmax   = max(vmax, v)                          (amsgrad; v below becomes vmax)
 *     denom  = sqrt(v) / sqrt(1 - beta2^step) + eps
 *     p      = p - lr / (1 - beta1^step) * m / denom
 * The per-parameter scalars are computed in double (as Python does) and
 * rounded to float once; the moment updates use a fused multiply-add where
 * torch's vector kernels do (mul_ then add_(alpha) / addcmul_), which makes
 * the result equal torch 1.13's bit for bit. The official smart_optimizer
 * uses amsgrad=True. */
#include <math.h>

#include "optim/internal.h"
#include "optim/optim.h"
#include "tensor/pool.h"

typedef struct {
    Optimizer *o;
    float decay[PARAM_GROUP_COUNT]; /* 1 - lr * weight_decay */
    float beta1[PARAM_GROUP_COUNT], one_minus_beta1[PARAM_GROUP_COUNT];
    float beta2, one_minus_beta2, eps;
} AdamWCtx;

/* The element loop, once per amsgrad setting to keep the branch out of it. */
typedef struct {
    float decay, b1, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps;
} AdamWScalars;

static void adamw_loop(const AdamWScalars k, size_t n, float *restrict w, const float *restrict g, float *restrict m,
                       float *restrict v, float *restrict vmax) {
    if (vmax) {
        for (size_t i = 0; i < n; i++) {
            w[i] = w[i] * k.decay;
            m[i] = fmaf(k.one_minus_b1, g[i], m[i] * k.b1);        /* m.mul_(b1).add_(g, 1 - b1) */
            v[i] = fmaf(k.one_minus_b2 * g[i], g[i], v[i] * k.b2); /* v.mul_(b2).addcmul_(g, g, 1 - b2) */
            vmax[i] = fmaxf(vmax[i], v[i]);
            const float denom = sqrtf(vmax[i]) / k.bc2_sqrt + k.eps;
            w[i] = w[i] + -k.step_size * m[i] / denom; /* addcdiv: (value * m) / denom */
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            w[i] = w[i] * k.decay;
            m[i] = fmaf(k.one_minus_b1, g[i], m[i] * k.b1);
            v[i] = fmaf(k.one_minus_b2 * g[i], g[i], v[i] * k.b2);
            const float denom = sqrtf(v[i]) / k.bc2_sqrt + k.eps;
            w[i] = w[i] + -k.step_size * m[i] / denom;
        }
    }
}

static void adamw_chunks(void *vctx, size_t cb, size_t ce) {
    const AdamWCtx *c = vctx;
    Optimizer *o = c->o;
    for (size_t ci = cb; ci < ce; ci++) {
        const OptimChunk *ch = &o->chunks[ci];
        Tensor *p = o->params[ch->idx].param;
        if (!optim_param_active(p)) continue;
        const OptimParamState *st = &o->state[ch->idx];
        const ParamGroup grp = o->params[ch->idx].group;
        const AdamWScalars k = {.decay = c->decay[grp],
                                .b1 = c->beta1[grp],
                                .one_minus_b1 = c->one_minus_beta1[grp],
                                .b2 = c->beta2,
                                .one_minus_b2 = c->one_minus_beta2,
                                .step_size = st->step_size,
                                .bc2_sqrt = st->bc2_sqrt,
                                .eps = c->eps};
        const size_t b = ch->begin;
        adamw_loop(k, ch->end - b, p->data + b, p->grad + b, st->buf[0]->data + b, st->buf[1]->data + b,
                   o->cfg.amsgrad ? st->buf[2]->data + b : NULL);
    }
}

int adamw_step(Optimizer *o) {
    AdamWCtx c = {.o = o};
    const double beta2 = o->cfg.beta2;
    for (int g = 0; g < PARAM_GROUP_COUNT; g++) {
        c.decay[g] = (float)(1.0 - o->group[g].lr * o->group[g].weight_decay);
        c.beta1[g] = (float)o->group[g].momentum;
        c.one_minus_beta1[g] = (float)(1.0 - o->group[g].momentum);
    }
    c.beta2 = (float)beta2;
    c.one_minus_beta2 = (float)(1.0 - beta2);
    c.eps = (float)o->cfg.eps;
    /* the step count is per parameter: one that had no gradient was skipped */
    for (int i = 0; i < o->n; i++) {
        if (!optim_param_active(o->params[i].param)) continue;
        OptimParamState *st = &o->state[i];
        st->step->data[0] += 1.f;
        const double step = st->step->data[0];
        const OptimGroup *grp = &o->group[o->params[i].group];
        st->step_size = (float)(grp->lr / (1.0 - pow(grp->momentum, step)));
        st->bc2_sqrt = (float)sqrt(1.0 - pow(beta2, step));
        st->has_state = true;
    }
    parallel_for((size_t)o->n_chunks, 4, adamw_chunks, &c);
    return 0;
}
