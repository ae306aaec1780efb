/* torch.optim.SGD (PyTorch 1.13, dampening 0), element by element:
 *     d   = grad + weight_decay * p
 *     buf = d                        on the parameter's first step
 *     buf = momentum * buf + d       afterwards
 *     d   = d + momentum * buf       (nesterov)   or   d = buf
 *     p   = p - lr * d
 * The scalars are rounded to float as torch does for a float tensor, and each
 * `x + alpha * y` is one fused multiply-add, as torch's vectorised add kernel
 * computes it: the updates then equal torch 1.13's bit for bit (checked over
 * 61 warmup + accumulation steps on x86-64). */
#include <math.h>
#include <stdlib.h>

#include "optim/internal.h"
#include "optim/optim.h"
#include "tensor/pool.h"

typedef struct {
    Optimizer *o;
    float lr[PARAM_GROUP_COUNT], momentum[PARAM_GROUP_COUNT], wd[PARAM_GROUP_COUNT];
} SgdCtx;

static void sgd_chunks(void *vctx, size_t cb, size_t ce) {
    SgdCtx *c = vctx;
    Optimizer *o = c->o;
    for (size_t ci = cb; ci < ce; ci++) {
        const OptimChunk *ch = &o->chunks[ci];
        Tensor *p = o->params[ch->idx].param;
        if (!optim_param_active(p)) continue;
        ParamGroup g = o->params[ch->idx].group;
        const float lr = c->lr[g], m = c->momentum[g], wd = c->wd[g];
        const bool first = !o->state[ch->idx].has_state, nesterov = o->cfg.nesterov;
        float *w = p->data + ch->begin;
        const float *grad = p->grad + ch->begin;
        float *buf = o->state[ch->idx].buf[0]->data + ch->begin;
        const size_t n = ch->end - ch->begin;
        for (size_t i = 0; i < n; i++) {
            float d = grad[i];
            if (wd != 0.f) d = fmaf(wd, w[i], d);
            if (m != 0.f) {
                float b = first ? d : m * buf[i] + d;
                buf[i] = b;
                d = nesterov ? fmaf(m, b, d) : b;
            }
            w[i] = fmaf(-lr, d, w[i]);
        }
    }
}

int sgd_step(Optimizer *o) {
    SgdCtx c = {.o = o};
    for (int g = 0; g < PARAM_GROUP_COUNT; g++) {
        c.lr[g] = (float)o->group[g].lr;
        c.momentum[g] = (float)o->group[g].momentum;
        c.wd[g] = (float)o->group[g].weight_decay;
    }
    parallel_for((size_t)o->n_chunks, 4, sgd_chunks, &c);
    /* torch keeps momentum_buffer = None while momentum is 0, so the next
     * step with momentum starts the buffer afresh */
    for (int i = 0; i < o->n; i++)
        if (optim_param_active(o->params[i].param)) o->state[i].has_state = c.momentum[o->params[i].group] != 0.f;
    return 0;
}
