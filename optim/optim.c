/* The optimizer object: parameter groups, per-parameter state and its
 * checkpoint names. The update rules live in sgd.c and adamw.c. */
#include "optim/optim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/internal.h"
#include "tensor/error.h"

bool optim_param_active(const Tensor *p) { return p && p->requires_grad && p->grad; }

OptimHyp optim_hyp_default(void) {
    OptimHyp h = {.lr0 = 0.01,
                  .lrf = 0.01,
                  .momentum = 0.937,
                  .weight_decay = 0.0005,
                  .warmup_epochs = 3.0,
                  .warmup_momentum = 0.8,
                  .warmup_bias_lr = 0.1};
    return h;
}

OptimConfig optim_config(OptimKind kind, double lr, double momentum, double weight_decay) {
    OptimConfig c = {.kind = kind,
                     .lr = lr,
                     .momentum = momentum,
                     .weight_decay = weight_decay,
                     .nesterov = true,
                     .beta2 = 0.999,
                     .eps = 1e-8,
                     .amsgrad = kind == OPTIM_ADAMW};
    return c;
}

int optim_chunks_make(const size_t *numel, int n, OptimChunk **out, int *count) {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += (numel[i] + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    *out = NULL;
    *count = 0;
    if (total == 0) return 0;
    if (total > (size_t)1 << 30) return gelan_error("optim: %zu chunks are too many", total);
    OptimChunk *c = malloc(total * sizeof *c);
    if (!c) return gelan_error("optim: out of memory for %zu chunks", total);
    size_t k = 0;
    for (int i = 0; i < n; i++)
        for (size_t b = 0; b < numel[i]; b += OPTIM_CHUNK) {
            c[k].idx = i;
            c[k].begin = b;
            c[k].end = numel[i] - b < OPTIM_CHUNK ? numel[i] : b + OPTIM_CHUNK;
            k++;
        }
    *out = c;
    *count = (int)total;
    return 0;
}

/* State tensors per kind, in checkpoint order; torch's state_dict names. */
static const char *const sgd_names[] = {"momentum_buffer"};
static const char *const adamw_names[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};

static int n_buffers(const Optimizer *o) {
    if (o->cfg.kind == OPTIM_SGD) return 1;
    return o->cfg.amsgrad ? 3 : 2;
}

static const char *buffer_name(const Optimizer *o, int k) {
    return o->cfg.kind == OPTIM_SGD ? sgd_names[k] : adamw_names[k];
}

static int check_config(const OptimConfig *c) {
    if (c->kind != OPTIM_SGD && c->kind != OPTIM_ADAMW) return gelan_error("optim: unknown optimizer kind %d", c->kind);
    if (!(c->lr >= 0)) return gelan_error("optim: learning rate %g is negative", c->lr);
    if (!(c->weight_decay >= 0)) return gelan_error("optim: weight decay %g is negative", c->weight_decay);
    if (c->kind == OPTIM_SGD) {
        if (!(c->momentum >= 0)) return gelan_error("optim: SGD momentum %g is negative", c->momentum);
        if (c->nesterov && c->momentum <= 0) return gelan_error("optim: Nesterov momentum needs momentum > 0");
    } else {
        if (!(c->momentum >= 0 && c->momentum < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
            return gelan_error("optim: AdamW betas (%g, %g) must lie in [0, 1)", c->momentum, c->beta2);
        if (!(c->eps >= 0)) return gelan_error("optim: AdamW eps %g is negative", c->eps);
    }
    return 0;
}

Optimizer *optim_new(const OptimConfig *cfg, const OptimParam *params, int n) {
    if (check_config(cfg)) return NULL;
    if (n < 0 || (n > 0 && !params)) {
        gelan_error("optim: %d parameters", n);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (!params[i].name || !params[i].param) {
            gelan_error("optim: parameter %d has no %s", i, params[i].name ? "tensor" : "name");
            return NULL;
        }
        if ((unsigned)params[i].group >= PARAM_GROUP_COUNT) {
            gelan_error("optim: parameter %s has group %d", params[i].name, params[i].group);
            return NULL;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(params[i].name, params[j].name) == 0 || params[i].param == params[j].param) {
                gelan_error("optim: parameter %s is listed twice (as %d and %d)", params[i].name, j, i);
                return NULL;
            }
    }
    Optimizer *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    o->cfg = *cfg;
    for (int g = 0; g < PARAM_GROUP_COUNT; g++) {
        o->group[g].lr = o->group[g].initial_lr = cfg->lr;
        o->group[g].momentum = cfg->momentum;
        o->group[g].weight_decay = g == PARAM_WEIGHT_DECAY ? cfg->weight_decay : 0.0;
    }
    o->n = n;
    o->params = calloc(n ? (size_t)n : 1, sizeof *o->params);
    o->state = calloc(n ? (size_t)n : 1, sizeof *o->state);
    size_t *numel = malloc((n ? (size_t)n : 1) * sizeof *numel);
    if (!o->params || !o->state || !numel) {
        free(numel);
        goto oom;
    }
    for (int i = 0; i < n; i++) {
        Tensor *p = params[i].param;
        o->params[i] = params[i];
        numel[i] = p->numel;
        char *name = strdup(params[i].name);
        o->params[i].name = name;
        if (!name) {
            free(numel);
            goto oom;
        }
        for (int k = 0; k < n_buffers(o); k++)
            if (!(o->state[i].buf[k] = tensor_new(p->ndim, p->shape))) {
                free(numel);
                goto fail;
            }
        if (cfg->kind == OPTIM_ADAMW && !(o->state[i].step = tensor_new1(1))) {
            free(numel);
            goto fail;
        }
    }
    int rc = optim_chunks_make(numel, n, &o->chunks, &o->n_chunks);
    free(numel);
    if (rc) goto fail;
    return o;
oom:
    gelan_error("optim: out of memory for %d parameters", n);
fail:
    optim_free(o);
    return NULL;
}

void optim_free(Optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        if (o->params) free((char *)o->params[i].name);
        if (o->state) {
            for (int k = 0; k < 3; k++) tensor_free(o->state[i].buf[k]);
            tensor_free(o->state[i].step);
        }
    }
    free(o->params);
    free(o->state);
    free(o->chunks);
    free(o);
}

int optim_step(Optimizer *o) { return o->cfg.kind == OPTIM_SGD ? sgd_step(o) : adamw_step(o); }

void optim_zero_grad(Optimizer *o) {
    for (int i = 0; i < o->n; i++) tensor_zero_grad(o->params[i].param);
}

int optim_find(const Optimizer *o, const char *name) {
    for (int i = 0; i < o->n; i++)
        if (strcmp(o->params[i].name, name) == 0) return i;
    return -1;
}

/* ---- checkpoint state ------------------------------------------------------ */

static int state_name(char *buf, size_t len, const char *param, const char *what) {
    int w = snprintf(buf, len, "optim.%s.%s", param, what);
    if (w < 0 || (size_t)w >= len) return gelan_error("optim: parameter name %s is too long", param);
    return 0;
}

int optim_state_count(const Optimizer *o) {
    int per = n_buffers(o) + (o->cfg.kind == OPTIM_ADAMW);
    int count = 0;
    for (int i = 0; i < o->n; i++) count += o->state[i].has_state ? per : 0;
    return count;
}

int optim_state_foreach(Optimizer *o, OptimTensorVisit visit, void *ctx) {
    char name[1024];
    for (int i = 0; i < o->n; i++) {
        OptimParamState *st = &o->state[i];
        if (!st->has_state) continue;
        for (int k = 0; k < n_buffers(o); k++) {
            if (state_name(name, sizeof name, o->params[i].name, buffer_name(o, k))) return -1;
            int rc = visit(ctx, name, st->buf[k]);
            if (rc) return rc;
        }
        if (o->cfg.kind == OPTIM_ADAMW) {
            if (state_name(name, sizeof name, o->params[i].name, "step")) return -1;
            int rc = visit(ctx, name, st->step);
            if (rc) return rc;
        }
    }
    return 0;
}

static void reset_state(Optimizer *o) {
    for (int i = 0; i < o->n; i++) {
        OptimParamState *st = &o->state[i];
        for (int k = 0; k < 3; k++)
            if (st->buf[k]) tensor_fill(st->buf[k], 0.f);
        if (st->step) st->step->data[0] = 0.f;
        st->has_state = false;
    }
}

/* Reads one state tensor: 1 if found, 0 if absent, -1 on error. */
static int read_one(Optimizer *o, int i, const char *what, Tensor *dst, OptimTensorRead read, void *ctx) {
    char name[1024];
    if (state_name(name, sizeof name, o->params[i].name, what)) return -1;
    int rc = read(ctx, name, dst);
    if (rc < 0) {
        gelan_error_prefix("optim: reading %s", name);
        return -1;
    }
    return rc == 0;
}

static int load_param(Optimizer *o, int i, OptimTensorRead read, void *ctx) {
    OptimParamState *st = &o->state[i];
    const char *pname = o->params[i].name;
    const char *kind = o->cfg.kind == OPTIM_SGD ? "SGD" : "AdamW";
    int nb = n_buffers(o), found = 0;
    for (int k = 0; k < nb; k++) {
        int rc = read_one(o, i, buffer_name(o, k), st->buf[k], read, ctx);
        if (rc < 0) return -1;
        found += rc;
    }
    int expected = nb;
    if (o->cfg.kind == OPTIM_ADAMW) {
        int rc = read_one(o, i, "step", st->step, read, ctx);
        if (rc < 0) return -1;
        found += rc;
        expected++;
        if (rc && !(st->step->data[0] >= 1))
            return gelan_error("optim: %s has AdamW step count %g (expected >= 1)", pname, st->step->data[0]);
    }
    if (found == 0) {
        /* state of the other kind means the checkpoint was trained differently */
        const char *other = o->cfg.kind == OPTIM_SGD ? "exp_avg" : "momentum_buffer";
        int rc = read_one(o, i, other, st->buf[0], read, ctx);
        if (rc < 0) return -1;
        if (rc)
            return gelan_error("optim: the checkpoint holds %s state for %s, but the optimizer is %s",
                               o->cfg.kind == OPTIM_SGD ? "AdamW" : "SGD", pname, kind);
        return 0;
    }
    if (found != expected)
        return gelan_error("optim: %s has %d of the %d %s state tensors%s", pname, found, expected, kind,
                           o->cfg.kind == OPTIM_ADAMW && o->cfg.amsgrad ? " (amsgrad needs max_exp_avg_sq)" : "");
    st->has_state = true;
    return 0;
}

int optim_state_load(Optimizer *o, OptimTensorRead read, void *ctx) {
    reset_state(o);
    for (int i = 0; i < o->n; i++)
        if (load_param(o, i, read, ctx)) {
            reset_state(o);
            return -1;
        }
    return 0;
}
